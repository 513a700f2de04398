// The GPU tests: device memory and copies here; every CUDA op against its CPU twin in
// tests/gpu_*_test.cpp; the NCCL communicator on one GPU in tests/gpu_nccl_test.cpp. Exits 77
// (skipped) with a clear message where there is no GPU or no CUDA backend.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "core/device.h"
#include "core/tensor.h"
#include "tests/bitwise.h"

namespace tessera {
namespace {

TEST(Gpu, DeviceTensorAllocatesZeroed) {
  Tensor t({1024, 1024}, DType::F32, Device::CUDA);
  EXPECT_EQ(t.device(), Device::CUDA);
  EXPECT_NE(t.raw(), nullptr);
  const Tensor back = t.to(Device::CPU);
  for (int64_t i = 0; i < back.numel(); i += 4099) EXPECT_EQ(back.data<float>()[i], 0.0f);
}

TEST(Gpu, HostToDeviceToHostRoundTripsEveryDtype) {
  for (DType dtype : {DType::F32, DType::F64, DType::BF16, DType::I32, DType::U16}) {
    Tensor host({257, 3}, dtype);
    auto* bytes = static_cast<unsigned char*>(host.raw());
    for (size_t i = 0; i < host.bytes(); ++i) bytes[i] = static_cast<unsigned char>(i * 31 + 7);
    const Tensor device = host.to(Device::CUDA);
    Tensor copy(host.shape(), dtype, Device::CUDA);
    copy_into(copy, device);  // device to device
    const Tensor back = copy.to(Device::CPU);
    EXPECT_TRUE(test_support::bitwise_equal(back, host)) << dtype_name(dtype);
  }
}

TEST(Gpu, ZeroClearsADeviceTensor) {
  Tensor host({1000}, DType::F32);
  host.fill(3.0);
  Tensor device = host.to(Device::CUDA);
  device.slice0(10, 20).zero();
  const Tensor back = device.to(Device::CPU);
  for (int64_t i = 0; i < 1000; ++i)
    EXPECT_EQ(back.data<float>()[i], i >= 10 && i < 20 ? 0.0f : 3.0f) << i;
}

TEST(Gpu, PeakDeviceMemoryCountsLiveBuffers) {
  reset_device_peak();
  const size_t before = device_bytes_in_use();
  {
    Tensor a({64 << 20}, DType::U16, Device::CUDA);  // 128 MiB
    EXPECT_GE(device_bytes_in_use(), before + (size_t{128} << 20));
  }
  EXPECT_EQ(device_bytes_in_use(), before);
  EXPECT_GE(device_peak_bytes(), before + (size_t{128} << 20));
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  // Listing needs no GPU: scripts/gpu_check.sh's filters can be checked anywhere.
  const bool listing = argc > 1 && std::string(argv[1]) == "--gtest_list_tests";
  if (!listing && tessera::cuda_device_count() == 0) {
    std::printf("SKIP: no GPU (%s)\n", tessera::cuda_summary().c_str());
    return 77;
  }
  std::printf("%s\n", tessera::cuda_summary().c_str());
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
