// The CUDA kernels of the default training path (LayerNorm and its fused residual add, the bias
// gradient, GELU and the residual kernels, the shared add, the AdamW updates and the optimizer's
// sum of squares), their own source run on the CPU by tests/simt_emulation.h and held to their
// CPU twins at the GPU tests' tolerances (tests/gpu_norm_test.cpp, tests/gpu_matmul_test.cpp),
// in float32 and bfloat16, with the launch shapes their .cu launchers use. Every kernel runs
// twice, the threads of each block in opposite orders, and must give the same bits: a race
// between threads shows as a difference. The GPU tests run the same source on a GPU; these catch
// index arithmetic, partial blocks and tails, and races without one.
#include "tests/simt_emulation.h"
// After the emulation: the kernels' source compiles for the host under it.
#include "core/ops/adamw_kernels.cuh"
#include "core/ops/bias_kernels.cuh"
#include "core/ops/column_sum_kernels.cuh"
#include "core/ops/cross_entropy_kernels.cuh"
#include "core/ops/embedding_kernels.cuh"
#include "core/ops/gelu_kernels.cuh"
#include "core/ops/layernorm_kernels.cuh"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/ops/adamw.h"
#include "core/ops/cast.h"
#include "core/ops/cross_entropy.h"
#include "core/ops/embedding.h"
#include "core/ops/gelu.h"
#include "core/ops/layernorm.h"
#include "core/tensor.h"
#include "parallel/local_communicator.h"
#include "tests/bitwise.h"
#include "tests/gpu_support.h"

