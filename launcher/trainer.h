// Trainer: one rank's share of a training run on a TP x DP x PP grid. Before anything talks to
// another rank it opens the corpora and checks every token id against the vocabulary. Per step
// it takes this DP rank's microbatches from the prefetching loader, runs them through its pipeline
// stage in 1F1B order (interleaved 1F1B with model chunks), reduces gradients over DP in buckets
// that start during the backward, then sums the tied embedding's over the first and last stage,
// clips by the global norm, and takes an AdamW (or ZeRO-1) step. With TP and DP, TP rank 0 then
// broadcasts the values of the TP-replicated parameters to its TP group: each TP rank's DP group is
// another communicator, which may sum in another order, and the copies would drift apart. The loss
// and gradient norm it reports are the global ones, the same on every rank.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/model/gpt.h"
#include "core/optim/optimizer.h"
#include "io/data_loader.h"
#include "launcher/config.h"
#include "launcher/corpora.h"
#include "parallel/grad_buckets.h"
#include "parallel/pipeline.h"
#include "parallel/process_grid.h"
#include "parallel/zero_optimizer.h"

namespace tessera {

struct StepStats {
  double loss = 0;       // mean over the global batch's tokens
  double grad_norm = 0;  // before clipping
  double lr = 0;
  // The loss or the gradient norm was NaN or Inf on some rank: no rank updated its weights
  // (the step's data counts as consumed).
  bool skipped = false;
  // Ranks that asked to stop at this step's end (step()'s `stop`), by reason.
  int stop_on_signal = 0, stop_on_time = 0;
  int stop_on_interrupt = 0;  // of stop_on_signal, those whose signal was SIGINT
  // Some rank asked to stop: the run saves and ends after this step.
  bool stops() const { return stop_on_signal > 0 || stop_on_time > 0; }
};

// Why a rank asks the others to stop after this step (bits of Trainer::step's `stop`).
enum StopReason : int { kStopSignal = 1, kStopTime = 2, kStopInterrupt = 4 };

// What the rank at `at` of `layout` holds of the run's model: its model_shard with the run's
// model chunks (--parallel.virtual_stages), sequence parallel with TP > 1 when asked.
ModelShard run_shard(const TrainConfig& cfg, const GridLayout& layout, const GridCoord& at);

class Trainer {
 public:
  // Checks the layout, opens the corpora and checks their token ids, for world rank `rank`;
  // touches no other rank. Throws InputError for a bad layout or corpus, the same way on every
  // rank. `inputs_only` (`tessera train --check`): this process checks every token id itself
  // (or reads the run's id-check records), and creates no data cache and writes no record; such
  // a trainer is never started.
  Trainer(const TrainConfig& cfg, int rank, int world_size, bool inputs_only = false);
  // Collective over `world` (MPI: host tensors): builds the grid, the model shard and the
  // optimizer. With --train.device cuda the grid's groups are NCCL communicators on GPU
  // `local_rank` (this rank's index among the ranks of its node), made over `world`, which stays
  // the communicator for host tensors (host_world()).
  void start(Communicator& world, int local_rank = 0);
  // One optimizer step, collective over the grid. `stop_wish`, when given, is asked once the
  // backward is done, for this rank's wish to stop after the step (StopReason bits): a signal
  // that came during the forward or backward stops the run after this step, not the next. The
  // step's one world all-reduce, which already carries the loss and the gradient norm, tells
  // every rank who asked (StepStats::stop_on_*). A non-finite loss or gradient norm anywhere
  // skips the update on every rank.
  StepStats step(const std::function<int()>& stop_wish = {});
  // The ranks' wishes to stop (StopReason bits, `stop` this rank's), agreed outside a step: one
  // world all-reduce, whose StepStats carries the stop counts only. After a save, during which a
  // signal may have come.
  StepStats agree_on_stop(int stop);
  // After a skipped step: this rank's non-finite values, as "loss" and the names of the
  // tensors whose gradients hold NaN or Inf; empty when its own values were finite. Gradients
  // are identical over DP after the reduction, so DP rank 0 of each replica speaks for them.
  // Local: no other rank takes part.
  std::vector<std::string> nonfinite_here();
  bool has_validation() const { return valid_stream_ != nullptr; }
  // Mean loss over --train.eval_batches global batches of validation samples, always the same
  // ones (the first of the validation sequence), on every rank. Collective. Before each batch
  // one small all-reduce tells every rank whether any wishes to stop (`stop_wish()`, StopReason
  // bits), set in `stats`'s stop_on_*: when one does, the evaluation ends there and returns no
  // loss, so that a preempted run saves without first finishing a long evaluation. `stats`
  // comes from a step that did not stop.
  std::optional<double> evaluate(const std::function<int()>& stop_wish, StepStats& stats);
  // Global batches the last evaluate() took before it returned.
  int64_t batches_evaluated() const { return batches_evaluated_; }

