// Pipeline schedules. 1F1B (Narayanan et al. 2021, "PipeDream-Flush"): stage s of p runs
// min(p - s - 1, m) warm-up forwards, then alternates one forward and one backward until every
// forward has run, then cools down with the remaining backwards. At most p - s microbatches
// are in flight on stage s, so its activation memory is bounded by the stage count, not by m.
// The idle share of each stage, the bubble, is (p - 1) / (m + p - 1) of the step.
//
// Interleaved 1F1B (the same paper, section 2.2; Megatron-LM's virtual pipeline stages): each of
// the p ranks holds v model chunks, chunk c of rank s being virtual stage c p + s of v p, so a
// microbatch passes every rank v times. The forwards run in groups of p microbatches: group g's
// microbatches through chunk 0, then through chunk 1, ..., then group g + 1; the backwards in the
// same order with the chunks reversed. Rank s warms up with 2 (p - s - 1) + (v - 1) p forwards,
// then alternates. The bubble shrinks v times, to (p - 1) / (v m + p - 1), for 2 (v p - 1)
// point-to-point messages per microbatch instead of 2 (p - 1).
//
// The executor (parallel/pipeline.h) runs an interleaved schedule in steps (pipeline_steps): one
// forward and the backward after it, or one action alone in warm-up and cool-down; the sends of a
// step and the receives of the next start together (one NCCL group), as Megatron-LM batches
// them. tests/test_parallel.cpp runs every rank's steps against the others in a model of NCCL's
// groups, with each message checked to arrive where it is expected (and checks that the executor
// starts those groups); interleaved_schedule_problem refuses the layouts where that model finds
// the ranks waiting on each other in a ring.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace tessera {

struct PipeAction {
  enum Kind { Forward, Backward } kind;
  int microbatch;
  int chunk = 0;  // the rank's model chunk (interleaved schedule)
  bool operator==(const PipeAction&) const = default;
};

// The actions of `stage` (of `stages`) over `microbatches` microbatches, in order.
std::vector<PipeAction> one_f_one_b(int stages, int stage, int microbatches);

// The interleaved schedule of `stage` with `chunks` model chunks on each stage; one_f_one_b when
// chunks is 1. InternalError unless `stages` divides `microbatches`; a layout that
// interleaved_schedule_problem refuses otherwise still gets its schedule (for tests).
std::vector<PipeAction> interleaved_one_f_one_b(int stages, int stage, int microbatches,
                                                int chunks);

// Why the interleaved schedule cannot run this layout, or "" when it can: it needs 2 or more
// stages and a multiple of the stage count of microbatches; with 3 or more stages, at least two
// groups of them (with one, the stages' sends and receives wait on each other round the ring).
std::string interleaved_schedule_problem(int stages, int microbatches, int chunks);

// Forwards only (validation), in the interleaved order: groups of `stages` microbatches, the last
// one smaller when `stages` does not divide `microbatches`.
std::vector<PipeAction> interleaved_forwards(int stages, int microbatches, int chunks);

// A schedule cut into steps: a forward with the backward right after it, else one action.
std::vector<std::vector<PipeAction>> pipeline_steps(const std::vector<PipeAction>& actions);

// The activation sets a schedule must keep for each chunk: the most microbatches whose forward
// has run and whose backward has not (min(p - s, m) for 1F1B).
std::vector<int> in_flight_per_chunk(const std::vector<PipeAction>& actions, int chunks);
// The same for chunks that share their sets, key[c] being chunk c's: the most microbatches in
// flight at once on the chunks of each key. With one key for every chunk, stage s of the
// interleaved schedule keeps its warm-up's forwards and one more, up to 2 (p - s) - 1 + (v - 1) p
// chunks' sets: on stage 0, 1 + (p - 1) / (p v) times plain 1F1B's p sets of a whole stage.
std::map<int64_t, int> in_flight_per_key(const std::vector<PipeAction>& actions,
                                         const std::vector<int64_t>& key);

// (p - 1) / (v m + p - 1).
double bubble_fraction(int stages, int microbatches, int chunks = 1);

}  // namespace tessera
