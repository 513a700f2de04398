// tessera's deterministic column sums (the LayerNorm parameter gradients, the bias gradient):
// the geometry both ops' first kernels share, and the second kernel, as device code without
// launchers. Include tests/simt_emulation.h first to run it on the CPU.
//
// The first kernel, each op's own, sums fixed chunks of kChunkRows rows of stripes of
// kStripeColumns columns into fp32 partials [chunks, C]: block (chunk, stripe), thread (x, y)
// takes the pack of kPack columns at x * kPack over the chunk's rows y, y + kRowLanes, ... in
// order, then thread t < kStripeColumns adds column t's kRowLanes sums in order. At 8192 rows
// and C = 768: 128 chunks x 6 stripes = 768 blocks.
//
// The second, finish_kernel: out[c] += the sum over chunks k of partials[k C + c], for K arrays
// at once, in an order fixed by `chunks` alone: thread (x, y) of block b adds chunks y,
// y + kChunkLanes, ... of column b * kFinishColumns + x in order, then thread (x, 0) adds the
// kChunkLanes sums in order. No atomics, so the same bits on every run. It is latency-bound, so
// many lanes per column, each with few loads (4 at 8192 rows), even for many rows.
#pragma once

#include <cstdint>

#include "core/cuda_device.cuh"
#include "core/ops/cuda_elementwise.cuh"

namespace tessera::ops::cuda::column_sums {
// Internal linkage, as the kernels had in their .cu files: each translation unit, a .cu file or
// the CPU emulation's test, has its own copy.
namespace {

using ::tessera::cuda::blocks_for;
using ::tessera::cuda::from_f32;
using ::tessera::cuda::kPack;
using ::tessera::cuda::to_f32;

// The first kernels' geometry.
constexpr int kPartialThreads = 256;
constexpr int kChunkRows = 64;
constexpr int kStripePacks = 32;  // a warp across the stripe, one pack of columns each
constexpr int kStripeColumns = kStripePacks * kPack;
constexpr int kRowLanes = kPartialThreads / kStripePacks;
static_assert(kStripeColumns <= kPartialThreads, "one thread per stripe column adds the lanes");

// The finish's.
constexpr int kFinishColumns = 32;  // columns per block
constexpr int kChunkLanes = 32;     // threads down the chunks of a column
constexpr int kFinishThreads = kFinishColumns * kChunkLanes;

// K outputs of C elements and their partials, [chunks, C] each.
template <typename D, int K>
struct ColumnSums {
  D* out[K];
  const float* partials[K];
};

// The bounds keep its registers within what a block of kFinishThreads (1024) allows.
template <typename D, int K>
__global__ void __launch_bounds__(kFinishThreads)
    finish_kernel(ColumnSums<D, K> sums, int64_t chunks, int64_t C) {
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

// The launch shapes for `rows` rows of C columns.
inline int64_t chunks_of(int64_t rows) {
  return (rows + kChunkRows - 1) / kChunkRows;
}
inline dim3 partials_grid(int64_t rows, int64_t C) {
  return dim3(static_cast<unsigned>(chunks_of(rows)), blocks_for(C, kStripeColumns));
}
inline dim3 partials_block() {
  return dim3(kStripePacks, kRowLanes);
}

inline dim3 finish_grid(int64_t C) {
  return dim3(blocks_for(C, kFinishColumns));
}
inline dim3 finish_block() {
  return dim3(kFinishColumns, kChunkLanes);
}

}  // namespace
}  // namespace tessera::ops::cuda::column_sums
