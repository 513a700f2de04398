// Checkpoints through the `tessera` binary, as a user meets them: a run stopped and resumed in
// fresh processes continues bitwise as if never stopped, on one rank and on TP 2 x DP 2 x PP 2
// with ZeRO-1; a checkpoint saved on one layout resumes on others within the layout tolerance; a
// rank killed at any point of a save leaves the previous checkpoint loadable and resumable; a
// damaged checkpoint is refused by name, and --checkpoint.resume auto falls back past it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <random>

#include "io/checkpoint_blocks.h"
#include "io/checkpoint_io.h"
#include "io/checkpoint_manifest.h"
#include "io/synthetic_corpus.h"
#include "io/token_corpus.h"
#include "tests/cli_support.h"
#include "tests/temp_dir.h"

namespace tessera {
namespace {

using namespace test_support;

class Checkpoints : public ::testing::Test {
 public:
  void SetUp() override {
    dir_ = test_support::fresh_test_dir("tessera_ckpt");
    corpus_ = (dir_ / "corpus").string();
    write_synthetic_corpus(corpus_, 64, 40, 200, 3);
  }
  void TearDown() override { fs::remove_all(dir_); }
  const fs::path& dir() const { return dir_; }

  // A tiny model for `steps` steps, a checkpoint every `interval`, in run directory `run`. Its
  // vocabulary of 67 splits unevenly over 2 and 4 TP ranks (33 + 34, 16 + 17 + 17 + 17).
  std::string args(const std::string& run, const std::string& more = "", int steps = 20,
                   int interval = 10) const {
    return "train --data.path " + corpus_ + " --run.dir " + (dir_ / run).string() +
           " --model.vocab_size 67 --model.d_model " + std::to_string(d_model_) +
           " --model.layers 4 --model.heads 4"
           " --model.d_ff 64 --model.seq_len 16 --train.global_batch 8 --train.micro_batch 2"
           " --train.log_interval 1 --train.threads 1 --optim.lr 3e-3 --optim.warmup 2"
           " --train.eval_interval 0 --train.steps " +
           std::to_string(steps) + " --checkpoint.interval " + std::to_string(interval) + " " +
           more;
  }
  fs::path metrics(const std::string& run) const { return dir_ / run / "metrics.jsonl"; }
  std::string step_dir(const std::string& run, int step) const {
    char name[32];
    std::snprintf(name, sizeof name, "step_%08d", step);
    return (dir_ / run / "checkpoints" / name).string();
  }

  // Every parameter and moment of two checkpoints, compared exactly (tolerance 0) or within tol.
  void expect_same_state(const std::string& a, const std::string& b, double tol) {
    const CheckpointReader ra = CheckpointReader::open(a), rb = CheckpointReader::open(b);
    int compared = 0;
    for (const auto& t : ra.tensors()) {
      ASSERT_TRUE(rb.has(t.name)) << t.name;
      Tensor x(t.shape, DType::F64), y(t.shape, DType::F64);
      const Shape zero(t.shape.size(), 0);
      ra.read(t.name, t.shape, zero, x);
      rb.read(t.name, t.shape, zero, y);
      double worst = 0;
      for (int64_t i = 0; i < x.numel(); ++i)
        worst = std::max(worst, std::abs(x.data<double>()[i] - y.data<double>()[i]));
      EXPECT_LE(worst, tol) << t.name;
      ++compared;
    }
    EXPECT_GT(compared, 20);
  }

