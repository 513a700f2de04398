// ZeroAdamW: ZeRO stage 1 (Rajbhandari et al. 2020) over GradBuckets built with shard = true.
// DP rank r keeps the AdamW moments of piece r of every bucket only (8 / DP bytes per
// parameter instead of 8), updates the parameters of that piece from the reduce-scattered
// gradient, then all-gathers every bucket so that each rank holds the whole updated model.
// The update of each element is AdamW's exactly, so the result equals unsharded AdamW.
#pragma once

#include <vector>

#include "core/optim/optimizer.h"
#include "parallel/grad_buckets.h"

namespace tessera {

class ZeroAdamW {
 public:
  ZeroAdamW(GradBuckets& buckets, const AdamWConfig& cfg);

  // Sum of squares of the gradients in this rank's pieces that it counts (Param::counted_here);
  // summed over DP and the model-parallel ranks it gives the global norm.
  double grad_sum_of_squares() const;
  void scale_grads(double alpha);
  // One AdamW update of this rank's pieces at rate lr, then the all-gather of every bucket.
  void step(double lr);
  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }  // when resuming
  // The whole moments, laid out like GradBuckets::flat_values(): all-gathered over DP
  // (collective), for a checkpoint. Padding elements are 0.
  void gather_moments(Tensor& exp_avg, Tensor& exp_avg_sq);
  // The inverse, when resuming: each rank keeps its pieces of the whole moments.
  void scatter_moments(const Tensor& exp_avg, const Tensor& exp_avg_sq);
  int64_t moment_elements() const;  // per moment, on this rank

 private:
  // The part of one Param that falls in this rank's piece of a bucket.
  struct Segment {
    Param* param;
    Tensor value, grad, exp_avg, exp_avg_sq;
    double weight_decay;
  };
  GradBuckets& buckets_;
  AdamWConfig cfg_;
  std::vector<Segment> segments_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;  // per bucket, size / DP
  int64_t t_ = 0;
};

}  // namespace tessera
