// 1F1B: warm-up forwards, steady one-forward-one-backward, cool-down backwards.
#include "parallel/pipeline_schedule.h"

#include <algorithm>

namespace tessera {

std::vector<PipeAction> one_f_one_b(int stages, int stage, int microbatches) {
  const int warmup = std::min(stages - stage - 1, microbatches);
  std::vector<PipeAction> actions;
  int forward = 0, backward = 0;
  for (; forward < warmup; ++forward) actions.push_back({PipeAction::Forward, forward});
  for (; forward < microbatches; ++forward, ++backward) {
    actions.push_back({PipeAction::Forward, forward});
    actions.push_back({PipeAction::Backward, backward});
  }
  for (; backward < microbatches; ++backward) actions.push_back({PipeAction::Backward, backward});
  return actions;
}

int in_flight_microbatches(int stages, int stage, int microbatches) {
  return std::min(stages - stage, microbatches);
}

double bubble_fraction(int stages, int microbatches) {
  return static_cast<double>(stages - 1) / (microbatches + stages - 1);
}

std::string schedule_string(const std::vector<PipeAction>& actions) {
  std::string s;
  for (const PipeAction& a : actions) {
    if (!s.empty()) s += ' ';
    s += (a.kind == PipeAction::Forward ? 'F' : 'B') + std::to_string(a.microbatch);
  }
  return s;
}

}  // namespace tessera