 protected:
  fs::path dir_;
  std::string corpus_;
  int d_model_ = 32;
};

// 20 steps straight, against 10 steps, exit, and 10 more in new processes from the checkpoint,
// on `ranks` ranks with the options `grid`: the same losses and every tensor, bitwise.
void expect_exact_resume(Checkpoints& t, int ranks, const std::string& grid,
                         const std::vector<std::string>& stop_output = {}) {
  const auto run = [&](const std::string& args) {
    return ranks == 1 ? run_tessera(args, t.dir()) : run_mpi(ranks, args, t.dir());
  };
  ASSERT_EQ(run(t.args("straight", grid)).exit_code, 0);
  const CliRun stop = run(t.args("resumed", grid + " --train.exit_after 10"));
  ASSERT_EQ(stop.exit_code, 0) << stop.err;
  for (const std::string& line : stop_output)
    EXPECT_NE(stop.out.find(line), std::string::npos) << line << "\n" << stop.out;
  const CliRun resume = run(t.args("resumed", grid));
  ASSERT_EQ(resume.exit_code, 0) << resume.err;
  EXPECT_NE(resume.out.find("resumed from " + t.step_dir("resumed", 10)), std::string::npos)
      << resume.out;
  EXPECT_EQ(loss_fields(t.metrics("straight")), loss_fields(t.metrics("resumed")));
  t.expect_same_state(t.step_dir("straight", 20), t.step_dir("resumed", 20), 0.0);
}

TEST_F(Checkpoints, StoppedAndResumedRunIsBitwiseTheStraightRunOnOneRank) {
  expect_exact_resume(*this, 1, "");
}

// The mean loss of a log interval is over the steps since the last multiple of
// --train.log_interval, also in a resumed run, whose own first line (step 11 of a run resumed at
// 10) made its next mean that of steps 12-15 where the straight run's was of 11-15.
TEST_F(Checkpoints, AResumedRunLogsTheMeanLossesOfTheStraightRun) {
  const auto every_5 = [&](const std::string& run, const std::string& more) {
    std::string a = args(run, more);
    a.replace(a.find("--train.log_interval 1"), 22, "--train.log_interval 5");
    return a;
  };
  const auto means = [&](const std::string& run) {
    std::map<std::string, std::string> out;  // "step": N -> "mean_loss": X, as written
    std::ifstream in(metrics(run));
    for (std::string line; std::getline(in, line);) {
      const size_t k = line.find("\"mean_loss\":");
      if (k == std::string::npos) continue;
      const size_t s = line.find("\"step\":");
      out[line.substr(s, line.find(',', s) - s)] = line.substr(k, line.find_first_of(",}", k) - k);
    }
    return out;
  };
  ASSERT_EQ(run_tessera(every_5("straight", ""), dir_).exit_code, 0);
  ASSERT_EQ(run_tessera(every_5("resumed", "--train.exit_after 10"), dir_).exit_code, 0);
  const CliRun resume = run_tessera(every_5("resumed", ""), dir_);
  ASSERT_EQ(resume.exit_code, 0) << resume.err;
  const auto straight = means("straight"), resumed = means("resumed");
  for (const char* step : {"\"step\": 15", "\"step\": 20"}) {
    ASSERT_TRUE(straight.count(step) && resumed.count(step)) << step;
    EXPECT_EQ(straight.at(step), resumed.at(step)) << step;
  }
}

// The shapes of the blocks of optimizer state that shard FILE of directory SHARDS holds.
std::vector<Shape> optimizer_blocks(const fs::path& shards, const std::string& file) {
  std::map<std::string, TensorPlan> plans;
  const H5Lock lock;
  add_shard_blocks(shards, file, plans);
  std::vector<Shape> shapes;
  for (const auto& [name, plan] : plans)
    if (name.starts_with("optimizer/"))
      for (const SourceBlock& b : plan.blocks) shapes.push_back(b.shape);
  return shapes;
}

// With ZeRO-1 each DP rank writes the optimizer state of its own pieces (nothing is gathered
// onto DP rank 0): all eight ranks have a shard, the two DP ranks of each TP x PP place about
// half of its moments each, and a row that a piece boundary cuts is a [1, columns] block (small
// buckets, so that pieces end inside rows; pieces start on 256-byte boundaries, 64 floats, which
// rows of 48 do not divide).
TEST_F(Checkpoints, StoppedAndResumedRunIsBitwiseTheStraightRunOnTp2Dp2Pp2WithZero1) {
  d_model_ = 48;
  expect_exact_resume(
      *this, 8, "--parallel.tp 2 --parallel.pp 2 --parallel.zero 1 --parallel.bucket_mb 0.01");
  const fs::path shards = fs::path(step_dir("resumed", 20)) / "shards";
  int cut_rows = 0;
  for (int pp = 0; pp < 2; ++pp)
    for (int tp = 0; tp < 2; ++tp) {
      int64_t elements[2] = {0, 0};
      for (int dp = 0; dp < 2; ++dp) {
        char name[32];
        std::snprintf(name, sizeof name, "rank_%05d.h5", (pp * 2 + dp) * 2 + tp);
        ASSERT_TRUE(fs::exists(shards / name)) << name;
        for (const Shape& shape : optimizer_blocks(shards, name)) {
          elements[dp] += shape_numel(shape);
          cut_rows += shape.size() == 2 && shape[0] == 1;
        }
      }
      const int64_t both = elements[0] + elements[1];
      EXPECT_GT(both, 0);
      for (int dp = 0; dp < 2; ++dp)
        EXPECT_GT(4 * elements[dp], both) << "tp " << tp << " pp " << pp << " dp " << dp;
    }
  EXPECT_GT(cut_rows, 0);
  // And the blocks sit where they belong: the same state as the run without ZeRO-1 (whose DP
  // rank 0 writes whole tensors), read through model.h5.
  ASSERT_EQ(run_mpi(8, args("plain", "--parallel.tp 2 --parallel.pp 2"), dir_).exit_code, 0);
  expect_same_state(step_dir("straight", 20), step_dir("plain", 20), 0.0);
}

// Sequence parallelism with bf16 on the host, on TP 2 x PP 2: nothing of it is in the checkpoint,
// and the resumed run is bitwise the straight one.
TEST_F(Checkpoints, StoppedAndResumedSequenceParallelRunIsBitwiseTheStraightRun) {
  expect_exact_resume(*this, 4,
                      "--parallel.tp 2 --parallel.pp 2 --parallel.sequence_parallel true "
                      "--train.precision bf16");
}

// The interleaved schedule (2 stages of 2 model chunks, DP 2 with ZeRO-1, bf16 on the host):
// nothing of it is in the checkpoint, and the resumed run is bitwise the straight one.
TEST_F(Checkpoints, StoppedAndResumedInterleavedRunIsBitwiseTheStraightRun) {
  expect_exact_resume(*this, 4,
                      "--parallel.pp 2 --parallel.virtual_stages 2 --parallel.zero 1 "
                      "--train.precision bf16");
}

// Mixed precision on the host (bf16 compute, fp32 masters, moments and gradient sums), with the
// fp32 masters sharded by ZeRO-1 and each DP rank's pieces saved: the resume is bitwise too.
// The layout changes bf16 results only within their rounding: one rank's bf16 run follows the
// 8-rank one. Its checkpoint holds the fp32 masters: a float32 run on one rank resumes it, within
// bf16's rounding of the straight run.
TEST_F(Checkpoints, StoppedAndResumedBfloat16RunWithZero1IsBitwiseTheStraightRun) {
  expect_exact_resume(*this, 8,
                      "--parallel.tp 2 --parallel.pp 2 --parallel.zero 1 --train.precision bf16");
  // The weights saved are the fp32 masters, not the bf16 values widened: some are not bf16
  // numbers.
  const CheckpointReader saved = CheckpointReader::open(step_dir("resumed", 20));
  const std::string name = "model/layers/00/mlp/up/weight";
  ASSERT_TRUE(saved.has(name));
  const Shape shape = {64, 32};
  Tensor w(shape, DType::F32);
  saved.read(name, shape, {0, 0}, w);
  int64_t beyond_bf16 = 0;
  for (int64_t i = 0; i < w.numel(); ++i)
    beyond_bf16 += to_float(to_bf16(w.data<float>()[i])) != w.data<float>()[i];
  EXPECT_GT(beyond_bf16, w.numel() / 2);

  const std::vector<double> straight = losses_of(metrics("straight"));
  ASSERT_EQ(run_tessera(args("one", "--train.precision bf16"), dir_).exit_code, 0);
  const std::vector<double> one = losses_of(metrics("one"));
  ASSERT_EQ(one.size(), straight.size());
  for (size_t i = 0; i < one.size(); ++i)
    EXPECT_NEAR(one[i], straight[i], 2e-2 * straight[i]) << "one rank, step " << i + 1;
  const CliRun f32 =
      run_tessera(args("f32", "--checkpoint.resume " + step_dir("resumed", 10)), dir_);
  ASSERT_EQ(f32.exit_code, 0) << f32.err;
  // `auto` is said as it resolved.
  EXPECT_NE(f32.out.find("--train.precision bf16 -> auto (float32 here)"), std::string::npos)
      << f32.out;
  const std::vector<double> resumed = losses_of(metrics("f32"));
  ASSERT_EQ(resumed.size(), 10u);
  for (size_t i = 0; i < resumed.size(); ++i)
    EXPECT_NEAR(resumed[i], straight[10 + i], 2e-2 * straight[10 + i]) << "step " << 11 + i;
}

// With --checkpoint.async the state is copied at the step boundary and written while training
// goes on: the resumed run is still bitwise the straight one. The save the run ends with is
// reported once written.
TEST_F(Checkpoints, AsynchronousSavesResumeBitwiseToo) {
  expect_exact_resume(*this, 4, "--parallel.tp 2 --parallel.pp 2 --checkpoint.async true",
                      {"writing in the background",
                       "checkpoint: " + step_dir("resumed", 10) + " written (waited for it)"});
}

// Saved on TP 2 x DP 2 x PP 2, resumed on one rank, on TP 4 x DP 2, on PP 4, on TP 2 x DP 2
// without ZeRO (DP rank 0 reads, DP rank 1 receives) and on TP 2 x PP 2 with sequence
// parallelism, and from one rank back to TP 2 x DP 2 x
// PP 2: the resumed steps give the uninterrupted run's losses within the layout-equivalence
// tolerance (1e-5 relative).
TEST_F(Checkpoints, CheckpointOfOneLayoutResumesOnOthers) {
  const std::string grid = "--parallel.tp 2 --parallel.pp 2 --parallel.zero 1";
  ASSERT_EQ(run_mpi(8, args("straight", grid), dir_).exit_code, 0);
  const std::vector<double> straight = losses_of(metrics("straight"));
  ASSERT_EQ(straight.size(), 20u);
  const CliRun stop = run_mpi(8, args("saved", grid + " --train.exit_after 10"), dir_);
  ASSERT_EQ(stop.exit_code, 0) << stop.err;
  const std::string saved = step_dir("saved", 10);
  struct Target {
    int ranks;
    std::string layout;
  };
  int targets = 0;
  for (const Target& to :
       {Target{1, ""}, Target{8, "--parallel.tp 4 --parallel.zero 1"}, Target{4, "--parallel.pp 4"},
        Target{4, "--parallel.tp 2"},
        Target{4, "--parallel.tp 2 --parallel.pp 2 --parallel.sequence_parallel true"},
        Target{2, "--parallel.pp 2 --parallel.virtual_stages 2"}}) {
    const std::string run = "to_" + std::to_string(to.ranks) + "_" + std::to_string(++targets);
    const CliRun r =
        run_mpi(to.ranks, args(run, to.layout + " --checkpoint.resume " + saved), dir_);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::vector<double> resumed = losses_of(metrics(run));
    ASSERT_EQ(resumed.size(), 10u) << r.out;
    for (size_t i = 0; i < 10; ++i)
      EXPECT_NEAR(resumed[i], straight[10 + i], 1e-5 * straight[10 + i])
          << run << " step " << 11 + i;
    // What the interleaved run saves (each stage's layers two apart) is the straight run's state.
    if (to.layout.find("virtual_stages") != std::string::npos)
      expect_same_state(step_dir(run, 20), step_dir("straight", 20), 1e-5);
  }
  // And back: the one-rank run stopped at step 15 resumes on TP 2 x DP 2 x PP 2 with ZeRO-1.
  const CliRun one =
      run_tessera(args("back", "--checkpoint.resume " + saved + " --train.exit_after 5"), dir_);
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const CliRun back = run_mpi(8, args("back", grid), dir_);
  ASSERT_EQ(back.exit_code, 0) << back.err;
  EXPECT_NE(back.out.find("resumed from " + step_dir("back", 15)), std::string::npos) << back.out;
  const std::vector<double> losses = losses_of(metrics("back"));
  ASSERT_EQ(losses.size(), 10u);
  for (size_t i = 0; i < 10; ++i)
    EXPECT_NEAR(losses[i], straight[10 + i], 1e-5 * straight[10 + i]) << "back, step " << 11 + i;
}

// A rank killed (SIGKILL) at a random point of the second save, 20 seeded trials (half of them
// with asynchronous saves): the first
// checkpoint still verifies, and a new run resumes from a committed checkpoint and finishes.
TEST_F(Checkpoints, RankKilledDuringASaveLeavesTheLastCheckpointUsable) {
  const char* points[] = {"start", "shard", "written", "master", "renamed"};
  std::mt19937 rng(2024);
  for (int trial = 0; trial < 20; ++trial) {
    const std::string run = "crash" + std::to_string(trial);
    // Every rank writes a shard; only rank 0 goes on to the master, the rename and latest.
    const int rank = static_cast<int>(rng() % 4);
    const char* point = points[rng() % (rank == 0 ? 5 : 3)];
    // Odd trials save in the background: the protocol must hold there too.
    const std::string layout = std::string("--parallel.tp 2 --parallel.pp 2 --checkpoint.async ") +
                               (trial % 2 ? "true" : "false");
    const CliRun crashed = run_mpi(
        4,
        args(run, layout + " --debug.kill_during_save " + std::to_string(rank) + ":" + point, 20,
             5),
        dir_);
    const std::string what = run + " (rank " + std::to_string(rank) + " at " + point + ")";
    EXPECT_NE(crashed.exit_code, 0) << what;
    EXPECT_NE(crashed.exit_code, 124) << what << ": the other ranks hung, until mpirun's limit";
    EXPECT_EQ(crashed.out.find("step     20/20"), std::string::npos) << what;
    EXPECT_NO_THROW(verify_manifest(step_dir(run, 5))) << what;
    const CliRun again = run_mpi(4, args(run, layout, 20, 5), dir_);
    ASSERT_EQ(again.exit_code, 0) << what << "\n" << again.err;
    EXPECT_NE(again.out.find("resumed from "), std::string::npos) << what << "\n" << again.out;
    EXPECT_NE(again.out.find("step     20/20"), std::string::npos) << what;
    EXPECT_NO_THROW(verify_manifest(step_dir(run, 20))) << what;
  }
}

// A run resumed from an earlier step saves its later steps again. The old step_N is set aside
// (step_N.replaced) while the new one is renamed in: a crash between the two renames leaves it,
// and the next run restores it (the same directory, by inode), saying so; a
// step_N.replaced beside a step_N (the crash came after the new one made it) is deleted.
TEST_F(Checkpoints, CrashWhileReplacingAStepKeepsTheOldOne) {
  ASSERT_EQ(run_tessera(args("run", "", 20, 5), dir_).exit_code, 0);
  const auto inode = [](const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? static_cast<long long>(st.st_ino) : -1LL;
  };
  const long long old20 = inode(step_dir("run", 20)), old15 = inode(step_dir("run", 15));
  ASSERT_GT(old20, 0);
  // Saves at 15 (replaced whole) and 20, the second, killed between its renames.
  const CliRun crashed = run_tessera(
      args("run",
           "--checkpoint.resume " + step_dir("run", 10) + " --debug.kill_during_save 0:set_aside",
           20, 5),
      dir_);
  EXPECT_NE(crashed.exit_code, 0) << crashed.out;
  EXPECT_NE(inode(step_dir("run", 15)), old15) << "step 15 was not saved again";
  EXPECT_FALSE(fs::exists(step_dir("run", 15) + ".replaced"));
  EXPECT_FALSE(fs::exists(step_dir("run", 20)));
  EXPECT_EQ(inode(step_dir("run", 20) + ".replaced"), old20);

  // `latest` names step 15, the crashed run's last commit; one step on, step 20 is the old one.
  fs::create_directory(step_dir("run", 15) + ".replaced");
  const CliRun again = run_tessera(args("run", "--train.exit_after 1", 20, 5), dir_);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("checkpoint: " + step_dir("run", 20) +
                           " was being replaced by a save when a run stopped: the old one is "
                           "restored"),
            std::string::npos)
      << again.out;
  EXPECT_NE(again.out.find("resumed from " + step_dir("run", 15)), std::string::npos) << again.out;
  EXPECT_EQ(inode(step_dir("run", 20)), old20);
  EXPECT_FALSE(fs::exists(step_dir("run", 20) + ".replaced"));
  EXPECT_FALSE(fs::exists(step_dir("run", 15) + ".replaced"));
  EXPECT_NO_THROW(verify_manifest(step_dir("run", 20)));
}

// Files that are not files: a FIFO as a MANIFEST (its read would wait forever) is damage, which
// auto skips; a FIFO as metrics.jsonl with no reader is refused, not waited on; a directory as
// `latest` (which the first save would fail to replace, after its training) is refused first.
TEST_F(Checkpoints, FifosAndDirectoriesWhereFilesBelongAreRefusedNotWaitedOn) {
  ASSERT_EQ(run_tessera(args("run"), dir_).exit_code, 0);
  const fs::path manifest = fs::path(step_dir("run", 20)) / "MANIFEST";
  fs::remove(manifest);
  ASSERT_EQ(::mkfifo(manifest.c_str(), 0600), 0);
  const CliRun skipped = run_tessera(args("run", "--train.exit_after 1", 21), dir_);
  EXPECT_EQ(skipped.exit_code, 0) << skipped.err;
  EXPECT_NE(skipped.out.find(manifest.string() + ": expected the checkpoint's list of files, found "
                                                 "a FIFO"),
            std::string::npos)
      << skipped.out;
  EXPECT_NE(skipped.out.find("resumed from " + step_dir("run", 10)), std::string::npos)
      << skipped.out;

  fs::remove(metrics("run"));
  ASSERT_EQ(::mkfifo(metrics("run").c_str(), 0600), 0);
  const CliRun unread = run_tessera(args("run", "", 21), dir_);
  EXPECT_NE(unread.exit_code, 0);
  EXPECT_NE(unread.err.find(metrics("run").string() +
                            ": a FIFO that no process reads; start its reader first"),
            std::string::npos)
      << unread.err;
  fs::remove(metrics("run"));

  const fs::path latest = dir_ / "run" / "checkpoints" / "latest";
  fs::remove(latest);
  fs::create_directory(latest);
  const CliRun refused = run_tessera(args("run", "", 21), dir_);
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  EXPECT_NE(refused.err.find(latest.string() + ": expected one line naming a step directory, "
                                               "found a directory"),
            std::string::npos)
      << refused.err;
  EXPECT_EQ(refused.out.find("step "), std::string::npos) << refused.out;
}

// A damaged newest checkpoint: named when asked for by path; skipped, saying so, by auto.
TEST_F(Checkpoints, DamagedCheckpointIsRefusedByPathAndSkippedByAuto) {
  ASSERT_EQ(run_tessera(args("run"), dir_).exit_code, 0);
  const std::string newest = step_dir("run", 20);
  fs::path shard;
  for (const auto& e : fs::directory_iterator(fs::path(newest) / "shards")) shard = e.path();
  test_support::flip_bits(shard, -100, std::ios::end, 0x5a);
  const CliRun by_path = run_tessera(args("other", "--checkpoint.resume " + newest, 21), dir_);
  EXPECT_EQ(by_path.exit_code, 2) << by_path.err;
  EXPECT_NE(by_path.err.find(shard.filename().string()), std::string::npos) << by_path.err;
  EXPECT_EQ(by_path.out.find("step "), std::string::npos) << "trained on a bad checkpoint";

  const CliRun automatic = run_tessera(args("run", "", 21), dir_);
  ASSERT_EQ(automatic.exit_code, 0) << automatic.err;
  EXPECT_NE(automatic.out.find("latest checkpoint is not usable"), std::string::npos)
      << automatic.out;
  EXPECT_NE(automatic.out.find("resumed from " + step_dir("run", 10)), std::string::npos)
      << automatic.out;
}

// On several ranks the CRC pass over a checkpoint is shared (rank r reads pieces r, r + N, ...
// of the files, in MANIFEST order, 64 MiB each): damage in a file rank 0 does not read
// (rank_00000.h5, one piece, the second, is rank 1's) is still refused by path, naming the file,
// and skipped by auto.
TEST_F(Checkpoints, DamageInAnotherRanksShareOfTheCrcPassIsRefusedAndSkipped) {
  ASSERT_EQ(run_mpi(2, args("run"), dir_).exit_code, 0);
  const std::string newest = step_dir("run", 20);
  const fs::path shard = fs::path(newest) / "shards" / "rank_00000.h5";
  test_support::flip_bits(shard, -100, std::ios::end, 0x5a);
  const CliRun by_path = run_mpi(2, args("other", "--checkpoint.resume " + newest, 21), dir_);
  EXPECT_EQ(by_path.exit_code, 2) << by_path.err;
  EXPECT_NE(by_path.err.find(shard.string() + ": CRC-32C "), std::string::npos) << by_path.err;
  EXPECT_EQ(by_path.err.find("ranks failed"), std::string::npos) << by_path.err;
  EXPECT_EQ(by_path.out.find("step "), std::string::npos) << "trained on a bad checkpoint";

  const CliRun automatic = run_mpi(2, args("run", "", 21), dir_);
  ASSERT_EQ(automatic.exit_code, 0) << automatic.err;
  EXPECT_NE(automatic.out.find("latest checkpoint is not usable (" + shard.string() + ": CRC-32C "),
            std::string::npos)
      << automatic.out;
  EXPECT_NE(automatic.out.find("resumed from " + step_dir("run", 10)), std::string::npos)
      << automatic.out;
}

// Damage the checksums cannot see, a shard removed with its MANIFEST line (as by hand), is found
// by model.h5's map of the shards: refused by path, skipped by auto, as any other damage.
TEST_F(Checkpoints, ShardRemovedWithItsManifestLineIsRefusedByPathAndSkippedByAuto) {
  ASSERT_EQ(run_tessera(args("run"), dir_).exit_code, 0);
  const std::string newest = step_dir("run", 20);
  fs::remove(fs::path(newest) / "shards" / "rank_00000.h5");
  write_manifest(newest);
  const CliRun by_path = run_tessera(args("other", "--checkpoint.resume " + newest, 21), dir_);
  EXPECT_EQ(by_path.exit_code, 2) << by_path.err;
  EXPECT_NE(by_path.err.find("lies partly in shards/rank_00000.h5, which is missing"),
            std::string::npos)
      << by_path.err;
  EXPECT_EQ(by_path.out.find("step "), std::string::npos) << "trained on a bad checkpoint";
  const CliRun sampled = run_tessera("sample --checkpoint " + newest, dir_);
  EXPECT_EQ(sampled.exit_code, 2) << sampled.err;
  EXPECT_NE(sampled.err.find("rank_00000.h5, which is missing"), std::string::npos) << sampled.err;

  const CliRun automatic = run_tessera(args("run", "", 21), dir_);
  ASSERT_EQ(automatic.exit_code, 0) << automatic.err;
  EXPECT_NE(automatic.out.find("resumed from " + step_dir("run", 10)), std::string::npos)
      << automatic.out;
}

// A run whose model has another shape is refused, naming the tensor and both shapes, before a
// step is taken; so is one with another head count, which no shape shows.
TEST_F(Checkpoints, CheckpointOfAnotherModelIsRefusedNamingTensorAndShapes) {
  ASSERT_EQ(run_tessera(args("run", "--train.exit_after 10"), dir_).exit_code, 0);
  const std::string saved = step_dir("run", 10);
  // Options may be given once: swap one of args() for another value.
  const auto with = [&](const std::string& run, const std::string& from, const std::string& to) {
    std::string a = args(run, "--checkpoint.resume " + saved);
    return a.replace(a.find(from), from.size(), to);
  };
  // A wider model, on four ranks in another layout: refused before any rank starts, with one
  // message (each rank used to find it when loading, and say so).
  const CliRun wider = run_mpi(
      4, with("wider", "--model.d_ff 64", "--model.d_ff 128 --parallel.tp 2 --parallel.pp 2"),
      dir_);
  EXPECT_EQ(wider.exit_code, 2) << wider.err;
  EXPECT_NE(wider.err.find(saved + ": saved with --model.d_ff 64 (model/layers/00/mlp/up/weight "
                                   "is [64, 32]), this run has 128"),
            std::string::npos)
      << wider.err;
  EXPECT_EQ(wider.err.find("error: "), wider.err.rfind("error: ")) << "more than one message:\n"
                                                                   << wider.err;
  EXPECT_EQ(wider.out.find("step "), std::string::npos) << wider.out;
  // The other widths the shapes show: run, the option as saved, as changed, the message.
  const std::array<std::array<std::string, 4>, 2> widths = {{
      {"broader", "--model.d_model 32", "--model.d_model 64",
       "saved with --model.d_model 32 (model/embedding/token/weight is [67, 32]), this run has "
       "64"},
      {"longer", "--model.seq_len 16", "--model.seq_len 32",
       "saved with --model.seq_len 16 (model/embedding/position/weight is [16, 32]), this run "
       "has 32"},
  }};
  for (const auto& [run, from, to, message] : widths) {
    const CliRun r = run_tessera(with(run, from, to), dir_);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
  }
  const CliRun fewer = run_tessera(with("heads", "--model.heads 4", "--model.heads 2"), dir_);
  EXPECT_NE(fewer.exit_code, 0);
  EXPECT_NE(fewer.err.find("saved with --model.heads 4, this run has 2"), std::string::npos)
      << fewer.err;
  // Fewer layers: every tensor the run needs is there, but the checkpoint's last layers would be
  // dropped. Refused before any rank starts, with one message.
  const CliRun shallower =
      run_tessera(with("shallower", "--model.layers 4", "--model.layers 3"), dir_);
  EXPECT_EQ(shallower.exit_code, 2) << shallower.err;
  EXPECT_NE(shallower.err.find(saved + ": saved with 4 layers"), std::string::npos)
      << shallower.err;
  EXPECT_NE(shallower.err.find("this run has --model.layers 3"), std::string::npos)
      << shallower.err;
  EXPECT_EQ(shallower.out.find("step "), std::string::npos) << shallower.out;
  EXPECT_EQ(std::count(shallower.err.begin(), shallower.err.end(), '\n'), 1) << shallower.err;
  // A wider model resuming in the saving run's own directory: refused, with one message, before
  // the run's config.ini is replaced by the refused options.
  const fs::path ini = dir_ / "run" / "config.ini";
  std::ifstream before_in(ini);
  const std::string before{std::istreambuf_iterator<char>(before_in), {}};
  std::string own = args("run");
  own.replace(own.find("--model.d_ff 64"), 15, "--model.d_ff 128");
  const CliRun own_wider = run_tessera(own, dir_);
  EXPECT_EQ(own_wider.exit_code, 2) << own_wider.err;
  EXPECT_NE(own_wider.err.find("saved with --model.d_ff 64"), std::string::npos) << own_wider.err;
  EXPECT_EQ(std::count(own_wider.err.begin(), own_wider.err.end(), '\n'), 1) << own_wider.err;
  std::ifstream after_in(ini);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(after_in), {}), before);
}

