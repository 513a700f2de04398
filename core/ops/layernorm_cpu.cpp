// CPU LayerNorm, following llm.c: the forward takes the mean and then the biased variance in two
// passes over the row (no E[x^2] - E[x]^2 cancellation); the backward recomputes the normalised
// input from the saved mean and rstd. dweight and dbias sum over rows, so they are split over
// column blocks (each column summed in row order by one thread) rather than reduced per thread.
#include <algorithm>
#include <cmath>

#include "core/ops/cpu_kernels.h"
#include "core/ops/layernorm.h"

namespace tessera::ops::cpu {

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias,
                       int64_t N, int64_t C) {
  const T inv_c = T(1) / static_cast<T>(C);
  const T eps = static_cast<T>(kLayerNormEps);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T* x = inp + n * C;
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < C; ++c) sum += x[c];
    const T m = sum * inv_c;
    T sq = 0;
#pragma omp simd reduction(+ : sq)
    for (int64_t c = 0; c < C; ++c) sq += (x[c] - m) * (x[c] - m);
    const T r = T(1) / std::sqrt(sq * inv_c + eps);
    T* o = out + n * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) o[c] = (x[c] - m) * r * weight[c] + bias[c];
    mean[n] = m;
    rstd[n] = r;
  }
}

// With xhat = (x - mean) rstd and g = dout * weight (llm.c, layernorm_backward):
//   dinp = rstd (g - mean_c(g) - xhat mean_c(g xhat));  dweight = sum_n dout xhat;  dbias = sum_n
//   dout.
template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const T* mean, const T* rstd, int64_t N, int64_t C) {
  const T inv_c = T(1) / static_cast<T>(C);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T* x = inp + n * C;
    const T* dy = dout + n * C;
    const T m = mean[n], r = rstd[n];
    T g_mean = 0, gx_mean = 0;
#pragma omp simd reduction(+ : g_mean, gx_mean)
    for (int64_t c = 0; c < C; ++c) {
      const T g = dy[c] * weight[c];
      g_mean += g;
      gx_mean += g * (x[c] - m) * r;
    }
    g_mean *= inv_c;
    gx_mean *= inv_c;
    T* dx = dinp + n * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const T xhat = (x[c] - m) * r;
      dx[c] += (dy[c] * weight[c] - g_mean - xhat * gx_mean) * r;
    }
  }
  parallel_column_blocks(C, [&](int64_t c0, int64_t c1) {
    for (int64_t n = 0; n < N; ++n) {
      const T* x = inp + n * C;
      const T* dy = dout + n * C;
      const T m = mean[n], r = rstd[n];
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) {
        dweight[c] += dy[c] * (x[c] - m) * r;
        dbias[c] += dy[c];
      }
    }
  });
}

template void layernorm_forward<float>(float*, float*, float*, const float*, const float*,
                                       const float*, int64_t, int64_t);
template void layernorm_forward<double>(double*, double*, double*, const double*, const double*,
                                        const double*, int64_t, int64_t);
template void layernorm_backward<float>(float*, float*, float*, const float*, const float*,
                                        const float*, const float*, const float*, int64_t, int64_t);
template void layernorm_backward<double>(double*, double*, double*, const double*, const double*,
                                         const double*, const double*, const double*, int64_t,
                                         int64_t);

}  // namespace tessera::ops::cpu
