// One training step on a rank of the grid: data, (interleaved) 1F1B pipeline, tied-embedding and DP
// gradient reductions, global-norm clipping, AdamW or ZeRO-1.
#include "launcher/trainer.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/ops/adamw.h"
#include "core/profile.h"
#include "core/rng.h"
#include "io/token_corpus.h"
#include "launcher/cluster.h"

namespace tessera {

namespace {

// A rank's wish to stop (StopReason bits) as three counts for a world all-reduce, and back.
void put_stop(int stop, double* g) {
  g[0] = (stop & kStopSignal) ? 1 : 0;
  g[1] = (stop & kStopTime) ? 1 : 0;
  g[2] = (stop & kStopInterrupt) ? 1 : 0;
}

void take_stop(const double* g, StepStats& stats) {
  stats.stop_on_signal = static_cast<int>(g[0]);
  stats.stop_on_time = static_cast<int>(g[1]);
  stats.stop_on_interrupt = static_cast<int>(g[2]);
}

}  // namespace

Trainer::Trainer(const TrainConfig& cfg, int rank, int world_size, bool inputs_only)
    : cfg_(cfg),
      layout_(cfg.layout_for(world_size)),
      rank_(rank),
      microbatches_(static_cast<int>(cfg.accumulation_steps(layout_.dp))),
      blend_(parse_corpus_blend(cfg.data_path, "--data.path")),
      // The default data cache (in RUN_DIR) is made by rank 0, which made RUN_DIR; the others
      // take its path, to read records there and key their parts of the id check by (rank 0
      // writes the records).
      corpus_opener_(inputs_only                           ? data_cache_dir(cfg, false)
                     : rank == 0 || !cfg.cache_dir.empty() ? data_cache_dir(cfg)
                                                           : data_cache_path(cfg),
                     inputs_only ? 0 : rank, inputs_only ? 1 : world_size, !inputs_only),
      inject_nan_(rank_steps("--debug.inject_nan", cfg.debug_inject_nan)),
      perturb_(rank_steps("--debug.perturb_replicated", cfg.debug_perturb_replicated)),
      flip_bit_(rank_steps("--debug.flip_bit", cfg.debug_flip_bit)) {
  SampleOptions so;
  so.seq_len = cfg.model.seq_len;
  so.seed = cfg.seed;
  so.vocab_size = cfg.model.vocab_size;
  const std::vector<TokenCorpus> corpora =
      corpus_opener_.open(blend_, cfg.model.vocab_size, "--data.path");
  // Samples are held out of training only when they will be evaluated, and only when some
  // corpus has two samples to split (a one-sample corpus has nothing to spare).
  bool hold_out = cfg.holds_out_validation();
  if (hold_out)
    hold_out = std::any_of(corpora.begin(), corpora.end(), [&](const TokenCorpus& c) {
      return (c.num_tokens() - 1) / cfg.model.seq_len >= 2;
    });
  so.valid_fraction = hold_out ? cfg.valid_fraction : 0.0;
  const std::vector<double> weights = blend_weights(blend_, corpora, "--data.path");
  train_stream_ = std::make_unique<SampleStream>(corpora, weights, so);
  // Validation: its own corpora, or the held-out end of each training corpus; in order.
  so.shuffle = false;
  // Parsed also when not read (--train.eval_interval 0): a malformed value is named now, not in
  // the run that turns evaluation on.
  const std::vector<CorpusWeight> valid =
      cfg.valid_path.empty() ? std::vector<CorpusWeight>{}
                             : parse_corpus_blend(cfg.valid_path, "--data.valid_path");
  if (cfg.eval_interval > 0 && !valid.empty()) {
    so.valid_fraction = 0;
    const std::vector<TokenCorpus> valid_corpora =
        corpus_opener_.open(valid, cfg.model.vocab_size, "--data.valid_path");
    valid_stream_ = std::make_unique<SampleStream>(
        valid_corpora, blend_weights(valid, valid_corpora, "--data.valid_path"), so);
  } else if (hold_out) {
    so.valid_split = true;
    valid_stream_ = std::make_unique<SampleStream>(corpora, weights, so);
  }
  const int dp_rank = layout_.coord_of(rank).dp;
  // Two steps of batches ahead: the loop never waits while the corpus is in the page cache.
  loader_ = std::make_unique<DataLoader>(*train_stream_, dp_rank, layout_.dp, cfg.micro_batch,
                                         2 * microbatches_);
  if (valid_stream_)
    valid_loader_ =
        std::make_unique<DataLoader>(*valid_stream_, dp_rank, layout_.dp, cfg.micro_batch, 0);
}

namespace {

// The values a DP bucket holds. What the buckets reduce is fp32 (the gradients, or with bf16
// their fp32 sums); a size past 2^62 elements means one bucket per group, as asked. By default
// 25 MB (PyTorch DDP's), and with ZeRO-1 at least 2^20 values per DP rank (Megatron-LM's rule,
// 1M parameters per DP rank): each rank's piece of a reduce-scatter holds 2^20 values or more
// (not 12K at DP 512), and a checkpoint, where each DP rank writes its pieces, cuts a tensor
// into a few blocks, not thousands (model.h5's virtual datasets slow down faster than their
// blocks grow). A bucket still ends with its group: a stage smaller than DP x 2^20 values, and
// the tied embedding's own bucket with PP > 1, are cut into DP smaller pieces.
int64_t bucket_elements_for(const ParallelConfig& parallel, int dp) {
  const double mb = parallel.bucket_mb > 0 ? parallel.bucket_mb : 25;
  const int64_t elements = std::max<int64_t>(
      static_cast<int64_t>(std::min(mb * 1e6 / static_cast<double>(sizeof(float)), 0x1p62)), 1);
  if (parallel.bucket_mb == 0 && parallel.zero == 1)
    return std::max<int64_t>(elements, int64_t{dp} << 20);
  return elements;
}

}  // namespace

ModelShard run_shard(const TrainConfig& cfg, const GridLayout& layout, const GridCoord& at) {
  ModelShard shard = model_shard(cfg.model, layout, at, cfg.parallel.virtual_stages);
  shard.sequence_parallel = cfg.parallel.sequence_parallel && layout.tp > 1;
  return shard;
}

void Trainer::start(Communicator& world, int local_rank) {
  TESSERA_CHECK(world.rank() == rank_, "Trainer::start on another rank than it was made for");
  host_world_ = &world;
  corpus_opener_.record_id_ranges(world);
  device_world_ = open_device_world(cfg_, world, local_rank);
  grid_ = std::make_unique<ProcessGrid>(device_world_ ? *device_world_ : world, layout_);
  model_ = std::make_unique<GPT>(cfg_.model, run_shard(cfg_, layout_, grid_->coord()), grid_->tp(),
                                 cfg_.seed);
  pipeline_ =
      std::make_unique<PipelineEngine>(*model_, grid_->pp(), cfg_.micro_batch, microbatches_);
  params_ = model_->params();
  // Gradients become final in reverse order of the forward, a model chunk at a time: each chunk
  // starts a bucket, so that its buckets start their reduction once its last backward has run.
  // The tied embedding of a split pipeline gets a bucket of its own, last, so that the two
  // stages' buckets (with ZeRO-1, pieces) line up element for element: reduced over DP when its
  // gradient is final (on the last stage right after the LM head's backward, overlapping the
  // layers' backward), it is then summed over its two stages.
  if (layout_.pp > 1 && (grid_->first_stage() || grid_->last_stage())) tied_ = &model_->wte;
  std::vector<std::vector<Param*>> groups;
  chunk_groups_.resize(static_cast<size_t>(model_->chunks()));
  int holds_tied = 0;  // the chunk whose backward writes the tied embedding's gradient
  for (int c = model_->chunks(); c-- > 0;) {
    const std::vector<Param*> params = model_->chunk_params(c);
    std::vector<Param*> order(params.rbegin(), params.rend());
    order.erase(std::remove(order.begin(), order.end(), tied_), order.end());
    if (!order.empty()) {
      chunk_groups_[static_cast<size_t>(c)].push_back(groups.size());
      groups.push_back(order);
    }
    if (order.size() < params.size()) holds_tied = c;
  }
  if (tied_) {
    chunk_groups_[static_cast<size_t>(holds_tied)].push_back(groups.size());
    groups.push_back({tied_});
  }
  bucket_elements_ = bucket_elements_for(cfg_.parallel, layout_.dp);
  // From here every Param's value and gradient are views into the buckets' flat buffers.
  buckets_ =
      std::make_unique<GradBuckets>(groups, grid_->dp(), bucket_elements_, cfg_.parallel.zero == 1);
  if (cfg_.parallel.zero == 1)
    zero_ = std::make_unique<ZeroAdamW>(*buckets_, cfg_.adamw);
  else
    adamw_ = std::make_unique<AdamW>(params_, cfg_.adamw);
  if (adamw_ && buckets_->mixed_precision()) {  // step from the fp32 gradient sums
    std::vector<Tensor> sums;
    for (const Param* p : params_) sums.push_back(buckets_->grad_of(*p));
    adamw_->use_gradients(sums);
  }
  if (layout_.tp > 1 && layout_.dp > 1) {
    replicated_values_ = buckets_->value_views([](const Param& p) { return p.tp_replicated(); });
    int64_t elements = 0;
    for (const Tensor& v : replicated_values_) elements += v.numel();
    const Tensor& flat = buckets_->flat_values();
    if (elements > 0) replicated_stage_ = Tensor({elements}, flat.dtype(), flat.device());
  }
  const int64_t T = cfg_.model.seq_len, micro = cfg_.micro_batch;
  for (int i = 0; i < microbatches_; ++i) {
    inputs_.emplace_back(Shape{micro, T}, DType::I32);
    targets_.emplace_back(Shape{micro, T}, DType::I32);
  }
}

// Every rank reads its DP rank's microbatches, so the loader's state is the same on all ranks
// of a replica; the first stage uses the inputs, the last the targets.
void Trainer::read_microbatches(DataLoader& loader) {
  for (int i = 0; i < microbatches_; ++i)
    loader.next_inputs_and_targets(inputs_[static_cast<size_t>(i)],
                                   targets_[static_cast<size_t>(i)]);
}

StepStats Trainer::agree_on_stop(int stop) {
  Tensor votes({3}, DType::F64);
  put_stop(stop, votes.data<double>());
  host_world().all_reduce(votes, ReduceOp::Sum);
  StepStats stats;
  take_stop(votes.data<double>(), stats);
  return stats;
}

StepStats Trainer::step(const std::function<int()>& stop_wish) {
  TESSERA_CHECK(grid_ != nullptr, "Trainer::step before start");
  const ProfileRange range("step", steps_done_ + 1);
  buckets_->zero_grad();
  {
    const ProfileRange data("data");
    read_microbatches(*loader_);
  }
  const GradReadyFn on_ready = [this](Param& p) { buckets_->mark_ready(p); };
  // Each microbatch's backward scales its loss by 1 / microbatches, so that the gradients sum to
  // their mean over the step; the DP reduction then averages over the DP ranks.
  const double loss_sum =
      pipeline_->run(inputs_, targets_, 1.0 / microbatches_, &on_ready, [this](int chunk) {
        for (size_t group : chunk_groups_[static_cast<size_t>(chunk)])
          buckets_->end_microbatch(group);
      });
  reduce_gradients();
  // After the DP reduction, so on this rank alone; the rank then counts its own gradients in the
  // norm below even when another DP rank counts that replica.
  const bool inject = inject_nan();

  // One world all-reduce gives every global number: the loss from the TP rank 0 of each last
  // stage, the squared gradient norm, each element counted once over the whole grid, and how
  // many ranks ask to stop, for each reason. NaN or Inf anywhere makes the sums non-finite on
  // every rank alike.
  ProfileRange norm("gradient norm");
  const GridCoord c = grid_->coord();
  Tensor global({5}, DType::F64);
  double* g = global.data<double>();
  g[0] = replica_loss_share(*grid_, loss_sum, microbatches_);
  if (zero_)
    g[1] = zero_->grad_sum_of_squares();
  else if (c.dp == 0 || inject)
    g[1] = ops::sum_of_squares(buckets_->counted_grads());
  put_stop(stop_wish ? stop_wish() : 0, g + 2);
  local_loss_ = g[0];
  local_sum_of_squares_ = g[1];
  host_world().all_reduce(global, ReduceOp::Sum);
  norm.end();
  StepStats stats;
  stats.loss = g[0];
  stats.grad_norm = std::sqrt(g[1]);
  take_stop(g + 2, stats);
  stats.lr = cfg_.schedule.at(steps_done_);
  ++steps_done_;
  if (!std::isfinite(stats.loss) || !std::isfinite(stats.grad_norm)) {
    stats.skipped = true;  // the same verdict on every rank: no rank updates
    ++skipped_in_a_row_, ++skipped_total_;
    return stats;
  }
  skipped_in_a_row_ = 0;

  const ProfileRange update("optimizer");
  // Clipping rides in the update's pass over the gradients.
  const double grad_scale = clip_scale(stats.grad_norm, cfg_.adamw.clip);
  if (zero_)
    zero_->step(stats.lr, grad_scale);
  else
    adamw_->step(stats.lr, grad_scale);
  sync_replicated();
  if (has_rank_step(flip_bit_, rank_, steps_done_)) flip_bits();
  return stats;
}

// Waits for every bucket's DP reduction, then sums the tied embedding's gradient over its two
// stages: those reductions run over two communicators and may round differently, while a sum of
// two operands is the same bits on both ranks, so both copies take the same update.
// --debug.perturb_replicated plays such a rounding between the two.
void Trainer::reduce_gradients() {
  {
    const ProfileRange finish("gradient reduction wait");
    buckets_->finish();
  }
  if (has_rank_step(perturb_, rank_, steps_done_ + 1)) perturb_replicated();
  if (tied_) {
    const ProfileRange tied("tied embedding reduction");
    Tensor g = zero_ ? buckets_->bucket_of(*tied_).shard_grad : buckets_->grad_of(*tied_);
    grid_->embedding()->all_reduce(g, ReduceOp::Sum);
  }
}

// The TP-replicated Params get bitwise-equal gradients on every TP rank from the backward, but
// each TP rank's DP reduction runs over a communicator of its own: NCCL may choose other
// algorithms or channel counts for two of them (their GPUs' links differ), sum in another order
// and round differently. One broadcast per step of these small tensors (LayerNorms, row-parallel
// biases, the position embedding) keeps every copy equal to TP rank 0's, which is also the one
// that checkpoints hold. The other TP ranks' optimizer state for them is then never used.
void Trainer::sync_replicated() {
  if (!replicated_stage_.defined()) return;
  const bool root = grid_->coord().tp == 0;
  int64_t at = 0;
  for (Tensor& v : replicated_values_) {
    Tensor part = replicated_stage_.slice0(at, at + v.numel());
    if (root) copy_into(part, v);
    at += v.numel();
  }
  grid_->tp().broadcast(replicated_stage_, 0);
  if (root) return;
  at = 0;
  for (Tensor& v : replicated_values_) {
    copy_into(v, replicated_stage_.slice0(at, at + v.numel()));
    at += v.numel();
  }
}

namespace {

// Changes the first element of t (on any device) by edit(host copy of it), for the debug faults.
template <typename Edit>
void edit_first_element(const Tensor& t, Edit edit) {
  Tensor first = t.view({t.numel()}).slice0(0, 1);
  Tensor host = first.to(Device::CPU);
  edit(host);
  copy_into(first, host);
}

// Adds 1 to the first element of t (F32 or F64).
void add_one_to_first(const Tensor& t) {
  edit_first_element(t, [](Tensor& host) {
    if (host.dtype() == DType::F64)
      host.data<double>()[0] += 1;
    else
      host.data<float>()[0] += 1;
  });
}

}  // namespace

// What a DP reduction that summed in another order would leave on this rank, made large enough
// to show: the first element of the reduced gradient of each TP-replicated Param (every Param at
// TP 1) and of the LM head's tied copy is 1 more. With ZeRO-1, where that element lies in this
// rank's piece.
void Trainer::perturb_replicated() {
  const auto shared = [](const Param& p) { return p.tp_replicated() || p.tied_copy; };
  if (!zero_) {
    for (const Param* p : params_)
      if (shared(*p)) add_one_to_first(buckets_->grad_of(*p));
    return;
  }
  for (GradBuckets::Bucket& b : buckets_->buckets())
    for (const GradBuckets::PieceSpan& span : buckets_->piece_spans(b))
      if (shared(*span.param) && span.first == 0)
        add_one_to_first(b.shard_grad.slice0(span.at, span.at + 1));
}

// --debug.inject_nan at this step on this rank: its ZeRO-1 piece of the reduced gradients, or
// else the reduced gradient of the first Param this rank counts in the norm, becomes NaN (the
// first Param may be one that another rank counts: the LM head's tied copy, or a LayerNorm on a
// TP rank other than 0). Whether it did.
bool Trainer::inject_nan() {
  if (!has_rank_step(inject_nan_, rank_, steps_done_ + 1)) return false;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (zero_) {
    for (GradBuckets::Bucket& b : buckets_->buckets()) ops::scale(b.shard_grad, nan);
  } else {
    const auto counted = std::find_if(params_.begin(), params_.end(),
                                      [](const Param* p) { return p->counted_here(); });
    TESSERA_CHECK(counted != params_.end(), "inject_nan: this rank counts no Param in the norm");
    Tensor grad = buckets_->grad_of(**counted);
    ops::scale(grad, nan);
  }
  return true;
}

// A fault in this rank's memory: the lowest bit of the first element of each Param's value flips.
void Trainer::flip_bits() {
  for (const Param* p : params_)
    edit_first_element(p->value, [](Tensor& host) {
      static_cast<unsigned char*>(host.raw())[0] ^= 1;  // little-endian: the mantissa's last bit
    });
}

std::vector<std::string> Trainer::nonfinite_here() {
  std::vector<std::string> found;
  if (!std::isfinite(local_loss_)) found.push_back("loss");
  if (zero_) {
    // The gradients live as this rank's reduced piece: say so rather than name tensors.
    if (!std::isfinite(local_sum_of_squares_)) found.push_back("the ZeRO-1 gradient piece");
    return found;
  }
  if (std::isfinite(local_sum_of_squares_)) return found;
  for (const Param* p : params_)
    if (p->counted_here() && !std::isfinite(ops::sum_of_squares(buckets_->grad_of(*p))))
      found.push_back(p->name);
  return found;
}

void Trainer::check_same_corpora(Communicator& world) const {
  tessera::check_same_corpora(world, train_stream_->sequence_key(), "--data.path", *train_stream_);
  // A held-out split is of the training corpora, the same when they are; corpora of its own are
  // compared apart, so that the message names their option. (Whether a validation stream is
  // open follows from the options, the same on every rank.)
  if (valid_stream_ && !cfg_.valid_path.empty())
    tessera::check_same_corpora(world, valid_stream_->sequence_key(), "--data.valid_path",
                                *valid_stream_);
}

std::optional<double> Trainer::evaluate(const std::function<int()>& stop_wish, StepStats& stats) {
  TESSERA_CHECK(valid_loader_ != nullptr, "Trainer::evaluate without validation data");
  const ProfileRange range("validation");
  valid_loader_->set_state(LoaderState{0, cfg_.seed, {}});
  double loss_sum = 0;
  for (batches_evaluated_ = 0; batches_evaluated_ < cfg_.eval_batches; ++batches_evaluated_) {
    Tensor wish({3}, DType::F64);
    put_stop(stop_wish(), wish.data<double>());
    host_world().all_reduce(wish, ReduceOp::Sum);
    take_stop(wish.data<double>(), stats);
    if (stats.stops()) return std::nullopt;
    read_microbatches(*valid_loader_);
    loss_sum += pipeline_->evaluate(inputs_, targets_);
  }
  return mean_loss_of_replicas(*grid_, host_world(), loss_sum,
                               static_cast<double>(cfg_.eval_batches) * microbatches_);
}

int64_t Trainer::activation_bytes() const {
  return pipeline_activation_bytes(cfg_.model, model_->shard(), layout_.pp, grid_->coord().pp,
                                   cfg_.micro_batch, microbatches_);
}

}  // namespace tessera
