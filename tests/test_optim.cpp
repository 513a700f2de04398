// AdamW, global-norm clipping and the LR schedule against values computed by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "core/optim/lr_schedule.h"
#include "core/optim/optimizer.h"
#include "parallel/local_communicator.h"

namespace tessera {
namespace {

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

TEST(AdamW, NoWeightDecayOnBiasesNormsAndEmbeddingsUnlessConfigured) {
  Param w = scalar_param(ParamKind::Weight, 1, 0), b = scalar_param(ParamKind::Bias, 1, 0),
        n = scalar_param(ParamKind::Norm, 1, 0), e = scalar_param(ParamKind::Embedding, 1, 0);
  AdamWConfig cfg;
  cfg.weight_decay = 0.5;
  AdamW opt({&w, &b, &n, &e}, cfg);
  opt.step(0.1);  // zero gradients: only the decay moves a parameter
  EXPECT_DOUBLE_EQ(w.value.data<double>()[0], 1.0 - 0.1 * 0.5);
  EXPECT_DOUBLE_EQ(b.value.data<double>()[0], 1.0);
  EXPECT_DOUBLE_EQ(n.value.data<double>()[0], 1.0);
  EXPECT_DOUBLE_EQ(e.value.data<double>()[0], 1.0);

  cfg.decay_embeddings = cfg.decay_biases_norms = true;
  AdamW all({&b, &n, &e}, cfg);
  all.step(0.1);
  EXPECT_DOUBLE_EQ(b.value.data<double>()[0], 0.95);
  EXPECT_DOUBLE_EQ(n.value.data<double>()[0], 0.95);
  EXPECT_DOUBLE_EQ(e.value.data<double>()[0], 0.95);
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

TEST(LRSchedule, LinearDecay) {
  LRSchedule s{.lr = 2.0, .min_lr = 0.0, .warmup = 0, .total_steps = 5, .decay = DecayKind::Linear};
  EXPECT_DOUBLE_EQ(s.at(0), 2.0);
  EXPECT_DOUBLE_EQ(s.at(1), 1.5);
  EXPECT_DOUBLE_EQ(s.at(2), 1.0);
  EXPECT_DOUBLE_EQ(s.at(4), 0.0);
}

}  // namespace
}  // namespace tessera
