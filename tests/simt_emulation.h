// Runs CUDA kernel source on the CPU, so that kernels are tested where there is no GPU: one
// std::thread per CUDA thread of a block (blocks one after another, in any block shape up to 1024
// threads), __syncthreads as a barrier of the block, __syncwarp and per warp __shfl_xor_sync and
// the instructions of core/ops/tensor_core.cuh (mma m16n8k16, ldmatrix.trans, cp.async) computed
// from the PTX ISA's fragment layouts; cp.async lands its bytes only at the wait. `__shared__`
// arrays are static, so every thread of the running block sees the same ones, and
// dynamic_shared_memory() is one buffer. Include it first, before the kernels' headers, instead
// of core/ops/tensor_core.cuh; it defines TESSERA_SIMT_EMULATION, under which the headers leave
// out their host launchers.
//
// The threads of a block run one at a time, each until it reaches a barrier (of its block, or of
// its warp in a warp-wide instruction), and then the next runnable thread runs: the lowest index
// or the highest, as `simt::schedule` says, which also runs the blocks first to last or last to
// first. Both are executions a GPU may choose, since it orders threads only at barriers and
// blocks not at all; so a kernel whose results differ between the two lets two threads (or two
// blocks) touch the same memory between barriers, at least one of them writing: a race, such as
// a missing __syncthreads before a shared tile is overwritten. What it cannot show: a thread
// runs uninterrupted between barriers, so a non-atomic read-modify-write that two threads do to
// one address (a lost update on a GPU) adds up correctly here in either order.
//
// Runs are deterministic. A deadlock (threads waiting at different barriers), a warp-wide
// instruction that lanes which have exited should take part in, a kernel that writes dynamic
// shared memory past what its launch asked for, a cp.async or ldmatrix address that is not
// 16-byte aligned, and a cp.async never waited for each stop the process with a message. The
// asked-for dynamic shared memory starts each launch filled with 0xff bytes (NaN as float), so
// a kernel that reads what it never wrote shows it; static __shared__ arrays start at zero and
// keep their values from block to block, as nothing on a GPU clears them either.
#pragma once

#define TESSERA_SIMT_EMULATION 1

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <semaphore>
#include <thread>
#include <vector>

#include "tests/ptx_fragments.h"

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
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define threadIdx ::simt::thread_idx
#define blockIdx ::simt::block_idx
#define blockDim ::simt::block_dim
#define gridDim ::simt::grid_dim

namespace simt {

constexpr int kWarp = 32, kMaxThreads = 1024;

inline thread_local uint3 thread_idx, block_idx;
inline thread_local int linear_idx;  // x + bx (y + by z): warps are 32 consecutive of these
inline dim3 grid_dim, block_dim;

// Which runnable thread of a block runs next.
enum class Schedule { LowestFirst, HighestFirst };
inline Schedule schedule = Schedule::LowestFirst;

// Runs one block's threads one at a time (see the top of this file). Each thread waits on its
// own semaphore for its turn; the running one picks its successor when it reaches a barrier or
// ends. Its state is touched under the mutex only.
class Scheduler {
 public:
  // Before a launch's n threads start, for `blocks` blocks run one after another by the same
  // threads; then go() lets the first thread of the first block run.
  void start(int n, int64_t blocks) {
    blocks_left_ = blocks;
    state_.assign(n, State::Runnable);
    turn_.clear();
    for (int t = 0; t < n; ++t) turn_.push_back(std::make_unique<std::binary_semaphore>(0));
  }
  void go() { release(next()); }
  void wait_turn(int me) { turn_[me]->acquire(); }

  void block_barrier(int me) { arrive(me, State::AtBlockBarrier); }
  void warp_barrier(int me) { arrive(me, State::AtWarpBarrier); }
  // `me` is done with this block. When every thread is, the next block starts.
  void finish(int me) {
    int successor;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      state_[me] = State::Done;
      release_barriers(me);
      successor = next();
      if (successor < 0 && --blocks_left_ > 0) {
        state_.assign(state_.size(), State::Runnable);
        successor = next();
      }
    }
    release(successor);
  }

 private:
  enum class State { Runnable, AtBlockBarrier, AtWarpBarrier, Done };

