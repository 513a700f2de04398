// The checkpoint, its config and its model for `tessera sample` and `tessera eval`.
#include "launcher/saved_model.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <sstream>

#include "core/error.h"
#include "core/number_text.h"
#include "io/checkpoint_io.h"
#include "launcher/checkpoint_choice.h"
#include "launcher/checkpointing.h"
#include "launcher/cluster.h"
#include "launcher/exit_codes.h"
#include "parallel/mpi_runtime.h"

namespace fs = std::filesystem;

namespace tessera {

namespace {

// --checkpoint and the command's own options are its own, its aliases stand for train options,
// the rest are train options.
SavedModelArgs split_args(int argc, char** argv, const SavedModelCommand& c) {
  SavedModelArgs a;
  a.train_args.push_back(argv[0]);
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], given;
    const size_t eq = arg.find('=');
    const bool inline_value = arg.starts_with("--") && eq != std::string::npos;
    if (inline_value) given = arg.substr(eq + 1), arg = arg.substr(0, eq);
    const auto value = [&] {
      if (inline_value) return given;
      if (i + 1 >= argc) throw InputError(arg + ": expected a value, found nothing");
      return std::string(argv[++i]);
    };
    const bool own = std::find(c.own.begin(), c.own.end(), arg) != c.own.end();
    if (arg == "--checkpoint") {
      a.checkpoint = value();
    } else if (own) {
      a.own[arg] = value();
    } else if (const auto alias = c.aliases.find(arg); alias != c.aliases.end()) {
      a.train_args.push_back(alias->second);
      a.train_args.push_back(value());
    } else if (arg == "--help" || arg == "-h") {
      a.help = true;
    } else {
      a.train_args.push_back(argv[i]);
    }
  }
  return a;
}

// What `dir`, a directory without a usable checkpoint, is: a run directory whose run has saved
// none (its config.ini and no checkpoints/), said with its --checkpoint.interval, or just that.
std::string unsaved_run(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(fs::path(dir) / "config.ini", ec) ||
      fs::exists(fs::path(dir) / "checkpoints", ec))
    return "no usable checkpoint";
  std::ifstream in(fs::path(dir) / "config.ini");
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  const std::map<std::string, std::string> values = ini_values(text);
  const auto interval = values.find("checkpoint.interval");
  const std::string why = interval == values.end() ? ""
                          : interval->second == "0"
                              ? ": --checkpoint.interval 0"
                              : ", or not yet: --checkpoint.interval " + interval->second;
  return "a run directory without checkpoints/ (its run saved none" + why + ")";
}

// The checkpoint DIR names, verified (every checksum): DIR itself, or the newest usable one of a
// directory of checkpoints. `note` says what was skipped.
std::string choose_saved_checkpoint(const std::string& dir, const std::string& command,
                                    std::string& note) {
  // On this process alone, with a progress line named for the command.
  const CheckpointVerifier verify = [&](const std::string& candidate) {
    verify_checkpoint(candidate, command + ": checking " + candidate);
  };
  if (dir.empty())
    throw InputError(
        "--checkpoint: expected a checkpoint directory (step_N, or a run's "
        "checkpoints/), found nothing");
  if (fs::exists(dir)) require_checkpoint_directory(dir);  // not model.h5 itself
  // A step directory, whole or not: verify_manifest names what is wrong with it.
  if (fs::exists(fs::path(dir) / "model.h5") || fs::exists(fs::path(dir) / "MANIFEST"))
    return choose_checkpoint("", dir, note, verify);
  if (const std::string root = run_directory_checkpoints(dir); !root.empty())
    throw InputError("--checkpoint " + dir +
                     ": expected a checkpoint (a step_N directory with model.h5) or a directory "
                     "of them, found a run directory; give its " +
                     root + " (the newest usable of them is taken) or one of them");
  const std::string chosen = newest_checkpoint(dir, note, verify);
  if (chosen.empty())
    throw InputError("--checkpoint " + dir +
                     ": expected a checkpoint (a step_N directory with model.h5) or a directory "
                     "of them, found " +
                     (fs::exists(dir) ? unsaved_run(dir) : "no such directory") +
                     (note.empty() ? "" : " (" + note + ")"));
  return chosen;
}

