// One training step on a rank of the grid: data, 1F1B pipeline, tied-embedding and DP gradient
// reductions, global-norm clipping, AdamW or ZeRO-1.
#include "launcher/trainer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/ops/adamw.h"

namespace tessera {

Trainer::Trainer(const TrainConfig& cfg, int rank, int world_size)
    : cfg_(cfg),
      layout_(cfg.layout_for(world_size)),
      corpus_(IndexedDataset::open(cfg.data_path)),
      microbatches_(static_cast<int>(cfg.accumulation_steps(layout_.dp))) {
  // Epochs of whole global batches: every layout reads the same samples in every step.
  loader_ =
      std::make_unique<BatchLoader>(corpus_, cfg.model.seq_len, cfg.model.vocab_size, cfg.seed,
                                    layout_.coord_of(rank).dp, layout_.dp, cfg.global_batch);
}

void Trainer::start(Communicator& world) {
  grid_ = std::make_unique<ProcessGrid>(world, layout_);
  TESSERA_CHECK(layout_.coord_of(world.rank()).dp == grid_->coord().dp,
                "Trainer::start on another rank than the one it was made for");
  model_ = std::make_unique<GPT>(cfg_.model, grid_->shard(cfg_.model), grid_->tp(), cfg_.seed);
  pipeline_ =
      std::make_unique<PipelineEngine>(*model_, grid_->pp(), cfg_.micro_batch, microbatches_);
  params_ = model_->params();
  // Gradients become final in reverse order of the forward. The tied embedding of a split
  // pipeline is summed over its two stages first, so it gets a bucket of its own, last.
  std::vector<Param*> order(params_.rbegin(), params_.rend());
  std::vector<std::vector<Param*>> groups;
  if (layout_.pp > 1 && (grid_->first_stage() || grid_->last_stage())) {
    tied_ = &model_->wte;
    order.erase(std::remove(order.begin(), order.end(), tied_), order.end());
    if (!order.empty()) groups.push_back(order);
    groups.push_back({tied_});
  } else {
    groups.push_back(order);
  }
  const auto bucket_elements = static_cast<int64_t>(
      cfg_.parallel.bucket_mb * 1e6 / static_cast<double>(dtype_size(cfg_.model.dtype)));
  buckets_ = std::make_unique<GradBuckets>(
      groups, grid_->dp(), std::max<int64_t>(bucket_elements, 1), cfg_.parallel.zero == 1);
  if (cfg_.parallel.zero == 1)
    zero_ = std::make_unique<ZeroAdamW>(*buckets_, cfg_.adamw);
  else
    adamw_ = std::make_unique<AdamW>(params_, cfg_.adamw);
  const int64_t T = cfg_.model.seq_len, micro = cfg_.micro_batch;
  batch_ = Tensor({micro, T + 1}, DType::I32);
  for (int i = 0; i < microbatches_; ++i) {
    inputs_.emplace_back(Shape{micro, T}, DType::I32);
    targets_.emplace_back(Shape{micro, T}, DType::I32);
  }
}

// Every rank reads its DP rank's microbatches, so the loader's state is the same on all ranks
// of a replica; the first stage uses the inputs, the last the targets.
void Trainer::read_microbatches() {
  const int64_t B = cfg_.micro_batch, T = cfg_.model.seq_len;
  for (int i = 0; i < microbatches_; ++i) {
    loader_->next_batch(B, batch_);
    const int32_t* src = batch_.data<int32_t>();
    int32_t* in = inputs_[static_cast<size_t>(i)].data<int32_t>();
    int32_t* tg = targets_[static_cast<size_t>(i)].data<int32_t>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        in[b * T + t] = src[b * (T + 1) + t];
        tg[b * T + t] = src[b * (T + 1) + t + 1];
      }
  }
}

StepStats Trainer::step() {
  TESSERA_CHECK(grid_ != nullptr, "Trainer::step before start");
  buckets_->zero_grad();
  read_microbatches();
  const GradReadyFn on_ready = [this](Param& p) {
    if (&p != tied_) buckets_->mark_ready(p);
  };
  // Each DP rank's loss is a mean over its microbatches; the DP reduction then averages.
  const double loss_sum = pipeline_->run(inputs_, targets_, 1.0 / microbatches_, &on_ready);
  if (tied_) {
    grid_->embedding()->all_reduce(tied_->grad, ReduceOp::Sum);
    buckets_->mark_ready(*tied_);
  }
  buckets_->finish();

  // One world all-reduce gives both global numbers: the loss from the TP rank 0 of each last
  // stage, and the squared gradient norm, each element counted once over the whole grid.
  const GridCoord c = grid_->coord();
  Tensor global({2}, DType::F64);
  double* g = global.data<double>();
  if (grid_->last_stage() && c.tp == 0) g[0] = loss_sum / (microbatches_ * layout_.dp);
  if (zero_)
    g[1] = zero_->grad_sum_of_squares();
  else if (c.dp == 0)
    g[1] = grad_sum_of_squares(params_);
  grid_->world().all_reduce(global, ReduceOp::Sum);
  StepStats stats;
  stats.loss = g[0];
  stats.grad_norm = std::sqrt(g[1]);

  // torch.nn.utils.clip_grad_norm_'s rule: scale by clip / (norm + 1e-6) when below 1.
  if (cfg_.adamw.clip > 0 && std::isfinite(stats.grad_norm)) {
    const double coef = cfg_.adamw.clip / (stats.grad_norm + 1e-6);
    if (coef < 1.0) {
      if (zero_)
        zero_->scale_grads(coef);
      else
        ops::scale(buckets_->flat_grads(), coef);
    }
  }
  stats.lr = cfg_.schedule.at(steps_done_);
  if (zero_)
    zero_->step(stats.lr);
  else
    adamw_->step(stats.lr);
  ++steps_done_;
  return stats;
}

int64_t Trainer::state_bytes() const {
  const int64_t elem = static_cast<int64_t>(dtype_size(cfg_.model.dtype));
  const int64_t flat = buckets_->flat_values().numel();
  const int64_t moments = zero_ ? zero_->moment_elements() : flat;
  const int64_t reduced_piece = zero_ ? zero_->moment_elements() : 0;
  return elem * (2 * flat + 2 * moments + reduced_piece);
}

}  // namespace tessera
