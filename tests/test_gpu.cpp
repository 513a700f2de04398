// GPU smoke test: device discovery and a device allocation. Exits 77 (skipped) with a clear
// message where no GPU or no CUDA backend is present; the CUDA op-vs-CPU-twin suites join it
// with the GPU backend.
#include <gtest/gtest.h>

#include <cstdio>

#include "core/device.h"
#include "core/tensor.h"

namespace tessera {
namespace {

TEST(Gpu, DeviceTensorAllocates) {
  Tensor t({1024, 1024}, DType::F32, Device::CUDA);
  EXPECT_EQ(t.device(), Device::CUDA);
  EXPECT_NE(t.raw(), nullptr);
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  if (tessera::cuda_device_count() == 0) {
    std::printf("SKIP: no GPU (%s)\n", tessera::cuda_summary().c_str());
    return 77;
  }
  std::printf("%s\n", tessera::cuda_summary().c_str());
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
