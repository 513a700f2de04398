// `tessera train`: the pretraining loop of one process (DESIGN, "Options every part shares").
#pragma once

#include <string>
#include <vector>

#include "launcher/config.h"

namespace tessera {

int train_command(int argc, char** argv);

// What a finished run reports; tests read it in-process.
struct TrainResult {
  std::vector<double> losses;  // one per step
  double final_loss = 0;       // mean of the last log interval's losses
};
TrainResult train(const TrainConfig& cfg);

}  // namespace tessera
