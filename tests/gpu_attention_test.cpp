// The CUDA flash attention and cross-entropy against their CPU twins. The reference runs the
// CPU kernels in float64 on the very values the GPU sees (inputs rounded through bf16 when the
// GPU stores bf16), so each tolerance below only has to cover the GPU's own roundings.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/ops/attention.h"
#include "core/ops/cross_entropy.h"
#include "parallel/local_communicator.h"
#include "tests/bitwise.h"
#include "tests/expect_error.h"
#include "tests/gpu_support.h"

namespace tessera {
namespace {

using test_support::bitwise_equal;
using test_support::expect_internal_error;

using gpu_test::Bf16AttentionKernels;
using gpu_test::expect_close;
using gpu_test::misaligned_copy;
using gpu_test::random_host;
using gpu_test::round_to_bf16;
using gpu_test::to_gpu;
using gpu_test::to_host_f32;

struct Tolerance {
  double atol, rtol;
};

// F32: fp32 dot products of <= 128 terms and softmax sums of <= 130 terms, summed in another
// order than the reference (and online, rescaled, in the flash kernels): errors of a few 1e-6
// were seen on values of O(1); the bound leaves a margin of ~5x.
constexpr Tolerance kF32{2e-5, 2e-5};
// BF16 attention output: one rounding to bf16 (relative 2^-8 = 3.9e-3) on top of fp32 math.
constexpr Tolerance kBf16Out{2e-3, 1e-2};
// BF16 dqkv: the rounding of the gradient to bf16, and FA2's D = rowsum(dO * O) taken from
// the bf16-rounded output O (the reference uses exact probabilities), which moves gradients by
// up to ~6e-3 absolute at these sizes.
constexpr Tolerance kBf16Grad{2e-2, 1e-2};
// lse is F32 on both dtypes and computed from the same (rounded) inputs: fp32 roundings of
// O(5)-sized values, ~1e-6 seen.
constexpr double kLseAtol = 1e-5;

Tensor to_f64(const Tensor& host_f32) {
  Tensor r(host_f32.shape(), DType::F64);
  copy_into(r, host_f32);
  return r;
}

// ---------------------------------------------------------------------------------------------
// attention

struct AttentionCase {
  DType dtype;
  int64_t hd, T;
  ops::AttentionKernels kernels = ops::AttentionKernels::CudaCores;  // bf16 only
  // Every GPU operand one element into its buffer: the tensor-core kernels' cp.async needs 16
  // bytes, so they hand such operands to the CUDA-core kernels.
  bool misaligned = false;
};

std::string case_name(const ::testing::TestParamInfo<AttentionCase>& info) {
  const AttentionCase& c = info.param;
  const char* kernels = c.kernels == ops::AttentionKernels::TensorCores ? "BF16_TensorCores"
                        : c.kernels == ops::AttentionKernels::Cudnn     ? "BF16_Cudnn"
                                                                        : "BF16";
  return std::string(c.dtype == DType::F32 ? "F32" : kernels) + "_hd" + std::to_string(c.hd) +
         "_T" + std::to_string(c.T) + (c.misaligned ? "_Misaligned" : "");
}

// One forward and backward on the GPU and the same in float64 on the CPU. B * H = 6 pairs, and
// dqkv starts from random values so that = is checked, not +=.
class FlashAttentionCuda : public ::testing::TestWithParam<AttentionCase> {
 protected:
  static constexpr int64_t B = 2, H = 3;

