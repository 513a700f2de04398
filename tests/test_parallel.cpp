// The parallel machinery that needs no other rank: the grid's rank arithmetic against
// docs/DESIGN.md's formula, which GPU a rank takes, layout errors, stage splits, the 1F1B schedule
// against its definition, NCCL's first contacts, and the gradient buckets' flat layout. Multi-rank
// behaviour is in test_comm and test_layouts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <map>
#include <set>
#include <string>
#include <tuple>

#include "core/buffer.h"
#include "core/error.h"
#include "core/model/gpt.h"
#include "launcher/cluster.h"
#include "parallel/first_contact.h"
#include "parallel/grad_buckets.h"
#include "parallel/local_communicator.h"
#include "parallel/pipeline.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/process_grid.h"
#include "parallel/zero_optimizer.h"
#include "tests/expect_error.h"
#include "tests/refusing_communicator.h"
#include "tests/thread_communicator.h"
#include "tests/zero_mixed_case.h"

namespace tessera {
namespace {

// "F0 F1 B0 F2 B1 B2"; with chunks "F0.0 F1.0 F0.1 ..." (microbatch.chunk).
std::string schedule_string(const std::vector<PipeAction>& actions) {
  bool chunked = false;
  for (const PipeAction& a : actions) chunked |= a.chunk != 0;
  std::string s;
  for (const PipeAction& a : actions) {
    if (!s.empty()) s += ' ';
    s += (a.kind == PipeAction::Forward ? 'F' : 'B') + std::to_string(a.microbatch);
    if (chunked) s.append(".").append(std::to_string(a.chunk));
  }
  return s;
}

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

// The memory a layout needs per rank starts from gpt_shard_params: for every TP rank of uneven
// vocabulary pieces (67 rows over 2 and 4), every stage, model chunks, and both position kinds,
// the count of the model that shard builds.
TEST(GridLayout, ShardParamsAreTheParametersOfTheShardsModel) {
  for (const PositionKind pos : {PositionKind::Learned, PositionKind::Sinusoidal})
    for (const int tp : {1, 2, 4})
      for (const int pp : {1, 3})
        for (const int chunks : {1, 2}) {
          if (chunks > 1 && pp == 1) continue;
          ModelConfig cfg;
          cfg.vocab_size = 67, cfg.d_model = 16, cfg.heads = 4, cfg.d_ff = 32, cfg.layers = 6;
          cfg.seq_len = 8, cfg.pos = pos;
          test_support::run_ranks(tp, [&](Communicator& comm) {
            for (int s = 0; s < pp; ++s) {
              const ModelShard shard =
                  model_shard(cfg, GridLayout{tp, 1, pp}, GridCoord{comm.rank(), 0, s}, chunks);
              GPT model(cfg, shard, comm, 1);
              EXPECT_EQ(gpt_shard_params(cfg, shard), model.num_local_params())
                  << "tp rank " << comm.rank() << " of " << tp << ", stage " << s << " of " << pp
                  << ", " << chunks << " chunks, " << position_kind_name(pos);
            }
          });
        }
  ModelConfig whole;
  EXPECT_EQ(gpt_shard_params(whole, ModelShard{}), gpt_num_params(whole));
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
        EXPECT_EQ(max_in_flight, std::min(p - s, m)) << p << " " << s << " " << m;
        EXPECT_EQ(in_flight_per_chunk(a, 1), std::vector<int>{max_in_flight});
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
  EXPECT_DOUBLE_EQ(bubble_fraction(4, 8, 2), 3.0 / 19.0);  // interleaved: v m + p - 1
}

// Two stages, two chunks, four microbatches, worked out by hand from Megatron-LM's rule: groups
// of two microbatches through chunk 0 then chunk 1; stage 0 warms up with 2 (2 - 0 - 1) + 2 = 4
// forwards, stage 1 with 2; the backwards take the chunks in reverse.
TEST(InterleavedOneFOneB, TwoStagesTwoChunksFollowTheDefinition) {
  EXPECT_EQ(schedule_string(interleaved_one_f_one_b(2, 0, 4, 2)),
            "F0.0 F1.0 F0.1 F1.1 F2.0 B0.1 F3.0 B1.1 F2.1 B0.0 F3.1 B1.0 B2.1 B3.1 B2.0 B3.0");
  EXPECT_EQ(schedule_string(interleaved_one_f_one_b(2, 1, 4, 2)),
            "F0.0 F1.0 F0.1 B0.1 F1.1 B1.1 F2.0 B0.0 F3.0 B1.0 F2.1 B2.1 F3.1 B3.1 B2.0 B3.0");
  EXPECT_EQ(interleaved_one_f_one_b(4, 1, 8, 1), one_f_one_b(4, 1, 8));
  EXPECT_EQ(schedule_string(interleaved_forwards(2, 3, 2)), "F0.0 F1.0 F0.1 F1.1 F2.0 F2.1");
}

// Every (microbatch, chunk) runs forward once and backward once, after its forward; the forwards
// in the group order of interleaved_forwards, the backwards in it with the chunks reversed; the
// warm-up as defined, then a forward and a backward.
TEST(InterleavedOneFOneB, EveryStageRunsEachMicrobatchThroughEachChunkInGroupOrder) {
  for (int p : {2, 3, 4})
    for (int v : {2, 3})
      for (int m : {2 * p, 3 * p})
        for (int s = 0; s < p; ++s) {
          const std::vector<PipeAction> a = interleaved_one_f_one_b(p, s, m, v);
          const std::string name = std::to_string(p) + " stages, " + std::to_string(v) +
                                   " chunks, " + std::to_string(m) + " microbatches, stage " +
                                   std::to_string(s);
          ASSERT_EQ(a.size(), 2u * static_cast<size_t>(m * v)) << name;
          std::vector<PipeAction> forwards, backwards;
          for (const PipeAction& x : a) {
            if (x.kind == PipeAction::Forward) {
              forwards.push_back(x);
            } else {
              PipeAction f = x;
              f.kind = PipeAction::Forward;
              EXPECT_NE(std::find(forwards.begin(), forwards.end(), f), forwards.end())
                  << name << ": backward before forward";
              f.chunk = v - 1 - x.chunk;  // back to the forward order
              backwards.push_back(f);
            }
          }
          const std::vector<PipeAction> order = interleaved_forwards(p, m, v);
          EXPECT_EQ(forwards, order) << name;
          EXPECT_EQ(backwards, order) << name;
          const int warmup = std::min(m * v, 2 * (p - s - 1) + (v - 1) * p);
          for (int i = 0; i < warmup; ++i)
            EXPECT_EQ(a[static_cast<size_t>(i)].kind, PipeAction::Forward) << name;
          EXPECT_EQ(a[static_cast<size_t>(warmup)].kind, PipeAction::Forward) << name;
          EXPECT_EQ(a[static_cast<size_t>(warmup) + 1].kind, PipeAction::Backward) << name;
        }
  // The activation sets each chunk keeps, worked out by hand from the warm-up (4 stages, 2
  // chunks, 8 microbatches): chunk 0 of stages 0 and 1 runs all of its first group's forwards and
  // the next group's before its first backward.
  const std::vector<std::vector<int>> kept = {{8, 4}, {8, 4}, {7, 3}, {5, 1}};
  for (int s = 0; s < 4; ++s)
    EXPECT_EQ(in_flight_per_chunk(interleaved_one_f_one_b(4, s, 8, 2), 2),
              kept[static_cast<size_t>(s)])
        << "stage " << s;
}

// Chunks that share their sets keep what is in flight at once: the warm-up's forwards and the
// first steady forward, 2 (p - s) - 1 + (v - 1) p chunks' sets (fewer when the microbatches run
// out), not the sum of each chunk's most. On stage 0 that is 1 + (p - 1) / (p v) times plain
// 1F1B's p sets of the whole stage, as Megatron-LM counts it.
TEST(InterleavedOneFOneB, ChunksSharingTheirSetsKeepWhatIsInFlightAtOnce) {
  for (int p : {2, 3, 4})
    for (int v : {2, 3})
      for (int m : {2 * p, 4 * p})
        for (int s = 0; s < p; ++s) {
          const std::vector<PipeAction> a = interleaved_one_f_one_b(p, s, m, v);
          const std::map<int64_t, int> shared = in_flight_per_key(a, std::vector<int64_t>(v, 7));
          const int expected = std::min(m * v, 2 * (p - s) - 1 + (v - 1) * p);
          EXPECT_EQ(shared, (std::map<int64_t, int>{{7, expected}}))
              << p << " stages, " << v << " chunks, " << m << " microbatches, stage " << s;
          int sum = 0;
          for (const int n : in_flight_per_chunk(a, v)) sum += n;
          EXPECT_LE(expected, sum);
          if (s == 0) {  // in layers: `expected` sets of L / (p v) against p sets of L / p
            EXPECT_DOUBLE_EQ(static_cast<double>(expected) / (p * v), 1.0 + (p - 1.0) / (p * v));
          }
        }
  // Stage 0 of 4 x 2 over 8 microbatches: 11 sets shared, against 8 + 4 kept apart.
  EXPECT_EQ(in_flight_per_key(interleaved_one_f_one_b(4, 0, 8, 2), {3, 3}),
            (std::map<int64_t, int>{{3, 11}}));
  // A pipeline stage's sets: chunks of as many layers share theirs, each keeps its own ends.
  // 6 layers over 2 stages x 2 chunks give stage 0 chunks of 2 and 1 layers, which cannot.
  const std::vector<PipeAction> stage0 = interleaved_one_f_one_b(2, 0, 4, 2);
  const ActivationSets even = pipeline_activation_sets(stage0, {2, 2});
  EXPECT_EQ(even.ends, in_flight_per_chunk(stage0, 2));
  EXPECT_EQ(even.layers, (std::map<int64_t, int>{{2, 5}}));
  const ActivationSets uneven = pipeline_activation_sets(stage0, {2, 1});
  EXPECT_EQ(uneven.ends, in_flight_per_chunk(stage0, 2));
  EXPECT_EQ(uneven.layers, (std::map<int64_t, int>{{2, uneven.ends[0]}, {1, uneven.ends[1]}}));
}

TEST(InterleavedOneFOneB, LayoutsItCannotRunAreNamed) {
  EXPECT_EQ(interleaved_schedule_problem(1, 8, 1), "");
  EXPECT_EQ(interleaved_schedule_problem(4, 8, 2), "");
  EXPECT_EQ(interleaved_schedule_problem(2, 4, 3), "");
  EXPECT_NE(interleaved_schedule_problem(1, 8, 2).find("expected 2 or more pipeline stages"),
            std::string::npos);
  EXPECT_NE(interleaved_schedule_problem(4, 4, 2).find("at least 8"), std::string::npos);
  EXPECT_NE(interleaved_schedule_problem(4, 10, 2).find("a multiple of 4 microbatches"),
            std::string::npos);
  EXPECT_NE(interleaved_schedule_problem(3, 3, 2).find("at least 6"), std::string::npos);
  EXPECT_EQ(interleaved_schedule_problem(2, 2, 2), "");
  EXPECT_THROW(interleaved_one_f_one_b(4, 0, 6, 2), InternalError);
}

// A pipeline message: activations or a gradient, of a microbatch, sent by a virtual stage.
struct Message {
  bool gradient;
  int microbatch, from;
  bool operator==(const Message&) const = default;
};
struct P2p {
  bool send;
  int peer;
  Message message;
};

// The receives or the sends of action a on stage s of p, v chunks each (virtual stage c p + s).
std::vector<P2p> p2p_of(int p, int s, int v, const PipeAction& a, bool sends) {
  const int at = a.chunk * p + s, last = p * v - 1, next = (s + 1) % p, previous = (s + p - 1) % p;
  std::vector<P2p> ops;
  if (a.kind == PipeAction::Forward) {
    if (!sends && at > 0) ops.push_back({false, previous, {false, a.microbatch, at - 1}});
    if (sends && at < last) ops.push_back({true, next, {false, a.microbatch, at}});
  } else {
    if (!sends && at < last) ops.push_back({false, next, {true, a.microbatch, at + 1}});
    if (sends && at > 0) ops.push_back({true, previous, {true, a.microbatch, at}});
  }
  return ops;
}

// Stage s's point-to-point groups as PipelineEngine::run_steps starts them: the first step's
// receives, then each step's sends with the next step's receives.
std::vector<std::vector<P2p>> step_groups(int p, int s, int v,
                                          const std::vector<PipeAction>& actions) {
  const std::vector<std::vector<PipeAction>> steps = pipeline_steps(actions);
  std::vector<std::vector<P2p>> groups(steps.size() + 1);
  for (size_t i = 0; i < steps.size(); ++i)
    for (const PipeAction& a : steps[i]) {
      for (const P2p& x : p2p_of(p, s, v, a, false)) groups[i].push_back(x);
      for (const P2p& x : p2p_of(p, s, v, a, true)) groups[i + 1].push_back(x);
    }
  return groups;
}

// Runs every stage's groups as NCCL does: one after another on each stage, a group complete once
// each of its operations has met its partner in a group that has started, the n-th send from
// stage a to stage b meeting the n-th receive of b from a. "" when every group completes and
// every message arrives where it is expected (MPI matches the same way, in posting order, and
// does not make a send wait: what runs here runs there), else what went wrong.
std::string run_as_nccl_groups(const std::vector<std::vector<std::vector<P2p>>>& stages) {
  using Key = std::tuple<bool, int, int, int>;  // send, from, to, n-th between them
  std::map<Key, std::pair<int, size_t>> where;  // stage, group
  std::map<Key, Message> what;
  std::map<std::tuple<bool, int, int>, int> count;
  for (int s = 0; s < static_cast<int>(stages.size()); ++s)
    for (size_t g = 0; g < stages[static_cast<size_t>(s)].size(); ++g)
      for (const P2p& op : stages[static_cast<size_t>(s)][g]) {
        const int from = op.send ? s : op.peer, to = op.send ? op.peer : s;
        const Key key{op.send, from, to, count[{op.send, from, to}]++};
        where[key] = {s, g};
        what[key] = op.message;
      }
  for (const auto& [key, message] : what) {
    const auto [send, from, to, n] = key;
    const auto partner = what.find(Key{!send, from, to, n});
    if (!send && partner != what.end()) continue;  // checked from its send
    if (partner == what.end())
      return "stage " + std::to_string(from) + " and stage " + std::to_string(to) +
             " post unequal numbers of sends and receives";
    if (!(partner->second == message))
      return "stage " + std::to_string(to) + " receives microbatch " +
             std::to_string(message.microbatch) + " from virtual stage " +
             std::to_string(message.from) + " where it expects microbatch " +
             std::to_string(partner->second.microbatch) + " from virtual stage " +
             std::to_string(partner->second.from);
  }
  std::vector<size_t> at(stages.size(), 0);
  for (bool progress = true; progress;) {
    progress = false;
    for (size_t s = 0; s < stages.size(); ++s) {
      if (at[s] == stages[s].size()) continue;
      bool ready = true;
      for (const auto& [key, place] : where) {
        if (place.first != static_cast<int>(s) || place.second != at[s]) continue;
        const auto [send, from, to, n] = key;
        const auto [partner_stage, partner_group] = where.at(Key{!send, from, to, n});
        if (at[static_cast<size_t>(partner_stage)] < partner_group) ready = false;
      }
      if (ready) {
        ++at[s];
        progress = true;
      }
    }
  }
  std::string stuck;
  for (size_t s = 0; s < stages.size(); ++s)
    if (at[s] < stages[s].size())
      stuck += " stage " + std::to_string(s) + " at group " + std::to_string(at[s]) + " of " +
               std::to_string(stages[s].size()) + ";";
  return stuck.empty() ? "" : "deadlock:" + stuck;
}

// The model finds what it is for: sends round a ring, each started alone before its stage's
// receive, wait for each other; two messages received in the other order land in each other's
// buffers.
TEST(InterleavedOneFOneB, TheGroupModelFindsARingOfSendsAndCrossedMessages) {
  std::vector<std::vector<std::vector<P2p>>> ring(3);
  for (int s = 0; s < 3; ++s)
    ring[static_cast<size_t>(s)] = {{{true, (s + 1) % 3, {false, 0, s}}},
                                    {{false, (s + 2) % 3, {false, 0, (s + 2) % 3}}}};
  EXPECT_EQ(run_as_nccl_groups(ring),
            "deadlock: stage 0 at group 0 of 2; stage 1 at group 0 of 2; stage 2 at group 0 of 2;");
  ring[0] = {{{true, 1, {false, 0, 0}}, {false, 2, {false, 0, 2}}}};  // send with the receive
  EXPECT_EQ(run_as_nccl_groups(ring), "");
  std::vector<std::vector<std::vector<P2p>>> crossed(2);
  crossed[0] = {{{true, 1, {false, 0, 0}}, {true, 1, {true, 1, 0}}}};
  crossed[1] = {{{false, 0, {true, 1, 0}}, {false, 0, {false, 0, 0}}}};
  EXPECT_NE(run_as_nccl_groups(crossed).find("stage 1 receives microbatch 0"), std::string::npos);
}

// Every layout the interleaved schedule accepts runs to its end under NCCL's groups, each
// activation and gradient arriving in the buffer of the microbatch and chunk it is for, with two
// stages (where one pair of ranks carries both) too; and so do forwards alone (validation) with
// any number of microbatches. The layouts it refuses though their microbatches fill whole
// groups, one group on 3 or more stages, wait in a ring.
TEST(InterleavedOneFOneB, StagesExchangeWithoutDeadlockUnderNcclGroups) {
  int refused = 0;
  for (int p : {2, 3, 4, 5})
    for (int v : {2, 3, 4})
      for (int m = 1; m <= 4 * p; ++m) {
        const std::string name = std::to_string(p) + " stages, " + std::to_string(v) + " chunks, " +
                                 std::to_string(m) + " microbatches";
        std::vector<std::vector<std::vector<P2p>>> forwards(static_cast<size_t>(p));
        for (int s = 0; s < p; ++s)
          forwards[static_cast<size_t>(s)] = step_groups(p, s, v, interleaved_forwards(p, m, v));
        EXPECT_EQ(run_as_nccl_groups(forwards), "") << name << ", forwards only";
        if (m % p != 0) continue;
        std::vector<std::vector<std::vector<P2p>>> training(static_cast<size_t>(p));
        for (int s = 0; s < p; ++s)
          training[static_cast<size_t>(s)] =
              step_groups(p, s, v, interleaved_one_f_one_b(p, s, m, v));
        if (interleaved_schedule_problem(p, m, v).empty()) {
          EXPECT_EQ(run_as_nccl_groups(training), "") << name;
        } else {
          EXPECT_EQ(run_as_nccl_groups(training).rfind("deadlock:", 0), 0u) << name;
          ++refused;
        }
      }
  EXPECT_EQ(refused, 3 * 3);  // m = p on 3, 4 and 5 stages, 2 to 4 chunks
}

// A pipeline group of one stage that records its point-to-point calls and starts them as
// NcclCommunicator does: held back until a wait() or test() of one of their handles, then every
// one held back starts, together, as one group. Receives leave their tensors as they are.
class RecordingPipeline final : public test_support::RefusingCommunicator {
 public:
  RecordingPipeline(int rank, int size)
      : RefusingCommunicator(rank, size, "pp", "point-to-point only") {}
  std::unique_ptr<CommRequest> isend(const Tensor&, int peer) override {
    ++sends_posted;
    return post(true, peer);
  }
  std::unique_ptr<CommRequest> irecv(Tensor&, int peer) override { return post(false, peer); }

