// The tensor-core flash attention kernels for bf16 (FlashAttention-2's scheme), as device code
// without launchers: core/ops/attention_bf16_cuda.cu launches them on the GPU, and
// tests/test_attention_emulated.cpp runs the same code on the CPU, one thread per CUDA thread.
// Include core/ops/tensor_core.cuh (or its emulation, tests/simt_emulation.h) first.
// float32 keeps the CUDA-core kernels of attention_cuda.cu, exact to the fp32 reference.
//
// Every product is mma.sync m16n8k16, bf16 inputs with fp32
// accumulation; the softmax statistics, P and dS stay in fp32 registers and are rounded to bf16
// only as inputs of the next product, as in FlashAttention-2 (Dao 2023).
//
// Layout of the work: a thread block is 4 warps and each warp owns 16 rows of the block's tile
// (queries in the forward and dQ kernels, keys in the dK/dV kernel). Tiles sit in shared memory
// as bf16 rows of HD + 8 elements: the 16-byte pad puts the 8 rows of a fragment load in 8
// different groups of banks. The mma operand layouts (PTX ISA, "Matrix Fragments for
// mma.m16n8k16"), for lane = 4 g + t:
//   A (16 x 16, row-major): a0 = (g, 2t..2t+1), a1 = (g + 8, 2t..), a2 = (g, 8 + 2t..),
//                           a3 = (g + 8, 8 + 2t..)
//   B (16 x 8, k x n):      b0 = (k 2t..2t+1, n g), b1 = (k 8 + 2t.., n g)
//   C (16 x 8, fp32):       c0, c1 = (g, 2t..2t+1), c2, c3 = (g + 8, 2t..)
// so a product's C fragments for two neighbouring 8-column tiles are, packed to bf16, exactly
// the A fragment of the next product over those 16 columns: P and dS never leave registers.
// B operands stored as B^T (K for Q K^T: a key per row) are two 32-bit loads; those stored as B
// (V for P V: a key per row, n along the row) come transposed from ldmatrix.trans.
//
//   forward: 64 query rows per block, 64-key tiles up to the diagonal; the next key tile and
//     the current value tile are copied with cp.async while the other product runs.
//   backward, dK and dV: 64 keys per block, looping over 32-query tiles from the diagonal down
//     (double-buffered: the next tile is copied while the block computes on this one):
//     S^T = K Q^T, dP^T = V dO^T, P^T = exp(scale S^T - L), dS^T = P^T (dP^T - D),
//     dV += P^T dO, dK += scale dS^T Q.
//   backward, dQ: 64 queries per block, looping over double-buffered 32-key tiles up to the
//     diagonal: S and dP again, dQ += scale dS K. Recomputing S and dP costs 2 of the
//     backward's 7 products, and buys a result without atomics: the same bits on every run.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/cuda_device.cuh"
#include "core/ops/attention_cuda.cuh"

namespace tessera::ops::cuda::attention_bf16 {
// Internal linkage, as the kernels had in their .cu files: each translation unit, a .cu file or
// the CPU emulation's test, has its own copy.
namespace {

using bf16x1 = __nv_bfloat16;

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kWarpRows = 16;                   // rows of a block's tile per warp (one mma M)
constexpr int kBlockRows = kWarps * kWarpRows;  // 64: queries (forward, dQ) or keys (dK, dV)
constexpr int kForwardKeys = 64;                // keys per tile in the forward
constexpr int kBackwardCols = 32;               // queries (dK/dV) or keys (dQ) per inner tile
constexpr int kPad = 8;                         // bf16 beyond HD per shared-memory row
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// --- tensor-core building blocks -------------------------------------------------------------

__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  mma_m16n8k16_bf16(d, a, b0, b1);
}

// Two floats as one bf16x2 register, the first in the low half (the lower column).
__device__ __forceinline__ uint32_t pack(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t r;
  std::memcpy(&r, &v, sizeof r);
  return r;
}

template <int LD>
__device__ __forceinline__ uint32_t lds32(const bf16x1* tile, int row, int col) {
  return *reinterpret_cast<const uint32_t*>(tile + row * LD + col);
}

// A fragment of rows r0..r0+15, columns c0..c0+15 of a row-major tile.
template <int LD>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16x1* tile, int r0, int c0, int g,
                                       int t) {
  a[0] = lds32<LD>(tile, r0 + g, c0 + 2 * t);
  a[1] = lds32<LD>(tile, r0 + g + 8, c0 + 2 * t);
  a[2] = lds32<LD>(tile, r0 + g, c0 + 8 + 2 * t);
  a[3] = lds32<LD>(tile, r0 + g + 8, c0 + 8 + 2 * t);
}

