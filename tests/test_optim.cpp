// AdamW, global-norm clipping and the LR schedule against values computed by hand; the fused
// optimizer ops (the batched sum of squares, the mixed-precision update) and the optimizer's use
// of them against the unfused ops they replace, bit for bit.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numbers>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/ops/adamw.h"
#include "core/ops/cast.h"
#include "core/optim/lr_schedule.h"
#include "core/optim/optimizer.h"
#include "parallel/local_communicator.h"
#include "tests/bitwise.h"
#include "tests/clip_grad_norm.h"
#include "tests/expect_error.h"
#include "tests/gradcheck.h"

namespace tessera {
namespace {

using test_support::bitwise_equal;
using test_support::clip_grad_norm;
using test_support::expect_internal_error;

using testing::random_tensor;

constexpr DType F32 = DType::F32;
constexpr DType F64 = DType::F64;
constexpr DType BF16 = DType::BF16;

bool same_bits(double a, double b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

// The F32 host tensor rounded to bfloat16 (to nearest even).
Tensor bf16_of(const Tensor& f32) {
  Tensor b(f32.shape(), BF16);
  ops::cast(b, f32);
  return b;
}

// Element i of a host F32, F64 or BF16 tensor, exactly, as a double.
double element(const Tensor& t, int64_t i) {
  if (t.dtype() == BF16) return to_float(t.data<bf16>()[i]);
  if (t.dtype() == F32) return t.data<float>()[i];
  return t.data<double>()[i];
}

Param scalar_param(ParamKind kind, double value, double grad) {
  Param p;
  p.name = std::string(16, 'p');
  p.kind = kind;
  p.global_shape = {1};
  p.value = Tensor({1}, DType::F64);
  p.grad = Tensor({1}, DType::F64);
  p.value.data<double>()[0] = value;
  p.grad.data<double>()[0] = grad;
  return p;
}

TEST(AdamW, TwoStepsMatchHandComputedValues) {
  Param w = scalar_param(ParamKind::Weight, 1.0, 0.5);
  AdamWConfig cfg;
  cfg.beta1 = 0.9;
  cfg.beta2 = 0.999;
  cfg.eps = 1e-8;
  cfg.weight_decay = 0.1;
  AdamW opt({&w}, cfg);
  // Step 1: m = 0.05, v = 0.00025; m_hat = 0.5, v_hat = 0.25; update = 0.5 / (0.5 + 1e-8).
  opt.step(0.1);
  const double u1 = 0.5 / (0.5 + 1e-8);
  const double p1 = 1.0 - 0.1 * (u1 + 0.1 * 1.0);
  EXPECT_NEAR(w.value.data<double>()[0], p1, 1e-15);
  // Step 2 with g = -0.25: m = 0.045 - 0.025 = 0.02, v = 0.00024975 + 0.0000625.
  w.grad.data<double>()[0] = -0.25;
  opt.step(0.05);
  const double m = 0.9 * 0.05 + 0.1 * -0.25, v = 0.999 * 0.00025 + 0.001 * 0.0625;
  const double m_hat = m / (1 - 0.81), v_hat = v / (1 - 0.999 * 0.999);
  const double p2 = p1 - 0.05 * (m_hat / (std::sqrt(v_hat) + 1e-8) + 0.1 * p1);
  EXPECT_NEAR(w.value.data<double>()[0], p2, 1e-15);
  EXPECT_EQ(opt.steps_taken(), 2);
}

// Weights decay; biases, norms and embeddings only under their flags, each flag its own kinds.
TEST(AdamW, NoWeightDecayOnBiasesNormsAndEmbeddingsUnlessConfigured) {
  // One step of zero gradients (only the decay moves a parameter): weight, bias, norm, embedding.
  const auto after_a_step = [](bool decay_embeddings, bool decay_biases_norms) {
    Param w = scalar_param(ParamKind::Weight, 1, 0), b = scalar_param(ParamKind::Bias, 1, 0),
          n = scalar_param(ParamKind::Norm, 1, 0), e = scalar_param(ParamKind::Embedding, 1, 0);
    AdamWConfig cfg;
    cfg.weight_decay = 0.5;
    cfg.decay_embeddings = decay_embeddings;
    cfg.decay_biases_norms = decay_biases_norms;
    AdamW opt({&w, &b, &n, &e}, cfg);
    opt.step(0.1);
    std::vector<double> values;
    for (const Param* p : {&w, &b, &n, &e}) values.push_back(p->value.data<double>()[0]);
    return values;
  };
  const double d = 1.0 - 0.1 * 0.5;
  const std::vector<std::pair<std::array<bool, 2>, std::vector<double>>> cases = {
      {{false, false}, {d, 1, 1, 1}},
      {{true, false}, {d, 1, 1, d}},
      {{false, true}, {d, d, d, 1}},
      {{true, true}, {d, d, d, d}}};
  for (const auto& [flags, expected] : cases) {
    const std::vector<double> got = after_a_step(flags[0], flags[1]);
    for (size_t k = 0; k < expected.size(); ++k)
      EXPECT_DOUBLE_EQ(got[k], expected[k])
          << "decay_embeddings " << flags[0] << ", decay_biases_norms " << flags[1] << ", param "
          << k;
  }
}

TEST(GradClipping, ScalesToMaxNormAndReturnsNormBefore) {
  Param a = scalar_param(ParamKind::Weight, 0, 3.0), b = scalar_param(ParamKind::Bias, 0, 4.0);
  LocalCommunicator mp;
  const double norm = clip_grad_norm({&a, &b}, 1.0, mp);
  EXPECT_DOUBLE_EQ(norm, 5.0);
  const double coef = 1.0 / (5.0 + 1e-6);
  EXPECT_DOUBLE_EQ(a.grad.data<double>()[0], 3.0 * coef);
  EXPECT_DOUBLE_EQ(b.grad.data<double>()[0], 4.0 * coef);
}

TEST(GradClipping, LeavesSmallGradientsAlone) {
  Param a = scalar_param(ParamKind::Weight, 0, 0.3), b = scalar_param(ParamKind::Bias, 0, 0.4);
  LocalCommunicator mp;
  EXPECT_NEAR(clip_grad_norm({&a, &b}, 1.0, mp), 0.5, 1e-15);
  EXPECT_DOUBLE_EQ(a.grad.data<double>()[0], 0.3);
  EXPECT_DOUBLE_EQ(b.grad.data<double>()[0], 0.4);
}

TEST(GradClipping, ScaleIsTorchsFactorBelowOneAndOneWhenOffOrNotFinite) {
  EXPECT_EQ(clip_scale(5.0, 1.0), 1.0 / (5.0 + 1e-6));
  EXPECT_EQ(clip_scale(5.0, 2.0), 2.0 / (5.0 + 1e-6));
  EXPECT_EQ(clip_scale(0.5, 1.0), 1.0);
  EXPECT_EQ(clip_scale(5.0, 0.0), 1.0);  // clipping off
  EXPECT_EQ(clip_scale(5.0, -1.0), 1.0);
  EXPECT_EQ(clip_scale(std::numeric_limits<double>::infinity(), 1.0), 1.0);
  EXPECT_EQ(clip_scale(std::numeric_limits<double>::quiet_NaN(), 1.0), 1.0);
}

// Clipping in the update's pass (AdamW::step's grad_scale, what the Trainer does) against scaling
// the gradients first (clip_grad_norm's way): the same bits, for float32 and float64 Params and for
// a bfloat16 Param stepping from float32 gradient sums (the Trainer's mixed precision).
TEST(AdamW, GradScaleGivesTheBitsOfScalingTheGradientsFirst) {
  const int64_t n = 333;
  const double scales[] = {0.37, 1.0, 1.0 / (7.25 + 1e-6)};
  for (const DType dt : {F32, F64, BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    std::mt19937_64 rng(45);
    Param fused, first;
    for (Param* p : {&fused, &first}) {
      p->name = "w";
      p->global_shape = {n};
    }
    const Tensor init = random_tensor({n}, rng, F32);
    fused.value = dt == BF16 ? bf16_of(init) : ops::cast_to(init, dt);
    first.value = fused.value.clone();
    fused.grad = Tensor({n}, dt);
    first.grad = Tensor({n}, dt);
    const AdamWConfig cfg;
    AdamW fused_opt({&fused}, cfg), first_opt({&first}, cfg);
    Tensor fused_sums({n}, F32), first_sums({n}, F32);  // bf16: what GradBuckets would hand over
    if (dt == BF16) {
      fused_opt.use_gradients({fused_sums});
      first_opt.use_gradients({first_sums});
    }
    for (const double scale : scales) {
      SCOPED_TRACE("grad_scale " + std::to_string(scale));
      const Tensor grad = random_tensor({n}, rng, F32);
      Tensor& fused_grad = dt == BF16 ? fused_sums : fused.grad;
      Tensor& first_grad = dt == BF16 ? first_sums : first.grad;
      copy_into(fused_grad, ops::cast_to(grad, fused_grad.dtype()));
      copy_into(first_grad, fused_grad);
      ops::scale(first_grad, scale);
      first_opt.step(1e-2);
      fused_opt.step(1e-2, scale);
      EXPECT_TRUE(bitwise_equal(fused.value, first.value)) << "value";
      EXPECT_TRUE(bitwise_equal(fused_opt.exp_avg()[0], first_opt.exp_avg()[0])) << "exp_avg";
      EXPECT_TRUE(bitwise_equal(fused_opt.exp_avg_sq()[0], first_opt.exp_avg_sq()[0]))
          << "exp_avg_sq";
      if (dt == BF16) {
        EXPECT_TRUE(bitwise_equal(fused_opt.master()[0], first_opt.master()[0])) << "master";
      }
    }
  }
}

TEST(LRSchedule, LinearWarmupThenCosineToFloor) {
  LRSchedule s{
      .lr = 1.0, .min_lr = 0.1, .warmup = 4, .total_steps = 14, .decay = DecayKind::Cosine};
  EXPECT_DOUBLE_EQ(s.at(0), 0.25);
  EXPECT_DOUBLE_EQ(s.at(1), 0.5);
  EXPECT_DOUBLE_EQ(s.at(3), 1.0);
  EXPECT_DOUBLE_EQ(s.at(4), 1.0);  // decay starts at the peak
  // Halfway through the 9 decay intervals (steps 4..13): p = 4.5/9 would be between steps; at
  // step 7, p = 1/3: 0.1 + 0.9 (1 + cos(pi/3)) / 2 = 0.775.
  EXPECT_NEAR(s.at(7), 0.1 + 0.9 * 0.5 * (1 + std::cos(std::numbers::pi / 3)), 1e-15);
  EXPECT_NEAR(s.at(7), 0.775, 1e-15);
  EXPECT_DOUBLE_EQ(s.at(13), 0.1);  // the last step is at the floor
  EXPECT_DOUBLE_EQ(s.at(100), 0.1);
}

// Warmup-stable-decay: the peak from the end of warm-up until the last 30% of the steps, then
// linearly down to min_lr, reached at the last step; a cool-down shorter than a step is one step.
TEST(LRSchedule, WarmupStableDecayHoldsThePeakThenCoolsDownAtTheEnd) {
  LRSchedule s{.lr = 1.0,
               .min_lr = 0.1,
               .warmup = 2,
               .total_steps = 10,
               .decay = DecayKind::WarmupStableDecay,
               .cooldown = 0.3};
  EXPECT_EQ(s.cooldown_start(), 7);
  const double expected[] = {0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.7, 0.4, 0.1};
  for (int64_t i = 0; i < 10; ++i) EXPECT_NEAR(s.at(i), expected[i], 1e-12) << "step " << i;
  s.cooldown = 0.01;
  EXPECT_EQ(s.cooldown_start(), 9);
  EXPECT_DOUBLE_EQ(s.at(8), 1.0);
  EXPECT_DOUBLE_EQ(s.at(9), 0.1);
  // A warm-up into the cool-down: it starts where the warm-up ends, never above the peak.
  s.cooldown = 0.3;
  s.warmup = 9;
  EXPECT_EQ(s.cooldown_start(), 9);
  EXPECT_DOUBLE_EQ(s.at(8), 1.0);
  EXPECT_DOUBLE_EQ(s.at(9), 0.1);
  s.warmup = 12;  // the run ends in its warm-up; past it, min_lr
  EXPECT_DOUBLE_EQ(s.at(9), 10.0 / 12.0);
  EXPECT_DOUBLE_EQ(s.at(13), 0.1);
}

TEST(LRSchedule, LinearDecay) {
  LRSchedule s{.lr = 2.0, .min_lr = 0.0, .warmup = 0, .total_steps = 5, .decay = DecayKind::Linear};
  EXPECT_DOUBLE_EQ(s.at(0), 2.0);
  EXPECT_DOUBLE_EQ(s.at(1), 1.5);
  EXPECT_DOUBLE_EQ(s.at(2), 1.0);
  EXPECT_DOUBLE_EQ(s.at(4), 0.0);
}

// ---------------------------------------------------------------------------------------------
// The batched sum of squares

TEST(SumOfSquares, OfAListIsTheLoopOfSingleSumsBitwise) {
  std::mt19937_64 rng(40);
  // float32, bfloat16 and float64 mixed, one tensor past a 16k-element chunk, an empty one, and
  // magnitudes from 1e-3 to 1e3, so that adding the per-tensor sums in another order or leaving
  // one out changes the result.
  const std::vector<Tensor> xs = {random_tensor({40000}, rng, F32, -1e3, 1e3),
                                  bf16_of(random_tensor({3, 7}, rng, F32)),
                                  Tensor({0}, F32),
                                  random_tensor({5, 11}, rng, F64, -1e-3, 1e-3),
                                  bf16_of(random_tensor({20000}, rng, F32, -30, 30)),
                                  random_tensor({1}, rng, F32)};
  double loop = 0;
  for (const Tensor& x : xs) loop += ops::sum_of_squares(x);
  const double batched = ops::sum_of_squares(xs);
  EXPECT_TRUE(same_bits(batched, loop)) << batched << " vs " << loop;
  // Squares of float and bf16 values are exact in double; only the order of additions differs.
  double naive = 0;
  for (const Tensor& x : xs)
    for (int64_t i = 0; i < x.numel(); ++i) naive += element(x, i) * element(x, i);
  EXPECT_NEAR(batched, naive, 1e-12 * naive);
  EXPECT_EQ(ops::sum_of_squares(std::vector<Tensor>{}), 0.0);
  EXPECT_EQ(ops::sum_of_squares(std::vector<Tensor>{Tensor({0}, BF16)}), 0.0);
}

TEST(SumOfSquares, OfAListAddsThePerTensorSumsInOrder) {
  // 2^54 first, then ones: each 1 is a quarter of an ulp of 2^54 and rounds away. Added from the
  // end, the ones would make 4, one ulp, before meeting 2^54.
  Tensor big({1}, F32), one({1}, F32), one_f64({1}, F64);
  big.fill(std::ldexp(1.0, 27));
  one.fill(1.0);
  one_f64.fill(1.0);
  const std::vector<Tensor> xs = {big, bf16_of(one), one, one_f64, bf16_of(one)};
  EXPECT_EQ(ops::sum_of_squares(xs), std::ldexp(1.0, 54));
}

TEST(SumOfSquares, RefusesAnIntegerTensorNamingItsIndex) {
  const std::vector<Tensor> xs = {Tensor({2}, F32), Tensor({2}, DType::I32)};
  expect_internal_error([&] { ops::sum_of_squares(xs); },
                        "sum_of_squares: xs[1] must be a contiguous float32 or bfloat16 tensor (or "
                        "float64 on the host), found int32 [2] on cpu");
}

// A Param of n random F32 gradient values (its value unused), counted or not in norms.
Param grad_param(std::mt19937_64& rng, int64_t n) {
  Param p;
  p.name = "g" + std::to_string(n);
  p.global_shape = {n};
  p.value = Tensor({n}, F32);
  p.grad = random_tensor({n}, rng, F32);
  return p;
}

TEST(GradClipping, SumOfSquaresAddsTheCountedGradientsInOrder) {
  std::mt19937_64 rng(41);
  Param a = grad_param(rng, 100), split = grad_param(rng, 30000), tied = grad_param(rng, 7),
        other_rank = grad_param(rng, 9), b = grad_param(rng, 5);
  split.split_dim = 0;  // TP rank 1 of 2 holds its own piece: counted
  split.tp_rank = 1;
  split.tp_size = 2;
  tied.tied_copy = true;   // counted on the first stage only
  other_rank.tp_rank = 1;  // replicated: counted on TP rank 0 only
  other_rank.tp_size = 2;
  const std::vector<Param*> params = {&a, &split, &tied, &other_rank, &b};
  const double expected =
      ops::sum_of_squares(a.grad) + ops::sum_of_squares(split.grad) + ops::sum_of_squares(b.grad);
  EXPECT_TRUE(same_bits(grad_sum_of_squares(params), expected));
}

// ---------------------------------------------------------------------------------------------
// The mixed-precision update

const ops::AdamWStep kMixedStep{
    .lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .t = 1};

TEST(AdamWUpdateMixed, EqualsUpdateThenCastBitwiseForFloat32AndBfloat16Gradients) {
  const int64_t n = 1001;
  for (const DType grad_dtype : {F32, BF16}) {
    SCOPED_TRACE(dtype_name(grad_dtype));
    std::mt19937_64 rng(42);
    Tensor master = random_tensor({n}, rng, F32), exp_avg({n}, F32), exp_avg_sq({n}, F32);
    Tensor value = bf16_of(random_tensor({n}, rng, F32));  // stale: each step must overwrite it
    Tensor ref_master = master.clone(), ref_exp_avg({n}, F32), ref_exp_avg_sq({n}, F32);
    Tensor ref_value({n}, BF16);
    for (int64_t t = 1; t <= 3; ++t) {
      SCOPED_TRACE("step " + std::to_string(t));
      ops::AdamWStep s = kMixedStep;
      s.t = t;
      Tensor grad = random_tensor({n}, rng, F32);
      if (grad_dtype == BF16) grad = bf16_of(grad);
      Tensor grad32({n}, F32);
      ops::cast(grad32, grad);
      ops::adamw_update(ref_master, grad32, ref_exp_avg, ref_exp_avg_sq, s);
      ops::cast(ref_value, ref_master);

      ops::adamw_update_mixed(master, value, grad, exp_avg, exp_avg_sq, s);
      EXPECT_TRUE(bitwise_equal(master, ref_master)) << "master";
      EXPECT_TRUE(bitwise_equal(value, ref_value)) << "value";
      EXPECT_TRUE(bitwise_equal(exp_avg, ref_exp_avg)) << "exp_avg";
      EXPECT_TRUE(bitwise_equal(exp_avg_sq, ref_exp_avg_sq)) << "exp_avg_sq";
    }
  }
}

TEST(AdamWUpdateMixed, RefusesWrongDtypesShapesAndStepsNamingTheArgument) {
  Tensor master({4}, F32), value({4}, BF16), grad({4}, BF16), m({4}, F32), v({4}, F32);
  Tensor bf16_master({4}, BF16), f32_value({4}, F32), long_value({5}, BF16);
  Tensor f64_grad({4}, F64), short_grad({3}, F32), short_m({3}, F32), bf16_v({4}, BF16);
  const ops::AdamWStep s;
  const std::string op = "adamw_update_mixed: ";
  expect_internal_error([&] { ops::adamw_update_mixed(bf16_master, value, grad, m, v, s); },
                        op + "master (fp32 master weights) must be a contiguous float32 tensor on "
                             "cpu, found bfloat16 [4] on cpu");
  expect_internal_error([&] { ops::adamw_update_mixed(master, f32_value, grad, m, v, s); },
                        op + "value (bf16 copy of master) must be a contiguous bfloat16 tensor on "
                             "cpu, found float32 [4] on cpu");
  expect_internal_error([&] { ops::adamw_update_mixed(master, long_value, grad, m, v, s); },
                        op + "value (bf16 copy of master) must have shape [4], found [5]");
  expect_internal_error([&] { ops::adamw_update_mixed(master, value, f64_grad, m, v, s); },
                        op + "grad must be a contiguous float32 or bfloat16 tensor on cpu, found "
                             "float64 [4] on cpu");
  expect_internal_error([&] { ops::adamw_update_mixed(master, value, short_grad, m, v, s); },
                        op + "grad must have shape [4], found [3]");
  expect_internal_error([&] { ops::adamw_update_mixed(master, value, grad, short_m, v, s); },
                        op + "exp_avg must have shape [4], found [3]");
  expect_internal_error([&] { ops::adamw_update_mixed(master, value, grad, m, bf16_v, s); },
                        op + "exp_avg_sq must be a contiguous float32 tensor on cpu");
  ops::AdamWStep zero = s;
  zero.t = 0;
  expect_internal_error([&] { ops::adamw_update_mixed(master, value, grad, m, v, zero); },
                        op + "step t must be >= 1, found 0");
}

// ---------------------------------------------------------------------------------------------
// AdamW over a bfloat16 Param: fp32 master weights, the value rounded from them

// A bfloat16 Param of n elements on the host, its value rounded from random draws.
Param bf16_param(std::mt19937_64& rng, int64_t n) {
  Param p;
  p.name = "w";
  p.kind = ParamKind::Weight;
  p.global_shape = {n};
  p.value = bf16_of(random_tensor({n}, rng, F32));
  p.grad = Tensor({n}, BF16);
  return p;
}

// What AdamW must do to a bfloat16 Param, by the unfused ops: an fp32 master cast from the value,
// updated from an fp32 gradient, and the value cast back from it.
struct MixedPrecisionReference {
  Tensor master, exp_avg, exp_avg_sq, value;
  explicit MixedPrecisionReference(const Param& p)
      : master(p.value.shape(), F32),
        exp_avg(p.value.shape(), F32),
        exp_avg_sq(p.value.shape(), F32),
        value(p.value.shape(), BF16) {
    ops::cast(master, p.value);
  }
  void step(const Tensor& grad32, double lr, int64_t t, const AdamWConfig& cfg) {
    const ops::AdamWStep s{.lr = lr,
                           .beta1 = cfg.beta1,
                           .beta2 = cfg.beta2,
                           .eps = cfg.eps,
                           .weight_decay = cfg.weight_decay,
                           .t = t};
    ops::adamw_update(master, grad32, exp_avg, exp_avg_sq, s);
    ops::cast(value, master);
  }
};

void expect_matches(AdamW& opt, const Param& p, const MixedPrecisionReference& ref) {
  EXPECT_TRUE(bitwise_equal(opt.master()[0], ref.master)) << "master";
  EXPECT_TRUE(bitwise_equal(p.value, ref.value)) << "value";
  EXPECT_TRUE(bitwise_equal(opt.exp_avg()[0], ref.exp_avg)) << "exp_avg";
  EXPECT_TRUE(bitwise_equal(opt.exp_avg_sq()[0], ref.exp_avg_sq)) << "exp_avg_sq";
}

TEST(AdamW, Bfloat16ParamStepsFromItsBf16GradientLikeCastThenUpdateThenCast) {
  std::mt19937_64 rng(43);
  Param w = bf16_param(rng, 257);
  const AdamWConfig cfg;
  AdamW opt({&w}, cfg);
  MixedPrecisionReference ref(w);
  for (int64_t t = 1; t <= 3; ++t) {
    SCOPED_TRACE("step " + std::to_string(t));
    ops::cast(w.grad, random_tensor({257}, rng, F32));
    Tensor grad32({257}, F32);
    ops::cast(grad32, w.grad);
    opt.step(1e-2);
    ref.step(grad32, 1e-2, t, cfg);
    expect_matches(opt, w, ref);
  }
}

TEST(AdamW, Bfloat16ParamStepsFromTheFp32GradientsGivenInsteadOfItsGrad) {
  std::mt19937_64 rng(44);
  Param w = bf16_param(rng, 257);  // its bf16 grad stays zero: the given sums must be used
  const AdamWConfig cfg;
  AdamW opt({&w}, cfg);
  Tensor sums = random_tensor({257}, rng, F32);
  opt.use_gradients({sums});
  MixedPrecisionReference ref(w);
  for (int64_t t = 1; t <= 2; ++t) {
    SCOPED_TRACE("step " + std::to_string(t));
    opt.step(1e-2);
    ref.step(sums, 1e-2, t, cfg);
    expect_matches(opt, w, ref);
    copy_into(sums, random_tensor({257}, rng, F32));  // the next step's sums, in place
  }
}

}  // namespace
}  // namespace tessera
