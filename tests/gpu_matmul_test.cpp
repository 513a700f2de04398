// The CUDA linear layer (cuBLASLt), fused linear + GELU, GELU, residual, cast and accumulate
// against their CPU twins on random inputs: every output and every gradient, in F32 and BF16.
// Gradients start non-zero, so that the backward passes' += of weight and bias gradients, and
// their = of input gradients, are checked with them. BF16 inputs are rounded through bf16 before
// the CPU sees them, so both sides start from the same values and only the GPU's arithmetic and
// output rounding are measured. Shapes include sizes that are not multiples of 8 and operands
// that start one element into a buffer (aligned to the element only).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/ops/cast.h"
#include "core/ops/gelu.h"
#include "core/ops/matmul.h"
#include "tests/bitwise.h"
#include "tests/expect_error.h"
#include "tests/gpu_support.h"

namespace tessera {
namespace {

using test_support::bitwise_equal;
using test_support::expect_internal_error;

using gpu_test::DgeluEpilogue;
using gpu_test::expect_close;
using gpu_test::misaligned_copy;
using gpu_test::random_host;
using gpu_test::round_to_bf16;
using gpu_test::to_gpu;
using gpu_test::to_host_f32;

constexpr DType F32 = DType::F32;
constexpr DType BF16 = DType::BF16;
constexpr Device CUDA = Device::CUDA;

// Every tolerance below bounds each element by tol * (rms(expected) + |expected|): relative to
// the tensor's scale, since an element that sums to near zero carries the rounding of terms of
// the tensor's size.
//
// F32: the GPU is strict fp32 (CUBLAS_COMPUTE_32F, no TF32) and differs from OpenBLAS only in the
// order of its sums. With operands scaled so that outputs are O(1) (weights ~ N(0, 1/K)), that is
// ~1e-6 of the scale at K = 1024. 1e-4 leaves a wide margin and still catches TF32, whose 10-bit
// mantissa errs by ~5e-4 of the scale, let alone a wrong index, transpose or bias.
constexpr double kF32Tol = 1e-4;
// BF16: both sides start from the same bf16 values, so the GPU's error is its output rounding to
// bf16 (2^-9 ~ 2e-3 relative) on top of fp32 sums; 2e-2 of the scale is ten times that, while a
// wrong element is off by O(1) of the scale.
constexpr double kBf16Tol = 2e-2;

double tolerance(DType dtype) {
  return dtype == F32 ? kF32Tol : kBf16Tol;
}

double rms(const Tensor& host_f32) {
  double s = 0;
  for (int64_t i = 0; i < host_f32.numel(); ++i) s += std::pow(host_f32.data<float>()[i], 2);
  return host_f32.numel() > 0 ? std::sqrt(s / static_cast<double>(host_f32.numel())) : 0.0;
}

// The GPU tensor `actual` against the host F32 tensor `expected` at the dtype's tolerance.
void expect_matches(const Tensor& actual, const Tensor& expected, const std::string& what) {
  const double tol = tolerance(actual.dtype());
  expect_close(to_host_f32(actual), expected, tol * rms(expected), tol,
               what + " in " + dtype_name(actual.dtype()));
}

// The same bytes in `a` and `b` (on the GPU or the host). The sizes are asserted first, so that a
// shape mismatch says so instead of reading as differing values.
void expect_bitwise_equal(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.bytes(), b.bytes()) << what;
  EXPECT_TRUE(bitwise_equal(a, b)) << what;
}

// Random values that `dtype` holds exactly: as the CPU twin's F32 input on the host, and as
// `dtype` on the GPU (optionally misaligned).
struct Operand {
  Tensor host;
  Tensor gpu;
};

Operand random_operand(const Shape& shape, uint64_t seed, DType dtype, double stddev = 1.0,
                       bool misaligned = false) {
  Tensor host = random_host(shape, seed, stddev);
  if (dtype == BF16) host = round_to_bf16(host);
  Tensor gpu = to_gpu(host, dtype);
  return {host, misaligned ? misaligned_copy(gpu) : gpu};
}

Shape with_last(Shape s, int64_t last) {
  s.back() = last;
  return s;
}

std::string linear_case(const Shape& inp, int64_t N, bool with_bias, bool misaligned) {
  return "inp " + shape_str(inp) + ", N " + std::to_string(N) +
         (with_bias ? ", bias" : ", no bias") + (misaligned ? ", misaligned" : "");
}

// One linear layer forward and backward on the GPU in `dtype` against the CPU in F32.
void check_linear(DType dtype, const Shape& inp_shape, int64_t N, bool with_bias,
                  bool misaligned = false) {
  const int64_t K = inp_shape.back();
  const Shape out_shape = with_last(inp_shape, N);
  const std::string what = linear_case(inp_shape, N, with_bias, misaligned);
  SCOPED_TRACE(what);
  const uint64_t seed = static_cast<uint64_t>(K * 1000003 + N * 101 + with_bias);
  const double w_std = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(K, 1)));
  const Operand inp = random_operand(inp_shape, seed, dtype, 1.0, misaligned);
  const Operand weight = random_operand({N, K}, seed + 1, dtype, w_std, misaligned);
  const Operand bias = random_operand({N}, seed + 2, dtype, 1.0, misaligned);
  const Operand dout = random_operand(out_shape, seed + 3, dtype, 1.0, misaligned);
  Operand dinp = random_operand(inp_shape, seed + 4, dtype, 1.0, misaligned);
  Operand dweight = random_operand({N, K}, seed + 5, dtype, 1.0, misaligned);
  Operand dbias = random_operand({N}, seed + 6, dtype, 1.0, misaligned);

  Tensor out_ref(out_shape, F32), out(out_shape, dtype, CUDA);
  if (misaligned) out = misaligned_copy(out);
  ops::matmul_forward(out_ref, inp.host, weight.host, with_bias ? &bias.host : nullptr);
  ops::matmul_forward(out, inp.gpu, weight.gpu, with_bias ? &bias.gpu : nullptr);
  expect_matches(out, out_ref, "matmul_forward out");

  ops::matmul_backward(&dinp.host, &dweight.host, &dbias.host, dout.host, inp.host, weight.host);
  ops::matmul_backward(&dinp.gpu, &dweight.gpu, &dbias.gpu, dout.gpu, inp.gpu, weight.gpu);
  expect_matches(dinp.gpu, dinp.host, "matmul_backward dinp");
  expect_matches(dweight.gpu, dweight.host, "matmul_backward dweight");
  expect_matches(dbias.gpu, dbias.host, "matmul_backward dbias");
}