// B fragment (k = c0..c0+15, n = n0..n0+7) of a tile that holds B^T: row n, column k.
template <int LD>
__device__ __forceinline__ void load_b_t(uint32_t& b0, uint32_t& b1, const bf16x1* tile, int n0,
                                         int c0, int g, int t) {
  b0 = lds32<LD>(tile, n0 + g, c0 + 2 * t);
  b1 = lds32<LD>(tile, n0 + g, c0 + 8 + 2 * t);
}

// B fragments (k = k0..k0+15; n = n0..n0+7 in b[0], b[1] and n0+8..n0+15 in b[2], b[3]) of a
// tile that holds B: row k, column n. ldmatrix.trans: lanes 8i..8i+7 address the rows of 8 x 8
// matrix i, which is (k0 + 8 (i % 2), n0 + 8 (i / 2)).
template <int LD>
__device__ __forceinline__ void load_b_pair(uint32_t (&b)[4], const bf16x1* tile, int k0, int n0,
                                            int lane) {
  const int row = k0 + (lane & 7) + ((lane >> 3) & 1) * 8, col = n0 + (lane >> 4) * 8;
  ldmatrix_x4_trans(b, tile + row * LD + col);
}

// The A fragment over columns 16 kk..16 kk+15 made of two C fragments (columns 2 kk and 2 kk + 1
// of 8 each): a finished product fed to the next one.
__device__ __forceinline__ void c_to_a(uint32_t (&a)[4], const float (&lo)[4],
                                       const float (&hi)[4]) {
  a[0] = pack(lo[0], lo[1]);
  a[1] = pack(lo[2], lo[3]);
  a[2] = pack(hi[0], hi[1]);
  a[3] = pack(hi[2], hi[3]);
}

// acc[HD / 8][4] += c @ b_tile: c is a product this warp has just made (its C fragments, K
// columns), fed as the A operand of the next product, against the K rows of a tile that holds B
// (row k, n along HD). P V in the forward; P^T dO, dS^T Q and dS K in the backward.
template <int HD, int LD, int K>
__device__ __forceinline__ void accumulate_product(float (&acc)[HD / 8][4],
                                                   const float (&c)[K / 8][4], const bf16x1* b_tile,
                                                   int lane) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    uint32_t a[4];
    c_to_a(a, c[2 * kk], c[2 * kk + 1]);
#pragma unroll
    for (int n = 0; n < HD / 16; ++n) {
      uint32_t b[4];
      load_b_pair<LD>(b, b_tile, 16 * kk, 16 * n, lane);
      mma(acc[2 * n], a, b[0], b[1]);
      mma(acc[2 * n + 1], a, b[2], b[3]);
    }
  }
}

