// The CPU kernels behind core/ops/*.h: loops over raw contiguous arrays, templates over the
// element type T (float or double) instantiated in the matching *_cpu.cpp. Their callers, the
// dispatchers, have checked shapes, dtypes and contiguity. Rows and elements are split over
// OpenMP threads with schedule(static) and no floating-point atomics, so a given thread count
// gives bitwise-identical results run to run. Internal to core/ops.
#pragma once

#include <algorithm>
#include <cstdint>

#include "core/dtype.h"
#include "core/ops/adamw.h"

namespace tessera::ops::cpu {

// Runs body(c0, c1) over column blocks [c0, c1) of a C-wide row, one block per OpenMP
// iteration. Column reductions over rows (bias, LayerNorm and embedding gradients) then sum each
// column in row order on one thread: bitwise identical for any thread count, with no atomics.
template <typename Body>
void parallel_column_blocks(int64_t C, Body&& body) {
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) body(b * kBlock, std::min(C, b * kBlock + kBlock));
}

// out[M, N] = inp[M, K] @ weight[N, K]^T (+ bias[N] when non-null).
template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int64_t M, int64_t K,
                    int64_t N);
// Writes dinp, accumulates into dweight and dbias (each when non-null).
template <typename T>
void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                     int64_t M, int64_t K, int64_t N);

// table holds vocabulary rows [vocab_start, vocab_start + rows), each C wide.
template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* table, int64_t n_tokens,
                       int64_t vocab_start, int64_t rows, int64_t C);
template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* tokens, int64_t n_tokens,
                        int64_t vocab_start, int64_t rows, int64_t C);
// x[B, S, C] += pos[0:S, C];  dpos[0:S, C] += sum_b dx[b].
template <typename T>
void positional_forward(T* x, const T* pos, int64_t B, int64_t S, int64_t C);
template <typename T>
void positional_backward(T* dpos, const T* dx, int64_t B, int64_t S, int64_t C);
template <typename T>
void sinusoidal_table(T* pe, int64_t S, int64_t C);

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias,
                       int64_t N, int64_t C);
template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const T* mean, const T* rstd, int64_t N, int64_t C);

// qkv[B, S, 3 H hd], out[B, S, H hd], att[B, H, S, S].
template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int64_t B, int64_t S, int64_t H, int64_t hd);
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* att, int64_t B, int64_t S,
                        int64_t H, int64_t hd);

template <typename T>
void gelu_forward(T* out, const T* inp, int64_t n);
// dinp = dout * gelu'(inp); dinp may be dout.
template <typename T>
void gelu_backward(T* dinp, const T* dout, const T* inp, int64_t n);
template <typename T>
void residual_forward(T* out, const T* a, const T* b, int64_t n);
template <typename T>
void residual_backward(T* da, T* db, const T* dout, int64_t n);

// Vocab-parallel cross-entropy in three local phases around the all-reduces (cross_entropy.cpp):
// the row max of this shard; this shard's sum of exp(x - gmax) and the target logit (0 when the
// target is on another shard); then lse = gmax + log(sumexp) and loss = lse - target logit.
template <typename T>
void cross_entropy_row_max(T* row_max, const T* logits, int64_t M, int64_t V);
template <typename T>
void cross_entropy_partials(double* sumexp, double* target_logit, const T* logits, const T* gmax,
                            const int32_t* targets, int64_t M, int64_t V, int64_t vocab_start);
template <typename T>
void cross_entropy_finish(T* losses, T* lse, const T* gmax, const double* sumexp,
                          const double* target_logit, int64_t M);
// dlogits may alias logits.
template <typename T>
void cross_entropy_backward(T* dlogits, const T* dlosses, const T* logits, const T* lse,
                            const int32_t* targets, int64_t M, int64_t V, int64_t vocab_start);

template <typename T>
void adamw_update(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, int64_t n,
                  const AdamWStep& s);
// T is float, double or bf16.
template <typename T>
double sum_of_squares(const T* x, int64_t n);
template <typename T>
void scale(T* x, int64_t n, double alpha);

// dst = src converted (float <-> bf16, round to nearest even); dst += src in fp32.
template <typename Dst, typename Src>
void cast(Dst* dst, const Src* src, int64_t n);
template <typename Src>
void accumulate(float* dst, const Src* src, int64_t n);

}  // namespace tessera::ops::cpu
