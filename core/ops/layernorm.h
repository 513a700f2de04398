// LayerNorm over the last dimension (Ba et al. 2016), eps = 1e-5 as in GPT-2. The forward saves
// the per-row mean and reciprocal standard deviation for the backward.
#pragma once

#include "core/tensor.h"

namespace tessera::ops {

constexpr double kLayerNormEps = 1e-5;

// out[N, C] = (inp - mean) * rstd * weight + bias; mean[N], rstd[N] are written.
void layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp,
                       const Tensor& weight, const Tensor& bias);
// Accumulates (+=) into dinp, dweight, dbias.
void layernorm_backward(Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout,
                        const Tensor& inp, const Tensor& weight, const Tensor& mean,
                        const Tensor& rstd);

}  // namespace tessera::ops
