// Elementwise math for the CPU kernels that GCC vectorises inside `#pragma omp simd` loops
// without -ffast-math: libm's expf is a scalar call, and branches on float compares block
// if-conversion under the default -ftrapping-math, so the selects here are done on bits.
// Internal to core/ops.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace tessera::ops::cpu {

// c ? a : b without a branch.
inline float select_bits(bool c, float a, float b) {
  const uint32_t m = 0u - static_cast<uint32_t>(c);
  return std::bit_cast<float>((std::bit_cast<uint32_t>(a) & m) | (std::bit_cast<uint32_t>(b) & ~m));
}

// x limited to [lo, hi] (NaN stays NaN), without a branch.
inline float clamp_bits(float x, float lo, float hi) {
  return select_bits(x > hi, hi, select_bits(x < lo, lo, x));
}

// exp(x) in float, relative error below 1.5 ulp for x in [-87.3, 88]; 0 below that range,
// exp(88) above it, NaN for NaN. Cephes expf: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two
// for an exact n ln2), a degree-7 polynomial for e^r, and 2^n built in the exponent bits.
inline float exp_f32(float x) {
  constexpr float kLo = -87.3f, kHi = 88.0f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float xc = clamp_bits(x, kLo, kHi);
  const float t = xc * 1.44269504088896341f + kRound;
  const float n = t - kRound;
  const int32_t ni = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kRound);
  const float r = xc - n * 0.693359375f - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * r * r + r + 1.0f;
  const uint32_t keep = 0u - static_cast<uint32_t>(x >= kLo);
  const float pow2n = std::bit_cast<float>((static_cast<uint32_t>(ni + 127) << 23) & keep);
  return er * pow2n;
}

// float: the vectorisable forms above; double (the reference path of the tests): plain ones.
inline float exp_real(float x) {
  return exp_f32(x);
}
inline double exp_real(double x) {
  return std::exp(x);
}
inline float clamp_real(float x, float lo, float hi) {
  return clamp_bits(x, lo, hi);
}
inline double clamp_real(double x, double lo, double hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}

}  // namespace tessera::ops::cpu
