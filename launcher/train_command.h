// `tessera train`: pretraining on every rank of an MPI world (README, "Running"); launch with
// mpirun for TP x DP x PP layouts.
#pragma once

#include <string>
#include <vector>

#include "launcher/config.h"

namespace tessera {

int train_command(int argc, char** argv);

// A mean loss of the log, and the 1-based steps [first, last] it is over.
struct LossMean {
  double loss = 0;
  int64_t first = 0, last = 0;
};

// What a finished run reports: print_summary's figures, and the process's exit code.
struct TrainResult {
  std::vector<double> losses;  // one per step of this run
  int64_t first_step = 0;      // the step (0-based) this run started at: 0, or a resume's
  LossMean final_loss;         // the mean of the last log interval's losses
  int exit_code = 0;           // kExitOk, or kExitPreempted / kExitNonFinite (exit_codes.h)
};
class Trainer;
class Communicator;
// The loop after the agreement on the inputs: collective over world; rank 0 logs.
// resume_dir: a checkpoint to load first ("" for none); else init_dir: one whose weights alone
// a fresh start begins from ("" for none: --checkpoint.init). local_rank: this rank's index among
// the ranks of its node, the GPU it uses with --train.device cuda.
TrainResult run_training(const TrainConfig& cfg, Trainer& trainer, Communicator& world,
                         const std::string& resume_dir, const std::string& init_dir = "",
                         int local_rank = 0);

}  // namespace tessera