  void SetUp() override {
    const AttentionCase c = GetParam();
    if (c.kernels == ops::AttentionKernels::Cudnn && !ops::cudnn_attention_built())
      GTEST_SKIP() << "this build has no cuDNN attention (no cuDNN frontend headers)";
    hd = c.hd;
    T = c.T;
    const int64_t C = H * hd;
    const uint64_t seed = static_cast<uint64_t>(100 * hd + T);
    qkv = random_host({B, T, 3 * C}, seed);
    dout = random_host({B, T, C}, seed + 1);
    dqkv0 = random_host({B, T, 3 * C}, seed + 2);
    if (c.dtype == DType::BF16) {
      qkv = round_to_bf16(qkv);
      dout = round_to_bf16(dout);
      dqkv0 = round_to_bf16(dqkv0);
    }

    // GPU.
    const Bf16AttentionKernels kernels(c.kernels);
    const auto place = [&](const Tensor& gpu) { return c.misaligned ? misaligned_copy(gpu) : gpu; };
    const Tensor qkv_d = place(to_gpu(qkv, c.dtype)), dout_d = place(to_gpu(dout, c.dtype));
    Tensor out_d = place(Tensor({B, T, C}, c.dtype, Device::CUDA));
    lse_d = Tensor(ops::attention_saved_shape(Device::CUDA, B, H, T),
                   ops::attention_saved_dtype(Device::CUDA, c.dtype), Device::CUDA);
    ops::attention_forward(out_d, lse_d, qkv_d, H);
    dqkv_d = place(to_gpu(dqkv0, c.dtype));
    ops::attention_backward(dqkv_d, dout_d, qkv_d, out_d, lse_d, H);
    out_gpu = to_host_f32(out_d);
    dqkv_gpu = to_host_f32(dqkv_d);
    lse_gpu = lse_d.to(Device::CPU);

    // CPU twin in float64.
    const Tensor qkv64 = to_f64(qkv), dout64 = to_f64(dout);
    out_ref = Tensor({B, T, C}, DType::F64);
    Tensor att(ops::attention_saved_shape(Device::CPU, B, H, T), DType::F64);
    ops::attention_forward(out_ref, att, qkv64, H);
    dqkv_ref = to_f64(dqkv0);
    ops::attention_backward(dqkv_ref, dout64, qkv64, out_ref, att, H);
  }

  // log sum_{u <= t} exp(q_t . k_u / sqrt(hd)) for every (b, h, t), in double.
  Tensor reference_lse() const {
    const int64_t C = H * hd, row = 3 * C;
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    const float* x = qkv.data<float>();
    Tensor L({B, H, T}, DType::F64);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t t = 0; t < T; ++t) {
          std::vector<double> s(static_cast<size_t>(t + 1));
          double mx = -INFINITY;
          for (int64_t u = 0; u <= t; ++u) {
            double d = 0;
            for (int64_t i = 0; i < hd; ++i)
              d += static_cast<double>(x[(b * T + t) * row + h * hd + i]) *
                   x[(b * T + u) * row + C + h * hd + i];
            s[u] = d * scale;
            mx = std::max(mx, s[u]);
          }
          double sum = 0;
          for (const double v : s) sum += std::exp(v - mx);
          L.data<double>()[(b * H + h) * T + t] = mx + std::log(sum);
        }
      }
    }
    return L;
  }

  bool bf16() const { return GetParam().dtype == DType::BF16; }

  int64_t hd = 0, T = 0;
  Tensor qkv, dout, dqkv0;            // host F32 inputs (bf16-exact for BF16 cases); dqkv0 is
                                      // what dqkv holds before the backward overwrites it
  Tensor lse_d, dqkv_d;               // on the GPU
  Tensor out_gpu, dqkv_gpu, lse_gpu;  // GPU results on the host, F32
  Tensor out_ref, dqkv_ref;           // CPU float64 twin
};

TEST_P(FlashAttentionCuda, ForwardOutputMatchesCpuTwin) {
  const Tolerance tol = bf16() ? kBf16Out : kF32;
  expect_close(out_gpu, out_ref, tol.atol, tol.rtol, "attention output");
}

TEST_P(FlashAttentionCuda, SavedLseIsLogSumExpOfScaledCausalScores) {
  EXPECT_EQ(lse_d.dtype(), DType::F32);
  EXPECT_EQ(lse_d.shape(), (Shape{B, H, T}));
  expect_close(lse_gpu, reference_lse(), kLseAtol, 0.0, "lse");
}

TEST_P(FlashAttentionCuda, BackwardWritesCpuTwinGradientToDqkv) {
  const Tolerance tol = bf16() ? kBf16Grad : kF32;
  // Separately, so that a failure says which kernel (dQ, or dK/dV) is wrong.
  const int64_t C = H * hd;
  const char* names[3] = {"dq", "dk", "dv"};
  for (int part = 0; part < 3; ++part) {
    Tensor got({B * T, C}, DType::F32), want({B * T, C}, DType::F64);
    for (int64_t r = 0; r < B * T; ++r) {
      for (int64_t i = 0; i < C; ++i) {
        got.data<float>()[r * C + i] = dqkv_gpu.data<float>()[r * 3 * C + part * C + i];
        want.data<double>()[r * C + i] = dqkv_ref.data<double>()[r * 3 * C + part * C + i];
      }
    }
    expect_close(got, want, tol.atol, tol.rtol, names[part]);
  }
}

