// CUDA LayerNorm launchers behind core/ops/layernorm.h: raw device pointers, shapes already checked
// by the dispatcher, work queued on cuda::compute_stream() with no synchronisation. T is float or
// bf16; mean and rstd are always fp32 (fp32 statistics under bf16 storage). Internal to core/ops.
#pragma once

#include <cstdint>

namespace tessera::ops::cuda {

// out[N, C] = (inp - mean) * rstd * weight + bias; writes mean[N] and rstd[N].
template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight,
                       const T* bias, int64_t N, int64_t C);
// Accumulates (+=) into dinp, dweight and dbias; dweight and dbias deterministically (fixed-order
// partial sums over row chunks, no atomics).
template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const float* mean, const float* rstd, int64_t N, int64_t C);
// residual = a + b (rounded to T), then layernorm_forward of residual as stored, in one kernel.
// residual may alias a or b.
template <typename T>
void residual_layernorm_forward(T* residual, T* out, float* mean, float* rstd, const T* a,
                                const T* b, const T* weight, const T* bias, int64_t N, int64_t C);

}  // namespace tessera::ops::cuda
