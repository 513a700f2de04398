// The options of `tessera train`: declarations with defaults and help, INI + command-line
// parsing, validation with messages that name the option, and the resolved INI.
#include "launcher/config.h"

#include <algorithm>
#include <boost/program_options.hpp>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iostream>
#include <iterator>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <utility>
#include <vector>

#include "core/device.h"
#include "core/error.h"
#include "core/number_text.h"
#include "core/ops/attention_cuda.h"
#include "launcher/option_text.h"
#include "launcher/progress.h"
#include "parallel/pipeline_schedule.h"

namespace po = boost::program_options;

namespace tessera {

namespace {

// Options read as text and converted after parsing, so that the message names the option: the
// enums, and the seed (boost reads "-5" as an unsigned 2^64 - 5).
struct RawOptions {
  std::string seed;  // TrainConfig's default, as text
  std::string device = "cpu";
  std::string pos = "learned";
  std::string decay = "cosine";
  std::string precision = "auto";
  std::string recompute = "none";
  std::string attention = "cuda_cores";
};

// The value named `text` among `choices` of `option`; InputError listing them otherwise.
template <typename E>
E choose(const std::string& option, const std::string& text,
         std::initializer_list<std::pair<const char*, E>> choices) {
  std::string names;
  for (const auto& [name, value] : choices) {
    if (text == name) return value;
    names += names.empty() ? name : std::string(", ") + name;
  }
  throw InputError(option + ": expected one of " + names + ", found " + text);
}

// `text` as an unsigned 64-bit integer, all of it; InputError naming `option` otherwise.
uint64_t unsigned_integer(const std::string& option, const std::string& text) {
  uint64_t v = 0;
  const char* end = text.data() + text.size();
  const auto r = std::from_chars(text.data(), end, v);
  if (r.ec != std::errc() || r.ptr != end)
    throw InputError(option + ": expected an integer in [0, 2^64), found " + text);
  return v;
}

// A boolean option, its default shown in --help as config.ini writes it (false, not 0).
po::typed_value<bool>* flag(bool& value) {
  return po::value(&value)->default_value(value, value ? "true" : "false");
}

po::options_description train_options(TrainConfig& c, RawOptions& e) {
  po::options_description run("[run]");
  run.add_options()("run.dir", po::value(&c.run_dir)->default_value(c.run_dir),
                    "directory of the run: metrics.jsonl, the resolved config.ini, checkpoints/, "
                    "data_cache/ and its lock");

  po::options_description model("[model]");
  model.add_options()("model.vocab_size",
                      po::value(&c.model.vocab_size)->default_value(c.model.vocab_size),
                      "vocabulary size (257 = byte-level tokens + end-of-document)")(
      "model.d_model", po::value(&c.model.d_model)->default_value(c.model.d_model), "width")(
      "model.layers", po::value(&c.model.layers)->default_value(c.model.layers), "layers")(
      "model.heads", po::value(&c.model.heads)->default_value(c.model.heads),
      "attention heads (must divide d_model)")(
      "model.d_ff", po::value(&c.model.d_ff)->default_value(c.model.d_ff), "MLP hidden width")(
      "model.seq_len", po::value(&c.model.seq_len)->default_value(c.model.seq_len),
      "context length T")("model.pos", po::value(&e.pos)->default_value(e.pos),
                          "positions: learned | sinusoidal")(
      "model.init_std", po::value(&c.model.init_std)->default_value(c.model.init_std, "0.02"),
      "std of the normal initialisation");

  po::options_description train("[train]");
  train.add_options()("train.steps", po::value(&c.steps)->default_value(c.steps),
                      "optimizer steps")("train.global_batch",
                                         po::value(&c.global_batch)->default_value(c.global_batch),
                                         "sequences per step, over all data-parallel ranks")(
      "train.micro_batch", po::value(&c.micro_batch)->default_value(c.micro_batch),
      "sequences per forward/backward; global_batch / (data-parallel ranks x micro_batch) are "
      "accumulated per step")("train.seed", po::value(&e.seed)->default_value(e.seed),
                              "seed of weights and data order")(
      "train.device", po::value(&e.device)->default_value(e.device), "cpu | cuda")(
      "train.precision", po::value(&e.precision)->default_value(e.precision),
      "compute type: auto (bf16 on cuda, fp32 on cpu) | fp32 | bf16 (fp32 master weights; on the "
      "cpu each op in fp32, rounded: for tests, not speed)")(
      "train.recompute", po::value(&e.recompute)->default_value(e.recompute),
      "activations each layer keeps: none | selective (recompute GELU, CPU attention) | full "
      "(rerun each layer's forward in its backward)")(
      "train.log_interval", po::value(&c.log_interval)->default_value(c.log_interval),
      "steps between log lines and metrics records")(
      "train.eval_interval", po::value(&c.eval_interval)->default_value(c.eval_interval),
      "steps between validation losses, also after the last step (0: none)")(
      "train.eval_batches", po::value(&c.eval_batches)->default_value(c.eval_batches),
      "global batches of validation samples per validation")(
      "train.threads", po::value(&c.threads)->default_value(c.threads),
      "CPU threads of each rank (0: the node's cores / its ranks)");

  po::options_description optim("[optim]");
  optim.add_options()("optim.lr", po::value(&c.schedule.lr)->default_value(c.schedule.lr, "3e-4"),
                      "peak LR")(
      "optim.min_lr", po::value(&c.schedule.min_lr)->default_value(c.schedule.min_lr, "3e-5"),
      "LR at the end of the decay")(
      "optim.warmup", po::value(&c.schedule.warmup)->default_value(c.schedule.warmup),
      "linear warm-up steps")("optim.decay", po::value(&e.decay)->default_value(e.decay),
                              "decay after warm-up: cosine | linear | constant | wsd "
                              "(warmup-stable-decay: constant, then --optim.cooldown)")(
      "optim.cooldown", po::value(&c.schedule.cooldown)->default_value(c.schedule.cooldown, "0.2"),
      "with --optim.decay wsd: the fraction of --train.steps at the end in which the LR falls "
      "linearly to --optim.min_lr")(
      "optim.weight_decay",
      po::value(&c.adamw.weight_decay)->default_value(c.adamw.weight_decay, "0.1"),
      "decoupled weight decay of matmul weights")("optim.decay_embeddings",
                                                  flag(c.adamw.decay_embeddings),
                                                  "also decay the token and position embeddings")(
      "optim.decay_biases_norms", flag(c.adamw.decay_biases_norms),
      "also decay biases and LayerNorm parameters")(
      "optim.beta1", po::value(&c.adamw.beta1)->default_value(c.adamw.beta1, "0.9"), "Adam b1")(
      "optim.beta2", po::value(&c.adamw.beta2)->default_value(c.adamw.beta2, "0.95"), "Adam b2")(
      "optim.eps", po::value(&c.adamw.eps)->default_value(c.adamw.eps, "1e-8"), "Adam epsilon")(
      "optim.clip", po::value(&c.adamw.clip)->default_value(c.adamw.clip, "1.0"),
      "max global gradient norm (0: no clipping)");

  po::options_description parallel("[parallel]");
  parallel.add_options()("parallel.tp", po::value(&c.parallel.tp)->default_value(c.parallel.tp),
                         "tensor-parallel ranks (split heads, MLP width and vocabulary)")(
      "parallel.pp", po::value(&c.parallel.pp)->default_value(c.parallel.pp),
      "pipeline stages (split the layers; 1F1B schedule)")(
      "parallel.dp", po::value(&c.parallel.dp)->default_value(c.parallel.dp),
      "data-parallel replicas (0: MPI ranks / (tp x pp))")(
      "parallel.zero", po::value(&c.parallel.zero)->default_value(c.parallel.zero),
      "1: ZeRO-1, shard the AdamW moments (and bf16's fp32 masters) over the data-parallel ranks")(
      "parallel.sequence_parallel", flag(c.parallel.sequence_parallel),
      "with --parallel.tp > 1: outside attention and the MLP each TP rank keeps 1/tp of the "
      "tokens (Megatron-LM's --sequence-parallel); --model.seq_len must be a multiple of tp")(
      "parallel.virtual_stages",
      po::value(&c.parallel.virtual_stages)->default_value(c.parallel.virtual_stages),
      "model chunks per pipeline stage: more than 1 interleaves them (interleaved 1F1B; "
      "Megatron-LM's virtual pipeline stages, --model.layers / (pp x this) layers each); needs "
      "--parallel.pp >= 2 and a multiple of pp microbatches per step, with pp > 2 at least 2 pp")(
      "parallel.bucket_mb",
      po::value(&c.parallel.bucket_mb)->default_value(c.parallel.bucket_mb, "0 (auto)"),
      "size of a data-parallel gradient bucket in MB; each is reduced as soon as it is complete");

  po::options_description checkpoint("[checkpoint]");
  checkpoint.add_options()(
      "checkpoint.interval",
      po::value(&c.checkpoint_interval)->default_value(c.checkpoint_interval),
      "steps between checkpoints under RUN_DIR/checkpoints, also after the last (0: none but "
      "those of --train.exit_after, --train.time_limit and SIGUSR1/SIGTERM/SIGINT)")(
      "checkpoint.keep", po::value(&c.checkpoint_keep)->default_value(c.checkpoint_keep),
      "newest checkpoints kept; older ones are deleted after a save commits (0: all)")(
      "checkpoint.resume", po::value(&c.checkpoint_resume)->default_value(c.checkpoint_resume),
      "auto (the newest valid checkpoint, if any) | none | PATH of a step directory")(
      "checkpoint.init", po::value(&c.checkpoint_init)->default_value(c.checkpoint_init),
      "PATH of a step directory whose weights a fresh start begins from (any layout and "
      "precision, the same model shape), with a new optimizer, schedule and sample order at "
      "step 0; a run with checkpoints of its own resumes them instead")(
      "checkpoint.async", flag(c.checkpoint_async),
      "copy the state to host memory and write it in the background");

  po::options_description stopping("[train] stopping and faults");
  stopping.add_options()(
      "train.exit_after", po::value(&c.exit_after)->default_value(c.exit_after),
      "stop after this many steps of this run, saving a checkpoint first (0: never)")(
      "train.time_limit", po::value(&c.time_limit)->default_value(c.time_limit),
      "seconds of wall clock for this run: before they pass, save a checkpoint and exit 3 (as "
      "on SIGUSR1/SIGTERM) (0: none)")(
      "train.nan_policy", po::value(&c.nan_policy)->default_value(c.nan_policy),
      "non-finite loss or gradient norm: halt (diagnostics, exit 4) | skip (no update)")(
      "train.nan_max_skips", po::value(&c.nan_max_skips)->default_value(c.nan_max_skips),
      "with skip: exit 4 after more than this many skipped steps in a row")(
      "train.check_replicas", po::value(&c.check_replicas)->default_value(c.check_replicas),
      "every this many steps and before every save, check that every copy of a parameter held "
      "by several ranks is bitwise the same (TP, DP, tied embedding); halt with exit 1 naming "
      "the tensor and the ranks when one differs (0: never)")(
      "train.collective_timeout",
      po::value(&c.collective_timeout)->default_value(c.collective_timeout),
      "seconds a collective may wait before every rank reports and exits 5")(
      "train.startup_timeout", po::value(&c.startup_timeout)->default_value(c.startup_timeout),
      "the same deadline during start-up, the first step and checkpoint saves");

  po::options_description debug("[debug] for tests (not written to config.ini)");
  debug.add_options()(
      "debug.kill_during_save",
      po::value(&c.debug_kill_during_save)->default_value(c.debug_kill_during_save),
      ("RANK:POINT: that rank kills itself (SIGKILL) at POINT of the second save, for tests of "
       "crash safety (points: " +
       save_crash_points_text() + ")")
          .c_str())(
      "debug.inject_nan", po::value(&c.debug_inject_nan)->default_value(c.debug_inject_nan),
      "RANK:STEP[,...]: that rank's gradients become NaN at that step (1-based), for tests of "
      "--train.nan_policy")(
      "debug.stall", po::value(&c.debug_stall)->default_value(c.debug_stall),
      "RANK:STEP[,...]: that rank sleeps for an hour before that step (1-based), for tests of "
      "the collective deadline")(
      "debug.wait_for_stop",
      po::value(&c.debug_wait_for_stop)->default_value(c.debug_wait_for_stop),
      "STEP: a run that did not resume waits before that step (1-based) until a stop signal "
      "reaches it, for tests of preemption that must not race the signal's delivery")(
      "debug.slow_save", po::value(&c.debug_slow_save)->default_value(c.debug_slow_save),
      "RANK:SECONDS (whole, >= 1): that rank waits that long before writing each checkpoint "
      "shard, for tests "
      "of the deadline that covers saves")(
      "debug.perturb_replicated",
      po::value(&c.debug_perturb_replicated)->default_value(c.debug_perturb_replicated),
      "RANK:STEP[,...]: after that step's data-parallel reduction, that rank adds 1 to the first "
      "gradient element of each TP-replicated parameter (each at TP 1) and of the LM head's "
      "tied copy, for tests of the copies' synchronisation")(
      "debug.flip_bit", po::value(&c.debug_flip_bit)->default_value(c.debug_flip_bit),
      "RANK:STEP[,...]: after that step's update, the lowest bit of the first element of each "
      "of that rank's parameters flips, for tests of --train.check_replicas");

  po::options_description data("[data]");
  data.add_options()(
      "data.path", po::value(&c.data_path),
      "corpus: a Megatron prefix (PREFIX.bin + PREFIX.idx) or an llm.c shard "
      "(.bin); a blend as \"W1 PATH1 W2 PATH2 ...\", or \"PATH1 PATH2 ...\" weighted by "
      "size; a glob (\"data/train_*.bin\") for the files it matches, weighted by size; a path "
      "with spaces in double quotes")(
      "data.valid_path", po::value(&c.valid_path)->default_value(c.valid_path),
      "validation corpora, same syntax (empty: hold out --data.valid_fraction)")(
      "data.valid_fraction", po::value(&c.valid_fraction)->default_value(c.valid_fraction, "0.01"),
      "share of each training corpus' samples held out for validation")(
      "data.cache_dir", po::value(&c.cache_dir)->default_value(c.cache_dir),
      "where the token-id check of each corpus file is recorded (empty: RUN_DIR/data_cache)")(
      "data.allow_change", flag(c.data_allow_change),
      "resume a checkpoint whose run read another sample sequence (other corpora, weights, "
      "seq_len or validation split), continuing at its position in this run's sequence")(
      "data.tokenizer", po::value(&c.tokenizer_model)->default_value(c.tokenizer_model),
      "SentencePiece model of the corpus, for the prompt and text of --sample.* (empty: "
      "byte-level)");

  po::options_description sample("[sample]");
  sample.add_options()("sample.tokens", po::value(&c.sample_tokens)->default_value(c.sample_tokens),
                       "tokens to generate after training (0: none)")(
      "sample.prompt", po::value(&c.sample_prompt)->default_value(c.sample_prompt),
      "text the sample continues (C escapes: \\n, \\t, \\\\, \\xHH)")(
      "sample.temperature",
      po::value(&c.sample_temperature)->default_value(c.sample_temperature, "0.8"),
      "softmax temperature")("sample.top_k",
                             po::value(&c.sample_top_k)->default_value(c.sample_top_k),
                             "sample among the k likeliest tokens (0: all)");

  po::options_description gpu("[gpu]");
  gpu.add_options()("gpu.attention", po::value(&e.attention)->default_value(e.attention),
                    "bf16 attention kernels: cuda_cores | tensor_cores (mma.sync flash attention; "
                    "not yet run on a GPU, so opt-in) | cudnn (cuDNN's fused attention, loaded "
                    "at start; not yet run on a GPU)")(
      "gpu.dgelu_epilogue", flag(c.dgelu_epilogue),
      "bf16: the MLP's GELU backward inside its GEMM (cuBLASLt's DGELU epilogue; not yet run on "
      "a GPU, so opt-in)")(
      "gpu.peak_tflops", po::value(&c.peak_tflops)->default_value(c.peak_tflops),
      "one GPU's dense peak in the run's precision, for the log's MFU (0: from tessera's table "
      "of A100, A800, H100, H800, H200, GH200)");

  po::options_description all;
  all.add(run)
      .add(model)
      .add(train)
      .add(optim)
      .add(parallel)
      .add(checkpoint)
      .add(stopping)
      .add(data)
      .add(sample)
      .add(gpu)
      .add(debug);
  return all;
}

// One parsed value as INI text: numbers in the shortest form that reads back the same.
std::string ini_value(const boost::any& v) {
  if (const auto* x = boost::any_cast<std::string>(&v)) return *x;
  if (const auto* x = boost::any_cast<bool>(&v)) return *x ? "true" : "false";
  if (const auto* x = boost::any_cast<int>(&v)) return std::to_string(*x);
  if (const auto* x = boost::any_cast<int64_t>(&v)) return std::to_string(*x);
  if (const auto* x = boost::any_cast<uint64_t>(&v)) return std::to_string(*x);
  if (const auto* x = boost::any_cast<double>(&v)) return shortest_text(*x);
  throw InternalError("config: an option of a type the resolved config.ini cannot print");
}

// --sample.prompt in C's escapes: \\, \n, \t, and \xHH for the other control characters, for
// '#' and for spaces at either end, which an INI file (and model.h5's meta/config, a C string)
// would cut or trim: the text reads back as it was.
std::string escape_prompt(const std::string& text) {
  std::string out;
  const size_t first = text.find_first_not_of(' '), last = text.find_last_not_of(' ');
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (c == '\t')
      out += "\\t";
    else if (c == '#' || static_cast<unsigned char>(c) < 0x20 || c == 0x7F ||
             (c == ' ' && (first == std::string::npos || i < first || i > last))) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02X", static_cast<unsigned char>(c));
      out += hex;
    } else {
      out += c;
    }
  }
  return out;
}

