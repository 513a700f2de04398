// Helpers for the op tests: random tensors from a seeded std::mt19937_64, dtype conversion,
// central finite differences in double precision, and the norm-wise relative error
// |actual - expected|_2 / max(|expected|_2, tiny) that every tolerance in test_ops refers to.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>

#include "core/tensor.h"

namespace tessera::testing {

// Uniform in [lo, hi), F64 unless told otherwise (converted after drawing, so an F32 tensor
// holds the rounded values of the F64 one drawn with the same seed).
inline Tensor random_tensor(const Shape& shape, std::mt19937_64& rng, DType dtype = DType::F64,
                            double lo = -1.0, double hi = 1.0) {
  Tensor t(shape, DType::F64);
  std::uniform_real_distribution<double> dist(lo, hi);
  double* p = t.data<double>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  if (dtype == DType::F64) return t;
  Tensor out(shape, dtype);
  copy_into(out, t);
  return out;
}

// I32 token ids uniform in [lo, hi).
inline Tensor random_tokens(const Shape& shape, std::mt19937_64& rng, int32_t lo, int32_t hi) {
  Tensor t(shape, DType::I32);
  std::uniform_int_distribution<int32_t> dist(lo, hi - 1);
  int32_t* p = t.data<int32_t>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

inline Tensor to_dtype(const Tensor& t, DType dtype) {
  Tensor out(t.shape(), dtype);
  copy_into(out, t);
  return out;
}

// Element i as a double, whatever the floating-point dtype.
inline double at(const Tensor& t, int64_t i) {
  return t.dtype() == DType::F32 ? static_cast<double>(t.data<float>()[i]) : t.data<double>()[i];
}

// sum_i a[i] * b[i] in double: the scalar loss L = sum(out * upstream) of the gradient checks.
inline double dot_sum(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += at(a, i) * at(b, i);
  return s;
}

// |actual - expected|_2 / max(|expected|_2, 1e-300), in double whatever the dtypes.
inline double relative_error(const Tensor& actual, const Tensor& expected) {
  double diff = 0, ref = 0;
  for (int64_t i = 0; i < expected.numel(); ++i) {
    const double d = at(actual, i) - at(expected, i);
    diff += d * d;
    ref += at(expected, i) * at(expected, i);
  }
  return std::sqrt(diff) / std::max(std::sqrt(ref), 1e-300);
}

// dL/dx by central differences (L(x + h e_i) - L(x - h e_i)) / 2h for every element of the F64
// tensor x, which is perturbed in place and restored.
inline Tensor finite_difference_grad(Tensor& x, const std::function<double()>& loss,
                                     double h = 1e-6) {
  Tensor grad(x.shape(), DType::F64);
  double* p = x.data<double>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double saved = p[i];
    p[i] = saved + h;
    const double plus = loss();
    p[i] = saved - h;
    const double minus = loss();
    p[i] = saved;
    grad.data<double>()[i] = (plus - minus) / (2 * h);
  }
  return grad;
}

}  // namespace tessera::testing
