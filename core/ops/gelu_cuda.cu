// CUDA GELU (tanh form) and residual add: elementwise, memory-bound kernels over packs of 4
// elements (core/ops/cuda_elementwise.cuh). Arithmetic is fp32 whatever the storage type, with the
// CPU twin's float formulas (gelu_cpu.cpp); expf is the accurate one, since the build has no fast
// math.
#include <cstdint>

#include "core/ops/cuda_elementwise.cuh"
#include "core/ops/gelu_cuda.h"

namespace tessera::ops::cuda {
namespace {

using tessera::cuda::blocks_for_packs;
using tessera::cuda::dev;
using tessera::cuda::kElementwiseThreads;
using tessera::cuda::kPack;
using tessera::cuda::load;
using tessera::cuda::pack_start;
using tessera::cuda::packable;
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

template <typename T>
void gelu_forward(T* out, const T* inp, int64_t n) {
  if (n == 0) return;
  gelu_forward_kernel<<<blocks_for_packs(n), kElementwiseThreads, 0,
                        tessera::cuda::compute_stream()>>>(dev(out), dev(inp), n,
                                                           packable(dev(out), dev(inp)));
  CHECK_LAUNCH();
}

template <typename T>
void gelu_backward(T* dinp, const T* dout, const T* inp, int64_t n) {
  if (n == 0) return;
  gelu_backward_kernel<<<blocks_for_packs(n), kElementwiseThreads, 0,
                         tessera::cuda::compute_stream()>>>(
      dev(dinp), dev(dout), dev(inp), n, packable(dev(dinp), dev(dout), dev(inp)));
  CHECK_LAUNCH();
}

template <typename T>
void residual_forward(T* out, const T* a, const T* b, int64_t n) {
  tessera::cuda::add(dev(out), dev(a), dev(b), n);
}

template <typename T>
void residual_backward(T* da, T* db, const T* dout, int64_t n) {
  if (n == 0) return;
  residual_backward_kernel<<<blocks_for_packs(n), kElementwiseThreads, 0,
                             tessera::cuda::compute_stream()>>>(
      dev(da), dev(db), dev(dout), n, packable(dev(da), dev(db), dev(dout)));
  CHECK_LAUNCH();
}

#define TESSERA_GELU_INSTANTIATE(T)                                   \
  template void gelu_forward<T>(T*, const T*, int64_t);               \
  template void gelu_backward<T>(T*, const T*, const T*, int64_t);    \
  template void residual_forward<T>(T*, const T*, const T*, int64_t); \
  template void residual_backward<T>(T*, T*, const T*, int64_t);
TESSERA_GELU_INSTANTIATE(float)
TESSERA_GELU_INSTANTIATE(bf16)
#undef TESSERA_GELU_INSTANTIATE

}  // namespace tessera::ops::cuda