// The two products of a backward tile, for this warp's 16 rows (starting at w0) of the block's
// tiles a1 and a2 against the kCols rows of bt1 and bt2 (B^T), all row-major with HD columns:
// s = a1 bt1^T and dp = a2 bt2^T (S and dP in the dQ kernel; S^T and dP^T in the dK/dV kernel).
template <int HD, int LD, int kCols>
__device__ __forceinline__ void two_products(float (&s)[kCols / 8][4], float (&dp)[kCols / 8][4],
                                             const bf16x1* a1, const bf16x1* a2, const bf16x1* bt1,
                                             const bf16x1* bt2, int w0, int g, int t) {
#pragma unroll
  for (int kk = 0; kk < HD / 16; ++kk) {
    uint32_t x1[4], x2[4];
    load_a<LD>(x1, a1, w0, 16 * kk, g, t);
    load_a<LD>(x2, a2, w0, 16 * kk, g, t);
#pragma unroll
    for (int n = 0; n < kCols / 8; ++n) {
      uint32_t f0, f1;
      load_b_t<LD>(f0, f1, bt1, 8 * n, 16 * kk, g, t);
      mma(s[n], x1, f0, f1);
      load_b_t<LD>(f0, f1, bt2, 8 * n, 16 * kk, g, t);
      mma(dp[n], x2, f0, f1);
    }
  }
}

// --- copies ----------------------------------------------------------------------------------

// Rows [row0, row0 + ROWS) of HD bf16 (global row stride `stride` elements) into a shared tile
// of row stride HD + kPad, 16 bytes per cp.async; rows at or past S are zero-filled.
template <int HD, int ROWS>
__device__ __forceinline__ void copy_tile(bf16x1* dst, const bf16x1* src, int64_t stride, int row0,
                                          int S) {
  constexpr int kChunks = HD / 8;  // 16-byte chunks per row
  for (int i = static_cast<int>(threadIdx.x); i < ROWS * kChunks; i += kThreads) {
    const int r = i / kChunks, c = (i % kChunks) * 8;
    const bool valid = row0 + r < S;
    const bf16x1* from = src + (valid ? int64_t{row0 + r} * stride + c : 0);
    cp_async_16(dst + r * (HD + kPad) + c, from, valid);
  }
  cp_async_commit();
}

__device__ __forceinline__ void wait_copies() {
  cp_async_wait_all();
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// dst[0..1] = (x, y) * scale, in bf16 storage.
__device__ __forceinline__ void store_pair(bf16x1* dst, float x, float y, float scale) {
  *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(scale * x, scale * y);
}

// --- forward ---------------------------------------------------------------------------------

template <int HD>
constexpr int forward_smem_bytes() {
  return static_cast<int>(sizeof(bf16x1)) * (HD + kPad) * (kBlockRows + 2 * kForwardKeys);
}

template <int HD>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(bf16x1* out, float* lse, const bf16x1* qkv, int S, int H, float scale) {
  constexpr int LD = HD + kPad;
  static_assert(kBlockRows == kForwardKeys, "the diagonal tile is the block's own rows");
  unsigned char* smem = ::tessera::cuda::dynamic_shared_memory<unsigned char>();
  bf16x1* q_s = reinterpret_cast<bf16x1*>(smem);  // [kBlockRows][LD]
  bf16x1* k_s = q_s + kBlockRows * LD;            // [kForwardKeys][LD]
  bf16x1* v_s = k_s + kForwardKeys * LD;          // [kForwardKeys][LD]

  const AttentionHead head = head_of_block<HD>(S, H);
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  const int g = lane / 4, t = lane % 4, w0 = warp * kWarpRows;
  const int q0 = longest_first_tile() * kBlockRows;
  const bf16x1* q = qkv + head.qkv;
  copy_tile<HD, kBlockRows>(q_s, q, head.qkv_row, q0, S);
  copy_tile<HD, kForwardKeys>(k_s, q + head.C, head.qkv_row, 0, S);

  const float scale2 = scale * kLog2e;  // scores in log2 units: exp2 instead of exp
  uint32_t qf[HD / 16][4];
  float o[HD / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // rows g and g + 8
  const int row[2] = {q0 + w0 + g, q0 + w0 + g + 8};

  for (int k0 = 0; k0 <= q0; k0 += kForwardKeys) {
    wait_copies();
    __syncthreads();  // K (and Q) are in; every warp is done with the previous V
    copy_tile<HD, kForwardKeys>(v_s, q + 2 * head.C, head.qkv_row, k0, S);
    if (k0 == 0) {
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) load_a<LD>(qf[kk], q_s, w0, 16 * kk, g, t);
    }

    float s[kForwardKeys / 8][4] = {};
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
#pragma unroll
      for (int n = 0; n < kForwardKeys / 8; ++n) {
        uint32_t b0, b1;
        load_b_t<LD>(b0, b1, k_s, 8 * n, 16 * kk, g, t);
        mma(s[n], qf[kk], b0, b1);
      }
    }

    // Online softmax. Off the diagonal every key is visible; on it, key <= row (which also
    // hides keys at or past S from every row below S). Key k0 is visible to every row, so the
    // running max is finite after the first tile and no exp2 sees inf - inf.
    const bool diagonal = k0 == q0;
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < kForwardKeys / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = k0 + 8 * n + 2 * t + (e & 1);
        const bool visible = !diagonal || key <= row[e / 2];
        s[n][e] = visible ? s[n][e] * scale2 : -INFINITY;
        tile_max[e / 2] = fmaxf(tile_max[e / 2], s[n][e]);
      }
    }
    float alpha[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const float m_new = fmaxf(m[i], quad_max(tile_max[i]));
      alpha[i] = exp2f(m[i] - m_new);  // 0 on the first tile
      m[i] = m_new;
      l[i] *= alpha[i];  // this lane's share of the row sum; the quad adds them at the end
    }
