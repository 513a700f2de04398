// The CUDA-core flash attention kernels (fp32, and bf16 by default), as device code without
// launchers: core/ops/attention_cuda.cu launches them on the GPU (its top comment describes
// them), and tests/test_attention_emulated.cpp runs the same source on the CPU (include
// tests/simt_emulation.h first for that).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/cuda_device.cuh"
#include "core/ops/attention_cuda.cuh"

namespace tessera::ops::cuda::attention_cuda_cores {
// Internal linkage, as the kernels had in their .cu files: each translation unit, a .cu file or
// the CPU emulation's test, has its own copy.
namespace {

using ::tessera::cuda::from_f32;
using ::tessera::cuda::to_f32;
using ::tessera::cuda::warp_max;
using ::tessera::cuda::warp_sum;

constexpr int kTile = 32;  // query rows and keys per tile: one key (or query row) per lane
constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = kTile / kWarps;  // tile rows each warp owns
constexpr int kLdP = kTile + 1;        // row stride of the 32 x 32 probability tiles

// Copies rows [row0, row0 + kTile) of HD columns (global row stride `stride`) into shared memory
// as fp32 with row stride `ld`; rows at or past S are zeros. Consecutive threads read
// consecutive columns (coalesced).
template <int HD, typename T>
__device__ void load_tile(float* dst, int ld, const T* src, int64_t stride, int row0, int S) {
  for (int i = static_cast<int>(threadIdx.x); i < kTile * HD; i += kThreads) {
    const int r = i / HD, d = i % HD;
    dst[r * ld + d] = row0 + r < S ? to_f32(src[(row0 + r) * stride + d]) : 0.0f;
  }
}

// The two products every kernel is made of, over the kRows rows a warp owns. First
// dot[i] += sum_d rows[i * HD + d] * mine[d], where `rows` are the warp's rows of a tile read by
// broadcast and `mine` the lane's own row of a padded one (S = Q K^T, dP = dO V^T).
template <int HD>
__device__ __forceinline__ void dot_rows(float (&dot)[kRows], const float* rows,
                                         const float* mine) {
#pragma unroll 8
  for (int d = 0; d < HD; ++d) {
    const float m = mine[d];
#pragma unroll
    for (int i = 0; i < kRows; ++i) dot[i] += rows[i * HD + d] * m;
  }
}

// Then acc[i][j] += sum_c w[i * kLdP + c] * tile[c * ld + lane + 32 j], where `w` are the warp's
// rows of a 32 x 32 weight tile (P, or dS) and `tile` 32 rows of HD read by column (P V, dS K,
// P^T dO, dS^T Q).
template <int HD>
__device__ __forceinline__ void accumulate_rows(float (&acc)[kRows][HD / 32], const float* w,
                                                const float* tile, int ld, int lane) {
#pragma unroll 4
  for (int c = 0; c < kTile; ++c) {
    float x[HD / 32];
#pragma unroll
    for (int j = 0; j < HD / 32; ++j) x[j] = tile[c * ld + lane + 32 * j];
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const float wi = w[i * kLdP + c];
#pragma unroll
      for (int j = 0; j < HD / 32; ++j) acc[i][j] += wi * x[j];
    }
  }
}

template <int HD>
constexpr size_t forward_smem_bytes() {
  return sizeof(float) * (2 * kTile * HD + kTile * (HD + 1) + kTile * kLdP);
}

template <int HD, typename T>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(T* out, float* lse, const T* qkv, int S, int H, float scale) {
  constexpr int kLdK = HD + 1;
  constexpr int kCols = HD / 32;  // output columns per lane: lane + 32 j
  float* smem = ::tessera::cuda::dynamic_shared_memory<float>();
  float* q_s = smem;                // [kTile][HD], read by broadcast
  float* k_s = q_s + kTile * HD;    // [kTile][kLdK], lane c reads key row c
  float* v_s = k_s + kTile * kLdK;  // [kTile][HD], read by column
  float* p_s = v_s + kTile * HD;    // [kTile][kLdP], this tile's unnormalised probabilities

  const AttentionHead head = head_of_block<HD>(S, H);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int q0 = longest_first_tile() * kTile;
  const T* q = qkv + head.qkv;
  load_tile<HD>(q_s, HD, q, head.qkv_row, q0, S);

  float m[kRows], l[kRows], acc[kRows][kCols];
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int j = 0; j < kCols; ++j) acc[i][j] = 0.0f;
  }

  for (int k0 = 0; k0 <= q0; k0 += kTile) {
    __syncthreads();  // q_s is loaded; the previous key tile is no longer read
    load_tile<HD>(k_s, kLdK, q + head.C, head.qkv_row, k0, S);
    load_tile<HD>(v_s, HD, q + 2 * head.C, head.qkv_row, k0, S);
    __syncthreads();

    float s[kRows] = {};
    dot_rows<HD>(s, q_s + warp * kRows * HD, k_s + lane * kLdK);
    const int key = k0 + lane;
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const int r = warp * kRows + i;
      // Key k0 (lane 0) is valid for every row (k0 <= q0 <= q0 + r and k0 < S), so the
      // running max is finite after the first tile and no exp sees inf - inf.
      const bool valid = key <= q0 + r && key < S;
      const float sc = valid ? s[i] * scale : -INFINITY;
      const float m_new = fmaxf(m[i], warp_max(sc));
      const float p = valid ? expf(sc - m_new) : 0.0f;
      const float alpha = expf(m[i] - m_new);  // rescales what earlier tiles summed; 0 at first
      l[i] = l[i] * alpha + warp_sum(p);
      m[i] = m_new;
#pragma unroll
      for (int j = 0; j < kCols; ++j) acc[i][j] *= alpha;
      p_s[r * kLdP + lane] = p;
    }
    __syncwarp();  // this warp's rows of p_s are written
    accumulate_rows<HD>(acc, p_s + warp * kRows * kLdP, v_s, HD, lane);
  }