// ---------------------------------------------------------------------------------------------
// matmul

TEST(MatmulCuda, ForwardAndBackwardMatchCpuInF32) {
  for (const bool with_bias : {true, false}) {
    check_linear(F32, {4, 32, 256}, 384, with_bias);
    check_linear(F32, {2, 16, 1024}, 96, with_bias);
  }
}

TEST(MatmulCuda, ForwardAndBackwardMatchCpuInBf16) {
  for (const bool with_bias : {true, false}) {
    check_linear(BF16, {4, 32, 256}, 384, with_bias);
    check_linear(BF16, {2, 16, 1024}, 96, with_bias);
  }
}

TEST(MatmulCuda, MatchesCpuForSizesThatAreNotMultiplesOf8) {
  for (const DType dtype : {F32, BF16}) {
    for (const bool with_bias : {true, false}) {
      check_linear(dtype, {37, 53}, 29, with_bias);
      check_linear(dtype, {3, 5, 19}, 11, with_bias);
      check_linear(dtype, {1, 7}, 1, with_bias);
    }
  }
}

// The plan cache keys on operand alignment: a plan chosen for 256-byte aligned buffers must not
// serve buffers aligned to their element only.
TEST(MatmulCuda, MatchesCpuForOperandsAlignedOnlyToTheirElement) {
  for (const DType dtype : {F32, BF16}) {
    check_linear(dtype, {4, 32, 256}, 384, true);  // aligned first: its plan is cached
    check_linear(dtype, {4, 32, 256}, 384, true, /*misaligned=*/true);
    check_linear(dtype, {37, 53}, 29, false, /*misaligned=*/true);
  }
}

