// CPU AdamW update and the reductions the optimizer needs. The update is one fused pass over
// (param, grad, m, v), memory-bound, with the step's scalar factors computed once in double.
// sum_of_squares adds fixed 16k-element chunks in double and then the chunk sums in order, so its
// result is the same bits for every thread count; bf16 elements are widened exactly.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/ops/cpu_kernels.h"

namespace tessera::ops::cpu {
namespace {

constexpr int64_t kSumChunk = int64_t{1} << 14;

inline double widen(float x) {
  return x;
}
inline double widen(double x) {
  return x;
}
inline double widen(bf16 x) {
  return to_float(x);
}

// The squares of x[0..n) added in kLanes running sums, element i into sum i % kLanes, and then
// the sums in order: independent chains of additions, which the compiler keeps in vector
// registers, where one sum would wait for each addition's latency. The order is written out, so
// the bits do not depend on how the compiler vectorises.
template <typename T>
double chunk_sum_of_squares(const T* x, int64_t n) {
  constexpr int kLanes = 32;
  double lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lane[j] += widen(x[i + j]) * widen(x[i + j]);
  }
  for (int j = 0; i + j < n; ++j) lane[j] += widen(x[i + j]) * widen(x[i + j]);
  double sum = 0;
  for (double s : lane) sum += s;
  return sum;
}

}  // namespace

template <typename T>
void adamw_update(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, int64_t n,
                  const AdamWStep& s) {
  const double steps = static_cast<double>(s.t);
  const T b1 = static_cast<T>(s.beta1), one_minus_b1 = static_cast<T>(1.0 - s.beta1);
  const T b2 = static_cast<T>(s.beta2), one_minus_b2 = static_cast<T>(1.0 - s.beta2);
  // Bias corrections 1 / (1 - beta^t), as reciprocals.
  const T inv_bc1 = static_cast<T>(1.0 / (1.0 - std::pow(s.beta1, steps)));
  const T inv_bc2 = static_cast<T>(1.0 / (1.0 - std::pow(s.beta2, steps)));
  const T lr = static_cast<T>(s.lr), eps = static_cast<T>(s.eps);
  const T wd = static_cast<T>(s.weight_decay), grad_scale = static_cast<T>(s.grad_scale);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T g = grad[i] * grad_scale;
    const T m = b1 * exp_avg[i] + one_minus_b1 * g;
    const T v = b2 * exp_avg_sq[i] + one_minus_b2 * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param[i] -= lr * (m * inv_bc1 / (std::sqrt(v * inv_bc2) + eps) + wd * param[i]);
  }
}

template <typename T>
double sum_of_squares(const T* x, int64_t n) {
  const int64_t chunks = (n + kSumChunk - 1) / kSumChunk;
  std::vector<double> partial(static_cast<size_t>(chunks));
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kSumChunk, end = std::min(n, begin + kSumChunk);
    partial[static_cast<size_t>(c)] = chunk_sum_of_squares(x + begin, end - begin);
  }
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

template <typename T>
void scale(T* x, int64_t n, double alpha) {
  const T a = static_cast<T>(alpha);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] *= a;
}

#define TESSERA_ADAMW_INSTANTIATE(T)                                              \
  template void adamw_update<T>(T*, const T*, T*, T*, int64_t, const AdamWStep&); \
  template double sum_of_squares<T>(const T*, int64_t);                           \
  template void scale<T>(T*, int64_t, double);
TESSERA_ADAMW_INSTANTIATE(float)
TESSERA_ADAMW_INSTANTIATE(double)
#undef TESSERA_ADAMW_INSTANTIATE
template double sum_of_squares<bf16>(const bf16*, int64_t);

}  // namespace tessera::ops::cpu
