// The CUDA cross-entropy kernels, as device code without launchers: core/ops/cross_entropy_cuda.cu
// launches them on the GPU (its top comment says how they work), and
// tests/test_kernels_emulated.cpp runs the same source on the CPU (include
// tests/simt_emulation.h first for that).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/cuda_device.cuh"

namespace tessera::ops::cuda::cross_entropy_kernels {
// Internal linkage, as the kernels had in their .cu files: each translation unit, a .cu file or
// the CPU emulation's test, has its own copy.
namespace {

using ::tessera::cuda::from_f32;
using ::tessera::cuda::to_f32;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  __device__ double operator()(double a, double b) const { return a + b; }
};

// The reduction of x over the block, returned to every thread. scratch holds kWarps values and
// serves one reduction: a kernel that reduced twice would need a barrier between them.
template <typename V, typename Op>
__device__ V block_reduce(V x, Op op, V* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = op(x, __shfl_xor_sync(0xffffffffu, x, o));
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  V r = scratch[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) r = op(r, scratch[w]);
  return r;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_row_max_kernel(float* row_max, const T* logits, int64_t V) {
  __shared__ float scratch[kWarps];
  const T* x = logits + int64_t{blockIdx.x} * V;
  float mx = -INFINITY;
  for (int64_t v = threadIdx.x; v < V; v += kThreads) mx = fmaxf(mx, to_f32(x[v]));
  mx = block_reduce(mx, MaxOp{}, scratch);
  if (threadIdx.x == 0) row_max[blockIdx.x] = mx;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_partials_kernel(double* sumexp, double* target_logit, int32_t* first_bad,
                                  const T* logits, const float* gmax, const int32_t* targets,
                                  int64_t M, int64_t V, int64_t vocab_start, int64_t vocab_end) {
  __shared__ double scratch[kWarps];
  const int64_t m = blockIdx.x;
  const T* x = logits + m * V;
  const float mx = gmax[m];
  float sum = 0.0f;
  for (int64_t v = threadIdx.x; v < V; v += kThreads) sum += expf(to_f32(x[v]) - mx);
  const double total = block_reduce(static_cast<double>(sum), SumOp{}, scratch);
  if (threadIdx.x == 0) {
    sumexp[m] = total;
    const int32_t target = targets[m];
    const int64_t local = int64_t{target} - vocab_start;
    target_logit[m] = (local >= 0 && local < V) ? static_cast<double>(to_f32(x[local])) : 0.0;
    if (target < 0 || (vocab_end >= 0 && target >= vocab_end))
      atomicMax(first_bad, static_cast<int32_t>(M - m));
  }
}

__global__ void cross_entropy_finish_kernel(float* losses, float* lse, const float* gmax,
                                            const double* sumexp, const double* target_logit,
                                            int64_t M) {
  const int64_t m = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (m >= M) return;
  const double l = static_cast<double>(gmax[m]) + log(sumexp[m]);
  lse[m] = static_cast<float>(l);
  losses[m] = static_cast<float>(l - target_logit[m]);
}

// No __restrict__: dlogits may be logits. Each element is read and then written by one thread.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_backward_kernel(T* dlogits, const float* dlosses, const T* logits,
                                  const float* lse, const int32_t* targets, int64_t V,
                                  int64_t vocab_start) {
  const int64_t m = blockIdx.x;
  const T* x = logits + m * V;
  T* dx = dlogits + m * V;
  const float d = dlosses[m], l = lse[m];
  const int64_t local = int64_t{targets[m]} - vocab_start;  // matches no v when off-shard
  for (int64_t v = threadIdx.x; v < V; v += kThreads) {
    float g = d * expf(to_f32(x[v]) - l);
    if (v == local) g -= d;  // as the CPU twin: d * p rounded, then minus d
    dx[v] = from_f32<T>(g);
  }
}

}  // namespace
}  // namespace tessera::ops::cuda::cross_entropy_kernels
