// CPU causal self-attention, one (batch, head) pair per loop iteration as in llm.c: pairs are
// independent in the forward and write disjoint slices of dqkv in the backward, so they run in
// parallel without reductions across threads. T is small (<= a few hundred), so the T x T
// probabilities are materialised and saved for the backward.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/ops/cpu_kernels.h"
#include "core/ops/cpu_math.h"

namespace tessera::ops::cpu {
namespace {

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y[0:n] += alpha * x[0:n]
template <typename T>
void axpy(T* y, T alpha, const T* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace

template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int64_t B, int64_t S, int64_t H, int64_t hd) {
  const int64_t C = H * hd, row = 3 * C;
  const T scale = T(1) / std::sqrt(static_cast<T>(hd));
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const T* base = qkv + b * S * row + h * hd;  // q of (b, 0, h); k at +C, v at +2C
      for (int64_t t = 0; t < S; ++t) {
        const T* q = base + t * row;
        T* a = att + ((b * H + h) * S + t) * S;
        T mx = -std::numeric_limits<T>::infinity();
        for (int64_t u = 0; u <= t; ++u) {
          a[u] = dot(q, base + u * row + C, hd) * scale;
          mx = a[u] > mx ? a[u] : mx;
        }
        T sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t u = 0; u <= t; ++u) {
          a[u] = exp_real(a[u] - mx);
          sum += a[u];
        }
        const T inv = T(1) / sum;
#pragma omp simd
        for (int64_t u = 0; u <= t; ++u) a[u] *= inv;
        for (int64_t u = t + 1; u < S; ++u) a[u] = 0;
        T* o = out + (b * S + t) * C + h * hd;
        for (int64_t i = 0; i < hd; ++i) o[i] = 0;
        for (int64_t u = 0; u <= t; ++u) axpy(o, a[u], base + u * row + 2 * C, hd);
      }
    }
  }
}

// With p = att[t, :] and y = dout[t] (llm.c, attention_backward):
//   dv[u] += p[u] y;  dp[u] = y . v[u];  ds[u] = p[u] (dp[u] - sum_j p[j] dp[j]);
//   dq[t] += scale sum_u ds[u] k[u];  dk[u] += scale ds[u] q[t].
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* att, int64_t B, int64_t S,
                        int64_t H, int64_t hd) {
  const int64_t C = H * hd, row = 3 * C;
  const T scale = T(1) / std::sqrt(static_cast<T>(hd));
#pragma omp parallel
  {
    std::vector<T> dp(static_cast<size_t>(S));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        const T* base = qkv + b * S * row + h * hd;
        T* dbase = dqkv + b * S * row + h * hd;
        for (int64_t t = 0; t < S; ++t)  // this (b, h)'s columns of dq, dk, dv: written
          for (int64_t part = 0; part < 3; ++part)
            std::fill_n(dbase + t * row + part * C, hd, T(0));
        for (int64_t t = 0; t < S; ++t) {
          const T* p = att + ((b * H + h) * S + t) * S;
          const T* y = dout + (b * S + t) * C + h * hd;
          T pdp = 0;
          for (int64_t u = 0; u <= t; ++u) {
            dp[u] = dot(y, base + u * row + 2 * C, hd);
            pdp += p[u] * dp[u];
            axpy(dbase + u * row + 2 * C, p[u], y, hd);
          }
          const T* q = base + t * row;
          T* dq = dbase + t * row;
          for (int64_t u = 0; u <= t; ++u) {
            const T ds = p[u] * (dp[u] - pdp) * scale;
            axpy(dq, ds, base + u * row + C, hd);
            axpy(dbase + u * row + C, ds, q, hd);
          }
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
