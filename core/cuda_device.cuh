// The device-side helpers every CUDA kernel of tessera may use, and the pure host arithmetic of
// launch shapes: nothing here calls the CUDA runtime, so kernel headers that include only this
// (core/ops/*_kernels.cuh) also compile on the host under tests/simt_emulation.h, which runs
// their source on the CPU. Included through core/cuda_common.cuh by *.cu files.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace tessera::cuda {
// Internal linkage: each translation unit, a .cu file or the CPU emulation's test, has its own
// copy of the device code.
namespace {

// Loads and stores in fp32, whatever the storage type.
__device__ __forceinline__ float to_f32(float x) {
  return x;
}
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}

// This thread's index in a one-dimensional grid.
__device__ __forceinline__ int64_t global_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

// The sum and the maximum over the 32 lanes of a warp, by butterfly: every lane gets the same
// bits (each step combines the same two values on both partners).
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2)
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}

#ifndef TESSERA_SIMT_EMULATION  // which has a buffer of its own
// The block's dynamic shared memory (the launch's third parameter), 16-byte aligned.
template <typename T>
__device__ __forceinline__ T* dynamic_shared_memory() {
  extern __shared__ __align__(16) unsigned char dynamic_smem[];
  return reinterpret_cast<T*>(dynamic_smem);
}
#endif

}  // namespace

inline unsigned blocks_for(int64_t n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

// The largest power of two up to 256 that divides the address: what vector accesses, cp.async
// and cuBLASLt's algorithms may assume of a pointer (a view into a buffer may be less aligned).
inline uint32_t alignment_of(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && address % align != 0) align /= 2;
  return align;
}

}  // namespace tessera::cuda
