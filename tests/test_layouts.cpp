// The acceptance test of the parallel layouts (docs/DESIGN.md, invariant 1): a tiny GPT trained 20
// steps from the same seed and global batch gives the same loss at every step, within 1e-5
// relative, and the same parameters after 20 steps, gathered to global tensors, within 1e-4, for
// every (TP, PP, DP) layout up to 8 ranks, with 1 and 4 microbatches per DP rank, with and without
// ZeRO-1 (and ZeRO-1 of bf16 parameters against mixed AdamW), with and without sequence
// parallelism, and with the interleaved pipeline schedule. Runs on 8 MPI ranks; each case trains
// on the first TP x PP x DP of them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>

#include "core/buffer.h"
#include "core/error.h"
#include "core/threads.h"
#include "io/synthetic_corpus.h"
#include "launcher/train_report.h"
#include "launcher/trainer.h"
#include "parallel/local_communicator.h"
#include "parallel/mpi_communicator.h"
#include "tests/expect_error.h"
#include "tests/zero_mixed_case.h"

namespace tessera {
namespace {

struct Outcome {
  std::vector<double> losses;
  // Before clipping: AdamW and the clipping hide a gradient off by a constant factor (summed
  // over DP ranks instead of averaged, say) from the losses and weights, not from its norm.
  std::vector<double> grad_norms;
  // How the model ran, on group rank 0: its chunks per stage, and whether sequence parallel.
  int chunks = 0;
  bool sequence_parallel = false;
  std::map<std::string, std::vector<double>> params;  // global tensors, on world rank 0
};

// The synthetic corpus (io/synthetic_corpus.h), written by rank 0 and named to every rank.
std::string make_corpus(Communicator& world) {
  std::string prefix;
  if (world.rank() == 0) {
    const std::string dir =
        std::filesystem::temp_directory_path() / ("tessera_layouts_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    prefix = dir + "/corpus";
    // 149 samples of 33 tokens: the 20 steps of 8 cross into a second epoch, which every
    // layout must start at the same step and shuffle the same way.
    write_synthetic_corpus(prefix, 512, 16, 300, 1);
  }
  return broadcast_string(world, prefix, 0);
}

TrainConfig tiny_config(const std::string& corpus) {
  TrainConfig c;
  c.model.vocab_size = 512;
  c.model.d_model = 64;
  c.model.layers = 4;
  c.model.heads = 4;
  c.model.d_ff = 256;
  c.model.seq_len = 32;
  c.steps = 20;
  c.global_batch = 8;
  c.schedule.lr = 3e-3;
  c.schedule.min_lr = 3e-4;
  c.schedule.warmup = 3;
  c.schedule.total_steps = c.steps;
  c.data_path = corpus;
  c.cache_dir = std::filesystem::path(corpus).parent_path() / "cache";
  c.parallel.bucket_mb = 0.05;  // several buckets, so the overlapped reduction is exercised
  return c;
}

// The global value of every parameter, on rank 0 of `group`: each element is written by the
// one rank that counts it (Param::counted_here on DP rank 0) and summed over the group.
std::map<std::string, std::vector<double>> gather_params(Trainer& tr, Communicator& group,
                                                         const ModelConfig& cfg) {
  LocalCommunicator one("tp");
  GPT whole(cfg, ModelShard{}, one, 0);  // for the global names and shapes
  std::map<std::string, Param*> mine;
  for (Param* p : tr.model().params()) mine[p->name] = p;
  std::map<std::string, std::vector<double>> out;
  for (Param* g : whole.params()) {
    Tensor global({shape_numel(g->global_shape)}, DType::F64);
    auto it = mine.find(g->name);
    if (it != mine.end() && it->second->counted_here() && tr.grid().coord().dp == 0) {
      const Param& p = *it->second;
      const float* v = p.value.data<float>();
      for (int64_t i = 0; i < p.value.numel(); ++i) global.data<double>()[p.global_index(i)] = v[i];
    }
    group.all_reduce(global, ReduceOp::Sum);
    if (group.rank() == 0)
      out[g->name].assign(global.data<double>(), global.data<double>() + global.numel());
  }
  return out;
}

// Trains the case on the first tp*pp*dp world ranks; the others wait.
Outcome train_case(Communicator& world, TrainConfig cfg, int tp, int pp, int dp, int microbatches,
                   int zero, bool sequence_parallel = false, int virtual_stages = 1) {
  cfg.parallel.sequence_parallel = sequence_parallel;
  cfg.parallel.virtual_stages = virtual_stages;
  cfg.parallel.tp = tp;
  cfg.parallel.pp = pp;
  cfg.parallel.dp = dp;
  cfg.parallel.zero = zero;
  cfg.micro_batch = cfg.global_batch / (dp * microbatches);
  const int n = tp * pp * dp;
  std::unique_ptr<Communicator> group =
      world.split(world.rank() < n ? 0 : -1, world.rank(), "case");
  Outcome o;
  if (group) {
    Trainer tr(cfg, group->rank(), n);
    tr.start(*group);
    o.chunks = tr.model().chunks();
    o.sequence_parallel = tr.model().shard().sequence_parallel;
    for (int s = 0; s < cfg.steps; ++s) {
      const StepStats stats = tr.step();
      o.losses.push_back(stats.loss);
      o.grad_norms.push_back(stats.grad_norm);
    }
    if (cfg.model.dtype == DType::F32) o.params = gather_params(tr, *group, cfg.model);
  }
  world.barrier();
  return o;
}

struct Layout {
  int tp, pp, dp;
};

class LayoutEquivalence : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    set_cpu_threads(1);
    world_ = MpiCommunicator::world().release();
    cfg_ = new TrainConfig(tiny_config(make_corpus(*world_)));
    reference_ = new Outcome(train_case(*world_, *cfg_, 1, 1, 1, 1, 0));
  }
  static void TearDownTestSuite() {
    if (world_->rank() == 0)
      std::filesystem::remove_all(std::filesystem::path(cfg_->data_path).parent_path());
    delete reference_;
    delete cfg_;
    delete world_;
  }

