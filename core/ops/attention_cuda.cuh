// What the CUDA attention kernels share (attention_cuda.cu, attention_bf16_cuda.cu): where a
// thread block's (batch, head) lives in the arrays, and the tensor-core kernels for bf16, called
// by attention_cuda.cu, which has checked the arguments (head dim 64 or 128) and, for the
// backward, computed delta = rowsum(dout * out). Arrays and semantics as in attention_cuda.h;
// scale is 1 / sqrt(hd). Internal to core/ops.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace tessera::ops::cuda {

// One (batch, head) of the arrays, for blockIdx.y = b * H + h: qkv and dqkv rows are 3C wide
// with this head's q at +0, k at +C and v at +2C; out and dout rows are C wide; lse and delta
// hold S values per (batch, head).
struct AttentionHead {
  int64_t C, qkv_row;
  int64_t qkv;    // offset of (b, t = 0, q of head h) in qkv and dqkv
  int64_t out;    // offset of (b, t = 0, head h) in out and dout
  int64_t stats;  // offset of (b, h, t = 0) in lse and delta
};

template <int HD>
__device__ __forceinline__ AttentionHead head_of_block(int S, int H) {
  const int64_t b = blockIdx.y / H, h = blockIdx.y % H;
  AttentionHead r;
  r.C = int64_t{H} * HD;
  r.qkv_row = 3 * r.C;
  r.qkv = b * S * r.qkv_row + h * HD;
  r.out = b * S * r.C + h * HD;
  r.stats = int64_t{blockIdx.y} * S;
  return r;
}

// The index of this block's query tile in the order blocks should start: the query tiles that
// see the most keys (the last ones, under the causal mask) first, so that the short ones fill the
// gaps at the end.
__device__ __forceinline__ int longest_first_tile() {
  return static_cast<int>(gridDim.x - 1 - blockIdx.x);
}

// HD = 64 or 128 (instantiated in attention_bf16_cuda.cu).
template <int HD>
void attention_forward_bf16(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int64_t B,
                            int64_t S, int64_t H, float scale);

template <int HD>
void attention_backward_bf16(__nv_bfloat16* dqkv, const __nv_bfloat16* dout,
                             const __nv_bfloat16* qkv, const float* lse, const float* delta,
                             int64_t B, int64_t S, int64_t H, float scale);

}  // namespace tessera::ops::cuda
