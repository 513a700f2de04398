// CUDA casts between float32 and bfloat16, and fp32 accumulation of either into float32:
// elementwise, memory-bound kernels. Each thread owns a pack of 4 neighbouring elements, moved as
// one 16-byte (float) or 8-byte (bf16) access when both pointers are aligned for it, element by
// element otherwise and at the tail. float -> bf16 is __float2bfloat16: round to nearest even,
// the rule tessera::to_bf16 follows on the host.
#include <cstdint>

#include "core/cuda_common.cuh"
#include "core/ops/cast_cuda.h"

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

template <typename A, typename B>
bool packable(const A* a, const B* b) {
  return reinterpret_cast<uintptr_t>(a) % sizeof(Pack<A>) == 0 &&
         reinterpret_cast<uintptr_t>(b) % sizeof(Pack<B>) == 0;
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

template <typename DDst, typename DSrc>
__global__ void cast_kernel(DDst* dst, const DSrc* src, int64_t n, bool packed) {
  const int64_t i = pack_start();
  if (i >= n) return;
  float x[kPack];
  load(x, src, i, n, packed);
  store(dst, x, i, n, packed);
}

template <typename DSrc>
__global__ void accumulate_kernel(float* dst, const DSrc* src, int64_t n, bool packed) {
  const int64_t i = pack_start();
  if (i >= n) return;
  float x[kPack], y[kPack];
  load(x, dst, i, n, packed);
  load(y, src, i, n, packed);
#pragma unroll
  for (int k = 0; k < kPack; ++k) x[k] += y[k];
  store(dst, x, i, n, packed);
}

}  // namespace

template <typename Dst, typename Src>
void cast(Dst* dst, const Src* src, int64_t n) {
  if (n == 0) return;
  cast_kernel<<<tessera::cuda::blocks_for(n, kThreads * kPack), kThreads, 0,
                tessera::cuda::compute_stream()>>>(dev(dst), dev(src), n,
                                                   packable(dev(dst), dev(src)));
  CHECK_LAUNCH();
}

template <typename Src>
void accumulate(float* dst, const Src* src, int64_t n) {
  if (n == 0) return;
  accumulate_kernel<<<tessera::cuda::blocks_for(n, kThreads * kPack), kThreads, 0,
                      tessera::cuda::compute_stream()>>>(dst, dev(src), n, packable(dst, dev(src)));
  CHECK_LAUNCH();
}

template void cast<bf16, float>(bf16*, const float*, int64_t);
template void cast<float, bf16>(float*, const bf16*, int64_t);
template void accumulate<float>(float*, const float*, int64_t);
template void accumulate<bf16>(float*, const bf16*, int64_t);

}  // namespace tessera::ops::cuda