TEST(MatmulCuda, Float32IsStrictFp32NotTf32) {
  // 1 + 2^-20 needs 21 mantissa bits; TF32 keeps 10, so it would see 1. Every partial sum of
  // sixteen of them is exact in fp32.
  const float x = 1.0f + std::ldexp(1.0f, -20);
  Tensor inp({4, 16}, F32), weight({8, 16}, F32);
  std::fill(inp.data<float>(), inp.data<float>() + inp.numel(), x);
  std::fill(weight.data<float>(), weight.data<float>() + weight.numel(), 1.0f);
  Tensor out({4, 8}, F32, CUDA);
  ops::matmul_forward(out, inp.to(CUDA), weight.to(CUDA), nullptr);
  const Tensor host = out.to(Device::CPU);
  for (int64_t i = 0; i < host.numel(); ++i) ASSERT_EQ(host.data<float>()[i], 16.0f * x) << i;
}

TEST(MatmulCuda, BackwardComputesAnyOneGradientAloneLikeCpu) {
  for (const DType dtype : {F32, BF16}) {
    const Operand inp = random_operand({24, 40}, 11, dtype);
    const Operand weight = random_operand({24, 40}, 12, dtype, 1.0 / std::sqrt(40.0));
    const Operand dout = random_operand({24, 24}, 13, dtype);
    Operand dinp = random_operand({24, 40}, 14, dtype);
    Operand dweight = random_operand({24, 40}, 15, dtype);
    Operand dbias = random_operand({24}, 16, dtype);
    for (Operand* g : {&dinp, &dweight, &dbias}) {
      Tensor* host[3] = {g == &dinp ? &dinp.host : nullptr, g == &dweight ? &dweight.host : nullptr,
                         g == &dbias ? &dbias.host : nullptr};
      Tensor* gpu[3] = {g == &dinp ? &dinp.gpu : nullptr, g == &dweight ? &dweight.gpu : nullptr,
                        g == &dbias ? &dbias.gpu : nullptr};
      ops::matmul_backward(host[0], host[1], host[2], dout.host, inp.host, weight.host);
      ops::matmul_backward(gpu[0], gpu[1], gpu[2], dout.gpu, inp.gpu, weight.gpu);
    }
    expect_matches(dinp.gpu, dinp.host, "dinp alone");
    expect_matches(dweight.gpu, dweight.host, "dweight alone");
    expect_matches(dbias.gpu, dbias.host, "dbias alone");
  }
}

TEST(MatmulCuda, RepeatedCallsGiveIdenticalBits) {
  for (const DType dtype : {F32, BF16}) {
    const Operand inp = random_operand({64, 96}, 21, dtype);
    const Operand weight = random_operand({80, 96}, 22, dtype, 0.1);
    const Operand bias = random_operand({80}, 23, dtype);
    const Operand dout = random_operand({64, 80}, 24, dtype);
    const Operand grad0 = random_operand({80}, 25, dtype);
    Tensor first({64, 80}, dtype, CUDA), second({64, 80}, dtype, CUDA);
    ops::matmul_forward(first, inp.gpu, weight.gpu, &bias.gpu);
    ops::matmul_forward(second, inp.gpu, weight.gpu, &bias.gpu);  // the cached plan
    expect_bitwise_equal(first, second, "forward");
    Tensor dw1({80, 96}, dtype, CUDA), dw2({80, 96}, dtype, CUDA);
    Tensor db1 = grad0.gpu.clone(), db2 = grad0.gpu.clone();
    ops::matmul_backward(nullptr, &dw1, &db1, dout.gpu, inp.gpu, weight.gpu);
    ops::matmul_backward(nullptr, &dw2, &db2, dout.gpu, inp.gpu, weight.gpu);
    expect_bitwise_equal(dw1, dw2, "dweight");
    expect_bitwise_equal(db1, db2, "dbias");
  }
}

