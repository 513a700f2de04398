// The whole GPT: its gradient against finite differences, its loss at initialization, that it
// can memorise a batch, and that a parameter's tensor-parallel shards are slices of the one
// layout-independent global tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <set>

#include "core/buffer.h"
#include "core/error.h"
#include "core/model/gpt.h"
#include "core/ops/attention.h"
#include "core/ops/cast.h"
#include "core/ops/gelu.h"
#include "core/ops/layernorm.h"
#include "core/optim/lr_schedule.h"
#include "core/optim/optimizer.h"
#include "launcher/sampling.h"
#include "parallel/local_communicator.h"
#include "tests/clip_grad_norm.h"
#include "tests/expect_error.h"
#include "tests/thread_communicator.h"

namespace tessera {
namespace {

using test_support::clip_grad_norm;
using test_support::expect_input_error;

ModelConfig tiny_config(PositionKind pos, DType dtype) {
  ModelConfig c;
  c.vocab_size = 11;
  c.d_model = 8;
  c.layers = 2;
  c.heads = 2;
  c.d_ff = 12;
  c.seq_len = 5;
  c.pos = pos;
  c.init_std = 0.3;  // large enough that every gradient is far from round-off
  c.dtype = dtype;
  return c;
}

Tensor random_tokens(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  Tensor t({B, T}, DType::I32);
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<int32_t>()[i] = static_cast<int32_t>(rng() % V);
  return t;
}

class ModelGradient : public ::testing::TestWithParam<PositionKind> {};

// Central differences of the mean loss in double precision, for a sample of elements of every
// parameter; error measure per tensor: |g_analytic - g_fd|_2 / |g_fd|_2 over the sample.
TEST_P(ModelGradient, MatchesFiniteDifferencesForEveryParameterKind) {
  LocalCommunicator tp("tp");
  GPT model(tiny_config(GetParam(), DType::F64), ModelShard{}, tp, 7);
  const int64_t B = 2, T = 5;
  Tensor inputs = random_tokens(B, T, 11, 1), targets = random_tokens(B, T, 11, 2);
  GPTActivations a = model.make_activations(B);
  model.zero_grad();
  model.forward(a, &inputs, &targets);
  model.backward(a, 1.0);

  std::mt19937_64 rng(3);
  const double h = 1e-5;
  int checked_tensors = 0;
  for (Param* p : model.params()) {
    double* w = p->value.data<double>();
    const double* g = p->grad.data<double>();
    double diff2 = 0, ref2 = 0;
    for (int k = 0; k < 6; ++k) {
      const int64_t i = static_cast<int64_t>(rng() % p->value.numel());
      const double saved = w[i];
      w[i] = saved + h;
      const double up = model.forward(a, &inputs, &targets);
      w[i] = saved - h;
      const double down = model.forward(a, &inputs, &targets);
      w[i] = saved;
      const double fd = (up - down) / (2 * h);
      diff2 += (g[i] - fd) * (g[i] - fd);
      ref2 += fd * fd;
    }
    ASSERT_GT(ref2, 1e-20) << p->name << ": sampled gradient is zero, the check would be empty";
    EXPECT_LT(std::sqrt(diff2 / ref2), 1e-6) << p->name;
    ++checked_tensors;
  }
  // token + (position) + 2 layers x 12 + final norm x 2
  EXPECT_EQ(checked_tensors, (GetParam() == PositionKind::Learned ? 2 : 1) + 24 + 2);
}

INSTANTIATE_TEST_SUITE_P(Positions, ModelGradient,
                         ::testing::Values(PositionKind::Learned, PositionKind::Sinusoidal));

TEST(Model, Float32ForwardMatchesFloat64Within1e5) {
  LocalCommunicator tp("tp");
  GPT m32(tiny_config(PositionKind::Learned, DType::F32), ModelShard{}, tp, 5);
  GPT m64(tiny_config(PositionKind::Learned, DType::F64), ModelShard{}, tp, 5);
  Tensor inputs = random_tokens(2, 5, 11, 4), targets = random_tokens(2, 5, 11, 5);
  GPTActivations a32 = m32.make_activations(2), a64 = m64.make_activations(2);
  const double l32 = m32.forward(a32, &inputs, &targets);
  const double l64 = m64.forward(a64, &inputs, &targets);
  EXPECT_NEAR(l32, l64, 1e-5 * std::abs(l64));
}

// A 2-layer, 64-wide fp32 model.
ModelConfig small_config(int64_t vocab, int64_t seq_len) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.d_model = 64;
  c.layers = 2;
  c.heads = 4;
  c.d_ff = 256;
  c.seq_len = seq_len;
  return c;
}

TEST(Model, LossAtInitializationIsNearLnVocab) {
  const ModelConfig c = small_config(257, 32);
  LocalCommunicator tp("tp");
  GPT model(c, ModelShard{}, tp, 11);
  Tensor inputs = random_tokens(4, 32, 257, 8), targets = random_tokens(4, 32, 257, 9);
  GPTActivations a = model.make_activations(4);
  EXPECT_NEAR(model.forward(a, &inputs, &targets), std::log(257.0), 0.1);
}

// Generation starts after an end-of-document token, as every document but the first does in the
// corpus (GPT-2's <|endoftext|>): without a prompt, not after id 0 (a NUL byte, or <unk>); with
// one, the prompt begins a document, where it began a context of nothing before.
TEST(Model, GenerationStartsAfterAnEndOfDocument) {
  LocalCommunicator tp("tp"), pp("pp");
  GPT model(tiny_config(PositionKind::Learned, DType::F32), ModelShard{}, tp, 3);
  SamplingOptions o;
  o.tokens = 6;
  o.temperature = 1.0;
  o.top_k = 0;
  o.seed = 5;
  o.stop_token = 7;
  SamplingOptions ids = o;  // no end of document: the context is the prompt alone
  ids.stop_token = -1;
  // What generate(o) gives for a context: the tokens drawn before the first 7.
  const auto before_stop = [&](const std::vector<int32_t>& context) {
    std::vector<int32_t> drawn = generate(model, tp, pp, context, ids);
    drawn.erase(std::find(drawn.begin(), drawn.end(), 7), drawn.end());
    return drawn;
  };
  const std::vector<int32_t> unprompted = generate(model, tp, pp, {}, o);
  EXPECT_EQ(unprompted, before_stop({7}));
  EXPECT_NE(unprompted, before_stop({0}));  // so the test tells them apart
  const std::vector<int32_t> prompted = generate(model, tp, pp, {3, 1, 4}, o);
  EXPECT_EQ(prompted, before_stop({7, 3, 1, 4}));
  EXPECT_NE(prompted, before_stop({3, 1, 4}));
}

// The backward is linear in the loss scale, and a power of two scales every rounding alike: a
// quarter of the scale gives a quarter of every gradient, bit for bit, and the scale of each
// call counts (the model fills d loss / d losses only when it changes).
TEST(Model, EachBackwardUsesItsOwnLossScale) {
  const ModelConfig c = small_config(64, 16);
  LocalCommunicator tp("tp");
  GPT model(c, ModelShard{}, tp, 5);
  Tensor inputs = random_tokens(2, 16, 64, 1), targets = random_tokens(2, 16, 64, 2);
  GPTActivations a = model.make_activations(2);
  const auto gradients = [&](double loss_scale) {
    model.zero_grad();
    model.forward(a, &inputs, &targets);
    model.backward(a, loss_scale);
    std::vector<std::vector<float>> g;
    for (const Param* p : model.params())
      g.emplace_back(p->grad.data<float>(), p->grad.data<float>() + p->grad.numel());
    return g;
  };
  const std::vector<std::vector<float>> whole = gradients(1.0), quarter = gradients(0.25),
                                        again = gradients(1.0);
  EXPECT_EQ(again, whole);
  for (size_t i = 0; i < whole.size(); ++i)
    for (size_t j = 0; j < whole[i].size(); ++j)
      ASSERT_EQ(quarter[i][j], 0.25f * whole[i][j]) << model.params()[i]->name << " " << j;
}

TEST(Model, MemorisesOneBatchWithin300Steps) {
  const ModelConfig c = small_config(64, 16);
  LocalCommunicator tp("tp");
  GPT model(c, ModelShard{}, tp, 21);
  Tensor inputs = random_tokens(4, 16, 64, 10), targets = random_tokens(4, 16, 64, 11);
  GPTActivations a = model.make_activations(4);
  AdamWConfig oc;
  oc.weight_decay = 0;
  AdamW opt(model.params(), oc);
  double loss = 0;
  int step = 0;
  for (; step < 300; ++step) {
    model.zero_grad();
    loss = model.forward(a, &inputs, &targets);
    if (loss < 0.05) break;
    model.backward(a, 1.0);
    clip_grad_norm(model.params(), 1.0, tp);
    opt.step(3e-3);
  }
  EXPECT_LT(loss, 0.05) << "after " << step << " steps";
}

TEST(Model, ComputeTypesTheDeviceHasNoKernelsForAreRefusedNamingThePrecisionOption) {
  LocalCommunicator tp("tp");
  ModelConfig c = small_config(64, 16);
  c.dtype = DType::F64;
  c.device = Device::CUDA;  // the CUDA kernels are float32 and bfloat16
  expect_input_error([&] { GPT model(c, ModelShard{}, tp, 1); }, {"--train.precision", "float64"});
}

// bfloat16 on the host: each op computes in float32 on widened copies and rounds what it writes
// (core/ops/dispatch.h, via_f32). The model's loss and gradients in bf16 are float32's up to
// bf16 rounding, its statistics stay float32; an op's result is its float32 result rounded; the
// checks see the real dtypes (float32 statistics, one dtype for the rest); and aliased outputs
// (residual_backward's da == db, which adds dout twice) keep their meaning.
TEST(Model, Bfloat16OnTheHostComputesInFloat32AndRounds) {
  LocalCommunicator tp("tp");
  ModelConfig c = small_config(64, 16);
  GPT f32(c, ModelShard{}, tp, 5);
  c.dtype = DType::BF16;
  GPT mixed(c, ModelShard{}, tp, 5);
  Tensor inputs = random_tokens(2, 16, 64, 1), targets = random_tokens(2, 16, 64, 2);
  GPTActivations a32 = f32.make_activations(2), a16 = mixed.make_activations(2);
  EXPECT_EQ(a16.lnf_mean.dtype(), DType::F32);
  const double l32 = f32.forward(a32, &inputs, &targets);
  const double l16 = mixed.forward(a16, &inputs, &targets);
  EXPECT_NEAR(l16, l32, 1e-2 * l32);
  EXPECT_NE(l16, l32);
  f32.zero_grad();
  mixed.zero_grad();
  f32.backward(a32, 1.0);
  mixed.backward(a16, 1.0);
  const std::vector<Param*> p32 = f32.params(), p16 = mixed.params();
  for (size_t i = 0; i < p32.size(); ++i) {
    ASSERT_EQ(p16[i]->grad.dtype(), DType::BF16) << p16[i]->name;
    const Tensor g16 = ops::cast_to(p16[i]->grad, DType::F32);
    double diff = 0, norm = 0;
    for (int64_t j = 0; j < g16.numel(); ++j) {
      const double want = p32[i]->grad.data<float>()[j];
      diff += (g16.data<float>()[j] - want) * (g16.data<float>()[j] - want);
      norm += want * want;
    }
    EXPECT_LT(std::sqrt(diff), 0.05 * std::sqrt(norm)) << p32[i]->name;
  }

  Tensor x({3, 5}, DType::F32);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = 0.37f * static_cast<float>(i - 7);
  const Tensor xb = ops::cast_to(x, DType::BF16);
  Tensor g = xb.clone(), g32 = ops::cast_to(xb, DType::F32);
  ops::gelu_backward(g, g, xb);  // in place, as the model runs it
  Tensor want(x.shape(), DType::F32);
  ops::gelu_backward(want, g32, g32);
  for (int64_t i = 0; i < x.numel(); ++i)
    EXPECT_EQ(g.data<bf16>()[i].bits, to_bf16(want.data<float>()[i]).bits) << i;
  Tensor both = xb.clone();
  ops::residual_backward(both, both, xb);  // da == db: both += dout, so x + 2 x
  for (int64_t i = 0; i < x.numel(); ++i)
    EXPECT_EQ(to_float(both.data<bf16>()[i]), to_float(to_bf16(3 * to_float(xb.data<bf16>()[i]))))
        << i;
  // Statistics must be float32 under bf16, and operands one dtype: refused as on the GPU.
  Tensor out(x.shape(), DType::BF16), w({5}, DType::BF16), bias({5}, DType::BF16);
  Tensor mean16({3}, DType::BF16), rstd({3}, DType::F32);
  EXPECT_THROW(ops::layernorm_forward(out, mean16, rstd, xb, w, bias), InternalError);
  EXPECT_THROW(ops::gelu_forward(g32, xb), InternalError);
  // Partly overlapping bf16 views cannot be given float32 copies that see each other's writes.
  Tensor flat({10}, DType::BF16);
  Tensor front = flat.slice0(0, 6), back = flat.slice0(4, 10);
  EXPECT_THROW(ops::residual_forward(front, back, back), InternalError);
}

// Materialises the global tensor, then every shard, and checks each shard element against the
// global element its global_index() names: invariant 1 (layout-independent initialization).
// The shards together name every global element exactly once. (That each holds the piece it
// should is pinned by the test below: materialize fills by global_index, so the value check
// alone holds for any index map.)
void expect_shards_slice_global(Param proto, int tp) {
  Param whole = proto;
  whole.tp_size = 1;
  whole.materialize(99, DType::F64);
  std::vector<int> named(static_cast<size_t>(whole.value.numel()), 0);
  for (int r = 0; r < tp; ++r) {
    Param shard = proto;
    shard.tp_rank = r;
    shard.tp_size = tp;
    shard.materialize(99, DType::F64);
    for (int64_t i = 0; i < shard.value.numel(); ++i) {
      const int64_t g = shard.global_index(i);
      ASSERT_TRUE(g >= 0 && g < whole.value.numel()) << proto.name << " rank " << r;
      ++named[static_cast<size_t>(g)];
      ASSERT_EQ(shard.value.data<double>()[i], whole.value.data<double>()[g])
          << proto.name << " rank " << r << " element " << i;
    }
  }
  for (size_t g = 0; g < named.size(); ++g)
    ASSERT_EQ(named[g], 1) << proto.name << ", TP " << tp << ": global element " << g;
}

// Element `local` of TP rank `rank` of `tp` of `p`: its global index.
int64_t global_index_of(Param p, int rank, int tp, int64_t local) {
  p.tp_rank = rank, p.tp_size = tp;
  return p.global_index(local);
}

TEST(Param, TensorParallelShardsAreSlicesOfTheGlobalTensor) {
  Param qkv;
  qkv.name = "layers/00/attn/qkv/weight";
  qkv.global_shape = {3 * 8, 4};
  qkv.split_dim = 0;
  qkv.groups = 3;  // each of q, k, v split separately, so a shard holds whole heads
  expect_shards_slice_global(qkv, 2);
  expect_shards_slice_global(qkv, 4);
  Param row = qkv;
  row.name = "layers/00/attn/proj/weight";
  row.global_shape = {4, 8};
  row.split_dim = 1;
  row.groups = 1;
  expect_shards_slice_global(row, 2);
  Param vocab = row;
  vocab.name = "embedding/token/weight";
  vocab.global_shape = {11, 4};  // 11 rows over 2 or 3 ranks: uneven pieces
  vocab.split_dim = 0;
  expect_shards_slice_global(vocab, 2);
  expect_shards_slice_global(vocab, 3);
  // Which piece each rank holds, by hand. qkv [24, 4] over 2: rank 0 holds rows 0-3 of q, then
  // 8-11 of k (its local row 4); rank 1 starts at row 4.
  EXPECT_EQ(global_index_of(qkv, 0, 2, 4 * 4), 8 * 4);
  EXPECT_EQ(global_index_of(qkv, 0, 2, 8 * 4 + 1), 16 * 4 + 1);
  EXPECT_EQ(global_index_of(qkv, 1, 2, 0), 4 * 4);
  // proj [4, 8] split by column over 2: rank 1 holds columns 4-7 of each row.
  EXPECT_EQ(global_index_of(row, 1, 2, 0), 4);
  EXPECT_EQ(global_index_of(row, 1, 2, 4), 8 + 4);
  // 11 vocabulary rows over 2: rows 0-4 and 5-10; over 3: 0-2, 3-6, 7-10.
  EXPECT_EQ(global_index_of(vocab, 1, 2, 0), 5 * 4);
  EXPECT_EQ(global_index_of(vocab, 1, 3, 0), 3 * 4);
  EXPECT_EQ(global_index_of(vocab, 2, 3, 0), 7 * 4);
  // A tensor that is not split (a LayerNorm's) has no piece to ask for.
  Param norm = row;
  norm.name = "layers/00/ln1/weight";
  norm.global_shape = {4};
  norm.split_dim = -1;
  norm.tp_size = 2;
  EXPECT_THROW(norm.piece_begin(), InternalError);
  EXPECT_THROW(norm.piece_end(), InternalError);
  EXPECT_EQ(norm.local_shape(), norm.global_shape);
}

TEST(Param, QkvShardHoldsTheSameHeadsOfQKAndV) {
  Param qkv;
  qkv.name = "q";
  qkv.global_shape = {3 * 8, 2};
  qkv.split_dim = 0;
  qkv.groups = 3;
  qkv.tp_rank = 1;
  qkv.tp_size = 2;
  // Local rows 0..3 are q rows 4..7, local rows 4..7 are k rows 4..7 (global rows 12..15).
  EXPECT_EQ(qkv.global_index(0), 4 * 2);
  EXPECT_EQ(qkv.global_index(4 * 2), 12 * 2);
  EXPECT_EQ(qkv.global_index(8 * 2 + 1), 20 * 2 + 1);
}

// Loss and gradients of one batch on `tp` shards (ranks as threads), with every shard's gradient
// scattered into the global tensor through Param::global_index.
struct ShardedResult {
  double loss = 0;
  std::map<std::string, std::vector<double>> grads;  // global tensors, by name
  // Parameters replicated over TP whose gradient differs between TP ranks (the trainer relies
  // on their being the same bits).
  std::set<std::string> replicas_differ;
};

ShardedResult sharded_loss_and_grads(const ModelConfig& cfg, int tp_size, const Tensor& inputs,
                                     const Tensor& targets, bool sequence_parallel = false) {
  ShardedResult out;
  std::mutex mu;
  test_support::run_ranks(tp_size, [&](Communicator& tp) {
    ModelShard shard;
    shard.tp_rank = tp.rank();
    shard.tp_size = tp.size();
    shard.sequence_parallel = sequence_parallel;
    GPT model(cfg, shard, tp, 17);
    GPTActivations a = model.make_activations(inputs.size(0));
    model.zero_grad();
    const double loss = model.forward(a, &inputs, &targets);
    model.backward(a, 1.0);
    std::lock_guard<std::mutex> lock(mu);
    if (tp.rank() == 0) out.loss = loss;
    for (Param* p : model.params()) {
      const bool seen = out.grads.count(p->name) > 0;
      std::vector<double>& g = out.grads[p->name];
      g.resize(static_cast<size_t>(shape_numel(p->global_shape)));
      for (int64_t i = 0; i < p->grad.numel(); ++i) {
        double& slot = g[static_cast<size_t>(p->global_index(i))];
        if (seen && p->tp_replicated() && slot != p->grad.data<double>()[i])
          out.replicas_differ.insert(p->name);
        slot = p->grad.data<double>()[i];
      }
    }
  });
  return out;
}

// The loss and every global gradient of `many` ranks within 1e-12 of `one` rank's (float64),
// and each replicated parameter's gradient the same bits on every rank.
void expect_same_loss_and_grads(const ShardedResult& many, const ShardedResult& one,
                                const std::string& what) {
  EXPECT_NEAR(many.loss, one.loss, 1e-12 * one.loss) << what;
  EXPECT_TRUE(many.replicas_differ.empty()) << *many.replicas_differ.begin() << ", " << what;
  ASSERT_EQ(many.grads.size(), one.grads.size()) << what;
  for (const auto& [name, g1] : one.grads) {
    const std::vector<double>& gn = many.grads.at(name);
    double diff = 0, ref = 0;
    for (size_t i = 0; i < g1.size(); ++i) {
      diff = std::max(diff, std::abs(gn[i] - g1[i]));
      ref = std::max(ref, std::abs(g1[i]));
    }
    EXPECT_GT(ref, 0) << name << ", " << what;
    EXPECT_LE(diff, 1e-12 * ref) << name << ", " << what;
  }
}

// The Megatron layers with a real (threaded) communicator: column/row-parallel linears with
// their conjugate all-reduces, heads split over ranks, vocab-parallel embedding and loss over
// an uneven vocabulary split. Same loss, same global gradients as the plain model.
TEST(TensorParallel, TwoAndFourShardsGiveTheLossAndGradientsOfOne) {
  ModelConfig c = tiny_config(PositionKind::Learned, DType::F64);
  c.heads = 4;
  c.d_ff = 16;  // 11 vocabulary rows over 2 or 4 ranks: uneven pieces
  Tensor inputs = random_tokens(2, 5, 11, 12), targets = random_tokens(2, 5, 11, 13);
  const ShardedResult one = sharded_loss_and_grads(c, 1, inputs, targets);
  for (int tp : {2, 4}) {
    expect_same_loss_and_grads(sharded_loss_and_grads(c, tp, inputs, targets), one,
                               "TP " + std::to_string(tp));
  }
}

// Sequence parallelism (the residual stream split over the TP ranks by tokens, reduce-scatters
// and all-gathers for the all-reduces): the loss and global gradients of the plain model, with
// learned and sinusoidal positions, an uneven vocabulary split, and 2 x 6 tokens over 2 and 4
// ranks (3 rows each at TP 4: a rank's rows cross from one sequence into the next). Every
// recompute mode gives the same bits, as without it.
TEST(TensorParallel, SequenceParallelGivesTheLossAndGradientsOfOneRank) {
  for (PositionKind pos : {PositionKind::Learned, PositionKind::Sinusoidal}) {
    ModelConfig c = tiny_config(pos, DType::F64);
    c.heads = 4;
    c.d_ff = 16;
    c.seq_len = 6;
    Tensor inputs = random_tokens(2, 6, 11, 14), targets = random_tokens(2, 6, 11, 15);
    const ShardedResult one = sharded_loss_and_grads(c, 1, inputs, targets);
    for (int tp : {2, 4}) {
      const std::string what = position_kind_name(pos) + ", TP " + std::to_string(tp);
      const ShardedResult many = sharded_loss_and_grads(c, tp, inputs, targets, true);
      expect_same_loss_and_grads(many, one, what);
      for (Recompute mode : {Recompute::Selective, Recompute::Full}) {
        ModelConfig m = c;
        m.recompute = mode;
        const ShardedResult r = sharded_loss_and_grads(m, tp, inputs, targets, true);
        EXPECT_EQ(r.loss, many.loss) << recompute_name(mode) << ", " << what;
        for (const auto& [name, g] : many.grads)
          EXPECT_EQ(r.grads.at(name), g) << name << ", " << recompute_name(mode) << ", " << what;
      }
    }
  }
}

// Recompute reruns deterministic ops on the same inputs, so every mode gives the same bits; at
// TP 2 the rerun forward repeats its all-reduces, which must not disturb the backward's.
TEST(Recompute, EveryModeGivesBitwiseTheLossAndGradientsOfNoneAlsoAtTp2) {
  ModelConfig c = tiny_config(PositionKind::Learned, DType::F64);
  c.heads = 4;
  c.d_ff = 16;
  Tensor inputs = random_tokens(2, 5, 11, 12), targets = random_tokens(2, 5, 11, 13);
  for (int tp : {1, 2}) {
    const ShardedResult none = sharded_loss_and_grads(c, tp, inputs, targets);
    for (Recompute mode : {Recompute::Selective, Recompute::Full}) {
      ModelConfig m = c;
      m.recompute = mode;
      const ShardedResult r = sharded_loss_and_grads(m, tp, inputs, targets);
      EXPECT_EQ(r.loss, none.loss) << recompute_name(mode) << " TP " << tp;
      for (const auto& [name, g] : none.grads)
        EXPECT_EQ(r.grads.at(name), g) << name << ", " << recompute_name(mode) << " TP " << tp;
    }
  }
}

// `steps` training steps on one batch (forward, backward, clipping, AdamW at rate lr): the losses.
std::vector<double> train_steps(GPT& model, AdamW& opt, GPTActivations& a, const Tensor& inputs,
                                const Tensor& targets, Communicator& tp, int steps, double lr) {
  std::vector<double> losses;
  for (int step = 0; step < steps; ++step) {
    model.zero_grad();
    losses.push_back(model.forward(a, &inputs, &targets));
    model.backward(a, 1.0);
    clip_grad_norm(model.params(), 1.0, tp);
    opt.step(lr);
  }
  return losses;
}

TEST(Recompute, TrainingStepsAreBitwiseTheSameAndActivationsShrink) {
  std::map<Recompute, std::vector<double>> losses;
  std::map<Recompute, size_t> activation_bytes;
  for (Recompute mode : {Recompute::None, Recompute::Selective, Recompute::Full}) {
    ModelConfig c = small_config(64, 16);
    c.layers = 4;
    c.recompute = mode;
    LocalCommunicator tp("tp");
    GPT model(c, ModelShard{}, tp, 21);
    Tensor inputs = random_tokens(4, 16, 64, 10), targets = random_tokens(4, 16, 64, 11);
    const size_t before = host_bytes_allocated();
    GPTActivations a = model.make_activations(4);
    activation_bytes[mode] = host_bytes_allocated() - before;
    AdamW opt(model.params(), AdamWConfig{});
    losses[mode] = train_steps(model, opt, a, inputs, targets, tp, 5, 3e-3);
  }
  EXPECT_EQ(losses[Recompute::Selective], losses[Recompute::None]);
  EXPECT_EQ(losses[Recompute::Full], losses[Recompute::None]);
  // Four layers: selective drops each layer's GELU output and attention probabilities, full
  // everything but the residual stream; both add one shared layer's set.
  EXPECT_LT(activation_bytes[Recompute::Selective], activation_bytes[Recompute::None]);
  EXPECT_LT(activation_bytes[Recompute::Full], activation_bytes[Recompute::Selective]);
}

// gpt_state_bytes + gpt_activation_bytes, which the GPU benchmark sizes its micro-batch by and
// the log prints beside the peak, against the most host memory two training steps held at once
// (AdamW alone: no fp32 gradient sums). Not bf16: on the host each bf16 op runs on float32
// copies of its operands, which the estimate, made for the GPU, leaves out.
TEST(MemoryEstimate, MatchesThePeakOfATrainingStep) {
  for (DType dtype : {DType::F32, DType::F64}) {
    for (Recompute mode : {Recompute::None, Recompute::Selective, Recompute::Full}) {
      ModelConfig c = small_config(512, 64);
      c.layers = 4;
      c.dtype = dtype;
      c.recompute = mode;
      const int64_t B = 4;
      Tensor inputs = random_tokens(B, c.seq_len, c.vocab_size, 30);
      Tensor targets = random_tokens(B, c.seq_len, c.vocab_size, 31);
      const size_t before = host_bytes_allocated();
      reset_host_peak();
      {
        LocalCommunicator tp("tp");
        GPT model(c, ModelShard{}, tp, 22);
        AdamW opt(model.params(), AdamWConfig{});
        GPTActivations a = model.make_activations(B);
        train_steps(model, opt, a, inputs, targets, tp, 2, 1e-3);
      }
      const double peak = static_cast<double>(host_peak_bytes() - before);
      const double estimate =
          static_cast<double>(gpt_state_bytes(c, false) + gpt_activation_bytes(c, B));
      std::printf("%s, recompute %s: peak %.0f bytes, estimate %.0f (%.3f)\n",
                  dtype_name(dtype).c_str(), recompute_name(mode).c_str(), peak, estimate,
                  estimate / peak);
      EXPECT_NEAR(estimate / peak, 1.0, 0.005) << dtype_name(dtype) << ", " << recompute_name(mode);
    }
  }
}

// cuDNN's deterministic attention backward keeps dP in its workspace (docs/GPU.md): the estimate
// adds 2 B H T^2 bytes when bf16 attention runs on cuDNN, and nothing for tessera's kernels.
TEST(MemoryEstimate, AddsCudnnsAttentionWorkspaceWhenItIsChosen) {
  ModelConfig c = small_config(512, 64);
  c.device = Device::CUDA;
  c.dtype = DType::BF16;
  const int64_t B = 4;
  const int64_t tessera_kernels = gpt_activation_bytes(c, B);
  ops::set_bf16_attention_kernels(ops::AttentionKernels::TensorCores);
  EXPECT_EQ(gpt_activation_bytes(c, B), tessera_kernels);
  ops::set_bf16_attention_kernels(ops::AttentionKernels::Cudnn);
  const int64_t cudnn = gpt_activation_bytes(c, B);
  c.dtype = DType::F32;  // float32 attention always runs on tessera's kernels
  const int64_t cudnn_f32 = gpt_activation_bytes(c, B);
  ops::set_bf16_attention_kernels(ops::AttentionKernels::CudaCores);
  EXPECT_EQ(cudnn - tessera_kernels, 2 * B * c.heads * c.seq_len * c.seq_len);
  EXPECT_EQ(cudnn_f32, gpt_activation_bytes(c, B));
}

}  // namespace
}  // namespace tessera
