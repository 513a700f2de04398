// CPU GELU (tanh form) and residual add: elementwise, memory-bound loops. In float, GELU uses the
// identity 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u)) with the vectorisable exp of cpu_math.h, since
// libm's tanhf is a scalar call; in double it keeps the textbook tanh form, which the tests then
// use as the reference for the float path.
#include <cmath>
#include <type_traits>

#include "core/ops/cpu_kernels.h"
#include "core/ops/cpu_math.h"

namespace tessera::ops::cpu {
namespace {

constexpr double kSqrt2OverPi = 0.7978845608028654;  // sqrt(2 / pi)
constexpr double kCubic = 0.044715;

}  // namespace

template <typename T>
void gelu_forward(T* out, const T* inp, int64_t n) {
  const T a = static_cast<T>(kSqrt2OverPi), c = static_cast<T>(kCubic);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T x = inp[i];
    const T u = a * (x + c * x * x * x);
    if constexpr (std::is_same_v<T, float>) {
      out[i] = x / (1.0f + exp_f32(-2.0f * u));
    } else {
      out[i] = T(0.5) * x * (T(1) + std::tanh(u));
    }
  }
}

// gelu'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) u'(x),  u'(x) = a (1 + 3 c x^2);
// with s = 0.5 (1 + tanh u) = sigmoid(2u):  gelu'(x) = s + 2 x s (1 - s) u'(x).
// Beyond |x| = 10, gelu' is 0 or 1 to within 1e-35, so x is clamped there: that keeps x^3 and
// u' finite (0 * inf would give NaN) for huge inputs.
template <typename T>
void gelu_backward(T* dinp, const T* dout, const T* inp, int64_t n) {
  const T a = static_cast<T>(kSqrt2OverPi), c = static_cast<T>(kCubic);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T x = clamp_real(inp[i], T(-10), T(10));
    const T u = a * (x + c * x * x * x);
    const T du = a * (T(1) + T(3) * c * x * x);
    T grad;
    if constexpr (std::is_same_v<T, float>) {
      const float s = 1.0f / (1.0f + exp_f32(-2.0f * u));
      grad = s + 2.0f * x * s * (1.0f - s) * du;
    } else {
      const T th = std::tanh(u);
      grad = T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * du;
    }
    dinp[i] = dout[i] * grad;
  }
}

template <typename T>
void residual_forward(T* out, const T* a, const T* b, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <typename T>
void residual_backward(T* da, T* db, const T* dout, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    da[i] += dout[i];
    db[i] += dout[i];
  }
}

#define TESSERA_GELU_INSTANTIATE(T)                                   \
  template void gelu_forward<T>(T*, const T*, int64_t);               \
  template void gelu_backward<T>(T*, const T*, const T*, int64_t);    \
  template void residual_forward<T>(T*, const T*, const T*, int64_t); \
  template void residual_backward<T>(T*, T*, const T*, int64_t);
TESSERA_GELU_INSTANTIATE(float)
TESSERA_GELU_INSTANTIATE(double)
#undef TESSERA_GELU_INSTANTIATE

}  // namespace tessera::ops::cpu
