// CUDA AdamW update and optimizer reductions behind core/ops/adamw.h: raw device pointers, sizes
// already checked by the dispatcher, work queued on cuda::compute_stream(). Only sum_of_squares
// synchronises (its values return to the host). Internal to core/ops.
#pragma once

#include <cstdint>
#include <vector>

#include "core/ops/adamw.h"

namespace tessera::ops::cuda {

// fp32 master weights and moments: the formula of adamw.h with the CPU twin's order of operations
// and its float scalar factors, rounded to nearest at every step (no fused multiply-adds).
void adamw_update(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n,
                  const AdamWStep& s);
// The same update of master, exp_avg and exp_avg_sq, with value = master rounded to bf16 in the
// same pass; G is float or bf16.
template <typename G>
void adamw_update_mixed(float* master, bf16* value, const G* grad, float* exp_avg,
                        float* exp_avg_sq, int64_t n, const AdamWStep& s);

// One operand of sum_of_squares: n elements of `dtype` (F32 or BF16) at device address data.
struct SquaresOperand {
  const void* data;
  DType dtype;
  int64_t n;
};
// The sum of x^2 in double of each operand, in order, after a single wait for the GPU. Fixed
// block partition (a function of n only) and fixed-order tree sums: the same bits on every run,
// and the same for an operand whatever the others.
std::vector<double> sum_of_squares(const std::vector<SquaresOperand>& xs);
// x *= alpha, with alpha rounded to float first as on the CPU.
template <typename T>
void scale(T* x, int64_t n, double alpha);

}  // namespace tessera::ops::cuda