#pragma unroll
    for (int n = 0; n < kForwardKeys / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[n][e] = exp2f(s[n][e] - m[e / 2]);
        l[e / 2] += s[n][e];
      }
    }
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) {
      o[n][0] *= alpha[0], o[n][1] *= alpha[0];
      o[n][2] *= alpha[1], o[n][3] *= alpha[1];
    }

    wait_copies();
    __syncthreads();  // V is in; every warp is done with K
    if (k0 + kForwardKeys <= q0)
      copy_tile<HD, kForwardKeys>(k_s, q + head.C, head.qkv_row, k0 + kForwardKeys, S);
    accumulate_product<HD, LD, kForwardKeys>(o, s, v_s, lane);
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float sum = quad_sum(l[i]);
    if (row[i] >= S) continue;
    const float inv = 1.0f / sum;
    bf16x1* o_row = out + head.out + int64_t{row[i]} * head.C;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) {
      *reinterpret_cast<__nv_bfloat162*>(o_row + 8 * n + 2 * t) =
          __floats2bfloat162_rn(o[n][2 * i] * inv, o[n][2 * i + 1] * inv);
    }
    if (t == 0) lse[head.stats + row[i]] = (m[i] + log2f(sum)) * kLn2;
  }
}

// --- backward: dK and dV ---------------------------------------------------------------------

// The query (dK/dV) or key (dQ) tiles of the inner loop are double-buffered: the next one is
// copied while the block computes on the current one.
template <int HD>
constexpr int dkdv_smem_bytes() {
  return static_cast<int>(sizeof(bf16x1)) * (HD + kPad) * (2 * kBlockRows + 4 * kBackwardCols) +
         static_cast<int>(sizeof(float)) * 4 * kBackwardCols;
}

