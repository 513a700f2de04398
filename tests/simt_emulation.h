// Runs CUDA kernel source on the CPU, so that the tensor-core kernels' index arithmetic is tested
// where there is no GPU: one std::thread per CUDA thread of a block (blocks one after another),
// __syncthreads as a barrier of the block, and per warp __shfl_xor_sync and the instructions of
// core/ops/tensor_core.cuh (mma m16n8k16, ldmatrix.trans, cp.async) computed from the PTX ISA's
// fragment layouts; cp.async lands its bytes only at the wait. Slow (a barrier per warp
// instruction) and only for blocks of kThreads threads. Include it instead of core/ops/tensor_core.cuh, before the kernels.
#pragma once

#include <cuda_bf16.h>

#include <barrier>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

// The CUDA headers give these host meanings; here they mean nothing, or their host twins.
// (The test compiles with -Wno-unknown-pragmas for the kernels' #pragma unroll.)
#undef __global__
#undef __device__
#undef __forceinline__
#undef __launch_bounds__
#undef __shared__
#undef __align__
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n) __attribute__((aligned(n)))
#define threadIdx ::simt::thread_idx
#define blockIdx ::simt::block_idx
#define gridDim ::simt::grid_dim

namespace simt {

constexpr int kThreads = 128, kWarp = 32, kWarps = kThreads / kWarp;

inline thread_local uint3 thread_idx, block_idx;
inline dim3 grid_dim;

// What the lanes of one warp exchange in a warp-wide instruction.
struct Warp {
  std::barrier<> bar{kWarp};
  float value[kWarp];
  uint32_t a[kWarp][4], b[kWarp][2];
  const void* row[kWarp];
};
inline Warp warps[kWarps];
inline std::barrier<> block_barrier{kThreads};

inline int lane() {
  return static_cast<int>(thread_idx.x) % kWarp;
}
inline Warp& warp() {
  return warps[thread_idx.x / kWarp];
}

inline float bf16_bits_to_float(uint32_t bits16) {
  const uint32_t f = bits16 << 16;
  float r;
  std::memcpy(&r, &f, sizeof r);
  return r;
}

}  // namespace simt

inline void __syncthreads() {
  simt::block_barrier.arrive_and_wait();
}

inline float __shfl_xor_sync(unsigned /*mask: all lanes take part*/, float x, int lane_mask) {
  simt::Warp& w = simt::warp();
  w.value[simt::lane()] = x;
  w.bar.arrive_and_wait();
  const float r = w.value[simt::lane() ^ lane_mask];
  w.bar.arrive_and_wait();
  return r;
}

namespace tessera::ops::cuda {

// The PTX ISA's fragments for lane = 4 g + t: A rows g / g + 8, columns 2t.. / 8 + 2t..;
// B rows (k) 2t.. / 8 + 2t.., column g; C rows g / g + 8, columns 2t, 2t + 1.
inline void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  simt::Warp& w = simt::warp();
  const int me = simt::lane();
  for (int i = 0; i < 4; ++i) w.a[me][i] = a[i];
  w.b[me][0] = b0;
  w.b[me][1] = b1;
  w.bar.arrive_and_wait();
  float A[16][16], B[16][8];
  for (int l = 0; l < simt::kWarp; ++l) {
    const int g = l / 4, t = l % 4;
    const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 8 + 2 * t, 8 + 2 * t};
    for (int i = 0; i < 4; ++i) {
      A[rows[i]][cols[i]] = simt::bf16_bits_to_float(w.a[l][i] & 0xffffu);
      A[rows[i]][cols[i] + 1] = simt::bf16_bits_to_float(w.a[l][i] >> 16);
    }
    for (int i = 0; i < 2; ++i) {
      B[8 * i + 2 * t][g] = simt::bf16_bits_to_float(w.b[l][i] & 0xffffu);
      B[8 * i + 2 * t + 1][g] = simt::bf16_bits_to_float(w.b[l][i] >> 16);
    }
  }
  w.bar.arrive_and_wait();
  const int g = me / 4, t = me % 4;
  for (int e = 0; e < 4; ++e) {
    const int row = g + (e / 2) * 8, col = 2 * t + (e % 2);
    float sum = 0;
    for (int k = 0; k < 16; ++k) sum += A[row][k] * B[k][col];
    d[e] += sum;
  }
}

// Lane 8 i + j addresses row j of 8 x 8 matrix i; lane 4 g + t receives elements (2t, g) and
// (2t + 1, g) of each matrix, in the low and high halves.
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* shared_row) {
  simt::Warp& w = simt::warp();
  const int me = simt::lane();
  w.row[me] = shared_row;
  w.bar.arrive_and_wait();
  const int g = me / 4, t = me % 4;
  for (int i = 0; i < 4; ++i) {
    uint16_t lo, hi;
    std::memcpy(&lo, static_cast<const uint16_t*>(w.row[8 * i + 2 * t]) + g, sizeof lo);
    std::memcpy(&hi, static_cast<const uint16_t*>(w.row[8 * i + 2 * t + 1]) + g, sizeof hi);
    r[i] = lo | (static_cast<uint32_t>(hi) << 16);
  }
  w.bar.arrive_and_wait();
}

// As on the GPU, the copied bytes are not there until cp_async_wait_all(): each thread queues
// its copies and lands them when it waits, so a kernel that reads a tile before waiting for it
// reads stale bytes here too.
struct PendingCopy {
  void* dst;
  unsigned char bytes[16];
};
inline thread_local std::vector<PendingCopy> pending_copies;

inline void cp_async_16(void* shared_dst, const void* global_src, bool valid) {
  PendingCopy c{shared_dst, {}};
  if (valid) std::memcpy(c.bytes, global_src, 16);
  pending_copies.push_back(c);
}
inline void cp_async_commit() {}
inline void cp_async_wait_all() {
  for (const PendingCopy& c : pending_copies) std::memcpy(c.dst, c.bytes, 16);
  pending_copies.clear();
}

}  // namespace tessera::ops::cuda

namespace simt {

// kernel<<<grid, kThreads>>>(args...): the blocks in order, each with kThreads std::threads.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, Args... args) {
  grid_dim = grid;
  for (unsigned y = 0; y < grid.y; ++y) {
    for (unsigned x = 0; x < grid.x; ++x) {
      std::vector<std::thread> threads;
      for (unsigned t = 0; t < kThreads; ++t) {
        threads.emplace_back([=] {
          thread_idx = uint3{t, 0, 0};
          block_idx = uint3{x, y, 0};
          kernel(args...);
        });
      }
      for (std::thread& th : threads) th.join();
    }
  }
}

}  // namespace simt
