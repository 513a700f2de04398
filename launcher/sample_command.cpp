// `tessera sample`: the checkpoint's config, overridden by the command line, builds the model on
// every rank's layout; the saved weights are loaded into it and generate() continues the prompt.
#include "launcher/sample_command.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/model/gpt.h"
#include "io/checkpoint_io.h"
#include "launcher/checkpointing.h"
#include "launcher/cluster.h"
#include "launcher/exit_codes.h"
#include "launcher/sampling.h"
#include "parallel/mpi_runtime.h"
#include "parallel/process_grid.h"

namespace fs = std::filesystem;

namespace tessera {

namespace {

constexpr const char* kUsage =
    "usage: tessera sample --checkpoint DIR [--prompt TEXT] [options]\n"
    "\n"
    "Continues TEXT with the model saved in DIR: a checkpoint (step_N) or a run's checkpoints/\n"
    "directory, of which the one `latest` names is taken (else the newest usable). The model,\n"
    "the tokenizer and the options below start from the config saved in the checkpoint; any\n"
    "`tessera train` option overrides it, except the model's shape (--model.*). --prompt is\n"
    "--sample.prompt (the run's by default), where \\n, \\t, \\\\ and \\xHH are escapes. The\n"
    "ranks sample on a layout of their own: one rank, or --parallel.tp x --parallel.pp under\n"
    "mpirun.\n"
    "\n"
    "  --sample.tokens N        tokens to generate (0, a training run's default: 100)\n"
    "  --sample.temperature T   softmax temperature\n"
    "  --sample.top_k K         sample among the K likeliest tokens (0: all; 1: greedy)\n"
    "  --train.seed S           the seed of the draws: the same seed, the same text\n"
    "  --train.device cpu|cuda  --train.precision auto|fp32|bf16\n"
    "  --data.tokenizer MODEL   SentencePiece model (empty: byte-level)\n"
    "  --parallel.tp N --parallel.pp N   the layout of the ranks under mpirun\n";

struct SampleArgs {
  std::string checkpoint;
  bool help = false;
  std::vector<std::string> train_args;  // argv[0] and the train options
};

// --checkpoint is this command's own, --prompt is --sample.prompt, the rest are train options.
SampleArgs split_args(int argc, char** argv) {
  SampleArgs a;
  a.train_args.push_back(argv[0]);
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&](const std::string& name) {
      if (i + 1 >= argc) throw InputError(name + ": expected a value, found nothing");
      return std::string(argv[++i]);
    };
    if (arg == "--checkpoint") {
      a.checkpoint = value(arg);
    } else if (arg.rfind("--checkpoint=", 0) == 0) {
      a.checkpoint = arg.substr(arg.find('=') + 1);
    } else if (arg == "--prompt") {
      a.train_args.push_back("--sample.prompt");
      a.train_args.push_back(value(arg));
    } else if (arg.rfind("--prompt=", 0) == 0) {
      a.train_args.push_back("--sample.prompt=" + arg.substr(arg.find('=') + 1));
    } else if (arg == "--help" || arg == "-h") {
      a.help = true;
    } else {
      a.train_args.push_back(argv[i]);
    }
  }
  return a;
}

// The checkpoint DIR names, verified (every checksum): DIR itself, or the newest usable one of a
// directory of checkpoints. `note` says what was skipped.
std::string choose_sample_checkpoint(const std::string& dir, std::string& note) {
  if (dir.empty())
    throw InputError(
        "--checkpoint: expected a checkpoint directory (step_N, or a run's "
        "checkpoints/), found nothing");
  if (fs::exists(dir)) require_checkpoint_directory(dir);  // not model.h5 itself
  // A step directory, whole or not: verify_manifest names what is wrong with it.
  if (fs::exists(fs::path(dir) / "model.h5") || fs::exists(fs::path(dir) / "MANIFEST"))
    return choose_checkpoint("", dir, note);
  const std::string chosen = newest_checkpoint(dir, note);
  if (chosen.empty())
    throw InputError("--checkpoint " + dir +
                     ": expected a checkpoint (a step_N directory with model.h5) or a directory "
                     "of them, found " +
                     (fs::exists(dir) ? "no usable checkpoint" : "no such directory") +
                     (note.empty() ? "" : " (" + note + ")"));
  return chosen;
}

// The model's shape as the checkpoint's config gives it: the command line may not change it.
void require_saved_shape(const ModelConfig& saved, const ModelConfig& m, const std::string& dir) {
  const auto same = [&](const char* option, int64_t s, int64_t x) {
    if (s != x)
      throw InputError(std::string(option) + ": the model of checkpoint " + dir + " has " +
                       std::to_string(s) + ", found " + std::to_string(x) +
                       " (tessera sample takes the model's shape from the checkpoint)");
  };
  same("--model.vocab_size", saved.vocab_size, m.vocab_size);
  same("--model.d_model", saved.d_model, m.d_model);
  same("--model.layers", saved.layers, m.layers);
  same("--model.heads", saved.heads, m.heads);
  same("--model.d_ff", saved.d_ff, m.d_ff);
  same("--model.seq_len", saved.seq_len, m.seq_len);
  if (saved.pos != m.pos)
    throw InputError("--model.pos: the model of checkpoint " + dir + " has " +
                     position_kind_name(saved.pos) + " positions, found " +
                     position_kind_name(m.pos));
}