TEST(MatmulCuda, EmptyInnerDimensionGivesTheBiasAndItsGradient) {
  for (const DType dtype : {F32, BF16}) {
    const Operand inp = random_operand({5, 0}, 31, dtype);
    const Operand weight = random_operand({6, 0}, 32, dtype);
    const Operand bias = random_operand({6}, 33, dtype);
    const Operand dout = random_operand({5, 6}, 34, dtype);
    Operand dbias = random_operand({6}, 35, dtype);
    Tensor out_ref({5, 6}, F32), out({5, 6}, dtype, CUDA), no_bias({5, 6}, dtype, CUDA);
    ops::matmul_forward(out_ref, inp.host, weight.host, &bias.host);
    ops::matmul_forward(out, inp.gpu, weight.gpu, &bias.gpu);
    ops::matmul_forward(no_bias, inp.gpu, weight.gpu, nullptr);
    expect_matches(out, out_ref, "out = bias rows");
    expect_matches(no_bias, Tensor({5, 6}, F32), "out = 0");
    ops::matmul_backward(nullptr, nullptr, &dbias.host, dout.host, inp.host, weight.host);
    ops::matmul_backward(nullptr, nullptr, &dbias.gpu, dout.gpu, inp.gpu, weight.gpu);
    expect_matches(dbias.gpu, dbias.host, "dbias");
  }
}

// No output features: the input gradient is a product over an empty inner dimension, zeros,
// written over whatever dinp held.
TEST(MatmulCuda, NoOutputFeaturesWritesAZeroInputGradient) {
  for (const DType dtype : {F32, BF16}) {
    const Operand inp = random_operand({5, 4}, 36, dtype);
    const Operand weight = random_operand({0, 4}, 37, dtype);
    const Operand dout = random_operand({5, 0}, 38, dtype);
    Operand dinp = random_operand({5, 4}, 39, dtype);
    ops::matmul_backward(&dinp.host, nullptr, nullptr, dout.host, inp.host, weight.host);
    ops::matmul_backward(&dinp.gpu, nullptr, nullptr, dout.gpu, inp.gpu, weight.gpu);
    expect_matches(dinp.gpu, Tensor({5, 4}, F32), "dinp = 0 on the GPU");
    expect_matches(dinp.host, Tensor({5, 4}, F32), "dinp = 0 on the CPU");
  }
}

TEST(MatmulCuda, RefusesMixedDtypesAndDevicesNamingThem) {
  const Tensor inp({2, 4}, F32, CUDA), weight_bf16({3, 4}, BF16, CUDA), weight_host({3, 4}, F32);
  const Tensor inp_f64({2, 4}, DType::F64, CUDA), weight_f64({3, 4}, DType::F64, CUDA);
  Tensor out({2, 3}, F32, CUDA), out_f64({2, 3}, DType::F64, CUDA);
  expect_internal_error([&] { ops::matmul_forward(out, inp, weight_bf16, nullptr); },
                        "matmul_forward: weight must be a contiguous float32 tensor on cuda, "
                        "found bfloat16 [3, 4] on cuda");
  expect_internal_error([&] { ops::matmul_forward(out, inp, weight_host, nullptr); },
                        "found float32 [3, 4] on cpu");
  expect_internal_error([&] { ops::matmul_forward(out_f64, inp_f64, weight_f64, nullptr); },
                        "or float32 or bfloat16 on cuda; found float64 [2, 4] on cuda");
  Tensor pre({2, 3}, BF16, CUDA);
  expect_internal_error([&] { ops::matmul_gelu_forward(out, pre, inp, weight_host, nullptr); },
                        "matmul_gelu_forward: weight must be");
}

// ---------------------------------------------------------------------------------------------
// matmul + gelu

