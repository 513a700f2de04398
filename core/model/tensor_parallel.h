// Tensor-parallel layers as Megatron's conjugate pairs: each layer's communication over the TP
// group is one collective in the forward or the backward, never both, and its conjugate in the
// other direction is the identity (Megatron-LM, Shoeybi et al. 2019, sec. 3):
//
//   layer                          weight split          forward            backward
//   ColumnParallelLinear           rows (out features)   identity           all-reduce d inp
//   RowParallelLinear              cols (in features)    all-reduce out     identity
//   vocab-parallel embedding       rows (vocabulary)     all-reduce out     identity
//   vocab-parallel cross-entropy   logits' columns       all-reduce max,    identity
//     (core/ops/cross_entropy.h)                         sum-exp, target
//
// A column-parallel layer takes the full (replicated) input and gives this rank's slice of the
// output features; a row-parallel layer takes that slice and gives the full output, with the
// replicated bias added once, by TP rank 0 before the reduction. The functions hold no state: they
// compute on the caller's Params and tensors. Every rank of `tp` calls them in the same order.
//
// With sequence parallelism (ModelShard::sequence_parallel; Korthikanti et al. 2022, sec. 4.2.2)
// the tensors between the layers (the residual stream, the LayerNorms and their inputs) hold
// only this rank's 1/tp of the tokens, and each all-reduce becomes the reduce-scatter and
// all-gather it is made of, the same bytes:
//
//   layer                          forward                     backward
//   ColumnParallelLinear           all-gather inp (the block)  reduce-scatter d inp
//   RowParallelLinear              reduce-scatter out          all-gather d out (the block)
//   vocab-parallel embedding       reduce-scatter out          all-gather d out (the model)
//
// The LayerNorms' parameters, replicated, then see only this rank's tokens: their gradients
// are summed over TP (blocks.cpp, gpt.cpp).
#pragma once

#include <initializer_list>

#include "core/communicator.h"
#include "core/model/param.h"
#include "core/tensor.h"

namespace tessera {

// out[M, N/tp] = inp[M, K] @ w[N/tp, K]^T + b[N/tp]. w and b are this rank's rows.
struct ColumnParallelLinear {
  Param& w;
  Param* b;  // may be null: no bias

  // No communication: every rank holds the whole input.
  void forward(Tensor& out, const Tensor& inp) const;
  // Accumulates (+=) w.grad and b->grad; writes (=) dinp[M, K], the sum over `tp` of every
  // rank's partial input gradient. dinp may be null when the input needs no gradient.
  void backward(Tensor* dinp, const Tensor& dout, const Tensor& inp, Communicator& tp) const;
  // Sequence parallel: the same, but of the summed input gradient only this rank's rows
  // [M r / tp, M (r + 1) / tp) are written, into dinp_rows; partial[M, K] is scratch.
  void backward_scatter(Tensor& dinp_rows, Tensor& partial, const Tensor& dout, const Tensor& inp,
                        Communicator& tp) const;
  // Either, as sequence parallelism says: the input gradient, whole in `whole` or this rank's
  // rows in `rows` (then `whole` is scratch); returns the one written.
  Tensor input_backward(bool sequence_parallel, Tensor& rows, Tensor& whole, const Tensor& dout,
                        const Tensor& inp, Communicator& tp) const;
};

// out[M, N] = sum over tp of inp[M, K/tp] @ w[N, K/tp]^T, + b[N] (replicated).
struct RowParallelLinear {
  Param& w;
  Param* b;  // may be null: no bias

  // One all-reduce of the output; TP rank 0 adds the bias in its GEMM, so it counts once, not
  // tp times (and the GPU needs no kernel of its own to add it).
  void forward(Tensor& out, const Tensor& inp, Communicator& tp) const;
  // Sequence parallel: the same, but of the summed output only this rank's rows
  // [M r / tp, M (r + 1) / tp) are written, into out_rows; partial[M, N] is scratch.
  void forward_scatter(Tensor& out_rows, Tensor& partial, const Tensor& inp,
                       Communicator& tp) const;
  // No communication: dout is the same on every rank. Writes (=) dinp[M, K/tp] when non-null;
  // accumulates (+=) w.grad and b->grad (the bias gradient is the same on every rank).
  void backward(Tensor* dinp, const Tensor& dout, const Tensor& inp) const;
  // backward for inp = gelu(pre_gelu), the GELU's backward fused in: writes (=) dpre, the
  // gradient of pre_gelu (ops::matmul_gelu_backward).
  void backward_gelu(Tensor& dpre, const Tensor& dout, const Tensor& inp,
                     const Tensor& pre_gelu) const;
};

// out[B, T, C] = wte[ids[b, t]] where this rank holds rows [vocab_start, vocab_start +
// wte rows): each rank looks up the tokens in its range (zero rows elsewhere), then one
// all-reduce assembles the full embedding. ids is I32 [B, T].
void vocab_parallel_embedding_forward(Tensor& out, const Tensor& ids, const Param& wte,
                                      int64_t vocab_start, Communicator& tp);
// No communication: dout is the same on every rank, and each accumulates (+=) into its rows.
void vocab_parallel_embedding_backward(Param& wte, const Tensor& dout, const Tensor& ids,
                                       int64_t vocab_start);

// Sequence parallel: row i of `partial` [k, C] holds the gradient of params[i] (replicated, C
// values: a LayerNorm's weight or bias) from this rank's tokens. Adds (+=) their sum over `tp`
// into each params[i]->grad, the same bits on every rank. bf16 partials are summed in float32
// and rounded once, not at every step of the reduction. `partial` is overwritten.
void add_tp_sum_of_norm_grads(Tensor& partial, std::initializer_list<Param*> params,
                              Communicator& tp);

}  // namespace tessera