  void expect_matches_reference(const Layout& l, int microbatches, int zero,
                                bool sequence_parallel = false) {
    expect_matches(*cfg_, *reference_, l, microbatches, zero, sequence_parallel, 1);
  }

  // The case of `cfg` on layout l against `reference`, the same model trained on one rank.
  void expect_matches(const TrainConfig& cfg, const Outcome& reference, const Layout& l,
                      int microbatches, int zero, bool sequence_parallel, int virtual_stages) {
    const Outcome o = train_case(*world_, cfg, l.tp, l.pp, l.dp, microbatches, zero,
                                 sequence_parallel, virtual_stages);
    if (world_->rank() != 0) return;
    const std::string name = "TP " + std::to_string(l.tp) + " PP " + std::to_string(l.pp) + " DP " +
                             std::to_string(l.dp) + ", " + std::to_string(microbatches) +
                             " microbatches, ZeRO " + std::to_string(zero) +
                             (sequence_parallel ? ", sequence parallel" : "") + ", " +
                             std::to_string(virtual_stages) + " model chunks per stage";
    ASSERT_EQ(o.losses.size(), reference.losses.size()) << name;
    ASSERT_EQ(o.grad_norms.size(), reference.grad_norms.size()) << name;
    for (size_t s = 0; s < o.losses.size(); ++s) {
      EXPECT_NEAR(o.losses[s], reference.losses[s], 1e-5 * std::abs(reference.losses[s]))
          << name << ", step " << s + 1;
      EXPECT_NEAR(o.grad_norms[s], reference.grad_norms[s], 1e-4 * reference.grad_norms[s])
          << name << ", step " << s + 1 << ": gradient norm";
    }
    ASSERT_EQ(o.params.size(), reference.params.size()) << name;
    ASSERT_FALSE(reference.params.empty()) << name;
    // The options took effect: equal results are no proof where they were ignored.
    EXPECT_EQ(o.chunks, virtual_stages) << name;
    EXPECT_EQ(o.sequence_parallel, sequence_parallel && l.tp > 1) << name;
    for (const auto& [pname, ref] : reference.params) {
      const std::vector<double>& got = o.params.at(pname);
      double worst = 0;
      for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::abs(got[i] - ref[i]));
      EXPECT_LE(worst, 1e-4) << name << ": " << pname;
    }
  }

  // `body` on world ranks 0 and 1 as the two DP ranks of the case's config; the others wait.
  static void on_two_dp_ranks(const std::function<void(Communicator& two, TrainConfig cfg)>& body) {
    std::unique_ptr<Communicator> two =
        world_->split(world_->rank() < 2 ? 0 : -1, world_->rank(), "two");
    if (two) {
      TrainConfig cfg = *cfg_;
      cfg.parallel.dp = 2;
      cfg.micro_batch = cfg.global_batch / 2;
      body(*two, cfg);
    }
    world_->barrier();
  }

