// The 1F1B pipeline schedule (Narayanan et al. 2021, "PipeDream-Flush"): stage s of p runs
// min(p - s - 1, m) warm-up forwards, then alternates one forward and one backward until every
// forward has run, then cools down with the remaining backwards. At most p - s microbatches
// are in flight on stage s, so its activation memory is bounded by the stage count, not by m.
// The idle share of each stage, the bubble, is (p - 1) / (m + p - 1) of the step.
#pragma once

#include <string>
#include <vector>

namespace tessera {

struct PipeAction {
  enum Kind { Forward, Backward } kind;
  int microbatch;
  bool operator==(const PipeAction&) const = default;
};

// The actions of `stage` (of `stages`) over `microbatches` microbatches, in order.
std::vector<PipeAction> one_f_one_b(int stages, int stage, int microbatches);

// Microbatches in flight at once on `stage`: activation sets it must keep.
int in_flight_microbatches(int stages, int stage, int microbatches);

// (p - 1) / (m + p - 1).
double bubble_fraction(int stages, int microbatches);

// "F0 F1 B0 F2 B1 B2", for tests.
std::string schedule_string(const std::vector<PipeAction>& actions);

}  // namespace tessera
