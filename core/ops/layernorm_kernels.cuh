// The LayerNorm CUDA kernels, as device code without launchers: core/ops/layernorm_cuda.cu
// launches them on the GPU (its top comment says how they divide the work), and
// tests/test_kernels_emulated.cpp runs the same source on the CPU. Include
// tests/simt_emulation.h before this header to do that.
#pragma once

#include <cstdint>

#include "core/cuda_device.cuh"
#include "core/ops/column_sum_kernels.cuh"
#include "core/ops/cuda_elementwise.cuh"
#include "core/ops/layernorm.h"

namespace tessera::ops::cuda::layernorm_kernels {
// Internal linkage, as the kernels had in their .cu files: each translation unit, a .cu file or
// the CPU emulation's test, has its own copy.
namespace {

using tessera::cuda::from_f32;
using tessera::cuda::kPack;
using tessera::cuda::load;
using tessera::cuda::store;
using tessera::cuda::to_f32;
using tessera::cuda::warp_sum;

constexpr int kWarp = 32;
constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarp;  // one warp per row
// Blocks of the dinp kernel that must fit on one SM, which caps its registers. The kernel is
// bound by the bytes its warps keep in flight, and a bf16 pack is half a float pack: at the 40
// registers it takes unconstrained only 6 blocks fit, and holding bf16 to 32 registers (8 blocks,
// at the cost of a 24-byte spill) measured 20% faster on an H200; float, which spills more at 32,
// ran faster unconstrained.
template <typename D>
constexpr int kDinpBlocksPerSm = sizeof(D) == 2 ? 8 : 1;
// dweight and dbias are column sums (core/ops/column_sum_kernels.cuh): partials over chunks of
// rows and stripes of columns in that header's geometry, then column_sums::finish_kernel with
// K = 2. Fixed sizes, so the order of every sum depends on N and C only.
using column_sums::kChunkRows;
using column_sums::kPartialThreads;
using column_sums::kRowLanes;
using column_sums::kStripeColumns;
using column_sums::kStripePacks;
constexpr float kEps = static_cast<float>(kLayerNormEps);

// The row this warp owns, or -1 past the last row (the whole warp leaves together).
__device__ __forceinline__ int64_t warp_row(int64_t N) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  return row < N ? row : -1;
}

// Mean and rstd = 1 / sqrt(biased variance + eps) of the C values at x, by one warp.
template <typename D>
__device__ void row_statistics(const D* x, int64_t C, int lane, float& m, float& r) {
  const float inv_c = 1.0f / static_cast<float>(C);
  float sum = 0;
  for (int64_t c = lane; c < C; c += kWarp) sum += to_f32(x[c]);
  m = warp_sum(sum) * inv_c;
  float sq = 0;
  for (int64_t c = lane; c < C; c += kWarp) {
    const float d = to_f32(x[c]) - m;
    sq += d * d;
  }
  r = 1.0f / sqrtf(warp_sum(sq) * inv_c + kEps);
}

template <typename D>
__device__ void normalize_row(D* out, const D* x, const D* weight, const D* bias, float m, float r,
                              int64_t C, int lane) {
  for (int64_t c = lane; c < C; c += kWarp)
    out[c] = from_f32<D>((to_f32(x[c]) - m) * r * to_f32(weight[c]) + to_f32(bias[c]));
}

// One warp's row: statistics of x (row `row` of the input), the normalised row into out, and
// the statistics saved for the backward.
template <typename D>
__device__ __forceinline__ void layernorm_row(D* out, float* mean, float* rstd, const D* x,
                                              const D* weight, const D* bias, int64_t row,
                                              int64_t C, int lane) {
  float m, r;
  row_statistics(x, C, lane, m, r);
  normalize_row(out + row * C, x, weight, bias, m, r, C, lane);
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

template <typename D>
__global__ void layernorm_forward_kernel(D* out, float* mean, float* rstd, const D* inp,
                                         const D* weight, const D* bias, int64_t N, int64_t C) {
  const int64_t row = warp_row(N);
  if (row < 0) return;
  layernorm_row(out, mean, rstd, inp + row * C, weight, bias, row, C, threadIdx.x % kWarp);
}

// Each lane reads back only the residual elements it wrote itself, so no warp barrier is needed
// between the add and the statistics.
template <typename D>
__global__ void residual_layernorm_forward_kernel(D* residual, D* out, float* mean, float* rstd,
                                                  const D* a, const D* b, const D* weight,
                                                  const D* bias, int64_t N, int64_t C) {
  const int64_t row = warp_row(N);
  if (row < 0) return;
  const int lane = threadIdx.x % kWarp;
  D* x = residual + row * C;
  const D* ar = a + row * C;
  const D* br = b + row * C;
  for (int64_t c = lane; c < C; c += kWarp) x[c] = from_f32<D>(to_f32(ar[c]) + to_f32(br[c]));
  layernorm_row(out, mean, rstd, x, weight, bias, row, C, lane);
}

// dinp += rstd (g - mean_c(g) - xhat mean_c(g xhat)), g = dout * weight (the CPU twin's formula).
// One warp per row; in both passes lane l takes the packs of kPack columns at l * kPack,
// (l + kWarp) * kPack, ... in order. The second pass reads the row again, mostly from L1 or L2.
template <typename D>
__global__ void __launch_bounds__(kThreads, kDinpBlocksPerSm<D>)
    layernorm_backward_dinp_kernel(D* dinp, const D* dout, const D* inp, const D* weight,
                                   const float* mean, const float* rstd, int64_t N, int64_t C,
                                   bool packed) {
  const int64_t row = warp_row(N);
  if (row < 0) return;
  const int64_t first = static_cast<int64_t>(threadIdx.x % kWarp) * kPack;
  const D* x = inp + row * C;
  const D* dy = dout + row * C;
  D* dx = dinp + row * C;
  const float m = mean[row], r = rstd[row];
  // Columns past C load as zeros and add nothing.
  float g_sum = 0, gx_sum = 0;
  for (int64_t c = first; c < C; c += kWarp * kPack) {
    float xv[kPack], dyv[kPack], w[kPack];
    load(xv, x, c, C, packed);
    load(dyv, dy, c, C, packed);
    load(w, weight, c, C, packed);
#pragma unroll
    for (int k = 0; k < kPack; ++k) {
      const float g = dyv[k] * w[k];
      g_sum += g;
      gx_sum += g * (xv[k] - m) * r;
    }
  }
  const float inv_c = 1.0f / static_cast<float>(C);
  const float g_mean = warp_sum(g_sum) * inv_c;
  const float gx_mean = warp_sum(gx_sum) * inv_c;
  for (int64_t c = first; c < C; c += kWarp * kPack) {
    float xv[kPack], dyv[kPack], w[kPack], dxv[kPack];
    load(xv, x, c, C, packed);
    load(dyv, dy, c, C, packed);
    load(w, weight, c, C, packed);
    load(dxv, dx, c, C, packed);
#pragma unroll
    for (int k = 0; k < kPack; ++k) {
      const float xhat = (xv[k] - m) * r;
      dxv[k] += (dyv[k] * w[k] - g_mean - xhat * gx_mean) * r;
    }
    store(dx, dxv, c, C, packed);
  }
}

// Block (chunk, stripe) sums rows [chunk * kChunkRows, +kChunkRows) of the kStripeColumns
// columns from stripe * kStripeColumns. The chunk's mean and rstd are first staged in shared
// memory; then thread (x, y) takes the pack of kPack columns at x * kPack in the chunk's rows y,
// y + kRowLanes, ... in order, and thread t < kStripeColumns adds column t's kRowLanes sums in
// order. Partials are [chunks, C], every column of every chunk written once. Held to 32
// registers (8 blocks per SM, no spill): on an H200, up to 30% faster than at its own 40 in bf16
// at C >= 1024, the same at C = 768.
template <typename D>
__global__ void __launch_bounds__(kPartialThreads, 8)
    layernorm_param_partials_kernel(float* dweight_part, float* dbias_part, const D* dout,
                                    const D* inp, const float* mean, const float* rstd, int64_t N,
                                    int64_t C, bool packed) {
  __shared__ float chunk_mean[kChunkRows];
  __shared__ float chunk_rstd[kChunkRows];
  __shared__ float lane_dw[kRowLanes][kStripeColumns];
  __shared__ float lane_db[kRowLanes][kStripeColumns];
  const int64_t chunk = blockIdx.x;
  const int64_t row0 = chunk * kChunkRows;
  const int rows = static_cast<int>(N - row0 < kChunkRows ? N - row0 : kChunkRows);
  const int t = threadIdx.y * kStripePacks + threadIdx.x;
  for (int i = t; i < rows; i += kPartialThreads) {
    chunk_mean[i] = mean[row0 + i];
    chunk_rstd[i] = rstd[row0 + i];
  }
  __syncthreads();

  const int64_t stripe0 = static_cast<int64_t>(blockIdx.y) * kStripeColumns;
  const int64_t c = stripe0 + threadIdx.x * kPack;
  float dw[kPack] = {}, db[kPack] = {};
  if (c < C) {
    for (int i = threadIdx.y; i < rows; i += kRowLanes) {
      const int64_t n = row0 + i;
      float dy[kPack], x[kPack];
      load(dy, dout + n * C, c, C, packed);
      load(x, inp + n * C, c, C, packed);
#pragma unroll
      for (int k = 0; k < kPack; ++k) {
        dw[k] += dy[k] * (x[k] - chunk_mean[i]) * chunk_rstd[i];
        db[k] += dy[k];
      }
    }
  }
#pragma unroll
  for (int k = 0; k < kPack; ++k) {
    lane_dw[threadIdx.y][threadIdx.x * kPack + k] = dw[k];
    lane_db[threadIdx.y][threadIdx.x * kPack + k] = db[k];
  }
  __syncthreads();

  if (t >= kStripeColumns || stripe0 + t >= C) return;
  float w = 0, b = 0;
  for (int y = 0; y < kRowLanes; ++y) {
    w += lane_dw[y][t];
    b += lane_db[y][t];
  }
  dweight_part[chunk * C + stripe0 + t] = w;
  dbias_part[chunk * C + stripe0 + t] = b;
}

}  // namespace
}  // namespace tessera::ops::cuda::layernorm_kernels
