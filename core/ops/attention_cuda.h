// The CUDA kernels behind core/ops/attention.h: causal flash attention (Dao et al. 2022, the
// backward of FA2, 2023) over raw contiguous device arrays, T = float or bf16 storage with fp32
// arithmetic, launched on the compute stream. Plain C++ so that the dispatcher (attention.cpp)
// can include it; the dispatcher has checked shapes, dtypes, devices and the head dim.
// Internal to core/ops.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/dtype.h"
#include "core/ops/attention.h"

namespace tessera::ops::cuda {

// The head dims the kernels are compiled for.
constexpr bool attention_head_dim_supported(int64_t hd) {
  return hd == 64 || hd == 128;
}
inline constexpr const char* kAttentionHeadDims = "64 and 128";

// The sequences x heads a launch takes: each has a row of thread blocks, and a grid at most 65535
// rows (the options check --train.micro_batch against it).
inline constexpr int64_t kAttentionMaxBatchHeads = 65535;

// The softmax scale 1/sqrt(hd) in float, as the CPU kernel computes it for float.
inline float attention_scale(int64_t hd) {
  return 1.0f / std::sqrt(static_cast<float>(hd));
}

// qkv[B, S, 3 H hd], out[B, S, H hd], lse[B, H, S] (F32, written for every row). kernels picks
// the bf16 kernels (attention.h, AttentionKernels); float ignores it.
template <typename T>
void attention_forward(T* out, float* lse, const T* qkv, int64_t B, int64_t S, int64_t H,
                       int64_t hd, AttentionKernels kernels);
// dqkv = the gradient, each element stored once (no clearing first). dK and dV are summed by the
// thread block that owns the key tile and dQ by the one that owns the query tile, each in a
// fixed order: no atomics, bitwise reproducible (cuDNN's backward: attention_cudnn.cu).
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse,
                        int64_t B, int64_t S, int64_t H, int64_t hd, AttentionKernels kernels);

}  // namespace tessera::ops::cuda
