// The CPU emulation of CUDA threads itself (tests/simt_emulation.h), on small kernels of its own:
// that it finds a race between threads and between blocks, that a barrier orders what it should,
// that every thread and block sees its own indices, and that each kind of misuse it promises to
// stop at (a deadlock, a warp-wide instruction missing a lane that returned, dynamic shared
// memory written past the launch's bytes, a cp.async never waited for or misaligned) stops the
// process with its message. The kernel tests rest on these.
#include "tests/simt_emulation.h"
// After the emulation, as in the kernel tests.
#include "core/cuda_device.cuh"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

namespace tessera {
namespace {

using simt::Schedule;

constexpr int kThreads = 64;

// Runs `run` with the threads (and blocks) in both orders: {highest first, lowest first}.
template <typename Run>
std::pair<std::vector<float>, std::vector<float>> both_orders(Run&& run) {
  simt::schedule = Schedule::HighestFirst;
  std::vector<float> high = run();
  simt::schedule = Schedule::LowestFirst;
  std::vector<float> low = run();
  return {high, low};
}

// Thread t reads its neighbour's shared slot, with or without a barrier after the writes.
template <bool kBarrier>
__global__ void neighbour_kernel(float* out, int round) {
  __shared__ float slot[kThreads];
  const int t = static_cast<int>(threadIdx.x);
  slot[t] = static_cast<float>(round * 1000 + t);
  if (kBarrier) __syncthreads();
  out[t] = slot[t ^ 1];
}

// Each run writes values of its own round, so that a read of the previous run's slot shows.
std::vector<float> run_neighbours(void (*kernel)(float*, int), int round) {
  std::vector<float> out(kThreads);
  simt::launch(kernel, 1, kThreads, out.data(), round);
  return out;
}

TEST(SimtEmulation, AMissingBarrierGivesDifferentBitsInTheTwoOrders) {
  const auto [high, low] = both_orders([] { return run_neighbours(neighbour_kernel<false>, 1); });
  EXPECT_NE(high, low);
}

TEST(SimtEmulation, ABarrierOrdersTheWritesBeforeTheReads) {
  int round = 0;
  const auto [high, low] =
      both_orders([&] { return run_neighbours(neighbour_kernel<true>, ++round); });
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(high[t], static_cast<float>(1000 + (t ^ 1))) << t;
    EXPECT_EQ(low[t], static_cast<float>(2000 + (t ^ 1))) << t;
  }
}

// Every thread of a 2-D grid of 2-D blocks writes where its indices say.
__global__ void indices_kernel(float* out) {
  const int64_t x = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t y = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y;
  const int64_t width = static_cast<int64_t>(gridDim.x) * blockDim.x;
  out[y * width + x] = static_cast<float>(y * 1000 + x);
}

TEST(SimtEmulation, EveryThreadAndBlockSeesItsOwnIndices) {
  const dim3 grid(3, 2), block(32, 2);
  const int width = 3 * 32, height = 2 * 2;
  const auto [high, low] = both_orders([&] {
    std::vector<float> out(width * height, -1.0f);
    simt::launch(indices_kernel, grid, block, out.data());
    return out;
  });
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      EXPECT_EQ(high[y * width + x], static_cast<float>(y * 1000 + x)) << x << ", " << y;
      EXPECT_EQ(low[y * width + x], static_cast<float>(y * 1000 + x)) << x << ", " << y;
    }
}

// Every block writes the same element: which one lands depends on the order of the blocks.
__global__ void last_block_wins_kernel(float* out) {
  if (threadIdx.x == 0) out[0] = static_cast<float>(blockIdx.x);
}

TEST(SimtEmulation, ARaceBetweenBlocksGivesDifferentBitsInTheTwoOrders) {
  const auto [high, low] = both_orders([] {
    std::vector<float> out(1);
    simt::launch(last_block_wins_kernel, 4, 32, out.data());
    return out;
  });
  EXPECT_NE(high, low);
}

TEST(SimtEmulation, AWarpSumGivesEveryLaneTheSameTotal) {
  const auto [high, low] = both_orders([] {
    std::vector<float> out(kThreads);
    simt::launch(
        +[](float* o) {
          o[threadIdx.x] = tessera::cuda::warp_sum(static_cast<float>(threadIdx.x % 32));
        },
        1, kThreads, out.data());
    return out;
  });
  EXPECT_EQ(high, std::vector<float>(kThreads, 496.0f));
  EXPECT_EQ(low, high);
}

// ---------------------------------------------------------------------------------------------
// What stops the process

class SimtEmulationDeath : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

// Half a warp waits at the block's barrier, the other half in a shuffle that needs the first.
__global__ void deadlock_kernel(float* out) {
  if (threadIdx.x < 16)
    __syncthreads();
  else
    out[threadIdx.x] = tessera::cuda::warp_sum(1.0f);
}

TEST_F(SimtEmulationDeath, ADeadlockStopsTheProcess) {
  std::vector<float> out(32);
  EXPECT_DEATH(simt::launch(deadlock_kernel, 1, 32, out.data()), "deadlock");
}

__global__ void early_return_kernel(float* out) {
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = tessera::cuda::warp_sum(1.0f);
}

TEST_F(SimtEmulationDeath, AWarpInstructionMissingALaneThatReturnedStopsTheProcess) {
  std::vector<float> out(32);
  EXPECT_DEATH(simt::launch(early_return_kernel, 1, 32, out.data()), "has returned");
}

__global__ void smem_overrun_kernel(int floats) {
  if (threadIdx.x == 0) tessera::cuda::dynamic_shared_memory<float>()[floats] = 1.0f;
}

TEST_F(SimtEmulationDeath, DynamicSharedMemoryWrittenPastTheLaunchsBytesStopsTheProcess) {
  simt::launch_with_smem(smem_overrun_kernel, 1, 32, 64, 15);  // within the 64 bytes: fine
  EXPECT_DEATH(simt::launch_with_smem(smem_overrun_kernel, 1, 32, 64, 16),
               "past the launch's bytes");
}

__global__ void unwaited_copy_kernel(const unsigned char* src) {
  unsigned char* dst = tessera::cuda::dynamic_shared_memory<unsigned char>();
  if (threadIdx.x == 0) tessera::ops::cuda::cp_async_16(dst, src, true);
}

__global__ void misaligned_copy_kernel(const unsigned char* src) {
  unsigned char* dst = tessera::cuda::dynamic_shared_memory<unsigned char>();
  if (threadIdx.x == 0) tessera::ops::cuda::cp_async_16(dst + 8, src, true);
  tessera::ops::cuda::cp_async_wait_all();
}

TEST_F(SimtEmulationDeath, ACopyNeverWaitedForOrMisalignedStopsTheProcess) {
  alignas(16) unsigned char src[32] = {};
  EXPECT_DEATH(simt::launch_with_smem(unwaited_copy_kernel, 1, 32, 32,
                                      static_cast<const unsigned char*>(src)),
               "never waited for");
  EXPECT_DEATH(simt::launch_with_smem(misaligned_copy_kernel, 1, 32, 32,
                                      static_cast<const unsigned char*>(src)),
               "not 16-byte aligned");
}

}  // namespace
}  // namespace tessera
