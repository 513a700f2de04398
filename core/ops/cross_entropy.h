// Softmax cross-entropy over the vocabulary, vocab-parallel (Megatron): logits[M, Vl] is this
// rank's slice of the vocabulary, columns [vocab_start, vocab_start + Vl). The row max and the
// sum of exponentials are all-reduced over `tp` (MAX, then SUM), and so is the target logit;
// full logits are never gathered. loss[m] = logsumexp(logits[m]) - logits[m, target[m]].
#pragma once

#include "core/communicator.h"
#include "core/tensor.h"

namespace tessera::ops {

// losses[M] and lse[M] (the global log-sum-exp per row, kept for the backward) are written.
// targets is I32 [M].
void cross_entropy_forward(Tensor& losses, Tensor& lse, const Tensor& logits, const Tensor& targets,
                           int64_t vocab_start, Communicator& tp);
// Writes (=, not +=) dlogits[m, v] = dlosses[m] * (softmax[m, v] - 1{v == target[m]}).
// dlogits may be the same tensor as logits (the logits are not needed afterwards).
void cross_entropy_backward(Tensor& dlogits, const Tensor& dlosses, const Tensor& logits,
                            const Tensor& lse, const Tensor& targets, int64_t vocab_start);

}  // namespace tessera::ops
