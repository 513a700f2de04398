// Specifications of the CPU ops in core/ops: every backward against central finite differences in
// double precision, every F32 path against the F64 path, and the contracts the model relies on
// (gradients accumulate, cross-entropy runs in place and vocab-parallel, attention is causal,
// reductions are deterministic, bad arguments throw InternalError). Every tolerance is on the
// norm-wise relative error |actual - expected|_2 / max(|expected|_2, 1e-300) of a whole tensor.
#include <gtest/gtest.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/ops/adamw.h"
#include "core/ops/attention.h"
#include "core/ops/cast.h"
#include "core/ops/cross_entropy.h"
#include "core/ops/embedding.h"
#include "core/ops/gelu.h"
#include "core/ops/layernorm.h"
#include "core/ops/matmul.h"
#include "core/threads.h"
#include "parallel/local_communicator.h"
#include "tests/bitwise.h"
#include "tests/expect_error.h"
#include "tests/gradcheck.h"
#include "tests/thread_communicator.h"

namespace tessera {
namespace {

using test_support::bitwise_equal;
using test_support::expect_internal_error;

using testing::at;
using testing::dot_sum;
using testing::finite_difference_grad;
using testing::random_tensor;
using testing::random_tokens;
using testing::relative_error;
using testing::to_dtype;

constexpr DType F32 = DType::F32;
constexpr DType F64 = DType::F64;
// Analytic F64 gradient vs central differences with h = 1e-6: for these O(1) losses the
// truncation error O(h^2) is ~1e-12 and the rounding error O(1e-16 / h) ~1e-10.
constexpr double kGradTol = 1e-6;
// F32 path vs F64 path: a few float roundings per output element.
constexpr double kF32Tol = 1e-5;

// Calls backward() on zeroed gradients once, then twice: the second result must be twice the
// first, since every backward accumulates (+=).
void expect_accumulates(const std::vector<Tensor*>& grads, const std::function<void()>& backward) {
  for (Tensor* g : grads) g->zero();
  backward();
  std::vector<Tensor> once;
  for (Tensor* g : grads) once.push_back(g->clone());
  for (Tensor* g : grads) g->zero();
  backward();
  backward();
  for (size_t i = 0; i < grads.size(); ++i) {
    Tensor doubled = once[i].clone();
    ops::scale(doubled, 2.0);
    EXPECT_LT(relative_error(*grads[i], doubled), 1e-12) << "gradient " << i;
  }
}

// backward() writes (=) grad: whatever grad held before, one call leaves the same bits.
void expect_writes(Tensor& grad, const std::function<void()>& backward) {
  grad.zero();
  backward();
  const Tensor once = grad.clone();
  grad.fill(12345.0);
  backward();
  EXPECT_TRUE(bitwise_equal(grad, once)) << "the gradient kept what it held before";
}

// run(dtype) runs an op on inputs of that dtype (converted from the same F64 draws) and returns
// its outputs; the F32 outputs must match the F64 ones within kF32Tol.
void expect_f32_matches_f64(const std::function<std::vector<Tensor>(DType)>& run) {
  const std::vector<Tensor> ref = run(F64), f32 = run(F32);
  ASSERT_EQ(ref.size(), f32.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_EQ(f32[i].dtype(), F32);
    EXPECT_LT(relative_error(f32[i], ref[i]), kF32Tol) << "output " << i;
  }
}

// ---------------------------------------------------------------------------------------------
// matmul

TEST(Matmul, BackwardMatchesFiniteDifferences) {
  std::mt19937_64 rng(1);
  Tensor inp = random_tensor({2, 3, 4}, rng), weight = random_tensor({5, 4}, rng);
  Tensor bias = random_tensor({5}, rng), up = random_tensor({2, 3, 5}, rng);
  auto loss = [&] {
    Tensor out({2, 3, 5}, F64);
    ops::matmul_forward(out, inp, weight, &bias);
    return dot_sum(out, up);
  };
  Tensor dinp(inp.shape(), F64), dweight(weight.shape(), F64), dbias(bias.shape(), F64);
  ops::matmul_backward(&dinp, &dweight, &dbias, up, inp, weight);
  EXPECT_LT(relative_error(dinp, finite_difference_grad(inp, loss)), kGradTol);
  EXPECT_LT(relative_error(dweight, finite_difference_grad(weight, loss)), kGradTol);
  EXPECT_LT(relative_error(dbias, finite_difference_grad(bias, loss)), kGradTol);
}

TEST(Matmul, WithoutBiasEqualsBiasOfZeros) {
  std::mt19937_64 rng(2);
  Tensor inp = random_tensor({3, 4}, rng), weight = random_tensor({2, 4}, rng);
  Tensor zeros({2}, F64), with_bias({3, 2}, F64), without({3, 2}, F64);
  ops::matmul_forward(with_bias, inp, weight, &zeros);
  ops::matmul_forward(without, inp, weight, nullptr);
  EXPECT_TRUE(bitwise_equal(with_bias, without));
}

TEST(Matmul, TreatsLeadingDimensionsAsRows) {
  std::mt19937_64 rng(29);
  const Tensor inp = random_tensor({2, 3, 4}, rng), weight = random_tensor({5, 4}, rng);
  const Tensor up = random_tensor({6, 5}, rng);
  Tensor batched({2, 3, 5}, F64), flat({6, 5}, F64);
  ops::matmul_forward(batched, inp, weight, nullptr);
  ops::matmul_forward(flat, inp, weight, nullptr);  // out as [M, N] for inp [B, T, K]
  EXPECT_TRUE(bitwise_equal(batched, flat));
  Tensor dinp_batched(inp.shape(), F64), dinp_flat({6, 4}, F64);
  ops::matmul_backward(&dinp_batched, nullptr, nullptr, up.view({2, 3, 5}), inp, weight);
  ops::matmul_backward(&dinp_flat, nullptr, nullptr, up, inp.view({6, 4}), weight);
  EXPECT_TRUE(bitwise_equal(dinp_batched, dinp_flat));
}

TEST(Matmul, BackwardWritesDinpAccumulatesParamsAndSkipsNullGradients) {
  std::mt19937_64 rng(3);
  Tensor inp = random_tensor({6, 4}, rng), weight = random_tensor({5, 4}, rng);
  Tensor up = random_tensor({6, 5}, rng);
  Tensor dinp(inp.shape(), F64), dweight(weight.shape(), F64), dbias({5}, F64);
  expect_accumulates({&dweight, &dbias},
                     [&] { ops::matmul_backward(nullptr, &dweight, &dbias, up, inp, weight); });
  expect_writes(dinp, [&] { ops::matmul_backward(&dinp, nullptr, nullptr, up, inp, weight); });
  // No output features: dinp is a product over an empty inner dimension, zeros.
  const Tensor no_weight({0, 4}, F64), no_up({6, 0}, F64);
  dinp.fill(3.0);
  ops::matmul_backward(&dinp, nullptr, nullptr, no_up, inp, no_weight);
  EXPECT_TRUE(bitwise_equal(dinp, Tensor(inp.shape(), F64)));
  // dweight alone (no dinp, no dbias) is the dweight of the call that computes all three.
  Tensor only_dweight(weight.shape(), F64);
  ops::matmul_backward(nullptr, &only_dweight, nullptr, up, inp, weight);
  dweight.zero(), dbias.zero();
  ops::matmul_backward(&dinp, &dweight, &dbias, up, inp, weight);
  EXPECT_TRUE(bitwise_equal(only_dweight, dweight));
  EXPECT_FALSE(bitwise_equal(dweight, Tensor(weight.shape(), F64)));
}

TEST(Matmul, Float32MatchesFloat64) {
  std::mt19937_64 rng(4);
  const Tensor inp = random_tensor({4, 8, 32}, rng), weight = random_tensor({24, 32}, rng);
  const Tensor bias = random_tensor({24}, rng), up = random_tensor({4, 8, 24}, rng);
  expect_f32_matches_f64([&](DType dt) {
    Tensor x = to_dtype(inp, dt), w = to_dtype(weight, dt), b = to_dtype(bias, dt);
    Tensor dy = to_dtype(up, dt), out({4, 8, 24}, dt);
    Tensor dx(x.shape(), dt), dw(w.shape(), dt), db(b.shape(), dt);
    ops::matmul_forward(out, x, w, &b);
    ops::matmul_backward(&dx, &dw, &db, dy, x, w);
    return std::vector<Tensor>{out, dx, dw, db};
  });
}

// The MLP's second layer, inp = gelu(pre): the fused backward is matmul_backward, then
// gelu_backward in place, to the bit; its gradients also match finite differences through the
// GELU and the GEMM.
TEST(MatmulGelu, BackwardIsMatmulBackwardThenGeluBackward) {
  std::mt19937_64 rng(30);
  const Tensor pre64 = random_tensor({2, 3, 8}, rng, F64, -3.0, 3.0);
  const Tensor weight64 = random_tensor({5, 8}, rng), up64 = random_tensor({2, 3, 5}, rng);
  const Tensor dw0 = random_tensor({5, 8}, rng), db0 = random_tensor({5}, rng);
  for (const DType dt : {F64, F32}) {
    const Tensor pre = to_dtype(pre64, dt), weight = to_dtype(weight64, dt),
                 up = to_dtype(up64, dt);
    Tensor inp(pre.shape(), dt);
    ops::gelu_forward(inp, pre);
    Tensor dpre(pre.shape(), dt), dw = to_dtype(dw0, dt), db = to_dtype(db0, dt);
    dpre.fill(7.0);  // written, not accumulated
    ops::matmul_gelu_backward(dpre, &dw, &db, up, inp, pre, weight);
    Tensor dinp(pre.shape(), dt), expected(pre.shape(), dt);
    Tensor dw_ref = to_dtype(dw0, dt), db_ref = to_dtype(db0, dt);
    ops::matmul_backward(&dinp, &dw_ref, &db_ref, up, inp, weight);
    ops::gelu_backward(expected, dinp, pre);
    EXPECT_TRUE(bitwise_equal(dpre, expected)) << dtype_name(dt);
    EXPECT_TRUE(bitwise_equal(dw, dw_ref)) << dtype_name(dt);
    EXPECT_TRUE(bitwise_equal(db, db_ref)) << dtype_name(dt);
  }
}

TEST(MatmulGelu, BackwardMatchesFiniteDifferences) {
  std::mt19937_64 rng(31);
  Tensor pre = random_tensor({4, 6}, rng, F64, -3.0, 3.0), weight = random_tensor({3, 6}, rng);
  Tensor bias = random_tensor({3}, rng);
  const Tensor up = random_tensor({4, 3}, rng);
  auto loss = [&] {
    Tensor h(pre.shape(), F64), out({4, 3}, F64);
    ops::gelu_forward(h, pre);
    ops::matmul_forward(out, h, weight, &bias);
    return dot_sum(out, up);
  };
  Tensor inp(pre.shape(), F64), dpre(pre.shape(), F64), dw(weight.shape(), F64), db({3}, F64);
  ops::gelu_forward(inp, pre);
  ops::matmul_gelu_backward(dpre, &dw, &db, up, inp, pre, weight);
  EXPECT_LT(relative_error(dpre, finite_difference_grad(pre, loss)), kGradTol);
  EXPECT_LT(relative_error(dw, finite_difference_grad(weight, loss)), kGradTol);
  EXPECT_LT(relative_error(db, finite_difference_grad(bias, loss)), kGradTol);
}

TEST(MatmulGelu, BackwardRefusesADpreThatOverlapsAnInput) {
  Tensor pre({4, 6}, F64), inp({4, 6}, F64), weight({3, 6}, F64), up({4, 3}, F64);
  expect_internal_error(
      [&] { ops::matmul_gelu_backward(pre, nullptr, nullptr, up, inp, pre, weight); },
      "matmul_gelu_backward: dpre must not overlap pre_gelu, found them sharing memory");
  expect_internal_error(
      [&] { ops::matmul_gelu_backward(inp, nullptr, nullptr, up, inp, pre, weight); },
      "matmul_gelu_backward: dpre must not overlap inp");
  Tensor wide({4, 3}, F64);
  expect_internal_error(
      [&] { ops::matmul_gelu_backward(wide, nullptr, nullptr, up, inp, pre, weight); },
      "matmul_gelu_backward: dpre must be");
}

// ---------------------------------------------------------------------------------------------
// embedding

TEST(Embedding, BackwardOnAShardMatchesFiniteDifferences) {
  std::mt19937_64 rng(5);
  const int64_t vocab_start = 4;  // the shard holds rows [4, 9) of a 12-token vocabulary
  Tensor table = random_tensor({5, 3}, rng), up = random_tensor({2, 4, 3}, rng);
  const Tensor tokens = random_tokens({2, 4}, rng, 0, 12);
  auto loss = [&] {
    Tensor out({2, 4, 3}, F64);
    ops::embedding_forward(out, tokens, table, vocab_start);
    return dot_sum(out, up);
  };
  Tensor dtable(table.shape(), F64);
  ops::embedding_backward(dtable, up, tokens, vocab_start);
  EXPECT_LT(relative_error(dtable, finite_difference_grad(table, loss)), kGradTol);
  expect_accumulates({&dtable}, [&] { ops::embedding_backward(dtable, up, tokens, vocab_start); });
}

TEST(Embedding, TokensOutsideTheShardGiveZeroRows) {
  std::mt19937_64 rng(6);
  const Tensor table = random_tensor({3, 2}, rng);
  Tensor tokens({4}, DType::I32);
  const int32_t ids[] = {9, 10, 12, 13};  // shard rows [10, 13)
  std::memcpy(tokens.raw(), ids, sizeof(ids));
  Tensor out({4, 2}, F64);
  out.fill(7.0);
  ops::embedding_forward(out, tokens, table, 10);
  const double* o = out.data<double>();
  const double* t = table.data<double>();
  EXPECT_EQ(o[0], 0.0);
  EXPECT_EQ(o[1], 0.0);
  EXPECT_EQ(o[2], t[0]);
  EXPECT_EQ(o[3], t[1]);
  EXPECT_EQ(o[4], t[4]);
  EXPECT_EQ(o[5], t[5]);
  EXPECT_EQ(o[6], 0.0);
  EXPECT_EQ(o[7], 0.0);
}

TEST(Embedding, ShardsSumToTheFullTable) {
  std::mt19937_64 rng(7);
  const Tensor full = random_tensor({10, 4}, rng), up = random_tensor({3, 5, 4}, rng);
  const Tensor tokens = random_tokens({3, 5}, rng, 0, 10);
  Tensor out_full({3, 5, 4}, F64), dfull(full.shape(), F64);
  ops::embedding_forward(out_full, tokens, full, 0);
  ops::embedding_backward(dfull, up, tokens, 0);
  Tensor sum({3, 5, 4}, F64);
  for (const auto& [begin, end] : {std::pair<int64_t, int64_t>{0, 4}, {4, 10}}) {
    const Tensor shard = full.slice0(begin, end).clone();
    Tensor out({3, 5, 4}, F64), dshard(shard.shape(), F64);
    ops::embedding_forward(out, tokens, shard, begin);
    ops::residual_forward(sum, sum, out);
    ops::embedding_backward(dshard, up, tokens, begin);
    EXPECT_TRUE(bitwise_equal(dshard, dfull.slice0(begin, end).clone()));
  }
  EXPECT_TRUE(bitwise_equal(sum, out_full));
}

TEST(Positional, LearnedBackwardMatchesFiniteDifferences) {
  std::mt19937_64 rng(8);
  const Tensor x = random_tensor({2, 3, 4}, rng), up = random_tensor({2, 3, 4}, rng);
  Tensor pos = random_tensor({5, 4}, rng);  // more rows than T = 3
  auto loss = [&] {
    Tensor y = x.clone();
    ops::positional_forward(y, pos);
    return dot_sum(y, up);
  };
  Tensor dpos(pos.shape(), F64);
  ops::positional_backward(dpos, up);
  EXPECT_LT(relative_error(dpos, finite_difference_grad(pos, loss)), kGradTol);
  expect_accumulates({&dpos}, [&] { ops::positional_backward(dpos, up); });
}

TEST(Positional, SinusoidalTableMatchesVaswaniFormula) {
  for (const int64_t C : {6, 5}) {
    const Tensor pe = ops::sinusoidal_table(7, C, F64);
    ASSERT_EQ(pe.shape(), (Shape{7, C}));
    for (int64_t t = 0; t < 7; ++t) {
      for (int64_t c = 0; c < C; ++c) {
        const int64_t two_i = c - c % 2;
        const double angle = t / std::pow(10000.0, static_cast<double>(two_i) / C);
        const double expected = c % 2 == 0 ? std::sin(angle) : std::cos(angle);
        EXPECT_NEAR(pe.data<double>()[t * C + c], expected, 1e-15) << "t=" << t << " c=" << c;
      }
    }
    const Tensor pe32 = ops::sinusoidal_table(7, C, F32);
    EXPECT_EQ(pe32.dtype(), F32);
    EXPECT_LT(relative_error(pe32, pe), 1e-7);
  }
}

TEST(Embedding, Float32MatchesFloat64) {
  std::mt19937_64 rng(9);
  const Tensor table = random_tensor({50, 16}, rng), up = random_tensor({4, 8, 16}, rng);
  const Tensor pos = random_tensor({8, 16}, rng);
  const Tensor tokens = random_tokens({4, 8}, rng, 0, 70);
  expect_f32_matches_f64([&](DType dt) {
    Tensor tab = to_dtype(table, dt), dy = to_dtype(up, dt), p = to_dtype(pos, dt);
    Tensor out({4, 8, 16}, dt), dtab(tab.shape(), dt), dpos(p.shape(), dt);
    ops::embedding_forward(out, tokens, tab, 10);
    ops::positional_forward(out, p);
    ops::embedding_backward(dtab, dy, tokens, 10);
    ops::positional_backward(dpos, dy);
    return std::vector<Tensor>{out, dtab, dpos};
  });
}

// ---------------------------------------------------------------------------------------------
// layernorm

TEST(LayerNorm, BackwardMatchesFiniteDifferences) {
  std::mt19937_64 rng(10);
  Tensor inp = random_tensor({2, 3, 8}, rng), weight = random_tensor({8}, rng);
  Tensor bias = random_tensor({8}, rng), up = random_tensor({2, 3, 8}, rng);
  Tensor mean({2, 3}, F64), rstd({2, 3}, F64);
  auto loss = [&] {
    Tensor out(inp.shape(), F64);
    ops::layernorm_forward(out, mean, rstd, inp, weight, bias);
    return dot_sum(out, up);
  };
  loss();  // leaves mean and rstd of the unperturbed input
  Tensor dinp(inp.shape(), F64), dweight({8}, F64), dbias({8}, F64);
  ops::layernorm_backward(dinp, dweight, dbias, up, inp, weight, mean, rstd);
  const Tensor saved_mean = mean.clone(), saved_rstd = rstd.clone();
  EXPECT_LT(relative_error(dinp, finite_difference_grad(inp, loss)), kGradTol);
  EXPECT_LT(relative_error(dweight, finite_difference_grad(weight, loss)), kGradTol);
  EXPECT_LT(relative_error(dbias, finite_difference_grad(bias, loss)), kGradTol);
  expect_accumulates({&dinp, &dweight, &dbias}, [&] {
    ops::layernorm_backward(dinp, dweight, dbias, up, inp, weight, saved_mean, saved_rstd);
  });
}

TEST(LayerNorm, SavesMeanAndRstdOfBiasedVarianceWithEps) {
  std::mt19937_64 rng(11);
  const Tensor inp = random_tensor({3, 10}, rng, F64, 2.0, 3.0);
  Tensor weight({10}, F64), bias({10}, F64), out({3, 10}, F64), mean({3}, F64), rstd({3}, F64);
  weight.fill(1.0);
  ops::layernorm_forward(out, mean, rstd, inp, weight, bias);
  for (int64_t n = 0; n < 3; ++n) {
    double m = 0, var = 0;
    for (int64_t c = 0; c < 10; ++c) m += at(inp, n * 10 + c) / 10;
    for (int64_t c = 0; c < 10; ++c)
      var += (at(inp, n * 10 + c) - m) * (at(inp, n * 10 + c) - m) / 10;
    EXPECT_NEAR(at(mean, n), m, 1e-14);
    EXPECT_NEAR(at(rstd, n), 1.0 / std::sqrt(var + ops::kLayerNormEps), 1e-12);
    EXPECT_NEAR(at(out, n * 10), (at(inp, n * 10) - m) / std::sqrt(var + ops::kLayerNormEps),
                1e-12);
  }
}

TEST(LayerNorm, Float32MatchesFloat64) {
  std::mt19937_64 rng(12);
  const Tensor inp = random_tensor({16, 96}, rng, F64, -1.0, 3.0);
  const Tensor weight = random_tensor({96}, rng), bias = random_tensor({96}, rng);
  const Tensor up = random_tensor({16, 96}, rng);
  expect_f32_matches_f64([&](DType dt) {
    Tensor x = to_dtype(inp, dt), w = to_dtype(weight, dt), b = to_dtype(bias, dt);
    Tensor dy = to_dtype(up, dt), out(x.shape(), dt), mean({16}, dt), rstd({16}, dt);
    Tensor dx(x.shape(), dt), dw(w.shape(), dt), db(b.shape(), dt);
    ops::layernorm_forward(out, mean, rstd, x, w, b);
    ops::layernorm_backward(dx, dw, db, dy, x, w, mean, rstd);
    return std::vector<Tensor>{out, mean, rstd, dx, dw, db};
  });
}

TEST(ResidualLayerNorm, EqualsResidualForwardThenLayerNormBitwise) {
  for (DType dt : {F32, F64}) {
    SCOPED_TRACE(dtype_name(dt));
    std::mt19937_64 rng(30);
    const Tensor a = random_tensor({2, 3, 40}, rng, dt, -1.0, 3.0);
    const Tensor b = random_tensor({2, 3, 40}, rng, dt);
    const Tensor w = random_tensor({40}, rng, dt), bias = random_tensor({40}, rng, dt);
    Tensor residual({2, 3, 40}, dt), out({2, 3, 40}, dt), mean({2, 3}, dt), rstd({2, 3}, dt);
    ops::residual_layernorm_forward(residual, out, mean, rstd, a, b, w, bias);

    Tensor sum({2, 3, 40}, dt), ref_out({2, 3, 40}, dt), ref_mean({2, 3}, dt), ref_rstd({2, 3}, dt);
    ops::residual_forward(sum, a, b);
    ops::layernorm_forward(ref_out, ref_mean, ref_rstd, sum, w, bias);
    EXPECT_TRUE(bitwise_equal(residual, sum));
    EXPECT_TRUE(bitwise_equal(out, ref_out));
    EXPECT_TRUE(bitwise_equal(mean, ref_mean));
    EXPECT_TRUE(bitwise_equal(rstd, ref_rstd));

    Tensor in_place = a.clone();  // residual may alias a
    ops::residual_layernorm_forward(in_place, out, mean, rstd, in_place, b, w, bias);
    EXPECT_TRUE(bitwise_equal(in_place, sum));
    EXPECT_TRUE(bitwise_equal(out, ref_out));
  }
}

TEST(ResidualLayerNorm, RejectsMismatchedShapesNamingTheArgument) {
  Tensor a({2, 4}, F64), b({2, 5}, F64), w({4}, F64), residual({2, 4}, F64), out({2, 4}, F64);
  Tensor mean({2}, F64), rstd({2}, F64);
  expect_internal_error(
      [&] { ops::residual_layernorm_forward(residual, out, mean, rstd, a, b, w, w); },
      "residual_layernorm_forward: b must have shape [2, 4], found [2, 5]");
  Tensor short_mean({1}, F64);
  expect_internal_error(
      [&] { ops::residual_layernorm_forward(residual, out, short_mean, rstd, a, a, w, w); },
      "residual_layernorm_forward: mean must hold 2 values");
}

// ---------------------------------------------------------------------------------------------
// attention

TEST(Attention, BackwardMatchesFiniteDifferences) {
  std::mt19937_64 rng(13);
  const int64_t B = 2, T = 5, H = 2, hd = 3;
  Tensor qkv = random_tensor({B, T, 3 * H * hd}, rng), up = random_tensor({B, T, H * hd}, rng);
  Tensor att({B, H, T, T}, F64);
  auto loss = [&] {
    Tensor out({B, T, H * hd}, F64);
    ops::attention_forward(out, att, qkv, H);
    return dot_sum(out, up);
  };
  Tensor out({B, T, H * hd}, F64);  // the forward's output, which the backward takes
  ops::attention_forward(out, att, qkv, H);
  const Tensor saved_att = att.clone();
  Tensor dqkv(qkv.shape(), F64);
  ops::attention_backward(dqkv, up, qkv, out, saved_att, H);
  EXPECT_LT(relative_error(dqkv, finite_difference_grad(qkv, loss)), kGradTol);
  expect_writes(dqkv, [&] { ops::attention_backward(dqkv, up, qkv, out, saved_att, H); });
}

TEST(Attention, FutureTokensDoNotChangeEarlierOutputs) {
  std::mt19937_64 rng(14);
  const int64_t B = 2, T = 6, H = 2, hd = 4, C = H * hd;
  Tensor qkv = random_tensor({B, T, 3 * C}, rng);
  Tensor out1({B, T, C}, F64), out2({B, T, C}, F64), att({B, H, T, T}, F64);
  ops::attention_forward(out1, att, qkv, H);
  const int64_t changed = 3;  // new keys and values for token 3 of batch 0
  for (int64_t i = C; i < 3 * C; ++i) qkv.data<double>()[changed * 3 * C + i] += 1.0;
  ops::attention_forward(out2, att, qkv, H);
  const double* a = out1.data<double>();
  const double* b = out2.data<double>();
  for (int64_t t = 0; t < changed; ++t) {
    for (int64_t i = 0; i < C; ++i) EXPECT_EQ(a[t * C + i], b[t * C + i]) << "t=" << t;
  }
  for (int64_t i = 0; i < T * C; ++i) EXPECT_EQ(a[T * C + i], b[T * C + i]) << "batch 1";
  EXPECT_NE(a[changed * C], b[changed * C]);
}

TEST(Attention, ProbabilitiesAreCausalRowsThatSumToOne) {
  std::mt19937_64 rng(15);
  const int64_t B = 2, T = 7, H = 3, hd = 2;
  const Tensor qkv = random_tensor({B, T, 3 * H * hd}, rng, F32, -3.0, 3.0);
  Tensor out({B, T, H * hd}, F32), att({B, H, T, T}, F32);
  att.fill(5.0);
  ops::attention_forward(out, att, qkv, H);
  const float* p = att.data<float>();
  for (int64_t row = 0; row < B * H * T; ++row) {
    const int64_t t = row % T;
    double sum = 0;
    for (int64_t u = 0; u < T; ++u) {
      if (u > t) {
        EXPECT_EQ(p[row * T + u], 0.0f);
      }
      sum += p[row * T + u];
    }
    EXPECT_NEAR(sum, 1.0, 1e-6);
  }
}

TEST(Attention, Float32MatchesFloat64) {
  std::mt19937_64 rng(16);
  const int64_t B = 2, T = 33, H = 2, hd = 16;
  const Tensor qkv = random_tensor({B, T, 3 * H * hd}, rng, F64, -2.0, 2.0);
  const Tensor up = random_tensor({B, T, H * hd}, rng);
  expect_f32_matches_f64([&](DType dt) {
    Tensor x = to_dtype(qkv, dt), dy = to_dtype(up, dt);
    Tensor out({B, T, H * hd}, dt), att({B, H, T, T}, dt), dx(x.shape(), dt);
    ops::attention_forward(out, att, x, H);
    ops::attention_backward(dx, dy, x, out, att, H);
    return std::vector<Tensor>{out, att, dx};
  });
}

// The kernels work on blocks of 64 query rows, each against the keys up to its end: a length of
// 150 (two whole blocks and a part) against the textbook loops, in double.
TEST(Attention, BlocksOfQueryRowsMatchTheTextbookLoops) {
  std::mt19937_64 rng(19);
  const int64_t T = 150, H = 2, hd = 8, C = H * hd;
  const Tensor qkv = random_tensor({1, T, 3 * C}, rng, F64, -2.0, 2.0);
  const Tensor up = random_tensor({1, T, C}, rng);
  Tensor out({1, T, C}, F64), att({1, H, T, T}, F64), dqkv(qkv.shape(), F64);
  ops::attention_forward(out, att, qkv, H);
  ops::attention_backward(dqkv, up, qkv, out, att, H);

  const double* x = qkv.data<double>();
  const double* y = up.data<double>();
  std::vector<double> want_out(static_cast<size_t>(T * C)), want_d(static_cast<size_t>(T * 3 * C));
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  for (int64_t h = 0; h < H; ++h) {
    const auto q = [&](int64_t t, int64_t i) { return x[t * 3 * C + h * hd + i]; };
    const auto k = [&](int64_t t, int64_t i) { return x[t * 3 * C + C + h * hd + i]; };
    const auto v = [&](int64_t t, int64_t i) { return x[t * 3 * C + 2 * C + h * hd + i]; };
    const auto d = [&](int64_t t, int64_t part, int64_t i) -> double& {
      return want_d[static_cast<size_t>(t * 3 * C + part * C + h * hd + i)];
    };
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> p(static_cast<size_t>(t + 1)), dp(p.size());
      double mx = -INFINITY, sum = 0, pdp = 0;
      for (int64_t u = 0; u <= t; ++u) {
        double s = 0;
        for (int64_t i = 0; i < hd; ++i) s += q(t, i) * k(u, i);
        p[static_cast<size_t>(u)] = s * scale;
        mx = std::max(mx, s * scale);
      }
      for (double& e : p) sum += (e = std::exp(e - mx));
      for (double& e : p) e /= sum;
      for (int64_t u = 0; u <= t; ++u) {
        const double pu = p[static_cast<size_t>(u)];
        double dpu = 0;
        for (int64_t i = 0; i < hd; ++i) {
          want_out[static_cast<size_t>(t * C + h * hd + i)] += pu * v(u, i);
          d(u, 2, i) += pu * y[t * C + h * hd + i];
          dpu += y[t * C + h * hd + i] * v(u, i);
        }
        dp[static_cast<size_t>(u)] = dpu;
        pdp += pu * dpu;
      }
      for (int64_t u = 0; u <= t; ++u) {
        const double ds = p[static_cast<size_t>(u)] * (dp[static_cast<size_t>(u)] - pdp) * scale;
        for (int64_t i = 0; i < hd; ++i) {
          d(t, 0, i) += ds * k(u, i);
          d(u, 1, i) += ds * q(t, i);
        }
      }
    }
  }
  for (int64_t i = 0; i < T * C; ++i)
    ASSERT_NEAR(out.data<double>()[i], want_out[static_cast<size_t>(i)], 1e-12) << "out " << i;
  for (int64_t i = 0; i < T * 3 * C; ++i)
    ASSERT_NEAR(dqkv.data<double>()[i], want_d[static_cast<size_t>(i)], 1e-12) << "dqkv " << i;
}

// ---------------------------------------------------------------------------------------------
// gelu and residual

TEST(Gelu, BackwardMatchesFiniteDifferences) {
  std::mt19937_64 rng(17);
  Tensor inp = random_tensor({5, 10}, rng, F64, -4.0, 4.0), up = random_tensor({5, 10}, rng);
  auto loss = [&] {
    Tensor out(inp.shape(), F64);
    ops::gelu_forward(out, inp);
    return dot_sum(out, up);
  };
  Tensor dinp(inp.shape(), F64);
  ops::gelu_backward(dinp, up, inp);
  EXPECT_LT(relative_error(dinp, finite_difference_grad(inp, loss)), kGradTol);
  expect_writes(dinp, [&] { ops::gelu_backward(dinp, up, inp); });
  // In place: dinp may be dout.
  Tensor in_place = up.clone();
  ops::gelu_backward(in_place, in_place, inp);
  EXPECT_TRUE(bitwise_equal(in_place, dinp));
}

TEST(Gelu, MatchesTanhFormula) {
  const double xs[] = {-3.0, -1.0, -0.1, 0.0, 0.5, 1.0, 2.5};
  for (const DType dt : {F64, F32}) {
    Tensor inp({7}, F64);
    std::memcpy(inp.raw(), xs, sizeof(xs));
    Tensor x = to_dtype(inp, dt), out({7}, dt);
    ops::gelu_forward(out, x);
    for (int64_t i = 0; i < 7; ++i) {
      const double v = xs[i];
      const double expected =
          0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
      EXPECT_NEAR(at(out, i), expected, dt == F64 ? 1e-15 : 1e-6) << "x=" << v;
    }
  }
}

TEST(Gelu, Float32IsFiniteAndSaturatesForLargeInputs) {
  const float xs[] = {-1e30f, -1e4f, -100.0f, -20.0f, 20.0f, 100.0f, 1e4f, 1e30f};
  Tensor x({8}, F32), out({8}, F32), dout({8}, F32), dinp({8}, F32);
  std::memcpy(x.raw(), xs, sizeof(xs));
  dout.fill(1.0);
  ops::gelu_forward(out, x);
  ops::gelu_backward(dinp, dout, x);
  for (int64_t i = 0; i < 8; ++i) {
    EXPECT_TRUE(std::isfinite(at(out, i)) && std::isfinite(at(dinp, i))) << "x=" << xs[i];
    const double want = xs[i] > 0 ? xs[i] : 0.0;
    EXPECT_NEAR(at(out, i), want, 1e-6 * std::max(std::abs(want), 1.0)) << "x=" << xs[i];
    EXPECT_NEAR(at(dinp, i), xs[i] > 0 ? 1.0 : 0.0, 1e-6) << "x=" << xs[i];
  }
}

TEST(Residual, BackwardMatchesFiniteDifferences) {
  std::mt19937_64 rng(18);
  Tensor a = random_tensor({3, 4}, rng), b = random_tensor({3, 4}, rng);
  const Tensor up = random_tensor({3, 4}, rng);
  auto loss = [&] {
    Tensor out({3, 4}, F64);
    ops::residual_forward(out, a, b);
    return dot_sum(out, up);
  };
  Tensor da({3, 4}, F64), db({3, 4}, F64);
  ops::residual_backward(da, db, up);
  EXPECT_LT(relative_error(da, finite_difference_grad(a, loss)), kGradTol);
  EXPECT_LT(relative_error(db, finite_difference_grad(b, loss)), kGradTol);
  expect_accumulates({&da, &db}, [&] { ops::residual_backward(da, db, up); });
}

TEST(Gelu, Float32MatchesFloat64) {
  std::mt19937_64 rng(19);
  const Tensor inp = random_tensor({64, 64}, rng, F64, -6.0, 6.0);
  const Tensor other = random_tensor({64, 64}, rng), up = random_tensor({64, 64}, rng);
  expect_f32_matches_f64([&](DType dt) {
    Tensor x = to_dtype(inp, dt), y = to_dtype(other, dt), dy = to_dtype(up, dt);
    Tensor out(x.shape(), dt), dx(x.shape(), dt), sum(x.shape(), dt), da(x.shape(), dt),
        db(x.shape(), dt);
    ops::gelu_forward(out, x);
    ops::gelu_backward(dx, dy, x);
    ops::residual_forward(sum, x, y);
    ops::residual_backward(da, db, dy);
    return std::vector<Tensor>{out, dx, sum, da, db};
  });
}

// ---------------------------------------------------------------------------------------------
// cross-entropy

TEST(CrossEntropy, BackwardMatchesFiniteDifferences) {
  std::mt19937_64 rng(20);
  LocalCommunicator tp("tp");
  Tensor logits = random_tensor({4, 7}, rng, F64, -3.0, 3.0);
  const Tensor targets = random_tokens({4}, rng, 0, 7), up = random_tensor({4}, rng);
  Tensor lse({4}, F64);
  auto loss = [&] {
    Tensor losses({4}, F64);
    ops::cross_entropy_forward(losses, lse, logits, targets, 0, tp);
    return dot_sum(losses, up);
  };
  loss();
  const Tensor saved_lse = lse.clone();
  Tensor dlogits(logits.shape(), F64);
  ops::cross_entropy_backward(dlogits, up, logits, saved_lse, targets, 0);
  EXPECT_LT(relative_error(dlogits, finite_difference_grad(logits, loss)), kGradTol);
}

TEST(CrossEntropy, OfUniformLogitsIsLogVocabularySize) {
  LocalCommunicator tp("tp");
  for (const DType dt : {F64, F32}) {
    Tensor logits({3, 1000}, dt), targets({3}, DType::I32), losses({3}, dt), lse({3}, dt);
    logits.fill(0.25);
    targets.fill(17);
    ops::cross_entropy_forward(losses, lse, logits, targets, 0, tp);
    for (int64_t m = 0; m < 3; ++m) {
      EXPECT_NEAR(at(losses, m), std::log(1000.0), dt == F64 ? 1e-12 : 1e-6);
      EXPECT_NEAR(at(lse, m), 0.25 + std::log(1000.0), dt == F64 ? 1e-12 : 1e-6);
    }
  }
}

TEST(CrossEntropy, BackwardInPlaceEqualsOutOfPlaceAndOverwrites) {
  std::mt19937_64 rng(21);
  LocalCommunicator tp("tp");
  for (const DType dt : {F32, F64}) {
    Tensor logits = random_tensor({5, 1001}, rng, dt, -5.0, 5.0);
    const Tensor targets = random_tokens({5}, rng, 0, 1001), up = random_tensor({5}, rng, dt);
    Tensor losses({5}, dt), lse({5}, dt), dlogits(logits.shape(), dt);
    ops::cross_entropy_forward(losses, lse, logits, targets, 0, tp);
    dlogits.fill(123.0);  // the backward writes, it does not accumulate
    ops::cross_entropy_backward(dlogits, up, logits, lse, targets, 0);
    ops::cross_entropy_backward(logits, up, logits, lse, targets, 0);
    EXPECT_TRUE(bitwise_equal(logits, dlogits)) << dtype_name(dt);
  }
}

TEST(CrossEntropy, Float32MatchesFloat64) {
  std::mt19937_64 rng(23);
  LocalCommunicator tp("tp");
  const Tensor logits = random_tensor({8, 3001}, rng, F64, -8.0, 8.0);
  const Tensor targets = random_tokens({8}, rng, 0, 3001), up = random_tensor({8}, rng);
  expect_f32_matches_f64([&](DType dt) {
    Tensor x = to_dtype(logits, dt), dy = to_dtype(up, dt);
    Tensor losses({8}, dt), lse({8}, dt), dx(x.shape(), dt);
    ops::cross_entropy_forward(losses, lse, x, targets, 0, tp);
    ops::cross_entropy_backward(dx, dy, x, lse, targets, 0);
    return std::vector<Tensor>{losses, lse, dx};
  });
}

// ---------------------------------------------------------------------------------------------
// AdamW and the optimizer's reductions

TEST(AdamW, OneStepMatchesHandComputedValues) {
  const ops::AdamWStep s{
      .lr = 0.1, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1, .t = 1};
  for (const DType dt : {F64, F32}) {
    Tensor p({1}, dt), g({1}, dt), m({1}, dt), v({1}, dt);
    p.fill(1.0);
    g.fill(0.5);
    ops::adamw_update(p, g, m, v, s);
    // m = (1 - 0.9) 0.5 = 0.05;  v = (1 - 0.999) 0.5^2 = 0.00025;
    // m_hat = 0.05 / (1 - 0.9) = 0.5;  v_hat = 0.00025 / (1 - 0.999) = 0.25;
    // p = 1 - lr (m_hat / (sqrt(v_hat) + eps) + wd p) = 1 - 0.1 (0.5 / (0.5 + 1e-8) + 0.1 * 1),
    // about 1 - 0.1 (1 + 0.1) = 0.89
    const double tol = dt == F64 ? 1e-15 : 1e-7;
    EXPECT_NEAR(at(m, 0), 0.05, tol);
    EXPECT_NEAR(at(v, 0), 0.00025, tol * 0.01);
    EXPECT_NEAR(at(p, 0), 1.0 - 0.1 * (0.5 / (0.5 + 1e-8) + 0.1 * 1.0), tol);
  }
}

TEST(AdamW, ThreeStepsMatchTheHeaderFormula) {
  std::mt19937_64 rng(24);
  const Tensor p0 = random_tensor({1000}, rng);
  std::vector<Tensor> grads;
  for (int i = 0; i < 3; ++i) grads.push_back(random_tensor({1000}, rng));
  const ops::AdamWStep base{
      .lr = 0.01, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .t = 1};
  // Reference: the header's formula element by element in double.
  std::vector<double> p(1000), m(1000, 0.0), v(1000, 0.0);
  for (int64_t i = 0; i < 1000; ++i) p[i] = at(p0, i);
  for (int step = 1; step <= 3; ++step) {
    for (int64_t i = 0; i < 1000; ++i) {
      const double g = at(grads[step - 1], i);
      m[i] = base.beta1 * m[i] + (1 - base.beta1) * g;
      v[i] = base.beta2 * v[i] + (1 - base.beta2) * g * g;
      p[i] -= base.lr * (m[i] / (1 - std::pow(base.beta1, step)) /
                             (std::sqrt(v[i] / (1 - std::pow(base.beta2, step))) + base.eps) +
                         base.weight_decay * p[i]);
    }
  }
  Tensor expected({1000}, F64);
  std::memcpy(expected.raw(), p.data(), expected.bytes());
  for (const DType dt : {F64, F32}) {
    Tensor param = to_dtype(p0, dt), exp_avg({1000}, dt), exp_avg_sq({1000}, dt);
    for (int step = 1; step <= 3; ++step) {
      ops::AdamWStep s = base;
      s.t = step;
      ops::adamw_update(param, to_dtype(grads[step - 1], dt), exp_avg, exp_avg_sq, s);
    }
    EXPECT_LT(relative_error(param, expected), dt == F64 ? 1e-14 : kF32Tol) << dtype_name(dt);
  }
}

TEST(SumOfSquares, EqualsNaiveDoubleSumAndIsBitwiseStable) {
  std::mt19937_64 rng(25);
  for (const DType dt : {F32, F64}) {
    const Tensor x = random_tensor({100003}, rng, dt);
    double naive = 0;
    for (int64_t i = 0; i < x.numel(); ++i) naive += at(x, i) * at(x, i);
    const double first = ops::sum_of_squares(x), second = ops::sum_of_squares(x);
    EXPECT_NEAR(first, naive, 1e-12 * naive);
    EXPECT_EQ(std::memcmp(&first, &second, sizeof(double)), 0);
  }
}

TEST(SumOfSquares, IsTheSameBitsForAnyThreadCount) {
  std::mt19937_64 rng(26);
  const Tensor x = random_tensor({100003}, rng, F32);
  const int saved = cpu_threads();
  set_cpu_threads(1);
  const double one = ops::sum_of_squares(x);
  set_cpu_threads(3);
  const double three = ops::sum_of_squares(x);
  set_cpu_threads(saved);
  EXPECT_EQ(std::memcmp(&one, &three, sizeof(double)), 0);
}

TEST(Scale, MultipliesEveryElement) {
  std::mt19937_64 rng(27);
  const Tensor x = random_tensor({37}, rng);
  Tensor y = x.clone();
  ops::scale(y, -0.5);
  for (int64_t i = 0; i < 37; ++i) EXPECT_EQ(at(y, i), -0.5 * at(x, i));
}

// ---------------------------------------------------------------------------------------------
// determinism and validation

TEST(Determinism, RepeatedCallsGiveBitwiseIdenticalResults) {
  std::mt19937_64 rng(28);
  LocalCommunicator tp("tp");
  const Tensor x = random_tensor({64, 96}, rng, F32), w = random_tensor({96}, rng, F32);
  const Tensor qkv = random_tensor({2, 40, 3 * 64}, rng, F32),
               logits = random_tensor({16, 5003}, rng, F32);
  const Tensor targets = random_tokens({16}, rng, 0, 5003);
  auto run = [&] {
    Tensor out(x.shape(), F32), mean({64}, F32), rstd({64}, F32);
    Tensor dx(x.shape(), F32), dw({96}, F32), db({96}, F32);
    ops::layernorm_forward(out, mean, rstd, x, w, w);
    ops::layernorm_backward(dx, dw, db, out, x, w, mean, rstd);
    Tensor a({2, 40, 64}, F32), att({2, 4, 40, 40}, F32), dqkv(qkv.shape(), F32);
    ops::attention_forward(a, att, qkv, 4);
    ops::attention_backward(dqkv, a, qkv, a, att, 4);
    Tensor losses({16}, F32), lse({16}, F32), dlogits(logits.shape(), F32);
    ops::cross_entropy_forward(losses, lse, logits, targets, 0, tp);
    ops::cross_entropy_backward(dlogits, losses, logits, lse, targets, 0);
    return std::vector<Tensor>{out, dx, dw, db, a, dqkv, losses, dlogits};
  };
  const std::vector<Tensor> first = run(), second = run();
  for (size_t i = 0; i < first.size(); ++i) EXPECT_TRUE(bitwise_equal(first[i], second[i])) << i;
}

TEST(Validation, ShapeMismatchThrowsInternalErrorNamingOpAndShapes) {
  Tensor inp({2, 4}, F64), weight({5, 3}, F64), out({2, 5}, F64);
  expect_internal_error([&] { ops::matmul_forward(out, inp, weight, nullptr); },
                        "matmul_forward: weight must be [N, 4] for inp [2, 4], found [5, 3]");
  Tensor w_ok({5, 4}, F64), wrong_out({2, 4}, F64);
  expect_internal_error([&] { ops::matmul_forward(wrong_out, inp, w_ok, nullptr); },
                        "out must be [2, 5] (any leading shape), found [2, 4]");
  Tensor ln_w({3}, F64), mean({2}, F64), rstd({2}, F64), ln_out({2, 4}, F64);
  expect_internal_error([&] { ops::layernorm_forward(ln_out, mean, rstd, inp, ln_w, ln_w); },
                        "layernorm_forward: weight must have shape [4]");
  Tensor qkv({1, 3, 10}, F64), a_out({1, 3, 4}, F64), att({1, 2, 3, 3}, F64);
  expect_internal_error([&] { ops::attention_forward(a_out, att, qkv, 2); }, "attention_forward");
  Tensor da({2, 4}, F64), db({2, 5}, F64);
  expect_internal_error([&] { ops::residual_backward(da, db, inp); }, "db must have shape");
}

TEST(Validation, WrongDtypesThrowInternalError) {
  Tensor inp({2, 4}, F64), weight({5, 4}, F32), out({2, 5}, F64);
  expect_internal_error([&] { ops::matmul_forward(out, inp, weight, nullptr); },
                        "weight must be a contiguous " + dtype_name(F64) +
                            " tensor on cpu, found " + dtype_name(F32));
  Tensor tokens({2}, F32), table({4, 3}, F64), emb({2, 3}, F64);
  expect_internal_error([&] { ops::embedding_forward(emb, tokens, table, 0); }, "tokens must be");
  Tensor ids({2}, DType::I32), ints({2, 3}, DType::I32), iout({2, 3}, DType::I32);
  expect_internal_error([&] { ops::gelu_forward(iout, ints); }, "gelu_forward: inp must be");
}

TEST(Validation, CrossEntropyRejectsNegativeAndOutOfVocabularyTargets) {
  LocalCommunicator tp("tp");
  Tensor logits({2, 5}, F64), targets({2}, DType::I32), losses({2}, F64), lse({2}, F64);
  targets.data<int32_t>()[1] = -1;
  expect_internal_error([&] { ops::cross_entropy_forward(losses, lse, logits, targets, 0, tp); },
                        "found -1 at row 1");
  targets.data<int32_t>()[1] = 5;  // a single shard is the whole vocabulary [0, 5)
  expect_internal_error([&] { ops::cross_entropy_forward(losses, lse, logits, targets, 0, tp); },
                        "found 5 at row 1");
}

TEST(Validation, AdamWRejectsStepZero) {
  Tensor p({3}, F32), g({3}, F32), m({3}, F32), v({3}, F32);
  ops::AdamWStep s;
  s.t = 0;
  expect_internal_error([&] { ops::adamw_update(p, g, m, v, s); }, "t must be >= 1");
}

// ---------------------------------------------------------------------------------------------
// matmul + gelu, cast and accumulate

TEST(MatmulGelu, ForwardIsMatmulThenGeluBitForBit) {
  std::mt19937_64 rng(30);
  for (const DType dt : {F64, F32}) {
    const Tensor inp = random_tensor({2, 3, 8}, rng, dt), weight = random_tensor({5, 8}, rng, dt);
    const Tensor bias = random_tensor({5}, rng, dt);
    for (const Tensor* b : {&bias, static_cast<const Tensor*>(nullptr)}) {
      Tensor out({2, 3, 5}, dt), pre({6, 5}, dt), out_ref({2, 3, 5}, dt), pre_ref({6, 5}, dt);
      ops::matmul_gelu_forward(out, pre, inp, weight, b);
      ops::matmul_forward(pre_ref, inp, weight, b);
      ops::gelu_forward(out_ref, pre_ref.view({2, 3, 5}));
      EXPECT_TRUE(bitwise_equal(pre, pre_ref)) << dtype_name(dt);
      EXPECT_TRUE(bitwise_equal(out, out_ref)) << dtype_name(dt);
    }
  }
}

TEST(Validation, MatmulGeluRefusesOverlappingOrMisshapenOutputs) {
  Tensor inp({2, 4}, F64), weight({3, 4}, F64), both({2, 3}, F64), wide({2, 4}, F64);
  expect_internal_error([&] { ops::matmul_gelu_forward(both, both, inp, weight, nullptr); },
                        "matmul_gelu_forward: out and pre_gelu must not overlap");
  expect_internal_error([&] { ops::matmul_gelu_forward(both, wide, inp, weight, nullptr); },
                        "matmul_gelu_forward: pre_gelu must be [2, 3] (any leading shape), found "
                        "[2, 4]");
}

TEST(Cast, Float32ToBfloat16RoundsEveryElementLikeToBf16) {
  const float xs[] = {1.0f + std::ldexp(1.0f, -8),      // a tie: to even, 1
                      1.0f + 3 * std::ldexp(1.0f, -8),  // a tie: to even, 1 + 2^-6
                      -2.75f,
                      -0.0f,
                      1e-40f,  // subnormal
                      std::numeric_limits<float>::max(),
                      -std::numeric_limits<float>::infinity(),
                      std::numeric_limits<float>::quiet_NaN()};
  constexpr int64_t n = sizeof(xs) / sizeof(xs[0]);
  Tensor src({n}, F32), dst({n}, DType::BF16);
  std::memcpy(src.raw(), xs, sizeof(xs));
  ops::cast(dst, src);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(dst.data<bf16>()[i].bits, to_bf16(xs[i]).bits) << i;
  EXPECT_EQ(to_float(dst.data<bf16>()[0]), 1.0f);
  EXPECT_EQ(to_float(dst.data<bf16>()[1]), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(to_float(dst.data<bf16>()[n - 1])));
}

TEST(Cast, Bfloat16ToFloat32IsExactAndRoundTripsEveryNumber) {
  Tensor b({65536}, DType::BF16), f({65536}, F32), back({65536}, DType::BF16);
  for (uint32_t i = 0; i < 65536; ++i) b.data<bf16>()[i].bits = static_cast<uint16_t>(i);
  ops::cast(f, b);
  ops::cast(back, f);
  for (uint32_t i = 0; i < 65536; ++i) {
    uint32_t u;
    std::memcpy(&u, &f.data<float>()[i], sizeof u);
    ASSERT_EQ(u, i << 16) << i;
    if (!std::isnan(f.data<float>()[i])) {
      ASSERT_EQ(back.data<bf16>()[i].bits, i) << i;
    }
  }
}

TEST(Cast, Float32ToFloat64AndBackIsExact) {
  std::mt19937_64 rng(31);
  const Tensor f = random_tensor({3, 7}, rng, F32);
  Tensor d({3, 7}, F64), back({3, 7}, F32);
  ops::cast(d, f);
  ops::cast(back, d);
  for (int64_t i = 0; i < f.numel(); ++i) EXPECT_EQ(d.data<double>()[i], f.data<float>()[i]);
  EXPECT_TRUE(bitwise_equal(back, f));
}

TEST(Cast, BetweenEqualDtypesCopies) {
  std::mt19937_64 rng(32);
  const Tensor src = random_tensor({4, 5}, rng, F32);
  Tensor dst({4, 5}, F32);
  ops::cast(dst, src);
  EXPECT_TRUE(bitwise_equal(dst, src));
}

TEST(Accumulate, AddsFloat32OrBfloat16IntoFloat32) {
  std::mt19937_64 rng(33);
  const Tensor start = random_tensor({2, 9}, rng, F32), add = random_tensor({2, 9}, rng, F32);
  Tensor add_bf16({2, 9}, DType::BF16);
  ops::cast(add_bf16, add);
  Tensor from_f32 = start.clone(), from_bf16 = start.clone();
  ops::accumulate(from_f32, add);
  ops::accumulate(from_bf16, add_bf16);
  for (int64_t i = 0; i < start.numel(); ++i) {
    const float s = start.data<float>()[i];
    EXPECT_EQ(from_f32.data<float>()[i], s + add.data<float>()[i]) << i;
    EXPECT_EQ(from_bf16.data<float>()[i], s + to_float(add_bf16.data<bf16>()[i])) << i;
  }
}

TEST(Validation, CastAndAccumulateRefuseWhatTheyCannotDoNamingDtypesAndShapes) {
  Tensor f64({3}, F64), f32({3}, F32), f32_long({4}, F32), b16({3}, DType::BF16);
  expect_internal_error([&] { ops::cast(b16, f64); },
                        "cast: no conversion from float64 to bfloat16 on cpu");
  expect_internal_error([&] { ops::cast(f32_long, f64); },
                        "cast: dst must have shape [3], found [4]");
  expect_internal_error([&] { ops::accumulate(f64, f32); },
                        "accumulate: dst must be float32, found float64 [3] on cpu");
  expect_internal_error([&] { ops::accumulate(f32, f64); },
                        "accumulate: src must be float32 or bfloat16, found float64 [3] on cpu");
}

}  // namespace
}  // namespace tessera
