// Causal multi-head self-attention on this rank's heads. qkv is [B, T, 3 * H * hd], laid out
// as [q of heads 0..H-1 | k of heads 0..H-1 | v of heads 0..H-1], each head hd wide; out is
// [B, T, H * hd]. The forward saves the softmax probabilities att[B, H, T, T] (entries above
// the diagonal are 0) for the backward. Scale 1/sqrt(hd).
#pragma once

#include "core/tensor.h"

namespace tessera::ops {

void attention_forward(Tensor& out, Tensor& att, const Tensor& qkv, int64_t heads);
// Accumulates (+=) into dqkv.
void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& att,
                        int64_t heads);

}  // namespace tessera::ops
