// ZeRO-1: AdamW on this DP rank's piece of every bucket, then an all-gather of the parameters.
#include "parallel/zero_optimizer.h"

#include <algorithm>

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
    const int64_t len = buckets.piece_length(b);
    const int64_t piece_begin = buckets.piece_begin(b), piece_end = piece_begin + len;
    exp_avg_.emplace_back(Shape{len}, state, values.device());
    exp_avg_sq_.emplace_back(Shape{len}, state, values.device());
    if (mixed) {  // the masters start as the bf16 values, widened exactly
      master_.emplace_back(Shape{len}, DType::F32, values.device());
      ops::cast(master_.back(), values.slice0(piece_begin, piece_end));
    }
    for (Param* p : b.params) {
      const int64_t begin = buckets.offset_of(*p), end = begin + p->value.numel();
      const int64_t lo = std::max(begin, piece_begin), hi = std::min(end, piece_end);
      if (lo >= hi) continue;
      const int64_t from = lo - piece_begin, to = hi - piece_begin;
      segments_.push_back(
          Segment{p, bucket, from, to, values.slice0(lo, hi), b.shard_grad.slice0(from, to),
                  exp_avg_.back().slice0(from, to), exp_avg_sq_.back().slice0(from, to),
                  mixed ? master_.back().slice0(from, to) : Tensor(), adamw_weight_decay(*p, cfg)});
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

void ZeroAdamW::scale_grads(double alpha) {
  for (GradBuckets::Bucket& b : buckets_.buckets()) ops::scale(b.shard_grad, alpha);
}

Tensor ZeroAdamW::gather(const std::vector<Tensor>& pieces, bool keep) {
  const Tensor& flat = buckets_.flat_values();
  // Into host memory, one bucket at a time: the whole state on the GPU would take 12 bytes a
  // parameter more (moments and masters), what ZeRO-1 saved; ranks that do not keep it only
  // take part in the all-gathers.
  Tensor whole = keep ? Tensor(flat.shape(), state_dtype()) : Tensor();
  const std::vector<GradBuckets::Bucket>& bs = buckets_.buckets();
  for (size_t i = 0; i < bs.size(); ++i) {
    Tensor kept = keep ? whole.slice0(bs[i].offset, bs[i].offset + bs[i].size) : Tensor();
    const bool in_place = keep && flat.device() == Device::CPU;
    Tensor block = in_place ? kept : Tensor({bs[i].size}, state_dtype(), flat.device());
    buckets_.dp().all_gather(block, pieces[i]);
    if (keep && !in_place) copy_into(kept, block);
  }
  return whole;
}

void ZeroAdamW::gather_moments(Tensor& exp_avg, Tensor& exp_avg_sq, bool keep) {
  exp_avg = gather(exp_avg_, keep);
  exp_avg_sq = gather(exp_avg_sq_, keep);
}

Tensor ZeroAdamW::gather_masters(bool keep) {
  TESSERA_CHECK(mixed_precision(), "ZeroAdamW::gather_masters without bfloat16 parameters");
  return gather(master_, keep);
}

void ZeroAdamW::load_bucket(size_t i, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                            const Tensor& masters) {
  const GradBuckets::Bucket& b = buckets_.buckets().at(i);
  const int64_t begin = buckets_.piece_begin(b) - b.offset, end = begin + buckets_.piece_length(b);
  copy_into(exp_avg_[i], exp_avg.slice0(begin, end));
  copy_into(exp_avg_sq_[i], exp_avg_sq.slice0(begin, end));
  if (!mixed_precision()) return;
  TESSERA_CHECK(masters.defined(), "ZeroAdamW::load_bucket: bfloat16 parameters need masters");
  copy_into(master_[i], masters.slice0(begin, end));
  Tensor piece = buckets_.flat_values().slice0(b.offset + begin, b.offset + end);
  copy_into(piece, ops::cast_to(masters.slice0(begin, end), DType::BF16));
}

int64_t ZeroAdamW::moment_elements() const {
  int64_t n = 0;
  for (const Tensor& m : exp_avg_) n += m.numel();
  return n;
}

void ZeroAdamW::step(double lr) {
  ++t_;
  for (Segment& seg : segments_) {
    ops::AdamWStep s;
    s.lr = lr;
    s.beta1 = cfg_.beta1;
    s.beta2 = cfg_.beta2;
    s.eps = cfg_.eps;
    s.weight_decay = seg.weight_decay;
    s.t = t_;
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
    const int64_t begin = buckets_.piece_begin(b), len = buckets_.piece_length(b);
    Tensor whole = buckets_.flat_values().slice0(b.offset, b.offset + b.size);
    gathers.push_back(
        dp.all_gather_async(whole, buckets_.flat_values().slice0(begin, begin + len)));
  }
  for (auto& g : gathers) g->wait();
}

}  // namespace tessera