  std::vector<std::vector<P2p>> groups;  // as started; messages left unnamed
  int sends_posted = 0;

 private:
  class Request final : public CommRequest {
   public:
    Request(RecordingPipeline& pipe, int id) : pipe_(pipe), id_(id) {}
    void wait() override { pipe_.start(id_); }
    bool test() override {
      pipe_.start(id_);
      return true;
    }

   private:
    RecordingPipeline& pipe_;
    int id_;
  };
  std::unique_ptr<CommRequest> post(bool send, int peer) {
    held_.push_back({P2p{send, peer, {false, 0, 0}}, next_id_});
    return std::make_unique<Request>(*this, next_id_++);
  }
  void start(int id) {
    if (std::none_of(held_.begin(), held_.end(), [id](const Held& h) { return h.id == id; }))
      return;  // started before
    groups.emplace_back();
    for (const Held& h : held_) groups.back().push_back(h.op);
    held_.clear();
  }
  struct Held {
    P2p op;
    int id;
  };
  int next_id_ = 0;
  std::vector<Held> held_;
};

// (send, peer) of each operation of each group: what the engine's groups and the model's share.
std::vector<std::vector<std::pair<bool, int>>> shape_of(const std::vector<std::vector<P2p>>& gs) {
  std::vector<std::vector<std::pair<bool, int>>> out;
  for (const std::vector<P2p>& g : gs) {
    if (g.empty()) continue;
    out.emplace_back();
    for (const P2p& op : g) out.back().emplace_back(op.send, op.peer);
  }
  return out;
}

// The model the executor tests run: small enough that only the schedule matters (layers: each
// test's own).
ModelConfig tiny_pipeline_model() {
  ModelConfig cfg;
  cfg.vocab_size = 16, cfg.d_model = 8, cfg.heads = 2, cfg.d_ff = 16, cfg.seq_len = 4;
  return cfg;
}

// PipelineEngine itself, each stage on a recording group: the interleaved executor starts
// exactly the groups the model above runs (so its messages arrive where they should and it
// cannot wait in a ring), in training and in validation; and plain 1F1B's own finer grouping
// (warm-up sends alone, then each send with the stage's next receive) runs to its end in the
// model too.
TEST(InterleavedOneFOneB, TheExecutorStartsTheGroupsTheModelRuns) {
  ModelConfig cfg = tiny_pipeline_model();
  for (int p : {2, 3, 4})
    for (int v : {1, 2, 3})
      for (int m : {1, p, 2 * p, 3 * p}) {
        if (!interleaved_schedule_problem(p, m, v).empty()) continue;
        cfg.layers = p * v;
        const std::string name = std::to_string(p) + " stages, " + std::to_string(v) + " chunks, " +
                                 std::to_string(m) + " microbatches";
        std::vector<Tensor> batch;
        for (int i = 0; i < m; ++i) {
          batch.emplace_back(Shape{1, cfg.seq_len}, DType::I32);
          batch.back().zero();
        }
        std::vector<std::vector<std::vector<P2p>>> trained(static_cast<size_t>(p));
        std::vector<std::vector<std::vector<P2p>>> validated(static_cast<size_t>(p));
        for (int s = 0; s < p; ++s) {
          const ModelShard shard = model_shard(cfg, GridLayout{1, 1, p}, GridCoord{0, 0, s}, v);
          LocalCommunicator tp("tp");
          GPT model(cfg, shard, tp, 1);
          RecordingPipeline pipe(s, p);
          PipelineEngine engine(model, pipe, 1, m);
          engine.run(batch, batch, 1.0);
          trained[static_cast<size_t>(s)] = pipe.groups;
          pipe.groups.clear();
          engine.evaluate(batch, batch);
          validated[static_cast<size_t>(s)] = pipe.groups;
          if (v == 1) continue;
          EXPECT_EQ(shape_of(trained[static_cast<size_t>(s)]),
                    shape_of(step_groups(p, s, v, interleaved_one_f_one_b(p, s, m, v))))
              << name << ", stage " << s;
          EXPECT_EQ(shape_of(validated[static_cast<size_t>(s)]),
                    shape_of(step_groups(p, s, v, interleaved_forwards(p, m, v))))
              << name << ", stage " << s << ", validation";
        }
        EXPECT_EQ(run_as_nccl_groups(trained), "") << name;
        EXPECT_EQ(run_as_nccl_groups(validated), "") << name << ", validation";
      }
}

// A microbatch's input gradient is posted to the previous stage before the stage's work on its
// weights' gradients (after_backward: the bf16 fold), which that stage would otherwise wait out.
TEST(OneFOneB, TheInputGradientIsSentBeforeTheWorkAfterBackward) {
  ModelConfig cfg = tiny_pipeline_model();
  cfg.layers = 2;
  const int m = 4;
  std::vector<Tensor> batch;
  for (int i = 0; i < m; ++i) {
    batch.emplace_back(Shape{1, cfg.seq_len}, DType::I32);
    batch.back().zero();
  }
  // The last of two stages: each of its sends is a microbatch's input gradient.
  const ModelShard shard = model_shard(cfg, GridLayout{1, 1, 2}, GridCoord{0, 0, 1});
  LocalCommunicator tp("tp");
  GPT model(cfg, shard, tp, 1);
  RecordingPipeline pipe(1, 2);
  PipelineEngine engine(model, pipe, 1, m);
  std::vector<int> sent_at_fold;
  engine.run(batch, batch, 1.0, nullptr, [&](int) { sent_at_fold.push_back(pipe.sends_posted); });
  // Every microbatch's backward but the last is followed by the fold, its own send posted.
  EXPECT_EQ(sent_at_fold, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(pipe.sends_posted, m);
}

// A layout the interleaved schedule cannot run is refused with what it expects and found, before
// the schedule is built (whose own check names neither).
TEST(InterleavedOneFOneB, TheExecutorNamesALayoutItCannotRun) {
  ModelConfig cfg = tiny_pipeline_model();
  cfg.layers = 4;
  const ModelShard shard = model_shard(cfg, GridLayout{1, 1, 2}, GridCoord{0, 0, 0}, 2);
  LocalCommunicator tp("tp");
  GPT model(cfg, shard, tp, 1);
  RecordingPipeline pipe(0, 2);
  test_support::expect_internal_error(
      [&] { PipelineEngine engine(model, pipe, 1, 3); },
      "PipelineEngine: expected a multiple of 2 microbatches, at least 2 (the "
      "interleaved schedule runs them in groups of one per stage), found 3");
}

// The bytes an engine allocates are what pipeline_activation_sets counts, each part measured on
// its own: every chunk's ends, with its received input and input gradient when it is not the
// model's first, for the microbatches in flight on it; the layers' sets once per stage, shared by
// the chunks of as many layers; the output gradient received. Stage 0 of 2 stages x 2 chunks of
// one layer over 4 microbatches keeps 5 layer sets, where sets of each chunk's own were 4 + 2;
// with 6 layers its chunks have 2 and 1 and share nothing.
TEST(PipelineEngine, AllocatesTheLayerSetsItsChunksShareOnce) {
  ModelConfig cfg = tiny_pipeline_model();
  const int64_t B = 2;
  for (const int64_t layers : {4, 6})
    for (int s = 0; s < 2; ++s) {
      cfg.layers = layers;
      const std::string name = std::to_string(layers) + " layers, stage " + std::to_string(s);
      const ModelShard shard = model_shard(cfg, GridLayout{1, 1, 2}, GridCoord{0, 0, s}, 2);
      LocalCommunicator tp("tp");
      GPT model(cfg, shard, tp, 1);
      // The bytes `make` allocates, freed again once measured.
      const auto bytes_of = [](const auto& make) {
        const size_t before = host_bytes_allocated();
        const auto made = make();
        return host_bytes_allocated() - before;
      };
      const size_t boundary = bytes_of([&] { return Tensor(model.stage_shape(B), cfg.dtype); });
      const std::vector<int64_t> chunk_layers = gpt_chunk_layers(cfg, shard);
      const ActivationSets sets =
          pipeline_activation_sets(interleaved_one_f_one_b(2, s, 4, 2), chunk_layers);
      if (layers == 4 && s == 0) {
        EXPECT_EQ(sets.layers, (std::map<int64_t, int>{{1, 5}}));
        EXPECT_EQ(sets.ends, (std::vector<int>{4, 2}));
      }
      // The output gradient received: each stage has a chunk that is not the model's last.
      size_t expected = boundary;
      std::map<int64_t, int> layer_sets = sets.layers;
      for (int c = 0; c < 2; ++c) {
        const auto part = [&](ActivationParts p) {
          return bytes_of([&] { return model.make_activations(B, c, p); });
        };
        const size_t ends = part(ActivationParts::Ends) + (c == 0 && s == 0 ? 0 : 2 * boundary);
        expected += sets.ends[static_cast<size_t>(c)] * ends;
        int& shared = layer_sets[chunk_layers[static_cast<size_t>(c)]];
        expected += shared * part(ActivationParts::Layers);
        shared = 0;  // counted once, for the first chunk of its size
      }
      RecordingPipeline pipe(s, 2);
      const size_t before = host_bytes_allocated();
      const PipelineEngine engine(model, pipe, B, 4);
      EXPECT_EQ(host_bytes_allocated() - before, expected) << name;
    }
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
    EXPECT_EQ((v - flat) % 64, 0) << params[i]->name;  // 256 bytes
    EXPECT_GE(v, flat);
    EXPECT_LT(v, flat + buckets.flat_values().numel());
    for (int64_t j = 0; j < params[i]->value.numel(); ++j)
      EXPECT_EQ(v[j], before[i].data<float>()[j]);
  }
  // The last layer's parameters (final in the backward first) sit at the front.
  EXPECT_EQ(buckets.buckets().front().params.front(), &model.lnf_b);
}

// The bf16 Params of the gradient-bucket tests: a [3, 5] weight and a [7] bias.
void bf16_weight_and_bias(Param& a, Param& b) {
  const ModelShard shard;
  a = make_param("a", ParamKind::Weight, ParamInit::Normal, 0.02, {3, 5}, -1, 1, shard);
  b = make_param("b", ParamKind::Bias, ParamInit::Zeros, 0, {7}, -1, 1, shard);
  a.materialize(1, DType::BF16);
  b.materialize(1, DType::BF16);
}

// Mixed precision: each microbatch's bf16 gradient is folded into fp32 sums. 1 + 2^-8 + 2^-8
// is exact in fp32, while a bf16 running sum would round 1 + 2^-8 back to 1 (ties to even).
TEST(GradBuckets, Bfloat16GradientsAreSummedInFloat32OverMicrobatches) {
  LocalCommunicator dp("dp");
  Param a, b;
  bf16_weight_and_bias(a, b);
  GradBuckets buckets({{&b, &a}}, dp, 7, false);  // b fills a bucket, a another
  ASSERT_TRUE(buckets.mixed_precision());
  EXPECT_EQ(buckets.bucket_count(), 2);
  buckets.zero_grad();
  const float step[3] = {1.0f, std::ldexp(1.0f, -8), std::ldexp(1.0f, -8)};
  for (int mb = 0; mb < 3; ++mb) {
    for (Param* p : {&a, &b})
      for (int64_t i = 0; i < p->grad.numel(); ++i) p->grad.data<bf16>()[i] = to_bf16(step[mb]);
    if (mb < 2) {
      buckets.end_microbatch(0);
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

// end_microbatch(g) folds group g's buckets alone (a model chunk's, with the interleaved
// schedule), and refuses a group whose reduction has started: folding into sums being reduced
// would race with the reduction.
TEST(GradBuckets, EndOfMicrobatchFoldsOneGroupAndRefusesOneAlreadyLaunched) {
  LocalCommunicator dp("dp");
  Param a, b;
  bf16_weight_and_bias(a, b);
  GradBuckets buckets({{&b}, {&a}}, dp, 100, false);  // a group, and a bucket, each
  buckets.zero_grad();
  for (Param* p : {&a, &b})
    for (int64_t i = 0; i < p->grad.numel(); ++i) p->grad.data<bf16>()[i] = to_bf16(1.0f);
  buckets.end_microbatch(1);
  for (int64_t i = 0; i < a.grad.numel(); ++i) {
    EXPECT_EQ(buckets.grad_of(a).data<float>()[i], 1.0f) << i;
    EXPECT_EQ(a.grad.data<bf16>()[i].bits, 0) << i;
  }
  for (int64_t i = 0; i < b.grad.numel(); ++i) {
    EXPECT_EQ(buckets.grad_of(b).data<float>()[i], 0.0f) << i;  // not yet folded
    EXPECT_EQ(to_float(b.grad.data<bf16>()[i]), 1.0f) << i;
  }
  buckets.mark_ready(b);  // group 0 is final: its reduction starts
  EXPECT_THROW(buckets.end_microbatch(0), InternalError);
  EXPECT_THROW(buckets.end_microbatch(2), InternalError);
  buckets.end_microbatch(1);
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
  // Each run goes on to the next 256-byte boundary, over the zeros before the next tensor.
  EXPECT_EQ(runs[0].raw(), a.grad.raw());
  EXPECT_EQ(runs[0].numel(), 64);
  EXPECT_EQ(runs[1].raw(), c.grad.raw());
  EXPECT_EQ(runs[1].numel(), 128);
  EXPECT_EQ(d.grad.data<float>() - c.grad.data<float>(), 64);
}

// Every tensor starts on a 256-byte boundary of the flat buffers, and with ZeRO-1 so does every
// DP rank's piece of a bucket: cuBLASLt picks slow kernels for a weight that is not aligned, and
// its bias epilogue may fault on a misaligned bias. Widths of 24 and DP 3 misaligned both.
TEST(GradBuckets, EveryTensorAndEveryZeroPieceStartsOn256Bytes) {
  ModelConfig c = small_model();
  c.d_model = 24;
  c.heads = 3;
  c.d_ff = 40;
  for (const DType dtype : {DType::F32, DType::BF16})
    for (const bool shard : {false, true}) {
      test_support::ThreadGroup group(3);
      test_support::ThreadCommunicator dp(group, 2);
      LocalCommunicator tp("tp");
      c.dtype = dtype;
      GPT model(c, ModelShard{}, tp, 7);
      GradBuckets buckets({model.params()}, dp, 500, shard);
      const int64_t bytes = static_cast<int64_t>(dtype_size(dtype));
      const char* flat = static_cast<const char*>(buckets.flat_values().raw());
      for (const Param* p : model.params()) {
        EXPECT_EQ((static_cast<const char*>(p->value.raw()) - flat) % 256, 0) << p->name;
        EXPECT_EQ(buckets.offset_of(*p) * bytes % 256, 0) << p->name;
      }
      for (const auto& b : buckets.buckets()) {
        EXPECT_EQ(b.offset * bytes % 256, 0);
        if (shard) {
          EXPECT_EQ(buckets.piece_begin(b) * bytes % 256, 0) << b.offset;
        }
      }
    }
}

TEST(GradBuckets, MarkingAParamTwiceInAStepIsAnError) {
  LocalCommunicator tp("tp"), dp("dp");
  GPT model(small_model(), ModelShard{}, tp, 7);
  std::vector<Param*> params = model.params();
  GradBuckets buckets({params}, dp, 1 << 20, false);
  buckets.mark_ready(*params[0]);
  test_support::expect_internal_error([&] { buckets.mark_ready(*params[0]); },
                                      "reported final twice in a step");
  buckets.finish();
  // A report after finish() is a report too late, not a second one.
  test_support::expect_internal_error([&] { buckets.mark_ready(*params[1]); },
                                      "reported final after finish()");
  buckets.zero_grad();
  buckets.mark_ready(*params[0]);  // a new step
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
