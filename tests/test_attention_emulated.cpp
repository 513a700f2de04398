// The CUDA attention kernels, their source run on the CPU by tests/simt_emulation.h, against the
// float64 CPU attention: the forward output and log-sum-exp, and the gradient the backward adds
// stored in dqkv, at the GPU tests' tolerances (tests/gpu_attention_test.cpp), for head dims 64 and
// 128 and sequence lengths that leave partial tiles. Both families: the bf16 tensor-core kernels
// (core/ops/attention_bf16_kernels.cuh) and the CUDA-core kernels that fp32 always and bf16 by
// default run (core/ops/attention_cuda_core_kernels.cuh), each launched as its .cu launches it.
// Every case runs twice, the threads of each block in opposite orders, and must give the same
// bits: a race between threads (a missing __syncthreads, a shared tile overwritten while read)
// shows as a difference. The GPU runs the same source; this catches the kernels' index
// arithmetic and races without one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "tests/simt_emulation.h"
// After the emulation, as the .cu files include tensor_core.cuh first.
#include "core/ops/attention.h"
#include "core/ops/attention_bf16_kernels.cuh"
#include "core/ops/attention_cuda_core_kernels.cuh"
#include "core/tensor.h"

namespace tessera {
namespace {

using tessera::cuda::blocks_for;

// The GPU tests' tolerances: fp32 sums in another order (and online, rescaled); in bf16 one
// rounding of the output, of P and dS as mma inputs and of dqkv.
struct Tolerance {
  double atol, rtol;
};
constexpr Tolerance kF32{2e-5, 2e-5};
constexpr Tolerance kBf16Out{2e-3, 1e-2};
constexpr Tolerance kBf16Grad{2e-2, 1e-2};
constexpr double kLseAtol = 1e-5;

// Head dim, sequence length, batch and heads: blockIdx.y = b H + h.
struct Case {
  int64_t hd, T, B = 1, H = 2;
};
void PrintTo(const Case& c, std::ostream* os) {
  *os << "head dim " << c.hd << ", T " << c.T << ", B " << c.B << ", H " << c.H;
}

// Values as the element type D stores them, and back: the kernels' own conversions
// (core/cuda_device.cuh).
template <typename D>
std::vector<D> stored(const std::vector<float>& v) {
  std::vector<D> r;
  for (const float x : v) r.push_back(tessera::cuda::from_f32<D>(x));
  return r;
}
template <typename D>
std::vector<float> widened(const std::vector<D>& v) {
  std::vector<float> r;
  for (const D x : v) r.push_back(tessera::cuda::to_f32(x));
  return r;
}

// Random inputs as float values that the element type D holds exactly.
template <typename D>
std::vector<float> random_values(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return widened(stored<D>(v));
}

Tensor to_f64(const std::vector<float>& v, const Shape& shape) {
  Tensor t(shape, DType::F64);
  for (size_t i = 0; i < v.size(); ++i) t.data<double>()[i] = v[i];
  return t;
}

struct Inputs {
  std::vector<float> qkv, dout;
};
struct Outputs {
  std::vector<float> out, dqkv, lse;
};

template <typename D>
Inputs random_inputs(const Case& c) {
  const size_t C = static_cast<size_t>(c.H * c.hd), rows = static_cast<size_t>(c.B * c.T);
  const uint64_t seed = static_cast<uint64_t>(100 * c.hd + c.T);
  return {random_values<D>(rows * 3 * C, seed), random_values<D>(rows * C, seed + 1)};
}

// The kernels' results against the float64 CPU attention on the same values.
void expect_matches_reference(const Inputs& in, const Outputs& got, const Case& c,
                              Tolerance out_tol, Tolerance grad_tol) {
  const int64_t B = c.B, H = c.H, T = c.T, hd = c.hd, C = H * hd;
  const Tensor qkv64 = to_f64(in.qkv, {B, T, 3 * C}), dout64 = to_f64(in.dout, {B, T, C});
  Tensor out_ref({B, T, C}, DType::F64);
  Tensor att(ops::attention_saved_shape(Device::CPU, B, H, T), DType::F64);
  ops::attention_forward(out_ref, att, qkv64, H);
  Tensor dqkv_ref({B, T, 3 * C}, DType::F64);
  ops::attention_backward(dqkv_ref, dout64, qkv64, out_ref, att, H);

  int bad_out = 0, bad_lse = 0, bad_grad = 0;
  for (int64_t i = 0; i < B * T * C; ++i) {
    const double want = out_ref.data<double>()[i], v = got.out[i];
    bad_out += !(std::abs(v - want) <= out_tol.atol + out_tol.rtol * std::abs(want));  // NaN bad
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        // log sum_u exp(s_u) from the probabilities: s_t - log p_tt for the diagonal score s_t.
        double s = 0;
        for (int64_t d = 0; d < hd; ++d)
          s += qkv64.data<double>()[(b * T + t) * 3 * C + h * hd + d] *
               qkv64.data<double>()[(b * T + t) * 3 * C + C + h * hd + d];
        const double p = att.data<double>()[((b * H + h) * T + t) * T + t];
        const double want = s / std::sqrt(static_cast<double>(hd)) - std::log(p);
        bad_lse += !(std::abs(got.lse[(b * H + h) * T + t] - want) <= kLseAtol);
      }
  for (int64_t i = 0; i < B * T * 3 * C; ++i) {
    const double want = dqkv_ref.data<double>()[i], v = got.dqkv[i];
    bad_grad += !(std::abs(v - want) <= grad_tol.atol + grad_tol.rtol * std::abs(want));
  }
  EXPECT_EQ(bad_out, 0) << "of " << B * T * C << " output values";
  EXPECT_EQ(bad_lse, 0) << "of " << B * H * T << " log-sum-exps";
  EXPECT_EQ(bad_grad, 0) << "of " << B * T * 3 * C << " dqkv values";
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Both thread orders: the same bits, or a race.
template <typename Run>
Outputs run_both_orders(Run&& run) {
  simt::schedule = simt::Schedule::HighestFirst;
  const Outputs high = run();
  simt::schedule = simt::Schedule::LowestFirst;
  const Outputs low = run();
  EXPECT_TRUE(same_bits(low.out, high.out)) << "forward output depends on the thread order";
  EXPECT_TRUE(same_bits(low.lse, high.lse)) << "log-sum-exp depends on the thread order";
  EXPECT_TRUE(same_bits(low.dqkv, high.dqkv)) << "dqkv depends on the thread order";
  return low;
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return "hd" + std::to_string(c.hd) + "_T" + std::to_string(c.T) + "_B" + std::to_string(c.B) +
         "_H" + std::to_string(c.H);
}

// ---------------------------------------------------------------------------------------------
// The kernels as attention_cuda.cu launches them for one backward, with the tensor-core kernels
// of attention_bf16_cuda.cu or its own CUDA-core ones: delta = rowsum(dout * out) by the delta
// kernel, then dK/dV and dQ, which store the gradient without a clearing first. Outputs (dqkv
// too) start as NaN, so an element no kernel writes shows.

namespace cc = ops::cuda::attention_cuda_cores;
namespace tc = ops::cuda::attention_bf16;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

template <typename D>
std::vector<D> nans(size_t n) {
  return stored<D>(std::vector<float>(n, kNaN));
}

// The launch geometry both families share: grid y = B H, and their scale.
struct Geometry {
  int S, H;
  int64_t B;
  float scale;
};
template <int HD>
Geometry geometry_of(const Case& c) {
  return {static_cast<int>(c.T), static_cast<int>(c.H), c.B,
          1.0f / std::sqrt(static_cast<float>(HD))};
}

template <int HD, typename D>
std::vector<float> delta_of(const std::vector<D>& dout, const std::vector<D>& out,
                            const Geometry& g) {
  const int64_t rows = g.B * g.S * g.H;
  std::vector<float> delta(static_cast<size_t>(rows), kNaN);
  simt::launch(cc::attention_delta_kernel<HD, D>, blocks_for(rows, cc::kWarps), cc::kThreads,
               delta.data(), dout.data(), out.data(), rows, g.S, g.H);
  return delta;
}

// ---------------------------------------------------------------------------------------------
// The tensor-core kernels (bf16)

template <int HD>
Outputs run_tensor_cores(const Inputs& in, const Case& c) {
  using D = __nv_bfloat16;
  const Geometry g = geometry_of<HD>(c);
  const std::vector<D> qkv = stored<D>(in.qkv), dout = stored<D>(in.dout);
  const dim3 grid(blocks_for(g.S, tc::kBlockRows), static_cast<unsigned>(g.B * g.H));
  std::vector<D> out = nans<D>(in.dout.size());
  std::vector<float> lse(static_cast<size_t>(g.B * g.H * g.S), kNaN);
  simt::launch_with_smem(tc::forward_kernel<HD>, grid, tc::kThreads, tc::forward_smem_bytes<HD>(),
                         out.data(), lse.data(), qkv.data(), g.S, g.H, g.scale);
  const std::vector<float> delta = delta_of<HD>(dout, out, g);
  std::vector<D> dqkv = nans<D>(in.qkv.size());
  simt::launch_with_smem(tc::backward_dkdv_kernel<HD>, grid, tc::kThreads,
                         tc::dkdv_smem_bytes<HD>(), dqkv.data(), qkv.data(), dout.data(),
                         static_cast<const float*>(lse.data()), delta.data(), g.S, g.H, g.scale);
  simt::launch_with_smem(tc::backward_dq_kernel<HD>, grid, tc::kThreads, tc::dq_smem_bytes<HD>(),
                         dqkv.data(), qkv.data(), dout.data(),
                         static_cast<const float*>(lse.data()), delta.data(), g.S, g.H, g.scale);
  return {widened(out), widened(dqkv), lse};
}

class EmulatedTensorCoreAttention : public ::testing::TestWithParam<Case> {};

TEST_P(EmulatedTensorCoreAttention, ForwardAndBackwardMatchTheFloat64Cpu) {
  const Case c = GetParam();
  const Inputs in = random_inputs<__nv_bfloat16>(c);
  const Outputs got = run_both_orders(
      [&] { return c.hd == 64 ? run_tensor_cores<64>(in, c) : run_tensor_cores<128>(in, c); });
  expect_matches_reference(in, got, c, kBf16Out, kBf16Grad);
}

// One key; partial tiles; three 64-row tiles with a partial last; two sequences of three heads.
INSTANTIATE_TEST_SUITE_P(HeadDimsAndPartialTiles, EmulatedTensorCoreAttention,
                         ::testing::Values(Case{64, 1}, Case{64, 37, 2, 3}, Case{64, 130},
                                           Case{128, 37}, Case{128, 70}),
                         case_name);

// ---------------------------------------------------------------------------------------------
// The CUDA-core kernels (fp32 and bf16)

template <int HD, typename D>
Outputs run_cuda_cores(const Inputs& in, const Case& c) {
  const Geometry g = geometry_of<HD>(c);
  const std::vector<D> qkv = stored<D>(in.qkv), dout = stored<D>(in.dout);
  const dim3 grid(blocks_for(g.S, cc::kTile), static_cast<unsigned>(g.B * g.H));
  std::vector<D> out = nans<D>(in.dout.size());
  std::vector<float> lse(static_cast<size_t>(g.B * g.H * g.S), kNaN);
  simt::launch_with_smem(cc::attention_forward_kernel<HD, D>, grid, cc::kThreads,
                         cc::forward_smem_bytes<HD>(), out.data(), lse.data(), qkv.data(), g.S, g.H,
                         g.scale);
  const std::vector<float> delta = delta_of<HD>(dout, out, g);
  std::vector<D> dqkv = nans<D>(in.qkv.size());
  simt::launch_with_smem(cc::attention_backward_dkdv_kernel<HD, D>, grid, cc::kThreads,
                         cc::backward_dkdv_smem_bytes<HD>(), dqkv.data(), qkv.data(), dout.data(),
                         static_cast<const float*>(lse.data()), delta.data(), g.S, g.H, g.scale);
  simt::launch_with_smem(cc::attention_backward_dq_kernel<HD, D>, grid, cc::kThreads,
                         cc::backward_dq_smem_bytes<HD>(), dqkv.data(), qkv.data(), dout.data(),
                         static_cast<const float*>(lse.data()), delta.data(), g.S, g.H, g.scale);
  return {widened(out), widened(dqkv), lse};
}

template <typename D>
void check_cuda_cores(const Case& c, Tolerance out_tol, Tolerance grad_tol) {
  const Inputs in = random_inputs<D>(c);
  const Outputs got = run_both_orders(
      [&] { return c.hd == 64 ? run_cuda_cores<64, D>(in, c) : run_cuda_cores<128, D>(in, c); });
  expect_matches_reference(in, got, c, out_tol, grad_tol);
}

class EmulatedCudaCoreAttention : public ::testing::TestWithParam<Case> {};

TEST_P(EmulatedCudaCoreAttention, Float32MatchesTheFloat64Cpu) {
  check_cuda_cores<float>(GetParam(), kF32, kF32);
}

TEST_P(EmulatedCudaCoreAttention, Bfloat16MatchesTheFloat64Cpu) {
  check_cuda_cores<__nv_bfloat16>(GetParam(), kBf16Out, kBf16Grad);
}

// One key; a tile and a partial one, for two sequences of three heads; three tiles with a
// partial last (the dK/dV kernel loops over query tiles below its keys, the others over key
// tiles up to the diagonal).
INSTANTIATE_TEST_SUITE_P(HeadDimsAndPartialTiles, EmulatedCudaCoreAttention,
                         ::testing::Values(Case{64, 1}, Case{64, 45, 2, 3}, Case{128, 70}),
                         case_name);

}  // namespace
}  // namespace tessera