INSTANTIATE_TEST_SUITE_P(
    HeadDimsAndPartialTiles, FlashAttentionCuda,
    ::testing::Values(AttentionCase{DType::F32, 64, 1}, AttentionCase{DType::F32, 64, 37},
                      AttentionCase{DType::F32, 64, 130}, AttentionCase{DType::F32, 64, 257},
                      AttentionCase{DType::F32, 128, 1}, AttentionCase{DType::F32, 128, 37},
                      AttentionCase{DType::F32, 128, 130}, AttentionCase{DType::BF16, 64, 1},
                      AttentionCase{DType::BF16, 64, 37}, AttentionCase{DType::BF16, 64, 130},
                      AttentionCase{DType::BF16, 128, 1}, AttentionCase{DType::BF16, 128, 37},
                      AttentionCase{DType::BF16, 128, 130},
                      AttentionCase{DType::F32, 64, 37, ops::AttentionKernels::CudaCores, true},
                      AttentionCase{DType::BF16, 64, 37, ops::AttentionKernels::CudaCores, true}),
    case_name);

// The fast bf16 kernels' cases. The tensor-core kernels tile by 64 queries (forward, dQ) and 64
// keys (dK/dV) with inner tiles of 64 or 32: T = 1, one partial tile, exact tiles, and several
// tiles with a partial last one; then operands one element off 16-byte alignment, which take
// the CUDA-core kernels. cuDNN (attention_cudnn.h) runs the same cases; T = 1 goes to CUDA
// cores there too, as cuDNN's backward refuses it.
std::vector<AttentionCase> fast_kernel_cases(ops::AttentionKernels k) {
  std::vector<AttentionCase> cases;
  for (const auto& [hd, T] : {std::pair<int64_t, int64_t>{64, 1},
                              {64, 37},
                              {64, 128},
                              {64, 257},
                              {128, 1},
                              {128, 37},
                              {128, 130},
                              {128, 200}})
    cases.push_back(AttentionCase{DType::BF16, hd, T, k});
  cases.push_back(AttentionCase{DType::BF16, 64, 130, k, true});
  cases.push_back(AttentionCase{DType::BF16, 128, 37, k, true});
  return cases;
}
INSTANTIATE_TEST_SUITE_P(TensorCores, FlashAttentionCuda,
                         ::testing::ValuesIn(fast_kernel_cases(ops::AttentionKernels::TensorCores)),
                         case_name);
INSTANTIATE_TEST_SUITE_P(Cudnn, FlashAttentionCuda,
                         ::testing::ValuesIn(fast_kernel_cases(ops::AttentionKernels::Cudnn)),
                         case_name);

class FlashAttentionCudaDeterminism : public ::testing::TestWithParam<ops::AttentionKernels> {};

TEST_P(FlashAttentionCudaDeterminism, BackwardTwiceGivesBitwiseIdenticalDqkv) {
  if (GetParam() == ops::AttentionKernels::Cudnn && !ops::cudnn_attention_built())
    GTEST_SKIP() << "this build has no cuDNN attention (no cuDNN frontend headers)";
  const Bf16AttentionKernels kernels(GetParam());
  const int64_t B = 2, T = 100, H = 2, hd = 64, C = H * hd;
  const Tensor qkv = to_gpu(random_host({B, T, 3 * C}, 7), DType::BF16);
  const Tensor dout = to_gpu(random_host({B, T, C}, 8), DType::BF16);
  Tensor out({B, T, C}, DType::BF16, Device::CUDA), lse({B, H, T}, DType::F32, Device::CUDA);
  ops::attention_forward(out, lse, qkv, H);
  Tensor first({B, T, 3 * C}, DType::BF16, Device::CUDA), second = first.clone();
  ops::attention_backward(first, dout, qkv, out, lse, H);
  ops::attention_backward(second, dout, qkv, out, lse, H);
  EXPECT_TRUE(bitwise_equal(first, second));
}

INSTANTIATE_TEST_SUITE_P(Bf16Kernels, FlashAttentionCudaDeterminism,
                         ::testing::Values(ops::AttentionKernels::CudaCores,
                                           ops::AttentionKernels::TensorCores,
                                           ops::AttentionKernels::Cudnn),
                         [](const ::testing::TestParamInfo<ops::AttentionKernels>& info) {
                           return std::string(ops::attention_kernels_name(info.param));
                         });

