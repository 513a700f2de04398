// The parallel machinery that needs no other rank: the grid's rank arithmetic against DESIGN's
// formula, which GPU a rank takes, layout errors, stage splits, the 1F1B schedule against its
// definition, NCCL's first contacts, and the gradient buckets' flat layout. Multi-rank behaviour
// is in test_comm and test_layouts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <set>

#include "core/error.h"
#include "core/model/gpt.h"
#include "launcher/cluster.h"
#include "parallel/first_contact.h"
#include "parallel/grad_buckets.h"
#include "parallel/local_communicator.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/process_grid.h"
#include "parallel/zero_optimizer.h"
#include "tests/expect_error.h"
#include "tests/zero_mixed_case.h"

namespace tessera {
namespace {

TEST(GridLayout, RankIsTpFastestThenDpThenPp) {
  const GridLayout l{2, 3, 4};  // tp, dp, pp
  int rank = 0;
  for (int pp = 0; pp < 4; ++pp)
    for (int dp = 0; dp < 3; ++dp)
      for (int tp = 0; tp < 2; ++tp, ++rank) {
        EXPECT_EQ(l.rank_of({tp, dp, pp}), (pp * 3 + dp) * 2 + tp);
        EXPECT_EQ(l.rank_of({tp, dp, pp}), rank);
        const GridCoord c = l.coord_of(rank);
        EXPECT_EQ(c.tp, tp);
        EXPECT_EQ(c.dp, dp);
        EXPECT_EQ(c.pp, pp);
      }
}

TEST(GridLayout, GroupsPartitionTheWorldAndVaryOneCoordinate) {
  const GridLayout l{2, 2, 2};
  EXPECT_EQ(l.tp_group(5), (std::vector<int>{4, 5}));
  EXPECT_EQ(l.dp_group(5), (std::vector<int>{5, 7}));
  EXPECT_EQ(l.pp_group(5), (std::vector<int>{1, 5}));
  EXPECT_EQ(l.embedding_group(5), (std::vector<int>{1, 5}));
  for (auto group : {&GridLayout::tp_group, &GridLayout::dp_group, &GridLayout::pp_group}) {
    std::set<std::vector<int>> groups;
    for (int r = 0; r < l.world_size(); ++r) {
      const std::vector<int> g = (l.*group)(r);
      EXPECT_NE(std::find(g.begin(), g.end(), r), g.end());
      groups.insert(g);
    }
    std::set<int> covered;
    for (const auto& g : groups) covered.insert(g.begin(), g.end());
    EXPECT_EQ(covered.size(), 8u);
    EXPECT_EQ(groups.size() * groups.begin()->size(), 8u);  // disjoint and equal
  }
}

TEST(GridLayout, EmbeddingGroupIsFirstAndLastStageOnly) {
  const GridLayout l{1, 1, 4};
  EXPECT_EQ(l.embedding_group(0), (std::vector<int>{0, 3}));
  EXPECT_TRUE(l.embedding_group(1).empty());
  EXPECT_TRUE(l.embedding_group(2).empty());
  EXPECT_EQ(l.embedding_group(3), (std::vector<int>{0, 3}));
  EXPECT_EQ((GridLayout{2, 1, 1}).embedding_group(1), (std::vector<int>{1}));
}

// Which GPU a rank takes: its index on its node among all the node's GPUs, or the only one it
// sees (Slurm's --gpus-per-task=1 shows each rank its own as GPU 0).
TEST(GpuIndex, NodeLocalRankAmongSeveralOrTheOnlyOneVisible) {
  EXPECT_EQ(gpu_index_for(8, 0), 0);
  EXPECT_EQ(gpu_index_for(8, 7), 7);
  EXPECT_EQ(gpu_index_for(1, 0), 0);
  EXPECT_EQ(gpu_index_for(1, 5), 0);
  test_support::expect_input_error([] { gpu_index_for(4, 4); },
                                   {"--train.device cuda", "this rank is number 4 on its node",
                                    "shows it 4 GPUs", "at most one rank per GPU"});
}

// Ranks that see the same GPU (two on a one-GPU node) are named before NCCL starts; the same bus
// id on two hosts, or two GPUs on one host, are different GPUs.
// After the ranks agree to start, a stop signal is held for the step's all-reduce: a scheduler's
// (SIGTERM, SIGUSR1) is not replaced by a later SIGINT, which made the run a person's stop (exit
// 130, not requeued), nor by another scheduler's. Raised in this process, each delivered before
// raise() returns, so in a known order (sent together, Linux delivers the lower number first).
TEST(StopSignals, ASchedulersSignalIsNotReplacedByALaterOne) {
  struct sigaction before[3] = {};
  const int signals[3] = {SIGINT, SIGTERM, SIGUSR1};
  for (int i = 0; i < 3; ++i) sigaction(signals[i], nullptr, &before[i]);
  if (before[0].sa_handler == SIG_IGN)
    GTEST_SKIP() << "SIGINT is ignored in this process (a background job): the handlers leave "
                    "it so";
  install_stop_handlers();
  ranks_agreed_to_start();
  ASSERT_EQ(stop_signal(), 0);
  std::raise(SIGTERM);
  EXPECT_EQ(stop_signal(), SIGTERM);
  std::raise(SIGINT);  // the first Ctrl-C: it would stop the run by itself
  EXPECT_EQ(stop_signal(), SIGTERM);
  std::raise(SIGUSR1);
  EXPECT_EQ(stop_signal(), SIGTERM);
  for (int i = 0; i < 3; ++i) sigaction(signals[i], &before[i], nullptr);
}

// Handlers that something replaced after install_stop_handlers (MPI_Init may install its own)
// are put back, and named; ones left in place are not touched.
TEST(StopSignals, HandlersReplacedAfterTheyWereInstalledArePutBack) {
  struct sigaction before[4] = {};
  const int all[4] = {SIGTERM, SIGUSR1, SIGINT, SIGPIPE};  // what install_stop_handlers takes
  for (int i = 0; i < 4; ++i) sigaction(all[i], nullptr, &before[i]);
  const int signals[2] = {SIGTERM, SIGUSR1};
  install_stop_handlers();
  struct sigaction ours {};
  sigaction(SIGTERM, nullptr, &ours);
  EXPECT_EQ(restore_stop_handlers(), "");
  struct sigaction foreign {};
  foreign.sa_handler = SIG_DFL;
  for (const int s : signals) sigaction(s, &foreign, nullptr);
  EXPECT_EQ(restore_stop_handlers(), "SIGUSR1, SIGTERM");
  for (const int s : signals) {
    struct sigaction now {};
    sigaction(s, nullptr, &now);
    EXPECT_EQ(now.sa_handler, ours.sa_handler) << s;
  }
  for (int i = 0; i < 4; ++i) sigaction(all[i], &before[i], nullptr);
}

TEST(GpuIndex, RanksSharingAGpuAreNamedWithTheGpuAndHost) {
  EXPECT_EQ(shared_gpu_error({"a 0000:1B:00.0", "a 0000:1C:00.0", "b 0000:1B:00.0"}), "");
  EXPECT_EQ(shared_gpu_error({"a 0000:1B:00.0"}), "");
  const std::string e =
      shared_gpu_error({"a 0000:1B:00.0", "b 0000:1B:00.0", "b 0000:2B:00.0", "b 0000:1B:00.0"});
  EXPECT_NE(e.find("ranks 1 and 3 both use the GPU at PCI 0000:1B:00.0 on b"), std::string::npos)
      << e;
  EXPECT_NE(e.find("at most one rank per GPU"), std::string::npos) << e;
}

TEST(ResolveLayout, InfersDataParallelFromTheWorldSize) {
  const GridLayout l = resolve_layout(2, 2, 0, 8);
  EXPECT_EQ(l.dp, 2);
  EXPECT_EQ(l.world_size(), 8);
}

TEST(ResolveLayout, WorldSizeThatIsNotTheProductIsRejectedNamingTheOptions) {
  try {
    resolve_layout(2, 2, 2, 6);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("--parallel.dp 2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("world size is 6"), std::string::npos) << e.what();
  }
  EXPECT_THROW(resolve_layout(4, 1, 0, 6), InputError);
  EXPECT_THROW(resolve_layout(0, 1, 0, 1), InputError);
}

TEST(StageLayers, CoverEveryLayerOnceAndGiveExtrasToTheFirstStages) {
  EXPECT_EQ(stage_layers(5, 2, 0).begin, 0);
  EXPECT_EQ(stage_layers(5, 2, 0).end, 3);
  EXPECT_EQ(stage_layers(5, 2, 1).begin, 3);
  EXPECT_EQ(stage_layers(5, 2, 1).end, 5);
  for (int64_t layers : {4, 7, 24})
    for (int pp : {1, 2, 3, 4}) {
      int64_t next = 0;
      for (int s = 0; s < pp; ++s) {
        const LayerRange r = stage_layers(layers, pp, s);
        EXPECT_EQ(r.begin, next);
        EXPECT_GE(r.end - r.begin, layers / pp);
        EXPECT_LE(r.end - r.begin, layers / pp + 1);
        next = r.end;
      }
      EXPECT_EQ(next, layers);
    }
}

TEST(OneFOneB, FourStagesEightMicrobatchesFollowTheDefinition) {
  EXPECT_EQ(schedule_string(one_f_one_b(4, 0, 8)),
            "F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7");
  EXPECT_EQ(schedule_string(one_f_one_b(4, 3, 8)),
            "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7");
  EXPECT_EQ(schedule_string(one_f_one_b(4, 1, 2)), "F0 F1 B0 B1");
  EXPECT_EQ(schedule_string(one_f_one_b(1, 0, 3)), "F0 B0 F1 B1 F2 B2");
}

// Warm-up of min(p - s - 1, m) forwards, then strict alternation, each microbatch forward before
// backward, backwards in order, and never more than p - s microbatches in flight.
TEST(OneFOneB, EveryStageWarmsUpAlternatesAndCoolsDown) {
  for (int p : {1, 2, 3, 4, 8})
    for (int m : {1, 2, 4, 7, 16})
      for (int s = 0; s < p; ++s) {
        const std::vector<PipeAction> a = one_f_one_b(p, s, m);
        ASSERT_EQ(a.size(), 2u * static_cast<size_t>(m));
        const int warmup = std::min(p - s - 1, m);
        for (int i = 0; i < warmup; ++i) EXPECT_EQ(a[i], (PipeAction{PipeAction::Forward, i}));
        int f = 0, b = 0, max_in_flight = 0;
        for (const PipeAction& x : a) {
          if (x.kind == PipeAction::Forward) {
            EXPECT_EQ(x.microbatch, f++);
          } else {
            EXPECT_EQ(x.microbatch, b++);
            EXPECT_LT(x.microbatch, f);
          }
          max_in_flight = std::max(max_in_flight, f - b);
        }
        EXPECT_EQ(max_in_flight, in_flight_microbatches(p, s, m)) << p << " " << s << " " << m;
        // Steady state: after warm-up, F and B alternate until the forwards run out.
        for (int i = warmup; i + 1 < 2 * (m - warmup) + warmup; i += 2) {
          EXPECT_EQ(a[static_cast<size_t>(i)].kind, PipeAction::Forward);
          EXPECT_EQ(a[static_cast<size_t>(i + 1)].kind, PipeAction::Backward);
        }
      }
}

// Running every stage's schedule with blocking receives and non-blocking sends finishes: each
// receive finds its message already sent, whatever order the stages are visited in.
TEST(OneFOneB, StagesExchangeWithoutDeadlock) {
  for (int p : {2, 3, 4})
    for (int m : {1, 3, 8}) {
      std::vector<std::vector<PipeAction>> plans;
      for (int s = 0; s < p; ++s) plans.push_back(one_f_one_b(p, s, m));
      std::vector<size_t> next(static_cast<size_t>(p), 0);
      // sent_fwd[s][i]: stage s has sent microbatch i's output; sent_bwd likewise for grads.
      std::vector<std::vector<bool>> fwd(p, std::vector<bool>(m)), bwd(p, std::vector<bool>(m));
      bool progress = true;
      while (progress) {
        progress = false;
        for (int s = 0; s < p; ++s) {
          auto& i = next[static_cast<size_t>(s)];
          if (i == plans[s].size()) continue;
          const PipeAction x = plans[s][i];
          const bool ready = x.kind == PipeAction::Forward
                                 ? (s == 0 || fwd[s - 1][x.microbatch])
                                 : (s == p - 1 || bwd[s + 1][x.microbatch]);
          if (!ready) continue;
          (x.kind == PipeAction::Forward ? fwd : bwd)[s][x.microbatch] = true;
          ++i;
          progress = true;
        }
      }
      for (int s = 0; s < p; ++s)
        EXPECT_EQ(next[static_cast<size_t>(s)], plans[s].size()) << "p " << p << " m " << m;
    }
}

// NcclCommunicator leads a point-to-point group with a handshake for each peer it meets for the
// first time (parallel/first_contact.h): here the groups of a pipeline's first and middle stages.
TEST(FirstContacts, EachPeerOnceInOrderOfFirstAppearanceNeverSelfNeverAgain) {
  std::set<int> met;
  // A group of two sends to stage 1 and a receive from it, then another with stage 1.
  EXPECT_EQ(first_contacts({1, 1, 1}, 0, met), std::vector<int>{1});
  EXPECT_EQ(first_contacts({1, 1}, 0, met), std::vector<int>{});
  std::set<int> middle;
  EXPECT_EQ(first_contacts({0}, 1, middle), std::vector<int>{0});        // receive from stage 0
  EXPECT_EQ(first_contacts({2, 0, 2}, 1, middle), std::vector<int>{2});  // send on, receive
  EXPECT_EQ(first_contacts({2, 0}, 1, middle), std::vector<int>{});
  std::set<int> self;
  EXPECT_EQ(first_contacts({0, 3, 0, 2, 3}, 0, self), (std::vector<int>{3, 2}));
  EXPECT_EQ(self, (std::set<int>{2, 3}));
}

TEST(OneFOneB, BubbleFractionIsPMinusOneOverMPlusPMinusOne) {
  EXPECT_DOUBLE_EQ(bubble_fraction(1, 8), 0.0);
  EXPECT_DOUBLE_EQ(bubble_fraction(4, 8), 3.0 / 11.0);
  EXPECT_DOUBLE_EQ(bubble_fraction(2, 1), 0.5);
}

ModelConfig small_model() {
  ModelConfig c;
  c.vocab_size = 50;
  c.d_model = 16;
  c.layers = 2;
  c.heads = 2;
  c.d_ff = 32;
  c.seq_len = 8;
  return c;
}

TEST(GradBuckets, ParamsViewOneFlatBufferInBackwardOrderAndKeepTheirValues) {
  LocalCommunicator tp("tp"), dp("dp");
  GPT model(small_model(), ModelShard{}, tp, 7);
  std::vector<Param*> params = model.params();
  std::vector<Tensor> before;
  for (Param* p : params) before.push_back(p->value.clone());
  std::vector<Param*> order(params.rbegin(), params.rend());
  GradBuckets buckets({order}, dp, 600, false);
  EXPECT_GT(buckets.bucket_count(), 2);
  int64_t expected_offset = 0, total = 0;
  for (auto& b : buckets.buckets()) {
    EXPECT_EQ(b.offset, expected_offset);
    expected_offset += b.size;
    for (Param* p : b.params) total += p->value.numel();
  }
  EXPECT_EQ(total, model.num_local_params());
  const float* flat = buckets.flat_values().data<float>();
  for (size_t i = 0; i < params.size(); ++i) {
    const float* v = params[i]->value.data<float>();
    EXPECT_GE(v, flat);
    EXPECT_LT(v, flat + buckets.flat_values().numel());
    for (int64_t j = 0; j < params[i]->value.numel(); ++j)
      EXPECT_EQ(v[j], before[i].data<float>()[j]);
  }
  // The last layer's parameters (final in the backward first) sit at the front.
  EXPECT_EQ(buckets.buckets().front().params.front(), &model.lnf_b);
}

// Mixed precision: each microbatch's bf16 gradient is folded into fp32 sums. 1 + 2^-8 + 2^-8
// is exact in fp32, while a bf16 running sum would round 1 + 2^-8 back to 1 (ties to even).
TEST(GradBuckets, Bfloat16GradientsAreSummedInFloat32OverMicrobatches) {
  LocalCommunicator dp("dp");
  const ModelShard shard;
  Param a = make_param("a", ParamKind::Weight, ParamInit::Normal, 0.02, {3, 5}, -1, 1, shard);
  Param b = make_param("b", ParamKind::Bias, ParamInit::Zeros, 0, {7}, -1, 1, shard);
  a.materialize(1, DType::BF16);
  b.materialize(1, DType::BF16);
  GradBuckets buckets({{&b, &a}}, dp, 7, false);  // b fills a bucket, a another
  ASSERT_TRUE(buckets.mixed_precision());
  EXPECT_EQ(buckets.bucket_count(), 2);
  buckets.zero_grad();
  const float step[3] = {1.0f, std::ldexp(1.0f, -8), std::ldexp(1.0f, -8)};
  for (int mb = 0; mb < 3; ++mb) {
    for (Param* p : {&a, &b})
      for (int64_t i = 0; i < p->grad.numel(); ++i) p->grad.data<bf16>()[i] = to_bf16(step[mb]);
    if (mb < 2) {
      buckets.end_microbatch();
    } else {
      buckets.mark_ready(b);
      buckets.mark_ready(a);
    }
  }
  buckets.finish();
  const float expected = 1.0f + 2 * std::ldexp(1.0f, -8);
  for (Param* p : {&a, &b}) {
    const Tensor sum = buckets.grad_of(*p);
    ASSERT_EQ(sum.dtype(), DType::F32);
    for (int64_t i = 0; i < sum.numel(); ++i) {
      EXPECT_EQ(sum.data<float>()[i], expected) << p->name << " " << i;
      EXPECT_EQ(p->grad.data<bf16>()[i].bits, 0) << p->name << " " << i;  // folded and cleared
    }
  }
  // Clipping and the optimizer read the sums.
  EXPECT_EQ(buckets.flat_grads().dtype(), DType::F32);
}

// The gradient norm's operands: on TP rank 1 a replicated Param is not counted (TP rank 0 counts
// it), so the counted gradients are the runs around it, each one view of the flat buffer.
TEST(GradBuckets, CountedGradsAreTheCountedParamsInRunsOfAdjacentOnes) {
  LocalCommunicator dp("dp");
  ModelShard shard;
  shard.tp_size = 2;
  shard.tp_rank = 1;
  Param a = make_param("a", ParamKind::Weight, ParamInit::Normal, 0.1, {4, 3}, 0, 1, shard);
  Param b = make_param("b", ParamKind::Norm, ParamInit::Ones, 0, {5}, -1, 1, shard);
  Param c = make_param("c", ParamKind::Weight, ParamInit::Normal, 0.1, {6, 2}, 0, 1, shard);
  Param d = make_param("d", ParamKind::Bias, ParamInit::Zeros, 0, {8}, 0, 1, shard);
  for (Param* p : {&a, &b, &c, &d}) p->materialize(3, DType::F32);
  ASSERT_FALSE(b.counted_here());
  GradBuckets buckets({{&a, &b, &c, &d}}, dp, 1 << 20, false);
  const std::vector<Tensor> runs = buckets.counted_grads();
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0].raw(), a.grad.raw());
  EXPECT_EQ(runs[0].numel(), a.grad.numel());
  EXPECT_EQ(runs[1].raw(), c.grad.raw());
  EXPECT_EQ(runs[1].numel(), c.grad.numel() + d.grad.numel());
}

TEST(GradBuckets, MarkingAParamTwiceInAStepIsAnError) {
  LocalCommunicator tp("tp"), dp("dp");
  GPT model(small_model(), ModelShard{}, tp, 7);
  std::vector<Param*> params = model.params();
  GradBuckets buckets({params}, dp, 1 << 20, false);
  buckets.mark_ready(*params[0]);
  EXPECT_THROW(buckets.mark_ready(*params[0]), InternalError);
  buckets.finish();
}

// The backward reports every parameter exactly once, so every bucket starts its reduction
// during the backward rather than in finish().
TEST(GradBuckets, BackwardReportsEveryParamSoEveryBucketStartsEarly) {
  for (PositionKind pos : {PositionKind::Learned, PositionKind::Sinusoidal}) {
    LocalCommunicator tp("tp"), dp("dp");
    ModelConfig cfg = small_model();
    cfg.pos = pos;
    GPT model(cfg, ModelShard{}, tp, 7);
    std::vector<Param*> params = model.params();
    GradBuckets buckets({std::vector<Param*>(params.rbegin(), params.rend())}, dp, 500, false);
    GPTActivations acts = model.make_activations(2);
    Tensor ids({2, cfg.seq_len}, DType::I32);
    for (int64_t i = 0; i < ids.numel(); ++i) ids.data<int32_t>()[i] = static_cast<int32_t>(i % 50);
    model.forward(acts, &ids, &ids);
    const GradReadyFn hook = [&](Param& p) { buckets.mark_ready(p); };
    model.backward(acts, 1.0, nullptr, nullptr, &hook);
    for (const auto& b : buckets.buckets()) EXPECT_EQ(b.pending, 0);
    buckets.finish();
  }
}

// With one DP rank the sharded optimizer owns every element: it must equal plain AdamW.
TEST(ZeroAdamW, OneRankEqualsAdamWExactly) {
  LocalCommunicator tp("tp"), dp("dp");
  GPT a(small_model(), ModelShard{}, tp, 3), b(small_model(), ModelShard{}, tp, 3);
  std::vector<Param*> pa = a.params(), pb = b.params();
  GradBuckets buckets({std::vector<Param*>(pb.rbegin(), pb.rend())}, dp, 300, true);
  AdamWConfig cfg;
  AdamW plain(pa, cfg);
  ZeroAdamW zero(buckets, cfg);
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < pa.size(); ++i) {
      pa[i]->grad.fill(0.01 * (step + 1) * (i % 5 + 1));
      pb[i]->grad.fill(0.01 * (step + 1) * (i % 5 + 1));
      buckets.mark_ready(*pb[i]);
    }
    buckets.finish();
    plain.step(1e-2);
    zero.step(1e-2);
    buckets.zero_grad();
  }
  for (size_t i = 0; i < pa.size(); ++i)
    for (int64_t j = 0; j < pa[i]->value.numel(); ++j)
      ASSERT_EQ(pa[i]->value.data<float>()[j], pb[i]->value.data<float>()[j]) << pa[i]->name;
}

// Mixed precision on one DP rank: the sharded optimizer's fp32 masters and moments, and the
// bf16 values it rounds from them, are mixed AdamW's (tests/zero_mixed_case.h; 3 and 8 ranks in
// test_layouts).
TEST(ZeroAdamW, OneRankWithBfloat16ParamsEqualsMixedAdamWExactly) {
  LocalCommunicator dp("dp");
  test_support::expect_sharded_mixed_adamw_is_adamw(dp);
}

}  // namespace
}  // namespace tessera
