// The CUDA kernels behind core/ops/cross_entropy.h: the local phases of vocab-parallel
// cross-entropy, twins of those in cpu_kernels.h, over raw contiguous device arrays and launched
// on the compute stream. Logits are float or bf16; everything per row (the max, losses, lse,
// dlosses) is F32, the partial sums F64 as on the CPU. The dispatcher (cross_entropy.cpp) has
// checked the tensors and runs the collectives between the phases. Internal to core/ops.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace tessera::ops::cuda {

// row_max[m] = max_v logits[m, v] over this shard.
template <typename T>
void cross_entropy_row_max(float* row_max, const T* logits, int64_t M, int64_t V);
// sumexp[m] = sum_v exp(logits[m, v] - gmax[m]) over this shard; target_logit[m] = the target's
// logit, 0 when the target lies on another shard. Also flags targets outside [0, vocab_end)
// (vocab_end < 0: only negative ones): *first_bad, zero on entry, becomes M - m for the first
// such row m, so that it stays 0 when every target is good.
template <typename T>
void cross_entropy_partials(double* sumexp, double* target_logit, int32_t* first_bad,
                            const T* logits, const float* gmax, const int32_t* targets, int64_t M,
                            int64_t V, int64_t vocab_start, int64_t vocab_end);
// lse[m] = gmax[m] + log(sumexp[m]), losses[m] = lse[m] - target_logit[m], in double.
void cross_entropy_finish(float* losses, float* lse, const float* gmax, const double* sumexp,
                          const double* target_logit, int64_t M);
// dlogits[m, v] = dlosses[m] * (exp(logits[m, v] - lse[m]) - 1{v + vocab_start == target[m]});
// dlogits may be logits itself.
template <typename T>
void cross_entropy_backward(T* dlogits, const float* dlosses, const T* logits, const float* lse,
                            const int32_t* targets, int64_t M, int64_t V, int64_t vocab_start);

}  // namespace tessera::ops::cuda