// In bf16, N divisible by 8 takes cuBLASLt's fused GELU epilogue and other N the GEMM + gelu
// kernel; F32 always takes the latter. The CPU twin is matmul_forward, then gelu_forward.
void check_matmul_gelu(DType dtype, const Shape& inp_shape, int64_t N, bool with_bias) {
  const int64_t K = inp_shape.back();
  const Shape out_shape = with_last(inp_shape, N);
  SCOPED_TRACE(linear_case(inp_shape, N, with_bias, false));
  const uint64_t seed = static_cast<uint64_t>(K * 7919 + N * 13 + with_bias);
  const Operand inp = random_operand(inp_shape, seed, dtype);
  const Operand weight = random_operand({N, K}, seed + 1, dtype, 2.0 / std::sqrt(double(K)));
  const Operand bias = random_operand({N}, seed + 2, dtype);
  Tensor out_ref(out_shape, F32), pre_ref(out_shape, F32);
  Tensor out(out_shape, dtype, CUDA), pre(out_shape, dtype, CUDA);
  ops::matmul_gelu_forward(out_ref, pre_ref, inp.host, weight.host,
                           with_bias ? &bias.host : nullptr);
  const int64_t fused_before = ops::gelu_epilogue_counts().forward;
  ops::matmul_gelu_forward(out, pre, inp.gpu, weight.gpu, with_bias ? &bias.gpu : nullptr);
  // The fused path is what this checks where it applies: a fallback would pass unseen.
  EXPECT_EQ(ops::gelu_epilogue_counts().forward - fused_before, dtype == BF16 && N % 8 == 0 ? 1 : 0)
      << "cuBLASLt's GELU_AUX epilogue ran where it should not, or fell back where it should run";
  expect_matches(pre, pre_ref, "matmul_gelu_forward pre_gelu");
  expect_matches(out, out_ref, "matmul_gelu_forward out");
}

TEST(MatmulGeluCuda, MatchesMatmulThenGeluOnCpu) {
  for (const DType dtype : {F32, BF16}) {
    for (const bool with_bias : {true, false}) {
      check_matmul_gelu(dtype, {4, 32, 128}, 256, with_bias);  // fused in bf16
      check_matmul_gelu(dtype, {2, 8, 768}, 3072, with_bias);  // GPT-2 small's MLP
      check_matmul_gelu(dtype, {37, 53}, 29, with_bias);       // GEMM + gelu kernel
    }
  }
}

TEST(MatmulGeluCuda, PreGeluFeedsGeluBackwardLikeOnCpu) {
  for (const DType dtype : {F32, BF16}) {
    const Operand inp = random_operand({16, 64}, 41, dtype);
    const Operand weight = random_operand({128, 64}, 42, dtype, 0.25);
    const Operand bias = random_operand({128}, 43, dtype);
    const Operand dout = random_operand({16, 128}, 44, dtype);
    Operand dpre = random_operand({16, 128}, 45, dtype);
    Tensor out_ref({16, 128}, F32), pre_ref({16, 128}, F32);
    Tensor out({16, 128}, dtype, CUDA), pre({16, 128}, dtype, CUDA);
    ops::matmul_gelu_forward(out_ref, pre_ref, inp.host, weight.host, &bias.host);
    ops::matmul_gelu_forward(out, pre, inp.gpu, weight.gpu, &bias.gpu);
    // The GPU's pre_gelu, rounded to its dtype, is what its backward sees: the CPU gets the same.
    const Tensor pre_seen = to_host_f32(pre);
    ops::gelu_backward(dpre.host, dout.host, pre_seen);
    ops::gelu_backward(dpre.gpu, dout.gpu, pre);
    expect_matches(dpre.gpu, dpre.host, "gelu_backward of pre_gelu");
  }
}

