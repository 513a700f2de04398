// Causal flash attention, forward and backward (contract in attention_cuda.h), on CUDA cores;
// bf16 can also run on tensor cores (attention_bf16_cuda.cu, chosen by AttentionKernels in
// attention.h). fp32 always runs here: the strict path the tests hold to the fp32 reference.
//
// The fp32 kernels: one thread block of 4 warps takes a 32-row tile of one (batch, head); it
// walks the 32-key tiles its rows can see, up to the diagonal, with shared-memory tiles in fp32
// and the running softmax statistics in registers, so the T x T matrix never reaches global
// memory. Each warp owns 8 rows of the tile and each lane one column of a 32-wide score tile,
// so the softmax reductions are warp shuffles and only __syncwarp separates a warp's phases.
//   forward: O = softmax(scale Q K^T) V online (FA2, Dao 2023, alg. 1), L = m + log(l) per row.
//   backward: D = rowsum(dO * O) (both dtypes); dK, dV by the block that owns the key tile,
//   looping over the query tiles below it; dQ by the block that owns the query tile, in a
//   second kernel that recomputes P and dP: deterministic, no atomics, at the cost of computing
//   S and dP twice.
// Shared-memory tiles that a lane reads by row (lane = row) are padded to HD + 1 floats, so
// the 32 lanes hit 32 different banks; tiles read by broadcast or by column are not.
#include "core/ops/attention_cuda.h"

#include <cmath>
#include <initializer_list>
#include <string>
#include <type_traits>

#include "core/cuda_common.cuh"
#include "core/ops/attention_cuda.cuh"
#include "core/ops/attention_cudnn.h"

namespace tessera::ops::cuda {
namespace {

using ::tessera::cuda::alignment_of;
using ::tessera::cuda::allow_smem;
using ::tessera::cuda::as_bf16;
using ::tessera::cuda::blocks_for;
using ::tessera::cuda::dev;
using ::tessera::cuda::device_t;
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
      dk_row[d] = from_f32<T>(to_f32(dk_row[d]) + scale * dk[i][j]);
      dv_row[d] = from_f32<T>(to_f32(dv_row[d]) + dv[i][j]);
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
      dq_row[d] = from_f32<T>(to_f32(dq_row[d]) + scale * dq[i][j]);
    }
  }
}

// Grid: x = tiles along T, y = batch * head (at most 65535).
dim3 grid_of(const char* op, int64_t B, int64_t S, int64_t H) {
  TESSERA_CHECK(B * H <= 65535 && S <= (int64_t{1} << 30),
                std::string(op) + ": batch * heads = " + std::to_string(B * H) +
                    " and T = " + std::to_string(S) +
                    " exceed the CUDA kernel's grid (batch * heads <= 65535, T <= 2^30)");
  return dim3(blocks_for(S, kTile), static_cast<unsigned>(B * H));
}

// Whether cuDNN runs this call: chosen, T > 1 (its backward refuses a single query and key, and
// forward and backward go together), every operand 16-byte aligned.
bool cudnn_takes(AttentionKernels kernels, int64_t S, std::initializer_list<const void*> operands) {
  if (kernels != AttentionKernels::Cudnn || S < 2) return false;
  for (const void* p : operands)
    if (alignment_of(p) < 16) return false;
  return true;
}

template <int HD, typename T>
void launch_forward(T* out, float* lse, const T* qkv, int64_t B, int64_t S, int64_t H,
                    AttentionKernels kernels) {
  const dim3 grid = grid_of("attention_forward", B, S, H);
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    // The tensor-core kernels copy qkv and dout in 16-byte chunks (cp.async) and store out and
    // dqkv as bf16 pairs, and cuDNN moves 16-byte vectors throughout; less aligned operands
    // (views into a buffer) take the CUDA-core kernels, which read and write element by element.
    // So does T = 1, which cuDNN's backward refuses (cudnn_takes).
    if (cudnn_takes(kernels, S, {qkv, out, lse})) {
      attention_forward_cudnn(as_bf16(out), lse, as_bf16(qkv), B, S, H, HD);
      return;
    }
    if (kernels == AttentionKernels::TensorCores && alignment_of(qkv) >= 16 &&
        alignment_of(out) >= 4) {
      attention_forward_bf16<HD>(out, lse, qkv, B, S, H, attention_scale(HD));
      return;
    }
  }
  constexpr size_t smem = forward_smem_bytes<HD>();
  allow_smem<attention_forward_kernel<HD, T>>(static_cast<int>(smem));
  attention_forward_kernel<HD, T><<<grid, kThreads, smem, ::tessera::cuda::compute_stream()>>>(
      out, lse, qkv, static_cast<int>(S), static_cast<int>(H), attention_scale(HD));
  CHECK_LAUNCH();
}

