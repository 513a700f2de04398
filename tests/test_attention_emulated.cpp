// The bf16 tensor-core attention kernels (core/ops/attention_bf16_kernels.cuh), their source run
// on the CPU by tests/simt_emulation.h, against the float64 CPU attention: the forward output
// and log-sum-exp, and the gradient the backward adds to dqkv, at the GPU tests' tolerances, for
// head dims 64 and 128 and sequence lengths that leave partial tiles. Every case runs twice, the
// threads of each block in opposite orders, and must give the same bits: a race between threads
// (a missing __syncthreads, a shared tile overwritten while read) shows as a difference. The GPU
// runs the same source (tests/gpu_attention_test.cpp); this catches the kernels' index
// arithmetic and races without one.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "tests/simt_emulation.h"
// After the emulation, as the .cu includes tensor_core.cuh first.
#include "core/ops/attention.h"
#include "core/ops/attention_bf16_kernels.cuh"
#include "core/tensor.h"

namespace tessera {
namespace {

namespace kernels = ops::cuda::attention_bf16;

std::vector<__nv_bfloat16> random_bf16(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<__nv_bfloat16> v(n);
  for (auto& x : v) x = __float2bfloat16(dist(rng));
  return v;
}

Tensor to_f64(const std::vector<__nv_bfloat16>& v, const Shape& shape) {
  Tensor t(shape, DType::F64);
  for (size_t i = 0; i < v.size(); ++i) t.data<double>()[i] = __bfloat162float(v[i]);
  return t;
}

// The GPU tests' tolerances (tests/gpu_attention_test.cpp): one bf16 rounding of the output,
// of P and dS as mma inputs and of dqkv + gradient.
constexpr double kOutAtol = 2e-3, kOutRtol = 1e-2;
constexpr double kGradAtol = 2e-2, kGradRtol = 1e-2;
constexpr double kLseAtol = 1e-5;

struct Case {
  int64_t hd, T;
};
void PrintTo(const Case& c, std::ostream* os) {
  *os << "head dim " << c.hd << ", T " << c.T;
}

class EmulatedTensorCoreAttention : public ::testing::TestWithParam<Case> {};

constexpr int64_t B = 1, H = 2;

struct Inputs {
  std::vector<__nv_bfloat16> qkv, dout, dqkv0;
};
struct Outputs {
  std::vector<__nv_bfloat16> out, dqkv;
  std::vector<float> lse;
};

// Forward and backward as attention_bf16_cuda.cu launches them, with the threads of each block
// run in the given order.
template <int HD>
Outputs run_kernels(const Inputs& in, int64_t T, simt::Schedule order) {
  simt::schedule = order;
  const int64_t C = H * HD;
  const int S = static_cast<int>(T), Hi = static_cast<int>(H);
  const float scale = 1.0f / std::sqrt(static_cast<float>(HD));
  const std::vector<__nv_bfloat16>&qkv = in.qkv, &dout = in.dout;
  const dim3 grid(static_cast<unsigned>((T + kernels::kBlockRows - 1) / kernels::kBlockRows),
                  static_cast<unsigned>(B * H));
  std::vector<__nv_bfloat16> out(B * T * C);
  std::vector<float> lse(B * H * T), delta(B * H * T);
  simt::launch(kernels::forward_kernel<HD>, grid, kernels::kThreads, out.data(), lse.data(),
               qkv.data(), S, Hi, scale);
  for (int64_t b = 0; b < B; ++b)  // delta = rowsum(dout * out), attention_cuda.cu's first kernel
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h) {
        float sum = 0;
        for (int64_t d = 0; d < HD; ++d) {
          const int64_t e = (b * T + t) * C + h * HD + d;
          sum += __bfloat162float(dout[e]) * __bfloat162float(out[e]);
        }
        delta[(b * H + h) * T + t] = sum;
      }
  std::vector<__nv_bfloat16> dqkv = in.dqkv0;
  simt::launch(kernels::backward_dkdv_kernel<HD>, grid, kernels::kThreads, dqkv.data(), qkv.data(),
               dout.data(), static_cast<const float*>(lse.data()),
               static_cast<const float*>(delta.data()), S, Hi, scale);
  simt::launch(kernels::backward_dq_kernel<HD>, grid, kernels::kThreads, dqkv.data(), qkv.data(),
               dout.data(), static_cast<const float*>(lse.data()),
               static_cast<const float*>(delta.data()), S, Hi, scale);
  return {out, dqkv, lse};
}

template <typename V>
bool same_bits(const std::vector<V>& a, const std::vector<V>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(V)) == 0;
}

