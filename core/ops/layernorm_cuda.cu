// CUDA LayerNorm, after llm.c's layernorm kernels. One warp per row: the mean, then the biased
// variance, in two passes over the row as the CPU twin does (no E[x^2] - E[x]^2 cancellation),
// always in fp32 whatever the storage type. The backward writes dinp one warp per row; dweight and
// dbias, sums over rows, are summed per fixed chunk of kChunkRows rows into a scratch buffer and
// the chunks then added in order by one thread per column: the same bits on every run, with no
// floating-point atomics. Scratch comes from the stream-ordered allocator, so the backward never
// synchronises the device.
#include <cstdint>

#include "core/cuda_common.cuh"
#include "core/ops/layernorm.h"
#include "core/ops/layernorm_cuda.h"

namespace tessera::ops::cuda {
namespace {

using tessera::cuda::blocks_for;
using tessera::cuda::dev;
using tessera::cuda::device_t;
using tessera::cuda::from_f32;
using tessera::cuda::StreamScratch;
using tessera::cuda::to_f32;

constexpr int kWarp = 32;
constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarp;  // one warp per row
// The dweight/dbias partial sums: each block sums kChunkRows rows of kWarp columns with
// kRowLanes threads per column. Fixed sizes, so the order of every sum depends on N and C only.
constexpr int kChunkRows = 256;
constexpr int kRowLanes = 8;
constexpr float kEps = static_cast<float>(kLayerNormEps);

// The sum over the 32 lanes of a warp; every lane gets the same bits (each butterfly step adds
// the same two values on both partners).
__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

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
template <typename D>
__global__ void layernorm_backward_dinp_kernel(D* dinp, const D* dout, const D* inp,
                                               const D* weight, const float* mean,
                                               const float* rstd, int64_t N, int64_t C) {
  const int64_t row = warp_row(N);
  if (row < 0) return;
  const int lane = threadIdx.x % kWarp;
  const D* x = inp + row * C;
  const D* dy = dout + row * C;
  D* dx = dinp + row * C;
  const float m = mean[row], r = rstd[row];
  float g_sum = 0, gx_sum = 0;
  for (int64_t c = lane; c < C; c += kWarp) {
    const float g = to_f32(dy[c]) * to_f32(weight[c]);
    g_sum += g;
    gx_sum += g * (to_f32(x[c]) - m) * r;
  }
  const float inv_c = 1.0f / static_cast<float>(C);
  const float g_mean = warp_sum(g_sum) * inv_c;
  const float gx_mean = warp_sum(gx_sum) * inv_c;
  for (int64_t c = lane; c < C; c += kWarp) {
    const float xhat = (to_f32(x[c]) - m) * r;
    const float g = to_f32(dy[c]) * to_f32(weight[c]);
    dx[c] = from_f32<D>(to_f32(dx[c]) + (g - g_mean - xhat * gx_mean) * r);
  }
}

// Block (chunk, tile) sums rows [chunk * kChunkRows, +kChunkRows) of columns
// [tile * kWarp, +kWarp): thread (x, y) takes the chunk's rows y, y + kRowLanes, ... in order,
// then thread y = 0 adds the kRowLanes lanes in order. Partials are [chunks, C].
template <typename D>
__global__ void layernorm_param_partials_kernel(float* dweight_part, float* dbias_part,
                                                const D* dout, const D* inp, const float* mean,
                                                const float* rstd, int64_t N, int64_t C) {
  __shared__ float lane_dw[kRowLanes][kWarp];
  __shared__ float lane_db[kRowLanes][kWarp];
  const int64_t chunk = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kWarp + threadIdx.x;
  const int64_t row_end = (chunk + 1) * kChunkRows < N ? (chunk + 1) * kChunkRows : N;
  float dw = 0, db = 0;
  if (c < C) {
    for (int64_t n = chunk * kChunkRows + threadIdx.y; n < row_end; n += kRowLanes) {
      const float dy = to_f32(dout[n * C + c]);
      dw += dy * (to_f32(inp[n * C + c]) - mean[n]) * rstd[n];
      db += dy;
    }
  }
  lane_dw[threadIdx.y][threadIdx.x] = dw;
  lane_db[threadIdx.y][threadIdx.x] = db;
  __syncthreads();
  if (threadIdx.y != 0 || c >= C) return;
  float w = 0, b = 0;
  for (int k = 0; k < kRowLanes; ++k) {
    w += lane_dw[k][threadIdx.x];
    b += lane_db[k][threadIdx.x];
  }
  dweight_part[chunk * C + c] = w;
  dbias_part[chunk * C + c] = b;
}

// dweight[c] += sum over chunks of the partials, in chunk order; likewise dbias.
template <typename D>
__global__ void layernorm_param_finish_kernel(D* dweight, D* dbias, const float* dweight_part,
                                              const float* dbias_part, int64_t chunks, int64_t C) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float w = 0, b = 0;
  for (int64_t k = 0; k < chunks; ++k) {
    w += dweight_part[k * C + c];
    b += dbias_part[k * C + c];
  }
  dweight[c] = from_f32<D>(to_f32(dweight[c]) + w);
  dbias[c] = from_f32<D>(to_f32(dbias[c]) + b);
}

}  // namespace