TEST(FlashAttentionCudaValidation, UnsupportedHeadDimIsRefusedNamingTheOp) {
  const int64_t B = 1, T = 8, H = 2, hd = 48, C = H * hd;
  const Tensor qkv({B, T, 3 * C}, DType::F32, Device::CUDA);
  Tensor out({B, T, C}, DType::F32, Device::CUDA), lse({B, H, T}, DType::F32, Device::CUDA);
  Tensor dqkv({B, T, 3 * C}, DType::F32, Device::CUDA);
  expect_internal_error([&] { ops::attention_forward(out, lse, qkv, H); },
                        {"attention_forward", "head_dim 48"});
  expect_internal_error([&] { ops::attention_backward(dqkv, out, qkv, out, lse, H); },
                        {"attention_backward", "head_dim 48"});
}

TEST(FlashAttentionCudaValidation, SavedTensorMustBeLseNotProbabilities) {
  const int64_t B = 1, T = 8, H = 1, hd = 64;
  const Tensor qkv({B, T, 3 * H * hd}, DType::F32, Device::CUDA);
  Tensor out({B, T, H * hd}, DType::F32, Device::CUDA);
  Tensor att({B, H, T, T}, DType::F32, Device::CUDA);
  expect_internal_error([&] { ops::attention_forward(out, att, qkv, H); },
                        {"attention_forward", "lse must have shape [1, 1, 8]"});
}

// ---------------------------------------------------------------------------------------------
// cross-entropy

// Losses and lse are F32 on the GPU whatever the logits' dtype, and computed in fp32 from the
// same (rounded) logits as the reference: fp32 roundings of O(10)-sized values.
constexpr Tolerance kLoss{1e-5, 1e-5};
// dlogits = dloss * (p - onehot): fp32 exp of (x - lse), ~1e-6 relative, then for BF16 one
// rounding to bf16 (relative 2^-8 = 3.9e-3).
constexpr Tolerance kDlogitsF32{1e-6, 1e-5};
constexpr Tolerance kDlogitsBf16{1e-6, 8e-3};

struct CrossEntropyResult {
  Tensor losses, lse, dlogits;  // host, F32 from the GPU or F64 from the CPU
};

// Forward and backward of one shard holding vocabulary [vocab_start, vocab_start + V) on a
// one-rank group, where targets on other shards contribute a target logit of 0.
CrossEntropyResult run_cross_entropy(const Tensor& logits, const Tensor& targets,
                                     const Tensor& dlosses, int64_t vocab_start, Device device,
                                     DType dtype) {
  LocalCommunicator tp("tp");
  const int64_t M = logits.size(0);
  CrossEntropyResult r;
  if (device == Device::CPU) {
    const Tensor x = to_f64(logits), dl = to_f64(dlosses);
    r.losses = Tensor({M}, DType::F64);
    r.lse = Tensor({M}, DType::F64);
    r.dlogits = Tensor(logits.shape(), DType::F64);
    ops::cross_entropy_forward(r.losses, r.lse, x, targets, vocab_start, tp);
    ops::cross_entropy_backward(r.dlogits, dl, x, r.lse, targets, vocab_start);
    return r;
  }
  const Tensor x = to_gpu(logits, dtype), t = targets.to(Device::CUDA);
  const Tensor dl = dlosses.to(Device::CUDA);
  const DType rows = ops::cross_entropy_loss_dtype(device, dtype);
  Tensor losses({M}, rows, Device::CUDA), lse({M}, rows, Device::CUDA);
  Tensor dlogits(logits.shape(), dtype, Device::CUDA);
  ops::cross_entropy_forward(losses, lse, x, t, vocab_start, tp);
  ops::cross_entropy_backward(dlogits, dl, x, lse, t, vocab_start);
  r.losses = losses.to(Device::CPU);
  r.lse = lse.to(Device::CPU);
  r.dlogits = to_host_f32(dlogits);
  return r;
}

// M rows of logits ~ N(0, 3^2) and targets spread over a vocabulary of `vocab` ids.
struct CrossEntropyInputs {
  Tensor logits, targets, dlosses;
};

CrossEntropyInputs cross_entropy_inputs(int64_t M, int64_t V, int64_t vocab, uint64_t seed,
                                        DType dtype) {
  CrossEntropyInputs in;
  in.logits = random_host({M, V}, seed, 3.0);
  if (dtype == DType::BF16) in.logits = round_to_bf16(in.logits);
  in.dlosses = random_host({M}, seed + 1);
  in.targets = Tensor({M}, DType::I32);
  std::mt19937_64 rng(seed + 2);
  for (int64_t m = 0; m < M; ++m)
    in.targets.data<int32_t>()[m] = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return in;
}

