// What `tessera train` shows of a run on rank 0: the start (corpora, model, layout, schedule,
// memory), one log line and one metrics.jsonl object per interval (IntervalLog), and the summary
// at the end (the loss curve, the final loss beside the corpus' unigram entropy, peak memory).
// The training loop (launcher/train_command.cpp) calls these.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>

#include "core/communicator.h"
#include "io/metrics.h"
#include "launcher/config.h"
#include "launcher/train_command.h"
#include "launcher/trainer.h"

namespace tessera {

// The dense peak FLOP/s of this rank's GPU in the run's precision (this_gpu_peak_flops of
// --gpu.peak_tflops); 0 on the CPU or for a GPU neither knows. Every rank is taken to have the
// same GPU.
double peak_flops_per_rank(const TrainConfig& cfg);

// Rank 0's lines before the first step: print_inputs, the groups, the layout and schedule
// (print_pipeline), the precision and GPU, the steps, print_schedule_notes.
void print_start(const TrainConfig& cfg, Trainer& tr);
// What a trainer, started or not (`tessera train --check`), says of its inputs: the model and its
// parameters, the corpora and their samples, validation, and the notes on them.
void print_inputs(const TrainConfig& cfg, Trainer& tr);
// The pipeline's stages and their layers, the schedule, its microbatches and bubble.
void print_pipeline(const TrainConfig& cfg, const Trainer& tr);
// The run's steps, their sequences and tokens, and how often they pass over the training samples:
// "100 steps of 8 sequences (256 tokens), 25600 tokens in all, 2.50 epochs of the training
// samples", or of the most repeated corpus of a blend whose weights are not its sizes
// ("3.10 epochs of data/b, the most repeated corpus").
std::string steps_text(const TrainConfig& cfg, const SampleStream& s);
// The memory a rank of the run needs, estimated: the state of its parameters (param_state_bytes;
// ZeRO-1's piece taken as 1/dp of them) and its stage's activations (pipeline_activation_bytes).
struct RankMemory {
  GridCoord at;  // of a rank of DP replica 0, which holds what the others hold
  int64_t params = 0, state = 0, activations = 0;
  bool beyond = false;  // the whole passes 2^63 bytes (saturated_bytes): no machine holds it
};
// The rank at `at` of `layout`, and the one that needs the most.
RankMemory rank_memory(const TrainConfig& cfg, const GridLayout& layout, const GridCoord& at);
RankMemory largest_rank_memory(const TrainConfig& cfg, const GridLayout& layout);
// "estimate X MB = S MB of parameters, gradients and optimizer state (N parameters) + A MB of
// activations (docs/...)" for the largest rank, with " for each rank" (DP only) or " for the
// largest rank (TP rank r of stage s)" after X MB on several ranks; on the CPU what it leaves out.
// With `largest` false, for the rank `m` is of: " for this rank (TP rank r of stage s)".
std::string memory_estimate_text(const TrainConfig& cfg, const GridLayout& layout,
                                 const RankMemory& m, bool largest = true);
// "memory (GPU): " or "memory (host): " and that text for the largest rank, on a line; returns
// that rank's.
RankMemory print_memory_estimate(const TrainConfig& cfg, const GridLayout& layout);
// The lines of the start about the layout and options that the check prints too: TP and
// sequence parallelism (or that it has no effect); ZeRO-1's part of the data-parallel line
// (", ZeRO-1 (AdamW moments sharded)", or that it has no effect; "" without it); bf16 on the
// CPU; the replica check.
void print_tensor_parallel(const TrainConfig& cfg, const GridLayout& layout);
std::string zero_text(const TrainConfig& cfg, const GridLayout& layout);
void print_precision_note(const TrainConfig& cfg);
void print_replica_check(const TrainConfig& cfg);
// What the learning-rate schedule does in a run this long, when that needs saying.
void print_schedule_notes(const TrainConfig& cfg);

// The run's end (collective over `world`, printed by rank 0): the loss curve, the final loss
// beside the corpus' unigram entropy (not for a run a signal or the time limit stopped, which
// must not spend its grace reading the corpus), and peak memory beside the estimate.
void print_summary(const TrainConfig& cfg, Trainer& tr, const TrainResult& result,
                   Communicator& world);

// Rank 0's record of the run: one log line and one metrics.jsonl object per interval.
class IntervalLog {
 public:
  using Clock = std::chrono::steady_clock;

  // peak_flops: of all ranks together, for MFU (0: not shown). first_step: the step (0-based)
  // this run starts at, after a resume.
  IntervalLog(const TrainConfig& cfg, bool root, double peak_flops, int64_t first_step);

  // A step whose update was skipped (non-finite loss or gradient norm, --train.nan_policy skip).
  void skipped(int64_t step, const StepStats& s, int64_t in_a_row, int64_t total);

  // Time that went into something else than steps (a validation, a save): left out of the
  // interval's tokens/s and ms/step, as Megatron-LM leaves it out (the ETA keeps it).
  void exclude(Clock::duration spent) { interval_start_ += spent; }

  // The validation loss after step `step` (0-based).
  void validation(int64_t step, double loss);

  // A validation after step `step` that the run's stop ended after `done` of `total` batches
  // (none: not begun), so that a preempted run saves within its grace time.
  void validation_stopped(int64_t step, int64_t done, int64_t total);

  // Adds step `step` (0-based); at the end of an interval prints and records it.
  void add(int64_t step, const StepStats& s, double epochs);

  // A run that stops after step `step` (a signal, the time limit, --train.exit_after) between
  // two log lines: the steps added since the last line are printed and recorded as an interval
  // of their own (the step the run stops at is in metrics.jsonl, as a finished run's last is);
  // nothing when there are none, or the step was skipped (whose line skipped() printed).
  void end_early(int64_t step, const StepStats& s, double epochs);

  // The mean loss the last line logged, over its steps: the run's final loss.
  const LossMean& last_mean() const { return last_mean_; }

 private:
  const TrainConfig& cfg_;
  double tokens_per_step_, flops_per_token_, peak_flops_;
  int64_t first_step_;
  std::unique_ptr<MetricsWriter> metrics_;
  Clock::time_point start_ = Clock::now(), interval_start_ = start_;
  double interval_loss_ = 0;
  int64_t interval_losses_ = 0;  // steps whose loss is in interval_loss_ (skipped ones are not)
  int64_t interval_first_ = 0;   // the first of them (1-based)
  int64_t interval_steps_ = 0;   // steps computed, for the rate
  LossMean last_mean_;

  // Prints and records the interval that ends with step `step` (its mean: last_mean_); `ends`
  // clears it (at a multiple of --train.log_interval, the run's last step or its stop).
  void log_line(int64_t step, const StepStats& s, double epochs, bool ends);
};

}  // namespace tessera