  void arrive(int me, State at) {
    int successor;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (at == State::AtWarpBarrier) require_whole_warp(me);
      state_[me] = at;
      release_barriers(me);
      successor = next();
    }
    if (successor == me) return;
    release(successor);
    turn_[me]->acquire();
  }

  int threads() const { return static_cast<int>(state_.size()); }

  // Every warp-wide instruction of tessera's kernels names all 32 lanes (mask 0xffffffff): a
  // lane that has returned cannot take part, which is undefined on a GPU.
  void require_whole_warp(int me) const {
    const int first = me / kWarp * kWarp, last = std::min(first + kWarp, threads());
    for (int t = first; t < last; ++t) {
      if (state_[t] == State::Done) {
        std::fprintf(stderr,
                     "simt emulation: thread %d of block (%u, %u) is in a warp-wide instruction "
                     "that lane %d, which has returned, cannot take part in\n",
                     me, block_idx.x, block_idx.y, t % kWarp);
        std::abort();
      }
    }
  }

  // Opens the block barrier when every thread not done waits at it, and `me`'s warp barrier
  // when every lane of the warp not done waits at that.
  void release_barriers(int me) {
    bool all_at_block = true, any_at_block = false;
    for (State s : state_) {
      all_at_block &= s == State::AtBlockBarrier || s == State::Done;
      any_at_block |= s == State::AtBlockBarrier;
    }
    if (all_at_block && any_at_block)
      for (State& s : state_)
        if (s == State::AtBlockBarrier) s = State::Runnable;
    const int first = me / kWarp * kWarp, last = std::min(first + kWarp, threads());
    bool all_at_warp = true, any_at_warp = false;
    for (int t = first; t < last; ++t) {
      all_at_warp &= state_[t] == State::AtWarpBarrier || state_[t] == State::Done;
      any_at_warp |= state_[t] == State::AtWarpBarrier;
    }
    if (all_at_warp && any_at_warp)
      for (int t = first; t < last; ++t)
        if (state_[t] == State::AtWarpBarrier) state_[t] = State::Runnable;
  }

  // The runnable thread to run next, or -1 when every thread is done.
  int next() const {
    bool all_done = true;
    for (int i = 0; i < threads(); ++i) {
      const int t = schedule == Schedule::LowestFirst ? i : threads() - 1 - i;
      if (state_[t] == State::Runnable) return t;
      all_done &= state_[t] == State::Done;
    }
    if (all_done) return -1;
    std::fprintf(stderr,
                 "simt emulation: deadlock in block (%u, %u): no thread can run, some wait at a "
                 "barrier that others never reach (a barrier in divergent code?)\n",
                 block_idx.x, block_idx.y);
    std::abort();
  }

  void release(int t) {
    if (t >= 0) turn_[t]->release();
  }

  std::mutex mutex_;
  int64_t blocks_left_ = 0;
  std::vector<State> state_;
  std::vector<std::unique_ptr<std::binary_semaphore>> turn_;
};
inline Scheduler scheduler;

// What the lanes of one warp exchange in a warp-wide instruction.
struct Warp {
  double value[kWarp];
  uint32_t a[kWarp][4], b[kWarp][2];
  const void* row[kWarp];
};
inline Warp warps[kMaxThreads / kWarp];

// The block's dynamic shared memory (`extern __shared__` on the GPU): the launch's bytes, then
// 0xff bytes up to the end, which the launch checks are untouched when its blocks are done.
constexpr size_t kDynamicSmemBytes = 228 * 1024;
alignas(16) inline unsigned char dynamic_smem[kDynamicSmemBytes];

inline void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "simt emulation: %s\n", what);
  std::abort();
}

inline int lane() {
  return linear_idx % kWarp;
}
inline Warp& warp() {
  return warps[linear_idx / kWarp];
}
// Every lane of this thread's warp has reached this point.
inline void warp_sync() {
  scheduler.warp_barrier(linear_idx);
}

inline float bf16_bits_to_float(uint32_t bits16) {
  const uint32_t f = bits16 << 16;
  float r;
  std::memcpy(&r, &f, sizeof r);
  return r;
}

}  // namespace simt

inline void __syncthreads() {
  simt::scheduler.block_barrier(simt::linear_idx);
}

inline void __syncwarp(unsigned /*mask: all lanes take part*/ = 0xffffffffu) {
  simt::warp_sync();
}

// float, double or int: each is exact in the double the lanes exchange.
template <typename T>
T __shfl_xor_sync(unsigned /*mask: all lanes take part*/, T x, int lane_mask) {
  simt::Warp& w = simt::warp();
  w.value[simt::lane()] = static_cast<double>(x);
  simt::warp_sync();
  const T r = static_cast<T>(w.value[simt::lane() ^ lane_mask]);
  simt::warp_sync();
  return r;
}

// Threads run one at a time, so a plain read-modify-write is atomic.
inline int atomicMax(int* address, int value) {
  const int old = *address;
  if (value > old) *address = value;
  return old;
}

// The round-to-nearest intrinsics: each is one IEEE operation on the host too (the test builds
// with -ffp-contract=off, so none is fused with its neighbour).
inline float __fadd_rn(float a, float b) {
  return a + b;
}
inline float __fsub_rn(float a, float b) {
  return a - b;
}
inline float __fmul_rn(float a, float b) {
  return a * b;
}
inline float __fdiv_rn(float a, float b) {
  return a / b;
}
inline float __fsqrt_rn(float a) {
  return std::sqrt(a);
}

