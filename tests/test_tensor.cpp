// Tensors and dtypes on the host: bf16 rounding (the host twin of the GPU's conversion), copies
// across dtypes, and Tensor::to on the host. The device side of to() is in tests/test_gpu.cpp.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"

namespace tessera {
namespace {

TEST(Bf16, ValuesWithEightSignificantBitsAreExact) {
  for (float x : {0.0f, -0.0f, 1.0f, -2.5f, 0.15625f, 65280.0f, 1e-30f * 0.0f})
    EXPECT_EQ(std::bit_cast<uint32_t>(to_float(to_bf16(x))), std::bit_cast<uint32_t>(x)) << x;
}

TEST(Bf16, RoundsToNearestAndTiesToEven) {
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: the tie goes to the even mantissa (1).
  EXPECT_EQ(to_float(to_bf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
  EXPECT_EQ(to_float(to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))), 1.0f + std::ldexp(1.0f, -6));
  // Just above the halfway point rounds up.
  EXPECT_EQ(to_float(to_bf16(
                std::bit_cast<float>(std::bit_cast<uint32_t>(1.0f + std::ldexp(1.0f, -8)) + 1))),
            1.0f + std::ldexp(1.0f, -7));
  // The largest finite floats round to infinity, as __float2bfloat16 does.
  EXPECT_TRUE(std::isinf(to_float(to_bf16(std::numeric_limits<float>::max()))));
}

TEST(Bf16, NanStaysNanAndInfinityStaysInfinity) {
  EXPECT_TRUE(std::isnan(to_float(to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  // A NaN whose payload lies only in the low 16 bits must not become infinity.
  EXPECT_TRUE(std::isnan(to_float(to_bf16(std::bit_cast<float>(0x7F800001u)))));
  EXPECT_EQ(to_float(to_bf16(-std::numeric_limits<float>::infinity())),
            -std::numeric_limits<float>::infinity());
}

TEST(Bf16, RelativeErrorIsAtMostHalfAnUlpOfEightBits) {
  for (float x = -1000.0f; x < 1000.0f; x += 0.37f) {
    if (x == 0) continue;
    EXPECT_LE(std::abs(to_float(to_bf16(x)) - x), std::abs(x) * std::ldexp(1.0f, -8)) << x;
  }
}

// MFU's denominator: the data sheets' dense figures, by the names CUDA reports; the more
// specific H100, H800 and H200 variants before the SXM parts, whose names say only "H100".
TEST(GpuPeak, DenseDataSheetFiguresByTheNameCudaReports) {
  EXPECT_EQ(gpu_peak_flops("NVIDIA H100 80GB HBM3", DType::BF16), 989e12);
  EXPECT_EQ(gpu_peak_flops("NVIDIA H100 80GB HBM3", DType::F32), 67e12);
  EXPECT_EQ(gpu_peak_flops("NVIDIA H100 PCIe", DType::BF16), 756e12);
  EXPECT_EQ(gpu_peak_flops("NVIDIA H100 NVL", DType::BF16), 835e12);
  EXPECT_EQ(gpu_peak_flops("NVIDIA H200", DType::BF16), 989e12);
  EXPECT_EQ(gpu_peak_flops("NVIDIA H200 NVL", DType::BF16), 835e12);  // not the SXM part's 989
  EXPECT_EQ(gpu_peak_flops("NVIDIA H800 PCIe", DType::BF16), 756e12);
  EXPECT_EQ(gpu_peak_flops("NVIDIA GH200 480GB", DType::BF16), 989e12);
  EXPECT_EQ(gpu_peak_flops("NVIDIA A100-SXM4-80GB", DType::BF16), 312e12);
  EXPECT_EQ(gpu_peak_flops("NVIDIA A100 80GB PCIe", DType::F32), 19.5e12);
  EXPECT_EQ(gpu_peak_flops("NVIDIA GeForce RTX 4090", DType::BF16), 0);  // not in the table
  EXPECT_EQ(gpu_peak_flops("", DType::BF16), 0);                         // no GPU
  EXPECT_EQ(gpu_peak_flops("NVIDIA H100 80GB HBM3", DType::F64), 0);     // no such compute type
}

TEST(Tensor, ToOnTheHostIsADeepCopy) {
  Tensor a({2, 3}, DType::F32);
  for (int i = 0; i < 6; ++i) a.data<float>()[i] = static_cast<float>(i) + 0.5f;
  Tensor b = a.to(Device::CPU);
  a.data<float>()[0] = 100;
  EXPECT_EQ(b.shape(), a.shape());
  EXPECT_EQ(b.data<float>()[0], 0.5f);
  EXPECT_EQ(b.data<float>()[5], 5.5f);
}

TEST(Tensor, Bf16TensorsHoldRawBits) {
  Tensor t({3}, DType::BF16);
  EXPECT_EQ(t.bytes(), 6u);
  t.data<bf16>()[1] = to_bf16(3.0f);
  EXPECT_EQ(to_float(t.clone().data<bf16>()[1]), 3.0f);
  EXPECT_THROW(t.data<float>(), std::exception);
}

// A shape whose element count or byte size passes 2^63 is refused, not wrapped to a small buffer
// under a large shape; so is a view with a negative dimension. Copies of an empty tensor are empty.
TEST(Tensor, ShapesBeyondTwoToTheSixtyThreeAndNegativeViewsAreRefused) {
  EXPECT_THROW(Tensor({int64_t{1} << 32, int64_t{1} << 32}, DType::F32), InternalError);
  EXPECT_THROW(Tensor({int64_t{1} << 62}, DType::F32), InternalError);  // 2^64 bytes
  EXPECT_THROW(shape_numel({-1, 3}), InternalError);
  Tensor six({6}, DType::F32);
  EXPECT_THROW(six.view({-2, -3}), InternalError);
  EXPECT_EQ(six.view({2, 3}).shape(), (Shape{2, 3}));
  EXPECT_FALSE(Tensor().clone().defined());
  EXPECT_FALSE(Tensor().to(Device::CPU).defined());
}

}  // namespace
}  // namespace tessera