// What the checkpoint cannot carry over is said when a resume changes it: another learning-rate
// schedule (here a longer run: the cosine's decay is stretched, and the rate jumps at the resume)
// and another global batch. The run goes on.
TEST_F(Checkpoints, ResumeSaysWhenTheScheduleOrTheGlobalBatchChanges) {
  ASSERT_EQ(run_tessera(args("run", "--train.exit_after 10"), dir_).exit_code, 0);
  const std::string saved = step_dir("run", 10);
  const CliRun same = run_tessera(args("same", "--checkpoint.resume " + saved), dir_);
  ASSERT_EQ(same.exit_code, 0) << same.err;
  EXPECT_EQ(same.out.find("schedule differs"), std::string::npos) << same.out;
  std::string longer = args("longer", "--checkpoint.resume " + saved);
  longer.replace(longer.find("--train.steps 20"), 16, "--train.steps 40");
  const CliRun stretched = run_tessera(longer, dir_);
  ASSERT_EQ(stretched.exit_code, 0) << stretched.err;
  EXPECT_NE(stretched.out.find("this run's learning-rate schedule differs from the saving run's"),
            std::string::npos)
      << stretched.out;
  EXPECT_NE(stretched.out.find("step 10 ran at "), std::string::npos) << stretched.out;
  EXPECT_NE(stretched.out.find("this run changes the saving run's --train.steps 20 -> 40"),
            std::string::npos)
      << stretched.out;
  // An option that leaves the rate as it was is named all the same (clipping takes no part in
  // the schedule).
  const std::string clip = args("clip", "--checkpoint.resume " + saved + " --optim.clip 0.5");
  const CliRun clipped = run_tessera(clip, dir_);
  ASSERT_EQ(clipped.exit_code, 0) << clipped.err;
  EXPECT_NE(clipped.out.find("this run changes the saving run's --optim.clip 1 -> 0.5"),
            std::string::npos)
      << clipped.out;
  EXPECT_EQ(clipped.out.find("schedule differs"), std::string::npos) << clipped.out;
  EXPECT_EQ(same.out.find("this run changes"), std::string::npos) << same.out;
  // Options are not taken from the checkpoint: one left out is said too (a resume without the
  // saving run's --checkpoint.interval saved nothing, and said so only at its end).
  const CliRun unsaved = run_tessera(args("unsaved", "--checkpoint.resume " + saved, 20, 0), dir_);
  ASSERT_EQ(unsaved.exit_code, 0) << unsaved.err;
  EXPECT_NE(unsaved.out.find("this run changes the saving run's --checkpoint.interval 10 -> 0"),
            std::string::npos)
      << unsaved.out;
  // The tokenizer too: no check compares it, and `tessera sample` takes it from config.ini. An
  // empty value reads "".
  std::ofstream(dir_ / "text.txt") << "ab ba abba baab aab\nbab abab ba\n";
  const std::string tok = (dir_ / "tok").string();
  ASSERT_EQ(run_tessera("tokenize train --vocab_size 12 --byte_fallback false --input " +
                            (dir_ / "text.txt").string() + " --output " + tok,
                        dir_)
                .exit_code,
            0);
  const CliRun with_tok =
      run_tessera(args("tok", "--train.exit_after 10 --data.tokenizer " + tok + ".model"), dir_);
  ASSERT_EQ(with_tok.exit_code, 0) << with_tok.err;
  const CliRun without_tok = run_tessera(args("tok"), dir_);
  ASSERT_EQ(without_tok.exit_code, 0) << without_tok.err;
  EXPECT_NE(without_tok.out.find("this run changes the saving run's --data.tokenizer " + tok +
                                 ".model -> \"\""),
            std::string::npos)
      << without_tok.out;
  std::string bigger = args("bigger", "--checkpoint.resume " + saved);
  bigger.replace(bigger.find("--train.global_batch 8"), 22, "--train.global_batch 16");
  const CliRun doubled = run_tessera(bigger, dir_);
  ASSERT_EQ(doubled.exit_code, 0) << doubled.err;
  EXPECT_NE(doubled.out.find("the saving run's --train.global_batch was 8, this run's is 16: "
                             "after step 10, each step takes 16 samples"),
            std::string::npos)
      << doubled.out;
}