// The fused backward of the MLP's second layer (inp = gelu(pre)): with the epilogue on, in bf16
// with K divisible by 8, cuBLASLt's DGELU epilogue; otherwise the GEMM then the gelu kernel. The
// CPU twin is matmul_backward, then gelu_backward. dpre starts non-zero (it is written), the
// parameter gradients too (they accumulate).
void check_matmul_gelu_backward(DType dtype, const Shape& pre_shape, int64_t N, bool with_bias) {
  const int64_t K = pre_shape.back();
  const Shape out_shape = with_last(pre_shape, N);
  SCOPED_TRACE(linear_case(pre_shape, N, with_bias, false));
  const uint64_t seed = static_cast<uint64_t>(K * 4099 + N * 17 + with_bias);
  const Operand pre = random_operand(pre_shape, seed, dtype, 2.0);
  // inp = gelu(pre) as the forward stored it: on the host, rounded to the dtype.
  Tensor inp_host(pre_shape, F32);
  ops::gelu_forward(inp_host, pre.host);
  if (dtype == BF16) inp_host = round_to_bf16(inp_host);
  const Operand inp{inp_host, to_gpu(inp_host, dtype)};
  const Operand weight = random_operand({N, K}, seed + 1, dtype, 1.0 / std::sqrt(double(N)));
  const Operand dout = random_operand(out_shape, seed + 2, dtype);
  Operand dpre = random_operand(pre_shape, seed + 3, dtype);
  Operand dweight = random_operand({N, K}, seed + 4, dtype);
  Operand dbias = random_operand({N}, seed + 5, dtype);
  ops::matmul_gelu_backward(dpre.host, &dweight.host, with_bias ? &dbias.host : nullptr, dout.host,
                            inp.host, pre.host, weight.host);
  ops::matmul_gelu_backward(dpre.gpu, &dweight.gpu, with_bias ? &dbias.gpu : nullptr, dout.gpu,
                            inp.gpu, pre.gpu, weight.gpu);
  expect_matches(dpre.gpu, dpre.host, "matmul_gelu_backward dpre");
  expect_matches(dweight.gpu, dweight.host, "matmul_gelu_backward dweight");
  if (with_bias) expect_matches(dbias.gpu, dbias.host, "matmul_gelu_backward dbias");
}

TEST(MatmulGeluCuda, BackwardMatchesMatmulBackwardThenGeluBackwardOnCpu) {
  for (const bool epilogue : {true, false}) {
    SCOPED_TRACE(epilogue ? "DGELU epilogue on" : "DGELU epilogue off");
    const DgeluEpilogue setting(epilogue);
    for (const DType dtype : {F32, BF16}) {
      for (const bool with_bias : {true, false}) {
        check_matmul_gelu_backward(dtype, {4, 32, 256}, 128, with_bias);  // fused in bf16
        check_matmul_gelu_backward(dtype, {2, 8, 3072}, 768, with_bias);  // GPT-2 small's MLP
        check_matmul_gelu_backward(dtype, {37, 53}, 29, with_bias);       // GEMM + gelu kernel
      }
    }
  }
}

TEST(MatmulGeluCuda, FusedBackwardGivesTheSameBitsTwice) {
  const DgeluEpilogue setting(true);
  const Operand pre = random_operand({8, 128, 1024}, 61, BF16, 2.0);
  const Operand inp = random_operand({8, 128, 1024}, 62, BF16);
  const Operand weight = random_operand({256, 1024}, 63, BF16, 1.0 / 16);
  const Operand dout = random_operand({8, 128, 256}, 64, BF16);
  Tensor first({8, 128, 1024}, BF16, CUDA), second({8, 128, 1024}, BF16, CUDA);
  const int64_t fused_before = ops::gelu_epilogue_counts().backward;
  ops::matmul_gelu_backward(first, nullptr, nullptr, dout.gpu, inp.gpu, pre.gpu, weight.gpu);
  ops::matmul_gelu_backward(second, nullptr, nullptr, dout.gpu, inp.gpu, pre.gpu, weight.gpu);
  // Both by the DGELU epilogue (a refusal falls back to the GEMM and the kernel, also bitwise
  // the same twice, and would leave the epilogue untested; stderr names cuBLASLt's reason).
  EXPECT_EQ(ops::gelu_epilogue_counts().backward - fused_before, 2);
  expect_bitwise_equal(first, second, "dpre");
}

// ---------------------------------------------------------------------------------------------
// gelu and residual

