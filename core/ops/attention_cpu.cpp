// CPU causal self-attention, one (batch, head) pair per loop iteration as in llm.c: pairs are
// independent in the forward and write disjoint slices of dqkv in the backward, so they run in
// parallel without reductions across threads. T is small (<= a few thousand), so the T x T
// probabilities are materialised and saved for the backward. Each pair's products are GEMMs
// on the q, k and v columns as they lie in qkv (rows 3C apart), on the pair's thread alone
// (cpu_gemm.h): over the whole T x T square, the causal half's zeros included, which BLAS
// still does several times faster than one dot product per (t, u). (So a non-finite value of a
// later position's v reaches an earlier output, as 0 x inf: the loss is non-finite either way.)
#include <cmath>
#include <limits>
#include <vector>

#include "core/ops/cpu_gemm.h"
#include "core/ops/cpu_kernels.h"
#include "core/ops/cpu_math.h"

namespace tessera::ops::cpu {

template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int64_t B, int64_t S, int64_t H, int64_t hd) {
  const int64_t C = H * hd, row = 3 * C;
  const T scale = T(1) / std::sqrt(static_cast<T>(hd));
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const T* q = qkv + b * S * row + h * hd;  // q of (b, 0, h); k at +C, v at +2C
      T* a = att + (b * H + h) * S * S;
      gemm(CblasNoTrans, CblasTrans, S, S, hd, q, row, q + C, row, T(0), a, S);  // q k^T
      for (int64_t t = 0; t < S; ++t) {
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
        for (int64_t u = t + 1; u < S; ++u) r[u] = 0;
      }
      gemm(CblasNoTrans, CblasNoTrans, S, hd, S, a, S, q + 2 * C, row, T(0),
           out + b * S * C + h * hd, C);  // p v
    }
  }
}

// With P = att (rows t, columns u), Y = dout and the pair's q, k, v (llm.c, attention_backward):
//   dV = P^T Y;  dP = Y V^T;  dS[t, u] = P[t, u] (dP[t, u] - sum_j P[t, j] dP[t, j]) scale;
//   dQ = dS K;  dK = dS^T Q.  (dS is 0 where P is: above the diagonal.)
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* att, int64_t B, int64_t S,
                        int64_t H, int64_t hd) {
  const int64_t C = H * hd, row = 3 * C;
  const T scale = T(1) / std::sqrt(static_cast<T>(hd));
#pragma omp parallel
  {
    std::vector<T> ds(static_cast<size_t>(S * S));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        const T* q = qkv + b * S * row + h * hd;  // k at +C, v at +2C; likewise in dqkv
        T* dq = dqkv + b * S * row + h * hd;
        const T* p = att + (b * H + h) * S * S;
        const T* y = dout + b * S * C + h * hd;
        gemm(CblasTrans, CblasNoTrans, S, hd, S, p, S, y, C, T(0), dq + 2 * C, row);  // dV
        gemm(CblasNoTrans, CblasTrans, S, S, hd, y, C, q + 2 * C, row, T(0), ds.data(), S);
        for (int64_t t = 0; t < S; ++t) {
          const T* pt = p + t * S;
          T* dt = ds.data() + t * S;
          T pdp = 0;
#pragma omp simd reduction(+ : pdp)
          for (int64_t u = 0; u <= t; ++u) pdp += pt[u] * dt[u];
#pragma omp simd
          for (int64_t u = 0; u <= t; ++u) dt[u] = pt[u] * (dt[u] - pdp) * scale;
          for (int64_t u = t + 1; u < S; ++u) dt[u] = 0;
        }
        gemm(CblasNoTrans, CblasNoTrans, S, hd, S, ds.data(), S, q + C, row, T(0), dq, row);
        gemm(CblasTrans, CblasNoTrans, S, hd, S, ds.data(), S, q, row, T(0), dq + C, row);
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