// The inverse, for whatever gives --sample.prompt: a backslash not starting one of those escapes
// stays as it is.
std::string unescape_prompt(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    const char next = i + 1 < text.size() ? text[i + 1] : 0;
    if (text[i] != '\\') {
      out += text[i];
    } else if (next == '\\' || next == 'n' || next == 't') {
      out += next == 'n' ? '\n' : next == 't' ? '\t' : '\\';
      ++i;
    } else if (next == 'x' && i + 3 < text.size() &&
               std::isxdigit(static_cast<unsigned char>(text[i + 2])) &&
               std::isxdigit(static_cast<unsigned char>(text[i + 3]))) {
      out += static_cast<char>(std::stoi(text.substr(i + 2, 2), nullptr, 16));
      i += 3;
    } else {
      out += text[i];
    }
  }
  return out;
}

// Every option that has a value, grouped into one [section] each by the part before the dot, in
// the order the sections first appear.
std::string resolved_ini(const po::variables_map& vm, const po::options_description& all) {
  std::vector<std::pair<std::string, std::string>> sections;  // name, its lines
  for (const auto& opt : all.options()) {
    const std::string& name = opt->long_name();
    // How this process ran, not what the run is: read back, they would stop or kill it again.
    if (!vm.count(name) || name == "train.exit_after" || name == "train.time_limit" ||
        name.rfind("debug.", 0) == 0)
      continue;
    const size_t dot = name.find('.');
    const std::string section = name.substr(0, dot);
    auto it = std::find_if(sections.begin(), sections.end(),
                           [&](const auto& s) { return s.first == section; });
    if (it == sections.end()) it = sections.insert(sections.end(), {section, ""});
    std::string value = ini_value(vm[name].value());
    // A blend's words may be apart by any white space ("$(ls data/*.bin)" puts line breaks
    // between them): on one line, they read back the same.
    if (name == "data.path" || name == "data.valid_path")
      std::replace_if(
          value.begin(), value.end(), [](char c) { return c == '\n' || c == '\r' || c == '\t'; },
          ' ');
    // Read back, the rest of the line would be a comment, or the next line a key of its own: a
    // resume or `tessera sample` would take another path than this run's (the prompt is
    // escaped instead).
    if (name != "sample.prompt") {
      if (value.find('#') != std::string::npos)
        throw InputError("--" + name + " " + value +
                         ": a '#' cannot be saved in the run's config.ini, where it starts a "
                         "comment (a resume and tessera sample read the file back); rename it");
      if (value.find_first_of("\n\r") != std::string::npos)
        throw InputError("--" + name + " " + escape_prompt(value) +
                         ": a line break cannot be saved in the run's config.ini, which holds "
                         "one option a line (a resume and tessera sample read the file back)");
    }
    it->second += name.substr(dot + 1) + " = " +
                  (name == "sample.prompt" ? escape_prompt(unescape_prompt(value)) : value) + "\n";
  }
  std::string out;
  for (const auto& [section, lines] : sections) {
    if (!out.empty()) out += "\n";
    out += "[";
    out += section;
    out += "]\n";
    out += lines;
  }
  return out;
}

}  // namespace