// --checkpoint.init (Megatron-LM's --finetune): a fresh start from another run's weights alone,
// in any layout. With a rate too small to move a float32 weight, the new run's checkpoint after
// one step holds the weights it began from, bitwise, and the moments of one step from zero:
// m = (1 - beta1) g and v = (1 - beta2) g^2, so m^2 = v with beta1 0.9, beta2 0.99 (moments loaded
// too would not be). Its steps count from 0. A run with checkpoints of its own resumes them
// instead (a requeued job), and says so.
TEST_F(Checkpoints, InitStartsFromTheWeightsAloneAtStepZeroInAnyLayout) {
  ASSERT_EQ(run_tessera(args("base", "", 10, 10), dir_).exit_code, 0);
  const std::string base = step_dir("base", 10);
  const std::string other = (dir_ / "other").string();
  write_synthetic_corpus(other, 64, 20, 200, 9);
  const auto init_args = [&](const std::string& run, const std::string& more) {
    std::string a = args(run,
                         "--optim.lr 1e-30 --optim.min_lr 0 --optim.beta1 0.9 --optim.beta2 0.99 "
                         "--checkpoint.init " +
                             base + " " + more,
                         1, 1);
    a.replace(a.find(corpus_), corpus_.size(), other);
    a.replace(a.find("--optim.lr 3e-3"), 15, "");
    return a;
  };
  const auto expect_base_weights = [&](const std::string& dir) {
    const CheckpointReader b = CheckpointReader::open(base), f = CheckpointReader::open(dir);
    EXPECT_EQ(f.meta().ints.at("step"), 1);
    EXPECT_EQ(f.meta().ints.at("adamw_step"), 1);
    const auto values = [](const CheckpointReader& r, const std::string& name) {
      const Shape& shape = r.tensor(name).shape;
      Tensor t(shape, DType::F64);
      r.read(name, shape, Shape(shape.size(), 0), t);
      return std::vector<double>(t.data<double>(), t.data<double>() + t.numel());
    };
    int weights = 0, moments = 0;
    for (const auto& t : b.tensors()) {
      if (t.name.starts_with("model/")) {
        EXPECT_EQ(values(b, t.name), values(f, t.name)) << t.name << " of " << dir;
        ++weights;
      }
      const std::string m_prefix = "optimizer/exp_avg/";
      if (!t.name.starts_with(m_prefix)) continue;
      const std::vector<double> m = values(f, t.name),
                                v = values(
                                    f, "optimizer/exp_avg_sq/" + t.name.substr(m_prefix.size()));
      size_t off = 0;
      for (size_t i = 0; i < m.size(); ++i) off += std::abs(m[i] * m[i] - v[i]) > 1e-5 * v[i];
      EXPECT_EQ(off, 0u) << t.name << " of " << dir << ": not one step's moments from zero";
      moments += std::any_of(v.begin(), v.end(), [](double x) { return x > 0; });
    }
    EXPECT_GT(weights, 10);
    EXPECT_GT(moments, 10);
  };
  const CliRun one = run_tessera(init_args("ft", ""), dir_);
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_NE(one.out.find("checkpoint: weights from " + base +
                         " (step 10 of its run); the optimizer, schedule and sample order start "
                         "afresh at step 0 (--checkpoint.init)"),
            std::string::npos)
      << one.out;
  EXPECT_EQ(loss_fields(metrics("ft")).size(), 1u);
  expect_base_weights(step_dir("ft", 1));
  for (const char* layout : {"--parallel.tp 2", "--parallel.zero 1"}) {
    fs::remove_all(dir_ / "grid");
    const CliRun grid = run_mpi(2, init_args("grid", layout), dir_);
    ASSERT_EQ(grid.exit_code, 0) << layout << "\n" << grid.err;
    expect_base_weights(step_dir("grid", 1));
  }
  // Run again with more steps: it resumes its own checkpoint, not the weights of --checkpoint.init,
  // here another path; its config.ini and saves keep the one its weights began from.
  std::string more = init_args("ft", "");
  more.replace(more.find("--train.steps 1 "), 16, "--train.steps 2 ");
  const std::string nowhere = (dir_ / "nowhere").string();
  more.replace(more.find(base), base.size(), nowhere);
  const CliRun again = run_tessera(more, dir_);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("--checkpoint.init " + nowhere +
                           " is not read: this run resumes its own checkpoint"),
            std::string::npos)
      << again.out;
  std::ifstream config_in(dir_ / "ft" / "config.ini");
  EXPECT_NE(
      std::string(std::istreambuf_iterator<char>(config_in), {}).find("\ninit = " + base + "\n"),
      std::string::npos);
  const CheckpointReader resumed_saved = CheckpointReader::open(step_dir("ft", 2));
  EXPECT_NE(resumed_saved.meta().texts.at("config").find("\ninit = " + base + "\n"),
            std::string::npos);
  EXPECT_NE(again.out.find("resumed from " + step_dir("ft", 1)), std::string::npos) << again.out;
  // Refused: beside --checkpoint.resume PATH; another model's shape; a directory of checkpoints.
  const CliRun both = run_tessera(init_args("both", "--checkpoint.resume " + base), dir_);
  EXPECT_EQ(both.exit_code, 2) << both.err;
  EXPECT_NE(both.err.find("--checkpoint.init: expected no --checkpoint.resume PATH beside it"),
            std::string::npos)
      << both.err;
  std::string wider = init_args("wider", "");
  wider.replace(wider.find("--model.d_ff 64"), 15, "--model.d_ff 128");
  const CliRun shape = run_tessera(wider, dir_);
  EXPECT_EQ(shape.exit_code, 2) << shape.err;
  EXPECT_NE(shape.err.find("checkpoint " + base + ": saved with --model.d_ff 64"),
            std::string::npos)
      << shape.err;
  std::string all = init_args("all", "");
  all.replace(all.find(base), base.size(), (dir_ / "base" / "checkpoints").string());
  const CliRun dirs = run_tessera(all, dir_);
  EXPECT_EQ(dirs.exit_code, 2) << dirs.err;
  EXPECT_NE(dirs.err.find("--checkpoint.init " + (dir_ / "base" / "checkpoints").string() +
                          ": expected a checkpoint (a step directory)"),
            std::string::npos)
      << dirs.err;
}