  const GridLayout& layout() const { return layout_; }
  ProcessGrid& grid() { return *grid_; }
  // The world for host tensors (losses, checksums, verdicts): grid().world() unless on cuda.
  Communicator& host_world() { return *host_world_; }
  GPT& model() { return *model_; }
  GradBuckets& buckets() { return *buckets_; }
  // The fp32 values a gradient bucket closes at (--parallel.bucket_mb, or its default).
  int64_t bucket_elements() const { return bucket_elements_; }
  SampleStream& samples() { return *train_stream_; }
  SampleStream* validation_samples() { return valid_stream_.get(); }
  DataLoader& loader() { return *loader_; }
  int microbatches() const { return microbatches_; }
  int64_t steps_done() const { return steps_done_; }
  void set_steps_done(int64_t steps) { steps_done_ = steps; }
  // Steps skipped for a non-finite loss or gradient norm (--train.nan_policy skip): in a row up
  // to the last step, and in all. Carried by checkpoints, so that --train.nan_max_skips counts
  // across a resume.
  int64_t skipped_in_a_row() const { return skipped_in_a_row_; }
  int64_t skipped_total() const { return skipped_total_; }
  void set_skipped(int64_t in_a_row, int64_t total) {
    skipped_in_a_row_ = in_a_row;
    skipped_total_ = total;
  }
  // Tokens trained on by the time `samples` were read: seq_len each, and what a checkpoint of
  // another --model.seq_len (resumed with --data.allow_change) counted before.
  int64_t consumed_tokens(int64_t samples) const {
    return tokens_at_resume_ + (samples - samples_at_resume_) * cfg_.model.seq_len;
  }
  void set_resumed_at(int64_t samples, int64_t tokens) {
    samples_at_resume_ = samples;
    tokens_at_resume_ = tokens;
  }
  const TrainConfig& config() const { return cfg_; }
  // The checkpoint the run's weights began from (--checkpoint.init, "" for none), as the resumed
  // checkpoint's config says, whatever this run was given: config.ini and the saves keep it.
  void set_initial_weights(const std::string& dir) {
    cfg_.checkpoint_init = dir;
    cfg_.resolved_ini = with_ini_value(cfg_.resolved_ini, "checkpoint.init", dir);
  }
  const std::vector<Param*>& params() const { return params_; }
  AdamW* adamw() { return adamw_.get(); }    // null with ZeRO-1
  ZeroAdamW* zero() { return zero_.get(); }  // null without
  // Bytes of activations on this rank: its pipeline's sets (pipeline_activation_bytes).
  int64_t activation_bytes() const;

  // Every rank opened the same corpora with the same weights and sizes (each expands a glob
  // itself): InputError naming --data.path otherwise, on every rank. Collective over `world`;
  // before start(), whose id-check records need the ranks to agree.
  void check_same_corpora(Communicator& world) const;

 private:
  void read_microbatches(DataLoader& loader);
  // The step's DP reductions, then the tied embedding's sum over its two stages.
  void reduce_gradients();
  // TP rank 0's values of the TP-replicated Params, broadcast over the TP group after an update.
  void sync_replicated();
  // --debug.perturb_replicated, --debug.flip_bit and --debug.inject_nan (which says whether it
  // injected at this step).
  void perturb_replicated();
  void flip_bits();
  bool inject_nan();
  TrainConfig cfg_;
  GridLayout layout_;
  int rank_;
  int microbatches_ = 1;
  std::vector<CorpusWeight> blend_;
  CorpusOpener corpus_opener_;  // before the streams: it opens their corpora
  std::unique_ptr<SampleStream> train_stream_, valid_stream_;
  std::unique_ptr<DataLoader> valid_loader_;
  Communicator* host_world_ = nullptr;
  std::unique_ptr<Communicator> device_world_;  // NCCL, on cuda
  std::unique_ptr<ProcessGrid> grid_;
  std::unique_ptr<GPT> model_;
  std::unique_ptr<DataLoader> loader_;
  std::unique_ptr<PipelineEngine> pipeline_;
  std::unique_ptr<GradBuckets> buckets_;
  int64_t bucket_elements_ = 0;
  std::unique_ptr<AdamW> adamw_;
  std::unique_ptr<ZeroAdamW> zero_;
  std::vector<Param*> params_;
  // The GradBuckets groups that hold each model chunk's Params.
  std::vector<std::vector<size_t>> chunk_groups_;
  // The token embedding when PP > 1, which the first stage (as the embedding) and the last (as
  // the LM head, Param::tied_copy, counted once in norms and checkpoints) both hold. Its
  // gradient has a bucket group of its own, the last (start()), reduced over DP once the
  // backward reports it final, then summed over the two stages (ProcessGrid::embedding) after
  // every DP reduction (step()), whose buckets line up element for element: both copies take
  // the same update.
  Param* tied_ = nullptr;
  std::vector<Tensor> inputs_, targets_;
  int64_t steps_done_ = 0;
  int64_t skipped_in_a_row_ = 0, skipped_total_ = 0;
  int64_t samples_at_resume_ = 0, tokens_at_resume_ = 0;
  int64_t batches_evaluated_ = 0;
  double local_loss_ = 0, local_sum_of_squares_ = 0;  // this rank's parts of the last step's
  std::vector<RankStep> inject_nan_;                  // --debug.inject_nan
  std::vector<RankStep> perturb_;                     // --debug.perturb_replicated
  std::vector<RankStep> flip_bit_;                    // --debug.flip_bit
  // With TP and DP: views of the TP-replicated Params' values in the flat buffer, and the one
  // buffer that carries them all in sync_replicated.
  std::vector<Tensor> replicated_values_;
  Tensor replicated_stage_;
};

}  // namespace tessera