std::vector<RankStep> rank_steps(const std::string& option, const std::string& text,
                                 const std::string& unit) {
  std::vector<RankStep> out;
  std::stringstream items(text);
  for (std::string item; std::getline(items, item, ',');) {
    RankStep r;
    char extra = 0;
    long long step = 0;
    if (std::sscanf(item.c_str(), "%d:%lld%c", &r.rank, &step, &extra) != 2 || r.rank < 0 ||
        step < 1)
      throw InputError(option + ": expected RANK:" + unit + "[,RANK:" + unit +
                       "...] (ranks >= 0, " + unit + " a whole number >= 1), found " + text);
    r.step = step;
    out.push_back(r);
  }
  return out;
}

bool has_rank_step(const std::vector<RankStep>& points, int rank, int64_t step) {
  return std::any_of(points.begin(), points.end(),
                     [&](const RankStep& p) { return p.rank == rank && p.step == step; });
}

bool is_save_crash_point(std::string_view point) {
  return std::find(kSaveCrashPoints.begin(), kSaveCrashPoints.end(), point) !=
         kSaveCrashPoints.end();
}

std::string save_crash_points_text() {
  std::string points;
  for (const std::string_view p : kSaveCrashPoints)
    points.append(points.empty() ? "" : ", ").append(p);
  return points;
}

