// ZeroAdamW: ZeRO stage 1 (Rajbhandari et al. 2020) over GradBuckets built with shard = true.
// DP rank r keeps the AdamW moments of piece r of every bucket only (8 / DP bytes per
// parameter instead of 8), updates the parameters of that piece from the reduce-scattered
// gradient, then all-gathers every bucket so that each rank holds the whole updated model.
// The update of each element is AdamW's exactly, so the result equals unsharded AdamW.
//
// Mixed precision (bfloat16 Params, as Megatron-LM's distributed optimizer with --bf16): the
// fp32 master weights are sharded like the moments (12 / DP bytes per parameter of optimizer
// state, instead of 12); rank r updates its masters from the fp32 gradient sums and rounds them
// into its piece of the bf16 values in the same pass (ops::adamw_update_mixed), and the bf16
// values are all-gathered. Each element is AdamW's mixed update exactly.
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
  // One AdamW update of this rank's pieces at rate lr from the gradients times grad_scale
  // (clip_scale's factor), then the all-gather of every bucket.
  void step(double lr, double grad_scale = 1);
  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }  // when resuming
  bool mixed_precision() const { return !master_.empty(); }
  // The dtype of the moments and master weights: float32 with mixed precision, else the Params'.
  DType state_dtype() const;
  // This rank's piece of bucket i's state, views laid out like [piece_begin, piece_begin +
  // piece_length) of flat_values(): the moments and, with mixed precision, the fp32 master
  // weights (else undefined). A checkpoint saves each DP rank's pieces from here; nothing is
  // gathered.
  struct Piece {
    Tensor exp_avg, exp_avg_sq, master;
  };
  Piece piece(size_t i) const;
  // The inverse, when resuming, one bucket at a time: this rank's piece of bucket i from tensors
  // of the piece's length, the moments and the weights (with mixed precision the fp32 masters,
  // which its piece of the bf16 values becomes rounded; else its piece of the values). Then
  // finish_load() (collective over DP) brings every rank's piece of the values to every rank,
  // as after a step.
  void load_piece(size_t i, const Tensor& exp_avg, const Tensor& exp_avg_sq, const Tensor& weights);
  void finish_load() { all_gather_values(); }
  int64_t moment_elements() const;  // per moment, on this rank

 private:
  // The part of one Param that falls in this rank's piece of a bucket.
  struct Segment {
    Param* param;
    size_t bucket;
    int64_t from, to;  // its elements within the bucket's piece
    Tensor value, grad, exp_avg, exp_avg_sq;
    Tensor master;  // mixed precision: fp32 master weights of the value; else undefined
    double weight_decay;
  };
  // Every rank's piece of the values to every rank (in place; nothing with one DP rank).
  void all_gather_values();
  GradBuckets& buckets_;
  AdamWConfig cfg_;
  std::vector<Segment> segments_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;  // per bucket, size / DP
  std::vector<Tensor> master_;                // mixed precision: per bucket, size / DP; else empty
  int64_t t_ = 0;
};

}  // namespace tessera