void check_gelu_and_residual(DType dtype, const Shape& shape, bool misaligned) {
  SCOPED_TRACE(shape_str(shape) + (misaligned ? ", misaligned" : ""));
  const Operand x = random_operand(shape, 51, dtype, 3.0, misaligned);  // covers the saturation
  const Operand y = random_operand(shape, 52, dtype, 1.0, misaligned);
  const Operand dout = random_operand(shape, 53, dtype, 1.0, misaligned);
  Operand dx = random_operand(shape, 54, dtype, 1.0, misaligned);
  Operand da = random_operand(shape, 55, dtype, 1.0, misaligned);
  Operand db = random_operand(shape, 56, dtype, 1.0, misaligned);
  Tensor out_ref(shape, F32), sum_ref(shape, F32);
  Tensor out(shape, dtype, CUDA), sum(shape, dtype, CUDA);
  if (misaligned) {
    out = misaligned_copy(out);
    sum = misaligned_copy(sum);
  }
  ops::gelu_forward(out_ref, x.host);
  ops::gelu_forward(out, x.gpu);
  expect_matches(out, out_ref, "gelu_forward out");
  ops::gelu_backward(dx.host, dout.host, x.host);
  ops::gelu_backward(dx.gpu, dout.gpu, x.gpu);
  expect_matches(dx.gpu, dx.host, "gelu_backward dinp");
  Tensor in_place = dout.gpu.clone();  // dinp may be dout
  ops::gelu_backward(in_place, in_place, x.gpu);
  expect_bitwise_equal(in_place, dx.gpu, "gelu_backward in place");
  ops::residual_forward(sum_ref, x.host, y.host);
  ops::residual_forward(sum, x.gpu, y.gpu);
  expect_matches(sum, sum_ref, "residual_forward out");
  ops::residual_backward(da.host, db.host, dout.host);
  ops::residual_backward(da.gpu, db.gpu, dout.gpu);
  expect_matches(da.gpu, da.host, "residual_backward da");
  expect_matches(db.gpu, db.host, "residual_backward db");
}

TEST(GeluCuda, ForwardAndBackwardMatchCpu) {
  for (const DType dtype : {F32, BF16}) {
    check_gelu_and_residual(dtype, {8, 1024}, false);  // whole packs
    check_gelu_and_residual(dtype, {7, 1001}, false);  // a tail
    check_gelu_and_residual(dtype, {3}, false);        // a tail only
    check_gelu_and_residual(dtype, {7, 1001}, true);   // element by element
  }
}

TEST(GeluCuda, IsFiniteAndSaturatesForHugeInputs) {
  const float xs[] = {-1e30f, -1e4f, -100.0f, -20.0f, 20.0f, 100.0f, 1e4f, 1e30f};
  Tensor x({8}, F32), ones({8}, F32);
  std::memcpy(x.raw(), xs, sizeof(xs));
  ones.fill(1.0);
  Tensor out({8}, F32, CUDA), dinp({8}, F32, CUDA);
  ops::gelu_forward(out, x.to(CUDA));
  ops::gelu_backward(dinp, ones.to(CUDA), x.to(CUDA));
  const Tensor o = out.to(Device::CPU), d = dinp.to(Device::CPU);
  for (int64_t i = 0; i < 8; ++i) {
    const float v = xs[i];
    EXPECT_TRUE(std::isfinite(o.data<float>()[i]) && std::isfinite(d.data<float>()[i])) << v;
    EXPECT_NEAR(o.data<float>()[i], v > 0 ? v : 0.0, 1e-6 * std::abs(v)) << "x=" << v;
    EXPECT_NEAR(d.data<float>()[i], v > 0 ? 1.0 : 0.0, 1e-6) << "x=" << v;
  }
}

TEST(ResidualCuda, BackwardIntoOneTensorAddsTwice) {
  for (const DType dtype : {F32, BF16}) {
    const Operand dout = random_operand({5, 9}, 61, dtype);
    Operand g = random_operand({5, 9}, 62, dtype);
    ops::residual_backward(g.host, g.host, dout.host);
    ops::residual_backward(g.gpu, g.gpu, dout.gpu);
    expect_matches(g.gpu, g.host, "residual_backward with da == db");
  }
}

// ---------------------------------------------------------------------------------------------
// cast and accumulate