// The model's shape as the checkpoint's config gives it: the command line may not change it.
void require_saved_shape(const ModelConfig& saved, const ModelConfig& m, const std::string& dir,
                         const char* command) {
  const auto same = [&](const char* option, int64_t s, int64_t x) {
    if (s != x)
      throw InputError(std::string(option) + ": the model of checkpoint " + dir + " has " +
                       std::to_string(s) + ", found " + std::to_string(x) + " (tessera " + command +
                       " takes the model's shape from the checkpoint)");
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

// The run's config: the checkpoint's (`saved_ini`), overridden by the train options of `args`.
// The layout is the command line's alone (one rank unless --parallel.* says otherwise), not the
// saving run's. InputError for options that do not parse or fit. `saved` is the saving run's
// config alone.
TrainConfig saved_model_config(const SavedModelArgs& args, const std::string& saved_ini,
                               const std::string& dir, const char* command, TrainConfig& saved) {
  const std::string name = "the config saved in " + dir;
  std::vector<char*> argv;
  for (const std::string& a : args.train_args) argv.push_back(const_cast<char*>(a.c_str()));
  const int argc = static_cast<int>(argv.size());
  // The saved shape is read, not validated: the saving machine's options (--train.device cuda)
  // need not hold here, where the command line may override them.
  char* none[] = {argv[0]};
  TrainConfig given, cfg;
  read_train_options(1, none, saved, saved_ini, name);
  read_train_options(argc, argv.data(), given);
  read_train_options(argc, argv.data(), cfg, saved_ini, name);
  cfg.parallel = given.parallel;
  // Model chunks are the training pipeline's schedule; these commands run each token's forward
  // through the stages in order, and would say nothing of a value they ignore.
  if (given.parallel.virtual_stages != 1)  // on the command line, or in its --config file
    throw InputError(std::string("--parallel.virtual_stages: tessera ") + command +
                     " runs the model stage after stage without the training schedule; give "
                     "--parallel.tp and --parallel.pp only");
  // The saving run's global batch means nothing to a command that runs its model, but the
  // config must still divide it by --train.micro_batch: unless given, it is one micro-batch.
  if (!gives_option(args, "--train.global_batch")) cfg.global_batch = cfg.micro_batch;
  cfg.validate();  // as it will run
  require_saved_shape(saved.model, cfg.model, dir, command);
  return cfg;
}

// The config text saved in the checkpoint `dir` (model.h5's meta/config).
std::string saved_config(const std::string& dir, const char* command) {
  const CheckpointReader reader = CheckpointReader::open(dir, ManifestCheck::kSizes);
  const auto it = reader.meta().texts.find("config");
  if (it == reader.meta().texts.end() || it->second.empty())
    throw InputError("checkpoint " + dir +
                     ": its model.h5 holds no config (meta/config), which tessera " + command +
                     " needs");
  return it->second;
}

}  // namespace

bool gives_option(const SavedModelArgs& args, const std::string& option) {
  return std::any_of(args.train_args.begin(), args.train_args.end(), [&](const std::string& a) {
    return a == option || a.starts_with(option + "=");
  });
}

void check_saved_paths(const SavedModelArgs& args, const std::string& option,
                       const std::string& value, const std::string& saved,
                       const std::function<void()>& check) {
  try {
    check();
  } catch (const InputError& e) {
    // Only a file not found (the readers' words for it) is about where the paths are read from.
    const std::string what = e.what();
    const bool not_found = what.find("no such file") != std::string::npos ||
                           what.find("matches no file") != std::string::npos;
    if (value != saved || value.empty() || !not_found || gives_option(args, option)) throw;
    // Relative when a word of it that is no number (a blend's weight) does not start with '/',
    // after a quote (a path with spaces is quoted; its later words are taken as they come).
    std::istringstream words(value);
    bool relative = false;
    for (std::string w; words >> w;) {
      if (w.front() == '"') w.erase(0, 1);
      relative = relative || (!w.starts_with('/') && !reads_as_number(w));
    }
    std::error_code ec;
    const std::string here = fs::current_path(ec).string();
    throw InputError(what + " (" + option + " " + value +
                     " is the saving run's, from the checkpoint's config.ini" +
                     (relative ? "; relative paths are read from this directory, " + here +
                                     ", which may not be the one it ran in"
                               : "") +
                     "; give " + option + ")");
  }
}

int run_saved_model(int argc, char** argv, const SavedModelCommand& command) {
  MpiRuntime mpi(&argc, &argv);
  Communicator& world = mpi.world();
  const bool root = world.rank() == 0;
  if (!root) std::cout.setstate(std::ios::failbit);

  // Phase 1, on rank 0 alone: the arguments, the checkpoint (every checksum) and its config.
  // Then, on every rank, the config from the same text, the command's inputs and this rank's
  // GPU; then the command's checks made together. Each phase ends in an agreement, so a bad
  // input stops every rank with one message (as in tessera train).
  SavedModelArgs args;
  std::string dir, note, saved_ini;
  ErrorReport failure;
  try {
    args = split_args(argc, argv, command);
    if (root && args.help) std::cout << command.usage;
    if (root && !args.help) {
      dir = choose_saved_checkpoint(args.checkpoint, command.name, note);
      saved_ini = saved_config(dir, command.name);
    }
  } catch (...) {
    failure = report_error(std::current_exception(), command.name);
  }
  if (const int code = agree_on_inputs(world, failure)) return code;
  if (args.help) return kExitOk;
  dir = broadcast_string(world, dir, 0);
  saved_ini = broadcast_string(world, saved_ini, 0);

  TrainConfig cfg, saved;
  GridLayout layout;
  try {
    cfg = saved_model_config(args, saved_ini, dir, command.name, saved);
    try {
      layout = cfg.model_layout_for(world.size());
    } catch (const InputError& e) {  // its advice is to change the model, which this cannot
      throw InputError(std::string(e.what()) + "; the checkpoint " + dir +
                       " fixes the model: " + "run tessera " + command.name +
                       " with another --parallel.tp / --parallel.pp");
    }
    configure_process(cfg, mpi.ranks_on_this_node(), mpi.rank_on_this_node());
    command.prepare(cfg, saved, args, layout, world.rank());
  } catch (...) {
    failure = report_error(std::current_exception(), command.name);
  }
  if (const int code = agree_on_inputs(world, failure)) return code;

  // Phase 2: a failure now may be one rank's alone; the watchdog bounds every collective.
  const WatchdogArmed watchdog(world, cfg.startup_deadline());
  if (command.together) {
    try {
      command.together(world);
    } catch (...) {
      failure = report_error(std::current_exception(), command.name);
    }
    if (const int code = agree_on_inputs(world, failure)) return code;
  }
  try {
    if (root && !note.empty()) std::printf("checkpoint: %s\n", printable(note).c_str());
    const std::unique_ptr<Communicator> device_world =
        open_device_world(cfg, world, mpi.rank_on_this_node());
    ProcessGrid grid(device_world ? *device_world : world, layout);
    GPT model(cfg.model, grid.shard(cfg.model), grid.tp(), cfg.seed);
    load_weights(model, dir, world.rank());
    if (root)
      std::printf("model: %lld parameters from %s (%s, %s); %d rank%s, TP %d x PP %d%s\n",
                  static_cast<long long>(gpt_num_params(cfg.model)), dir.c_str(),
                  device_name(cfg.model.device).c_str(), dtype_name(cfg.model.dtype).c_str(),
                  world.size(), world.size() == 1 ? "" : "s", layout.tp, layout.pp,
                  layout.dp > 1 ? (" x DP " + std::to_string(layout.dp)).c_str() : "");
    SavedModel saved{cfg, args, dir, world, grid, model, root};
    command.run(saved);
    std::fflush(stdout);
  } catch (...) {
    return fail_alone(world, command.name);
  }
  return kExitOk;
}

}  // namespace tessera