void TrainConfig::validate() const {
  try {
    check_values();
  } catch (const InputError& e) {
    throw_located(e);
    throw;
  }
}

void TrainConfig::check_values() const {
  model.validate();
  require(steps >= 1, "--train.steps", "at least 1", steps);
  // The micro-batch first: sample and eval set the global batch from it.
  require(micro_batch >= 1, "--train.micro_batch", "at least 1 sequence", micro_batch);
  // A micro-batch of at most 2^31 tokens: counts of its tokens and their bytes stay far inside
  // int64.
  const int64_t max_micro = (int64_t{1} << 31) / model.seq_len;
  require(micro_batch <= max_micro, "--train.micro_batch",
          "at most 2^31 tokens: " + std::to_string(max_micro) + " sequences of --model.seq_len " +
              std::to_string(model.seq_len),
          micro_batch);
  require(global_batch >= 1, "--train.global_batch", "at least 1 sequence", global_batch);
  require(global_batch % micro_batch == 0, "--train.global_batch",
          "a multiple of --train.micro_batch = " + std::to_string(micro_batch), global_batch);
  require(model.device == Device::CPU || cuda_backend_built(), "--train.device",
          "cpu (this tessera was built without CUDA: TESSERA_CUDA=OFF)", "cuda");
  require(log_interval >= 1, "--train.log_interval", "at least 1", log_interval);
  require(threads >= 0, "--train.threads", "0 (the node's cores / its ranks) or more", threads);
  require(schedule.lr > 0 && std::isfinite(schedule.lr), "--optim.lr",
          "a positive, finite learning rate", schedule.lr);
  require(schedule.min_lr >= 0 && schedule.min_lr <= schedule.lr, "--optim.min_lr",
          "a value in [0, --optim.lr]", schedule.min_lr);
  require(schedule.cooldown > 0 && schedule.cooldown <= 1, "--optim.cooldown",
          "a fraction in (0, 1] of --train.steps", schedule.cooldown);
  require(schedule.warmup >= 0, "--optim.warmup", "0 or more steps", schedule.warmup);
  require(adamw.weight_decay >= 0 && std::isfinite(adamw.weight_decay), "--optim.weight_decay",
          "0 or more, finite", adamw.weight_decay);
  require(adamw.beta1 >= 0 && adamw.beta1 < 1, "--optim.beta1", "a value in [0, 1)", adamw.beta1);
  require(adamw.beta2 >= 0 && adamw.beta2 < 1, "--optim.beta2", "a value in [0, 1)", adamw.beta2);
  require(adamw.eps > 0 && std::isfinite(adamw.eps), "--optim.eps", "a positive, finite value",
          adamw.eps);
  require(adamw.clip >= 0 && std::isfinite(adamw.clip), "--optim.clip",
          "0 (off) or a positive, finite norm", adamw.clip);
  require(!data_path.empty(), "--data.path",
          "a corpus (PREFIX of PREFIX.bin + PREFIX.idx, or an llm.c .bin)", "nothing");
  require(valid_fraction >= 0 && valid_fraction < 1, "--data.valid_fraction", "a value in [0, 1)",
          valid_fraction);
  require(eval_interval >= 0, "--train.eval_interval", "0 (none) or more steps", eval_interval);
  require(checkpoint_interval >= 0, "--checkpoint.interval", "0 (none) or more steps",
          checkpoint_interval);
  require(checkpoint_keep >= 0, "--checkpoint.keep", "0 (all) or more", checkpoint_keep);
  require(!checkpoint_resume.empty(), "--checkpoint.resume",
          "auto, none or the PATH of a step directory", "nothing");
  require(checkpoint_init.empty() || checkpoint_resume == "auto" || checkpoint_resume == "none",
          "--checkpoint.init",
          "no --checkpoint.resume PATH beside it (a run resumes a checkpoint "
          "or starts from one's weights)",
          "--checkpoint.resume " + checkpoint_resume);
  require(exit_after >= 0, "--train.exit_after", "0 (never) or more steps", exit_after);
  require(time_limit >= 0, "--train.time_limit", "0 (none) or more seconds", time_limit);
  require(nan_policy == "halt" || nan_policy == "skip", "--train.nan_policy", "halt or skip",
          nan_policy);
  require(nan_max_skips >= 1, "--train.nan_max_skips", "at least 1", nan_max_skips);
  require(check_replicas >= 0, "--train.check_replicas", "0 (never) or more steps", check_replicas);
  // Bounded so that a deadline in nanoseconds fits in 64 bits (about 292 years).
  constexpr double kMaxTimeout = 1e9;
  require(collective_timeout > 0 && collective_timeout <= kMaxTimeout, "--train.collective_timeout",
          "a positive number of seconds, at most 1e9", collective_timeout);
  require(startup_timeout > 0 && startup_timeout <= kMaxTimeout, "--train.startup_timeout",
          "a positive number of seconds, at most 1e9", startup_timeout);
  rank_steps("--debug.inject_nan", debug_inject_nan);
  rank_steps("--debug.perturb_replicated", debug_perturb_replicated);
  rank_steps("--debug.flip_bit", debug_flip_bit);
  rank_steps("--debug.stall", debug_stall);
  rank_steps("--debug.slow_save", debug_slow_save, "SECONDS");
  if (!debug_kill_during_save.empty()) {
    const size_t colon = debug_kill_during_save.find(':');
    const std::string rank = debug_kill_during_save.substr(0, colon);
    const bool point_known =
        colon != std::string::npos && is_save_crash_point(debug_kill_during_save.substr(colon + 1));
    require(point_known && !rank.empty() &&
                std::all_of(rank.begin(), rank.end(), [](char c) { return c >= '0' && c <= '9'; }),
            "--debug.kill_during_save", "RANK:POINT, POINT one of " + save_crash_points_text(),
            debug_kill_during_save);
  }
  require(debug_wait_for_stop >= 0, "--debug.wait_for_stop", "0 (off) or a step",
          debug_wait_for_stop);
  require(eval_batches >= 1, "--train.eval_batches", "at least 1", eval_batches);
  if (run_dir.empty()) throw InputError("--run.dir: expected a directory, found \"\"");
  // A path's quotes are its own characters (only a blend's words are grouped by them): a config
  // file's `dir = "runs/a"` would make a directory named "runs (holding a").
  for (const auto& [option, path] :
       {std::pair<const char*, const std::string&>{"--run.dir", run_dir},
        {"--checkpoint.resume", checkpoint_resume},
        {"--checkpoint.init", checkpoint_init},
        {"--data.tokenizer", tokenizer_model},
        {"--data.cache_dir", cache_dir}})
    if (path.starts_with('"') || path.ends_with('"'))
      throw InputError(std::string(option) + " " + path +
                       ": expected a path, found one in double quotes, which would be part of "
                       "the name (only --data.path and --data.valid_path group words in "
                       "quotes); write it without them, spaces and all");
  require(parallel.tp >= 1, "--parallel.tp", "at least 1", parallel.tp);
  require(parallel.pp >= 1, "--parallel.pp", "at least 1", parallel.pp);
  require(parallel.virtual_stages >= 1, "--parallel.virtual_stages", "at least 1",
          parallel.virtual_stages);
  require(parallel.dp >= 0, "--parallel.dp", "0 (inferred) or more", parallel.dp);
  if (model.device == Device::CUDA) {
    // The CUDA kernels give each sequence's heads on this rank a row of blocks (a head count
    // that --parallel.tp does not divide is refused later).
    constexpr int64_t kRows = ops::cuda::kAttentionMaxBatchHeads;
    const int64_t local_heads = std::max<int64_t>(1, model.heads / parallel.tp);
    require(micro_batch <= kRows / local_heads, "--train.micro_batch",
            "with --train.device cuda at most " + std::to_string(kRows) + " / " +
                std::to_string(local_heads) + " heads per TP rank = " +
                std::to_string(kRows / local_heads) + " sequences (the CUDA kernels' grid)",
            micro_batch);
  }
  require(parallel.zero == 0 || parallel.zero == 1, "--parallel.zero", "0 or 1", parallel.zero);
  require(parallel.bucket_mb >= 0 && std::isfinite(parallel.bucket_mb), "--parallel.bucket_mb",
          "0 (auto) or a positive, finite size", parallel.bucket_mb);
  require(sample_tokens >= 0, "--sample.tokens", "0 or more", sample_tokens);
  require(sample_temperature > 0 && std::isfinite(sample_temperature), "--sample.temperature",
          "a positive, finite value", sample_temperature);
  require(sample_top_k >= 0, "--sample.top_k", "0 (all) or more", sample_top_k);
  require(peak_tflops >= 0 && std::isfinite(peak_tflops), "--gpu.peak_tflops",
          "0 (from the table) or a positive, finite rate", peak_tflops);
}