TEST(CastCuda, Float32ToBfloat16RoundsLikeTheHostBitForBit) {
  // Random bit patterns (every exponent: subnormals, huge values, infinities, NaNs), exact ties
  // (low half 0x8000) and a few named values.
  std::mt19937 rng(71);
  std::vector<float> xs = {0.0f,
                           -0.0f,
                           1.0f + std::ldexp(1.0f, -8),      // tie: down to even 1
                           1.0f + 3 * std::ldexp(1.0f, -8),  // tie: up to even 1 + 2^-6
                           std::numeric_limits<float>::max(),
                           std::numeric_limits<float>::denorm_min(),
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN()};
  for (int i = 0; i < 20000; ++i) xs.push_back(std::bit_cast<float>(static_cast<uint32_t>(rng())));
  for (int i = 0; i < 5000; ++i)
    xs.push_back(std::bit_cast<float>(static_cast<uint32_t>((rng() & 0xFFFF0000u) | 0x8000u)));
  const int64_t n = static_cast<int64_t>(xs.size());
  Tensor src({n}, F32);
  std::memcpy(src.raw(), xs.data(), xs.size() * sizeof(float));
  Tensor dst({n}, BF16, CUDA);
  ops::cast(dst, src.to(CUDA));
  const Tensor got = dst.to(Device::CPU);
  int mismatches = 0;
  for (int64_t i = 0; i < n && mismatches < 10; ++i) {
    const bf16 g = got.data<bf16>()[i], want = to_bf16(xs[i]);
    if (std::isnan(xs[i])) {
      EXPECT_TRUE(std::isnan(to_float(g)))
          << "NaN input " << std::hex << std::bit_cast<uint32_t>(xs[i]);
    } else if (g.bits != want.bits) {
      ++mismatches;
      ADD_FAILURE() << "x bits 0x" << std::hex << std::bit_cast<uint32_t>(xs[i]) << ": GPU 0x"
                    << g.bits << ", host 0x" << want.bits;
    }
  }
}

TEST(CastCuda, Bfloat16ToFloat32IsExactForEveryBitPattern) {
  Tensor src({65536}, BF16);
  for (uint32_t i = 0; i < 65536; ++i) src.data<bf16>()[i].bits = static_cast<uint16_t>(i);
  Tensor dst({65536}, F32, CUDA);
  ops::cast(dst, src.to(CUDA));
  const Tensor got = dst.to(Device::CPU);
  for (uint32_t i = 0; i < 65536; ++i) {
    const float g = got.data<float>()[i];
    if (std::isnan(std::bit_cast<float>(i << 16))) {
      ASSERT_TRUE(std::isnan(g)) << std::hex << i;
    } else {
      ASSERT_EQ(std::bit_cast<uint32_t>(g), i << 16) << std::hex << i;
    }
  }
}

TEST(AccumulateCuda, AddsFloat32AndBfloat16IntoFloat32LikeTheHost) {
  for (const DType src_dtype : {F32, BF16}) {
    for (const bool misaligned : {false, true}) {
      SCOPED_TRACE(dtype_name(src_dtype) + (misaligned ? ", misaligned" : ""));
      const Operand src = random_operand({1001}, 81, src_dtype, 1.0, misaligned);
      Operand dst = random_operand({1001}, 82, F32, 1.0, misaligned);
      ops::accumulate(dst.host, src.host);
      ops::accumulate(dst.gpu, src.gpu);
      // One fp32 addition of the same two values on either side: the same bits.
      expect_close(to_host_f32(dst.gpu), dst.host, 0, 0, "accumulate");
    }
  }
}

TEST(CastCuda, RefusesPairsWithoutAKernelAndMixedDevicesNamingThem) {
  const Tensor f32({3}, F32, CUDA), f32_host({3}, F32);
  Tensor f64({3}, DType::F64, CUDA), bf16_dst({3}, BF16, CUDA), f64_dst({3}, DType::F64, CUDA);
  expect_internal_error([&] { ops::cast(f64_dst, f32); },
                        "cast: no conversion from float32 to float64 on cuda");
  expect_internal_error([&] { ops::cast(bf16_dst, f32_host); },
                        "cast: dst and src must be on one device, found dst bfloat16 [3] on cuda "
                        "and src float32 [3] on cpu");
  expect_internal_error([&] { ops::accumulate(f64, f32); },
                        "accumulate: dst must be float32, found float64 [3] on cuda");
}

}  // namespace
}  // namespace tessera
