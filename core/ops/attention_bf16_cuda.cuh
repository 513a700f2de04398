// The tensor-core flash attention kernels for bf16 (attention_bf16_cuda.cu), called by
// attention_cuda.cu, which has checked the arguments (head dim 64 or 128) and, for the backward,
// computed delta = rowsum(dout * out). Arrays and semantics as in attention_cuda.h; scale is
// 1 / sqrt(hd). Internal to core/ops.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace tessera::ops::cuda {

void attention_forward_bf16(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int64_t B,
                            int64_t S, int64_t H, int64_t hd, float scale);

void attention_backward_bf16(__nv_bfloat16* dqkv, const __nv_bfloat16* dout,
                             const __nv_bfloat16* qkv, const float* lse, const float* delta,
                             int64_t B, int64_t S, int64_t H, int64_t hd, float scale);

}  // namespace tessera::ops::cuda
