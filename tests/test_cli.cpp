// The `tessera` binary as a user runs it: bad input gets one clear message naming the option or
// file and exit code 2 (never a crash), --help lists every option with its default, and two runs
// with the same seed write bitwise-identical losses to metrics.jsonl.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <array>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>

#include "core/device.h"
#include "io/indexed_dataset.h"
#include "io/llmc_shard.h"
#include "io/token_corpus.h"
#include "tests/cli_support.h"
#include "tests/temp_dir.h"

namespace fs = std::filesystem;

namespace tessera {
namespace {

using namespace test_support;

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test_support::fresh_test_dir("tessera_cli");
    corpus_ = (dir_ / "corpus").string();
    IndexedDatasetWriter w(corpus_, DType::U16);
    std::mt19937_64 rng(1);
    for (int d = 0; d < 40; ++d) {
      std::vector<int32_t> doc(50 + rng() % 50);
      for (auto& t : doc) t = static_cast<int32_t>(rng() % 200);
      doc.push_back(256);
      w.add_document(doc);
    }
    w.finish();
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A tiny model. An option may be given once, so tests that vary one pass it here.
  std::string tiny_args(const std::string& heads = "2", std::string corpus = "",
                        const std::string& d_model = "32") const {
    return "train --data.path " + (corpus.empty() ? corpus_ : corpus) + " --run.dir " +
           (dir_ / "run").string() + " --model.d_model " + d_model +
           " --model.layers 2 --model.heads " + heads +
           " --model.d_ff 64"
           " --model.seq_len 16 --train.global_batch 4 --train.micro_batch 2 --train.threads 2";
  }

  // DIR/NAME, an llm.c shard of 3000 tokens: ids first, first + 13 mod span, ...
  std::string llmc_shard(const std::string& name, int first, int span) const {
    std::vector<uint16_t> ids(3000);
    for (size_t i = 0; i < ids.size(); ++i)
      ids[i] = static_cast<uint16_t>(first + static_cast<int>(i * 13 % static_cast<size_t>(span)));
    const std::string shard = (dir_ / name).string();
    write_llmc_shard(shard, ids);
    return shard;
  }

  // The activations of the first memory estimate a run or check prints (its start's line), the
  // MB figure as printed.
  static std::string activation_mb(const CliRun& r) {
    const size_t end = r.out.find(" MB of activations");
    if (end == std::string::npos) return "none in: " + r.out;
    const size_t at = r.out.rfind(' ', end - 1) + 1;
    return r.out.substr(at, end - at);
  }

  // One message on one line naming `what`, exit code 2, no crash or internal error.
  void expect_clear_error(const CliRun& r, const std::string& what) {
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_NE(r.err.find(what), std::string::npos) << "message does not name " << what << ":\n"
                                                   << r.err;
    EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }

  // `args` (whose --run.dir is dir_/run) on one process, the reference of the layouts: it must
  // exit 0 having logged `steps` losses, which it returns; `run` gets its output when given.
  std::vector<double> one_rank_losses(const std::string& args, size_t steps,
                                      CliRun* run = nullptr) {
    const CliRun single = run_tessera(args, dir_);
    EXPECT_EQ(single.exit_code, 0) << single.err;
    std::vector<double> losses = losses_of(dir_ / "run" / "metrics.jsonl");
    EXPECT_EQ(losses.size(), steps) << single.err;
    if (run) *run = single;
    return losses;
  }

  // `args` (whose --run.dir is dir_/run) under mpirun on `ranks` ranks: it must exit 0 with the
  // losses `expected` (of one rank), each within 1e-5 relative. The run directory is removed
  // first, so that each run starts fresh.
  CliRun expect_losses_of(const std::vector<double>& expected, int ranks, const std::string& args) {
    fs::remove_all(dir_ / "run");
    CliRun r = run_mpi(ranks, args, dir_);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const std::vector<double> got = losses_of(dir_ / "run" / "metrics.jsonl");
    EXPECT_FALSE(expected.empty());
    EXPECT_EQ(got.size(), expected.size()) << r.out;
    for (size_t i = 0; i < std::min(got.size(), expected.size()); ++i)
      EXPECT_NEAR(got[i], expected[i], 1e-5 * expected[i]) << "step " << i + 1;
    return r;
  }

