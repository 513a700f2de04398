// CPU causal self-attention, one (batch, head) pair per loop iteration as in llm.c: pairs are
// independent in the forward and write disjoint slices of dqkv in the backward, so they run in
// parallel without reductions across threads. The T x T probabilities are materialised and
// saved for the backward. Each pair's products are GEMMs on the q, k and v columns as they lie in
// qkv (rows 3C apart), on the pair's thread alone (cpu_gemm.h), over blocks of kRows query rows:
// rows [t0, t1) attend to keys [0, t1), so the blocks skip most of the causal zeros, and the
// backward's scratch for dP is kRows x T per thread, not T x T. (Within a block the zeros
// above the diagonal are still multiplied: a non-finite value of a later position's v there
// reaches an earlier output as 0 x inf, when the loss is non-finite either way.)
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/ops/cpu_gemm.h"
#include "core/ops/cpu_kernels.h"
#include "core/ops/cpu_math.h"

namespace tessera::ops::cpu {
namespace {

constexpr int64_t kRows = 64;

}  // namespace

template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int64_t B, int64_t S, int64_t H, int64_t hd) {
  const int64_t C = H * hd, row = 3 * C;
  const T scale = T(1) / std::sqrt(static_cast<T>(hd));
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const T* q = qkv + b * S * row + h * hd;  // q of (b, 0, h); k at +C, v at +2C
      T* a = att + (b * H + h) * S * S;
      for (int64_t t0 = 0; t0 < S; t0 += kRows) {
        const int64_t t1 = std::min(S, t0 + kRows), rows = t1 - t0;
        // Scores of rows [t0, t1) against keys [0, t1): q k^T.
        gemm(CblasNoTrans, CblasTrans, rows, t1, hd, q + t0 * row, row, q + C, row, T(0),
             a + t0 * S, S);
        for (int64_t t = t0; t < t1; ++t) {
          T* r = a + t * S;
          T mx = -std::numeric_limits<T>::infinity();
          for (int64_t u = 0; u <= t; ++u) {
            r[u] *= scale;
            mx = r[u] > mx ? r[u] : mx;
          }
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t u = 0; u <= t; ++u) {
            r[u] = exp_real(r[u] - mx);
            sum += r[u];
          }
          const T inv = T(1) / sum;
#pragma omp simd
          for (int64_t u = 0; u <= t; ++u) r[u] *= inv;
          std::fill(r + t + 1, r + S, T(0));
        }
        gemm(CblasNoTrans, CblasNoTrans, rows, hd, t1, a + t0 * S, S, q + 2 * C, row, T(0),
             out + (b * S + t0) * C + h * hd, C);  // p v
      }
    }
  }
}

// With P = att (rows t, columns u), Y = dout and the pair's q, k, v (llm.c, attention_backward):
//   dV = P^T Y;  dP = Y V^T;  dS[t, u] = P[t, u] (dP[t, u] - sum_j P[t, j] dP[t, j]) scale;
//   dQ = dS K;  dK = dS^T Q.  (dS is 0 where P is: above the diagonal.)
// By blocks of rows [t0, t1), whose columns end at t1: dV and dK gather over the blocks.
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* att, int64_t B, int64_t S,
                        int64_t H, int64_t hd) {
  const int64_t C = H * hd, row = 3 * C;
  const T scale = T(1) / std::sqrt(static_cast<T>(hd));
#pragma omp parallel
  {
    std::vector<T> ds(static_cast<size_t>(std::min(S, kRows) * S));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        const T* q = qkv + b * S * row + h * hd;  // k at +C, v at +2C; likewise in dqkv
        T* dq = dqkv + b * S * row + h * hd;
        const T* p = att + (b * H + h) * S * S;
        const T* y = dout + b * S * C + h * hd;
        for (int64_t t = 0; t < S; ++t) {  // this pair's columns of dk and dv: gathered below
          std::fill_n(dq + t * row + C, hd, T(0));
          std::fill_n(dq + t * row + 2 * C, hd, T(0));
        }
        for (int64_t t0 = 0; t0 < S; t0 += kRows) {
          const int64_t t1 = std::min(S, t0 + kRows), rows = t1 - t0;
          const T* pb = p + t0 * S;
          const T* yb = y + t0 * C;
          // dV[0:t1] += P[t0:t1, 0:t1]^T Y[t0:t1];  dP = Y[t0:t1] V[0:t1]^T.
          gemm(CblasTrans, CblasNoTrans, t1, hd, rows, pb, S, yb, C, T(1), dq + 2 * C, row);
          gemm(CblasNoTrans, CblasTrans, rows, t1, hd, yb, C, q + 2 * C, row, T(0), ds.data(), S);
          for (int64_t t = t0; t < t1; ++t) {
            const T* pt = p + t * S;
            T* dt = ds.data() + (t - t0) * S;
            T pdp = 0;
#pragma omp simd reduction(+ : pdp)
            for (int64_t u = 0; u <= t; ++u) pdp += pt[u] * dt[u];
#pragma omp simd
            for (int64_t u = 0; u <= t; ++u) dt[u] = pt[u] * (dt[u] - pdp) * scale;
            std::fill(dt + t + 1, dt + t1, T(0));
          }
          // dQ[t0:t1] = dS K[0:t1];  dK[0:t1] += dS^T Q[t0:t1].
          gemm(CblasNoTrans, CblasNoTrans, rows, hd, t1, ds.data(), S, q + C, row, T(0),
               dq + t0 * row, row);
          gemm(CblasTrans, CblasNoTrans, t1, hd, rows, ds.data(), S, q + t0 * row, row, T(1),
               dq + C, row);
        }
      }
    }
  }
}

template void attention_forward<float>(float*, float*, const float*, int64_t, int64_t, int64_t,
                                       int64_t);
template void attention_forward<double>(double*, double*, const double*, int64_t, int64_t, int64_t,
                                        int64_t);
template void attention_backward<float>(float*, const float*, const float*, const float*, int64_t,
                                        int64_t, int64_t, int64_t);
template void attention_backward<double>(double*, const double*, const double*, const double*,
                                         int64_t, int64_t, int64_t, int64_t);

}  // namespace tessera::ops::cpu
