// CUDA GELU (tanh form) and residual add: elementwise, memory-bound kernels. Each thread owns a
// pack of 4 neighbouring elements, moved as one 16-byte (float) or 8-byte (bf16) access when
// every pointer of the call is aligned for it, element by element otherwise and at the tail.
// Arithmetic is fp32 whatever the storage type, with the CPU twin's float formulas
// (gelu_cpu.cpp); expf is the accurate one, since the build has no fast math.
#include <cstdint>

#include "core/cuda_common.cuh"
#include "core/ops/gelu_cuda.h"

namespace tessera::ops::cuda {
namespace {

using tessera::cuda::dev;
using tessera::cuda::from_f32;
using tessera::cuda::to_f32;

constexpr int kPack = 4;
constexpr int kThreads = 256;

template <typename D>
struct alignas(kPack * sizeof(D)) Pack {
  D v[kPack];
};

// Whether every pointer allows whole-pack accesses.
template <typename... P>
bool packable(const P*... ps) {
  return ((reinterpret_cast<uintptr_t>(ps) % sizeof(Pack<P>) == 0) && ...);
}

unsigned blocks_for_packs(int64_t n) {
  return tessera::cuda::blocks_for(n, kThreads * kPack);
}

__device__ __forceinline__ int64_t pack_start() {
  return (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kPack;
}

// x = p[i, i + kPack) in fp32, zeros past n.
template <typename D>
__device__ __forceinline__ void load(float (&x)[kPack], const D* p, int64_t i, int64_t n,
                                     bool packed) {
  if (packed && i + kPack <= n) {
    const Pack<D> pk = *reinterpret_cast<const Pack<D>*>(p + i);
#pragma unroll
    for (int k = 0; k < kPack; ++k) x[k] = to_f32(pk.v[k]);
  } else {
#pragma unroll
    for (int k = 0; k < kPack; ++k) x[k] = i + k < n ? to_f32(p[i + k]) : 0.0f;
  }
}

// p[i, min(i + kPack, n)) = x, rounded to D.
template <typename D>
__device__ __forceinline__ void store(D* p, const float (&x)[kPack], int64_t i, int64_t n,
                                      bool packed) {
  if (packed && i + kPack <= n) {
    Pack<D> pk;
#pragma unroll
    for (int k = 0; k < kPack; ++k) pk.v[k] = from_f32<D>(x[k]);
    *reinterpret_cast<Pack<D>*>(p + i) = pk;
  } else {
#pragma unroll
    for (int k = 0; k < kPack; ++k)
      if (i + k < n) p[i + k] = from_f32<D>(x[k]);
  }
}

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
  float x[kPack], g[kPack], d[kPack];
  load(x, inp, i, n, packed);
  load(g, dout, i, n, packed);
  load(d, dinp, i, n, packed);
#pragma unroll
  for (int k = 0; k < kPack; ++k) d[k] += g[k] * gelu_grad(x[k]);
  store(dinp, d, i, n, packed);
}

template <typename D>
__global__ void residual_forward_kernel(D* out, const D* a, const D* b, int64_t n, bool packed) {
  const int64_t i = pack_start();
  if (i >= n) return;
  float x[kPack], y[kPack];
  load(x, a, i, n, packed);
  load(y, b, i, n, packed);
#pragma unroll
  for (int k = 0; k < kPack; ++k) x[k] += y[k];
  store(out, x, i, n, packed);
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
  gelu_forward_kernel<<<blocks_for_packs(n), kThreads, 0, tessera::cuda::compute_stream()>>>(
      dev(out), dev(inp), n, packable(dev(out), dev(inp)));
  CHECK_LAUNCH();
}

template <typename T>
void gelu_backward(T* dinp, const T* dout, const T* inp, int64_t n) {
  if (n == 0) return;
  gelu_backward_kernel<<<blocks_for_packs(n), kThreads, 0, tessera::cuda::compute_stream()>>>(
      dev(dinp), dev(dout), dev(inp), n, packable(dev(dinp), dev(dout), dev(inp)));
  CHECK_LAUNCH();
}

template <typename T>
void residual_forward(T* out, const T* a, const T* b, int64_t n) {
  if (n == 0) return;
  residual_forward_kernel<<<blocks_for_packs(n), kThreads, 0, tessera::cuda::compute_stream()>>>(
      dev(out), dev(a), dev(b), n, packable(dev(out), dev(a), dev(b)));
  CHECK_LAUNCH();
}

template <typename T>
void residual_backward(T* da, T* db, const T* dout, int64_t n) {
  if (n == 0) return;
  residual_backward_kernel<<<blocks_for_packs(n), kThreads, 0, tessera::cuda::compute_stream()>>>(
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