template <int HD>
void run_case(int64_t T) {
  const int64_t C = H * HD;
  const Inputs in{random_bf16(B * T * 3 * C, 10 + T), random_bf16(B * T * C, 20 + T),
                  random_bf16(B * T * 3 * C, 30 + T)};
  const Outputs high = run_kernels<HD>(in, T, simt::Schedule::HighestFirst);
  const Outputs low = run_kernels<HD>(in, T, simt::Schedule::LowestFirst);
  // Two orders a GPU may run the threads in: different bits would mean a race.
  EXPECT_TRUE(same_bits(low.out, high.out)) << "forward output depends on the thread order";
  EXPECT_TRUE(same_bits(low.lse, high.lse)) << "log-sum-exp depends on the thread order";
  EXPECT_TRUE(same_bits(low.dqkv, high.dqkv)) << "dqkv depends on the thread order";
  const std::vector<__nv_bfloat16>&qkv = in.qkv, &dout = in.dout, &dqkv0 = in.dqkv0;
  const std::vector<__nv_bfloat16>&out = low.out, &dqkv = low.dqkv;
  const std::vector<float>& lse = low.lse;

  // The CPU attention in float64 on the same (bf16) values.
  const Tensor qkv64 = to_f64(qkv, {B, T, 3 * C}), dout64 = to_f64(dout, {B, T, C});
  Tensor out_ref({B, T, C}, DType::F64);
  Tensor att(ops::attention_saved_shape(Device::CPU, B, H, T), DType::F64);
  ops::attention_forward(out_ref, att, qkv64, H);
  // The kernels add the gradient into dqkv (the op clears it first, attention_cuda.cu); here
  // they start from dqkv0, so that adding is checked.
  Tensor dqkv_ref({B, T, 3 * C}, DType::F64);
  ops::attention_backward(dqkv_ref, dout64, qkv64, out_ref, att, H);
  for (int64_t i = 0; i < B * T * 3 * C; ++i)
    dqkv_ref.data<double>()[i] += __bfloat162float(dqkv0[i]);

  int bad_out = 0, bad_lse = 0, bad_grad = 0;
  for (int64_t i = 0; i < B * T * C; ++i) {
    const double want = out_ref.data<double>()[i], got = __bfloat162float(out[i]);
    bad_out += !(std::abs(got - want) <= kOutAtol + kOutRtol * std::abs(want));  // NaN is bad
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        // log sum_u exp(s_u) from the probabilities: s_t - log p_tt for the diagonal score s_t.
        double s = 0;
        for (int64_t d = 0; d < HD; ++d)
          s += qkv64.data<double>()[(b * T + t) * 3 * C + h * HD + d] *
               qkv64.data<double>()[(b * T + t) * 3 * C + C + h * HD + d];
        const double p = att.data<double>()[((b * H + h) * T + t) * T + t];
        const double want = s / std::sqrt(static_cast<double>(HD)) - std::log(p);
        bad_lse += !(std::abs(lse[(b * H + h) * T + t] - want) <=
                     kLseAtol * std::max(1.0, std::abs(want)));
      }
  for (int64_t i = 0; i < B * T * 3 * C; ++i) {
    const double want = dqkv_ref.data<double>()[i], got = __bfloat162float(dqkv[i]);
    bad_grad += !(std::abs(got - want) <= kGradAtol + kGradRtol * std::abs(want));
  }
  EXPECT_EQ(bad_out, 0) << "of " << B * T * C << " output values";
  EXPECT_EQ(bad_lse, 0) << "of " << B * H * T << " log-sum-exps";
  EXPECT_EQ(bad_grad, 0) << "of " << B * T * 3 * C << " dqkv values";
}

TEST_P(EmulatedTensorCoreAttention, ForwardAndBackwardMatchTheFloat64Cpu) {
  const Case c = GetParam();
  if (c.hd == 64)
    run_case<64>(c.T);
  else
    run_case<128>(c.T);
}

INSTANTIATE_TEST_SUITE_P(HeadDimsAndPartialTiles, EmulatedTensorCoreAttention,
                         ::testing::Values(Case{64, 1}, Case{64, 37}, Case{64, 130}, Case{128, 37},
                                           Case{128, 70}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return "hd" + std::to_string(info.param.hd) + "_T" +
                                  std::to_string(info.param.T);
                         });

}  // namespace
}  // namespace tessera
