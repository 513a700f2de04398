// CUDA token and positional embedding launchers behind core/ops/embedding.h: raw device pointers,
// shapes already checked by the dispatcher, work queued on cuda::compute_stream() with no
// synchronisation. T is float or bf16; tokens are int32 on the device. Internal to core/ops.
#pragma once

#include <cstdint>

namespace tessera::ops::cuda {

// table holds vocabulary rows [vocab_start, vocab_start + rows), each C wide; other tokens give
// zero rows.
template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* table, int64_t n_tokens,
                       int64_t vocab_start, int64_t rows, int64_t C);
// dtable[row] += dout of every token of that row, added in token order (deterministic: the tokens
// are sorted by row with a stable radix sort, no atomics). Tokens of other shards are skipped.
template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* tokens, int64_t n_tokens,
                        int64_t vocab_start, int64_t rows, int64_t C);
// x[B, S, C] += pos[0:S, C];  dpos[0:S, C] += sum_b dx[b], summed in batch order.
template <typename T>
void positional_forward(T* x, const T* pos, int64_t B, int64_t S, int64_t C);
template <typename T>
void positional_backward(T* dpos, const T* dx, int64_t B, int64_t S, int64_t C);

}  // namespace tessera::ops::cuda