  // Holds RUN_DIR/lock as a run in progress would, noting "host testhost, pid 4242" in it: the
  // descriptor, to close when that run is to end; -1, the failure said, when it cannot.
  static int hold_lock(const fs::path& run) {
    const int fd = ::open((run / "lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    struct flock whole {};
    whole.l_type = F_WRLCK;
    whole.l_whence = SEEK_SET;
    const std::string holder = "host testhost, pid 4242\n";
    if (fd >= 0 && ::fcntl(fd, F_SETLK, &whole) == 0 &&
        ::pwrite(fd, holder.data(), holder.size(), 0) == static_cast<ssize_t>(holder.size()))
      return fd;
    ADD_FAILURE() << "cannot hold " << run / "lock";
    if (fd >= 0) ::close(fd);
    return -1;
  }

  fs::path dir_;
  std::string corpus_;
};

TEST_F(Cli, HeadsNotDividingDModelIsRejected) {
  CliRun r = run_tessera(tiny_args("3"), dir_);
  expect_clear_error(r, "--model.heads");
  EXPECT_NE(r.err.find("found 3"), std::string::npos) << r.err;
}

// A model too large for any machine is refused by option: a vocabulary of 2^62 made a tensor
// shape of more than 2^63 elements, an internal error (exit 1).
TEST_F(Cli, ModelDimensionsBeyondAnyMachineAreRejectedByOption) {
  const std::string huge = "4611686018427387904";
  expect_clear_error(
      run_tessera(tiny_args() + " --model.vocab_size " + huge, dir_),
      "--model.vocab_size: expected 2 to 2^31 - 1 (token ids are int32), found " + huge);
  expect_clear_error(run_tessera(tiny_args("2", "", huge), dir_),
                     "--model.d_model: expected a width of 1 to 2^20");
}

// An option is its whole name: Boost took an abbreviation for the one option it begins, so
// `--optim.l 3` trained with --optim.lr 3 (and `--train.ste 3 --train.steps 1` said that
// --train.steps, typed once, came twice). A near miss is named.
TEST_F(Cli, UnknownOrAbbreviatedCommandLineKeyIsRejectedNamingTheNearestOption) {
  expect_clear_error(run_tessera(tiny_args() + " --model.layerz 3", dir_),
                     "unrecognised option '--model.layerz' (did you mean --model.layers?)");
  expect_clear_error(run_tessera(tiny_args() + " --optim.l 3", dir_),
                     "unrecognised option '--optim.l' (did you mean --optim.lr?)");
  // The right key in another section, or in none.
  expect_clear_error(run_tessera(tiny_args() + " --train.warmup 3", dir_),
                     "unrecognised option '--train.warmup' (did you mean --optim.warmup?)");
  expect_clear_error(run_tessera(tiny_args() + " --warmup 3", dir_),
                     "unrecognised option '--warmup' (did you mean --optim.warmup?)");
  // Megatron-LM's names, written from habit.
  expect_clear_error(run_tessera(tiny_args() + " --num-layers 12", dir_),
                     "unrecognised option '--num-layers' (Megatron-LM's --num-layers is "
                     "--model.layers here)");
  expect_clear_error(run_tessera(tiny_args() + " --bf16 true", dir_),
                     "(Megatron-LM's --bf16 is --train.precision bf16 here)");
  // torchtitan's and llm.c's.
  expect_clear_error(run_tessera(tiny_args() + " --parallelism.tensor_parallel_degree 2", dir_),
                     "unrecognised option '--parallelism.tensor_parallel_degree' (torchtitan's "
                     "--parallelism.tensor_parallel_degree is --parallel.tp here)");
  expect_clear_error(run_tessera(tiny_args() + " -b 4", dir_),
                     "unrecognised option '-b' (llm.c's -b is --train.micro_batch here)");
  expect_clear_error(run_tessera(tiny_args() + " -d 524288", dir_),
                     "(llm.c's -d is --train.global_batch (sequences, not tokens) here)");
  expect_clear_error(run_tessera(tiny_args() + " --num-layers=12", dir_),
                     "(Megatron-LM's --num-layers is --model.layers here)");
  expect_clear_error(run_tessera("tokenize train --vocab 300", dir_),
                     "unrecognised option '--vocab' (did you mean --vocab_size?) (see tessera "
                     "tokenize train --help)");
  // A true/false option written as a switch took the next option for its value, and the error
  // named that option's value as a stray argument.
  expect_clear_error(run_tessera("train --optim.decay_embeddings " + tiny_args().substr(6), dir_),
                     "--optim.decay_embeddings: expected true or false after it, found the option "
                     "--data.path (a true/false option takes a value: --optim.decay_embeddings "
                     "true)");
  expect_clear_error(run_tessera(tiny_args() + " --checkpoint.async", dir_),
                     "--checkpoint.async: expected true or false after it, found nothing");
}

// Options that do nothing on this layout are said to do nothing (ZeRO-1 on one data-parallel
// rank, sequence parallelism without tensor parallelism), and a replica check that is on says
// so at the start, since it prints nothing while the copies agree.
TEST_F(Cli, OptionsWithoutEffectOnThisLayoutAndTheReplicaCheckAreSaid) {
  const CliRun r = run_tessera(tiny_args() +
                                   " --train.steps 1 --parallel.zero 1 --parallel.sequence_parallel"
                                   " true --train.check_replicas 2",
                               dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* line :
       {"ZeRO-1 with no effect (one data-parallel rank: nothing to shard the optimizer state "
        "over)",
        "sequence parallel: no effect (--parallel.tp 1: no tensor-parallel group to split the "
        "tokens over)",
        "replica check: every 2 steps and before each save"})
    EXPECT_NE(r.out.find(line), std::string::npos) << line << "\n" << r.out;
}

TEST_F(Cli, UnknownConfigFileKeyIsRejectedNamingTheFile) {
  const fs::path ini = dir_ / "bad.ini";
  std::ofstream(ini) << "[model]\nlayers = 2\nwidth = 64\n";
  CliRun r = run_tessera(tiny_args() + " --config " + ini.string(), dir_);
  expect_clear_error(r, ini.string());
  EXPECT_NE(r.err.find("model.width"), std::string::npos) << r.err;
  // Each message names the line (Boost's did not).
  std::ofstream(ini, std::ios::trunc) << "[train]\n\nstep = 2\n";
  expect_clear_error(
      run_tessera(tiny_args() + " --config " + ini.string(), dir_),
      ini.string() + " line 3: unrecognised option 'train.step' (did you mean --train.steps?)");
  std::ofstream(ini, std::ios::trunc) << "[model]\nlayers = 2\nd_model 64\n";
  expect_clear_error(run_tessera(tiny_args() + " --config " + ini.string(), dir_),
                     ini.string() +
                         " line 3: the options configuration file contains an invalid "
                         "line 'd_model 64'");
  // A value refused by its option's check names the file's line that set it, unless the command
  // line gives the option.
  std::ofstream(ini, std::ios::trunc) << "[optim]\nwarmup = 2\nlr = nan\n[model]\npos = rope\n";
  expect_clear_error(run_tessera(tiny_args() + " --config " + ini.string(), dir_),
                     "--model.pos: expected one of learned, sinusoidal, found rope (config file " +
                         ini.string() + " line 5)");
  expect_clear_error(
      run_tessera(tiny_args() + " --model.pos learned --config " + ini.string(), dir_),
      "found nan (config file " + ini.string() + " line 3)");
  const CliRun given = run_tessera(
      tiny_args() + " --model.pos learned --optim.lr inf --config " + ini.string(), dir_);
  EXPECT_EQ(given.exit_code, 2) << given.err;
  EXPECT_NE(given.err.find("--optim.lr"), std::string::npos) << given.err;
  EXPECT_EQ(given.err.find("config file"), std::string::npos) << given.err;
  std::ofstream(ini, std::ios::trunc) << "[train]\nsteps = 2\nsteps = 3\n";
  expect_clear_error(run_tessera(tiny_args() + " --config " + ini.string(), dir_),
                     ini.string() + " line 3: --train.steps is set again (first on line 2)");
}

TEST_F(Cli, NegativeLearningRateIsRejected) {
  CliRun r = run_tessera(tiny_args() + " --optim.lr -0.001", dir_);
  expect_clear_error(r, "--optim.lr");
}

// A value that is not of its option's kind says what the option takes, on the command line and
// in a config file; a directory given for a file, or nothing for the run directory, says so.
TEST_F(Cli, MalformedValuesSayWhatTheOptionTakes) {
  expect_clear_error(
      run_tessera(tiny_args() + " --train.steps abc", dir_),
      "--train.steps: expected a whole number from -2^63 to 2^63 - 1, found \"abc\"");
  expect_clear_error(
      run_tessera(tiny_args() + " --parallel.pp 1.5", dir_),
      "--parallel.pp: expected a whole number from -2^31 to 2^31 - 1, found \"1.5\"");
  expect_clear_error(run_tessera(tiny_args() + " --optim.lr x", dir_),
                     "--optim.lr: expected a number, found \"x\"");
  const fs::path ini = dir_ / "bad.ini";
  std::ofstream(ini) << "[train]\nsteps = 2x\n";
  expect_clear_error(
      run_tessera(tiny_args() + " --config " + ini.string(), dir_),
      "config file " + ini.string() +
          " line 2: --train.steps: expected a whole number from -2^63 to 2^63 - 1, found \"2x\"");
  std::string no_dir = tiny_args();
  const std::string run_dir = "--run.dir " + (dir_ / "run").string();
  no_dir.replace(no_dir.find(run_dir), run_dir.size(), "--run.dir ''");
  expect_clear_error(run_tessera(no_dir, dir_), "--run.dir: expected a directory, found \"\"");
  std::string at_directory = tiny_args("2", dir_.string());
  expect_clear_error(run_tessera(at_directory, dir_),
                     dir_.string() + " is a directory: give the corpus' prefix");
  expect_clear_error(run_tessera(tiny_args() + " --data.tokenizer " + dir_.string(), dir_),
                     "--data.tokenizer: SentencePiece model " + dir_.string() +
                         ": expected a .model file written by `tessera tokenize train`, found a "
                         "directory");
}

// Values that would only show as NaN losses steps later, or as another seed, are refused by name,
// before training.
TEST_F(Cli, NonFiniteOrNegativeNumbersAreRejectedNamingTheOption) {
  for (const std::string bad :
       {"--optim.lr inf", "--model.init_std nan", "--model.init_std -1", "--optim.clip inf",
        "--optim.eps nan", "--train.seed -5", "--optim.cooldown 0", "--optim.cooldown 1.5",
        "--train.startup_timeout inf", "--train.collective_timeout 1e10", "--gpu.peak_tflops inf",
        "--debug.kill_during_save 0:shards", "--debug.kill_during_save x:start"}) {
    CliRun r = run_tessera(tiny_args() + " " + bad, dir_);
    expect_clear_error(r, bad.substr(0, bad.find(' ')));
    EXPECT_EQ(r.out.find("step "), std::string::npos) << bad;
  }
}

// Sizes whose products overflow 32 bits (tp x pp wrapped to 0, a division by it killed the
// process; 2^32 microbatches wrapped to 0, every loss NaN) are refused by name. A warm-up as long
// as the run (a short trial of a long schedule) runs, and says that it never decays.
TEST_F(Cli, OverflowingSizesAreRejectedAndAWarmUpAsLongAsTheRunIsSaid) {
  const std::pair<std::string, std::string> cases[] = {
      {"--parallel.tp 65536 --parallel.pp 65536",
       "--parallel.tp 65536 x --parallel.pp 65536 = 4294967296 does not divide the world size 1"},
      {"--parallel.tp 2147483647 --parallel.pp 2147483647 --parallel.dp 3",
       "--parallel.tp 2147483647 x --parallel.pp 2147483647 x --parallel.dp 3 = more than 2^63 "
       "ranks"},
      {"--train.global_batch 4294967296", "--train.global_batch: expected at most 2^30"},
      // Tokens of a micro-batch past 2^31 (16 of each sequence).
      {"--train.global_batch 134217729 --train.micro_batch 134217729",
       "--train.micro_batch: expected at most 2^31 tokens: 134217728 sequences of --model.seq_len "
       "16"},
      // Each microbatch runs through every model chunk: the schedule counts both (2^28 x 8).
      {"--train.global_batch 536870912 --parallel.virtual_stages 8",
       "--train.global_batch: expected at most 2^30 microbatches per step and rank "
       "(--train.global_batch / (1 data-parallel rank x --train.micro_batch 2) x "
       "--parallel.virtual_stages 8)"},
      // (2^62 + 4) / 2 microbatches x 4 chunks wrapped to 8, and passed.
      {"--train.global_batch 4611686018427387908 --parallel.virtual_stages 4",
       "--train.global_batch: expected at most 2^30 microbatches per step and rank"}};
  for (const auto& [bad, message] : cases) {
    std::string a = tiny_args();
    if (bad.starts_with("--train.global_batch"))  // in place of tiny_args' own
      a.replace(a.find("--train.global_batch 4"),
                bad.find("--train.micro_batch") == std::string::npos ? 22 : 44, bad);
    else
      a += " " + bad;
    CliRun r = run_tessera(a, dir_);
    expect_clear_error(r, message);
    EXPECT_EQ(r.out.find("step "), std::string::npos) << bad;
    EXPECT_FALSE(fs::exists(dir_ / "run")) << "a refused layout made its run directory: " << bad;
  }
  const CliRun trial = run_tessera(tiny_args() + " --train.steps 2 --optim.warmup 100", dir_);
  EXPECT_EQ(trial.exit_code, 0) << trial.err;
  EXPECT_NE(trial.out.find("lr: --optim.warmup 100 of --train.steps 2: the run ends before the "
                           "peak, and no decay to --optim.min_lr\n"),
            std::string::npos)
      << trial.out;
  const CliRun plain = run_tessera(tiny_args() + " --train.steps 2 --optim.warmup 0", dir_);
  EXPECT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(plain.out.find("lr: "), std::string::npos) << plain.out;
  // Warmup-stable-decay says where its cool-down begins; the last step's rate is min_lr.
  fs::remove_all(dir_ / "run");
  const CliRun wsd = run_tessera(tiny_args() +
                                     " --train.steps 10 --train.log_interval 1 --optim.warmup 2"
                                     " --optim.decay wsd --optim.cooldown 0.3 --optim.min_lr 1e-5",
                                 dir_);
  EXPECT_EQ(wsd.exit_code, 0) << wsd.err;
  EXPECT_NE(wsd.out.find("lr: warmup-stable-decay: 0.0003 from step 2 to step 7, then linearly "
                         "to --optim.min_lr 1e-05 by step 10 (--optim.cooldown 0.3)"),
            std::string::npos)
      << wsd.out;
  EXPECT_NE(wsd.out.find("step      7/10 | loss"), std::string::npos) << wsd.out;
  EXPECT_NE(wsd.out.find("| lr 3.000e-04 |", wsd.out.find("step      7/10")), std::string::npos)
      << wsd.out;
  EXPECT_NE(wsd.out.find("| lr 1.000e-05 |", wsd.out.find("step     10/10")), std::string::npos)
      << wsd.out;
}

// A '#' in a value that config.ini keeps (a path) would start a comment when the file is read back
// by a resume or `tessera sample`, which would then use another path: refused before the run.
TEST_F(Cli, HashInAPathIsRefusedSinceConfigIniCannotHoldIt) {
  std::string a = tiny_args() + " --train.steps 1";
  const std::string hashed = (dir_ / "r#1").string();
  a.replace(a.find("--run.dir "), 10 + (dir_ / "run").string().size(), "--run.dir " + hashed);
  const CliRun r = run_tessera(a, dir_);
  expect_clear_error(r, "--run.dir " + hashed + ": a '#' cannot be saved in the run's config.ini");
  EXPECT_FALSE(fs::exists(hashed));
}

// A blend listed one corpus a line (--data.path "$(ls data/*.bin)") is saved on one line of
// config.ini, which a run then reads back as it was given; a line break in a value config.ini
// keeps whole (a run directory) is refused before the run.
TEST_F(Cli, LineBreaksInABlendAreSavedAsSpacesAndElsewhereRefused) {
  const std::string shard = llmc_shard("shard.bin", 0, 200);
  const std::string a = tiny_args("2", "'" + corpus_ + "\n" + shard + "\n'") + " --train.steps 1";
  ASSERT_EQ(run_tessera(a, dir_).exit_code, 0);
  const CliRun again = run_tessera("train --config " + (dir_ / "run" / "config.ini").string() +
                                       " --run.dir " + (dir_ / "again").string(),
                                   dir_);
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find(shard + " (llm.c shard)"), std::string::npos) << again.out;
  std::string b = tiny_args() + " --train.steps 1";
  const std::string broken = (dir_ / "r\n1").string();
  b.replace(b.find("--run.dir "), 10 + (dir_ / "run").string().size(),
            "--run.dir '" + broken + "'");
  expect_clear_error(run_tessera(b, dir_), "--run.dir " + (dir_ / "r\\n1").string() +
                                               ": a line break cannot be saved in the run's "
                                               "config.ini");
  EXPECT_FALSE(fs::exists(broken));
}

// A word without an option before it (a config file given without --config) is refused, not
// ignored; so are a directory given as the config file, one holding a NUL byte, and an empty
// --checkpoint.resume.
TEST_F(Cli, StrayArgumentOrConfigDirectoryIsRejected) {
  const fs::path ini = dir_ / "my.ini";
  std::ofstream(ini) << "[model]\nlayers = 2\n";
  CliRun stray = run_tessera("train " + ini.string() + " --data.path " + corpus_, dir_);
  expect_clear_error(stray, "unexpected argument \"" + ini.string() + "\"");
  EXPECT_NE(stray.err.find("--config FILE"), std::string::npos) << stray.err;
  CliRun encode = run_tessera(
      "tokenize encode --input " + ini.string() + " --output " + (dir_ / "c").string() + " stray",
      dir_);
  expect_clear_error(encode, "unexpected argument \"stray\"");
  CliRun directory = run_tessera(tiny_args() + " --config " + dir_.string(), dir_);
  expect_clear_error(directory, "--config " + dir_.string() + ": expected an INI file");
  // A NUL byte would cut the parser's message short where it quotes the line: named instead.
  const fs::path nul = dir_ / "nul.ini";
  std::ofstream(nul) << std::string("[model]\nlayers = 2\0\n[train]\n", 28);
  expect_clear_error(
      run_tessera(tiny_args() + " --config " + nul.string(), dir_),
      "--config " + nul.string() + ": expected an INI text file, found a NUL byte on line 2");
  CliRun empty = run_tessera(tiny_args() + " --checkpoint.resume ''", dir_);
  expect_clear_error(empty, "--checkpoint.resume: expected auto, none or the PATH");
}

// A config file's prompt with a '#' in it ran with the prompt cut before it (Boost's INI reader
// takes every '#' for a comment), and so did a path with one; a quoted path kept its quotes as
// part of its name; an empty value was "the argument for option 'train.steps' is invalid",
// naming neither what was expected nor what was found.
TEST_F(Cli, AHashOrQuotesInAConfigFilesValueAndAnEmptyValueAreRefused) {
  const fs::path ini = dir_ / "hash.ini";
  std::ofstream(ini) << "[sample]\ntokens = 0\nprompt = Q: is C# fun?\n";
  const CliRun hash = run_tessera(tiny_args() + " --config " + ini.string(), dir_);
  expect_clear_error(hash, "config file " + ini.string() +
                               " line 3: a '#' starts a comment in an INI file, also inside a "
                               "value, so --sample.prompt would end before it (\"Q: is C\")");
  EXPECT_NE(hash.err.find("write \\x23 for a '#'"), std::string::npos) << hash.err;
  // A prompt given on the command line is the one the run uses: the file's is not looked at.
  const CliRun given = run_tessera(
      tiny_args() + " --config " + ini.string() + " --sample.prompt hi --train.steps 1", dir_);
  EXPECT_EQ(given.exit_code, 0) << given.err;
  // A '#' right after a value's character is no comment meant: refused too; one after a space
  // is a comment.
  std::ofstream(ini, std::ios::trunc) << "[run]\ndir = runs/hash#b\n";
  expect_clear_error(run_tessera(tiny_args() + " --config " + ini.string(), dir_),
                     "config file " + ini.string() +
                         " line 2: a '#' starts a comment in an INI file, also inside a value, so "
                         "--run.dir would end before it (\"runs/hash\"); no other value can hold");
  std::ofstream(ini, std::ios::trunc) << "[checkpoint]\ninit = \"runs/a b/step_00000010\"\n";
  expect_clear_error(run_tessera(tiny_args() + " --config " + ini.string(), dir_),
                     "--checkpoint.init \"runs/a b/step_00000010\": expected a path, found one "
                     "in double quotes");
  // An option set twice: refused by line, also where the command line sets it too (Boost let
  // that pass).
  std::ofstream(ini, std::ios::trunc) << "[train]\nseed = 2\n\n[train]\nseed = 3\n";
  for (const std::string more : {"", " --train.seed 1"})
    expect_clear_error(
        run_tessera(tiny_args() + more + " --config " + ini.string(), dir_),
        "config file " + ini.string() + " line 5: --train.seed is set again (first on line 2)");
  std::ofstream(ini, std::ios::trunc) << "[train]\nsteps = 1  # one step\n";
  EXPECT_EQ(run_tessera(tiny_args() + " --config " + ini.string(), dir_).exit_code, 0);
  std::ofstream(ini, std::ios::trunc) << "[train]\nsteps =\n";
  expect_clear_error(run_tessera(tiny_args() + " --config " + ini.string(), dir_),
                     "--train.steps: expected a whole number from -2^63 to 2^63 - 1, found \"\"");
}

// A file that is not what it should be (here a config file of terminal escapes and binary bytes)
// is quoted in the message as text a terminal shows as it is: control characters, bytes that
// are not UTF-8 and C1 controls written \xHH, valid UTF-8 kept, and a long line cut in its middle.
TEST_F(Cli, BinaryBytesInAQuotedFileAreEscapedAndCutShort) {
  const fs::path ini = dir_ / "garbage.ini";
  std::ofstream(ini) << "[model]\n\x1b[2J\xc3\xa9t\xc3\xa9 \xff\xc2\x9b\xc0\xaf"
                     << std::string(3000, 'y') << "\n";
  CliRun r = run_tessera(tiny_args() + " --config " + ini.string(), dir_);
  expect_clear_error(r, ini.string());
  for (const std::string part :
       {"\\x1B[2J\xc3\xa9t\xc3\xa9 \\xFF\\xC2\\x9B\\xC0\\xAF", " bytes cut) ... yyy"})
    EXPECT_NE(r.err.find(part), std::string::npos) << part << " in\n" << r.err;
  EXPECT_LT(r.err.size(), 2200u) << r.err;
  // A line of bytes that are all escaped is cut between two escapes, not inside one.
  std::ofstream(ini, std::ios::trunc) << "[model]\n" << std::string(3000, '\xff') << "\n";
  const CliRun escaped = run_tessera(tiny_args() + " --config " + ini.string(), dir_);
  expect_clear_error(escaped, ini.string());
  EXPECT_NE(escaped.err.find("\\xFF ... ("), std::string::npos) << escaped.err;
  EXPECT_NE(escaped.err.find(" bytes cut) ... \\xFF"), std::string::npos) << escaped.err;
  for (const char c : r.err)
    EXPECT_TRUE(c == '\n' || static_cast<unsigned char>(c) >= 0x20) << static_cast<int>(c);
}

// Ctrl-C (or scancel's SIGTERM) during `tokenize encode` leaves no PREFIX.bin.tmp behind, and
// the process ends as the signal ends it. The input is a FIFO held open, so the signal surely
// comes while the part file exists.
TEST_F(Cli, InterruptedEncodeLeavesNoPartFiles) {
  for (const int signo : {SIGINT, SIGTERM}) {
    const fs::path fifo = dir_ / "text.fifo", prefix = dir_ / ("encoded" + std::to_string(signo));
    fs::remove(fifo);
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      std::signal(SIGINT, SIG_DFL);  // as a shell's foreground job has it
      const int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, STDERR_FILENO);
      execl(TESSERA_BIN, TESSERA_BIN, "tokenize", "encode", "--input", fifo.c_str(), "--output",
            prefix.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    {
      // Opened without blocking, so that an encoder that died before opening it fails the test
      // instead of hanging it.
      int fd = -1;
      for (int i = 0; i < 3000 && fd < 0; ++i) {
        fd = open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
        if (fd < 0) usleep(10000);
      }
      ASSERT_GE(fd, 0) << "the encoder never opened " << fifo;
      const std::string text = "a first document\n%\na second one\n%\n";
      const auto pipe_handler = std::signal(SIGPIPE, SIG_IGN);  // an encoder gone: EPIPE
      EXPECT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
      std::signal(SIGPIPE, pipe_handler);
      const fs::path part = prefix.string() + ".bin.tmp";
      for (int i = 0; i < 1000 && !fs::exists(part); ++i) usleep(10000);
      ASSERT_TRUE(fs::exists(part)) << "the encoder never started writing";
      kill(child, signo);
      int status = 0;
      waitpid(child, &status, 0);
      close(fd);
      ASSERT_TRUE(WIFSIGNALED(status)) << status;
      EXPECT_EQ(WTERMSIG(status), signo);
    }
    for (const char* ext : {".bin.tmp", ".idx.tmp", ".bin", ".idx"})
      EXPECT_FALSE(fs::exists(prefix.string() + ext)) << ext;
  }
}

// A corpus that cannot reach the disk (here a file-size limit of 1 KB, as a full disk or a quota
// reports it when the encoder flushes) is one message naming the part file, exit 2, and no part
// files left; an earlier corpus of that name stays as it was. (The .bin was closed twice.)
TEST_F(Cli, EncodeThatCannotWriteItsCorpusNamesTheFileAndKeepsTheOldOne) {
  const fs::path text = dir_ / "text.txt", prefix = dir_ / "encoded";
  std::ofstream(text) << std::string(1500, 'a') << "\n";
  ASSERT_EQ(
      run_tessera("tokenize encode --input " + text.string() + " --output " + prefix.string(), dir_)
          .exit_code,
      0);
  const auto old_bin = fs::file_size(prefix.string() + ".bin");
  std::ofstream(text, std::ios::app) << std::string(100, 'b') << "\n";
  const CliRun r = run_tessera_with(
      "bash -c 'trap \"\" XFSZ; ulimit -f 1; exec \"$@\"' limited " + std::string(TESSERA_BIN),
      "tokenize encode --input " + text.string() + " --output " + prefix.string(), dir_);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(prefix.string() + ".bin.tmp"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("double free"), std::string::npos) << r.err;
  for (const char* ext : {".bin.tmp", ".idx.tmp"})
    EXPECT_FALSE(fs::exists(prefix.string() + ext)) << ext;
  EXPECT_EQ(fs::file_size(prefix.string() + ".bin"), old_bin);
}

// Mixed precision on the host (bf16 compute, fp32 masters, gradient sums and statistics, as on
// the GPU) follows the float32 run within bf16's rounding, and is not the float32 run.
TEST_F(Cli, Bfloat16OnTheHostTrainsCloseToFloat32) {
  const auto losses = [&](const std::string& precision) {
    const CliRun r = run_tessera(
        tiny_args() + " --train.steps 30 --train.log_interval 1 --train.precision " + precision,
        dir_);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    // The log says that bf16 on the cpu is slow on purpose.
    EXPECT_EQ(r.out.find("precision: bf16 on the cpu") != std::string::npos, precision == "bf16")
        << r.out;
    const std::vector<double> l = losses_of(dir_ / "run" / "metrics.jsonl");
    fs::remove_all(dir_ / "run");
    return l;
  };
  const std::vector<double> f32 = losses("fp32"), mixed = losses("bf16");
  ASSERT_EQ(f32.size(), 30u);
  ASSERT_EQ(mixed.size(), 30u);
  bool differ = false;
  for (size_t i = 0; i < f32.size(); ++i) {
    EXPECT_NEAR(mixed[i], f32[i], 2e-2 * f32[i]) << "step " << i + 1;
    differ |= mixed[i] != f32[i];
  }
  EXPECT_TRUE(differ) << "the bf16 run gave the float32 losses";
  EXPECT_LT(mixed.back(), mixed.front());
}

TEST_F(Cli, PrecisionNoDeviceComputesInIsRejected) {
  expect_clear_error(run_tessera(tiny_args() + " --train.precision fp16", dir_),
                     "--train.precision");
}

// Without a GPU (or without the CUDA backend) --train.device cuda stops with a message saying
// which; where a GPU exists the run trains, which the gpu_check script covers.
TEST_F(Cli, CudaDeviceWithoutAGpuIsRejectedSayingWhy) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "this machine has a GPU";
  // Head dimension 64, which the GPU's attention takes.
  CliRun r = run_tessera(tiny_args("2", "", "128") + " --train.device cuda", dir_);
  expect_clear_error(r, "--train.device");
  EXPECT_TRUE(r.err.find("no GPU") != std::string::npos ||
              r.err.find("without CUDA") != std::string::npos)
      << r.err;
}

// The GPU's attention kernels take head dimensions 64 and 128: another is refused before any
// GPU is looked for, naming --model.heads and the head counts that would do.
TEST_F(Cli, HeadDimensionTheGpuAttentionLacksIsRejectedNamingTheHeads) {
  const CliRun r = run_tessera(tiny_args("2", "", "192") + " --train.device cuda", dir_);
  expect_clear_error(r, "--model.heads");
  EXPECT_NE(r.err.find("64 and 128"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("; 3 for 64"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("found 2"), std::string::npos) << r.err;
  // The CPU's attention takes any head dimension.
  EXPECT_EQ(run_tessera(tiny_args("2", "", "192") + " --train.steps 1", dir_).exit_code, 0);
}

// The CUDA kernels' grid holds at most 65535 rows of (sequence, head on this rank): a larger
// micro-batch is refused before any GPU is looked for, naming it and the most that would do.
TEST_F(Cli, MicroBatchBeyondTheCudaGridIsRejectedBeforeTheRun) {
  const std::string args = "train --data.path " + corpus_ + " --run.dir " +
                           (dir_ / "run").string() +
                           " --model.d_model 256 --model.layers 2 --model.heads 4 --model.d_ff 64"
                           " --model.seq_len 16 --train.threads 2 --train.device cuda"
                           " --parallel.tp 2";
  const auto batch = [](const char* n) {
    return std::string(" --train.micro_batch ") + n + " --train.global_batch " + n;
  };
  // 4 heads over TP 2: 2 per rank, so 32767 sequences at most.
  const CliRun r = run_tessera(args + batch("32768"), dir_);
  if (!cuda_backend_built()) {  // the device is refused first
    expect_clear_error(r, "--train.device");
    GTEST_SKIP() << "built without CUDA (TESSERA_CUDA=OFF): --train.device cuda is refused "
                    "before the grid's limit is checked";
  }
  expect_clear_error(r, "--train.micro_batch");
  EXPECT_NE(r.err.find("at most 65535 / 2 heads per TP rank = 32767 sequences"), std::string::npos)
      << r.err;
  // One fewer passes the check: what stops that run is the missing GPU (or, on a machine with
  // one, the layout of 2 TP ranks on 1).
  const CliRun fits = run_tessera(args + batch("32767"), dir_);
  EXPECT_NE(fits.exit_code, 0);
  EXPECT_EQ(fits.err.find("--train.micro_batch"), std::string::npos) << fits.err;
}

// `train --check` for GPUs counts the workspace of the attention kernels the options choose, as
// the run does: cuDNN's deterministic backward keeps 2 B H T^2 bytes (docs/GPU.md), tessera's
// kernels none.
TEST_F(Cli, CheckCountsTheWorkspaceOfTheChosenAttentionKernels) {
  write_llmc_shard((dir_ / "long.bin").string(), std::vector<uint16_t>(4200, 1));
  const std::string args = "train --check 1 --data.path " + (dir_ / "long.bin").string() +
                           " --run.dir " + (dir_ / "run").string() +
                           " --model.d_model 256 --model.heads 4 --model.layers 2"
                           " --model.d_ff 256 --model.seq_len 1024 --train.micro_batch 2"
                           " --train.global_batch 2 --train.device cuda --gpu.attention ";
  const auto checked_mb = [&](const char* kernels) {
    const CliRun r = run_tessera(args + kernels, dir_);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const std::string mb = activation_mb(r);
    return mb.starts_with("none") ? -1.0 : std::stod(mb);
  };
  if (!cuda_backend_built()) {
    expect_clear_error(run_tessera(args + "cudnn", dir_), "--train.device");
    GTEST_SKIP() << "built without CUDA (TESSERA_CUDA=OFF): --train.device cuda is refused";
  }
  const double tessera_kernels = checked_mb("tensor_cores"), cudnn = checked_mb("cudnn");
  ASSERT_GT(tessera_kernels, 0);
  EXPECT_EQ(checked_mb("cuda_cores"), tessera_kernels);
  EXPECT_NEAR(cudnn - tessera_kernels, 2.0 * 2 * 4 * 1024 * 1024 / 1e6, 0.1);
}

// A corpus that is not there is named with the option that gave it.
TEST_F(Cli, MissingCorpusIsRejectedNamingTheFile) {
  CliRun r = run_tessera(tiny_args("2", (dir_ / "nowhere").string()), dir_);
  expect_clear_error(r,
                     "--data.path: corpus " + (dir_ / "nowhere").string() + ".idx: no such file");
  r = run_tessera(tiny_args() + " --data.valid_path " + (dir_ / "nowhere").string(), dir_);
  expect_clear_error(
      r, "--data.valid_path: corpus " + (dir_ / "nowhere").string() + ".idx: no such file");
  // A refused start leaves no run directory it made (it made one, with its lock and data
  // cache, before it opened the corpora), whichever agreement refused it: the corpora, or the
  // checkpoint to start from. One that was there stays, with what it held.
  EXPECT_FALSE(fs::exists(dir_ / "run"));
  r = run_tessera(tiny_args() + " --checkpoint.init " + (dir_ / "nowhere").string(), dir_);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "run"));
  fs::create_directories(dir_ / "run" / "data_cache");
  std::ofstream(dir_ / "run" / "notes.txt") << "mine\n";
  std::ofstream(dir_ / "run" / "data_cache" / "kept.txt") << "mine too\n";
  expect_clear_error(run_tessera(tiny_args("2", (dir_ / "nowhere").string()), dir_),
                     "--data.path: corpus ");
  EXPECT_EQ(read_text(dir_ / "run" / "notes.txt"), "mine\n");
  EXPECT_EQ(read_text(dir_ / "run" / "data_cache" / "kept.txt"), "mine too\n");
  EXPECT_TRUE(fs::exists(dir_ / "run" / "lock"));
  // RUN_DIR "run/new/.." makes run/new, but names run, which was there: nothing of it goes.
  std::string args = tiny_args("2", (dir_ / "nowhere").string());
  const std::string given = (dir_ / "run").string();
  args.replace(args.find(given), given.size(), (dir_ / "run" / "new" / "..").string());
  expect_clear_error(run_tessera(args, dir_), "--data.path: corpus ");
  EXPECT_EQ(read_text(dir_ / "run" / "data_cache" / "kept.txt"), "mine too\n");
  EXPECT_TRUE(fs::exists(dir_ / "run" / "lock"));
  // RUN_DIR "fresh/a/b": the parents it made go too.
  args = tiny_args("2", (dir_ / "nowhere").string());
  args.replace(args.find(given), given.size(), (dir_ / "fresh" / "a" / "b").string());
  expect_clear_error(run_tessera(args, dir_), "--data.path: corpus ");
  EXPECT_FALSE(fs::exists(dir_ / "fresh"));
  // Under mpirun, where each rank opens the corpora: the other ranks make nothing in RUN_DIR
  // (rank 0 made it), so it goes.
  fs::remove_all(dir_ / "run");
  r = run_mpi(2, tiny_args("2", (dir_ / "nowhere").string()), dir_);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--data.path: corpus "), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "run"));
}

TEST_F(Cli, TruncatedCorpusIsRejectedNamingTheFile) {
  const fs::path bin = corpus_ + ".bin";
  fs::resize_file(bin, fs::file_size(bin) - 10);
  CliRun r = run_tessera(tiny_args(), dir_);
  expect_clear_error(r, bin.string());
}

// llm.c's llama-3 shards (magic 20240801, uint32 tokens) are refused as such, not taken for a
// Megatron prefix whose .idx is missing.
TEST_F(Cli, LlamaThreeShardIsRejectedSayingWhatItIs) {
  const fs::path shard = dir_ / "llama.bin";
  std::vector<int32_t> header(256, 0);
  header[0] = 20240801, header[1] = 7, header[2] = 3;
  const std::vector<uint32_t> tokens = {1, 2, 3};
  {
    std::ofstream out(shard, std::ios::binary);
    out.write(reinterpret_cast<const char*>(header.data()), 1024);
    out.write(reinterpret_cast<const char*>(tokens.data()), 12);
  }
  CliRun r = run_tessera(tiny_args("2", shard.string()), dir_);
  expect_clear_error(r, shard.string());
  EXPECT_NE(r.err.find("llama-3"), std::string::npos) << r.err;
}

// Two runs in one run directory would commit over each other's checkpoints: while another
// process holds RUN_DIR/lock (here this test, as a first run would), a run there is refused,
// naming the holder, and writes nothing; once the holder is gone, the run goes ahead.
TEST_F(Cli, SecondRunInALockedRunDirectoryIsRefusedNamingTheHolder) {
  const fs::path run = dir_ / "run";
  fs::create_directories(run);
  const int fd = hold_lock(run);
  ASSERT_GE(fd, 0);
  const CliRun refused = run_tessera(tiny_args() + " --train.steps 2", dir_);
  expect_clear_error(refused, "--run.dir " + run.string());
  EXPECT_NE(refused.err.find("in use by another tessera run (host testhost, pid 4242)"),
            std::string::npos)
      << refused.err;
  EXPECT_FALSE(fs::exists(run / "config.ini"));
  EXPECT_FALSE(fs::exists(run / "metrics.jsonl"));
  // The lock is taken before the corpora are opened: a second run stops before reading them.
  const CliRun unread =
      run_tessera(tiny_args("2", (dir_ / "missing").string()) + " --train.steps 2", dir_);
  expect_clear_error(unread, "in use by another tessera run (host testhost, pid 4242)");
  ::close(fd);  // the first run ends
  const CliRun after = run_tessera(tiny_args() + " --train.steps 2", dir_);
  EXPECT_EQ(after.exit_code, 0) << after.err;
}

// `tessera train --check [RANKS]` says what a run would start with, refuses what it would refuse,
// and writes nothing: no run directory, and in one with checkpoints no file or name changed
// (not the step a save was replacing, which a run would restore), whatever it resumes.
TEST_F(Cli, CheckSaysWhatARunWouldStartWithAndWritesNothing) {
  const fs::path run = dir_ / "run";
  CliRun r = run_tessera(tiny_args() + " --check 4 --parallel.tp 2 --parallel.pp 2", dir_);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const std::string& line : std::vector<std::string>{
           "check: a run of 4 ranks, checked by this process alone; nothing is written\n",
           "\ncorpus: " + corpus_ + " (Megatron indexed dataset): 40 documents",
           "\nlayout: tp 2 x pp 2 x dp 1 = 4 ranks\n",
           "\npipeline: 2 stages (0: layer 0, 1: layer 1)",
           "\ncheckpoint: none to resume in " + (run / "checkpoints").string(),
           // Stage 0's TP rank 1: a layer's (3 h^2 + 3 h + h^2 + 2 h d_ff + d_ff) / 2 + 6 h,
           // 129 of the 257 vocabulary rows and 16 positions, 16 bytes each in fp32; and the
           // activations of both microbatches, in flight together on the first stage.
           "\nmemory (host): estimate 0.3 MB for the largest rank (TP rank 1 of stage 0) = 0.1 MB "
           "of parameters, gradients and optimizer state (9008 parameters) + ",
           "\ncheck: passed in ",
           " s: a run of 4 ranks with these options and inputs starts (its machines are not "
           "checked: cores, memory, the network)\n"})
    EXPECT_NE(r.out.find(line), std::string::npos) << line << " not in:\n" << r.out;
  // 100 steps of 4 sequences over the corpus' samples.
  const size_t samples = r.out.find(" samples of 16+1 tokens");
  ASSERT_NE(samples, std::string::npos) << r.out;
  const double held = std::stod(r.out.substr(r.out.rfind(", ", samples) + 2));
  char epochs[64];
  std::snprintf(epochs, sizeof epochs, ", %.3g epochs of the training samples; run dir ",
                100 * 4 / held);
  EXPECT_NE(r.out.find(epochs), std::string::npos) << epochs << " not in:\n" << r.out;
  EXPECT_FALSE(fs::exists(run));
  // A model whose bytes pass 2^63 (a million heads of one over 2^20 tokens: its attention
  // probabilities) is refused as a run's allocation would refuse it.
  write_llmc_shard((dir_ / "long.bin").string(), std::vector<uint16_t>((1 << 20) + 2, 1));
  r = run_tessera("train --check 1 --data.path " + (dir_ / "long.bin").string() + " --run.dir " +
                      run.string() +
                      " --model.d_model 1048576 --model.heads 1048576 --model.d_ff 16 "
                      "--model.layers 16 --model.seq_len 1048576 --train.global_batch 1 "
                      "--train.micro_batch 1",
                  dir_);
  expect_clear_error(r, "out of memory (try a smaller --train.micro_batch");
  EXPECT_NE(r.out.find("\nmemory (host): estimate beyond 2^63 bytes (71469215252736 parameters)"),
            std::string::npos)
      << r.out;
  // The start's notes on options without effect on the layout, and on the replica check.
  r = run_tessera(tiny_args() +
                      " --check 2 --parallel.pp 2 --parallel.sequence_parallel true "
                      "--parallel.zero 1 --train.check_replicas 10",
                  dir_);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* line : {"\nsequence parallel: no effect (--parallel.tp 1: ",
                           "\ndata parallel: 1 replica, ZeRO-1 with no effect (one data-parallel",
                           "\nreplica check: every 10 steps and before each save"})
    EXPECT_NE(r.out.find(line), std::string::npos) << line << " not in:\n" << r.out;
  expect_clear_error(run_tessera(tiny_args() + " --check 3 --parallel.tp 2", dir_),
                     "does not divide the world size 3 (the ranks checked for)");
  expect_clear_error(run_tessera(tiny_args("2", (dir_ / "missing").string()) + " --check", dir_),
                     "--data.path: corpus " + (dir_ / "missing").string());
  for (const char* ranks : {"two", "-1"})
    expect_clear_error(run_tessera(tiny_args() + " --check " + ranks, dir_),
                       "--check: expected the number of ranks to check the run for (a whole "
                       "number from 1, or nothing for tp x pp x dp), found \"" +
                           std::string(ranks) + "\"");
  // Directories the run could not make (a file where one belongs), refused as the run refuses
  // them.
  std::ofstream(run) << "a file\n";
  expect_clear_error(run_tessera(tiny_args() + " --check", dir_),
                     "--run.dir " + run.string() + ": cannot create (Not a directory)");
  fs::remove(run);
  const std::string file = corpus_ + ".bin";
  // A path through a file ("FILE/../x"), judged as the kernel resolves it, by the check and the
  // run alike.
  std::string through = tiny_args();
  through.replace(through.find(run.string()), run.string().size(), file + "/../x");
  for (const char* check : {" --check", ""})
    expect_clear_error(run_tessera(through + check, dir_),
                       "--run.dir " + file + "/../x: cannot create (Not a directory)");
  expect_clear_error(
      run_tessera(tiny_args() + " --check --data.cache_dir " + file + "/cache", dir_),
      "--data.cache_dir " + file +
          "/cache: expected a directory this rank can create or use, found: Not a "
          "directory");
  EXPECT_FALSE(fs::exists(run));
  // An id-check record is written by no check, also into a data cache that is there.
  fs::create_directories(dir_ / "cache");
  r = run_tessera(tiny_args() + " --check --data.cache_dir " + (dir_ / "cache").string(), dir_);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::is_empty(dir_ / "cache"));
  // A blend whose weights are not its sizes: the corpus its steps repeat most is named.
  fs::copy_file(corpus_ + ".bin", dir_ / "copy.bin");
  fs::copy_file(corpus_ + ".idx", dir_ / "copy.idx");
  r = run_tessera(
      tiny_args("2", "\"1 " + corpus_ + " 3 " + (dir_ / "copy").string() + "\"") + " --check",
      dir_);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(" epochs of " + (dir_ / "copy").string() + ", the most repeated corpus;"),
            std::string::npos)
      << r.out;
  r = run_mpi(2, tiny_args() + " --check", dir_);  // the ranks started
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\nlayout: tp 1 x pp 1 x dp 2 = 2 ranks\n"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(run));

  ASSERT_EQ(run_tessera(tiny_args() + " --train.steps 4 --checkpoint.interval 2", dir_).exit_code,
            0);
  const fs::path step2 = run / "checkpoints" / "step_00000002",
                 step4 = run / "checkpoints" / "step_00000004";
  // Every path under RUN_DIR with its size and time of last change.
  const auto tree = [&] {
    std::string t;
    for (const auto& e : fs::recursive_directory_iterator(run))
      t += e.path().string() + " " +
           (e.is_regular_file() ? std::to_string(e.file_size()) + " " +
                                      std::to_string(e.last_write_time().time_since_epoch().count())
                                : std::string("dir")) +
           "\n";
    return t;
  };
  const std::string more = tiny_args() + " --train.steps 6 --checkpoint.interval 2 --check";
  std::string before = tree();
  r = run_tessera(more, dir_);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\ncheckpoint: resumes " + step4.string() + " (step 4)\n"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(tree(), before);
  // A step a save was replacing when its run stopped: the run would restore it; the check says so.
  fs::rename(step2, step2.string() + ".replaced");
  before = tree();
  r = run_tessera(more, dir_);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find(step2.string() +
                       " was being replaced by a save when a run stopped: the old one will be "
                       "restored"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(tree(), before);
  fs::rename(step2.string() + ".replaced", step2);
  // The latest one damaged: every byte is checked, and the one before it is taken, as a run would.
  fs::path largest;
  for (const auto& e : fs::recursive_directory_iterator(step4))
    if (e.is_regular_file() && (largest.empty() || e.file_size() > fs::file_size(largest)))
      largest = e.path();
  flip_bits(largest, static_cast<std::streamoff>(fs::file_size(largest) / 2), std::ios::beg, 1);
  before = tree();
  r = run_tessera(more, dir_);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\ncheckpoint: resumes " + step2.string() + " (step 2)\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("latest checkpoint is not usable"), std::string::npos) << r.out;
  EXPECT_EQ(tree(), before);
  // A run going on in RUN_DIR now (this test holds its lock): said, not refused.
  const int fd = hold_lock(run);
  ASSERT_GE(fd, 0);
  before = tree();
  r = run_tessera(more, dir_);
  ::close(fd);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("run dir: note: in use by a tessera run now (host testhost, pid 4242)"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(tree(), before);
  // A run that would have nothing to train says so (step 4 is the damaged one).
  r = run_tessera(tiny_args() + " --train.steps 2 --check", dir_);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\nnothing to train: the checkpoint is at step 2 of --train.steps 2\n"),
            std::string::npos)
      << r.out;
  // A directory where the run writes a file is refused by the check, and by the run at its start.
  const size_t logged = losses_of(run / "metrics.jsonl").size();
  fs::rename(run / "config.ini", dir_ / "config.ini");
  fs::create_directory(run / "config.ini");
  const std::string in_the_way =
      (run / "config.ini").string() + ": expected a file this run writes, found a directory";
  expect_clear_error(run_tessera(more, dir_), in_the_way);
  expect_clear_error(run_tessera(tiny_args() + " --train.steps 6", dir_), in_the_way);
  EXPECT_EQ(losses_of(run / "metrics.jsonl").size(), logged);
}

