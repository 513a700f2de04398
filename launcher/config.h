// TrainConfig: every option of `tessera train`, read from an INI file and the command line with
// Boost.Program_options ([model] layers = 12 is --model.layers 12; the command line wins;
// unknown keys are errors). validate() checks values and throws InputError naming the option.
#pragma once

#include <algorithm>
#include <array>
#include <boost/program_options/options_description.hpp>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/model/config.h"
#include "core/ops/attention.h"
#include "core/optim/lr_schedule.h"
#include "core/optim/optimizer.h"
#include "parallel/process_grid.h"

namespace tessera {

// [parallel]: the process grid (parallel/process_grid.h) and the data-parallel reduction.
struct ParallelConfig {
  int tp = 1;
  int pp = 1;
  int dp = 0;    // 0: the world size / (tp * pp)
  int zero = 0;  // 1: ZeRO-1, AdamW moments sharded over DP
  // Data-parallel gradient bucket size in MB; 0: 25 MB (PyTorch DDP's default), with ZeRO-1 at
  // least 2^20 values per DP rank (Trainer::bucket_elements).
  double bucket_mb = 0;
  // Sequence parallelism (ModelShard::sequence_parallel), with tp > 1; nothing with tp = 1.
  bool sequence_parallel = false;
  // Model chunks per pipeline stage: more than 1 runs the interleaved 1F1B schedule
  // (parallel/pipeline_schedule.h); training only (sample and eval run their own layout).
  int virtual_stages = 1;
};

// The points of a save where --debug.kill_during_save may end a rank, in the order a save
// passes them (launcher/checkpointing.cpp, crash_point).
inline constexpr std::array<std::string_view, 6> kSaveCrashPoints = {
    "start", "shard", "written", "master", "set_aside", "renamed"};
bool is_save_crash_point(std::string_view point);
std::string save_crash_points_text();  // "start, shard, ..."

struct TrainConfig {
  std::string run_dir = "runs/default";
  ModelConfig model;
  // [train]
  int64_t steps = 100;
  int64_t global_batch = 8;
  int64_t micro_batch = 8;
  uint64_t seed = 1337;
  int64_t log_interval = 10;
  int threads = 0;  // 0: the cores of this machine
  // [optim]
  LRSchedule schedule;
  AdamWConfig adamw;
  ParallelConfig parallel;
  // [checkpoint] (under RUN_DIR/checkpoints)
  int64_t checkpoint_interval = 0;         // steps between saves, and after the last (0: none)
  int64_t checkpoint_keep = 0;             // newest checkpoints kept (0: all)
  std::string checkpoint_resume = "auto";  // auto | none | PATH
  std::string checkpoint_init;             // a fresh start's weights from this checkpoint
  bool checkpoint_async = false;           // write in the background
  int64_t exit_after = 0;  // [train]: stop after this many steps of this run (0: never)
  // `tessera train --check [RANKS]` (command line only): check the run for RANKS ranks and exit
  // (-1: no check; 0: RANKS not given, train_command says which it takes).
  int check_ranks = -1;
  std::string debug_kill_during_save;  // [debug]: "RANK:POINT", for the crash-safety tests
  // [train] running on a cluster (docs/CLUSTER.md)
  double time_limit = 0;            // seconds of wall clock; save and exit 3 before (0: none)
  std::string nan_policy = "halt";  // non-finite loss or gradient norm: halt | skip
  int64_t nan_max_skips = 10;       // skip: exit 4 after this many skipped steps in a row
  double collective_timeout = 600;  // seconds one collective may wait (watchdog)
  double startup_timeout = 1800;    // the same, during start-up, the first step and saves
  int64_t check_replicas = 0;       // steps between checks that copies agree bitwise (0: none)
  // [debug] for tests, "RANK:STEP[,RANK:STEP...]" (steps 1-based; parse with rank_steps)
  std::string debug_inject_nan;  // that rank's gradients become NaN at that step
  std::string debug_stall;       // that rank sleeps for an hour before that step
  std::string debug_slow_save;   // "RANK:SECONDS": that rank's shard writer waits that long first
  int64_t debug_wait_for_stop = 0;       // a fresh run waits before that step for a stop signal
  std::string debug_perturb_replicated;  // that rank's gradients of shared params are nudged
  std::string debug_flip_bit;            // a bit of each of that rank's params flips after it
  // [data]
  std::string data_path;           // "PATH", "W1 PATH1 ...", "PATH1 PATH2 ...", globs
                                   // (parse_corpus_blend, io/data_loader.h)
  std::string valid_path;          // validation corpora, same syntax; empty: hold out a fraction
  double valid_fraction = 0.01;    // of every training corpus' samples, when valid_path is empty
  std::string cache_dir;           // id-check records; empty: RUN_DIR/data_cache
  bool data_allow_change = false;  // resume into another sample sequence than the checkpoint's
  std::string tokenizer_model;     // SentencePiece model for sampling; empty: byte-level
  int64_t eval_interval = 100;     // steps between validation losses (0: none)
  int64_t eval_batches = 4;        // global batches per validation
  // [gpu] kernels not yet run on a GPU, opt-in (docs/DECISIONS.md); bf16 on cuda only
  ops::AttentionKernels attention_kernels = ops::AttentionKernels::CudaCores;
  bool dgelu_epilogue = false;  // the MLP's GELU backward in cuBLASLt's epilogue
  double peak_tflops = 0;       // one GPU's peak for MFU; 0: gpu_peak_flops' table
  // [sample]
  int64_t sample_tokens = 0;
  std::string sample_prompt;
  double sample_temperature = 0.8;
  int64_t sample_top_k = 40;