template <int HD, typename T>
void launch_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse,
                     int64_t B, int64_t S, int64_t H, AttentionKernels kernels) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (cudnn_takes(kernels, S, {qkv, dout, out, lse, dqkv})) {
      attention_backward_cudnn(as_bf16(dqkv), as_bf16(dout), as_bf16(qkv), as_bf16(out), lse, B, S,
                               H, HD);
      return;
    }
  }
  const dim3 grid = grid_of("attention_backward", B, S, H);
  cudaStream_t stream = ::tessera::cuda::compute_stream();
  // The kernels below add their sums into dqkv; the op writes it.
  CHECK_CUDA(cudaMemsetAsync(dqkv, 0, static_cast<size_t>(B * S * 3 * H * HD) * sizeof(T), stream));
  const int Si = static_cast<int>(S), Hi = static_cast<int>(H);
  const int64_t rows = B * S * H;
  // rowsum(dout * out) per row (FA2's D), written whole by the first kernel.
  const ::tessera::cuda::StreamScratch delta_scratch(static_cast<size_t>(rows) * sizeof(float));
  float* delta = delta_scratch.as<float>();
  attention_delta_kernel<HD, T>
      <<<blocks_for(rows, kWarps), kThreads, 0, stream>>>(delta, dout, out, rows, Si, Hi);
  CHECK_LAUNCH();
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (kernels == AttentionKernels::TensorCores && alignment_of(qkv) >= 16 &&
        alignment_of(dout) >= 16 && alignment_of(dqkv) >= 4) {
      attention_backward_bf16<HD>(dqkv, dout, qkv, lse, delta, B, S, H, attention_scale(HD));
      return;
    }
  }
  constexpr size_t dkdv_smem = backward_dkdv_smem_bytes<HD>();
  allow_smem<attention_backward_dkdv_kernel<HD, T>>(static_cast<int>(dkdv_smem));
  attention_backward_dkdv_kernel<HD, T><<<grid, kThreads, dkdv_smem, stream>>>(
      dqkv, qkv, dout, lse, delta, Si, Hi, attention_scale(HD));
  CHECK_LAUNCH();
  constexpr size_t dq_smem = backward_dq_smem_bytes<HD>();
  allow_smem<attention_backward_dq_kernel<HD, T>>(static_cast<int>(dq_smem));
  attention_backward_dq_kernel<HD, T><<<grid, kThreads, dq_smem, stream>>>(
      dqkv, qkv, dout, lse, delta, Si, Hi, attention_scale(HD));
  CHECK_LAUNCH();
}

[[noreturn]] void refuse_head_dim(const char* op, int64_t hd) {
  fail_internal(__FILE__, __LINE__,
                std::string(op) + ": no CUDA kernel for head_dim " + std::to_string(hd) +
                    " (the flash attention kernels take head_dim " + kAttentionHeadDims + ")");
}

}  // namespace

template <typename T>
void attention_forward(T* out, float* lse, const T* qkv, int64_t B, int64_t S, int64_t H,
                       int64_t hd, AttentionKernels kernels) {
  if (B * S * H == 0) return;
  switch (hd) {
    case 64:
      launch_forward<64>(dev(out), lse, dev(qkv), B, S, H, kernels);
      break;
    case 128:
      launch_forward<128>(dev(out), lse, dev(qkv), B, S, H, kernels);
      break;
    default:
      refuse_head_dim("attention_forward", hd);
  }
}

template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse,
                        int64_t B, int64_t S, int64_t H, int64_t hd, AttentionKernels kernels) {
  if (B * S * H == 0) return;
  switch (hd) {
    case 64:
      launch_backward<64>(dev(dqkv), dev(dout), dev(qkv), dev(out), lse, B, S, H, kernels);
      break;
    case 128:
      launch_backward<128>(dev(dqkv), dev(dout), dev(qkv), dev(out), lse, B, S, H, kernels);
      break;
    default:
      refuse_head_dim("attention_backward", hd);
  }
}

template void attention_forward<float>(float*, float*, const float*, int64_t, int64_t, int64_t,
                                       int64_t, AttentionKernels);
template void attention_forward<bf16>(bf16*, float*, const bf16*, int64_t, int64_t, int64_t,
                                      int64_t, AttentionKernels);
template void attention_backward<float>(float*, const float*, const float*, const float*,
                                        const float*, int64_t, int64_t, int64_t, int64_t,
                                        AttentionKernels);
template void attention_backward<bf16>(bf16*, const bf16*, const bf16*, const bf16*, const float*,
                                       int64_t, int64_t, int64_t, int64_t, AttentionKernels);

}  // namespace tessera::ops::cuda