// consumed_tokens counts what was trained on: a resume with another --model.seq_len (sinusoidal
// positions, allowed by --data.allow_change) adds its samples at its own length.
TEST_F(Checkpoints, ConsumedTokensCarryOverAResumeWithAnotherSequenceLength) {
  const std::string sinusoidal = "--model.pos sinusoidal --train.exit_after 10";
  ASSERT_EQ(run_tessera(args("run", sinusoidal), dir_).exit_code, 0);
  const auto tokens = [](const std::string& dir) {
    return CheckpointReader::open(dir).meta().ints.at("consumed_tokens");
  };
  EXPECT_EQ(tokens(step_dir("run", 10)), 10 * 8 * 16);
  std::string shorter = args("run", "--model.pos sinusoidal --data.allow_change true");
  shorter.replace(shorter.find("--model.seq_len 16"), 18, "--model.seq_len 8");
  const CliRun resumed = run_tessera(shorter, dir_);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("resumed from " + step_dir("run", 10)), std::string::npos)
      << resumed.out;
  EXPECT_EQ(tokens(step_dir("run", 20)), 10 * 8 * 16 + 10 * 8 * 8);
  EXPECT_EQ(resumed.out.find("none saved"), std::string::npos) << resumed.out;
}

// A blend resumed with other weights: the refusal names the corpora whose part differs, each
// weight as given (the key holds 0.69999999999999996 for 0.7), not the whole sequence.
TEST_F(Checkpoints, AChangedBlendIsRefusedNamingTheWeightsThatDiffer) {
  const std::string other = (dir_ / "other").string();
  write_synthetic_corpus(other, 64, 10, 100, 4);
  const auto blend = [&](const std::string& run, const char* a, const char* b) {
    std::string paths = "\"";  // appended piece by piece: GCC 12's bogus -Wrestrict
    paths.append(a).append(" ").append(corpus_).append(" ").append(b).append(" ");
    paths.append(other).append("\"");
    std::string args_ = args(run, "--train.exit_after 10");
    return args_.replace(args_.find(corpus_), corpus_.size(), paths);
  };
  ASSERT_EQ(run_tessera(blend("run", "0.7", "0.3"), dir_).exit_code, 0);
  const CliRun refused = run_tessera(blend("run", "0.5", "0.5"), dir_);
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  for (const char* part : {"weight 0.7\", this run's \"corpus 1 of 2: ",
                           "weight 0.3\", this run's \"corpus 2 of 2: ", "weight 0.5\""})
    EXPECT_NE(refused.err.find(part), std::string::npos) << part << "\n" << refused.err;
  EXPECT_EQ(refused.err.find("0.69999"), std::string::npos) << refused.err;
}