template <int HD>
__global__ void __launch_bounds__(kThreads)
    backward_dkdv_kernel(bf16x1* dqkv, const bf16x1* qkv, const bf16x1* dout, const float* lse,
                         const float* delta, int S, int H, float scale) {
  constexpr int LD = HD + kPad, kCols = kBackwardCols;
  unsigned char* smem = ::tessera::cuda::dynamic_shared_memory<unsigned char>();
  bf16x1* k_s = reinterpret_cast<bf16x1*>(smem);                       // [kBlockRows][LD]
  bf16x1* v_s = k_s + kBlockRows * LD;                                 // [kBlockRows][LD]
  bf16x1* q_buf = v_s + kBlockRows * LD;                               // [2][kCols][LD]
  bf16x1* do_buf = q_buf + 2 * kCols * LD;                             // [2][kCols][LD]
  float* lse_buf = reinterpret_cast<float*>(do_buf + 2 * kCols * LD);  // [2][kCols], log2 units
  float* delta_buf = lse_buf + 2 * kCols;                              // [2][kCols]

  const AttentionHead head = head_of_block<HD>(S, H);
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  const int g = lane / 4, t = lane % 4, w0 = warp * kWarpRows;
  const int k0 = static_cast<int>(blockIdx.x) * kBlockRows;  // the first key tiles see most
  const bf16x1* q = qkv + head.qkv;
  copy_tile<HD, kBlockRows>(k_s, q + head.C, head.qkv_row, k0, S);
  copy_tile<HD, kBlockRows>(v_s, q + 2 * head.C, head.qkv_row, k0, S);
  // Query tile c0 into buffer b: q and dO rows (cp.async), L and D (plain loads).
  const auto fetch = [&](int c0, int b) {
    copy_tile<HD, kCols>(q_buf + b * kCols * LD, q, head.qkv_row, c0, S);
    copy_tile<HD, kCols>(do_buf + b * kCols * LD, dout + head.out, head.C, c0, S);
    if (threadIdx.x < kCols) {
      const int c = c0 + static_cast<int>(threadIdx.x);
      lse_buf[b * kCols + threadIdx.x] = c < S ? lse[head.stats + c] * kLog2e : 0.0f;
      delta_buf[b * kCols + threadIdx.x] = c < S ? delta[head.stats + c] : 0.0f;
    }
  };
  fetch(k0, 0);

  const float scale2 = scale * kLog2e;
  const int key[2] = {k0 + w0 + g, k0 + w0 + g + 8};
  float dk[HD / 8][4] = {}, dv[HD / 8][4] = {};
  for (int c0 = k0, b = 0; c0 < S; c0 += kCols, b ^= 1) {
    wait_copies();
    __syncthreads();  // tile c0 is in buffer b; every warp is done with buffer b ^ 1
    if (c0 + kCols < S) fetch(c0 + kCols, b ^ 1);
    const bf16x1* q_s = q_buf + b * kCols * LD;
    const bf16x1* do_s = do_buf + b * kCols * LD;
    const float* lse_s = lse_buf + b * kCols;
    const float* delta_s = delta_buf + b * kCols;

    float p[kCols / 8][4] = {}, ds[kCols / 8][4] = {};  // S^T, then P^T; dP^T, then dS^T
    two_products<HD, LD, kCols>(p, ds, k_s, v_s, q_s, do_s, w0, g, t);
#pragma unroll
    for (int n = 0; n < kCols / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = 8 * n + 2 * t + (e & 1), query = c0 + j;
        const bool visible = key[e / 2] <= query && query < S;
        p[n][e] = visible ? exp2f(p[n][e] * scale2 - lse_s[j]) : 0.0f;
        ds[n][e] = p[n][e] * (ds[n][e] - delta_s[j]);
      }
    }
    accumulate_product<HD, LD, kCols>(dv, p, do_s, lane);
    accumulate_product<HD, LD, kCols>(dk, ds, q_s, lane);
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (key[i] >= S) continue;
    bf16x1* dk_row = dqkv + head.qkv + int64_t{key[i]} * head.qkv_row + head.C;
    bf16x1* dv_row = dk_row + head.C;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) {
      store_pair(dk_row + 8 * n + 2 * t, dk[n][2 * i], dk[n][2 * i + 1], scale);
      store_pair(dv_row + 8 * n + 2 * t, dv[n][2 * i], dv[n][2 * i + 1], 1.0f);
    }
  }
}

// --- backward: dQ ----------------------------------------------------------------------------

