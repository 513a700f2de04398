// The second kernel of tessera's deterministic column sums (the LayerNorm parameter gradients,
// the bias gradient), as device code without a launcher: out[c] += the sum over chunks k of
// partials[k C + c], for K arrays at once. The first kernel, each op's own, sums fixed chunks of
// rows into the fp32 partials [chunks, C]; this one adds each column's chunks in an order fixed
// by `chunks` alone: thread (x, y) of block b adds chunks y, y + kChunkLanes, ... of column
// b * kFinishColumns + x in order, then thread (x, 0) adds the kChunkLanes sums in order. No
// atomics, so the same bits on every run. It is latency-bound, so many lanes per column, each
// with few loads (4 at 8192 rows in chunks of 64), even for many rows. Include
// tests/simt_emulation.h first to run it on the CPU.
#pragma once

#include <cstdint>

#include "core/cuda_device.cuh"

namespace tessera::ops::cuda::column_sums {
// Internal linkage, as the kernels had in their .cu files: each translation unit, a .cu file or
// the CPU emulation's test, has its own copy.
namespace {

using ::tessera::cuda::blocks_for;
using ::tessera::cuda::from_f32;
using ::tessera::cuda::to_f32;

constexpr int kFinishColumns = 32;  // columns per block
constexpr int kChunkLanes = 32;     // threads down the chunks of a column

// K outputs of C elements and their partials, [chunks, C] each.
template <typename D, int K>
struct ColumnSums {
  D* out[K];
  const float* partials[K];
};

template <typename D, int K>
__global__ void finish_kernel(ColumnSums<D, K> sums, int64_t chunks, int64_t C) {
  __shared__ float lane_sum[K][kChunkLanes][kFinishColumns];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kFinishColumns + threadIdx.x;
  float sum[K] = {};
  if (c < C) {
#pragma unroll 4
    for (int64_t k = threadIdx.y; k < chunks; k += kChunkLanes)
#pragma unroll
      for (int j = 0; j < K; ++j) sum[j] += sums.partials[j][k * C + c];
  }
#pragma unroll
  for (int j = 0; j < K; ++j) lane_sum[j][threadIdx.y][threadIdx.x] = sum[j];
  __syncthreads();
  if (threadIdx.y != 0 || c >= C) return;
#pragma unroll
  for (int j = 0; j < K; ++j) {
    float total = 0.0f;
    for (int y = 0; y < kChunkLanes; ++y) total += lane_sum[j][y][threadIdx.x];
    sums.out[j][c] = from_f32<D>(to_f32(sums.out[j][c]) + total);
  }
}

// The launch shape of finish_kernel for C columns.
inline dim3 finish_grid(int64_t C) {
  return dim3(blocks_for(C, kFinishColumns));
}
inline dim3 finish_block() {
  return dim3(kFinishColumns, kChunkLanes);
}

}  // namespace
}  // namespace tessera::ops::cuda::column_sums