// What decides the samples a resumed run reads is checked before any rank starts: another
// sample sequence (here validation switched on, which holds samples out of the corpus) is
// refused unless --data.allow_change, and so are another seed and a micro-batch that does not
// divide the saved position. The corpus copied to another directory (as a job may stage it on
// node-local disk) is the same.
TEST_F(Checkpoints, ResumeIntoAnotherSampleSequenceIsRefusedUnlessAllowed) {
  ASSERT_EQ(run_tessera(args("run", "--train.exit_after 10"), dir_).exit_code, 0);
  const std::string saved = step_dir("run", 10);
  const auto with = [&](const std::string& run, const std::string& from, const std::string& to) {
    std::string a = args(run, "--checkpoint.resume " + saved);
    return a.replace(a.find(from), from.size(), to);
  };
  const std::string validation = "--train.eval_interval 5";
  const CliRun refused = run_tessera(with("valid", "--train.eval_interval 0", validation), dir_);
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  // Only the part that differs (the corpus' samples), not the shuffle's, which is the same.
  const std::string key = "corpus 1 of 1: ";
  EXPECT_NE(refused.err.find(saved + ": its run read another sample sequence: saved \"" + key),
            std::string::npos)
      << refused.err;
  EXPECT_NE(refused.err.find("\", this run's \"" + key), std::string::npos) << refused.err;
  EXPECT_EQ(refused.err.find("Feistel"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("--data.allow_change true to continue at sample 80 of this run's"),
            std::string::npos)
      << refused.err;
  EXPECT_EQ(std::count(refused.err.begin(), refused.err.end(), '\n'), 1) << refused.err;
  EXPECT_EQ(refused.out.find("step "), std::string::npos) << refused.out;

  const CliRun allowed = run_tessera(
      with("allowed", "--train.eval_interval 0", validation + " --data.allow_change true"), dir_);
  EXPECT_EQ(allowed.exit_code, 0) << allowed.err;
  EXPECT_NE(allowed.out.find("continuing at sample 80 of this run's sequence "
                             "(--data.allow_change)"),
            std::string::npos)
      << allowed.out;
  EXPECT_NE(allowed.out.find("step     20/20"), std::string::npos) << allowed.out;

  const fs::path staged = dir_ / "staged";
  fs::create_directories(staged);
  for (const char* ext : {".bin", ".idx"})
    fs::copy_file(corpus_ + ext, (staged / "copy").string() + ext);
  const CliRun same =
      run_tessera(with("staged", corpus_ + " ", (staged / "copy").string() + " "), dir_);
  EXPECT_EQ(same.exit_code, 0) << same.err;
  EXPECT_EQ(same.out.find("another sample sequence"), std::string::npos) << same.out;

  // A checkpoint of a tessera that shuffled otherwise, with no /meta/data: refused, then allowed.
  const fs::path older = dir_ / "older";
  fs::copy(saved, older, fs::copy_options::recursive);
  {
    const hid_t file = H5Fopen((older / "model.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(file, 0);
    EXPECT_GE(H5Ldelete(file, "/meta/data", H5P_DEFAULT), 0);
    H5Fclose(file);
  }
  write_manifest(older.string());
  std::string from_older = args("from_older", "--checkpoint.resume " + older.string());
  const CliRun unrecorded = run_tessera(from_older, dir_);
  EXPECT_EQ(unrecorded.exit_code, 2) << unrecorded.err;
  EXPECT_NE(unrecorded.err.find(older.string() +
                                ": its run read another sample sequence: saved "
                                "\"(not recorded)\", this run's \"order: a Feistel permutation "
                                "(12 rounds, SplitMix64) per corpus and epoch; " +
                                key),
            std::string::npos)
      << unrecorded.err;
  const CliRun continued = run_tessera(from_older + " --data.allow_change true", dir_);
  EXPECT_EQ(continued.exit_code, 0) << continued.err;

  // The blend's cursor at the position (/meta/data_taken): counts the blend cannot reach there
  // are refused before training, by name; without them (an earlier tessera's checkpoint) the
  // resume walks the blend to the position.
  const auto with_cursor = [&](const std::string& name, const char* text) {
    const fs::path copy = dir_ / name;
    fs::copy(saved, copy, fs::copy_options::recursive);
    const hid_t file = H5Fopen((copy / "model.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    EXPECT_GE(file, 0);
    EXPECT_GE(H5Ldelete(file, "/meta/data_taken", H5P_DEFAULT), 0);
    if (text) {
      const hid_t type = H5Tcopy(H5T_C_S1), space = H5Screate(H5S_SCALAR);
      H5Tset_size(type, std::strlen(text) + 1);
      const hid_t d =
          H5Dcreate2(file, "/meta/data_taken", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      EXPECT_GE(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, text), 0);
      H5Dclose(d);
      H5Sclose(space);
      H5Tclose(type);
    }
    H5Fclose(file);
    write_manifest(copy.string());
    return run_tessera(args(name + "_run", "--checkpoint.resume " + copy.string()), dir_);
  };
  for (const char* bad : {"81", "80x", "40 40"}) {
    const CliRun r = with_cursor(std::string("cursor_") + (bad[0] == '4' ? "two" : bad), bad);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_NE(r.err.find(": /meta/data_taken: expected "), std::string::npos) << r.err;
    EXPECT_EQ(r.out.find("step "), std::string::npos) << r.out;
  }
  const CliRun walked = with_cursor("uncursored", nullptr);
  EXPECT_EQ(walked.exit_code, 0) << walked.err;
  EXPECT_NE(walked.out.find("step     20/20"), std::string::npos) << walked.out;

  const CliRun seed =
      run_tessera(with("seed", "--train.threads 1", "--train.threads 1 --train.seed 9"), dir_);
  EXPECT_EQ(seed.exit_code, 2) << seed.err;
  EXPECT_NE(seed.err.find(saved + ": saved by a run of --train.seed 1337, found --train.seed 9"),
            std::string::npos)
      << seed.err;
  const CliRun batch = run_tessera(with("batch", "--train.global_batch 8 --train.micro_batch 2",
                                        "--train.global_batch 48 --train.micro_batch 48"),
                                   dir_);
  EXPECT_EQ(batch.exit_code, 2) << batch.err;
  EXPECT_NE(batch.err.find(saved + ": its run consumed 80 samples, which --train.micro_batch 48 "
                                   "x 1 data-parallel rank = 48 does not divide"),
            std::string::npos)
      << batch.err;
  // The saving run's global batch (8) divides its position, and is given as an example.
  EXPECT_NE(batch.err.find("(the saved run's --train.global_batch 8 does)"), std::string::npos)
      << batch.err;
}

// A rollback: --checkpoint.resume of an earlier step of the run's own directory, given as a
// shell completes it ("DIR/"), goes ahead; --checkpoint.keep then keeps this run's newest and
// leaves the steps it rolled back from, which its saves replace as they reach them.
TEST_F(Checkpoints, RollbackToAnEarlierStepKeepsItsOwnNewestSteps) {
  ASSERT_EQ(run_tessera(args("run", "", 10, 2), dir_).exit_code, 0);
  const CliRun back = run_tessera(
      args("run", "--checkpoint.resume " + step_dir("run", 4) + "/ --checkpoint.keep 2", 8, 2),
      dir_);
  ASSERT_EQ(back.exit_code, 0) << back.err;
  EXPECT_NE(back.out.find("resumed from " + step_dir("run", 4) + "/: step 4"), std::string::npos)
      << back.out;
  for (const int step : {2, 4}) EXPECT_FALSE(fs::exists(step_dir("run", step))) << step;
  for (const int step : {6, 8, 10}) EXPECT_TRUE(fs::exists(step_dir("run", step))) << step;
  EXPECT_EQ(read_latest((dir_ / "run" / "checkpoints").string()), "step_00000008");
  // An unfinished save of the run (whole here, as one killed between its MANIFEST and its
  // rename leaves it) is refused by name: the run removes its .tmp saves before it loads.
  const std::string unfinished = step_dir("run", 12) + ".tmp";
  fs::copy(step_dir("run", 10), unfinished, fs::copy_options::recursive);
  const CliRun tmp = run_tessera(args("run", "--checkpoint.resume " + unfinished, 14, 2), dir_);
  EXPECT_EQ(tmp.exit_code, 2) << tmp.err;
  EXPECT_NE(tmp.err.find("--checkpoint.resume " + unfinished +
                         ": expected a step directory, found an unfinished save (.tmp)"),
            std::string::npos)
      << tmp.err;
  EXPECT_TRUE(fs::exists(unfinished));
}

// A rollback that stops before its first save (here a run with no interval saves) leaves
// `latest` naming the step it resumed, so that `auto` continues the rollback, not the steps it
// turned away from.
TEST_F(Checkpoints, RollbackThatStopsBeforeItsFirstSaveIsWhereAutoResumes) {
  ASSERT_EQ(run_tessera(args("run", "", 10, 2), dir_).exit_code, 0);
  const std::string root = (dir_ / "run" / "checkpoints").string();
  ASSERT_EQ(read_latest(root), "step_00000010");
  const CliRun back =
      run_tessera(args("run", "--checkpoint.resume " + step_dir("run", 4), 5, 0), dir_);
  ASSERT_EQ(back.exit_code, 0) << back.err;
  EXPECT_NE(back.out.find("checkpoint: " + root +
                          "/latest now names step_00000004, the step this run resumed (it named "
                          "step_00000010)"),
            std::string::npos)
      << back.out;
  EXPECT_EQ(read_latest(root), "step_00000004");
  const CliRun resumed = run_tessera(args("run", "", 6, 0), dir_);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("resumed from " + root + "/step_00000004: step 4"), std::string::npos)
      << resumed.out;
  EXPECT_EQ(resumed.out.find("latest now names"), std::string::npos) << resumed.out;
}

// Checkpoints that a fresh start would overwrite (the same step numbers) or --checkpoint.keep
// delete are never replaced silently: `auto` finding none usable stops, and so does `none` in a
// directory that holds some. Nothing on disk changes.
TEST_F(Checkpoints, FreshStartOverCheckpointsOnDiskIsRefused) {
  ASSERT_EQ(run_tessera(args("run", "", 10, 5), dir_).exit_code, 0);
  const auto config_text = [&] {
    std::ifstream in(dir_ / "run" / "config.ini");
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string config = config_text();
  const CliRun none =
      run_tessera(args("run", "--checkpoint.resume none --checkpoint.keep 1", 10, 5), dir_);
  EXPECT_EQ(none.exit_code, 2) << none.err;
  EXPECT_NE(none.err.find("--checkpoint.resume none"), std::string::npos) << none.err;
  EXPECT_NE(none.err.find("already holds 2 checkpoint(s) (newest step_00000010)"),
            std::string::npos)
      << none.err;
  EXPECT_EQ(none.out.find("step "), std::string::npos) << none.out;
  // Another run's checkpoint by PATH, into this run directory: refused likewise. (An earlier
  // step of this run directory itself is a rollback, and goes ahead.)
  ASSERT_EQ(run_tessera(args("other", "", 10, 5), dir_).exit_code, 0);
  const CliRun other =
      run_tessera(args("run", "--checkpoint.resume " + step_dir("other", 5), 10, 5), dir_);
  EXPECT_EQ(other.exit_code, 2) << other.err;
  EXPECT_NE(other.err.find("already holds 2 checkpoint(s)"), std::string::npos) << other.err;
  EXPECT_EQ(config_text(), config) << "a refused run rewrote config.ini";

  for (const int step : {5, 10}) fs::remove(fs::path(step_dir("run", step)) / "MANIFEST");
  const CliRun automatic = run_tessera(args("run", "--checkpoint.keep 1", 10, 5), dir_);
  EXPECT_EQ(automatic.exit_code, 2) << automatic.err;
  EXPECT_NE(automatic.err.find("holds 2 checkpoint(s), none usable"), std::string::npos)
      << automatic.err;
  EXPECT_NE(automatic.err.find("skipping " + step_dir("run", 5)), std::string::npos)
      << automatic.err;
  EXPECT_EQ(automatic.out.find("step "), std::string::npos) << automatic.out;
  EXPECT_TRUE(fs::exists(step_dir("run", 5)));
  EXPECT_TRUE(fs::exists(fs::path(step_dir("run", 10)) / "shards"));
  EXPECT_EQ(config_text(), config) << "a refused run rewrote config.ini";
  // A stale `latest` alone (no step directory) is nothing to overwrite: the run starts afresh.
  for (const int step : {5, 10}) fs::remove_all(step_dir("run", step));
  const CliRun fresh = run_tessera(args("run", "", 10, 5), dir_);
  EXPECT_EQ(fresh.exit_code, 0) << fresh.err;
  EXPECT_NE(fresh.out.find("latest checkpoint is not usable"), std::string::npos) << fresh.out;
}

// A run resumed from a checkpoint older than its metrics (the newer checkpoint was lost, as
// after a crash during its save) moves the records of the steps it redoes aside: metrics.jsonl
// holds one record per step, metrics.jsonl.after_step_5 the records the lost run wrote.
TEST_F(Checkpoints, ResumedRunSetsAsideTheMetricsOfTheStepsItRedoes) {
  ASSERT_EQ(run_tessera(args("run", "", 10, 5), dir_).exit_code, 0);
  fs::remove_all(step_dir("run", 10));
  const CliRun resumed = run_tessera(args("run", "", 10, 5), dir_);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("metrics: 5 records of steps after 5, from a run that went on past "
                             "its last checkpoint, moved from " +
                             metrics("run").string() + " to " + metrics("run").string() +
                             ".after_step_5"),
            std::string::npos)
      << resumed.out;
  const auto steps_of = [](const fs::path& file) {
    std::vector<long long> steps;
    std::ifstream in(file);
    for (std::string line; std::getline(in, line);) {
      long long step = 0;
      if (std::sscanf(line.c_str(), "{\"step\": %lld", &step) == 1) steps.push_back(step);
    }
    return steps;
  };
  EXPECT_EQ(steps_of(metrics("run")), (std::vector<long long>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(steps_of(metrics("run").string() + ".after_step_5"),
            (std::vector<long long>{6, 7, 8, 9, 10}));
}

// A prompt whose ids the model does not have (the byte-level tokenizer's 257 against a vocabulary
// of 67) would embed as zeros: refused by name, before training and by `tessera sample`.
TEST_F(Checkpoints, PromptBeyondTheVocabularyIsRefusedBeforeTrainingAndSampling) {
  const std::string message =
      "--sample.prompt: its token 0 is id 104 (byte-level), beyond --model.vocab_size 67";
  const CliRun train = run_tessera(args("run", "--sample.tokens 5 --sample.prompt hi"), dir_);
  EXPECT_EQ(train.exit_code, 2) << train.err;
  EXPECT_NE(train.err.find(message), std::string::npos) << train.err;
  EXPECT_EQ(train.out.find("step "), std::string::npos) << train.out;
  ASSERT_EQ(run_tessera(args("ok", "", 10), dir_).exit_code, 0);
  const CliRun sampled =
      run_tessera("sample --checkpoint " + step_dir("ok", 10) + " --prompt hi", dir_);
  EXPECT_EQ(sampled.exit_code, 2) << sampled.err;
  EXPECT_NE(sampled.err.find(message), std::string::npos) << sampled.err;
}

// What a command printed from its "sample (" line on: the sample's header, prompt and text.
std::string sample_text(const CliRun& r) {
  const size_t at = r.out.find("sample (");
  return at == std::string::npos ? "" : r.out.substr(at);
}

// `tessera sample` rebuilds the model from the checkpoint's config and weights: with the same
// seed it writes exactly the text the training run sampled at its end, from the checkpoint
// named or from the newest of a run's checkpoints/, with the prompt given again or the one
// saved in the config (spaces at its ends, a '#', a newline, a NUL and a carriage return, which
// an INI file or a C string would trim, cut or break, come back as they were, and the NUL is
// printed, not taken for the text's end); and the same greedy text on one rank and on TP 2 x
// PP 2 (any layout loads any checkpoint); a checkpoint saved on TP 2 samples on one rank.
TEST_F(Checkpoints, SampleFromACheckpointWritesTheTextOfTheRunThatSavedIt) {
  const std::string prompt = "' 1#2\\n3\\x00\\x0D '";
  const CliRun trained =
      run_tessera(args("run", " --sample.tokens 30 --sample.prompt " + prompt), dir_);
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  const std::string text = sample_text(trained);
  ASSERT_NE(text.find("sample (30 tokens"), std::string::npos) << trained.out;
  const std::string decoded(":\n 1#2\n3\0\r ", 11);
  ASSERT_NE(text.find(decoded), std::string::npos) << text;                  // the prompt, decoded
  EXPECT_GT(text.size(), text.find(decoded) + decoded.size() + 20) << text;  // and the rest

  const std::string checkpoints = (dir_ / "run" / "checkpoints").string();
  const CliRun from_step = run_tessera(
      "sample --checkpoint " + step_dir("run", 20) + " --prompt " + prompt + " --sample.tokens 30",
      dir_);
  ASSERT_EQ(from_step.exit_code, 0) << from_step.err;
  EXPECT_EQ(sample_text(from_step), text);
  // The prompt and length were saved in the config too; the newest checkpoint is step 20.
  const CliRun from_root = run_tessera("sample --checkpoint " + checkpoints, dir_);
  ASSERT_EQ(from_root.exit_code, 0) << from_root.err;
  EXPECT_EQ(sample_text(from_root), text);
  EXPECT_NE(from_root.out.find(step_dir("run", 20)), std::string::npos) << from_root.out;

  const std::string greedy = "sample --checkpoint " + checkpoints + " --sample.top_k 1";
  const CliRun one = run_tessera(greedy, dir_);
  const CliRun grid = run_mpi(4, greedy + " --parallel.tp 2 --parallel.pp 2", dir_);
  ASSERT_EQ(one.exit_code, 0) << one.err;
  ASSERT_EQ(grid.exit_code, 0) << grid.err;
  EXPECT_NE(grid.out.find("TP 2 x PP 2"), std::string::npos) << grid.out;
  EXPECT_NE(sample_text(one), "");
  EXPECT_EQ(sample_text(grid), sample_text(one));

  // The layout is the sampling ranks' own, not the saving run's.
  ASSERT_EQ(run_mpi(2, args("tp2", "--parallel.tp 2", 5, 5), dir_).exit_code, 0);
  const CliRun tp2 = run_tessera("sample --checkpoint " + step_dir("tp2", 5), dir_);
  ASSERT_EQ(tp2.exit_code, 0) << tp2.err;
  EXPECT_NE(tp2.out.find("1 rank, TP 1 x PP 1"), std::string::npos) << tp2.out;
}

// tessera eval reads a corpus as training's validation does: over the same samples, a checkpoint
// gives the validation loss its run logged at that step, on one rank, on TP 2 x PP 2 and on
// PP 2 x DP 2; without --data.path, the run's own validation samples (here its held-out split).
TEST_F(Checkpoints, EvalOfACheckpointGivesTheValidationLossItsRunLogged) {
  std::string train = args("run", "--data.valid_path " + corpus_ + " --train.eval_batches 2");
  train.replace(train.find("--train.eval_interval 0"), 23, "--train.eval_interval 10");
  const CliRun run = run_tessera(train, dir_);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const size_t at = run.out.find("validation | step 10 | loss ");
  ASSERT_NE(at, std::string::npos) << run.out;
  const double logged = std::stod(run.out.substr(at + 28, 6));
  const auto loss_of = [](const CliRun& r) {
    const size_t k = r.out.find("eval loss ");
    return k == std::string::npos ? -1.0 : std::stod(r.out.substr(k + 10, 6));
  };
  const std::string eval =
      "eval --checkpoint " + step_dir("run", 10) + " --data.path " + corpus_ + " --eval.samples 16";
  const CliRun one = run_tessera(eval, dir_);
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_NE(one.out.find("eval: 16 samples of 16+1 tokens from " + corpus_), std::string::npos)
      << one.out;
  EXPECT_EQ(loss_of(one), logged) << one.out;
  for (const char* layout : {" --parallel.tp 2 --parallel.pp 2", " --parallel.pp 2"}) {
    const CliRun grid = run_mpi(4, eval + layout, dir_);
    ASSERT_EQ(grid.exit_code, 0) << grid.err;
    EXPECT_NEAR(loss_of(grid), logged, 2e-4) << layout << "\n" << grid.out;
  }
  // A micro-batch that does not divide the saving run's global batch (8): 15 of the 16 samples.
  const CliRun threes = run_tessera(eval + " --train.micro_batch 3", dir_);
  ASSERT_EQ(threes.exit_code, 0) << threes.err;
  EXPECT_NE(threes.out.find("eval: 15 samples"), std::string::npos) << threes.out;
  // A blend is read as one corpus, each sample once, whatever its weights.
  const std::string other = (dir_ / "other").string();
  write_synthetic_corpus(other, 64, 10, 100, 4);
  const std::string base = "eval --checkpoint " + step_dir("run", 10) + " --data.path ";
  const CliRun weighted = run_tessera(base + "\"0.9 " + corpus_ + " 0.1 " + other + "\"", dir_);
  const CliRun listed = run_tessera(base + "\"" + corpus_ + " " + other + "\"", dir_);
  ASSERT_EQ(weighted.exit_code, 0) << weighted.err;
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(weighted.out.find("eval: 560 samples"), std::string::npos) << weighted.out;
  EXPECT_GT(loss_of(weighted), 0) << weighted.out;  // -1: no loss printed
  EXPECT_EQ(loss_of(weighted), loss_of(listed)) << weighted.out << listed.out;
  // --data.path from a --config file is a corpus given here, as on the command line (it read
  // the saving run's --data.valid_path instead).
  const fs::path eval_ini = dir_ / "eval.ini";
  std::ofstream(eval_ini) << "[data]\npath = " << other << "\n";
  const CliRun from_file = run_tessera(
      "eval --checkpoint " + step_dir("run", 10) + " --config " + eval_ini.string(), dir_);
  ASSERT_EQ(from_file.exit_code, 0) << from_file.err;
  EXPECT_NE(from_file.out.find(" samples of 16+1 tokens from " + other + "\n"), std::string::npos)
      << from_file.out;
  // A run that validates on the held-out end of its corpus: eval reads those samples by default.
  std::string held = args("held", "--data.valid_fraction 0.05 --train.eval_batches 2");
  held.replace(held.find("--train.eval_interval 0"), 23, "--train.eval_interval 10");
  const CliRun held_run = run_tessera(held, dir_);
  ASSERT_EQ(held_run.exit_code, 0) << held_run.err;
  const size_t held_at = held_run.out.find("validation | step 10 | loss ");
  ASSERT_NE(held_at, std::string::npos) << held_run.out;
  const CliRun held_eval =
      run_tessera("eval --checkpoint " + step_dir("held", 10) + " --eval.samples 16", dir_);
  ASSERT_EQ(held_eval.exit_code, 0) << held_eval.err;
  EXPECT_NE(held_eval.out.find("from the held-out end (--data.valid_fraction 0.05) of " + corpus_),
            std::string::npos)
      << held_eval.out;
  EXPECT_EQ(loss_of(held_eval), std::stod(held_run.out.substr(held_at + 28, 6))) << held_eval.out;
  EXPECT_EQ(held_eval.out.find("which its run trained on"), std::string::npos) << held_eval.out;
  EXPECT_EQ(held_eval.out.find("eval: note:"), std::string::npos) << held_eval.out;
  // All the held-out samples by default, which the run's validation did not read: said, and how
  // to get the loss it logged.
  const CliRun held_all = run_tessera("eval --checkpoint " + step_dir("held", 10), dir_);
  ASSERT_EQ(held_all.exit_code, 0) << held_all.err;
  EXPECT_NE(held_all.out.find("eval: note: the saving run's validation read its first 16 samples "
                              "(--train.eval_batches 2 x --train.global_batch 8); "
                              "--eval.samples 16 gives its loss"),
            std::string::npos)
      << held_all.out;
  // A run that did not evaluate held nothing out: said.
  const CliRun trained_on = run_tessera(
      "eval --checkpoint " + step_dir("held", 10) + " --eval.samples 16 --train.eval_interval 0",
      dir_);
  ASSERT_EQ(trained_on.exit_code, 0) << trained_on.err;
  EXPECT_NE(trained_on.out.find(
                "which its run trained on (--train.eval_interval 0: nothing was held out)"),
            std::string::npos)
      << trained_on.out;
  EXPECT_EQ(trained_on.out.find("eval: note:"), std::string::npos) << trained_on.out;
  // A larger held-out end than the run's reaches into samples it trained on: said.
  const CliRun larger = run_tessera(
      "eval --checkpoint " + step_dir("held", 10) + " --eval.samples 16 --data.valid_fraction 0.2",
      dir_);
  ASSERT_EQ(larger.exit_code, 0) << larger.err;
  EXPECT_NE(larger.out.find("from the held-out end (--data.valid_fraction 0.2) of " + corpus_ +
                            ", more than its run held out (--data.valid_fraction 0.05): it "
                            "trained on the rest"),
            std::string::npos)
      << larger.out;
  // Bad input: more samples than the corpus holds; fewer than a micro-batch; a micro-batch of
  // none, named as given (the global batch, which eval sets from it, was named).
  const CliRun none = run_tessera(eval + " --train.micro_batch 0", dir_);
  EXPECT_EQ(none.exit_code, 2) << none.err;
  EXPECT_NE(none.err.find("--train.micro_batch: expected at least 1 sequence, found 0"),
            std::string::npos)
      << none.err;
  const CliRun many = run_tessera(eval + "0000", dir_);
  EXPECT_EQ(many.exit_code, 2) << many.err;
  EXPECT_NE(many.err.find("--eval.samples: expected at most the "), std::string::npos) << many.err;
  const CliRun few = run_tessera(eval.substr(0, eval.size() - 2) + "1", dir_);
  EXPECT_EQ(few.exit_code, 2) << few.err;
  EXPECT_NE(
      few.err.find("1 samples of " + corpus_ + " make no micro-batch of --train.micro_batch 2"),
      std::string::npos)
      << few.err;
}

// tessera eval opens its corpora as tessera train does: the ranks share the token-id check of a
// corpus, whose range is then recorded in the saving run's data cache (or --data.cache_dir when
// given), so that the next eval or run reads no token for it; eval creates no directory it was
// not given; a corpus listed twice, and ranks that opened other corpora, are refused.
TEST_F(Checkpoints, EvalChecksTokenIdsTogetherAndRecordsThemAsTrainingDoes) {
  ASSERT_EQ(run_tessera(args("run", "", 2, 2), dir_).exit_code, 0);
  const fs::path cache = dir_ / "run" / "data_cache";
  const std::vector<fs::path> trained = id_records(cache);
  ASSERT_EQ(trained.size(), 1u);  // training's record of corpus_
  const std::string other = (dir_ / "other").string();
  write_synthetic_corpus(other, 64, 10, 100, 4);
  const std::string eval = "eval --checkpoint " + step_dir("run", 2) + " --eval.samples 8";
  // On two ranks, each checks half of the new corpus; the record is the range of the whole.
  const CliRun two = run_mpi(2, eval + " --data.path " + other, dir_);
  ASSERT_EQ(two.exit_code, 0) << two.err;
  std::vector<fs::path> now = id_records(cache);
  ASSERT_EQ(now.size(), 2u);
  const fs::path added = now[0] == trained[0] ? now[1] : now[0];
  expect_record_of_whole_corpus(added, other);
  // The next eval trusts the record: an id beyond the vocabulary written in place at the corpus'
  // end (which the 8 samples do not reach), with the file's time put back, goes unseen, and
  // the loss is the same. Without the record the check finds it.
  struct stat before {};
  ASSERT_EQ(::stat((other + ".bin").c_str(), &before), 0);
  {
    std::fstream bin(other + ".bin", std::ios::in | std::ios::out | std::ios::binary);
    bin.seekp(-2, std::ios::end);
    const uint16_t beyond = 100;
    bin.write(reinterpret_cast<const char*>(&beyond), 2);
  }
  const timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, (other + ".bin").c_str(), times, 0), 0);
  const CliRun again = run_mpi(2, eval + " --data.path " + other, dir_);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  const auto loss_line = [](const std::string& out) { return out.substr(out.find("eval loss ")); };
  EXPECT_EQ(loss_line(again.out), loss_line(two.out));
  fs::remove(added);
  const CliRun unrecorded = run_tessera(eval + " --data.path " + other, dir_);
  EXPECT_EQ(unrecorded.exit_code, 2) << unrecorded.err;
  EXPECT_NE(unrecorded.err.find("has id 100, expected ids in [0, --model.vocab_size 67)"),
            std::string::npos)
      << unrecorded.err;
  // --data.cache_dir given to eval is created and used; the saving run's cache, once gone, is
  // not made again.
  fs::remove_all(cache);
  const fs::path given = dir_ / "eval_cache";
  const std::string own = eval + " --data.path " + corpus_;
  ASSERT_EQ(run_tessera(own + " --data.cache_dir " + given.string(), dir_).exit_code, 0);
  EXPECT_EQ(id_records(given).size(), 1u);
  ASSERT_EQ(run_tessera(own, dir_).exit_code, 0);
  EXPECT_FALSE(fs::exists(cache));
  // Ids beyond the vocabulary: the rank whose half holds the first names it; every rank exits 2.
  const std::string wide = (dir_ / "wide").string();
  write_synthetic_corpus(wide, 100, 10, 100, 5);
  const CliRun bad = run_mpi(2, eval + " --data.path " + wide, dir_);
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  EXPECT_NE(bad.err.find(wide + ".bin"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("; the ranks share this check, this one read tokens ["), std::string::npos)
      << bad.err;
  // A corpus listed twice.
  const CliRun twice = run_tessera(eval + " --data.path \"" + corpus_ + " " + corpus_ + "\"", dir_);
  EXPECT_EQ(twice.exit_code, 2) << twice.err;
  EXPECT_NE(twice.err.find("--data.path: " + corpus_), std::string::npos) << twice.err;
  EXPECT_NE(twice.err.find(" again; give each corpus once"), std::string::npos) << twice.err;
  // Ranks that opened other corpora (here each was given its own --data.path).
  const std::string third = (dir_ / "third").string();
  write_synthetic_corpus(third, 64, 10, 100, 6);
  const CliRun split = run_mpi(1,
                               eval + " --data.path " + corpus_ + " : -n 1 " + TESSERA_BIN + " " +
                                   eval + " --data.path " + third,
                               dir_);
  EXPECT_EQ(split.exit_code, 2) << split.err;
  EXPECT_NE(split.err.find("--data.path: the ranks did not open the same corpora"),
            std::string::npos)
      << split.err;
  EXPECT_EQ(split.out.find("eval loss"), std::string::npos) << split.out;
}

// sample and eval read the paths of the checkpoint's config.ini from the directory they run in:
// a relative one not found there is said to be the saving run's, and where it was looked for.
TEST_F(Checkpoints, ARelativePathOfTheSavingRunNotFoundHereIsSaidToBeIts) {
  std::string train = args("rel", "", 2, 2);
  train.replace(train.find(corpus_), corpus_.size(), "corpus");
  const CliRun run = run_tessera_with("cd " + dir_.string() + " && " TESSERA_BIN, train, dir_);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const std::string saved = (dir_ / "rel" / "checkpoints").string();
  const CliRun here = run_tessera_with("cd " + dir_.string() + " && " TESSERA_BIN,
                                       "eval --checkpoint " + saved, dir_);
  EXPECT_EQ(here.exit_code, 0) << here.err;
  fs::create_directories(dir_ / "elsewhere");
  const CliRun away = run_tessera_with("cd " + (dir_ / "elsewhere").string() + " && " TESSERA_BIN,
                                       "eval --checkpoint " + saved, dir_);
  EXPECT_EQ(away.exit_code, 2) << away.err;
  EXPECT_NE(away.err.find("corpus corpus.idx: no such file"), std::string::npos) << away.err;
  EXPECT_NE(away.err.find("(--data.path corpus is the saving run's, from the checkpoint's "
                          "config.ini; relative paths are read from this directory, " +
                          (dir_ / "elsewhere").string() +
                          ", which may not be the one it ran in; give --data.path)"),
            std::string::npos)
      << away.err;
  // Given here, the path is this command's own: no such words.
  const CliRun given = run_tessera_with("cd " + (dir_ / "elsewhere").string() + " && " TESSERA_BIN,
                                        "eval --checkpoint " + saved + " --data.path corpus", dir_);
  EXPECT_EQ(given.exit_code, 2) << given.err;
  EXPECT_EQ(given.err.find("is the saving run's"), std::string::npos) << given.err;
}

// Bad input to `tessera sample`: one message naming what is wrong, exit code 2, nothing sampled.
// A checkpoint whose weights hold a NaN and an infinity (its checksums to match: a diverged save
// or a hand edit) is refused, naming the tensor, by sample, eval and a resume, which would have
// printed noise, a loss of nan and a run of skipped steps.
TEST_F(Checkpoints, NonFiniteWeightsAreRefusedWhenLoaded) {
  ASSERT_EQ(run_tessera(args("run", "", 10), dir_).exit_code, 0);
  const fs::path bad = dir_ / "bad";
  fs::copy(step_dir("run", 10), bad, fs::copy_options::recursive);
  {
    const hid_t file =
        H5Fopen((bad / "shards" / "rank_00000.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(file, 0);
    const hid_t d = H5Dopen2(file, "/model/final_norm/weight", H5P_DEFAULT);
    ASSERT_GE(d, 0);
    std::vector<float> w(32);
    EXPECT_GE(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, w.data()), 0);
    w[3] = std::numeric_limits<float>::quiet_NaN();
    w[7] = -std::numeric_limits<float>::infinity();
    EXPECT_GE(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, w.data()), 0);
    H5Dclose(d);
    H5Fclose(file);
  }
  write_manifest(bad.string());
  const std::string said =
      "checkpoint " + bad.string() + ": model/final_norm/weight holds 2 NaN or infinite values";
  for (const std::string& command : {"sample --checkpoint " + bad.string(),
                                     "eval --checkpoint " + bad.string() + " --eval.samples 4",
                                     args("resumed", "--checkpoint.resume " + bad.string())}) {
    const CliRun r = run_tessera(command, dir_);
    EXPECT_EQ(r.exit_code, 2) << command << "\n" << r.err;
    EXPECT_NE(r.err.find(said), std::string::npos) << command << "\n" << r.err;
  }
}

TEST_F(Checkpoints, SampleRefusesMissingDamagedOrReshapedCheckpoints) {
  ASSERT_EQ(run_tessera(args("run"), dir_).exit_code, 0);
  const auto expect_refused = [&](const std::string& sample_args, const std::string& named) {
    const CliRun r = run_tessera("sample " + sample_args, dir_);
    EXPECT_EQ(r.exit_code, 2) << sample_args << "\n" << r.err;
    EXPECT_NE(r.err.find(named), std::string::npos) << sample_args << "\n" << r.err;
    EXPECT_EQ(r.out.find("sample ("), std::string::npos) << r.out;
  };
  const CliRun help = run_tessera("sample --help", dir_);
  EXPECT_EQ(help.exit_code, 0) << help.err;
  EXPECT_NE(help.out.find("tessera sample --checkpoint DIR"), std::string::npos) << help.out;
  expect_refused("--prompt 1", "--checkpoint");
  const std::string nowhere = (dir_ / "nowhere").string();
  expect_refused("--checkpoint " + nowhere, nowhere);
  // The run directory for its checkpoints/: named.
  const std::string run = (dir_ / "run").string();
  expect_refused("--checkpoint " + run, "--checkpoint " + run +
                                            ": expected a checkpoint (a step_N directory with "
                                            "model.h5) or a directory of them, found a run "
                                            "directory; give its " +
                                            run + "/checkpoints");
  // A run directory whose run saved nothing: said so, with the option that saves.
  ASSERT_EQ(run_tessera(args("unsaved", "", 2, 0), dir_).exit_code, 0);
  const std::string unsaved = (dir_ / "unsaved").string();
  expect_refused("--checkpoint " + unsaved,
                 "found a run directory without checkpoints/ (its run saved none: "
                 "--checkpoint.interval 0)");
  const std::string saved = step_dir("run", 20);
  expect_refused("--checkpoint " + saved + " --model.layers 2", "--model.layers");
  expect_refused("--checkpoint " + saved + " --parallel.tp 3", "--parallel.tp");
  // Model chunks belong to training's schedule: given here, refused rather than ignored.
  expect_refused("--checkpoint " + saved + " --parallel.virtual_stages 2",
                 "--parallel.virtual_stages: tessera sample runs the model stage after stage");
  const fs::path chunked = dir_ / "chunked.ini";
  std::ofstream(chunked) << "[parallel]\nvirtual_stages = 2\n";
  expect_refused("--checkpoint " + saved + " --config " + chunked.string(),
                 "--parallel.virtual_stages: tessera sample");
  // model.h5 given for its directory, and a step directory without it: each said as it is.
  expect_refused("--checkpoint " + saved + "/model.h5",
                 "expected a directory (step_N), found a file");
  const std::string hollow = step_dir("run", 10);
  fs::remove(fs::path(hollow) / "model.h5");
  expect_refused("--checkpoint " + hollow, "model.h5: listed in MANIFEST but missing");
  fs::path shard;
  for (const auto& e : fs::directory_iterator(fs::path(saved) / "shards")) shard = e.path();
  fs::resize_file(shard, fs::file_size(shard) - 10);
  expect_refused("--checkpoint " + saved, shard.filename().string());
}

}  // namespace
}  // namespace tessera