  static Communicator* world_;
  static TrainConfig* cfg_;
  static Outcome* reference_;
};

Communicator* LayoutEquivalence::world_ = nullptr;
TrainConfig* LayoutEquivalence::cfg_ = nullptr;
Outcome* LayoutEquivalence::reference_ = nullptr;

const Layout kLayouts[] = {{1, 1, 1}, {2, 1, 1}, {1, 2, 1}, {1, 1, 2}, {2, 2, 1},
                           {2, 1, 2}, {1, 2, 2}, {2, 2, 2}, {4, 1, 1}, {1, 4, 1}};

TEST_F(LayoutEquivalence, ReferenceLearns) {
  if (world_->rank() != 0) return;
  EXPECT_LT(reference_->losses.back(), reference_->losses.front() - 0.3);
  EXPECT_NEAR(reference_->losses.front(), std::log(512.0), 0.1);
}

TEST_F(LayoutEquivalence, EveryLayoutMatchesOneRankWithOneMicrobatch) {
  for (const Layout& l : kLayouts) expect_matches_reference(l, 1, 0);
}

TEST_F(LayoutEquivalence, EveryLayoutMatchesOneRankWithFourMicrobatches) {
  for (const Layout& l : kLayouts) expect_matches_reference(l, 4, 0);
}

TEST_F(LayoutEquivalence, DataParallelLayoutsMatchWithZero1) {
  for (const Layout& l : kLayouts)
    if (l.dp > 1)
      for (int m : {1, 4}) expect_matches_reference(l, m, 1);
}

// Sequence parallelism on every layout with TP > 1: the residual stream's tokens split over TP,
// pipeline stages passing their rows, the LayerNorms' gradients summed over TP before the DP
// reduction (with ZeRO-1 too).
TEST_F(LayoutEquivalence, SequenceParallelLayoutsMatchOneRank) {
  for (const Layout& l : kLayouts)
    if (l.tp > 1)
      for (int m : {1, 4}) {
        expect_matches_reference(l, m, 0, true);
        if (l.dp > 1) expect_matches_reference(l, m, 1, true);
      }
}

// The interleaved schedule: model chunks on every pipeline stage, the activations going round
// the ring from the last stage to the first one's next chunk, each chunk's gradients in buckets of
// their own; with ZeRO-1 and sequence parallelism too. The 4-layer model takes 2 chunks of one
// layer on 2 stages; an 8-layer one 2 chunks on 4 stages, 4 on 2, and 3 on 2 with 2 microbatches
// (uneven: the first chunks get the extra layers).
TEST_F(LayoutEquivalence, InterleavedScheduleMatchesOneRank) {
  for (const Layout& l : {Layout{1, 2, 1}, Layout{2, 2, 1}, Layout{1, 2, 2}, Layout{2, 2, 2}})
    expect_matches(*cfg_, *reference_, l, 4, 0, false, 2);
  expect_matches(*cfg_, *reference_, {2, 2, 2}, 4, 1, true, 2);
  TrainConfig eight = *cfg_;
  eight.model.layers = 8;
  const Outcome reference = train_case(*world_, eight, 1, 1, 1, 1, 0);
  expect_matches(eight, reference, {1, 4, 1}, 8, 0, false, 2);
  expect_matches(eight, reference, {2, 4, 1}, 8, 0, true, 2);
  expect_matches(eight, reference, {1, 2, 1}, 4, 0, false, 4);
  expect_matches(eight, reference, {1, 2, 2}, 2, 1, false, 3);  // 2, 2, 1, 1, 1, 1 layers
}

