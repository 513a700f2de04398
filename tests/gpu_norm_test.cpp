// The LayerNorm, embedding and AdamW CUDA kernels against their CPU twins, in float32 and
// bfloat16. Gradients start non-zero, so every backward is also checked to accumulate (+=). In
// bfloat16 the CPU twin gets the inputs rounded through bf16, so a comparison measures the
// kernel, not the rounding of its inputs. Ops that add in the CPU's order (embedding, positional,
// scale) must match it exactly; the reductions must give the same bits on every run. The fused
// optimizer ops (mixed-precision AdamW, the batched sum of squares) must give the bits of the
// unfused CUDA ops they replace.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/ops/adamw.h"
#include "core/ops/cast.h"
#include "core/ops/embedding.h"
#include "core/ops/gelu.h"
#include "core/ops/layernorm.h"
#include "core/tensor.h"
#include "tests/bitwise.h"
#include "tests/expect_error.h"
#include "tests/gpu_support.h"

namespace tessera {
namespace {

using test_support::bitwise_equal;
using test_support::expect_internal_error;

using gpu_test::dtype_test_name;
using gpu_test::expect_close;
using gpu_test::random_host;
using gpu_test::round_to_bf16;
using gpu_test::to_gpu;
using gpu_test::to_host_f32;

constexpr DType F32 = DType::F32;
constexpr DType BF16 = DType::BF16;
constexpr Device CUDA = Device::CUDA;

// Every tolerance is per element: |gpu - cpu| <= atol + rtol |cpu|.
// F32 LayerNorm outputs and statistics: the GPU sums a row in another order (32 lanes, then a
// butterfly) and fuses multiply-adds, so each O(1) value is a few float roundings (~1e-7) away.
constexpr double kF32Tol = 1e-5;
// F32 dweight/dbias: sums over up to 600 rows of O(1) terms in another order (row chunks, then
// chunk partials); the rounding error grows like sqrt(N) * 6e-8 * |partial sums| ~ 1e-5.
constexpr double kF32ColumnSumAtol = 1e-4;
// BF16 outputs: computed in fp32 from the same inputs and rounded once to bf16, which moves a
// value by at most half a bf16 ulp, 2^-9 relative; 8e-3 (two ulps) leaves room for the fp32
// differences above pushing a value across a rounding boundary. atol covers values near zero.
constexpr double kBf16Rtol = 8e-3;
constexpr double kBf16Atol = 1e-3;
// AdamW in F32: the kernel rounds every operation to nearest with no FMA, in the CPU loop's order,
// so the bits should match; a few float ulps (6e-8 relative each) of slack keep the test valid
// should a compiler contract the CPU loop into FMAs. lr = 1e-2 makes an error in the update show.
constexpr double kAdamWRtol = 1e-6;
constexpr double kAdamWAtol = 1e-7;
// sum_of_squares: squares of float or bf16 values are exact in double; only the order of ~1e6
// double additions differs (1e-16 each).
constexpr double kSumOfSquaresRtol = 1e-12;

struct Tolerance {
  double atol, rtol;
};

Tolerance output_tol(DType dtype) {
  return dtype == F32 ? Tolerance{kF32Tol, kF32Tol} : Tolerance{kBf16Atol, kBf16Rtol};
}
Tolerance column_sum_tol(DType dtype) {
  return dtype == F32 ? Tolerance{kF32ColumnSumAtol, kF32Tol} : Tolerance{kBf16Atol, kBf16Rtol};
}

// The host F32 tensor as the GPU holds it in `dtype`: rounded through bf16 for BF16.
Tensor stored_as(const Tensor& host, DType dtype) {
  return dtype == BF16 ? round_to_bf16(host) : host.clone();
}

// N(mean, stddev) host F32 values, as stored in `dtype`.
Tensor random_stored(const Shape& shape, uint64_t seed, DType dtype, double stddev = 1.0,
                     double mean = 0.0) {
  Tensor t = random_host(shape, seed, stddev);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] += static_cast<float>(mean);
  return stored_as(t, dtype);
}

Shape leading(const Shape& shape) {
  return Shape(shape.begin(), shape.end() - 1);
}

void expect_matches(const Tensor& gpu, const Tensor& cpu, Tolerance tol, const std::string& what) {
  expect_close(to_host_f32(gpu), cpu, tol.atol, tol.rtol, what);
}

// F32: the same bits as the CPU twin; BF16: the twin's fp32 value rounded to bf16 (the GPU adds in
// fp32 in the CPU's order and rounds once).
void expect_exact(const Tensor& gpu, const Tensor& cpu, DType dtype, const std::string& what) {
  expect_close(to_host_f32(gpu), stored_as(cpu, dtype), 0, 0, what);
}

class DtypeTest : public ::testing::TestWithParam<DType> {};

// ---------------------------------------------------------------------------------------------
// layernorm

// Rows past one 256-row chunk of the parameter-gradient sums (with a partial last chunk), C not a
// multiple of the 32 lanes, C below 32, and a GPT-2-like width.
const std::vector<Shape> kLayerNormShapes = {{3, 200, 300}, {300, 20}, {5, 1024}, {2, 64, 768}};

struct LayerNormInputs {
  Tensor inp, weight, bias, dout, dinp0, dweight0, dbias0;  // host F32, as stored in the dtype
};

LayerNormInputs layernorm_inputs(const Shape& shape, DType dtype, uint64_t seed) {
  const int64_t C = shape.back();
  LayerNormInputs in;
  // A mean of 3 against a spread of 2: a one-pass E[x^2] - E[x]^2 variance would lose digits.
  in.inp = random_stored(shape, seed, dtype, 2.0, 3.0);
  in.weight = random_stored({C}, seed + 1, dtype, 0.5, 1.0);
  in.bias = random_stored({C}, seed + 2, dtype, 0.5);
  in.dout = random_stored(shape, seed + 3, dtype);
  in.dinp0 = random_stored(shape, seed + 4, dtype);
  in.dweight0 = random_stored({C}, seed + 5, dtype);
  in.dbias0 = random_stored({C}, seed + 6, dtype);
  return in;
}

class GpuLayerNorm : public DtypeTest {};

TEST_P(GpuLayerNorm, ForwardMatchesCpuWithFloat32Statistics) {
  const DType dt = GetParam();
  uint64_t seed = 100;
  for (const Shape& shape : kLayerNormShapes) {
    SCOPED_TRACE(shape_str(shape));
    const LayerNormInputs in = layernorm_inputs(shape, dt, seed += 10);
    Tensor out(shape, F32), mean(leading(shape), F32), rstd(leading(shape), F32);
    ops::layernorm_forward(out, mean, rstd, in.inp, in.weight, in.bias);

    Tensor g_out(shape, dt, CUDA), g_mean(leading(shape), F32, CUDA);
    Tensor g_rstd(leading(shape), F32, CUDA);
    ops::layernorm_forward(g_out, g_mean, g_rstd, to_gpu(in.inp, dt), to_gpu(in.weight, dt),
                           to_gpu(in.bias, dt));
    expect_matches(g_out, out, output_tol(dt), "out");
    // fp32 statistics whatever the activations' dtype.
    expect_matches(g_mean, mean, {kF32Tol, kF32Tol}, "mean");
    expect_matches(g_rstd, rstd, {kF32Tol, kF32Tol}, "rstd");
  }
}

TEST_P(GpuLayerNorm, BackwardAccumulatesIntoNonZeroGradientsLikeCpu) {
  const DType dt = GetParam();
  uint64_t seed = 200;
  for (const Shape& shape : kLayerNormShapes) {
    SCOPED_TRACE(shape_str(shape));
    const int64_t C = shape.back();
    const LayerNormInputs in = layernorm_inputs(shape, dt, seed += 10);
    Tensor out(shape, F32), mean(leading(shape), F32), rstd(leading(shape), F32);
    ops::layernorm_forward(out, mean, rstd, in.inp, in.weight, in.bias);
    Tensor dinp = in.dinp0.clone(), dweight = in.dweight0.clone(), dbias = in.dbias0.clone();
    ops::layernorm_backward(dinp, dweight, dbias, in.dout, in.inp, in.weight, mean, rstd);

    const Tensor g_inp = to_gpu(in.inp, dt), g_weight = to_gpu(in.weight, dt);
    Tensor g_out(shape, dt, CUDA), g_mean(leading(shape), F32, CUDA);
    Tensor g_rstd(leading(shape), F32, CUDA);
    ops::layernorm_forward(g_out, g_mean, g_rstd, g_inp, g_weight, to_gpu(in.bias, dt));
    Tensor g_dinp = to_gpu(in.dinp0, dt), g_dweight = to_gpu(in.dweight0, dt);
    Tensor g_dbias = to_gpu(in.dbias0, dt);
    ops::layernorm_backward(g_dinp, g_dweight, g_dbias, to_gpu(in.dout, dt), g_inp, g_weight,
                            g_mean, g_rstd);
    expect_matches(g_dinp, dinp, output_tol(dt), "dinp");
    expect_matches(g_dweight, dweight, column_sum_tol(dt), "dweight over " + std::to_string(C));
    expect_matches(g_dbias, dbias, column_sum_tol(dt), "dbias");
  }
}

TEST_P(GpuLayerNorm, BackwardIsBitwiseIdenticalRunToRun) {
  const DType dt = GetParam();
  const Shape shape = {8, 512, 768};  // 64 row chunks of the parameter-gradient sums
  const LayerNormInputs in = layernorm_inputs(shape, dt, 300);
  const Tensor g_inp = to_gpu(in.inp, dt), g_weight = to_gpu(in.weight, dt);
  const Tensor g_dout = to_gpu(in.dout, dt);
  Tensor g_out(shape, dt, CUDA), g_mean(leading(shape), F32, CUDA);
  Tensor g_rstd(leading(shape), F32, CUDA);
  ops::layernorm_forward(g_out, g_mean, g_rstd, g_inp, g_weight, to_gpu(in.bias, dt));
  std::vector<Tensor> runs[2];
  for (auto& run : runs) {
    Tensor g_dinp = to_gpu(in.dinp0, dt), g_dweight = to_gpu(in.dweight0, dt);
    Tensor g_dbias = to_gpu(in.dbias0, dt);
    ops::layernorm_backward(g_dinp, g_dweight, g_dbias, g_dout, g_inp, g_weight, g_mean, g_rstd);
    run = {g_dinp, g_dweight, g_dbias};
  }
  EXPECT_TRUE(bitwise_equal(runs[0][0], runs[1][0])) << "dinp";
  EXPECT_TRUE(bitwise_equal(runs[0][1], runs[1][1])) << "dweight";
  EXPECT_TRUE(bitwise_equal(runs[0][2], runs[1][2])) << "dbias";
}

TEST_P(GpuLayerNorm, FusedResidualForwardMatchesCpuResidualThenLayerNorm) {
  const DType dt = GetParam();
  uint64_t seed = 400;
  for (const Shape& shape : kLayerNormShapes) {
    SCOPED_TRACE(shape_str(shape));
    const int64_t C = shape.back();
    const Tensor a = random_stored(shape, seed += 10, dt, 2.0, 3.0);
    const Tensor b = random_stored(shape, seed + 1, dt);
    const Tensor weight = random_stored({C}, seed + 2, dt, 0.5, 1.0);
    const Tensor bias = random_stored({C}, seed + 3, dt, 0.5);
    // The GPU normalises the residual as stored, so the twin normalises the stored sum too.
    Tensor sum(shape, F32);
    ops::residual_forward(sum, a, b);
    const Tensor residual = stored_as(sum, dt);
    Tensor out(shape, F32), mean(leading(shape), F32), rstd(leading(shape), F32);
    ops::layernorm_forward(out, mean, rstd, residual, weight, bias);

    const Tensor g_a = to_gpu(a, dt), g_b = to_gpu(b, dt);
    const Tensor g_weight = to_gpu(weight, dt), g_bias = to_gpu(bias, dt);
    Tensor g_residual(shape, dt, CUDA), g_out(shape, dt, CUDA);
    Tensor g_mean(leading(shape), F32, CUDA), g_rstd(leading(shape), F32, CUDA);
    ops::residual_layernorm_forward(g_residual, g_out, g_mean, g_rstd, g_a, g_b, g_weight, g_bias);
    expect_exact(g_residual, sum, dt, "residual");
    expect_matches(g_out, out, output_tol(dt), "out");
    expect_matches(g_mean, mean, {kF32Tol, kF32Tol}, "mean");
    expect_matches(g_rstd, rstd, {kF32Tol, kF32Tol}, "rstd");

    // In place (residual aliasing a): the same bits.
    Tensor g_inplace = g_a.clone(), g_out2(shape, dt, CUDA);
    Tensor g_mean2(leading(shape), F32, CUDA), g_rstd2(leading(shape), F32, CUDA);
    ops::residual_layernorm_forward(g_inplace, g_out2, g_mean2, g_rstd2, g_inplace, g_b, g_weight,
                                    g_bias);
    EXPECT_TRUE(bitwise_equal(g_inplace, g_residual)) << "residual in place";
    EXPECT_TRUE(bitwise_equal(g_out2, g_out)) << "out with residual in place";
  }
}

TEST_P(GpuLayerNorm, RejectsStatisticsInTheActivationDtype) {
  const DType dt = GetParam();
  Tensor inp({4, 8}, dt, CUDA), weight({8}, dt, CUDA), out({4, 8}, dt, CUDA);
  Tensor mean({4}, F32, CUDA), rstd_f64({4}, DType::F64, CUDA);
  expect_internal_error([&] { ops::layernorm_forward(out, mean, rstd_f64, inp, weight, weight); },
                        "layernorm_forward: rstd must be a contiguous float32 tensor on cuda");
  if (dt == BF16) {
    Tensor mean_bf16({4}, BF16, CUDA), rstd({4}, F32, CUDA);
    expect_internal_error(
        [&] { ops::layernorm_forward(out, mean_bf16, rstd, inp, weight, weight); },
        "layernorm_forward: mean must be a contiguous float32 tensor on cuda, found bfloat16");
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GpuLayerNorm, ::testing::Values(F32, BF16), dtype_test_name);

// ---------------------------------------------------------------------------------------------
// embedding

// Rank 1 of a vocab-parallel table: rows [300, 550) of a 700-token vocabulary.
constexpr int64_t kVocab = 700, kVocabStart = 300, kShardRows = 250;

// [B, T] tokens: a third on five rows of the shard (many repeats), the first on the row just
// before the shard and the second just past it, the rest uniform over the whole vocabulary.
Tensor shard_tokens(int64_t B, int64_t T, uint64_t seed) {
  Tensor tokens({B, T}, DType::I32);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> any(0, kVocab - 1);
  int32_t* p = tokens.data<int32_t>();
  for (int64_t i = 0; i < tokens.numel(); ++i)
    p[i] = i % 3 == 0 ? static_cast<int32_t>(kVocabStart + i % 5) : any(rng);
  p[1] = kVocabStart - 1;
  p[2] = kVocabStart + kShardRows;
  return tokens;
}

class GpuEmbedding : public DtypeTest {};

TEST_P(GpuEmbedding, ForwardOnAShardMatchesCpuWithZeroRowsOutsideIt) {
  const DType dt = GetParam();
  const int64_t B = 4, T = 64, C = 257;  // C past one 256-thread block
  const Tensor tokens = shard_tokens(B, T, 1);
  const Tensor table = random_stored({kShardRows, C}, 2, dt);
  Tensor out({B, T, C}, F32);
  ops::embedding_forward(out, tokens, table, kVocabStart);

  // Start from non-zero values, so the zero rows must be written.
  Tensor g_out = to_gpu(random_host({B, T, C}, 3), dt);
  ops::embedding_forward(g_out, tokens.to(CUDA), to_gpu(table, dt), kVocabStart);
  expect_exact(g_out, out, dt, "out");
  const Tensor host = to_host_f32(g_out);
  for (int64_t i : {int64_t{1}, int64_t{2}})
    for (int64_t c = 0; c < C; ++c)
      ASSERT_EQ(host.data<float>()[i * C + c], 0.0f) << "token " << i << " column " << c;
}

TEST_P(GpuEmbedding, BackwardWithRepeatedTokensAccumulatesLikeCpu) {
  const DType dt = GetParam();
  const int64_t B = 4, T = 64, C = 257;
  const Tensor tokens = shard_tokens(B, T, 4);
  const Tensor dout = random_stored({B, T, C}, 5, dt);
  const Tensor dtable0 = random_stored({kShardRows, C}, 6, dt);
  Tensor dtable = dtable0.clone();
  ops::embedding_backward(dtable, dout, tokens, kVocabStart);

  Tensor g_dtable = to_gpu(dtable0, dt);
  ops::embedding_backward(g_dtable, to_gpu(dout, dt), tokens.to(CUDA), kVocabStart);
  expect_exact(g_dtable, dtable, dt, "dtable");
}

TEST_P(GpuEmbedding, BackwardIsBitwiseIdenticalRunToRun) {
  const DType dt = GetParam();
  const int64_t B = 8, T = 1024, C = 768;
  const Tensor g_tokens = shard_tokens(B, T, 7).to(CUDA);
  const Tensor g_dout = to_gpu(random_stored({B, T, C}, 8, dt), dt);
  const Tensor dtable0 = random_stored({kShardRows, C}, 9, dt);
  Tensor first = to_gpu(dtable0, dt), second = to_gpu(dtable0, dt);
  ops::embedding_backward(first, g_dout, g_tokens, kVocabStart);
  ops::embedding_backward(second, g_dout, g_tokens, kVocabStart);
  EXPECT_TRUE(bitwise_equal(first, second));
}

TEST_P(GpuEmbedding, PositionalForwardAndBackwardMatchCpu) {
  const DType dt = GetParam();
  const int64_t B = 3, T = 50, C = 130, rows = 64;  // the table has more rows than T
  const Tensor x0 = random_stored({B, T, C}, 10, dt), pos = random_stored({rows, C}, 11, dt);
  const Tensor dx = random_stored({B, T, C}, 12, dt), dpos0 = random_stored({rows, C}, 13, dt);
  Tensor x = x0.clone(), dpos = dpos0.clone();
  ops::positional_forward(x, pos);
  ops::positional_backward(dpos, dx);

  Tensor g_x = to_gpu(x0, dt), g_dpos = to_gpu(dpos0, dt);
  ops::positional_forward(g_x, to_gpu(pos, dt));
  ops::positional_backward(g_dpos, to_gpu(dx, dt));
  expect_exact(g_x, x, dt, "x");
  expect_exact(g_dpos, dpos, dt, "dpos (rows past T unchanged)");
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GpuEmbedding, ::testing::Values(F32, BF16), dtype_test_name);

// ---------------------------------------------------------------------------------------------
// adamw and optimizer reductions

TEST(GpuAdamW, FiveStepsWithWeightDecayMatchCpuInFloat32) {
  const int64_t n = 10007;
  Tensor param = random_host({n}, 20), exp_avg({n}, F32), exp_avg_sq({n}, F32);
  Tensor g_param = param.to(CUDA), g_exp_avg({n}, F32, CUDA), g_exp_avg_sq({n}, F32, CUDA);
  ops::AdamWStep s;
  s.lr = 1e-2;
  s.weight_decay = 0.1;
  for (s.t = 1; s.t <= 5; ++s.t) {
    s.grad_scale = s.t == 3 ? 1.0 : 0.2 * static_cast<double>(s.t);  // clipping's factor
    const Tensor grad = random_host({n}, 20 + static_cast<uint64_t>(s.t));
    ops::adamw_update(param, grad, exp_avg, exp_avg_sq, s);
    ops::adamw_update(g_param, grad.to(CUDA), g_exp_avg, g_exp_avg_sq, s);
  }
  expect_close(g_param.to(Device::CPU), param, kAdamWAtol, kAdamWRtol, "param");
  expect_close(g_exp_avg.to(Device::CPU), exp_avg, kAdamWAtol, kAdamWRtol, "exp_avg");
  expect_close(g_exp_avg_sq.to(Device::CPU), exp_avg_sq, kAdamWAtol, kAdamWRtol, "exp_avg_sq");
}

TEST(GpuAdamW, RejectsBfloat16MasterWeights) {
  Tensor p({4}, BF16, CUDA), g({4}, BF16, CUDA), m({4}, BF16, CUDA), v({4}, BF16, CUDA);
  expect_internal_error([&] { ops::adamw_update(p, g, m, v, ops::AdamWStep{}); },
                        "adamw_update: param (fp32 master weights on cuda) must be a contiguous "
                        "float32 tensor on cuda, found bfloat16");
}

class GpuOptimizerReductions : public DtypeTest {};

TEST_P(GpuOptimizerReductions, SumOfSquaresMatchesCpuDoubleSumAndIsBitwiseStable) {
  const DType dt = GetParam();
  // One element; less than one block; more than 1024 blocks of 256 (a grid-stride loop).
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{3} * 1024 * 256 + 7}) {
    SCOPED_TRACE(n);
    const Tensor x = random_stored({n}, 30 + static_cast<uint64_t>(n), dt);
    const double cpu = ops::sum_of_squares(x);
    const Tensor g_x = to_gpu(x, dt);
    const double first = ops::sum_of_squares(g_x), second = ops::sum_of_squares(g_x);
    EXPECT_NEAR(first, cpu, kSumOfSquaresRtol * cpu);
    EXPECT_EQ(std::memcmp(&first, &second, sizeof first), 0) << first << " vs " << second;
  }
}