// A run that cannot allocate what it needs says what it could not allocate beside what the rank
// was estimated to need (the estimate `--check` prints), and the options that need less: one
// line, exit 2. The token embedding, the first tensor allocated, is 2^49 bytes, past any
// machine's address space, so the allocation fails at once and touches nothing (the layers'
// matrices, 4 TiB and more, would fail too where the kernel refuses allocations past its memory,
// Linux's default). On two stages, each rank names itself.
TEST_F(Cli, ARunOutOfMemorySaysWhatItCouldNotAllocateBesideTheRanksEstimate) {
  write_llmc_shard((dir_ / "short.bin").string(), std::vector<uint16_t>(200, 1));
  const std::string huge = " --data.path " + (dir_ / "short.bin").string() +
                           " --model.vocab_size 134217728 --model.d_model 1048576 "
                           "--model.heads 1 --model.d_ff 16 --model.seq_len 16 "
                           "--train.micro_batch 1 --train.steps 1";
  const std::string run = " --run.dir " + (dir_ / "run").string();
  CliRun check = run_tessera("train --check 1 --train.global_batch 1" + huge + run, dir_);
  ASSERT_EQ(check.exit_code, 0) << check.err;
  const size_t at = check.out.find("memory (host): ");
  ASSERT_NE(at, std::string::npos) << check.out;
  const std::string estimate =
      check.out.substr(at + 15, check.out.find('\n', at) - at - 15);  // "estimate ... (docs/...)"
  CliRun r = run_tessera("train --train.global_batch 1" + huge + run, dir_);
  expect_clear_error(r,
                     "tessera: error: out of memory: cannot allocate 562949953.4 MB of host "
                     "memory; " +
                         estimate +
                         " (try a smaller --train.micro_batch or model, more --parallel.tp / "
                         "--parallel.pp, or --train.recompute)");
  EXPECT_EQ(estimate.find(" for "), std::string::npos) << estimate;  // one rank: no rank named

  r = run_mpi(2, "train --train.global_batch 2 --parallel.pp 2 --model.layers 2" + huge + run,
              dir_);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("tessera: error: out of memory: cannot allocate "), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find(" MB of host memory; estimate "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(" for this rank (stage "), std::string::npos) << r.err;
}