// Without clipping the gradient norm takes no part in the update, and every gradient element is
// the same sum whichever stage holds its layer: the interleaved schedule then gives bitwise the
// losses of plain 1F1B on the same layout, in float32 and in bfloat16, where each chunk's bf16
// gradients are folded into the fp32 sums after each of its backwards (with ZeRO-1 too).
TEST_F(LayoutEquivalence, InterleavedScheduleIsBitwisePlainOneFOneBWithoutClipping) {
  for (const DType dtype : {DType::F32, DType::BF16})
    for (const Layout& l : {Layout{1, 2, 2}, Layout{2, 2, 2}}) {
      TrainConfig cfg = *cfg_;
      cfg.model.dtype = dtype;
      cfg.adamw.clip = 0;
      cfg.steps = 6;
      const int zero = l.tp > 1 ? 1 : 0;
      const Outcome plain = train_case(*world_, cfg, l.tp, l.pp, l.dp, 4, zero, false, 1);
      const Outcome chunked = train_case(*world_, cfg, l.tp, l.pp, l.dp, 4, zero, false, 2);
      if (world_->rank() == 0) {
        ASSERT_EQ(plain.losses.size(), 6u);
        EXPECT_EQ(chunked.losses, plain.losses) << dtype_name(dtype) << ", TP " << l.tp;
        EXPECT_EQ(plain.chunks, 1);
        EXPECT_EQ(chunked.chunks, 2);
      }
    }
}

// Ranks that opened different corpora (a glob that matched other files on some node) stop
// together, naming --data.path, before they would read different samples or disagree on the
// id-check records' collective.
TEST_F(LayoutEquivalence, RanksThatOpenedOtherCorporaStopNamingTheDataPath) {
  on_two_dp_ranks([](Communicator& two, TrainConfig cfg) {
    if (two.rank() == 1) {
      cfg.data_path = cfg_->data_path + "_other";
      write_synthetic_corpus(cfg.data_path, 512, 16, 200, 2);
    }
    Trainer tr(cfg, two.rank(), 2);
    test_support::expect_input_error([&] { tr.check_same_corpora(two); },
                                     {"--data.path: the ranks did not open the same corpora"});
    // The same training corpora, validation corpora of their own that differ: named by their
    // option (the message named --data.path).
    TrainConfig valid = cfg;
    valid.data_path = cfg_->data_path;
    valid.eval_interval = 1;
    valid.valid_path = cfg_->data_path + (two.rank() == 1 ? "_other" : "");
    Trainer with_valid(valid, two.rank(), 2);
    test_support::expect_input_error(
        [&] { with_valid.check_same_corpora(two); },
        {"--data.valid_path: the ranks did not open the same corpora"});
  });
}

// The wish to stop is asked once the step's backward is done (its gradients are there), so that
// a signal during a long step stops the run after that step, not after the next; every rank
// hears of one rank's wish in the same step.
TEST_F(LayoutEquivalence, AStepAsksForTheWishToStopOnceItsBackwardIsDone) {
  on_two_dp_ranks([](Communicator& two, const TrainConfig& cfg) {
    Trainer tr(cfg, two.rank(), 2);
    tr.start(two);
    bool gradients_there = false;
    const StepStats s = tr.step([&] {
      for (const Param* p : tr.model().params())
        for (int64_t i = 0; i < p->grad.numel(); ++i)
          gradients_there |= p->grad.data<float>()[i] != 0;
      return two.rank() == 1 ? int{kStopSignal} : 0;
    });
    EXPECT_TRUE(gradients_there);
    EXPECT_EQ(s.stop_on_signal, 1);
    EXPECT_TRUE(s.stops());
    EXPECT_FALSE(tr.step().stops());  // no wish given: none
  });
}

// docs/DESIGN.md invariant 2 on a grid: a fixed layout gives bitwise the same losses run to run,
// since every reduction happens in a fixed order.
TEST_F(LayoutEquivalence, OneLayoutIsBitwiseDeterministic) {
  const Outcome a = train_case(*world_, *cfg_, 2, 2, 2, 4, 1);
  const Outcome b = train_case(*world_, *cfg_, 2, 2, 2, 4, 1);
  if (world_->rank() != 0) return;
  ASSERT_EQ(a.losses.size(), 20u);
  EXPECT_EQ(a.losses, b.losses);
  EXPECT_EQ(a.params, b.params);
}

