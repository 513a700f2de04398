// Token embedding, vocab-parallel (Megatron): this rank holds rows [vocab_start, vocab_start +
// table.size(0)) of the global [vocab, C] table. Tokens outside that range give zero rows; the
// caller all-reduces the output over the tensor-parallel group. With one shard vocab_start = 0.
// Also the positional encodings added to the embedding: learned (a [T, C] parameter) or
// sinusoidal (a fixed table, Vaswani et al. 2017).
#pragma once

#include "core/tensor.h"

namespace tessera::ops {

// out[B, T, C] = table[tokens[b, t] - vocab_start] or 0. tokens is I32 [B, T], on the table's
// device.
void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table, int64_t vocab_start);
// dtable[v - vocab_start] += dout[b, t] for every (b, t) with tokens[b, t] == v in range, added in
// token order (the same bits on every run, on either device).
void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& tokens,
                        int64_t vocab_start);

// x[B, T, C] += pos[0:T, C] (pos may have more rows than T).
void positional_forward(Tensor& x, const Tensor& pos);
// dpos[t, c] += sum_b dx[b, t, c].
void positional_backward(Tensor& dpos, const Tensor& dx);

// The fixed sinusoidal table [T, C]: pe[t, 2i] = sin(t / 10000^(2i/C)), pe[t, 2i+1] = cos(..).
// Built on the host (F32 or F64); move it to the GPU with Tensor::to (and ops::cast for bf16).
Tensor sinusoidal_table(int64_t T, int64_t C, DType dtype);

}  // namespace tessera::ops