// A path the file system refuses (here `checkpoints` is a file, so no step directory can be made
// under it) is exit 2 naming the path, not an internal error.
TEST_F(Cli, CheckpointDirectoryThatCannotBeMadeIsExit2NamingThePath) {
  fs::create_directories(dir_ / "run");
  std::ofstream(dir_ / "run" / "checkpoints") << "not a directory\n";
  const CliRun r = run_tessera(tiny_args() + " --train.steps 2 --checkpoint.interval 1", dir_);
  expect_clear_error(r, (dir_ / "run" / "checkpoints").string());
  EXPECT_NE(r.err.find("not a directory"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("step "), std::string::npos) << "found only after training: " << r.out;
}

// So is a --data.cache_dir that cannot be a directory (its records were silently never kept).
TEST_F(Cli, DataCacheDirectoryThatCannotBeMadeIsExit2NamingTheOption) {
  std::ofstream(dir_ / "a_file") << "not a directory\n";
  for (const fs::path& cache : {dir_ / "a_file", dir_ / "a_file" / "sub"}) {
    const CliRun r =
        run_tessera(tiny_args() + " --train.steps 2 --data.cache_dir " + cache.string(), dir_);
    expect_clear_error(r, "--data.cache_dir " + cache.string());
    EXPECT_EQ(r.out.find("step "), std::string::npos) << r.out;
  }
}

// `tessera plot RUN_A RUN_B`: the runs' curves over each other, each with its mark and colour,
// named in a legend; each run's figures; the SVG only where --output says.
TEST_F(Cli, PlotDrawsSeveralRunsOverEachOther) {
  const fs::path a = dir_ / "a", b = dir_ / "b";
  fs::create_directories(a);
  fs::create_directories(b);
  {
    std::ofstream ma(a / "metrics.jsonl"), mb(b / "metrics.jsonl");
    for (int step = 1; step <= 20; ++step) {
      ma << "{\"step\": " << step << ", \"loss\": " << 5.0 - 0.1 * step << "}\n";
      mb << "{\"step\": " << step << ", \"loss\": " << 5.0 - 0.05 * step << "}\n";
    }
    mb << "{\"step\": 20, \"valid_loss\": 4.2}\n";
  }
  const CliRun r = run_tessera("plot " + a.string() + " " + b.string(), dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("loss curves of " + (a / "metrics.jsonl").string() + " (*), " +
                       (b / "metrics.jsonl").string() + " (+)\n"),
            std::string::npos)
      << r.out;
  // Both start at 4.95 and 4.9 and part: each run's mark in the chart's rows (between the
  // heading and the axis).
  const std::string rows = r.out.substr(0, r.out.find("+---"));
  EXPECT_NE(rows.find("|*"), std::string::npos) << r.out;
  EXPECT_NE(rows.find('+', rows.find('\n')), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("* " + a.string() + "   + " + b.string() + "   o validation"),
            std::string::npos)
      << r.out;
  // 5 - 0.05 s against 5 - 0.1 s: the most at step 20, 1.0, relative 1/3.
  EXPECT_NE(r.out.find("+ " + b.string() + " against * " + a.string() +
                       ": training loss differs by at most 1 (relative 0.333, at step 20) over "
                       "the 20 steps both logged"),
            std::string::npos)
      << r.out;
  EXPECT_NE(
      r.out.find("* " + a.string() + ": training loss: 4.9000 at step 1 -> 3.0000 at step 20"),
      std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("+ " + b.string() + ": validation loss: 4.2000 at step 20"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("note: give --output FILE to write the chart of these runs as SVG"),
            std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(a / "loss.svg"));
  const CliRun svg = run_tessera(
      "plot " + a.string() + " " + b.string() + " --output " + (dir_ / "ab.svg").string(), dir_);
  ASSERT_EQ(svg.exit_code, 0) << svg.err;
  const std::string chart = read_text(dir_ / "ab.svg");
  size_t lines = 0;
  for (size_t k = chart.find("<polyline "); k != std::string::npos;
       k = chart.find("<polyline ", k + 1))
    ++lines;
  EXPECT_EQ(lines, 2u) << chart;
  EXPECT_NE(chart.find("stroke=\"#d62728\""), std::string::npos) << chart;
  EXPECT_NE(chart.find(">" + b.string() + "</text>"), std::string::npos) << chart;
  EXPECT_NE(chart.find(a.string() + " vs " + b.string() + ": loss against step"), std::string::npos)
      << chart;
}

// `tessera plot RUN_DIR`: the chart in the terminal, the figures under it and RUN_DIR/loss.svg,
// one point per training record; --from keeps the later steps; bad input is one message.
TEST_F(Cli, PlotShowsTheLossCurveAndWritesItAsSvg) {
  ASSERT_EQ(run_tessera(tiny_args() + " --train.steps 30 --train.log_interval 1 "
                                      "--train.eval_interval 10 --train.eval_batches 1",
                        dir_)
                .exit_code,
            0);
  const fs::path run = dir_ / "run";
  const CliRun r = run_tessera("plot " + run.string(), dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("loss curve of " + (run / "metrics.jsonl").string()), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("|*"), std::string::npos) << r.out;  // step 1, in the first column
  EXPECT_NE(r.out.find("training loss: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(30 records)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("validation loss: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(3 evaluations)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("chart: " + (run / "loss.svg").string()), std::string::npos) << r.out;
  std::ifstream in(run / "loss.svg");
  const std::string svg{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  ASSERT_EQ(svg.rfind("<svg ", 0), 0u) << svg.substr(0, 100);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  const size_t at = svg.find("points=\"");
  ASSERT_NE(at, std::string::npos);
  const std::string points = svg.substr(at + 8, svg.find('"', at + 8) - at - 8);
  EXPECT_EQ(std::count(points.begin(), points.end(), ','), 30) << points;
  size_t circles = 0;  // the validations and the legend's
  for (size_t k = svg.find("<circle "); k != std::string::npos; k = svg.find("<circle ", k + 1))
    ++circles;
  EXPECT_EQ(circles, 4u) << svg;

  const CliRun later = run_tessera("plot " + run.string() + " --from 21 --output \"\"", dir_);
  ASSERT_EQ(later.exit_code, 0) << later.err;
  EXPECT_NE(later.out.find("at step 21 -> "), std::string::npos) << later.out;
  EXPECT_NE(later.out.find("(10 records)"), std::string::npos) << later.out;
  EXPECT_EQ(later.out.find("chart: "), std::string::npos) << later.out;
  // One record: the axis names its step alone (it named "step 30 ... 31", a step not there), in
  // the terminal and the SVG's ticks.
  const CliRun one = run_tessera("plot " + run.string() + " --from 30", dir_);
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_NE(one.out.find("(1 record)"), std::string::npos) << one.out;
  const size_t axis = one.out.find("step 30");
  ASSERT_NE(axis, std::string::npos) << one.out;
  EXPECT_EQ(one.out.substr(axis, one.out.find('\n', axis) - axis).find("31"), std::string::npos)
      << one.out;
  std::ifstream one_in(run / "loss.svg");
  const std::string one_svg{std::istreambuf_iterator<char>(one_in), {}};
  EXPECT_NE(one_svg.find(">30</text>"), std::string::npos) << one_svg;
  EXPECT_EQ(one_svg.find(">31</text>"), std::string::npos) << one_svg;

  expect_clear_error(run_tessera("plot " + (dir_ / "nowhere").string(), dir_),
                     (dir_ / "nowhere").string() + ": expected a run's metrics file");
  expect_clear_error(run_tessera("plot " + run.string() + " --from 31", dir_),
                     "expected training records with a loss from step 31, found none");
  expect_clear_error(run_tessera("plot " + run.string() + " --width 5", dir_), "--width");
  expect_clear_error(run_tessera("plot " + run.string() + " a b c d e f", dir_),
                     "tessera plot: expected at most 6 RUN_DIRs to draw over each other, found 7: "
                     "\"" +
                         run.string() + "\" \"a\"");
  // A directory where the chart would go is named as the option, and nothing is left beside it.
  fs::create_directory(dir_ / "adir");
  expect_clear_error(
      run_tessera("plot " + run.string() + " --output " + (dir_ / "adir").string(), dir_),
      "--output " + (dir_ / "adir").string() + ": expected a file to write, found a directory");
  EXPECT_FALSE(fs::exists(dir_ / "adir.tmp"));
  // A file that is not a chart is not replaced: the metrics it is drawn from, a checkpoint's file,
  // a corpus. An earlier chart is.
  const std::string metrics_text = read_text(run / "metrics.jsonl");
  expect_clear_error(
      run_tessera("plot " + run.string() + " --output " + (run / "metrics.jsonl").string(), dir_),
      "--output " + (run / "metrics.jsonl").string() +
          ": expected a new file or an earlier chart to replace, found a file that is not SVG");
  EXPECT_EQ(read_text(run / "metrics.jsonl"), metrics_text);
  fs::copy_file(run / "loss.svg", dir_ / "earlier.svg");
  const CliRun replaced =
      run_tessera("plot " + run.string() + " --output " + (dir_ / "earlier.svg").string(), dir_);
  EXPECT_EQ(replaced.exit_code, 0) << replaced.err;
  // Another XML document is not a chart either, whatever its declaration, nor a page that holds
  // an svg element; an SVG file an editor wrote (a comment and a DOCTYPE first) is.
  std::ofstream(dir_ / "pom.xml") << "<?xml version=\"1.0\"?>\n<project/>\n";
  std::ofstream(dir_ / "page.jsonl") << "{\"text\": \"<html><svg width=1></svg></html>\"}\n";
  for (const char* other : {"pom.xml", "page.jsonl"})
    expect_clear_error(
        run_tessera("plot " + run.string() + " --output " + (dir_ / other).string(), dir_),
        "found a file that is not SVG");
  std::ofstream(dir_ / "drawn.svg")
      << "<?xml version=\"1.0\"?>\n<!-- by hand -->\n"
         "<!DOCTYPE svg PUBLIC \"-//W3C//DTD SVG 1.1//EN\">\n<svg/>\n";
  EXPECT_EQ(run_tessera("plot " + run.string() + " --output " + (dir_ / "drawn.svg").string(), dir_)
                .exit_code,
            0);
  // Records of no loss to draw are said, with the first one's line.
  std::ofstream(run / "metrics.jsonl", std::ios::app)
      << "{\"step\": 31, \"loss\": null}\n{\"step\": 32, \"loss\": \"abc\"}\n";
  const CliRun undrawn = run_tessera("plot " + run.string() + " --output \"\"", dir_);
  EXPECT_EQ(undrawn.exit_code, 0) << undrawn.err;
  EXPECT_NE(undrawn.out.find("note: 2 training records without a loss that is a finite number "
                             "(the first at " +
                             (run / "metrics.jsonl").string() + ":34) are not drawn"),
            std::string::npos)
      << undrawn.out;
  std::ofstream(run / "metrics.jsonl", std::ios::app) << "{\"loss\": 1}\n";
  expect_clear_error(run_tessera("plot " + run.string(), dir_),
                     (run / "metrics.jsonl").string() +
                         ":36: expected a JSON object with an "
                         "integer \"step\"");
}

// Every option a run resolves (the keys of its config.ini, [section] key) is in --help, and
// some defaults as help prints them.
TEST_F(Cli, HelpListsEveryOptionOfTheResolvedConfigAndTheDefaults) {
  CliRun r = run_tessera("train --help", dir_);
  EXPECT_EQ(r.exit_code, 0);
  for (const char* opt :
       {"--model.vocab_size arg (=257)", "--model.heads arg (=4)", "--optim.lr arg (=3e-4)",
        "--train.steps arg (=100)", "--optim.decay arg (=cosine)",
        "--checkpoint.async arg (=false)", "--data.path", "--run.dir"})
    EXPECT_NE(r.out.find(opt), std::string::npos) << opt << " missing from:\n" << r.out;
  ASSERT_EQ(run_tessera(tiny_args() + " --train.steps 1", dir_).exit_code, 0);
  std::ifstream ini(dir_ / "run" / "config.ini");
  std::string section;
  int options = 0;
  for (std::string line; std::getline(ini, line);) {
    if (line.starts_with("[")) section = line.substr(1, line.find(']') - 1);
    const size_t eq = line.find(" = ");
    if (section.empty() || eq == std::string::npos) continue;
    const std::string option = "--" + section + "." + line.substr(0, eq) + " ";
    EXPECT_NE(r.out.find(option), std::string::npos) << option << "missing from --help";
    ++options;
  }
  EXPECT_GT(options, 50) << "config.ini lists fewer options than tessera has";
}

// (The file starts with a UTF-8 byte-order mark, as Windows editors write one: read past.)
TEST_F(Cli, CommandLineOverridesConfigFile) {
  const fs::path ini = dir_ / "run.ini";
  std::ofstream(ini) << "\xEF\xBB\xBF[train]\nsteps = 50\n[model]\nheads = 3\n";
  // The file's heads = 3 would be rejected; the command line's 2 wins and the run succeeds.
  CliRun r = run_tessera(tiny_args() + " --config " + ini.string() + " --train.steps 2", dir_);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("step      2/2"), std::string::npos) << r.out;
}

TEST_F(Cli, ResolvedConfigReproducesTheRunWhenReadBack) {
  ASSERT_EQ(run_tessera(tiny_args() + " --train.steps 3 --train.log_interval 1", dir_).exit_code,
            0);
  const fs::path resolved = dir_ / "run" / "config.ini";
  ASSERT_TRUE(fs::exists(resolved));
  // One [section] per option prefix, for people reading it.
  std::ifstream ini(resolved);
  std::vector<std::string> sections;
  for (std::string line; std::getline(ini, line);)
    if (line.rfind('[', 0) == 0) sections.push_back(line);
  EXPECT_GE(sections.size(), 5u);
  std::vector<std::string> unique = sections;
  std::sort(unique.begin(), unique.end());
  EXPECT_EQ(std::unique(unique.begin(), unique.end()), unique.end())
      << "a section appears twice in " << resolved;
  CliRun again = run_tessera(
      "train --config " + resolved.string() + " --run.dir " + (dir_ / "again").string(), dir_);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  const std::vector<std::string> first = loss_fields(dir_ / "run" / "metrics.jsonl");
  EXPECT_EQ(first.size(), 3u);
  EXPECT_EQ(first, loss_fields(dir_ / "again" / "metrics.jsonl"));
}

TEST_F(Cli, TwoRunsGiveBitwiseIdenticalLosses) {
  // Wide enough that OpenBLAS and the OpenMP loops split the work over both threads.
  const std::string args = "train --data.path " + corpus_ + " --run.dir " +
                           (dir_ / "run").string() +
                           " --model.d_model 128 --model.layers 2 --model.heads 4"
                           " --model.d_ff 512 --model.seq_len 64 --train.global_batch 8"
                           " --train.micro_batch 4 --train.threads 2 --train.steps 20"
                           " --train.log_interval 1";
  ASSERT_EQ(run_tessera(args, dir_).exit_code, 0);
  std::vector<std::string> first = loss_fields(dir_ / "run" / "metrics.jsonl");
  fs::remove_all(dir_ / "run");
  ASSERT_EQ(run_tessera(args, dir_).exit_code, 0);
  std::vector<std::string> second = loss_fields(dir_ / "run" / "metrics.jsonl");
  ASSERT_EQ(first.size(), 20u);
  EXPECT_EQ(first, second);
  // A different seed must change them, or the comparison proves nothing.
  fs::remove_all(dir_ / "run");
  ASSERT_EQ(run_tessera(args + " --train.seed 2", dir_).exit_code, 0);
  EXPECT_NE(first, loss_fields(dir_ / "run" / "metrics.jsonl"));
}

// Clipping's factor reaches the update (in AdamW's pass): a limit below the gradient norm changes
// the losses that follow, one above it leaves them bitwise those of no clipping.
TEST_F(Cli, ClippingChangesTheUpdateOnlyWhenTheNormExceedsTheLimit) {
  const std::string args = "train --data.path " + corpus_ +
                           " --model.d_model 64 --model.layers 2 --model.heads 4 --model.d_ff 256"
                           " --model.seq_len 32 --train.global_batch 8 --train.micro_batch 4"
                           " --train.steps 4 --train.log_interval 1 --run.dir ";
  const auto losses = [&](const std::string& name, const std::string& clip) {
    const fs::path run = dir_ / name;
    EXPECT_EQ(run_tessera(args + run.string() + " --optim.clip " + clip, dir_).exit_code, 0);
    return loss_fields(run / "metrics.jsonl");
  };
  const std::vector<std::string> off = losses("off", "0");
  ASSERT_EQ(off.size(), 4u);
  EXPECT_EQ(losses("above", "1e9"), off);
  const std::vector<std::string> clipped = losses("clipped", "1e-3");
  ASSERT_EQ(clipped.size(), 4u);
  EXPECT_EQ(clipped.front(), off.front());  // the first loss comes before any update
  EXPECT_NE(clipped, off);
}

TEST_F(Cli, RecomputeModesTrainWithBitwiseTheLossesOfNone) {
  const std::string args = "train --data.path " + corpus_ +
                           " --model.d_model 64 --model.layers 4 --model.heads 4 --model.d_ff 256"
                           " --model.seq_len 128 --train.global_batch 8 --train.micro_batch 4"
                           " --train.steps 5 --train.log_interval 1 --run.dir ";
  // The activations the run's memory estimate gives for the mode the model ran with: the option
  // took effect (equal losses are no proof where it was ignored).
  const CliRun none_run = run_tessera(args + (dir_ / "none").string(), dir_);
  ASSERT_EQ(none_run.exit_code, 0) << none_run.err;
  const std::vector<std::string> none = loss_fields(dir_ / "none" / "metrics.jsonl");
  ASSERT_EQ(none.size(), 5u);
  std::set<std::string> activations = {activation_mb(none_run)};
  for (const char* mode : {"selective", "full"}) {
    const fs::path run = dir_ / mode;
    CliRun r = run_tessera(args + run.string() + " --train.recompute " + mode, dir_);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(loss_fields(run / "metrics.jsonl"), none) << mode;
    activations.insert(activation_mb(r));
  }
  EXPECT_EQ(activations.size(), 3u) << "activations (MB) per mode not all different";
  expect_clear_error(run_tessera(args + (dir_ / "bad").string() + " --train.recompute some", dir_),
                     "--train.recompute");
}

// The [gpu] kernel choices only change bf16 on the GPU: on the CPU they train the same bits. They
// are in the resolved config.ini, and a bad value is refused naming the option.
TEST_F(Cli, GpuKernelOptionsLeaveTheCpuRunBitwiseAndAreResolved) {
  const std::string args = "train --data.path " + corpus_ +
                           " --model.d_model 64 --model.layers 2 --model.heads 4 --model.d_ff 256"
                           " --model.seq_len 32 --train.global_batch 8 --train.micro_batch 4"
                           " --train.steps 3 --train.log_interval 1 --run.dir ";
  ASSERT_EQ(run_tessera(args + (dir_ / "default").string(), dir_).exit_code, 0);
  const fs::path opted = dir_ / "opted";
  CliRun r = run_tessera(
      args + opted.string() +
          " --gpu.attention tensor_cores --gpu.dgelu_epilogue true --gpu.peak_tflops 500",
      dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(loss_fields(opted / "metrics.jsonl"), loss_fields(dir_ / "default" / "metrics.jsonl"));
  std::ifstream ini(opted / "config.ini");
  const std::string resolved((std::istreambuf_iterator<char>(ini)), {});
  EXPECT_NE(
      resolved.find("[gpu]\nattention = tensor_cores\ndgelu_epilogue = true\npeak_tflops = 500\n"),
      std::string::npos)
      << resolved;
  // The CPU log has no MFU: the peak is a GPU's.
  EXPECT_EQ(r.out.find("MFU"), std::string::npos) << r.out;
  expect_clear_error(
      run_tessera(args + (dir_ / "bad").string() + " --gpu.attention fast", dir_),
      "--gpu.attention: expected one of cuda_cores, tensor_cores, cudnn, found fast");
  expect_clear_error(
      run_tessera(args + (dir_ / "bad").string() + " --gpu.peak_tflops -5", dir_),
      "--gpu.peak_tflops: expected 0 (from the table) or a positive, finite rate, found -5");
}

// The demo's pipeline at a small scale: real English from Debian's fortunes package (installed by
// scripts/setup.sh) -> tokenize -> train -> the loss ends well below the unigram entropy, which
// a model that ignores context cannot beat.
TEST_F(Cli, FortunesCorpusTrainsWellBelowItsUnigramEntropy) {
  const std::string fortunes = "/usr/share/games/fortunes";
  ASSERT_TRUE(fs::is_directory(fortunes)) << fortunes << " missing: run scripts/setup.sh";
  const std::string prefix = (dir_ / "fortunes").string();
  CliRun enc = run_tessera("tokenize encode --input " + fortunes + " --output " + prefix, dir_);
  ASSERT_EQ(enc.exit_code, 0) << enc.err;
  CliRun r = run_tessera(
      "train --data.path " + prefix + " --run.dir " + (dir_ / "run").string() +
          " --model.d_model 64 --model.layers 2 --model.heads 4 --model.d_ff 256"
          " --model.seq_len 64 --train.global_batch 16 --train.micro_batch 8 --train.steps 400"
          " --optim.lr 3e-3 --optim.warmup 20 --train.log_interval 50 --sample.tokens 40",
      dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  double loss = 0, entropy = 0;
  const size_t k = r.out.find("final loss ");
  ASSERT_NE(k, std::string::npos) << r.out;
  ASSERT_EQ(std::sscanf(r.out.c_str() + k,
                        "final loss %lf nats/token (mean of steps 351-400, the last log "
                        "interval) vs the corpus' unigram entropy %lf",
                        &loss, &entropy),
            2)
      << r.out.substr(k);
  EXPECT_GT(entropy, 3.0);  // English bytes: about 4.3-4.8 bits
  EXPECT_LT(loss, entropy - 0.5) << r.out;
  EXPECT_NE(r.out.find("sample ("), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("checkpoint: none saved (--checkpoint.interval 0): this run's weights are "
                       "not kept"),
            std::string::npos)
      << r.out;
  // The loss curve: each tenth of the steps in turn, its mean loss, and a bar that spans the
  // rows' range: 1 '#' at the lowest loss, 50 at the highest.
  const std::string header = "loss curve (mean of each tenth of the run's steps; bars from ";
  ASSERT_NE(r.out.find(header), std::string::npos) << r.out;
  std::istringstream curve(r.out.substr(r.out.find(header) + header.size()));
  std::string line;
  double lo = 0, hi = 0;
  std::getline(curve, line);
  ASSERT_EQ(std::sscanf(line.c_str(), "%lf to %lf):", &lo, &hi), 2) << line;
  ASSERT_GT(hi, lo + 1) << line;
  std::vector<size_t> bars;
  long long next = 1;  // the first step of the next row
  for (long long first = 0, last = 0;
       std::getline(curve, line) && line.rfind("  steps ", 0) == 0;) {
    double row = 0;
    ASSERT_EQ(std::sscanf(line.c_str(), "  steps %lld-%lld %lf", &first, &last, &row), 3) << line;
    EXPECT_EQ(first, next) << line;
    next = last + 1;
    bars.push_back(static_cast<size_t>(std::count(line.begin(), line.end(), '#')));
    // Within one '#': the losses printed have 4 decimals, the bars were drawn from all.
    EXPECT_NEAR(static_cast<double>(bars.back()), 1 + std::lround(49 * (row - lo) / (hi - lo)), 1)
        << line;
  }
  ASSERT_EQ(bars.size(), 10u) << r.out;
  EXPECT_EQ(next, 401) << r.out;          // the rows cover all 400 steps
  EXPECT_EQ(bars.front(), 50u) << r.out;  // the untrained model's loss is the highest
  EXPECT_EQ(*std::min_element(bars.begin(), bars.end()), 1u) << r.out;
}

// --- Data ------------------------------------------------------------------------------------

// Ids beyond the vocabulary stop the run before its first step, naming the file and position.
TEST_F(Cli, TokenIdsBeyondTheVocabularyAreRejectedBeforeTraining) {
  CliRun r = run_tessera(tiny_args() + " --model.vocab_size 150", dir_);
  expect_clear_error(r, corpus_ + ".bin");
  // The ids of the whole corpus are named, for a vocabulary that fits them at the first try.
  EXPECT_NE(r.err.find("expected ids in [0, --model.vocab_size 150) (its ids run from 0 to 256; "
                       "was it made with another tokenizer?)"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.out.find("step "), std::string::npos) << r.out;
  // On two ranks, in a run directory whose cache has no record of the corpus (the run above
  // left one, which spares the pass), each checks half of the tokens; the one whose half holds
  // the first bad id names it, every rank exits 2.
  std::string fresh = tiny_args() + " --model.vocab_size 150";
  const std::string run_dir = (dir_ / "run").string();
  fresh.replace(fresh.find(run_dir), run_dir.size(), (dir_ / "two").string());
  CliRun two = run_mpi(2, fresh, dir_);
  EXPECT_EQ(two.exit_code, 2) << two.err;
  EXPECT_NE(two.err.find("expected ids in [0, --model.vocab_size 150) (the ids of the tokens this "
                         "rank read run from 0 to "),
            std::string::npos)
      << two.err;
  EXPECT_NE(two.err.find("; the ranks share this check, this one read tokens [0, "),
            std::string::npos)
      << two.err;
  EXPECT_EQ(two.err.find("ranks failed"), std::string::npos)
      << "not a machine's fault: " << two.err;
  EXPECT_EQ(two.out.find("step "), std::string::npos) << two.out;
  // A good start on two ranks records the corpus' id range made of both halves, as one process
  // does, so that a resume reads no token for the check.
  std::string good = tiny_args() + " --train.steps 1";
  good.replace(good.find(run_dir), run_dir.size(), (dir_ / "good").string());
  ASSERT_EQ(run_mpi(2, good, dir_).exit_code, 0);
  const std::vector<fs::path> records = id_records(dir_ / "good" / "data_cache");
  ASSERT_EQ(records.size(), 1u);
  expect_record_of_whole_corpus(records[0], corpus_);
}

// The ranks share the walk over a corpus' index: the rank whose part holds a damaged pointer
// names it and the sequences it read; every rank exits 2 before training.
TEST_F(Cli, DamagedIndexIsNamedByTheRankWhosePartOfTheWalkHoldsIt) {
  const std::string damaged = (dir_ / "damaged").string();
  fs::copy_file(corpus_ + ".bin", damaged + ".bin");
  std::ifstream in(corpus_ + ".idx", std::ios::binary);
  std::string idx((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  int64_t seqs = 0, pointer = 0;
  std::memcpy(&seqs, idx.data() + 18, 8);
  ASSERT_EQ(seqs, 40);
  const size_t at = 34 + 4 * 40 + 8 * 30;  // sequence 30's pointer: in rank 1's part, [20, 40)
  std::memcpy(&pointer, idx.data() + at, 8);
  pointer += 2;
  std::memcpy(idx.data() + at, &pointer, 8);
  std::ofstream(damaged + ".idx", std::ios::binary) << idx;
  const CliRun two = run_mpi(2, tiny_args("2", damaged), dir_);
  EXPECT_EQ(two.exit_code, 2) << two.err;
  const size_t message = two.err.find("tessera: error: corpus " + damaged + ".idx: ");
  ASSERT_NE(message, std::string::npos) << two.err;
  EXPECT_EQ(two.err.find("tessera: error:", message + 1), std::string::npos) << "once: " << two.err;
  EXPECT_NE(two.err.find("pointer of sequence 30 is " + std::to_string(pointer) + ", expected " +
                         std::to_string(pointer - 2)),
            std::string::npos)
      << two.err;
  EXPECT_NE(two.err.find("; the ranks share this check, this one read sequences [20, 40) of 40"),
            std::string::npos)
      << two.err;
  EXPECT_EQ(two.out.find("step "), std::string::npos) << two.out;
  // Rank 0 passes its part and goes on to fail on a corpus missing on every rank: the damage
  // rank 1 found is the message, not rank 0's (nor a failure of rank 0's machine alone).
  std::string blend = tiny_args("2", "\"" + damaged + " " + (dir_ / "missing").string() + "\"");
  const CliRun both = run_mpi(2, blend, dir_);
  EXPECT_EQ(both.exit_code, 2) << both.err;
  EXPECT_NE(both.err.find("pointer of sequence 30 is"), std::string::npos) << both.err;
  EXPECT_EQ(both.err.find("missing"), std::string::npos) << both.err;
  EXPECT_EQ(both.err.find("ranks failed"), std::string::npos) << both.err;
}

// A corpus of one sample has none to spare for validation: it trains, and says so.
TEST_F(Cli, OneSampleCorpusTrainsAndSaysItHasNoValidation) {
  const std::string one = (dir_ / "one").string();
  {
    IndexedDatasetWriter w(one, DType::U16);
    const std::vector<int32_t> doc = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 256};
    w.add_document(doc);
    w.finish();
  }
  CliRun r = run_tessera(tiny_args("2", one) + " --train.steps 2 --train.eval_interval 1", dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("validation: none (no training corpus has 2 samples"), std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("validation |"), std::string::npos) << r.out;
  // Nothing held out by choice is said too (it was not said at all).
  fs::remove_all(dir_ / "run");
  r = run_tessera(tiny_args() + " --train.steps 1 --train.eval_interval 1 --data.valid_fraction 0",
                  dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("validation: none (--data.valid_fraction 0 and no --data.valid_path)"),
            std::string::npos)
      << r.out;
  // Fewer held out than a validation reads: they are read round and round, and it is said.
  fs::remove_all(dir_ / "run");
  r = run_tessera(tiny_args() + " --train.steps 1 --train.eval_interval 1 --train.eval_batches 50",
                  dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("validation: note: each validation reads 200 samples (--train.eval_batches "
                       "50 x --train.global_batch 4), round and round over these "),
            std::string::npos)
      << r.out;
}

// Options this run does not use are not passed over in silence: a tokenizer that is not there is
// refused though the run samples nothing (`tessera sample` takes it from config.ini), a
// validation corpus that no validation reads is named (and parsed), and so is a held-out
// fraction beside validation corpora.
TEST_F(Cli, TokenizerIsCheckedAndAnUnreadValidationCorpusIsNamed) {
  const std::string missing = (dir_ / "no.model").string();
  expect_clear_error(run_tessera(tiny_args() + " --data.tokenizer " + missing, dir_), missing);
  CliRun r = run_tessera(tiny_args() + " --train.steps 1 --train.eval_interval 0 " +
                             "--data.valid_path " + corpus_ + " --data.valid_fraction 0.3",
                         dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("validation: none (--train.eval_interval is 0, so --data.valid_path is "
                       "not read)"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("validation: note: --data.valid_fraction 0.3 is not used: "
                       "--data.valid_path gives the validation corpora"),
            std::string::npos)
      << r.out;
  // Not read, but parsed: a malformed blend is named all the same.
  fs::remove_all(dir_ / "run");
  expect_clear_error(run_tessera(tiny_args() + " --train.steps 1 --train.eval_interval 0 " +
                                     "--data.valid_path \"0x10 " + corpus_ + "\"",
                                 dir_),
                     "--data.valid_path");
}

// A corpus listed twice in a blend, by any path, is refused: each copy would run its own epochs.
// A validation corpus that is also a training corpus is allowed, and said.
TEST_F(Cli, CorpusTwiceInABlendIsRefusedAndValidationOnTrainingDataIsSaid) {
  const std::string link = (dir_ / "again").string();
  fs::create_symlink(corpus_ + ".bin", link + ".bin");
  fs::create_symlink(corpus_ + ".idx", link + ".idx");
  expect_clear_error(
      run_tessera(tiny_args("2", "\"0.5 " + corpus_ + " 0.5 " + link + "\"") + " --train.steps 1",
                  dir_),
      "--data.path: " + link + " is the corpus " + corpus_ +
          " again; give each corpus once (with the sum of its weights)");
  // A glob that matches a corpus the blend names already: both are named.
  const std::string glob = (dir_ / "corp*").string();
  expect_clear_error(
      run_tessera(tiny_args("2", "\"0.5 " + corpus_ + " 0.5 " + glob + "\"") + " --train.steps 1",
                  dir_),
      "--data.path: " + corpus_ + " (matched by " + glob + ") is the corpus " + corpus_ + " again");
  // A file a glob matches that is no corpus is named with the glob, which the user wrote.
  std::ofstream(dir_ / "corpus_notes.bin") << "not tokens";
  expect_clear_error(run_tessera(tiny_args("2", "\"" + glob + "\"") + " --train.steps 1", dir_),
                     "(--data.path: matched by " + glob + ")");
  fs::remove(dir_ / "corpus_notes.bin");
  CliRun r = run_tessera(tiny_args() +
                             " --train.steps 1 --train.eval_interval 1 "
                             "--data.valid_path " +
                             link,
                         dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("validation: note: " + link + " is also a training corpus (" + corpus_ +
                       "), so the validation loss is over samples the run trains on"),
            std::string::npos)
      << r.out;
}

// A run that stops between two log lines (here --train.exit_after; a signal or the time limit
// alike) logs and records the step it stops at, with the mean of the steps since the last line,
// which is its final loss.
TEST_F(Cli, ARunThatStopsBetweenLogLinesRecordsItsLastStep) {
  const CliRun r = run_tessera(
      tiny_args() + " --train.steps 20 --train.log_interval 8 --train.exit_after 5", dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("step      5/20 | loss "), std::string::npos) << r.out;
  EXPECT_EQ(losses_of(dir_ / "run" / "metrics.jsonl").size(), 2u);  // steps 1 and 5
  const size_t k = r.out.find("step      5/20 | loss ");
  ASSERT_NE(k, std::string::npos);
  double last = 0, mean = 0, final_loss = 0;
  ASSERT_EQ(std::sscanf(r.out.c_str() + k, "step      5/20 | loss %lf (mean %lf)", &last, &mean), 2)
      << r.out.substr(k, 80);
  // The mean runs from the interval's start across the run's first line (step 1), as at step 8.
  const std::string label = " nats/token (mean of steps 1-5, the last log interval)";
  const size_t f = r.out.find("final loss ");
  ASSERT_NE(f, std::string::npos) << r.out;
  ASSERT_EQ(std::sscanf(r.out.c_str() + f, "final loss %lf", &final_loss), 1);
  EXPECT_EQ(r.out.substr(r.out.find(" nats/token", f), label.size()), label)
      << r.out.substr(f, 100);
  EXPECT_NEAR(final_loss, mean, 1e-4);

  // A step that stops the run and was skipped (its line and record say so) gets no second line.
  fs::remove_all(dir_ / "run");
  const CliRun skipped = run_tessera(tiny_args() +
                                         " --train.steps 20 --train.log_interval 8 "
                                         "--train.exit_after 5 --train.nan_policy skip "
                                         "--debug.inject_nan 0:5",
                                     dir_);
  ASSERT_EQ(skipped.exit_code, 0) << skipped.err;
  EXPECT_EQ(skipped.out.find("step      5/20 | loss "), std::string::npos) << skipped.out;
  EXPECT_EQ(losses_of(dir_ / "run" / "metrics.jsonl").size(), 1u);  // step 1; 5 is "skipped"
}

// A run started afresh in a directory that holds an earlier run's metrics.jsonl (no checkpoint)
// keeps those records beside its own, instead of appending a second series to them.
TEST_F(Cli, FreshRunKeepsAnEarlierRunsMetricsApart) {
  const std::string two_steps = tiny_args() + " --train.steps 2 --train.log_interval 1";
  ASSERT_EQ(run_tessera(two_steps, dir_).exit_code, 0);
  const fs::path metrics = dir_ / "run" / "metrics.jsonl";
  const std::vector<std::string> first = loss_fields(metrics);
  ASSERT_EQ(first.size(), 2u);
  CliRun again = run_tessera(two_steps + " --optim.lr 1e-3", dir_);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("kept as " + metrics.string() + ".1"), std::string::npos) << again.out;
  EXPECT_EQ(loss_fields(metrics.string() + ".1"), first);
  EXPECT_EQ(loss_fields(metrics).size(), 2u);
}

// A held-out split gives a validation loss in the log and in metrics.jsonl, every interval and
// after the last step.
TEST_F(Cli, ValidationLossIsLoggedAndRecorded) {
  CliRun r = run_tessera(tiny_args() +
                             " --train.steps 6 --train.eval_interval 4 --train.eval_batches 2"
                             " --data.valid_fraction 0.1",
                         dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("validation | step 4 | loss "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("validation | step 6 | loss "), std::string::npos) << r.out;
  std::ifstream metrics(dir_ / "run" / "metrics.jsonl");
  int records = 0;
  for (std::string line; std::getline(metrics, line);)
    records += line.find("\"valid_loss\":") != std::string::npos;
  EXPECT_EQ(records, 2);
}

// Two corpora in two formats, blended by weight: both are named at start with their weights.
TEST_F(Cli, BlendOfAMegatronCorpusAndAnLlmcShardTrains) {
  const std::string shard = llmc_shard("shard.bin", 0, 200);
  CliRun r = run_tessera(
      "train --data.path \"0.75 " + corpus_ + " 0.25 " + shard + "\" --run.dir " +
          (dir_ / "run").string() +
          " --model.d_model 32 --model.layers 2 --model.heads 2 --model.d_ff 64"
          " --model.seq_len 16 --train.global_batch 4 --train.micro_batch 2 --train.steps 3",
      dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("(Megatron indexed dataset)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(shard + " (llm.c shard): 3000 tokens"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("weight 0.750"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("weight 0.250"), std::string::npos) << r.out;
}

// A model of GPT-2's ids (an llm.c shard) trained without --data.tokenizer: its ids are no
// bytes, so its sample is printed as ids drawn from the whole vocabulary, where it was decoded
// as bytes from the first 257 ids only; a text prompt, which it cannot read, is refused.
TEST_F(Cli, SampleOfAModelWhoseIdsAreNotBytesIsPrintedAsIds) {
  const std::string shard = llmc_shard("gpt2.bin", 600, 400);
  const std::string a = tiny_args("2", shard) + " --model.vocab_size 1000 --train.steps 2";
  const CliRun r = run_tessera(a + " --sample.tokens 6", dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const size_t k = r.out.find("token ids (no --data.tokenizer to decode them):");
  ASSERT_NE(k, std::string::npos) << r.out;
  std::istringstream line(r.out.substr(r.out.find(':', k) + 1, r.out.find('\n', k) - k));
  std::vector<int> drawn;
  for (int id = 0; line >> id;) drawn.push_back(id);
  EXPECT_EQ(drawn.size(), 6u) << r.out;
  EXPECT_TRUE(std::any_of(drawn.begin(), drawn.end(), [](int id) { return id >= 257; })) << r.out;
  fs::remove_all(dir_ / "run");
  expect_clear_error(run_tessera(a + " --sample.tokens 6 --sample.prompt hello", dir_),
                     "--sample.prompt: a model of --model.vocab_size 1000 without "
                     "--data.tokenizer reads token ids, not text");
}

const char* const kWords[] = {"kalo", "mine", "ruta", "shipo", "anel", "orus",
                              "ta",   "ne",   "po",   "elmi",  "kash", "lo"};

// A corpus that holds ids beyond the tokenizer that decodes the samples, or whose documents end
// with another id than its end of document, was made by another tokenizer: said at the start of
// training, and eval then gives no bits per byte (its ids are not bytes). The fixture's byte-level
// corpus (each document ends with 256) gets no such note, and eval gives its bits per byte; with a
// SentencePiece model given (whose documents end with 2), it gets one.
TEST_F(Cli, ACorpusOfAnotherTokenizerIsSaid) {
  const std::string spm = (dir_ / "spm").string();
  IndexedDatasetWriter w(spm, DType::U16);
  std::mt19937_64 rng(2);
  for (int d = 0; d < 40; ++d) {
    std::vector<int32_t> doc(50 + rng() % 50);
    for (auto& t : doc) t = 3 + static_cast<int32_t>(rng() % 290);
    doc.push_back(2);  // SentencePiece's </s>
    w.add_document(doc);
  }
  w.finish();
  const std::string a = " --model.vocab_size 300 --train.steps 2 --checkpoint.interval 2";
  const CliRun r = run_tessera(tiny_args("2", spm) + a, dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Its ids run beyond the byte-level tokenizer's 257 (an id is certain where an end is not).
  const size_t said = r.out.find("data: note: " + spm + " holds id ");
  ASSERT_NE(said, std::string::npos) << r.out;
  EXPECT_NE(r.out.find("), beyond the 257 ids of the byte-level tokenizer, which decodes this "
                       "model's samples: if it was encoded with a SentencePiece model, give that "
                       "as --data.tokenizer\n",
                       said),
            std::string::npos)
      << r.out;
  const std::string eval = "eval --checkpoint " + (dir_ / "run" / "checkpoints").string();
  const CliRun e = run_tessera(eval + " --data.path " + spm, dir_);
  ASSERT_EQ(e.exit_code, 0) << e.err;
  EXPECT_NE(e.out.find("eval: note: " + spm + " holds id "), std::string::npos) << e.out;
  EXPECT_NE(e.out.find("--data.tokenizer; bits per byte left out, as its ids may not be bytes\n"),
            std::string::npos)
      << e.out;
  const auto loss_line = [](const std::string& out) {
    const size_t k = out.find("eval loss ");
    return k == std::string::npos ? std::string() : out.substr(k, out.find('\n', k) - k);
  };
  EXPECT_EQ(loss_line(e.out).find("bits per byte"), std::string::npos) << e.out;

  fs::remove_all(dir_ / "run");
  const CliRun bytes = run_tessera(tiny_args() + a, dir_);
  ASSERT_EQ(bytes.exit_code, 0) << bytes.err;
  EXPECT_EQ(bytes.out.find("note: the documents of"), std::string::npos) << bytes.out;
  const CliRun be = run_tessera(eval + " --data.path " + corpus_, dir_);
  ASSERT_EQ(be.exit_code, 0) << be.err;
  EXPECT_NE(loss_line(be.out).find(" bits per byte"), std::string::npos) << be.out;
  EXPECT_EQ(be.out.find("note: the documents of"), std::string::npos) << be.out;

  // A SentencePiece model given for the byte-level corpus: its </s> is 2.
  std::string text;
  for (int line = 0; line < 300; ++line, text += '\n')
    for (int w = 0; w < 12; ++w) text.append(w ? " " : "").append(kWords[(line * 7 + w) % 12]);
  std::ofstream(dir_ / "text.txt") << text;
  const std::string model = (dir_ / "m").string();
  ASSERT_EQ(run_tessera("tokenize train --vocab_size 300 --input " + (dir_ / "text.txt").string() +
                            " --output " + model,
                        dir_)
                .exit_code,
            0);
  fs::remove_all(dir_ / "run");
  const CliRun given = run_tessera(tiny_args() + a + " --data.tokenizer " + model + ".model", dir_);
  ASSERT_EQ(given.exit_code, 0) << given.err;
  EXPECT_NE(given.out.find("data: note: the documents of " + corpus_ +
                           " end with id 256, not with 2, the end of document of SentencePiece "
                           "model " +
                           model +
                           ".model, which decodes this model's samples: if it was encoded with "
                           "another one, give that as --data.tokenizer\n"),
            std::string::npos)
      << given.out;
}

// --- Profiling --------------------------------------------------------------------------------

// What a profiler sees: run under an NVTX tool (loaded as Nsight Systems loads its own), the main
// thread opens a range per step and, nested in it, the data, each microbatch's forward and
// backward with each layer's inside, the gradient reduction's wait, the norm and the optimizer;
// then the validation and the checkpoint save. Every pop closes its thread's last push.
TEST_F(Cli, ProfilersSeeStepsMicrobatchesAndLayersAsNvtxRanges) {
#ifndef NVTX_RECORDER
  GTEST_SKIP() << "built without NVTX's headers (nvtx3/nvToolsExt.h, from the CUDA toolkit): "
                  "tessera opens no ranges";
#else
  const fs::path log = dir_ / "nvtx.log";
  const CliRun r = run_tessera_with(
      std::string("env NVTX_INJECTION64_PATH=") + NVTX_RECORDER +
          " TESSERA_NVTX_LOG=" + log.string() + " " + TESSERA_BIN,
      tiny_args() + " --train.steps 2 --train.eval_interval 2 --checkpoint.interval 2", dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Each push as "PARENT/.../NAME PAYLOAD", from the log's stack per thread.
  std::map<std::string, std::vector<std::string> > stacks;
  std::multiset<std::string> pushed;
  std::ifstream in(log);
  std::string kind, thread, payload, name;
  while (in >> kind >> thread) {
    std::vector<std::string>& stack = stacks[thread];
    if (kind == "pop") {
      ASSERT_FALSE(stack.empty()) << "a pop without a push on thread " << thread;
      stack.pop_back();
      continue;
    }
    ASSERT_EQ(kind, "push");
    in >> payload;
    std::getline(in, name);
    std::string path;
    for (const std::string& parent : stack) path.append(parent).append("/");
    pushed.insert(path + name.substr(1) + " " + payload);
    stack.push_back(name.substr(1));
  }
  for (const auto& [t, stack] : stacks) EXPECT_TRUE(stack.empty()) << "left open on " << t;
  const auto count = [&](const std::string& what) { return pushed.count(what); };
  for (const char* step : {"1", "2"}) {
    const std::string s = std::string("step ") + step;
    EXPECT_EQ(count(s), 1u) << s;
  }
  EXPECT_EQ(count("step/data -"), 2u);
  for (const char* mb : {"0", "1"}) {  // 4 sequences in microbatches of 2
    const std::string f = std::string("step/microbatch forward ") + mb;
    const std::string b = std::string("step/microbatch backward ") + mb;
    EXPECT_EQ(count(f), 2u) << f;
    EXPECT_EQ(count(b), 2u) << b;
  }
  EXPECT_EQ(count("step/microbatch forward/embedding forward -"), 4u);
  EXPECT_EQ(count("step/microbatch forward/head and loss forward -"), 4u);
  EXPECT_EQ(count("step/microbatch backward/head and loss backward -"), 4u);
  EXPECT_EQ(count("step/microbatch backward/embedding backward -"), 4u);
  for (const char* layer : {"0", "1"}) {
    EXPECT_EQ(count(std::string("step/microbatch forward/layer forward ") + layer), 4u) << layer;
    EXPECT_EQ(count(std::string("step/microbatch backward/layer backward ") + layer), 4u) << layer;
  }
  for (const char* each :
       {"step/gradient reduction wait -", "step/gradient norm -", "step/optimizer -"})
    EXPECT_EQ(count(each), 2u) << each;
  EXPECT_EQ(count("validation -"), 1u);
  EXPECT_GE(count("validation/microbatch forward 0"), 1u);
  EXPECT_EQ(count("checkpoint save 2"), 1u);
  EXPECT_EQ(count("checkpoint save/checkpoint write -"), 1u);
  if (HasFailure())
    for (const std::string& p : pushed) ADD_FAILURE() << p;
#endif
}

// --- Under mpirun -------------------------------------------------------------------------

// The issue's launch line, at a small scale: the same global batch on 4 ranks as TP 2 x PP 2
// gives the losses of one rank, and rank 0 prints the grid and the pipeline's bubble.
TEST_F(Cli, MpirunTp2Pp2MatchesOneRank) {
  const std::string args = "train --data.path " + corpus_ + " --run.dir " +
                           (dir_ / "run").string() +
                           " --model.vocab_size 258 --model.d_model 32 --model.layers 3"
                           " --model.heads 2 --model.d_ff 64 --model.seq_len 16"
                           " --train.global_batch 4 --train.micro_batch 2 --train.threads 1"
                           " --train.steps 6 --train.log_interval 1";
  const std::vector<double> one = one_rank_losses(args, 6);
  ASSERT_FALSE(HasFailure());
  const CliRun r = expect_losses_of(one, 4, args + " --parallel.tp 2 --parallel.pp 2");
  EXPECT_NE(r.out.find("tp groups: [0 1] [2 3]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pp groups: [0 2] [1 3]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("layers 0-1, 1: layer 2), uneven split"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1F1B over 2 microbatches of 2; bubble 33.3%"), std::string::npos) << r.out;
  ASSERT_NE(r.out.find("model:"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("model:"), r.out.rfind("model:")) << "only rank 0 logs:\n" << r.out;
  EXPECT_NE(r.out.find("tensor parallel: 2 ranks; every rank keeps every token"), std::string::npos)
      << r.out;
  // The memory estimate of the largest rank: the same at the start, at the end, and in a check.
  const auto estimate = [](const std::string& out, size_t from) {
    const size_t at = out.find("estimate ", from);
    return at == std::string::npos ? "none in: " + out : out.substr(at, out.find('\n', at) - at);
  };
  const size_t start = r.out.find("\nmemory (host): estimate ");
  ASSERT_NE(start, std::string::npos) << r.out;
  EXPECT_NE(estimate(r.out, start).find(" for the largest rank (TP rank 0 of stage 0) = "),
            std::string::npos)
      << r.out;
  const size_t end = r.out.find("\npeak host memory of tessera's tensors, the most of any rank, ");
  ASSERT_NE(end, std::string::npos) << r.out;
  EXPECT_EQ(estimate(r.out, end), estimate(r.out, start));
  const CliRun check = run_tessera(args + " --parallel.tp 2 --parallel.pp 2 --check 4", dir_);
  EXPECT_EQ(check.exit_code, 0) << check.err;
  EXPECT_EQ(estimate(check.out, check.out.find("\nmemory (host): ")), estimate(r.out, start));

  // With sequence parallelism: the same losses, and the log says what each rank keeps.
  const CliRun sp = expect_losses_of(
      one, 4, args + " --parallel.tp 2 --parallel.pp 2 --parallel.sequence_parallel true");
  EXPECT_NE(sp.out.find("tensor parallel: 2 ranks; sequence parallel: each keeps 16 of a "
                        "micro-batch's 32 tokens between the layers"),
            std::string::npos)
      << sp.out;
}

// The interleaved schedule from the command line: two stages of two model chunks each follow the
// one-rank run, in training, in validation (forwards only, in groups of one microbatch per
// stage) and in the sample at the end, and the log names each stage's chunks, the schedule and its
// smaller bubble.
TEST_F(Cli, InterleavedPipelineFollowsOneRankAndSaysWhereEachChunkIs) {
  const std::string args = "train --data.path " + corpus_ + " --run.dir " +
                           (dir_ / "run").string() +
                           " --model.vocab_size 258 --model.d_model 32 --model.layers 4"
                           " --model.heads 2 --model.d_ff 64 --model.seq_len 16"
                           " --train.global_batch 4 --train.micro_batch 1 --train.threads 1"
                           " --train.steps 6 --train.log_interval 1 --train.eval_interval 6"
                           " --train.eval_batches 3 --sample.tokens 12";
  CliRun single;
  const std::vector<double> one = one_rank_losses(args, 6, &single);
  ASSERT_FALSE(HasFailure());
  const size_t validation = single.out.find("validation | step 6 | loss ");
  ASSERT_NE(validation, std::string::npos) << single.out;
  const CliRun r = expect_losses_of(one, 2, args + " --parallel.pp 2 --parallel.virtual_stages 2");
  EXPECT_NE(r.out.find("pipeline: 2 stages x 2 model chunks, interleaved (0: layers 0 + 2, 1: "
                       "layers 1 + 3); interleaved 1F1B over 4 microbatches of 1; bubble 11.1%"),
            std::string::npos)
      << r.out;
  const std::string line =
      single.out.substr(validation, single.out.find('\n', validation) - validation);
  EXPECT_NE(r.out.find(line), std::string::npos) << line << "\n" << r.out;
  // The sample at the end goes round the ring once per chunk for every token: the same text.
  const size_t sample = single.out.find("sample (");
  ASSERT_NE(sample, std::string::npos) << single.out;
  EXPECT_NE(r.out.find(single.out.substr(sample)), std::string::npos) << single.out << r.out;
  // Chunks of as many layers share their activation sets; with 5 layers stage 0's have 2 and 1,
  // which cannot: said, with the layer counts that would.
  const std::string note = "pipeline: note: the chunks of a stage share their activation sets";
  EXPECT_EQ(r.out.find(note), std::string::npos) << r.out;
  std::string five = args;
  five.replace(five.find("--model.layers 4"), 16, "--model.layers 5");
  const CliRun uneven =
      run_tessera(five + " --check 2 --parallel.pp 2 --parallel.virtual_stages 2", dir_);
  ASSERT_EQ(uneven.exit_code, 0) << uneven.err;
  EXPECT_NE(uneven.out.find(note + " only when they have as many layers; with --model.layers a "
                                   "multiple of --parallel.pp x --parallel.virtual_stages = 4 "
                                   "every stage's would"),
            std::string::npos)
      << uneven.out;
}

// Sequence parallelism with bf16 on the host (each op in float32, rounded; the reduce-scatters
// summed in float32 and rounded once, as are the LayerNorms' gradients): the losses of the same
// run without it, within bf16's rounding.
TEST_F(Cli, SequenceParallelInBfloat16FollowsTheRunWithout) {
  const std::string args = "train --data.path " + corpus_ +
                           " --model.vocab_size 258 --model.d_model 32 --model.layers 2"
                           " --model.heads 2 --model.d_ff 64 --model.seq_len 16"
                           " --train.global_batch 4 --train.micro_batch 2 --train.threads 1"
                           " --train.steps 10 --train.log_interval 1 --train.precision bf16"
                           " --parallel.tp 2 --parallel.sequence_parallel ";
  std::vector<double> losses[2];
  for (int sp = 0; sp < 2; ++sp) {
    const fs::path run = dir_ / ("run" + std::to_string(sp));
    const CliRun r =
        run_mpi(2, args + (sp ? "true" : "false") + " --run.dir " + run.string(), dir_);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    // The option took effect (equal losses are no proof where it was ignored).
    EXPECT_EQ(r.out.find("sequence parallel: each keeps 16 of a micro-batch's 32 tokens") !=
                  std::string::npos,
              sp == 1)
        << r.out;
    losses[sp] = losses_of(run / "metrics.jsonl");
  }
  ASSERT_EQ(losses[0].size(), 10u);
  ASSERT_EQ(losses[1].size(), 10u);
  for (size_t i = 0; i < 10; ++i) EXPECT_NEAR(losses[1][i], losses[0][i], 2e-3 * losses[0][i]);
}

// llm.c's way of naming its shards, a glob: every shard it matches is a corpus, weighted by its
// tokens, and the log lists them in name order.
TEST_F(Cli, GlobOfShardsTrainsOnEveryShardWeightedByItsTokens) {
  std::mt19937_64 rng(3);
  for (const auto& [name, tokens] :
       {std::pair{"train_000002.bin", 3000}, {"train_000001.bin", 1000}}) {
    std::vector<uint16_t> ids(static_cast<size_t>(tokens));
    for (auto& t : ids) t = static_cast<uint16_t>(rng() % 200);
    write_llmc_shard((dir_ / name).string(), ids);
  }
  const CliRun r = run_tessera(
      "train --data.path \"" + (dir_ / "train_*.bin").string() + "\" --run.dir " +
          (dir_ / "run").string() +
          " --model.d_model 32 --model.layers 1 --model.heads 2 --model.d_ff 64"
          " --model.seq_len 16 --train.global_batch 4 --train.micro_batch 4 --train.threads 1"
          " --train.steps 2 --train.eval_interval 0",
      dir_);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const size_t first = r.out.find("train_000001.bin (llm.c shard): 1000 tokens");
  const size_t second = r.out.find("train_000002.bin (llm.c shard): 3000 tokens");
  ASSERT_NE(first, std::string::npos) << r.out;
  ASSERT_NE(second, std::string::npos) << r.out;
  EXPECT_LT(first, second) << r.out;
  EXPECT_NE(r.out.find("weight 0.250", first), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("weight 0.750", second), std::string::npos) << r.out;
  const CliRun none = run_tessera("train --data.path \"" + (dir_ / "valid_*.bin").string() +
                                      "\" --run.dir " + (dir_ / "none").string(),
                                  dir_);
  EXPECT_EQ(none.exit_code, 2) << none.err;
  EXPECT_NE(none.err.find("--data.path: " + (dir_ / "valid_*.bin").string() + " matches no file"),
            std::string::npos)
      << none.err;
}

// The default bucket size: 25 MB, and with ZeRO-1 at least 2^20 values per DP rank, 33.6 MB at
// DP 8; a size given is taken as given.
TEST_F(Cli, ZeroOneBucketsHoldAMillionValuesPerDataParallelRankByDefault) {
  const std::string args = "train --data.path " + corpus_ + " --run.dir " +
                           (dir_ / "run").string() +
                           " --model.d_model 32 --model.layers 2 --model.heads 2 --model.d_ff 64"
                           " --model.seq_len 16 --train.global_batch 8 --train.micro_batch 1"
                           " --train.threads 1 --train.steps 1 --checkpoint.resume none";
  const CliRun eight = run_mpi(8, args + " --parallel.zero 1", dir_);
  ASSERT_EQ(eight.exit_code, 0) << eight.err;
  EXPECT_NE(eight.out.find("data parallel: 8 replicas, 1 gradient bucket closing at 33.6 MB"),
            std::string::npos)
      << eight.out;
  fs::remove_all(dir_ / "run");
  const CliRun plain = run_mpi(8, args, dir_);
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_NE(plain.out.find("gradient bucket closing at 25.0 MB"), std::string::npos) << plain.out;
  fs::remove_all(dir_ / "run");
  const CliRun given = run_mpi(8, args + " --parallel.zero 1 --parallel.bucket_mb 25", dir_);
  ASSERT_EQ(given.exit_code, 0) << given.err;
  EXPECT_NE(given.out.find("gradient bucket closing at 25.0 MB"), std::string::npos) << given.out;
}

// A bad layout stops every rank with a non-zero exit, none left waiting (run_mpi's limit, 120 s,
// is the guard against a hang); the message comes once.
void expect_layout_error(const CliRun& r, const std::string& what) {
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.exit_code, 124) << "timed out: a rank hung";
  const size_t first = r.err.find("tessera: error: ");
  ASSERT_NE(first, std::string::npos) << r.err;
  EXPECT_EQ(first, r.err.rfind("tessera: error: ")) << "printed by more than one rank:\n" << r.err;
  EXPECT_NE(r.err.find(what), std::string::npos) << "message does not name " << what << ":\n"
                                                 << r.err;
}

TEST_F(Cli, MpirunWorldSizeNotTpTimesPpTimesDpStopsEveryRank) {
  expect_layout_error(run_mpi(3, tiny_args() + " --parallel.tp 2 --model.vocab_size 258", dir_),
                      "does not divide the world size 3");
  expect_layout_error(run_mpi(4, tiny_args() + " --parallel.dp 3", dir_), "the world size is 4");
  std::string odd = tiny_args();
  odd.replace(odd.find("--model.seq_len 16"), 18, "--model.seq_len 15");
  expect_layout_error(
      run_mpi(2, odd + " --parallel.tp 2 --model.vocab_size 258 --parallel.sequence_parallel true",
              dir_),
      "--model.seq_len: expected a multiple of --parallel.tp = 2 with "
      "--parallel.sequence_parallel");
  // Model chunks need stages to interleave over, a layer each, and two groups of microbatches.
  expect_layout_error(run_mpi(2, tiny_args() + " --parallel.virtual_stages 2", dir_),
                      "--parallel.virtual_stages: expected 1 with --parallel.pp 1");
  expect_layout_error(
      run_mpi(2, tiny_args() + " --parallel.pp 2 --parallel.virtual_stages 2", dir_),
      "--model.layers: expected at least one layer per model chunk, --parallel.pp x "
      "--parallel.virtual_stages = 2 x 2, found 2");
  std::string deep = tiny_args();
  deep.replace(deep.find("--model.layers 2"), 16, "--model.layers 8");
  std::string small = deep, six = deep;
  small.replace(small.find("--train.micro_batch 2"), 21, "--train.micro_batch 1");
  six.replace(six.find("--train.global_batch 4"), 22, "--train.global_batch 6");
  expect_layout_error(
      run_mpi(4, small + " --parallel.pp 4 --parallel.virtual_stages 2", dir_),
      "--train.global_batch: with --parallel.virtual_stages 2 and --parallel.pp 4, expected a "
      "multiple of 4 microbatches, at least 8 (the interleaved schedule runs them in groups of "
      "one per stage, two groups or more), found 4 microbatches per step: --train.global_batch 4 "
      "/ (1 data-parallel rank x --train.micro_batch 1)");
  expect_layout_error(
      run_mpi(2, six + " --parallel.pp 2 --parallel.virtual_stages 2", dir_),
      "expected a multiple of 2 microbatches, at least 2 (the interleaved schedule runs them in "
      "groups of one per stage), found 3 microbatches per step");
}

TEST_F(Cli, MpirunHeadsNotDivisibleByTpStopsEveryRank) {
  expect_layout_error(run_mpi(4, tiny_args("2") + " --parallel.tp 4 --model.vocab_size 260", dir_),
                      "--model.heads: expected a multiple of --parallel.tp = 4");
}

// TP need not divide the vocabulary (the default 257 splits 128 + 129 over 2 ranks), but every
// rank needs a row of it.
TEST_F(Cli, MpirunVocabularySmallerThanTpStopsEveryRank) {
  expect_layout_error(run_mpi(4, tiny_args("4") + " --parallel.tp 4 --model.vocab_size 3", dir_),
                      "--model.vocab_size: expected at least --parallel.tp = 4 entries, found 3");
}

TEST_F(Cli, MpirunFewerLayersThanStagesStopsEveryRank) {
  expect_layout_error(run_mpi(4, tiny_args() + " --parallel.pp 4", dir_),
                      "--model.layers: expected at least one layer per pipeline stage");
}

TEST_F(Cli, MpirunGlobalBatchNotDivisibleByDpTimesMicroBatchStopsEveryRank) {
  expect_layout_error(run_mpi(4, tiny_args(), dir_),
                      "--train.global_batch: expected a multiple of data-parallel ranks x "
                      "--train.micro_batch = 4 x 2");
}

}  // namespace
}  // namespace tessera