#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const int t = q0 + warp * kRows + i;
    if (t >= S) continue;  // the same for the whole warp
    const float inv = 1.0f / l[i];
    T* o = out + head.out + int64_t{t} * head.C;
#pragma unroll
    for (int j = 0; j < kCols; ++j) o[lane + 32 * j] = from_f32<T>(acc[i][j] * inv);
    if (lane == 0) lse[head.stats + t] = m[i] + logf(l[i]);
  }
}

// delta[b, h, t] = sum_d dout[b, t, h, d] * out[b, t, h, d]: one warp per (b, t, h), whose HD
// values are row n = (b S + t) H + h of out seen as [B S H, HD].
template <int HD, typename T>
__global__ void __launch_bounds__(kThreads)
    attention_delta_kernel(float* delta, const T* dout, const T* out, int64_t rows, int S, int H) {
  const int64_t n = int64_t{blockIdx.x} * kWarps + threadIdx.x / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  if (n >= rows) return;  // the whole warp, so the shuffles below have all 32 lanes
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < HD / 32; ++j) {
    const int64_t e = n * HD + lane + 32 * j;
    sum += to_f32(dout[e]) * to_f32(out[e]);
  }
  sum = warp_sum(sum);
  if (lane == 0) {
    const int64_t h = n % H, t = (n / H) % S, b = n / (int64_t{H} * S);
    delta[(b * H + h) * S + t] = sum;
  }
}

template <int HD>
constexpr size_t backward_dkdv_smem_bytes() {
  return sizeof(float) * (2 * kTile * HD + 2 * kTile * (HD + 1) + 2 * kTile * kLdP + 2 * kTile);
}

// dK and dV of one 32-key tile, summed over the query tiles on and below the diagonal. Lanes
// are query rows of the tile, each warp owns 8 keys:
//   P^T[c, r] = exp(scale k_c . q_r - L_r),  dP^T[c, r] = v_c . do_r,  dS = P (dP - D_r),
//   dV_c += sum_r P^T[c, r] do_r,  dK_c += scale sum_r dS^T[c, r] q_r.
template <int HD, typename T>
__global__ void __launch_bounds__(kThreads)
    attention_backward_dkdv_kernel(T* dqkv, const T* qkv, const T* dout, const float* lse,
                                   const float* delta, int S, int H, float scale) {
  constexpr int kLd = HD + 1;
  constexpr int kCols = HD / 32;
  float* smem = ::tessera::cuda::dynamic_shared_memory<float>();
  float* k_s = smem;                   // [kTile][HD], read by broadcast
  float* v_s = k_s + kTile * HD;       // [kTile][HD], read by broadcast
  float* q_s = v_s + kTile * HD;       // [kTile][kLd], lane r reads query row r
  float* do_s = q_s + kTile * kLd;     // [kTile][kLd], likewise
  float* p_s = do_s + kTile * kLd;     // [kTile keys][kLdP]: P^T
  float* ds_s = p_s + kTile * kLdP;    // [kTile keys][kLdP]: dS^T
  float* lse_s = ds_s + kTile * kLdP;  // [kTile]
  float* delta_s = lse_s + kTile;      // [kTile]

  const AttentionHead head = head_of_block<HD>(S, H);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int k0 = static_cast<int>(blockIdx.x) * kTile;  // the first key tiles see most queries
  const T* q = qkv + head.qkv;
  load_tile<HD>(k_s, HD, q + head.C, head.qkv_row, k0, S);
  load_tile<HD>(v_s, HD, q + 2 * head.C, head.qkv_row, k0, S);

  float dk[kRows][kCols] = {}, dv[kRows][kCols] = {};
  for (int q0 = k0; q0 < S; q0 += kTile) {
    __syncthreads();  // k_s, v_s are loaded; the previous query tile is no longer read
    load_tile<HD>(q_s, kLd, q, head.qkv_row, q0, S);
    load_tile<HD>(do_s, kLd, dout + head.out, head.C, q0, S);
    if (threadIdx.x < static_cast<unsigned>(kTile)) {
      const int t = q0 + static_cast<int>(threadIdx.x);
      lse_s[threadIdx.x] = t < S ? lse[head.stats + t] : 0.0f;
      delta_s[threadIdx.x] = t < S ? delta[head.stats + t] : 0.0f;
    }
    __syncthreads();

    float s[kRows] = {}, dp[kRows] = {};
    dot_rows<HD>(s, k_s + warp * kRows * HD, q_s + lane * kLd);
    dot_rows<HD>(dp, v_s + warp * kRows * HD, do_s + lane * kLd);
    const int t = q0 + lane;
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const int c = warp * kRows + i;
      const bool valid = k0 + c <= t && t < S;
      const float p = valid ? expf(s[i] * scale - lse_s[lane]) : 0.0f;
      p_s[c * kLdP + lane] = p;
      ds_s[c * kLdP + lane] = p * (dp[i] - delta_s[lane]);
    }
    __syncwarp();  // this warp's rows of p_s and ds_s are written
    accumulate_rows<HD>(dv, p_s + warp * kRows * kLdP, do_s, kLd, lane);
    accumulate_rows<HD>(dk, ds_s + warp * kRows * kLdP, q_s, kLd, lane);
  }