TEST_P(GpuOptimizerReductions, ScaleMatchesCpuExactly) {
  const DType dt = GetParam();
  const Tensor x0 = random_stored({5003}, 40, dt);
  Tensor x = x0.clone();
  ops::scale(x, 0.37);
  Tensor g_x = to_gpu(x0, dt);
  ops::scale(g_x, 0.37);
  expect_exact(g_x, x, dt, "x");
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GpuOptimizerReductions, ::testing::Values(F32, BF16),
                         dtype_test_name);

TEST(GpuSumOfSquares, OfAListIsTheLoopOfSingleCudaSumsBitwiseAndMatchesCpu) {
  // float32 and bfloat16 mixed, empty tensors among them. The tensors' partials share one scratch
  // buffer, safe by stream order: a race would show as a wrong sum.
  const std::vector<std::pair<int64_t, DType>> parts = {
      {1000, F32},
      {int64_t{3} * 1024 * 256 + 7, BF16},  // past 1024 blocks of 256: a grid-stride loop
      {0, F32},
      {1, BF16},
      {300000, F32},
      {37, BF16},
      {0, BF16},
  };
  std::vector<Tensor> host, gpu;
  uint64_t seed = 50;
  for (const auto& [n, dt] : parts) {
    host.push_back(random_stored({n}, seed++, dt));
    gpu.push_back(to_gpu(host.back(), dt));
  }
  double loop = 0, cpu = 0;
  for (const Tensor& x : gpu) loop += ops::sum_of_squares(x);
  for (const Tensor& x : host) cpu += ops::sum_of_squares(x);
  const double batched = ops::sum_of_squares(gpu), again = ops::sum_of_squares(gpu);
  EXPECT_EQ(std::memcmp(&batched, &loop, sizeof batched), 0) << batched << " vs " << loop;
  EXPECT_EQ(std::memcmp(&batched, &again, sizeof batched), 0) << batched << " vs " << again;
  EXPECT_NEAR(batched, cpu, kSumOfSquaresRtol * cpu);
  EXPECT_EQ(ops::sum_of_squares(std::vector<Tensor>{}), 0.0);

  // In order: 2^54, then ones that each round away (summed from the end they would make 4, one
  // ulp of 2^54).
  Tensor big({1}, F32), one({1}, F32);
  big.fill(std::ldexp(1.0, 27));
  one.fill(1.0);
  const std::vector<Tensor> ordered = {to_gpu(big, F32), to_gpu(one, BF16), to_gpu(one, F32),
                                       to_gpu(one, BF16)};
  EXPECT_EQ(ops::sum_of_squares(ordered), std::ldexp(1.0, 54));
}

