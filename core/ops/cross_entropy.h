// Softmax cross-entropy over the vocabulary, vocab-parallel (Megatron): logits[M, Vl] is this
// rank's slice of the vocabulary, columns [vocab_start, vocab_start + Vl). The row max and the
// sum of exponentials are all-reduced over `tp` (MAX, then SUM), and so is the target logit;
// full logits are never gathered, nor the probabilities stored. loss[m] = logsumexp(logits[m]) -
// logits[m, target[m]].
// Dtypes: logits and dlogits share one; losses, lse and dlosses are cross_entropy_loss_dtype:
//   CPU:  logits F32, F64 or BF16, the per-row tensors of the logits' dtype (F32 for BF16);
//   CUDA: logits F32 or BF16, the per-row tensors F32 (math in fp32, partial sums in double).
// targets is I32 [M] on the logits' device.
#pragma once

#include "core/communicator.h"
#include "core/tensor.h"

namespace tessera::ops {

DType cross_entropy_loss_dtype(Device device, DType logits_dtype);

// losses[M] and lse[M] (the global log-sum-exp per row, kept for the backward) are written.
// A negative target, or one past the vocabulary when this shard is all of it, is refused (on
// CUDA after the kernels, which makes the host wait for the GPU once per call).
void cross_entropy_forward(Tensor& losses, Tensor& lse, const Tensor& logits, const Tensor& targets,
                           int64_t vocab_start, Communicator& tp);
// Writes (=, not +=) dlogits[m, v] = dlosses[m] * (softmax[m, v] - 1{v == target[m]}).
// dlogits may be the same tensor as logits (the logits are not needed afterwards).
void cross_entropy_backward(Tensor& dlogits, const Tensor& dlosses, const Tensor& logits,
                            const Tensor& lse, const Tensor& targets, int64_t vocab_start);

}  // namespace tessera::ops