GridLayout TrainConfig::model_layout_for(int world_size) const {
  return split_model(resolve_layout(parallel.tp, parallel.pp, 0, world_size));
}

GridLayout TrainConfig::layout_for(int world_size) const {
  const GridLayout l =
      split_model(resolve_layout(parallel.tp, parallel.pp, parallel.dp, world_size));
  // Each product below is taken only once it is known to fit: dp x micro_batch <= global_batch.
  require(micro_batch <= global_batch / l.dp &&
              global_batch % (static_cast<int64_t>(l.dp) * micro_batch) == 0,
          "--train.global_batch",
          "a multiple of data-parallel ranks x --train.micro_batch = " + std::to_string(l.dp) +
              " x " + std::to_string(micro_batch),
          global_batch);
  // With model chunks each microbatch runs through every chunk: the schedule counts both.
  const int v = parallel.virtual_stages;
  require(accumulation_steps(l.dp) <= (int64_t{1} << 30) / v, "--train.global_batch",
          "at most 2^30 microbatches per step and rank (--train.global_batch / (" +
              count_of(l.dp, "data-parallel rank") + " x --train.micro_batch " +
              std::to_string(micro_batch) + ")" +
              (v > 1 ? " x --parallel.virtual_stages " + std::to_string(v) : std::string()) + ")",
          global_batch);
  if (v > 1) {
    require(l.pp >= 2, "--parallel.virtual_stages",
            "1 with --parallel.pp 1 (model chunks interleave over pipeline stages)", v);
    require(model.layers >= int64_t{l.pp} * v, "--model.layers",
            "at least one layer per model chunk, --parallel.pp x --parallel.virtual_stages = " +
                std::to_string(l.pp) + " x " + std::to_string(v),
            model.layers);
    const std::string problem =
        interleaved_schedule_problem(l.pp, static_cast<int>(accumulation_steps(l.dp)), v);
    if (!problem.empty())
      throw InputError("--train.global_batch: with --parallel.virtual_stages " + std::to_string(v) +
                       " and --parallel.pp " + std::to_string(l.pp) + ", " + problem +
                       " microbatches per step: --train.global_batch " +
                       std::to_string(global_batch) + " / (" +
                       count_of(l.dp, "data-parallel rank") + " x --train.micro_batch " +
                       std::to_string(micro_batch) + ")");
  }
  return l;
}