namespace tessera::cuda {
template <typename T>
T* dynamic_shared_memory() {
  return reinterpret_cast<T*>(simt::dynamic_smem);
}
}  // namespace tessera::cuda

namespace tessera::ops::cuda {

// The warp's fragments gathered into whole matrices by the layouts of tests/ptx_fragments.h.
inline void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  simt::Warp& w = simt::warp();
  const int me = simt::lane();
  for (int i = 0; i < 4; ++i) w.a[me][i] = a[i];
  w.b[me][0] = b0;
  w.b[me][1] = b1;
  simt::warp_sync();
  float A[16][16], B[16][8];
  for (int l = 0; l < simt::kWarp; ++l) {
    for (int r = 0; r < 4; ++r) {
      for (int h = 0; h < 2; ++h) {
        const ptx::Element e = ptx::a_element(l, r, h);
        A[e.row][e.col] = simt::bf16_bits_to_float((w.a[l][r] >> (16 * h)) & 0xffffu);
      }
    }
    for (int r = 0; r < 2; ++r) {
      for (int h = 0; h < 2; ++h) {
        const ptx::Element e = ptx::b_element(l, r, h);
        B[e.row][e.col] = simt::bf16_bits_to_float((w.b[l][r] >> (16 * h)) & 0xffffu);
      }
    }
  }
  simt::warp_sync();
  for (int i = 0; i < 4; ++i) {
    const ptx::Element e = ptx::c_element(me, i);
    float sum = 0;
    for (int k = 0; k < 16; ++k) sum += A[e.row][k] * B[k][e.col];
    d[i] += sum;
  }
}

// Each lane gives the address of a row; each receives its elements by tests/ptx_fragments.h.
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* shared_row) {
  simt::require(reinterpret_cast<uintptr_t>(shared_row) % 16 == 0,
                "ldmatrix: a row address that is not 16-byte aligned");
  simt::Warp& w = simt::warp();
  const int me = simt::lane();
  w.row[me] = shared_row;
  simt::warp_sync();
  for (int m = 0; m < 4; ++m) {
    r[m] = 0;
    for (int h = 0; h < 2; ++h) {
      const ptx::RowElement e = ptx::ldmatrix_trans_element(me, m, h);
      uint16_t v;
      std::memcpy(&v, static_cast<const uint16_t*>(w.row[e.address_lane]) + e.col, sizeof v);
      r[m] |= static_cast<uint32_t>(v) << (16 * h);
    }
  }
  simt::warp_sync();
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
  simt::require(reinterpret_cast<uintptr_t>(shared_dst) % 16 == 0 &&
                    (!valid || reinterpret_cast<uintptr_t>(global_src) % 16 == 0),
                "cp.async: an address that is not 16-byte aligned");
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

// kernel<<<grid, block, smem_bytes>>>(args...): the blocks in order (x fastest; last to first
// under Schedule::HighestFirst), each with its threads run one at a time by `scheduler`.
template <typename... Params, typename... Args>
void launch_with_smem(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes,
                      Args... args) {
  const int n = static_cast<int>(block.x * block.y * block.z);
  require(n >= 1 && n <= kMaxThreads, "a block of 1 to 1024 threads");
  require(smem_bytes <= kDynamicSmemBytes, "more dynamic shared memory than an H100 has");
  grid_dim = grid;
  block_dim = block;
  std::memset(dynamic_smem, 0xff, sizeof dynamic_smem);
  const int64_t blocks = int64_t{grid.x} * grid.y * grid.z;
  if (blocks == 0) return;
  const bool reversed = schedule == Schedule::HighestFirst;
  scheduler.start(n, blocks);
  // Each thread runs its part of every block, in order; the scheduler starts a block when the
  // last thread has finished the one before.
  std::vector<std::thread> threads;
  for (int t = 0; t < n; ++t) {
    threads.emplace_back([=] {
      linear_idx = t;
      thread_idx = uint3{t % block.x, t / block.x % block.y, t / (block.x * block.y)};
      for (int64_t i = 0; i < blocks; ++i) {
        scheduler.wait_turn(t);
        const int64_t b = reversed ? blocks - 1 - i : i;
        block_idx =
            uint3{static_cast<unsigned>(b % grid.x), static_cast<unsigned>(b / grid.x % grid.y),
                  static_cast<unsigned>(b / (int64_t{grid.x} * grid.y))};
        kernel(args...);
        require(::tessera::ops::cuda::pending_copies.empty(),
                "a cp.async that the block never waited for");
        scheduler.finish(t);
      }
    });
  }
  scheduler.go();
  for (std::thread& th : threads) th.join();
  for (size_t k = smem_bytes; k < kDynamicSmemBytes; ++k)
    require(dynamic_smem[k] == 0xff, "dynamic shared memory written past the launch's bytes");
}

// kernel<<<grid, block>>>(args...), no dynamic shared memory.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args... args) {
  launch_with_smem(kernel, grid, block, 0, args...);
}

}  // namespace simt
