// LayerNorm over the last dimension (Ba et al. 2016), eps = 1e-5 as in GPT-2. The forward saves
// the per-row mean and reciprocal standard deviation for the backward. Statistics dtype
// (row_stats_dtype): float32 on cuda and for bf16 inp (fp32 statistics under bf16
// activations), else inp's dtype.
#pragma once

#include "core/tensor.h"

namespace tessera::ops {

constexpr double kLayerNormEps = 1e-5;

// out[N, C] = (inp - mean) * rstd * weight + bias; mean[N], rstd[N] are written.
void layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp,
                       const Tensor& weight, const Tensor& bias);
// Accumulates (+=) into dinp, dweight, dbias. dweight and dbias are the same bits on every run.
void layernorm_backward(Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout,
                        const Tensor& inp, const Tensor& weight, const Tensor& mean,
                        const Tensor& rstd);

// residual = a + b, then out = LayerNorm(residual): a pre-norm block's residual add fused with
// the next LayerNorm (one kernel on cuda; on the host exactly residual_forward then
// layernorm_forward). The statistics are those of residual as stored in its dtype, so the
// backward is layernorm_backward with inp = residual, then residual_backward. residual may alias
// a or b.
void residual_layernorm_forward(Tensor& residual, Tensor& out, Tensor& mean, Tensor& rstd,
                                const Tensor& a, const Tensor& b, const Tensor& weight,
                                const Tensor& bias);

}  // namespace tessera::ops