namespace tessera {
namespace {

using gpu_test::dtype_test_name;
using gpu_test::expect_close;
using gpu_test::random_host;
using gpu_test::round_to_bf16;
using simt::Schedule;
using tessera::cuda::blocks_for;
using tessera::cuda::kPack;
using tessera::cuda::packable;
using test_support::bitwise_equal;

constexpr DType F32 = DType::F32;
constexpr DType BF16 = DType::BF16;

// Per element |kernel - cpu| <= atol + rtol |cpu|, as the GPU tests state and explain them.
struct Tolerance {
  double atol, rtol;
};
constexpr Tolerance kF32Output{1e-5, 1e-5};     // a few fp32 roundings in another order
constexpr Tolerance kF32ColumnSum{1e-4, 1e-5};  // sums over ~100 rows in another order
constexpr Tolerance kBf16Output{1e-3, 8e-3};    // one bf16 rounding, plus fp32 noise across it
constexpr Tolerance kF32Gelu{1e-4, 1e-4};       // expf against the CPU's own exp
constexpr Tolerance kBf16Gelu{2e-2, 2e-2};      // and one bf16 rounding
// da = db: the kernel rounds da + dout to bf16 before adding dout again, the fp32 twin does not.
constexpr Tolerance kBf16TwoRoundings{1e-2, 8e-3};
constexpr double kSumOfSquaresRtol = 1e-12;  // only the order of double additions differs

Tolerance output_tol(DType dt) {
  return dt == F32 ? kF32Output : kBf16Output;
}
Tolerance column_sum_tol(DType dt) {
  return dt == F32 ? kF32ColumnSum : kBf16Output;
}
void expect_within(const Tensor& kernel, const Tensor& cpu, Tolerance tol,
                   const std::string& what) {
  expect_close(ops::cast_to(kernel, F32), cpu, tol.atol, tol.rtol, what);
}

// Runs f with a value of the kernels' element type for dt: float or __nv_bfloat16.
template <typename F>
void with_element_type(DType dt, F&& f) {
  if (dt == F32)
    f(float{});
  else
    f(__nv_bfloat16{});
}

// A tensor's elements as a kernel sees them (BF16 and __nv_bfloat16 share the layout).
template <typename D>
D* elements(const Tensor& t) {
  return static_cast<D*>(t.raw());
}

// N(mean, stddev) values from `seed` as a host F32 tensor holding what `dt` can store.
Tensor random_stored(const Shape& shape, uint64_t seed, DType dt, double stddev = 1.0,
                     double mean = 0.0) {
  Tensor t = random_host(shape, seed, stddev);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] += static_cast<float>(mean);
  return dt == BF16 ? round_to_bf16(t) : t;
}
// The value of a fp32 result once stored in dt.
Tensor stored(const Tensor& f32, DType dt) {
  return dt == BF16 ? round_to_bf16(f32) : f32;
}

// The tensor in dtype dt: exact for the values random_stored makes for dt.
Tensor in_dtype(const Tensor& t, DType dt) {
  return ops::cast_to(t, dt).clone();
}

// A tensor every element of which is NaN: what a kernel must write, or scratch it must fill
// before it reads (the GPU's scratch is not cleared), starts so.
Tensor nans(const Shape& shape, DType dt) {
  Tensor t(shape, dt == BF16 ? F32 : dt);
  t.fill(std::numeric_limits<double>::quiet_NaN());
  return dt == BF16 ? in_dtype(t, BF16) : t;
}

// run() gives the kernels' outputs, fresh each call; it runs with the threads of each block in
// either order, which must give the same bits. Returns the outputs of one of them.
template <typename Run>
std::vector<Tensor> run_both_orders(Run&& run, const std::vector<std::string>& names) {
  simt::schedule = Schedule::HighestFirst;
  const std::vector<Tensor> high = run();
  simt::schedule = Schedule::LowestFirst;
  std::vector<Tensor> low = run();
  for (size_t i = 0; i < names.size(); ++i)
    EXPECT_TRUE(bitwise_equal(low[i], high[i])) << names[i] << " depends on the thread order";
  return low;
}

struct Matrix {
  int64_t rows, columns;
};
std::string matrix_name(Matrix m) {
  return std::to_string(m.rows) + " x " + std::to_string(m.columns);
}
// Rows that leave a partial block of 8 rows and a partial chunk of 64, columns below one warp,
// not a multiple of the 4-element pack, and past one 128-column stripe with a partial second.
const std::vector<Matrix> kMatrices = {{37, 100}, {9, 20}, {130, 136}, {70, 30}};

class DtypeTest : public ::testing::TestWithParam<DType> {};

// ---------------------------------------------------------------------------------------------
// LayerNorm (core/ops/layernorm_kernels.cuh, launched as layernorm_cuda.cu launches them)

namespace ln = ops::cuda::layernorm_kernels;
// The finish both column sums share (core/ops/column_sum_kernels.cuh).
namespace cs = ops::cuda::column_sums;

class EmulatedLayerNorm : public DtypeTest {};

TEST_P(EmulatedLayerNorm, ForwardAndFusedResidualForwardMatchTheCpu) {
  const DType dt = GetParam();
  uint64_t seed = 100;
  for (const Matrix shape : kMatrices) {
    SCOPED_TRACE(matrix_name(shape));
    const int64_t N = shape.rows, C = shape.columns;
    // A mean of 3 against a spread of 2: a one-pass variance would lose digits.
    const Tensor a = random_stored({N, C}, seed += 10, dt, 2.0, 3.0);
    const Tensor b = random_stored({N, C}, seed + 1, dt);
    const Tensor weight = random_stored({C}, seed + 2, dt, 0.5, 1.0);
    const Tensor bias = random_stored({C}, seed + 3, dt, 0.5);
    const Tensor k_a = in_dtype(a, dt), k_b = in_dtype(b, dt);
    const Tensor k_weight = in_dtype(weight, dt), k_bias = in_dtype(bias, dt);
    const unsigned blocks = blocks_for(N, ln::kRowsPerBlock);
    const std::vector<Tensor> got = run_both_orders(
        [&] {
          Tensor out = nans({N, C}, dt), mean = nans({N}, F32), rstd = nans({N}, F32);
          Tensor residual = nans({N, C}, dt), out2 = nans({N, C}, dt);
          Tensor mean2 = nans({N}, F32), rstd2 = nans({N}, F32);
          with_element_type(dt, [&](auto tag) {
            using D = decltype(tag);
            simt::launch(ln::layernorm_forward_kernel<D>, blocks, ln::kThreads, elements<D>(out),
                         elements<float>(mean), elements<float>(rstd), elements<const D>(k_a),
                         elements<const D>(k_weight), elements<const D>(k_bias), N, C);
            simt::launch(ln::residual_layernorm_forward_kernel<D>, blocks, ln::kThreads,
                         elements<D>(residual), elements<D>(out2), elements<float>(mean2),
                         elements<float>(rstd2), elements<const D>(k_a), elements<const D>(k_b),
                         elements<const D>(k_weight), elements<const D>(k_bias), N, C);
          });
          return std::vector<Tensor>{out, mean, rstd, residual, out2, mean2, rstd2};
        },
        {"out", "mean", "rstd", "residual", "fused out", "fused mean", "fused rstd"});

    Tensor out({N, C}, F32), mean({N}, F32), rstd({N}, F32);
    ops::layernorm_forward(out, mean, rstd, a, weight, bias);
    expect_within(got[0], out, output_tol(dt), "out");
    expect_within(got[1], mean, kF32Output, "mean");
    expect_within(got[2], rstd, kF32Output, "rstd");

    // The fused kernel normalises the residual as stored, so the twin normalises the stored sum.
    Tensor sum({N, C}, F32);
    ops::residual_forward(sum, a, b);
    const Tensor residual = stored(sum, dt);
    Tensor out2({N, C}, F32), mean2({N}, F32), rstd2({N}, F32);
    ops::layernorm_forward(out2, mean2, rstd2, residual, weight, bias);
    expect_within(got[3], residual, {0, 0}, "residual");
    expect_within(got[4], out2, output_tol(dt), "fused out");
    expect_within(got[5], mean2, kF32Output, "fused mean");
    expect_within(got[6], rstd2, kF32Output, "fused rstd");
  }
}

TEST_P(EmulatedLayerNorm, BackwardAddsIntoNonZeroGradientsLikeTheCpu) {
  const DType dt = GetParam();
  uint64_t seed = 200;
  for (const Matrix shape : kMatrices) {
    SCOPED_TRACE(matrix_name(shape));
    const int64_t N = shape.rows, C = shape.columns;
    const Tensor inp = random_stored({N, C}, seed += 10, dt, 2.0, 3.0);
    const Tensor weight = random_stored({C}, seed + 1, dt, 0.5, 1.0);
    const Tensor bias = random_stored({C}, seed + 2, dt, 0.5);
    const Tensor dout = random_stored({N, C}, seed + 3, dt);
    const Tensor dinp0 = random_stored({N, C}, seed + 4, dt);
    const Tensor dweight0 = random_stored({C}, seed + 5, dt);
    const Tensor dbias0 = random_stored({C}, seed + 6, dt);
    // The statistics a forward saved, from the CPU twin: the backward is what is tested here.
    Tensor out({N, C}, F32), mean({N}, F32), rstd({N}, F32);
    ops::layernorm_forward(out, mean, rstd, inp, weight, bias);

    const Tensor k_inp = in_dtype(inp, dt), k_weight = in_dtype(weight, dt);
    const Tensor k_dout = in_dtype(dout, dt);
    const int64_t chunks = cs::chunks_of(N);
    const std::vector<Tensor> got = run_both_orders(
        [&] {
          Tensor dinp = in_dtype(dinp0, dt), dweight = in_dtype(dweight0, dt);
          Tensor dbias = in_dtype(dbias0, dt);
          Tensor partials = nans({2, chunks, C}, F32);
          float* dweight_part = elements<float>(partials);
          float* dbias_part = dweight_part + chunks * C;
          with_element_type(dt, [&](auto tag) {
            using D = decltype(tag);
            const D* dy = elements<const D>(k_dout);
            const D* x = elements<const D>(k_inp);
            const D* w = elements<const D>(k_weight);
            simt::launch(ln::layernorm_backward_dinp_kernel<D>, blocks_for(N, ln::kRowsPerBlock),
                         ln::kThreads, elements<D>(dinp), dy, x, w, elements<const float>(mean),
                         elements<const float>(rstd), N, C,
                         C % kPack == 0 && packable(elements<D>(dinp), dy, x, w));
            simt::launch(ln::layernorm_param_partials_kernel<D>, cs::partials_grid(N, C),
                         cs::partials_block(), dweight_part, dbias_part, dy, x,
                         elements<const float>(mean), elements<const float>(rstd), N, C,
                         C % kPack == 0 && packable(dy, x));
            const cs::ColumnSums<D, 2> sums{{elements<D>(dweight), elements<D>(dbias)},
                                            {dweight_part, dbias_part}};
            simt::launch(cs::finish_kernel<D, 2>, cs::finish_grid(C), cs::finish_block(), sums,
                         chunks, C);
          });
          return std::vector<Tensor>{dinp, dweight, dbias};
        },
        {"dinp", "dweight", "dbias"});

    Tensor dinp = dinp0.clone(), dweight = dweight0.clone(), dbias = dbias0.clone();
    ops::layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd);
    expect_within(got[0], dinp, output_tol(dt), "dinp");
    expect_within(got[1], dweight, column_sum_tol(dt), "dweight");
    expect_within(got[2], dbias, column_sum_tol(dt), "dbias");
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, EmulatedLayerNorm, ::testing::Values(F32, BF16), dtype_test_name);

// ---------------------------------------------------------------------------------------------
// The linear layer's bias (core/ops/bias_kernels.cuh, launched as matmul_cuda.cu launches them)

namespace bk = ops::cuda::bias_kernels;

class EmulatedBias : public DtypeTest {};

// dbias[n] += sum_m dout[m, n]: against the column sums in double, added to a non-zero start.
TEST_P(EmulatedBias, BackwardAddsTheColumnSums) {
  const DType dt = GetParam();
  uint64_t seed = 300;
  for (const Matrix shape : kMatrices) {
    SCOPED_TRACE(matrix_name(shape));
    const int64_t M = shape.rows, N = shape.columns;
    const Tensor dout = random_stored({M, N}, seed += 10, dt);
    const Tensor dbias0 = random_stored({N}, seed + 1, dt);
    const Tensor k_dout = in_dtype(dout, dt);
    const int64_t chunks = cs::chunks_of(M);
    const std::vector<Tensor> got = run_both_orders(
        [&] {
          Tensor dbias = in_dtype(dbias0, dt), partials = nans({chunks, N}, F32);
          with_element_type(dt, [&](auto tag) {
            using D = decltype(tag);
            const D* dy = elements<const D>(k_dout);
            simt::launch(bk::bias_backward_partials_kernel<D>, cs::partials_grid(M, N),
                         cs::partials_block(), elements<float>(partials), dy, M, N,
                         N % kPack == 0 && packable(dy));
            const cs::ColumnSums<D, 1> sums{{elements<D>(dbias)},
                                            {elements<const float>(partials)}};
            simt::launch(cs::finish_kernel<D, 1>, cs::finish_grid(N), cs::finish_block(), sums,
                         chunks, N);
          });
          return std::vector<Tensor>{dbias};
        },
        {"dbias"});
    Tensor want({N}, F32);
    for (int64_t n = 0; n < N; ++n) {
      double sum = dbias0.data<float>()[n];
      for (int64_t m = 0; m < M; ++m) sum += dout.data<float>()[m * N + n];
      want.data<float>()[n] = static_cast<float>(sum);
    }
    expect_within(got[0], want, column_sum_tol(dt), "dbias");
  }
}

// The product over an empty inner dimension: every row is the bias, or zeros without one.
TEST_P(EmulatedBias, FillRowsWritesTheBiasOrZeros) {
  const DType dt = GetParam();
  const int64_t M = 7, N = 45;
  const Tensor bias = random_stored({N}, 310, dt);
  const Tensor k_bias = in_dtype(bias, dt);
  const std::vector<Tensor> got = run_both_orders(
      [&] {
        Tensor with_bias = in_dtype(random_stored({M, N}, 311, dt), dt);  // stale values
        Tensor without = in_dtype(random_stored({M, N}, 312, dt), dt);
        with_element_type(dt, [&](auto tag) {
          using D = decltype(tag);
          simt::launch(bk::fill_rows_kernel<D>, blocks_for(M * N, bk::kFillThreads),
                       bk::kFillThreads, elements<D>(with_bias), elements<const D>(k_bias), M, N);
          simt::launch(bk::fill_rows_kernel<D>, blocks_for(M * N, bk::kFillThreads),
                       bk::kFillThreads, elements<D>(without), static_cast<const D*>(nullptr), M,
                       N);
        });
        return std::vector<Tensor>{with_bias, without};
      },
      {"with a bias", "without"});
  Tensor rows({M, N}, F32), zeros({M, N}, F32);
  for (int64_t i = 0; i < M * N; ++i) rows.data<float>()[i] = bias.data<float>()[i % N];
  expect_within(got[0], rows, {0, 0}, "rows of the bias");
  expect_within(got[1], zeros, {0, 0}, "zeros");
}

INSTANTIATE_TEST_SUITE_P(Dtypes, EmulatedBias, ::testing::Values(F32, BF16), dtype_test_name);

// ---------------------------------------------------------------------------------------------
// GELU, the residual backward and the shared add (core/ops/gelu_kernels.cuh,
// core/ops/cuda_elementwise.cuh, launched as gelu_cuda.cu and cast_cuda.cu launch them)

namespace gk = ops::cuda::gelu_kernels;

class EmulatedElementwise : public DtypeTest {};

TEST_P(EmulatedElementwise, GeluResidualAndAddMatchTheCpu) {
  const DType dt = GetParam();
  // Whole packs, a tail, a tail only; and whole packs taken element by element (outputs one
  // element past an aligned address).
  struct Case {
    int64_t n;
    bool misaligned;
  };
  uint64_t seed = 400;
  for (const Case c : {Case{1024, false}, Case{1001, false}, Case{3, false}, Case{1001, true}}) {
    SCOPED_TRACE(std::to_string(c.n) + (c.misaligned ? " elements, misaligned" : " elements"));
    const int64_t n = c.n, skip = c.misaligned ? 1 : 0;
    const Tensor x = random_stored({n}, seed += 10, dt, 3.0);
    const Tensor dout = random_stored({n}, seed + 1, dt);
    const Tensor da0 = random_stored({n}, seed + 2, dt), db0 = random_stored({n}, seed + 3, dt);
    const Tensor k_x = in_dtype(x, dt), k_dout = in_dtype(dout, dt);
    // The elements [skip, skip + n) of a buffer of n + 1.
    const auto slice = [&](const Tensor& buffer) {
      Tensor r({n}, dt);
      std::memcpy(r.raw(), static_cast<const char*>(buffer.raw()) + skip * dtype_size(dt),
                  r.bytes());
      return r;
    };
    const std::vector<Tensor> got = run_both_orders(
        [&] {
          Tensor out = nans({n + 1}, dt), dinp = nans({n + 1}, dt), sum = nans({n + 1}, dt);
          Tensor da = in_dtype(da0, dt), db = in_dtype(db0, dt), both = in_dtype(da0, dt);
          Tensor acc = in_dtype(da0, F32);  // cast_cuda.cu's accumulate: f32 += dt
          with_element_type(dt, [&](auto tag) {
            using D = decltype(tag);
            D* o = elements<D>(out) + skip;
            D* di = elements<D>(dinp) + skip;
            D* s = elements<D>(sum) + skip;
            const D* xp = elements<const D>(k_x);
            const D* dy = elements<const D>(k_dout);
            const unsigned blocks = tessera::cuda::blocks_for_packs(n);
            const int threads = tessera::cuda::kElementwiseThreads;
            simt::launch(gk::gelu_forward_kernel<D>, blocks, threads, o, xp, n, packable(o, xp));
            simt::launch(gk::gelu_backward_kernel<D>, blocks, threads, di, dy, xp, n,
                         packable(di, dy, xp));
            simt::launch(gk::residual_backward_kernel<D>, blocks, threads, elements<D>(da),
                         elements<D>(db), dy, n, packable(elements<D>(da), elements<D>(db), dy));
            simt::launch(gk::residual_backward_kernel<D>, blocks, threads, elements<D>(both),
                         elements<D>(both), dy, n, packable(elements<D>(both), dy));
            simt::launch(tessera::cuda::add_kernel<D, D, D>, blocks, threads, s, xp, dy, n,
                         packable(s, xp, dy));
            simt::launch(tessera::cuda::add_kernel<float, float, D>, blocks, threads,
                         elements<float>(acc), elements<const float>(acc), dy, n,
                         packable(elements<float>(acc), dy));
          });
          return std::vector<Tensor>{slice(out), slice(dinp), da, db, both, slice(sum), acc};
        },
        {"gelu", "gelu backward", "da", "db", "da = db", "add", "f32 += add"});

    Tensor gelu({n}, F32), dinp({n}, F32), sum({n}, F32), acc({n}, F32);
    ops::gelu_forward(gelu, x);
    ops::gelu_backward(dinp, dout, x);
    ops::residual_forward(sum, x, dout);
    ops::residual_forward(acc, da0, dout);
    Tensor da = da0.clone(), db = db0.clone(), both = da0.clone();
    ops::residual_backward(da, db, dout);
    ops::residual_backward(both, both, dout);
    const Tolerance gelu_tol = dt == F32 ? kF32Gelu : kBf16Gelu;
    expect_within(got[0], gelu, gelu_tol, "gelu");
    expect_within(got[1], dinp, gelu_tol, "gelu backward");
    // Sums of two stored values, added in fp32 and rounded once to dt, as the CPU adds them.
    expect_within(got[2], stored(da, dt), {0, 0}, "da");
    expect_within(got[3], stored(db, dt), {0, 0}, "db");
    expect_within(got[4], both, dt == F32 ? Tolerance{0, 0} : kBf16TwoRoundings, "da = db");
    expect_within(got[5], stored(sum, dt), {0, 0}, "add");
    expect_within(got[6], acc, {0, 0}, "f32 += add");
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, EmulatedElementwise, ::testing::Values(F32, BF16),
                         dtype_test_name);

// float32 -> bfloat16 -> float32 (as cast_cuda.cu launches cast_kernel): the host's rounding to
// nearest even, and back exactly; a tail, and element by element.
TEST(EmulatedCast, RoundsToBfloat16AndBackLikeTheHost) {
  for (const int64_t skip : {0, 1}) {
    const int64_t n = 1001;
    SCOPED_TRACE(skip ? "misaligned" : "aligned");
    // Values with low bits set, some exactly halfway between two bf16 values.
    Tensor x = random_host({n}, 560, 10.0);
    for (int64_t i = 0; i < n; i += 7) {
      uint32_t bits;
      std::memcpy(&bits, &x.data<float>()[i], sizeof bits);
      bits = (bits & 0xffff0000u) | 0x8000u;
      std::memcpy(&x.data<float>()[i], &bits, sizeof bits);
    }
    const std::vector<Tensor> got = run_both_orders(
        [&] {
          Tensor down = nans({n + 1}, BF16), up = nans({n + 1}, F32);
          __nv_bfloat16* d = elements<__nv_bfloat16>(down) + skip;
          float* u = elements<float>(up) + skip;
          const float* xp = elements<const float>(x);
          const unsigned blocks = tessera::cuda::blocks_for_packs(n);
          const int threads = tessera::cuda::kElementwiseThreads;
          simt::launch(tessera::cuda::cast_kernel<__nv_bfloat16, float>, blocks, threads, d, xp, n,
                       packable(d, xp));
          simt::launch(tessera::cuda::cast_kernel<float, __nv_bfloat16>, blocks, threads, u,
                       static_cast<const __nv_bfloat16*>(d), n, packable(u, d));
          Tensor r({n}, F32);
          std::memcpy(r.raw(), u, r.bytes());
          return std::vector<Tensor>{r};
        },
        {"round trip"});
    expect_within(got[0], round_to_bf16(x), {0, 0}, "float32 through bfloat16");
  }
}

// ---------------------------------------------------------------------------------------------
// Embeddings (core/ops/embedding_kernels.cuh, launched as embedding_cuda.cu launches them; CUB's
// stable radix sort between the backward's kernels is std::stable_sort here)

namespace ek = ops::cuda::embedding_kernels;

class EmulatedEmbedding : public DtypeTest {};

// Shard [40, 90) of a 120-token vocabulary; tokens repeat and fall on both sides of the shard.
TEST_P(EmulatedEmbedding, ShardForwardAndBackwardMatchTheCpuExactly) {
  const DType dt = GetParam();
  const int64_t n = 70, C = 300, rows = 50, vocab_start = 40;
  Tensor tokens({n}, DType::I32);
  std::mt19937_64 rng(570);
  std::vector<int> seen(120);
  int64_t on_shard = 0, repeated = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t t = static_cast<int32_t>(rng() % 120);
    tokens.data<int32_t>()[i] = t;
    on_shard += t >= vocab_start && t < vocab_start + rows;
    repeated += seen[static_cast<size_t>(t)]++ > 0 && t >= vocab_start && t < vocab_start + rows;
  }
  ASSERT_GT(on_shard, 0);
  ASSERT_LT(on_shard, n);
  ASSERT_GT(repeated, 0) << "no row of the shard gets two tokens";
  const Tensor table = random_stored({rows, C}, 571, dt), dout = random_stored({n, C}, 572, dt);
  const Tensor dtable0 = random_stored({rows, C}, 573, dt);
  const Tensor k_table = in_dtype(table, dt), k_dout = in_dtype(dout, dt);
  const int32_t* tok = elements<const int32_t>(tokens);
  const std::vector<Tensor> got = run_both_orders(
      [&] {
        Tensor out = in_dtype(random_stored({n, C}, 574, dt), dt);  // stale values
        Tensor dtable = in_dtype(dtable0, dt);
        Tensor keys({n}, DType::I32), index({n}, DType::I32);
        uint32_t* key = elements<uint32_t>(keys);
        int32_t* idx = elements<int32_t>(index);
        with_element_type(dt, [&](auto tag) {
          using D = decltype(tag);
          simt::launch(ek::embedding_forward_kernel<D>, static_cast<unsigned>(n), ek::kThreads,
                       elements<D>(out), tok, elements<const D>(k_table), vocab_start, rows, C);
          simt::launch(ek::embedding_sort_keys_kernel, blocks_for(n, ek::kThreads), ek::kThreads,
                       key, idx, tok, n, vocab_start, rows);
          std::vector<std::pair<uint32_t, int32_t>> pairs;
          for (int64_t i = 0; i < n; ++i) pairs.emplace_back(key[i], idx[i]);
          std::stable_sort(pairs.begin(), pairs.end(),
                           [](const auto& a, const auto& b) { return a.first < b.first; });
          for (int64_t i = 0; i < n; ++i) std::tie(key[i], idx[i]) = pairs[i];
          simt::launch(ek::embedding_backward_kernel<D>, static_cast<unsigned>(n), ek::kThreads,
                       elements<D>(dtable), elements<const D>(k_dout),
                       static_cast<const uint32_t*>(key), static_cast<const int32_t*>(idx), n, rows,
                       C);
        });
        return std::vector<Tensor>{out, dtable};
      },
      {"out", "dtable"});
  Tensor out({n, C}, F32), dtable = dtable0.clone();
  ops::embedding_forward(out, tokens, table, vocab_start);
  ops::embedding_backward(dtable, dout, tokens, vocab_start);
  expect_within(got[0], out, {0, 0}, "out");
  // Each row's tokens added in fp32 in token order, then rounded once to dt, as on the CPU.
  expect_within(got[1], stored(dtable, dt), {0, 0}, "dtable");
}

TEST_P(EmulatedEmbedding, PositionalForwardAndBackwardMatchTheCpuExactly) {
  const DType dt = GetParam();
  const int64_t B = 3, S = 7, C = 50;
  const Tensor x = random_stored({B, S, C}, 580, dt), pos = random_stored({S, C}, 581, dt);
  const Tensor dpos0 = random_stored({S, C}, 582, dt);
  const Tensor k_pos = in_dtype(pos, dt), k_x = in_dtype(x, dt);
  const std::vector<Tensor> got = run_both_orders(
      [&] {
        Tensor sum = in_dtype(x, dt), dpos = in_dtype(dpos0, dt);
        with_element_type(dt, [&](auto tag) {
          using D = decltype(tag);
          simt::launch(ek::positional_forward_kernel<D>,
                       dim3(blocks_for(S * C, ek::kThreads), static_cast<unsigned>(B)),
                       ek::kThreads, elements<D>(sum), elements<const D>(k_pos), S * C);
          simt::launch(ek::positional_backward_kernel<D>, blocks_for(S * C, ek::kThreads),
                       ek::kThreads, elements<D>(dpos), elements<const D>(k_x), B, S * C);
        });
        return std::vector<Tensor>{sum, dpos};
      },
      {"x + pos", "dpos"});
  Tensor sum = x.clone(), dpos = dpos0.clone();
  ops::positional_forward(sum, pos);
  ops::positional_backward(dpos, x);
  expect_within(got[0], stored(sum, dt), {0, 0}, "x + pos");
  expect_within(got[1], stored(dpos, dt), {0, 0}, "dpos");
}

INSTANTIATE_TEST_SUITE_P(Dtypes, EmulatedEmbedding, ::testing::Values(F32, BF16), dtype_test_name);

// ---------------------------------------------------------------------------------------------
// AdamW and the optimizer's sum of squares (core/ops/adamw_kernels.cuh, launched as
// adamw_cuda.cu launches them)

namespace ak = ops::cuda::adamw_kernels;

class EmulatedOptimizer : public DtypeTest {};

// The mixed update, with a float32 or bfloat16 gradient, over five steps with weight decay and
// clipping's factor: the bits of the CPU's mixed AdamW, since the kernel rounds every operation to
// nearest in the CPU loop's order, from the same factors.
TEST_P(EmulatedOptimizer, MixedAdamWGivesTheBitsOfTheCpuUpdate) {
  const DType grad_dt = GetParam();
  const int64_t n = 1000;  // a partial last block of 256
  Tensor master = random_host({n}, 500), exp_avg({n}, F32), exp_avg_sq({n}, F32);
  Tensor value = in_dtype(random_host({n}, 501), BF16);  // stale: the update must overwrite it
  Tensor k_master = master.clone(), k_exp_avg({n}, F32), k_exp_avg_sq({n}, F32);
  Tensor k_value = value.clone();
  ops::AdamWStep s;
  s.lr = 1e-2;
  s.weight_decay = 0.1;
  for (s.t = 1; s.t <= 5; ++s.t) {
    s.grad_scale = s.t == 3 ? 1.0 : 0.2 * static_cast<double>(s.t);  // clipping's factor
    const Tensor grad =
        in_dtype(random_stored({n}, 510 + static_cast<uint64_t>(s.t), grad_dt), grad_dt);
    ops::adamw_update_mixed(master, value, grad, exp_avg, exp_avg_sq, s);
    const std::vector<Tensor> got = run_both_orders(
        [&] {
          Tensor m = k_master.clone(), v = k_value.clone();
          Tensor avg = k_exp_avg.clone(), avg_sq = k_exp_avg_sq.clone();
          with_element_type(grad_dt, [&](auto tag) {
            using G = decltype(tag);
            simt::launch(ak::adamw_mixed_kernel<G>, blocks_for(n, ak::kThreads), ak::kThreads,
                         elements<float>(m), elements<__nv_bfloat16>(v), elements<const G>(grad),
                         elements<float>(avg), elements<float>(avg_sq), n, ak::factors_of(s));
          });
          return std::vector<Tensor>{m, v, avg, avg_sq};
        },
        {"master", "value", "exp_avg", "exp_avg_sq"});
    k_master = got[0];
    k_value = got[1];
    k_exp_avg = got[2];
    k_exp_avg_sq = got[3];
  }
  EXPECT_TRUE(bitwise_equal(k_master, master)) << "master";
  EXPECT_TRUE(bitwise_equal(k_value, value)) << "value";
  EXPECT_TRUE(bitwise_equal(k_exp_avg, exp_avg)) << "exp_avg";
  EXPECT_TRUE(bitwise_equal(k_exp_avg_sq, exp_avg_sq)) << "exp_avg_sq";
}

// Block partials from a grid-stride loop, then one block of kSumMaxBlocks threads adding them,
// as queue_sum_of_squares launches them: against the CPU's double sum, for n below one block
// and over several with a partial last one. (n past kThreads x kSumMaxBlocks, where threads
// loop, would start a quarter of a million emulated threads.)
TEST_P(EmulatedOptimizer, SumOfSquaresMatchesTheCpu) {
  const DType dt = GetParam();
  for (const int64_t n : {int64_t{5}, int64_t{4000}}) {
    SCOPED_TRACE(std::to_string(n) + " elements");
    const Tensor x = in_dtype(random_stored({n}, 540 + static_cast<uint64_t>(n), dt, 2.0), dt);
    const int blocks = static_cast<int>(
        std::min<int64_t>(static_cast<int64_t>(blocks_for(n, ak::kThreads)), ak::kSumMaxBlocks));
    const std::vector<Tensor> got = run_both_orders(
        [&] {
          Tensor partial = nans({ak::kSumMaxBlocks}, DType::F64);
          Tensor result = nans({1}, DType::F64);
          with_element_type(dt, [&](auto tag) {
            using D = decltype(tag);
            simt::launch(ak::sum_of_squares_partials_kernel<D>, blocks, ak::kThreads,
                         elements<double>(partial), elements<const D>(x), n);
          });
          simt::launch(ak::sum_partials_kernel, 1, ak::kSumMaxBlocks, elements<double>(result),
                       elements<const double>(partial), blocks);
          return std::vector<Tensor>{result};
        },
        {"sum"});
    const double want = ops::sum_of_squares(x);
    EXPECT_NEAR(got[0].data<double>()[0], want, kSumOfSquaresRtol * want);
  }
}

// x *= alpha (rounded to float as the launcher rounds it): the CPU's product, rounded to dt.
TEST_P(EmulatedOptimizer, ScaleMatchesTheCpuExactly) {
  const DType dt = GetParam();
  const int64_t n = 1001;
  const Tensor x = random_stored({n}, 550, dt);
  const double alpha = 0.3;
  const std::vector<Tensor> got = run_both_orders(
      [&] {
        Tensor k_x = in_dtype(x, dt);
        with_element_type(dt, [&](auto tag) {
          using D = decltype(tag);
          simt::launch(ak::scale_kernel<D>, blocks_for(n, ak::kThreads), ak::kThreads,
                       elements<D>(k_x), n, static_cast<float>(alpha));
        });
        return std::vector<Tensor>{k_x};
      },
      {"x"});
  Tensor want = x.clone();
  ops::scale(want, alpha);
  expect_within(got[0], stored(want, dt), {0, 0}, "alpha x");
}

INSTANTIATE_TEST_SUITE_P(Dtypes, EmulatedOptimizer, ::testing::Values(F32, BF16), dtype_test_name);

// ---------------------------------------------------------------------------------------------
// Cross-entropy (core/ops/cross_entropy_kernels.cuh, launched as cross_entropy_cuda.cu launches
// them, in the order the op runs them on one rank: row max, partials, finish; then backward)

namespace ce = ops::cuda::cross_entropy_kernels;

// The GPU tests' tolerances: losses and lse in fp32 from the same logits; dlogits an fp32 exp,
// then for bf16 one rounding.
constexpr Tolerance kLoss{1e-5, 1e-5};
constexpr Tolerance kDlogitsF32{1e-6, 1e-5};
constexpr Tolerance kDlogitsBf16{1e-6, 8e-3};

struct CrossEntropyRun {
  Tensor losses, lse, dlogits, in_place, first_bad;
};

// Every phase over logits[M, V], this shard's vocabulary [vocab_start, vocab_start + V); the
// targets past vocab_end (when it is not negative) or below 0 are flagged in first_bad.
CrossEntropyRun run_cross_entropy(const Tensor& logits, const Tensor& targets,
                                  const Tensor& dlosses, int64_t vocab_start, int64_t vocab_end) {
  const int64_t M = logits.size(0), V = logits.size(1);
  const DType dt = logits.dtype();
  CrossEntropyRun r{nans({M}, F32), nans({M}, F32), nans({M, V}, dt), logits.clone(),
                    Tensor({1}, DType::I32)};
  Tensor row_max = nans({M}, F32), sumexp = nans({M}, DType::F64);
  Tensor target_logit = nans({M}, DType::F64);
  const int32_t* t = elements<const int32_t>(targets);
  const float* gmax = elements<const float>(row_max);  // one rank: the global max is its own
  const unsigned rows = static_cast<unsigned>(M);
  with_element_type(dt, [&](auto tag) {
    using D = decltype(tag);
    const D* x = elements<const D>(logits);
    simt::launch(ce::cross_entropy_row_max_kernel<D>, rows, ce::kThreads, elements<float>(row_max),
                 x, V);
    simt::launch(ce::cross_entropy_partials_kernel<D>, rows, ce::kThreads, elements<double>(sumexp),
                 elements<double>(target_logit), elements<int32_t>(r.first_bad), x, gmax, t, M, V,
                 vocab_start, vocab_end);
    simt::launch(ce::cross_entropy_finish_kernel, blocks_for(M, ce::kThreads), ce::kThreads,
                 elements<float>(r.losses), elements<float>(r.lse), gmax,
                 elements<const double>(sumexp), elements<const double>(target_logit), M);
    const auto backward = [&](const Tensor& dlogits, const Tensor& from) {
      simt::launch(ce::cross_entropy_backward_kernel<D>, rows, ce::kThreads, elements<D>(dlogits),
                   elements<const float>(dlosses), elements<const D>(from),
                   elements<const float>(r.lse), t, V, vocab_start);
    };
    backward(r.dlogits, logits);
    backward(r.in_place, r.in_place);  // dlogits may be the logits themselves
  });
  return r;
}

Tensor random_targets(int64_t M, int64_t vocab, uint64_t seed) {
  Tensor t({M}, DType::I32);
  std::mt19937_64 rng(seed);
  for (int64_t m = 0; m < M; ++m)
    t.data<int32_t>()[m] = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return t;
}

class EmulatedCrossEntropy : public DtypeTest {};

// Shard [700, 1700) of a 3000-token vocabulary: targets on it and off it.
TEST_P(EmulatedCrossEntropy, ShardWithOffShardTargetsMatchesTheCpu) {
  const DType dt = GetParam();
  const int64_t M = 9, V = 1000, vocab_start = 700;
  const Tensor logits = random_stored({M, V}, 600, dt, 3.0);
  const Tensor targets = random_targets(M, 3000, 601);
  const Tensor dlosses = random_host({M}, 602);
  int64_t on = 0;
  for (int64_t m = 0; m < M; ++m) {
    const int32_t t = targets.data<int32_t>()[m];
    on += t >= vocab_start && t < vocab_start + V;
  }
  ASSERT_GT(on, 0);
  ASSERT_LT(on, M);
  const Tensor k_logits = in_dtype(logits, dt);
  const std::vector<Tensor> got = run_both_orders(
      [&] {
        const CrossEntropyRun r = run_cross_entropy(k_logits, targets, dlosses, vocab_start, -1);
        return std::vector<Tensor>{r.losses, r.lse, r.dlogits, r.in_place, r.first_bad};
      },
      {"losses", "lse", "dlogits", "dlogits in place", "first bad row"});

  LocalCommunicator tp("tp");
  Tensor x({M, V}, DType::F64), dl({M}, DType::F64);
  copy_into(x, logits);
  copy_into(dl, dlosses);
  Tensor losses({M}, DType::F64), lse({M}, DType::F64), dlogits({M, V}, DType::F64);
  ops::cross_entropy_forward(losses, lse, x, targets, vocab_start, tp);
  ops::cross_entropy_backward(dlogits, dl, x, lse, targets, vocab_start);
  const auto as_f32 = [](const Tensor& f64) {
    Tensor r(f64.shape(), F32);
    copy_into(r, f64);
    return r;
  };
  expect_within(got[0], as_f32(losses), kLoss, "losses");
  expect_within(got[1], as_f32(lse), kLoss, "lse");
  expect_within(got[2], as_f32(dlogits), dt == F32 ? kDlogitsF32 : kDlogitsBf16, "dlogits");
  EXPECT_TRUE(bitwise_equal(got[3], got[2])) << "dlogits in place over the logits";
  EXPECT_EQ(got[4].data<int32_t>()[0], 0) << "no target is out of range";
}

// first_bad = M - (the first bad row): a negative target anywhere, one past the vocabulary when
// the shard holds all of it.
TEST_P(EmulatedCrossEntropy, FlagsTheFirstRowWithATargetOutOfRange) {
  const DType dt = GetParam();
  const int64_t M = 9, V = 300;
  const Tensor logits = in_dtype(random_stored({M, V}, 610, dt), dt);
  const Tensor dlosses = random_host({M}, 611);
  Tensor targets = random_targets(M, V, 612);
  targets.data<int32_t>()[5] = static_cast<int32_t>(V);
  targets.data<int32_t>()[7] = -1;
  const std::vector<Tensor> got = run_both_orders(
      [&] {
        return std::vector<Tensor>{run_cross_entropy(logits, targets, dlosses, 0, V).first_bad,
                                   run_cross_entropy(logits, targets, dlosses, 0, -1).first_bad};
      },
      {"first bad row", "first bad row of a shard"});
  EXPECT_EQ(got[0].data<int32_t>()[0], M - 5) << "target V in row 5";
  EXPECT_EQ(got[1].data<int32_t>()[0], M - 7) << "target -1 in row 7 (V may be on another shard)";
}

INSTANTIATE_TEST_SUITE_P(Dtypes, EmulatedCrossEntropy, ::testing::Values(F32, BF16),
                         dtype_test_name);

// The float32 update, with clipping's factor: the same bits as the CPU's.
TEST(EmulatedAdamW, Float32UpdateGivesTheBitsOfTheCpuUpdate) {
  const int64_t n = 700;
  Tensor param = random_host({n}, 520), exp_avg({n}, F32), exp_avg_sq({n}, F32);
  Tensor k_param = param.clone(), k_exp_avg({n}, F32), k_exp_avg_sq({n}, F32);
  ops::AdamWStep s;
  s.lr = 1e-2;
  s.weight_decay = 0.1;
  for (s.t = 1; s.t <= 3; ++s.t) {
    s.grad_scale = s.t == 2 ? 1.0 : 0.3 * static_cast<double>(s.t);  // clipping's factor
    const Tensor grad = random_host({n}, 530 + static_cast<uint64_t>(s.t));
    ops::adamw_update(param, grad, exp_avg, exp_avg_sq, s);
    const std::vector<Tensor> got = run_both_orders(
        [&] {
          Tensor p = k_param.clone(), avg = k_exp_avg.clone(), avg_sq = k_exp_avg_sq.clone();
          simt::launch(ak::adamw_kernel, blocks_for(n, ak::kThreads), ak::kThreads,
                       elements<float>(p), elements<const float>(grad), elements<float>(avg),
                       elements<float>(avg_sq), n, ak::factors_of(s));
          return std::vector<Tensor>{p, avg, avg_sq};
        },
        {"param", "exp_avg", "exp_avg_sq"});
    k_param = got[0];
    k_exp_avg = got[1];
    k_exp_avg_sq = got[2];
  }
  EXPECT_TRUE(bitwise_equal(k_param, param)) << "param";
  EXPECT_TRUE(bitwise_equal(k_exp_avg, exp_avg)) << "exp_avg";
  EXPECT_TRUE(bitwise_equal(k_exp_avg_sq, exp_avg_sq)) << "exp_avg_sq";
}

}  // namespace
}  // namespace tessera
