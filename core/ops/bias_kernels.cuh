// The CUDA kernels of the linear layer's bias, as device code without launchers:
// core/ops/matmul_cuda.cu launches them on the GPU, and tests/test_kernels_emulated.cpp runs the
// same source on the CPU (include tests/simt_emulation.h first for that).
#pragma once

#include <cstdint>

#include "core/cuda_device.cuh"
#include "core/ops/column_sum_kernels.cuh"
#include "core/ops/cuda_elementwise.cuh"

namespace tessera::ops::cuda::bias_kernels {
// Internal linkage, as the kernels had in their .cu files: each translation unit, a .cu file or
// the CPU emulation's test, has its own copy.
namespace {

using tessera::cuda::from_f32;
using tessera::cuda::global_index;
using tessera::cuda::kPack;
using tessera::cuda::load;
using tessera::cuda::to_f32;
// The partials' geometry (core/ops/column_sum_kernels.cuh).
using column_sums::kChunkRows;
using column_sums::kRowLanes;
using column_sums::kStripeColumns;
using column_sums::kStripePacks;

// out[m, n] = bias[n], or 0 without a bias: the product over an empty inner dimension. One
// element per thread, blocks of kFillThreads.
constexpr int kFillThreads = 256;
template <typename D>
__global__ void fill_rows_kernel(D* out, const D* bias, int64_t M, int64_t N) {
  const int64_t i = global_index();
  if (i < M * N) out[i] = bias != nullptr ? bias[i % N] : from_f32<D>(0.0f);
}

// The bias gradient dbias[n] += sum_m dout[m, n], as a column sum
// (core/ops/column_sum_kernels.cuh): this kernel's partials, then column_sums::finish_kernel with K
// = 1. No atomics: the same bits on every run. Block (chunk, stripe) and its threads as that header
// describes; every column of every chunk is written once.
template <typename D>
__global__ void bias_backward_partials_kernel(float* partials, const D* dout, int64_t M, int64_t N,
                                              bool packed) {
  __shared__ float lane_sum[kRowLanes][kStripeColumns];
  const int64_t chunk = blockIdx.x;
  const int64_t row0 = chunk * kChunkRows;
  const int rows = static_cast<int>(M - row0 < kChunkRows ? M - row0 : kChunkRows);
  const int64_t stripe0 = static_cast<int64_t>(blockIdx.y) * kStripeColumns;
  const int64_t n = stripe0 + threadIdx.x * kPack;
  float sum[kPack] = {};
  if (n < N) {
    for (int i = threadIdx.y; i < rows; i += kRowLanes) {
      float g[kPack];
      load(g, dout + (row0 + i) * N, n, N, packed);
#pragma unroll
      for (int k = 0; k < kPack; ++k) sum[k] += g[k];
    }
  }
#pragma unroll
  for (int k = 0; k < kPack; ++k) lane_sum[threadIdx.y][threadIdx.x * kPack + k] = sum[k];
  __syncthreads();
  const int t = threadIdx.y * kStripePacks + threadIdx.x;
  if (t >= kStripeColumns || stripe0 + t >= N) return;
  float total = 0.0f;
  for (int y = 0; y < kRowLanes; ++y) total += lane_sum[y][t];
  partials[chunk * N + stripe0 + t] = total;
}

}  // namespace
}  // namespace tessera::ops::cuda::bias_kernels