  // The collective deadline during start-up, the first step and saves: never below the rest's.
  double startup_deadline() const { return std::max(collective_timeout, startup_timeout); }
  // Microbatches per step on each data-parallel rank.
  int64_t accumulation_steps(int dp) const { return global_batch / (micro_batch * dp); }
  // Whether validation samples are to be held out of the training corpora: validation runs and
  // has no corpora of its own (the Trainer then needs a corpus with 2 samples to split).
  bool holds_out_validation() const {
    return eval_interval > 0 && valid_path.empty() && valid_fraction > 0;
  }
  // InputError for a value the run cannot take, with where a config file set it
  // (throw_located).
  void validate() const;
  // The layout on `world_size` ranks; throws InputError naming the options when the model or
  // the batch cannot be split that way. Every rank computes the same answer, so a bad layout
  // stops every rank with the same message (train_command then agrees on it with one
  // all-reduce, since the corpus may fail on one rank only).
  GridLayout layout_for(int world_size) const;
  // The same for the model alone, DP taking the ranks TP x PP leaves (what sampling needs).
  GridLayout model_layout_for(int world_size) const;
  // Every option's resolved value as INI text (written to RUN_DIR/config.ini); filled by
  // parse_train_config from the same option table that parses, so it lists every option.
  std::string resolved_ini;
  // Where a --config file set an option the command line does not give ("--optim.lr" ->
  // "config file base.ini line 4"), for the messages about its value.
  std::map<std::string, std::string> set_in_file;
  // Throws `e`'s message followed by where the option it begins with was set, when a config
  // file set it: "--optim.lr: expected ..., found nan (config file base.ini line 4)"; else
  // returns, for the caller to throw `e` as it was.
  void throw_located(const InputError& e) const;

 private:
  // `l` when the model splits over its TP and PP (heads, d_ff, vocabulary, layers), else
  // InputError naming the option.
  GridLayout split_model(const GridLayout& l) const;
  void check_values() const;  // validate()'s checks, unlocated
};

// A [debug] option's "RANK:STEP[,RANK:STEP...]" (ranks >= 0, steps >= 1; empty: none);
// InputError naming the option otherwise.
struct RankStep {
  int rank = 0;
  int64_t step = 0;
};
// `unit` names the number after the colon in the message ("STEP", or "SECONDS" for
// --debug.slow_save, whose numbers are whole seconds).
std::vector<RankStep> rank_steps(const std::string& option, const std::string& text,
                                 const std::string& unit = "STEP");
// Whether `points` holds (rank, step).
bool has_rank_step(const std::vector<RankStep>& points, int rank, int64_t step);

// Parses `tessera train` arguments (argv[0] is "train"), --check among them, and validates
// them. Returns false when --help was shown.
bool parse_train_config(int argc, char** argv, TrainConfig& cfg);
// The options without TrainConfig::validate, for reading a part of them (a checkpoint's model
// shape) on a machine where the rest would not validate. `base`: INI text beneath the command
// line and --config (a checkpoint's config, which `tessera sample` starts from), named
// `base_name` in its error messages. `with_check`: --check is an option (of `tessera train`).
bool read_train_options(int argc, char** argv, TrainConfig& cfg, const std::string& base = "",
                        const std::string& base_name = "", bool with_check = false);

// "section.key" -> the value (trimmed) of each option that INI text sets, read line by line as
// Boost reads a config file (a key set twice: its last value); for comparing the resolved
// configs of two runs (TrainConfig::resolved_ini, a checkpoint's meta/config).
std::map<std::string, std::string> ini_values(const std::string& text);

// INI text (a resolved config.ini) with the line of `option` ("section.key"), which it holds,
// setting `value` instead.
std::string with_ini_value(const std::string& text, const std::string& option,
                           const std::string& value);

}  // namespace tessera