GridLayout TrainConfig::split_model(const GridLayout& l) const {
  model.validate(l.tp);
  if (parallel.sequence_parallel)
    require(model.seq_len % l.tp == 0, "--model.seq_len",
            "a multiple of --parallel.tp = " + std::to_string(l.tp) +
                " with --parallel.sequence_parallel (each TP rank keeps 1/tp of the tokens)",
            model.seq_len);
  require(model.layers >= l.pp, "--model.layers",
          "at least one layer per pipeline stage, --parallel.pp = " + std::to_string(l.pp),
          model.layers);
  return l;
}

void TrainConfig::throw_located(const InputError& e) const {
  const std::string what = e.what();
  if (const auto at = set_in_file.find(what.substr(0, what.find_first_of(": ")));
      at != set_in_file.end())
    throw InputError(what + " (" + at->second + ")");
}

bool parse_train_config(int argc, char** argv, TrainConfig& cfg) {
  if (!read_train_options(argc, argv, cfg, "", "", true)) return false;
  cfg.validate();
  return true;
}

namespace {

std::string trimmed(std::string_view s) {
  const size_t a = s.find_first_not_of(" \t\r"), b = s.find_last_not_of(" \t\r");
  return a == s.npos ? std::string() : std::string(s.substr(a, b - a + 1));
}

// One line of INI text as Boost reads it: its number (from 1), the line trimmed, and when it
// sets an option, the option's name ("section.key") and the text after '='.
struct IniLine {
  int number = 0;
  std::string text, option, value;
};

// Calls fn(line) for each line of `text` that is not a section header; stops early, returning
// that line, when fn returns true.
template <typename F>
std::optional<IniLine> find_ini_line(const std::string& text, F&& fn) {
  std::istringstream in(text);
  std::string section;
  IniLine l;
  for (std::string line; std::getline(in, line);) {
    ++l.number;
    l.text = trimmed(line);
    if (l.text.starts_with('[') && l.text.find(']') != l.text.npos) {
      section = trimmed(std::string_view(l.text).substr(1, l.text.find(']') - 1));
      continue;
    }
    const size_t eq = l.text.find('=');
    const std::string key = eq == l.text.npos ? "" : trimmed(l.text.substr(0, eq));
    l.option = key.empty() ? "" : section.empty() ? key : section + "." + key;
    l.value = eq == l.text.npos ? "" : l.text.substr(eq + 1);
    if (fn(l)) return l;
  }
  return std::nullopt;
}

// Boost's INI reader cuts every line at its first '#', a comment, also inside a value: the
// prompt, text where a '#' is likely meant ("Q: is C# fun?"), and a value with a '#' right after
// a character of its own ("runs/a#2", where "runs/a  # mine" is a comment) would end before it
// unsaid. `prompt`: whether the file's prompt is the run's (one given on the command line is).
void refuse_comment_in_value(const std::string& text, const std::string& file, bool prompt) {
  const auto line = find_ini_line(text, [&](const IniLine& l) {
    const size_t hash = l.value.find('#');
    if (l.option.empty() || hash == std::string::npos) return false;
    if (l.option == "sample.prompt") return prompt;
    return hash > 0 && l.value[hash - 1] != ' ' && l.value[hash - 1] != '\t';
  });
  if (!line) return;
  const std::string before = trimmed(line->value.substr(0, line->value.find('#')));
  const std::string head = "config file " + file + " line " + std::to_string(line->number) +
                           ": a '#' starts a comment in an INI file, also inside a value, so --" +
                           line->option + " would end before it (\"" + before + "\"); ";
  if (line->option == "sample.prompt")
    throw InputError(head +
                     "write \\x23 for a '#' in the prompt, and a comment on a line of its own");
  throw InputError(head +
                   "no other value can hold a '#' (the run's config.ini could not keep it), "
                   "and a comment goes after a space or on a line of its own");
}

// The line that sets each option of INI text `name` (what messages call it); InputError for an
// option set on two lines, which Boost refuses only when the command line does not set it too
// (its value is stored first, and the text's are then passed over).
std::map<std::string, int> option_lines(const std::string& text, const std::string& name) {
  std::map<std::string, int> first;
  const auto line = find_ini_line(text, [&](const IniLine& l) {
    return !l.option.empty() && !first.emplace(l.option, l.number).second;
  });
  if (line)
    throw InputError(name + " line " + std::to_string(line->number) + ": --" + line->option +
                     " is set again (first on line " + std::to_string(first.at(line->option)) +
                     "); set each option once");
  return first;
}

// `name` (what messages call the INI text) with the number of the line Boost's error `e` is
// about: the one that sets the option it names (option_lines has refused one set twice), or the
// line it quotes (a line without '=').
std::string where_in_ini(const std::string& text, const std::string& name, const po::error& e) {
  std::string option;
  if (const auto* o = dynamic_cast<const po::error_with_option_name*>(&e)) {
    option = o->get_option_name();
    option.erase(0, option.find_first_not_of('-'));
  }
  const std::string what = e.what();
  const size_t open = what.find('\''), close = what.rfind('\'');
  const std::string quoted =
      open != close && close != std::string::npos ? what.substr(open + 1, close - open - 1) : "";
  const auto line = find_ini_line(text, [&](const IniLine& l) {
    return option.empty() ? !quoted.empty() && l.text.starts_with(quoted) : l.option == option;
  });
  return line ? name + " line " + std::to_string(line->number) : name;
}

}  // namespace

