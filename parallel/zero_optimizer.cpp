// ZeRO-1: AdamW on this DP rank's piece of every bucket, then an all-gather of the parameters.
#include "parallel/zero_optimizer.h"

#include "core/error.h"
#include "core/ops/adamw.h"
#include "core/ops/cast.h"

namespace tessera {

ZeroAdamW::ZeroAdamW(GradBuckets& buckets, const AdamWConfig& cfg) : buckets_(buckets), cfg_(cfg) {
  TESSERA_CHECK(buckets.sharded(), "ZeroAdamW needs GradBuckets built with shard = true");
  Tensor& values = buckets.flat_values();
  const bool mixed = buckets.mixed_precision();
  const DType state = mixed ? DType::F32 : values.dtype();
  for (size_t bucket = 0; bucket < buckets.buckets().size(); ++bucket) {
    GradBuckets::Bucket& b = buckets.buckets()[bucket];
    const Tensor piece = buckets.piece_values(b);
    const int64_t len = piece.numel();
    exp_avg_.emplace_back(Shape{len}, state, values.device());
    exp_avg_sq_.emplace_back(Shape{len}, state, values.device());
    if (mixed) {  // the masters start as the bf16 values, widened exactly
      master_.emplace_back(Shape{len}, DType::F32, values.device());
      ops::cast(master_.back(), piece);
    }
    for (const GradBuckets::PieceSpan& span : buckets.piece_spans(b)) {
      const int64_t from = span.at, to = span.at + span.count;
      segments_.push_back(Segment{span.param, bucket, from, to, piece.slice0(from, to),
                                  b.shard_grad.slice0(from, to), exp_avg_.back().slice0(from, to),
                                  exp_avg_sq_.back().slice0(from, to),
                                  mixed ? master_.back().slice0(from, to) : Tensor(),
                                  adamw_weight_decay(*span.param, cfg)});
    }
  }
}

DType ZeroAdamW::state_dtype() const {
  return exp_avg_.front().dtype();
}

double ZeroAdamW::grad_sum_of_squares() const {
  // The counted segments, each run of adjacent ones in a piece as one view: a few long sums
  // instead of one per segment, in order, with one wait for the GPU.
  std::vector<std::vector<std::pair<int64_t, int64_t>>> ranges(buckets_.buckets().size());
  for (const Segment& seg : segments_)
    if (seg.param->counted_here()) ranges[seg.bucket].emplace_back(seg.from, seg.to);
  std::vector<Tensor> counted;
  for (size_t i = 0; i < ranges.size(); ++i)
    for (Tensor& v : merged_views(buckets_.buckets()[i].shard_grad, ranges[i]))
      counted.push_back(v);
  return ops::sum_of_squares(counted);
}

ZeroAdamW::Piece ZeroAdamW::piece(size_t i) const {
  return Piece{exp_avg_.at(i), exp_avg_sq_.at(i), mixed_precision() ? master_.at(i) : Tensor()};
}

void ZeroAdamW::load_piece(size_t i, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                           const Tensor& weights) {
  Tensor values = buckets_.piece_values(buckets_.buckets().at(i));
  copy_into(exp_avg_[i], exp_avg);
  copy_into(exp_avg_sq_[i], exp_avg_sq);
  if (mixed_precision()) {
    copy_into(master_[i], weights);
    copy_into(values, ops::cast_to(weights, DType::BF16));
  } else {
    copy_into(values, weights);
  }
}

int64_t ZeroAdamW::moment_elements() const {
  int64_t n = 0;
  for (const Tensor& m : exp_avg_) n += m.numel();
  return n;
}

void ZeroAdamW::step(double lr, double grad_scale) {
  ++t_;
  for (Segment& seg : segments_) {
    const ops::AdamWStep s = adamw_step(cfg_, lr, seg.weight_decay, t_, grad_scale);
    if (seg.master.defined())  // the bf16 value is written in the same pass
      ops::adamw_update_mixed(seg.master, seg.value, seg.grad, seg.exp_avg, seg.exp_avg_sq, s);
    else
      ops::adamw_update(seg.value, seg.grad, seg.exp_avg, seg.exp_avg_sq, s);
  }
  all_gather_values();
}

void ZeroAdamW::all_gather_values() {
  Communicator& dp = buckets_.dp();
  if (dp.size() == 1) return;
  // In place: this rank's piece already sits at its block of the bucket.
  std::vector<std::unique_ptr<CommRequest>> gathers;
  for (GradBuckets::Bucket& b : buckets_.buckets()) {
    Tensor whole = buckets_.flat_values().slice0(b.offset, b.offset + b.size);
    gathers.push_back(dp.all_gather_async(whole, buckets_.piece_values(b)));
  }
  for (auto& g : gathers) g->wait();
}

}  // namespace tessera
