// CPU phases of vocab-parallel softmax cross-entropy (Megatron-LM's vocab_parallel_cross_entropy):
// rows of up to ~50k logits, so each phase is one streaming pass per row, rows split over
// threads. In float the exponentials use the vectorisable exp of cpu_math.h and the row sum of
// exp is kept in double (50k terms); the backward writes one pass and may run in place.
#include <cmath>
#include <limits>

#include "core/ops/cpu_kernels.h"
#include "core/ops/cpu_math.h"

namespace tessera::ops::cpu {

template <typename T>
void cross_entropy_row_max(T* row_max, const T* logits, int64_t M, int64_t V) {
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    const T* x = logits + m * V;
    T mx = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : mx)
    for (int64_t v = 0; v < V; ++v) mx = x[v] > mx ? x[v] : mx;
    row_max[m] = mx;
  }
}

template <typename T>
void cross_entropy_partials(double* sumexp, double* target_logit, const T* logits, const T* gmax,
                            const int32_t* targets, int64_t M, int64_t V, int64_t vocab_start) {
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    const T* x = logits + m * V;
    const T mx = gmax[m];
    double sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t v = 0; v < V; ++v) sum += static_cast<double>(exp_real(x[v] - mx));
    sumexp[m] = sum;
    const int64_t local = static_cast<int64_t>(targets[m]) - vocab_start;
    target_logit[m] = (local >= 0 && local < V) ? static_cast<double>(x[local]) : 0.0;
  }
}

template <typename T>
void cross_entropy_finish(T* losses, T* lse, const T* gmax, const double* sumexp,
                          const double* target_logit, int64_t M) {
  for (int64_t m = 0; m < M; ++m) {
    const double l = static_cast<double>(gmax[m]) + std::log(sumexp[m]);
    lse[m] = static_cast<T>(l);
    losses[m] = static_cast<T>(l - target_logit[m]);
  }
}

template <typename T>
void cross_entropy_backward(T* dlogits, const T* dlosses, const T* logits, const T* lse,
                            const int32_t* targets, int64_t M, int64_t V, int64_t vocab_start) {
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    const T* x = logits + m * V;
    T* dx = dlogits + m * V;  // may be x itself: each element is read before it is written
    const T d = dlosses[m], l = lse[m];
#pragma omp simd
    for (int64_t v = 0; v < V; ++v) dx[v] = d * exp_real(x[v] - l);
    const int64_t local = static_cast<int64_t>(targets[m]) - vocab_start;
    if (local >= 0 && local < V) dx[local] -= d;
  }
}

#define TESSERA_CROSS_ENTROPY_INSTANTIATE(T)                                                      \
  template void cross_entropy_row_max<T>(T*, const T*, int64_t, int64_t);                         \
  template void cross_entropy_partials<T>(double*, double*, const T*, const T*, const int32_t*,   \
                                          int64_t, int64_t, int64_t);                             \
  template void cross_entropy_finish<T>(T*, T*, const T*, const double*, const double*, int64_t); \
  template void cross_entropy_backward<T>(T*, const T*, const T*, const T*, const int32_t*,       \
                                          int64_t, int64_t, int64_t);
TESSERA_CROSS_ENTROPY_INSTANTIATE(float)
TESSERA_CROSS_ENTROPY_INSTANTIATE(double)
#undef TESSERA_CROSS_ENTROPY_INSTANTIATE

}  // namespace tessera::ops::cpu
