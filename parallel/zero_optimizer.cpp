// ZeRO-1: AdamW on this DP rank's piece of every bucket, then an all-gather of the parameters.
#include "parallel/zero_optimizer.h"

#include <algorithm>

#include "core/error.h"
#include "core/ops/adamw.h"

namespace tessera {

ZeroAdamW::ZeroAdamW(GradBuckets& buckets, const AdamWConfig& cfg) : buckets_(buckets), cfg_(cfg) {
  TESSERA_CHECK(buckets.sharded(), "ZeroAdamW needs GradBuckets built with shard = true");
  Tensor& values = buckets.flat_values();
  const int dp = buckets.dp().size(), r = buckets.dp().rank();
  for (GradBuckets::Bucket& b : buckets.buckets()) {
    const int64_t len = b.size / dp;
    const int64_t piece_begin = b.offset + r * len, piece_end = piece_begin + len;
    exp_avg_.emplace_back(Shape{len}, values.dtype(), values.device());
    exp_avg_sq_.emplace_back(Shape{len}, values.dtype(), values.device());
    for (Param* p : b.params) {
      const int64_t begin = buckets.offset_of(*p), end = begin + p->value.numel();
      const int64_t lo = std::max(begin, piece_begin), hi = std::min(end, piece_end);
      if (lo >= hi) continue;
      segments_.push_back(Segment{p, values.slice0(lo, hi),
                                  b.shard_grad.slice0(lo - piece_begin, hi - piece_begin),
                                  exp_avg_.back().slice0(lo - piece_begin, hi - piece_begin),
                                  exp_avg_sq_.back().slice0(lo - piece_begin, hi - piece_begin),
                                  adamw_weight_decay(*p, cfg)});
    }
  }
}

double ZeroAdamW::grad_sum_of_squares() const {
  std::vector<Tensor> counted;  // summed in order, with one wait for the GPU
  for (const Segment& seg : segments_)
    if (seg.param->counted_here()) counted.push_back(seg.grad);
  return ops::sum_of_squares(counted);
}

void ZeroAdamW::scale_grads(double alpha) {
  for (GradBuckets::Bucket& b : buckets_.buckets()) ops::scale(b.shard_grad, alpha);
}

void ZeroAdamW::gather_moments(Tensor& exp_avg, Tensor& exp_avg_sq) {
  const Tensor& flat = buckets_.flat_values();
  exp_avg = Tensor(flat.shape(), flat.dtype(), flat.device());
  exp_avg_sq = Tensor(flat.shape(), flat.dtype(), flat.device());
  Communicator& dp = buckets_.dp();
  std::vector<GradBuckets::Bucket>& bs = buckets_.buckets();
  for (size_t i = 0; i < bs.size(); ++i) {
    Tensor m = exp_avg.slice0(bs[i].offset, bs[i].offset + bs[i].size);
    Tensor v = exp_avg_sq.slice0(bs[i].offset, bs[i].offset + bs[i].size);
    dp.all_gather(m, exp_avg_[i]);
    dp.all_gather(v, exp_avg_sq_[i]);
  }
}

void ZeroAdamW::scatter_moments(const Tensor& exp_avg, const Tensor& exp_avg_sq) {
  const int dp = buckets_.dp().size(), r = buckets_.dp().rank();
  std::vector<GradBuckets::Bucket>& bs = buckets_.buckets();
  for (size_t i = 0; i < bs.size(); ++i) {
    const int64_t len = bs[i].size / dp, begin = bs[i].offset + r * len;
    copy_into(exp_avg_[i], exp_avg.slice0(begin, begin + len));
    copy_into(exp_avg_sq_[i], exp_avg_sq.slice0(begin, begin + len));
  }
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
    ops::adamw_update(seg.value, seg.grad, seg.exp_avg, seg.exp_avg_sq, s);
  }
  Communicator& dp = buckets_.dp();
  if (dp.size() == 1) return;
  // In place: this rank's piece already sits at its block of the bucket.
  std::vector<std::unique_ptr<CommRequest>> gathers;
  for (GradBuckets::Bucket& b : buckets_.buckets()) {
    const int64_t len = b.size / dp.size(), begin = b.offset + dp.rank() * len;
    Tensor whole = buckets_.flat_values().slice0(b.offset, b.offset + b.size);
    gathers.push_back(
        dp.all_gather_async(whole, buckets_.flat_values().slice0(begin, begin + len)));
  }
  for (auto& g : gathers) g->wait();
}

}  // namespace tessera
