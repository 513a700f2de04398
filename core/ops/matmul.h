// Linear layer GEMMs: BLAS on the host, cuBLASLt on the GPU. Weights are stored
// [out_features, in_features] (as in PyTorch and llm.c), so out = inp @ weight^T + bias. inp may
// have any leading shape; it is treated as [M, K] with K its last dimension. On the GPU every
// tensor of a call is F32 or BF16, all of one dtype.
#pragma once

#include "core/tensor.h"

namespace tessera::ops {

// out[M, N] = inp[M, K] @ weight[N, K]^T (+ bias[N] when bias is non-null).
void matmul_forward(Tensor& out, const Tensor& inp, const Tensor& weight, const Tensor* bias);

// Writes (=) the input gradient and accumulates (+=) the parameter gradients, each when non-null
// (as llm.c: the input gradient is a fresh activation gradient, the parameter gradients sum over
// micro-batches; writing saves zeroing dinp and reading it back in the GEMM):
//   dinp[M, K] = dout[M, N] @ weight[N, K];  dweight[N, K] += dout^T @ inp;  dbias[N] += sum_m
//   dout.
void matmul_backward(Tensor* dinp, Tensor* dweight, Tensor* dbias, const Tensor& dout,
                     const Tensor& inp, const Tensor& weight);

// A linear layer and its GELU in one call (gelu.h, tanh form), through cuBLASLt's GELU epilogue
// on the GPU. The model does not call it: its MLP runs the GEMM, then the GELU, so that selective
// recompute can drop the GELU's output alone (docs/DECISIONS.md, "The MLP's forward").
//   pre_gelu[M, N] = inp @ weight^T (+ bias);  out[M, N] = gelu(pre_gelu).
// pre_gelu is what gelu_backward needs. out and pre_gelu must not overlap. The backward is
// gelu_backward(dpre, dout, pre_gelu) then matmul_backward(..., dpre, inp, weight).
void matmul_gelu_forward(Tensor& out, Tensor& pre_gelu, const Tensor& inp, const Tensor& weight,
                         const Tensor* bias);

// matmul_backward of a layer whose input is inp = gelu(pre_gelu) (the MLP's second linear
// layer), with the GELU's backward fused into the input gradient:
//   dpre[M, K] = (dout @ weight) * gelu'(pre_gelu);  dweight += dout^T @ inp;  dbias += sum_m
//   dout.
// It is matmul_backward(&dpre, ...) then gelu_backward(dpre, dpre, pre_gelu); on the GPU in bf16
// with dgelu_epilogue() on, one GEMM with cuBLASLt's DGELU epilogue, which saves the GELU
// backward's pass over [M, K]. dpre must not overlap pre_gelu, inp or dout.
void matmul_gelu_backward(Tensor& dpre, Tensor* dweight, Tensor* dbias, const Tensor& dout,
                          const Tensor& inp, const Tensor& pre_gelu, const Tensor& weight);

// Whether matmul_gelu_backward uses the DGELU epilogue (the GPU, bf16). Off by default until the
// GPU tests have passed with it (docs/DECISIONS.md: new GPU kernels are opt-in); for the whole
// process, set before training starts.
void set_dgelu_epilogue(bool on);
bool dgelu_epilogue();

// GEMMs of this process that ran with a fused GELU epilogue: matmul_gelu_forward's GELU_AUX(_BIAS)
// and matmul_gelu_backward's DGELU. Each falls back to a GEMM and a kernel where cuBLASLt has no
// such algorithm, with the same results; these counts tell a test or a benchmark which ran.
struct GeluEpilogueCounts {
  int64_t forward = 0, backward = 0;
};
GeluEpilogueCounts gelu_epilogue_counts();

}  // namespace tessera::ops