// Each rank's memory estimate as the run prints it (rank_memory: the state of its parameters and
// the activations of its stage), and the largest rank's, against the most host memory the tensors
// held from the Trainer's making through two steps, on layouts where the stages keep different
// numbers of microbatches, with sequence parallelism, the interleaved schedule, ZeRO-1, each
// recompute mode and an uneven vocabulary. What the estimate leaves out, 17-43 KB of 3.5-7.7 MB
// here (a ratio of 0.990-0.999): the token ids of the step's microbatches and the data loader's
// buffers (host memory, also when training on a GPU), the cross-entropy's per-token scratch, the
// replica check's staging (TP and DP), and the rounding of each allocation to 64 bytes.
TEST_F(LayoutEquivalence, EachRanksMemoryEstimateMatchesTheMostItsStepsHeld) {
  struct Case {
    Layout l;
    int zero;
    bool sequence_parallel;
    int virtual_stages;
    Recompute recompute;
    int64_t vocab = 512;
  };
  // A vocabulary of 515 split unevenly over 4 TP ranks (the corpus uses 512 ids). The last: the
  // parameters' state ahead of the activations (a vocabulary of 2^15), sharded over 8 DP ranks:
  // the start, where every parameter moves into the gradient buckets, must not hold more than the
  // steps do.
  const Case cases[] = {{{2, 2, 2}, 1, false, 1, Recompute::None},
                        {{2, 2, 2}, 0, true, 1, Recompute::Selective},
                        {{1, 4, 2}, 0, false, 1, Recompute::None},
                        {{2, 2, 1}, 0, false, 2, Recompute::Full},
                        {{4, 2, 1}, 0, true, 2, Recompute::Selective, 515},
                        {{1, 1, 8}, 1, false, 1, Recompute::None, 1 << 15}};
  for (const Case& k : cases) {
    TrainConfig cfg = *cfg_;
    cfg.model.recompute = k.recompute;
    cfg.model.vocab_size = k.vocab;
    cfg.model.seq_len = 64;
    cfg.steps = 2;
    cfg.global_batch = 32;
    const int microbatches = 4;
    cfg.parallel.tp = k.l.tp, cfg.parallel.pp = k.l.pp, cfg.parallel.dp = k.l.dp;
    cfg.parallel.zero = k.zero, cfg.parallel.sequence_parallel = k.sequence_parallel;
    cfg.parallel.virtual_stages = k.virtual_stages;
    cfg.micro_batch = cfg.global_batch / (k.l.dp * microbatches);
    const int n = k.l.tp * k.l.pp * k.l.dp;
    std::unique_ptr<Communicator> group =
        world_->split(world_->rank() < n ? 0 : -1, world_->rank(), "memory");
    if (group) {
      const size_t before = host_bytes_allocated();
      reset_host_peak();
      Trainer tr(cfg, group->rank(), n);
      tr.start(*group);
      for (int s = 0; s < cfg.steps; ++s) tr.step();
      const double held = static_cast<double>(host_peak_bytes() - before);
      // The estimate the run prints, from the options alone, and the Trainer's own figures.
      const RankMemory mine = rank_memory(cfg, tr.layout(), tr.grid().coord());
      EXPECT_EQ(mine.activations, tr.activation_bytes());
      const double estimate = static_cast<double>(mine.state + mine.activations);
      const std::string name = "TP " + std::to_string(k.l.tp) + " PP " + std::to_string(k.l.pp) +
                               " DP " + std::to_string(k.l.dp) + ", rank " +
                               std::to_string(group->rank());
      std::printf("%s: held %.0f bytes, estimate %.0f (%.3f)\n", name.c_str(), held, estimate,
                  estimate / held);
      EXPECT_NEAR(estimate / held, 1.0, 0.015) << name;
      // The largest rank's estimate, which the run prints, against the most any rank held.
      Tensor most({1}, DType::F64);
      most.data<double>()[0] = held;
      group->all_reduce(most, ReduceOp::Max);
      const RankMemory largest = largest_rank_memory(cfg, tr.layout());
      EXPECT_NEAR(static_cast<double>(largest.state + largest.activations) / most.data<double>()[0],
                  1.0, 0.015)
          << name << ": the largest rank";
    }
    world_->barrier();
  }
}

// ZeRO-1 with bfloat16 parameters on 3 MPI ranks (pieces end in padding) and on 8: the same
// bits as mixed-precision AdamW on one rank (tests/zero_mixed_case.h). The Trainer's bf16 path
// with ZeRO-1: test_checkpoint (bf16 on the host) and tests/gpu_trainer_test.cpp.
TEST_F(LayoutEquivalence, ZeroOneWithBfloat16ParamsEqualsMixedAdamWOnOneRank) {
  for (int n : {3, 8}) {
    std::unique_ptr<Communicator> dp =
        world_->split(world_->rank() < n ? 0 : -1, world_->rank(), "dp");
    if (dp) test_support::expect_sharded_mixed_adamw_is_adamw(*dp);
    world_->barrier();
  }
}

}  // namespace
}  // namespace tessera