template <int HD>
constexpr int dq_smem_bytes() {
  return static_cast<int>(sizeof(bf16x1)) * (HD + kPad) * (2 * kBlockRows + 4 * kBackwardCols);
}

template <int HD>
__global__ void __launch_bounds__(kThreads)
    backward_dq_kernel(bf16x1* dqkv, const bf16x1* qkv, const bf16x1* dout, const float* lse,
                       const float* delta, int S, int H, float scale) {
  constexpr int LD = HD + kPad, kCols = kBackwardCols;
  unsigned char* smem = ::tessera::cuda::dynamic_shared_memory<unsigned char>();
  bf16x1* q_s = reinterpret_cast<bf16x1*>(smem);  // [kBlockRows][LD]
  bf16x1* do_s = q_s + kBlockRows * LD;           // [kBlockRows][LD]
  bf16x1* k_buf = do_s + kBlockRows * LD;         // [2][kCols][LD]
  bf16x1* v_buf = k_buf + 2 * kCols * LD;         // [2][kCols][LD]

  const AttentionHead head = head_of_block<HD>(S, H);
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  const int g = lane / 4, t = lane % 4, w0 = warp * kWarpRows;
  const int q0 = longest_first_tile() * kBlockRows;
  const bf16x1* q = qkv + head.qkv;
  copy_tile<HD, kBlockRows>(q_s, q, head.qkv_row, q0, S);
  copy_tile<HD, kBlockRows>(do_s, dout + head.out, head.C, q0, S);

  const float scale2 = scale * kLog2e;
  const int row[2] = {q0 + w0 + g, q0 + w0 + g + 8};
  float row_lse[2], row_delta[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    row_lse[i] = row[i] < S ? lse[head.stats + row[i]] * kLog2e : 0.0f;
    row_delta[i] = row[i] < S ? delta[head.stats + row[i]] : 0.0f;
  }

  // Key tile c0 into buffer b; the block's key tiles end at its last row, or at S.
  const auto fetch = [&](int c0, int b) {
    copy_tile<HD, kCols>(k_buf + b * kCols * LD, q + head.C, head.qkv_row, c0, S);
    copy_tile<HD, kCols>(v_buf + b * kCols * LD, q + 2 * head.C, head.qkv_row, c0, S);
  };
  const int c_end = q0 + kBlockRows < S ? q0 + kBlockRows : S;
  fetch(0, 0);

  float dq[HD / 8][4] = {};
  for (int c0 = 0, b = 0; c0 < c_end; c0 += kCols, b ^= 1) {
    wait_copies();
    __syncthreads();  // tile c0 is in buffer b; every warp is done with buffer b ^ 1
    if (c0 + kCols < c_end) fetch(c0 + kCols, b ^ 1);
    const bf16x1* k_s = k_buf + b * kCols * LD;
    const bf16x1* v_s = v_buf + b * kCols * LD;

    float p[kCols / 8][4] = {}, ds[kCols / 8][4] = {};  // S, then P; dP, then dS
    two_products<HD, LD, kCols>(p, ds, q_s, do_s, k_s, v_s, w0, g, t);
#pragma unroll
    for (int n = 0; n < kCols / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = c0 + 8 * n + 2 * t + (e & 1);
        const bool visible = key <= row[e / 2] && row[e / 2] < S;
        p[n][e] = visible ? exp2f(p[n][e] * scale2 - row_lse[e / 2]) : 0.0f;
        ds[n][e] = p[n][e] * (ds[n][e] - row_delta[e / 2]);
      }
    }
    accumulate_product<HD, LD, kCols>(dq, ds, k_s, lane);
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (row[i] >= S) continue;
    bf16x1* dq_row = dqkv + head.qkv + int64_t{row[i]} * head.qkv_row;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n)
      store_pair(dq_row + 8 * n + 2 * t, dq[n][2 * i], dq[n][2 * i + 1], scale);
  }
}

}  // namespace
}  // namespace tessera::ops::cuda::attention_bf16
