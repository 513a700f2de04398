// 1F1B: warm-up forwards, steady one-forward-one-backward, cool-down backwards; and its
// interleaved form over several model chunks per stage.
#include "parallel/pipeline_schedule.h"

#include <algorithm>

#include "core/error.h"

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

std::string interleaved_schedule_problem(int stages, int microbatches, int chunks) {
  if (chunks == 1) return "";
  if (stages < 2)
    return "expected 2 or more pipeline stages to interleave model chunks over, found " +
           std::to_string(stages);
  const int least = stages > 2 ? 2 * stages : stages;
  if (microbatches % stages != 0 || microbatches < least)
    return "expected a multiple of " + std::to_string(stages) + " microbatches, at least " +
           std::to_string(least) + " (the interleaved schedule runs them in groups of one per " +
           (stages > 2 ? "stage, two groups or more" : "stage") + "), found " +
           std::to_string(microbatches);
  return "";
}

std::vector<PipeAction> interleaved_one_f_one_b(int stages, int stage, int microbatches,
                                                int chunks) {
  if (chunks == 1) return one_f_one_b(stages, stage, microbatches);
  TESSERA_CHECK(stages >= 1 && microbatches >= 1 && microbatches % stages == 0,
                "interleaved_one_f_one_b: microbatches in groups of one per stage");
  // The forwards in interleaved_forwards' group order; the k-th backward is the k-th forward's
  // microbatch through the chunk counted from the other end.
  const std::vector<PipeAction> forwards = interleaved_forwards(stages, microbatches, chunks);
  const int total = static_cast<int>(forwards.size());
  const auto nth_backward = [&](int k) {
    const PipeAction& f = forwards[static_cast<size_t>(k)];
    return PipeAction{PipeAction::Backward, f.microbatch, chunks - 1 - f.chunk};
  };
  const int warmup = std::min(total, 2 * (stages - stage - 1) + (chunks - 1) * stages);
  std::vector<PipeAction> actions(forwards.begin(), forwards.begin() + warmup);
  int backward = 0;
  for (int forward = warmup; forward < total; ++forward, ++backward) {
    actions.push_back(forwards[static_cast<size_t>(forward)]);
    actions.push_back(nth_backward(backward));
  }
  for (; backward < total; ++backward) actions.push_back(nth_backward(backward));
  return actions;
}

std::vector<PipeAction> interleaved_forwards(int stages, int microbatches, int chunks) {
  std::vector<PipeAction> actions;
  for (int first = 0; first < microbatches; first += stages)
    for (int chunk = 0; chunk < chunks; ++chunk)
      for (int mb = first; mb < std::min(first + stages, microbatches); ++mb)
        actions.push_back({PipeAction::Forward, mb, chunk});
  return actions;
}

std::vector<std::vector<PipeAction>> pipeline_steps(const std::vector<PipeAction>& actions) {
  std::vector<std::vector<PipeAction>> steps;
  for (size_t i = 0; i < actions.size(); ++i) {
    const bool pair = actions[i].kind == PipeAction::Forward && i + 1 < actions.size() &&
                      actions[i + 1].kind == PipeAction::Backward;
    steps.push_back({actions[i]});
    if (pair) steps.back().push_back(actions[++i]);
  }
  return steps;
}

std::map<int64_t, int> in_flight_per_key(const std::vector<PipeAction>& actions,
                                         const std::vector<int64_t>& key) {
  std::map<int64_t, int> now, most;
  for (const int64_t k : key) most[k] = 0;
  for (const PipeAction& a : actions) {
    const int64_t k = key.at(static_cast<size_t>(a.chunk));
    int& n = now[k];
    n += a.kind == PipeAction::Forward ? 1 : -1;
    most[k] = std::max(most[k], n);
  }
  return most;
}

std::vector<int> in_flight_per_chunk(const std::vector<PipeAction>& actions, int chunks) {
  std::vector<int64_t> own(static_cast<size_t>(chunks));
  for (int c = 0; c < chunks; ++c) own[static_cast<size_t>(c)] = c;
  std::vector<int> most;
  for (const auto& [chunk, n] : in_flight_per_key(actions, own)) most.push_back(n);
  return most;
}

double bubble_fraction(int stages, int microbatches, int chunks) {
  return static_cast<double>(stages - 1) / (chunks * microbatches + stages - 1);
}

}  // namespace tessera
