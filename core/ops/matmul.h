// Linear layer GEMMs through BLAS. Weights are stored [out_features, in_features] (as in
// PyTorch and llm.c), so out = inp @ weight^T + bias. inp may have any leading shape; it is
// treated as [M, K] with K its last dimension.
#pragma once

#include "core/tensor.h"

namespace tessera::ops {

// out[M, N] = inp[M, K] @ weight[N, K]^T (+ bias[N] when bias is non-null).
void matmul_forward(Tensor& out, const Tensor& inp, const Tensor& weight, const Tensor* bias);

// Accumulates (+=) into each non-null gradient:
//   dinp[M, K] += dout[M, N] @ weight[N, K];  dweight[N, K] += dout^T @ inp;  dbias[N] += sum_m
//   dout.
void matmul_backward(Tensor* dinp, Tensor* dweight, Tensor* dbias, const Tensor& dout,
                     const Tensor& inp, const Tensor& weight);

}  // namespace tessera::ops