void expect_cross_entropy_matches_cpu(int64_t M, int64_t V, int64_t vocab_start, int64_t vocab,
                                      DType dtype) {
  const CrossEntropyInputs in = cross_entropy_inputs(M, V, vocab, 40 + V, dtype);
  if (V < vocab) {  // a shard test means something only if targets lie both on and off it
    int64_t on = 0;
    for (int64_t m = 0; m < M; ++m) {
      const int32_t t = in.targets.data<int32_t>()[m];
      on += t >= vocab_start && t < vocab_start + V;
    }
    ASSERT_GT(on, 0);
    ASSERT_LT(on, M);
  }
  const CrossEntropyResult gpu =
      run_cross_entropy(in.logits, in.targets, in.dlosses, vocab_start, Device::CUDA, dtype);
  const CrossEntropyResult cpu =
      run_cross_entropy(in.logits, in.targets, in.dlosses, vocab_start, Device::CPU, dtype);
  EXPECT_EQ(gpu.losses.dtype(), DType::F32);
  expect_close(gpu.losses, cpu.losses, kLoss.atol, kLoss.rtol, "losses");
  expect_close(gpu.lse, cpu.lse, kLoss.atol, kLoss.rtol, "lse");
  const Tolerance d = dtype == DType::BF16 ? kDlogitsBf16 : kDlogitsF32;
  expect_close(gpu.dlogits, cpu.dlogits, d.atol, d.rtol, "dlogits");
}

// Shard [700, 1700) of a 3000-token vocabulary: about a third of the targets are on it.
TEST(CrossEntropyCuda, VocabShardWithOffShardTargetsMatchesCpuTwinF32) {
  expect_cross_entropy_matches_cpu(37, 1000, 700, 3000, DType::F32);
}

TEST(CrossEntropyCuda, VocabShardWithOffShardTargetsMatchesCpuTwinBF16) {
  expect_cross_entropy_matches_cpu(37, 1000, 700, 3000, DType::BF16);
}

TEST(CrossEntropyCuda, WholeGpt2VocabularyMatchesCpuTwin) {
  expect_cross_entropy_matches_cpu(6, 50257, 0, 50257, DType::F32);
  expect_cross_entropy_matches_cpu(6, 50257, 0, 50257, DType::BF16);
}

TEST(CrossEntropyCuda, BackwardInPlaceOverLogitsEqualsOutOfPlace) {
  for (const DType dtype : {DType::F32, DType::BF16}) {
    const CrossEntropyInputs in = cross_entropy_inputs(9, 777, 2000, 5, dtype);
    LocalCommunicator tp("tp");
    Tensor logits = to_gpu(in.logits, dtype);
    const Tensor targets = in.targets.to(Device::CUDA), dl = in.dlosses.to(Device::CUDA);
    Tensor losses({9}, DType::F32, Device::CUDA), lse({9}, DType::F32, Device::CUDA);
    ops::cross_entropy_forward(losses, lse, logits, targets, 300, tp);
    Tensor dlogits(logits.shape(), dtype, Device::CUDA);
    ops::cross_entropy_backward(dlogits, dl, logits, lse, targets, 300);
    ops::cross_entropy_backward(logits, dl, logits, lse, targets, 300);
    EXPECT_TRUE(bitwise_equal(dlogits, logits)) << dtype_name(dtype);
  }
}

TEST(CrossEntropyCudaValidation, BadTargetIsRefusedNamingItsRow) {
  LocalCommunicator tp("tp");
  Tensor targets({4}, DType::I32);
  targets.data<int32_t>()[2] = -1;
  targets.data<int32_t>()[3] = -5;
  const Tensor logits({4, 5}, DType::F32, Device::CUDA);
  Tensor losses({4}, DType::F32, Device::CUDA), lse({4}, DType::F32, Device::CUDA);
  Tensor t = targets.to(Device::CUDA);
  expect_internal_error([&] { ops::cross_entropy_forward(losses, lse, logits, t, 0, tp); },
                        {"cross_entropy_forward", "found -1 at row 2"});
  targets.data<int32_t>()[2] = 5;  // one shard is the whole vocabulary [0, 5)
  targets.data<int32_t>()[3] = 0;
  t = targets.to(Device::CUDA);
  expect_internal_error([&] { ops::cross_entropy_forward(losses, lse, logits, t, 0, tp); },
                        {"cross_entropy_forward", "found 5 at row 2"});
}

}  // namespace
}  // namespace tessera
