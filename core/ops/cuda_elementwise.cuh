// What the elementwise CUDA kernels share (gelu_cuda.cu, cast_cuda.cu): each thread owns a pack
// of kPack neighbouring elements, moved as one 16-byte (float) or 8-byte (bf16) access when
// every pointer of the call is aligned for it, element by element otherwise and at the tail.
// Values are handled in fp32 whatever the storage type. Included by *.cu files and kernel
// headers; under tests/simt_emulation.h without the add() launcher.
#pragma once

#include <cstdint>

#include "core/cuda_device.cuh"
#ifndef TESSERA_SIMT_EMULATION
#include "core/cuda_common.cuh"
#endif

namespace tessera::cuda {
// Internal linkage: each translation unit, a .cu file or the CPU emulation's test, has its own
// copy.
namespace {

constexpr int kPack = 4;
constexpr int kElementwiseThreads = 256;

template <typename D>
struct alignas(kPack * sizeof(D)) Pack {
  D v[kPack];
};

// Whether every pointer allows whole-pack accesses.
template <typename... P>
bool packable(const P*... ps) {
  return ((alignment_of(ps) >= sizeof(Pack<P>)) && ...);
}

// Blocks of kElementwiseThreads threads for n elements, kPack per thread.
inline unsigned blocks_for_packs(int64_t n) {
  return blocks_for(n, kElementwiseThreads * kPack);
}

__device__ __forceinline__ int64_t pack_start() {
  return global_index() * kPack;
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

// out = a + b, added in fp32 and rounded to DOut. out may be a or b: each thread loads its pack
// of both before it stores.
template <typename DOut, typename DA, typename DB>
__global__ void add_kernel(DOut* out, const DA* a, const DB* b, int64_t n, bool packed) {
  const int64_t i = pack_start();
  if (i >= n) return;
  float x[kPack], y[kPack];
  load(x, a, i, n, packed);
  load(y, b, i, n, packed);
#pragma unroll
  for (int k = 0; k < kPack; ++k) x[k] += y[k];
  store(out, x, i, n, packed);
}

// dst = src converted: float <-> bf16 (to bf16 by from_f32, round to nearest even).
template <typename DDst, typename DSrc>
__global__ void cast_kernel(DDst* dst, const DSrc* src, int64_t n, bool packed) {
  const int64_t i = pack_start();
  if (i >= n) return;
  float x[kPack];
  load(x, src, i, n, packed);
  store(dst, x, i, n, packed);
}

#ifndef TESSERA_SIMT_EMULATION
// add_kernel over n elements on the compute stream (device pointer types: see dev()).
template <typename DOut, typename DA, typename DB>
void add(DOut* out, const DA* a, const DB* b, int64_t n) {
  if (n == 0) return;
  add_kernel<<<blocks_for_packs(n), kElementwiseThreads, 0, compute_stream()>>>(
      out, a, b, n, packable(out, a, b));
  CHECK_LAUNCH();
}
#endif

}  // namespace
}  // namespace tessera::cuda