TEST(GpuSumOfSquares, RefusesAListAcrossDevices) {
  const std::vector<Tensor> xs = {Tensor({2}, F32, CUDA), Tensor({2}, F32)};
  expect_internal_error(
      [&] { ops::sum_of_squares(xs); },
      "sum_of_squares: all of xs must be on one device, found xs[0] on cuda and xs[1] on cpu");
}

// The gradient's dtype: float32 (given fp32 sums) or bfloat16 (the Param's own grad).
class GpuAdamWMixed : public DtypeTest {};

TEST_P(GpuAdamWMixed, FiveStepsEqualCudaUpdateThenCastBitwise) {
  const DType grad_dtype = GetParam();
  const int64_t n = 10007;
  const Tensor master0 = random_host({n}, 60);
  Tensor master = master0.to(CUDA), exp_avg({n}, F32, CUDA), exp_avg_sq({n}, F32, CUDA);
  Tensor value = to_gpu(random_host({n}, 61), BF16);  // stale: the update must overwrite it
  Tensor ref_master = master0.to(CUDA), ref_exp_avg({n}, F32, CUDA);
  Tensor ref_exp_avg_sq({n}, F32, CUDA), ref_value({n}, BF16, CUDA);
  ops::AdamWStep s;
  s.lr = 1e-2;
  s.weight_decay = 0.1;
  for (s.t = 1; s.t <= 5; ++s.t) {
    s.grad_scale = s.t == 3 ? 1.0 : 0.2 * static_cast<double>(s.t);  // clipping's factor
    const Tensor grad = to_gpu(random_host({n}, 61 + static_cast<uint64_t>(s.t)), grad_dtype);
    Tensor grad32({n}, F32, CUDA);
    ops::cast(grad32, grad);
    ops::adamw_update(ref_master, grad32, ref_exp_avg, ref_exp_avg_sq, s);
    ops::cast(ref_value, ref_master);
    ops::adamw_update_mixed(master, value, grad, exp_avg, exp_avg_sq, s);
  }
  EXPECT_TRUE(bitwise_equal(master, ref_master)) << "master";
  EXPECT_TRUE(bitwise_equal(value, ref_value)) << "value";
  EXPECT_TRUE(bitwise_equal(exp_avg, ref_exp_avg)) << "exp_avg";
  EXPECT_TRUE(bitwise_equal(exp_avg_sq, ref_exp_avg_sq)) << "exp_avg_sq";
}

INSTANTIATE_TEST_SUITE_P(GradDtypes, GpuAdamWMixed, ::testing::Values(F32, BF16), dtype_test_name);

}  // namespace
}  // namespace tessera