std::string with_ini_value(const std::string& text, const std::string& option,
                           const std::string& value) {
  const auto found = find_ini_line(text, [&](const IniLine& l) { return l.option == option; });
  TESSERA_CHECK(found, "with_ini_value: " + option + " is not in the INI text");
  std::istringstream in(text);
  std::string out;
  int number = 0;
  for (std::string line; std::getline(in, line);)
    out +=
        (++number == found->number ? option.substr(option.find('.') + 1) + " = " + value : line) +
        "\n";
  return out;
}

std::map<std::string, std::string> ini_values(const std::string& text) {
  std::map<std::string, std::string> values;
  find_ini_line(text, [&](const IniLine& l) {
    if (!l.option.empty()) values[l.option] = trimmed(l.value);
    return false;
  });
  return values;
}

namespace {
void convert_options(const po::variables_map& vm, const po::options_description& all,
                     const RawOptions& raw, TrainConfig& cfg);
}  // namespace

namespace {

// --check's RANKS: 0 when it is left out, else a whole number from 1.
int check_ranks(const std::string& text) {
  int ranks = 0;
  const char* end = text.data() + text.size();
  const auto r = std::from_chars(text.data(), end, ranks);
  if (!text.empty() && (r.ec != std::errc() || r.ptr != end || ranks < 1))
    throw InputError(
        "--check: expected the number of ranks to check the run for (a whole number from 1, or "
        "nothing for tp x pp x dp), found \"" +
        text + "\"");
  return ranks;
}

}  // namespace