// The run's config: the checkpoint's (`saved_ini`), overridden by the train options of `args`,
// with the prompt and a default length. The layout is the command line's alone (one rank unless
// --parallel.* says otherwise), not the saving run's. InputError for options that do not parse
// or fit.
TrainConfig sample_config(const SampleArgs& args, const std::string& saved_ini,
                          const std::string& dir) {
  const std::string name = "the config saved in " + dir;
  std::vector<char*> argv;
  for (const std::string& a : args.train_args) argv.push_back(const_cast<char*>(a.c_str()));
  const int argc = static_cast<int>(argv.size());
  // The saved shape is read, not validated: the saving machine's options (--train.device cuda)
  // need not hold here, where the command line may override them.
  char* none[] = {argv[0]};
  TrainConfig saved, given, cfg;
  read_train_options(1, none, saved, saved_ini, name);
  read_train_options(argc, argv.data(), given);
  read_train_options(argc, argv.data(), cfg, saved_ini, name);
  cfg.parallel = given.parallel;
  if (cfg.sample_tokens == 0) cfg.sample_tokens = 100;
  cfg.validate();  // as it will run
  require_saved_shape(saved.model, cfg.model, dir);
  return cfg;
}

// The config text saved in the checkpoint `dir` (model.h5's meta/config).
std::string saved_config(const std::string& dir) {
  const CheckpointReader reader = CheckpointReader::open(dir, ManifestCheck::kSizes);
  const auto it = reader.meta().texts.find("config");
  if (it == reader.meta().texts.end() || it->second.empty())
    throw InputError("checkpoint " + dir +
                     ": its model.h5 holds no config (meta/config), which tessera sample needs");
  return it->second;
}

}  // namespace

int sample_command(int argc, char** argv) {
  MpiRuntime mpi(&argc, &argv);
  Communicator& world = mpi.world();
  const bool root = world.rank() == 0;
  if (!root) std::cout.setstate(std::ios::failbit);

  // Phase 1, on rank 0 alone: the arguments, the checkpoint (every checksum) and its config.
  // Then, on every rank, the config from the same text and this rank's GPU. Each phase ends in
  // an agreement, so a bad input stops every rank with one message (as in tessera train).
  SampleArgs args;
  std::string dir, note, saved_ini;
  ErrorReport failure;
  try {
    args = split_args(argc, argv);
    if (root && args.help) std::cout << kUsage;
    if (root && !args.help) {
      dir = choose_sample_checkpoint(args.checkpoint, note);
      saved_ini = saved_config(dir);
    }
  } catch (...) {
    failure = report_error(std::current_exception(), "sample");
  }
  if (const int code = agree_on_inputs(world, failure)) return code;
  if (args.help) return kExitOk;
  dir = broadcast_string(world, dir, 0);
  saved_ini = broadcast_string(world, saved_ini, 0);

  TrainConfig cfg;
  GridLayout layout;
  try {
    cfg = sample_config(args, saved_ini, dir);
    try {
      layout = cfg.model_layout_for(world.size());
    } catch (const InputError& e) {  // its advice is to change the model, which sample cannot
      throw InputError(std::string(e.what()) + "; the checkpoint " + dir +
                       " fixes the model: sample it with another --parallel.tp / --parallel.pp");
    }
    configure_process(cfg, mpi.ranks_on_this_node(), mpi.rank_on_this_node());
    check_sampling_tokenizer(cfg);
  } catch (...) {
    failure = report_error(std::current_exception(), "sample");
  }
  if (const int code = agree_on_inputs(world, failure)) return code;

  // Phase 2: a failure now may be one rank's alone; the watchdog bounds every collective.
  const WatchdogArmed watchdog(world, cfg.startup_deadline());
  try {
    if (root && !note.empty()) std::printf("checkpoint: %s\n", printable(note).c_str());
    const std::unique_ptr<Communicator> device_world =
        open_device_world(cfg, world, mpi.rank_on_this_node());
    ProcessGrid grid(device_world ? *device_world : world, layout);
    GPT model(cfg.model, grid.shard(cfg.model), grid.tp(), cfg.seed);
    load_weights(model, dir, world.rank());
    if (root)
      std::printf("model: %lld parameters from %s (%s, %s); %d rank%s, TP %d x PP %d\n",
                  static_cast<long long>(gpt_num_params(cfg.model)), dir.c_str(),
                  device_name(cfg.model.device).c_str(), dtype_name(cfg.model.dtype).c_str(),
                  world.size(), world.size() == 1 ? "" : "s", layout.tp, layout.pp);
    print_sample(cfg, model, grid.tp(), grid.pp(), root);
    std::fflush(stdout);
  } catch (...) {
    return fail_alone(world, "sample");
  }
  return kExitOk;
}

}  // namespace tessera
