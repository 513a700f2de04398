// CUDA AdamW update and optimizer reductions behind core/ops/adamw.h: raw device pointers, sizes
// already checked by the dispatcher, work queued on cuda::compute_stream(). Only sum_of_squares
// synchronises (its value returns to the host). Internal to core/ops.
#pragma once

#include <cstdint>

#include "core/ops/adamw.h"

namespace tessera::ops::cuda {

// fp32 master weights and moments: the formula of adamw.h with the CPU twin's order of operations
// and its float scalar factors, rounded to nearest at every step (no fused multiply-adds).
void adamw_update(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n,
                  const AdamWStep& s);
// sum of x^2 in double; T is float or bf16. Fixed block partition (a function of n only) and
// fixed-order tree sums: the same bits on every run.
template <typename T>
double sum_of_squares(const T* x, int64_t n);
// x *= alpha, with alpha rounded to float first as on the CPU.
template <typename T>
void scale(T* x, int64_t n, double alpha);

}  // namespace tessera::ops::cuda