bool read_train_options(int argc, char** argv, TrainConfig& cfg, const std::string& base,
                        const std::string& base_name, bool with_check) {
  RawOptions raw;
  raw.seed = std::to_string(cfg.seed);
  po::options_description generic("tessera train [--config FILE] [--section.key value ...]");
  generic.add_options()("help,h", "list every option with its default")(
      "config", po::value<std::string>(), "INI file; command-line options override it");
  if (with_check)
    generic.add_options()("check",
                          po::value<std::string>()->implicit_value("")->value_name("[RANKS]"),
                          "check the run for RANKS ranks (default: tp x pp x dp, or the ranks "
                          "started) and exit: options, layout, tokenizer, corpora, the checkpoint "
                          "it would resume; nothing is written");
  po::options_description all = train_options(cfg, raw);
  po::options_description cmdline;
  cmdline.add(generic).add(all);

  // A true/false option takes a value: written as a switch (Megatron-LM's way) before another
  // option, Boost would take that option for its value, and then stop at the next one's value.
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    // "--check -1": Boost would take -1 for an option of its own.
    if (with_check && word == "--check" && i + 1 < argc && argv[i + 1][0] == '-' &&
        std::isdigit(static_cast<unsigned char>(argv[i + 1][1])))
      check_ranks(argv[i + 1]);
    const po::option_description* o =
        word.starts_with("--") ? all.find_nothrow(word.substr(2), false) : nullptr;
    if (!o || !dynamic_cast<const po::typed_value<bool>*>(o->semantic().get())) continue;
    if (i + 1 < argc && !std::string_view(argv[i + 1]).starts_with("--")) continue;
    throw InputError(word + ": expected true or false after it, found " +
                     (i + 1 < argc ? "the option " + std::string(argv[i + 1]) : "nothing") +
                     " (a true/false option takes a value: " + word + " true)");
  }

  po::variables_map vm;
  // The first store() of a value wins, so the command line goes in before the file.
  const po::parsed_options parsed = [&] {
    try {
      return po::command_line_parser(argc, argv).options(cmdline).style(command_line_style()).run();
    } catch (const po::unknown_option& e) {
      throw po::error(unknown_option_text(e, cmdline));  // "(see tessera CMD --help)" follows
    }
  }();
  std::set<std::string> given;  // on the command line: a file's value of these is not the run's
  for (const po::option& o : parsed.options) {
    if (o.position_key >= 0)  // a word without an option before it, e.g. a config file's name
      throw InputError("unexpected argument \"" + o.original_tokens.front() +
                       "\": options are --section.key VALUE, and a config file is --config FILE");
    given.insert(o.string_key);
  }
  try {
    po::store(parsed, vm);
  } catch (const po::invalid_option_value& e) {
    throw InputError(invalid_value_text(e, all));
  }
  if (vm.count("help")) {
    std::cout << generic << all << "\n";
    return false;
  }
  if (vm.count("check")) cfg.check_ranks = check_ranks(vm["check"].as<std::string>());
  // INI text beneath what is stored already; `name` is what its messages call it. Returns the
  // line that sets each option.
  const auto store_ini = [&](const std::string& text, const std::string& name) {
    std::map<std::string, int> lines = option_lines(text, name);
    std::istringstream in(text);
    try {
      po::store(po::parse_config_file(in, all, /*allow_unregistered=*/false), vm);
    } catch (const po::error& e) {
      throw InputError(where_in_ini(text, name, e) + ": " + option_error_text(e, all));
    }
    return lines;
  };
  if (vm.count("config")) {
    const std::string file = vm["config"].as<std::string>();
    std::error_code ec;
    if (std::filesystem::is_directory(file, ec))  // read as empty; a pipe or /dev/stdin is fine
      throw InputError("--config " + file + ": expected an INI file, found a directory");
    std::ifstream in(file);
    if (!in) throw InputError("--config " + file + ": no such file or not readable");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.starts_with("\xEF\xBB\xBF")) text.erase(0, 3);  // a UTF-8 byte-order mark (Windows)
    // A NUL would end the parser's message where it is quoted; no INI file holds one.
    if (const size_t nul = text.find('\0'); nul != std::string::npos)
      throw InputError(
          "--config " + file + ": expected an INI text file, found a NUL byte on line " +
          std::to_string(
              1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(nul), '\n')) +
          " (a binary file, or one saved as UTF-16?)");
    // (A prompt given on the command line, stored already, is the one the run uses.)
    refuse_comment_in_value(text, file,
                            !vm.count("sample.prompt") || vm["sample.prompt"].defaulted());
    for (const auto& [option, line] : store_ini(text, "config file " + file))
      if (!given.count(option))
        cfg.set_in_file["--" + option] = "config file " + file + " line " + std::to_string(line);
  }
  if (!base.empty()) store_ini(base, base_name);
  po::notify(vm);
  try {
    convert_options(vm, all, raw, cfg);
  } catch (const InputError& e) {
    cfg.throw_located(e);
    throw;
  }
  return true;
}

namespace {

// The options whose text read_train_options kept raw (RawOptions), converted, and the resolved
// config.ini.
void convert_options(const po::variables_map& vm, const po::options_description& all,
                     const RawOptions& raw, TrainConfig& cfg) {
  cfg.seed = unsigned_integer("--train.seed", raw.seed);
  cfg.model.pos = choose<PositionKind>(
      "--model.pos", raw.pos,
      {{"learned", PositionKind::Learned}, {"sinusoidal", PositionKind::Sinusoidal}});
  cfg.schedule.decay = choose<DecayKind>("--optim.decay", raw.decay,
                                         {{"cosine", DecayKind::Cosine},
                                          {"linear", DecayKind::Linear},
                                          {"constant", DecayKind::Constant},
                                          {"wsd", DecayKind::WarmupStableDecay}});
  cfg.model.device =
      choose<Device>("--train.device", raw.device, {{"cpu", Device::CPU}, {"cuda", Device::CUDA}});
  const DType automatic = cfg.model.device == Device::CUDA ? DType::BF16 : DType::F32;
  cfg.model.dtype =
      choose<DType>("--train.precision", raw.precision,
                    {{"auto", automatic}, {"fp32", DType::F32}, {"bf16", DType::BF16}});
  cfg.model.recompute = choose<Recompute>(
      "--train.recompute", raw.recompute,
      {{"none", Recompute::None}, {"selective", Recompute::Selective}, {"full", Recompute::Full}});
  using ops::AttentionKernels;
  cfg.attention_kernels = choose<AttentionKernels>(
      "--gpu.attention", raw.attention,
      {{ops::attention_kernels_name(AttentionKernels::CudaCores), AttentionKernels::CudaCores},
       {ops::attention_kernels_name(AttentionKernels::TensorCores), AttentionKernels::TensorCores},
       {ops::attention_kernels_name(AttentionKernels::Cudnn), AttentionKernels::Cudnn}});
  cfg.schedule.total_steps = cfg.steps;
  cfg.sample_prompt = unescape_prompt(cfg.sample_prompt);
  cfg.resolved_ini = resolved_ini(vm, all);
}

}  // namespace

}  // namespace tessera