template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight,
                       const T* bias, int64_t N, int64_t C) {
  if (N == 0) return;
  layernorm_forward_kernel<<<blocks_for(N, kRowsPerBlock), kThreads, 0,
                             tessera::cuda::compute_stream()>>>(dev(out), mean, rstd, dev(inp),
                                                                dev(weight), dev(bias), N, C);
  CHECK_LAUNCH();
}

template <typename T>
void residual_layernorm_forward(T* residual, T* out, float* mean, float* rstd, const T* a,
                                const T* b, const T* weight, const T* bias, int64_t N, int64_t C) {
  if (N == 0) return;
  residual_layernorm_forward_kernel<<<blocks_for(N, kRowsPerBlock), kThreads, 0,
                                      tessera::cuda::compute_stream()>>>(
      dev(residual), dev(out), mean, rstd, dev(a), dev(b), dev(weight), dev(bias), N, C);
  CHECK_LAUNCH();
}

template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const float* mean, const float* rstd, int64_t N, int64_t C) {
  if (N == 0 || C == 0) return;
  cudaStream_t stream = tessera::cuda::compute_stream();
  layernorm_backward_dinp_kernel<<<blocks_for(N, kRowsPerBlock), kThreads, 0, stream>>>(
      dev(dinp), dev(dout), dev(inp), dev(weight), mean, rstd, N, C);
  CHECK_LAUNCH();

  const int64_t chunks = (N + kChunkRows - 1) / kChunkRows;
  StreamScratch partials(2 * static_cast<size_t>(chunks * C) * sizeof(float));
  float* dweight_part = partials.as<float>();
  float* dbias_part = dweight_part + chunks * C;
  const dim3 grid(static_cast<unsigned>(chunks), blocks_for(C, kWarp));
  layernorm_param_partials_kernel<<<grid, dim3(kWarp, kRowLanes), 0, stream>>>(
      dweight_part, dbias_part, dev(dout), dev(inp), mean, rstd, N, C);
  CHECK_LAUNCH();
  layernorm_param_finish_kernel<<<blocks_for(C, kThreads), kThreads, 0, stream>>>(
      dev(dweight), dev(dbias), dweight_part, dbias_part, chunks, C);
  CHECK_LAUNCH();
}

#define TESSERA_LAYERNORM_CUDA_INSTANTIATE(T)                                                   \
  template void layernorm_forward<T>(T*, float*, float*, const T*, const T*, const T*, int64_t, \
                                     int64_t);                                                  \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const float*,   \
                                      const float*, int64_t, int64_t);                          \
  template void residual_layernorm_forward<T>(T*, T*, float*, float*, const T*, const T*,       \
                                              const T*, const T*, int64_t, int64_t);
TESSERA_LAYERNORM_CUDA_INSTANTIATE(float)
TESSERA_LAYERNORM_CUDA_INSTANTIATE(bf16)
#undef TESSERA_LAYERNORM_CUDA_INSTANTIATE

}  // namespace tessera::ops::cuda
