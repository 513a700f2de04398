// The GELU and residual CUDA kernels, as device code without launchers: core/ops/gelu_cuda.cu
// launches them on the GPU, and tests/test_kernels_emulated.cpp runs the same source on the CPU
// (include tests/simt_emulation.h first for that).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/ops/cuda_elementwise.cuh"

namespace tessera::ops::cuda::gelu_kernels {
// Internal linkage, as the kernels had in their .cu files: each translation unit, a .cu file or
// the CPU emulation's test, has its own copy.
namespace {

using tessera::cuda::kPack;
using tessera::cuda::load;
using tessera::cuda::pack_start;
using tessera::cuda::store;

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

// gelu(x) = 0.5 x (1 + tanh u) = x / (1 + exp(-2u)),  u = sqrt(2/pi) (x + 0.044715 x^3).
// The exponent is capped at 88 as the CPU twin's exp_f32 caps it, so that both give the same
// tiny values for x below about -10, and -inf (not -inf / inf = NaN) for x = -inf.
__device__ __forceinline__ float gelu(float x) {
  const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
  return x / (1.0f + expf(fminf(-2.0f * u, 88.0f)));
}

// gelu'(x) = s + 2 x s (1 - s) u'(x),  s = sigmoid(2u),  u'(x) = sqrt(2/pi) (1 + 3 c x^2).
// x is clamped to [-10, 10] as on the CPU (gelu' is 0 or 1 there to within 1e-35; x^3 stays
// finite); NaN stays NaN.
__device__ __forceinline__ float gelu_grad(float x) {
  x = x < -10.0f ? -10.0f : (x > 10.0f ? 10.0f : x);
  const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
  const float du = kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
  const float s = 1.0f / (1.0f + expf(-2.0f * u));
  return s + 2.0f * x * s * (1.0f - s) * du;
}

template <typename D>
__global__ void gelu_forward_kernel(D* out, const D* inp, int64_t n, bool packed) {
  const int64_t i = pack_start();
  if (i >= n) return;
  float x[kPack];
  load(x, inp, i, n, packed);
#pragma unroll
  for (int k = 0; k < kPack; ++k) x[k] = gelu(x[k]);
  store(out, x, i, n, packed);
}

template <typename D>
__global__ void gelu_backward_kernel(D* dinp, const D* dout, const D* inp, int64_t n, bool packed) {
  const int64_t i = pack_start();
  if (i >= n) return;
  float x[kPack], g[kPack];
  load(x, inp, i, n, packed);
  load(g, dout, i, n, packed);
#pragma unroll
  for (int k = 0; k < kPack; ++k) g[k] *= gelu_grad(x[k]);
  store(dinp, g, i, n, packed);
}

// da is stored before db is loaded, so that da and db may be one tensor (+= 2 dout), as on the
// CPU.
template <typename D>
__global__ void residual_backward_kernel(D* da, D* db, const D* dout, int64_t n, bool packed) {
  const int64_t i = pack_start();
  if (i >= n) return;
  float g[kPack], x[kPack];
  load(g, dout, i, n, packed);
  load(x, da, i, n, packed);
#pragma unroll
  for (int k = 0; k < kPack; ++k) x[k] += g[k];
  store(da, x, i, n, packed);
  load(x, db, i, n, packed);
#pragma unroll
  for (int k = 0; k < kPack; ++k) x[k] += g[k];
  store(db, x, i, n, packed);
}

}  // namespace
}  // namespace tessera::ops::cuda::gelu_kernels