#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const int key = k0 + warp * kRows + i;
    if (key >= S) continue;  // the same for the whole warp
    T* dk_row = dqkv + head.qkv + int64_t{key} * head.qkv_row + head.C;
    T* dv_row = dk_row + head.C;
#pragma unroll
    for (int j = 0; j < kCols; ++j) {
      const int d = lane + 32 * j;
      dk_row[d] = from_f32<T>(scale * dk[i][j]);
      dv_row[d] = from_f32<T>(dv[i][j]);
    }
  }
}

template <int HD>
constexpr size_t backward_dq_smem_bytes() {
  return sizeof(float) * (2 * kTile * HD + 2 * kTile * (HD + 1) + kTile * kLdP);
}

// dQ of one 32-row query tile, summed over the key tiles up to the diagonal. Each warp owns 8
// rows, lanes are keys of the tile: dS as in the dK/dV kernel, dQ_r += scale sum_c dS[r, c] k_c.
template <int HD, typename T>
__global__ void __launch_bounds__(kThreads)
    attention_backward_dq_kernel(T* dqkv, const T* qkv, const T* dout, const float* lse,
                                 const float* delta, int S, int H, float scale) {
  constexpr int kLd = HD + 1;
  constexpr int kCols = HD / 32;
  float* smem = ::tessera::cuda::dynamic_shared_memory<float>();
  float* q_s = smem;                // [kTile][HD], read by broadcast
  float* do_s = q_s + kTile * HD;   // [kTile][HD], read by broadcast
  float* k_s = do_s + kTile * HD;   // [kTile][kLd], lane c reads key row c
  float* v_s = k_s + kTile * kLd;   // [kTile][kLd], likewise
  float* ds_s = v_s + kTile * kLd;  // [kTile][kLdP]

  const AttentionHead head = head_of_block<HD>(S, H);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int q0 = longest_first_tile() * kTile;
  const T* q = qkv + head.qkv;
  load_tile<HD>(q_s, HD, q, head.qkv_row, q0, S);
  load_tile<HD>(do_s, HD, dout + head.out, head.C, q0, S);
  float row_lse[kRows], row_delta[kRows];
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const int t = q0 + warp * kRows + i;
    row_lse[i] = t < S ? lse[head.stats + t] : 0.0f;
    row_delta[i] = t < S ? delta[head.stats + t] : 0.0f;
  }

  float dq[kRows][kCols] = {};
  for (int k0 = 0; k0 <= q0; k0 += kTile) {
    __syncthreads();  // q_s and do_s are loaded; the previous key tile is no longer read
    load_tile<HD>(k_s, kLd, q + head.C, head.qkv_row, k0, S);
    load_tile<HD>(v_s, kLd, q + 2 * head.C, head.qkv_row, k0, S);
    __syncthreads();

    float s[kRows] = {}, dp[kRows] = {};
    dot_rows<HD>(s, q_s + warp * kRows * HD, k_s + lane * kLd);
    dot_rows<HD>(dp, do_s + warp * kRows * HD, v_s + lane * kLd);
    const int key = k0 + lane;
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const int r = warp * kRows + i, t = q0 + r;
      const bool valid = key <= t && t < S;
      const float p = valid ? expf(s[i] * scale - row_lse[i]) : 0.0f;
      ds_s[r * kLdP + lane] = p * (dp[i] - row_delta[i]);
    }
    __syncwarp();  // this warp's rows of ds_s are written
    accumulate_rows<HD>(dq, ds_s + warp * kRows * kLdP, k_s, kLd, lane);
  }

#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const int t = q0 + warp * kRows + i;
    if (t >= S) continue;  // the same for the whole warp
    T* dq_row = dqkv + head.qkv + int64_t{t} * head.qkv_row;
#pragma unroll
    for (int j = 0; j < kCols; ++j) {
      const int d = lane + 32 * j;
      dq_row[d] = from_f32<T>(scale * dq[i][j]);
    }
  }
}

}  // namespace
}  // namespace tessera::ops::cuda::attention_cuda_cores
