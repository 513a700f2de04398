// What Boost.Program_options reports of a bad value or an unknown option, said the way
// tessera's messages are: the option, what it takes, what was found, what was likely meant; and
// the command-line style every command parses with. Shared by `tessera`'s commands and the
// benchmarks.
#pragma once

#include <algorithm>
#include <boost/program_options.hpp>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include "core/error.h"

namespace tessera {

// Boost's command-line style without its guessing, which takes an abbreviation for the one
// option it begins (`--optim.l 3` trained with --optim.lr 3, where a config file refuses
// `l = 3`): an option is its whole name.
inline int command_line_style() {
  namespace style = boost::program_options::command_line_style;
  return style::default_style & ~style::allow_guessing;
}

// The option of `all` that `name` (an unknown option, without dashes) was likely meant for: one
// it begins, else the nearest at most 2 edits away (a typo); "" when none or several are.
inline std::string closest_option(const std::string& name,
                                  const boost::program_options::options_description& all) {
  const auto distance = [](const std::string& a, const std::string& b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
      size_t diagonal = row[0];
      row[0] = i;
      for (size_t j = 1; j <= b.size(); ++j) {
        const size_t above = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
        diagonal = above;
      }
    }
    return row[b.size()];
  };
  std::vector<std::string> begun;
  std::string nearest;
  size_t best = 3;  // at most 2 edits
  for (const auto& o : all.options()) {
    const std::string& option = o->long_name();
    if (option.empty() || option == name) continue;
    if (option.starts_with(name)) begun.push_back(option);
    const size_t d = distance(name, option);
    if (d < best) best = d, nearest = option;
  }
  if (!begun.empty()) return begun.size() == 1 ? begun.front() : "";
  if (!nearest.empty()) return nearest;
  // The right key in another section ("train.layers" for model.layers), or in none.
  const std::string key = name.substr(name.find('.') + 1);  // npos + 1: the whole name
  std::vector<std::string> keyed;
  for (const auto& o : all.options()) {
    const std::string& option = o->long_name();
    if (option != name && option.substr(option.find('.') + 1) == key) keyed.push_back(option);
  }
  return keyed.size() == 1 ? keyed.front() : "";
}

// What another trainer's option `dashed`, as written ("--num-layers", "-b", "--training.steps"),
// is in tessera, for those who write it from habit: the trainer's name and ours
// ("Megatron-LM", "--model.layers"); empty names for an option none of them has, or one tessera
// has no counterpart of.
struct Counterpart {
  std::string trainer, ours;
};
inline Counterpart counterpart_of(const std::string& dashed) {
  static const struct {
    const char *trainer, *theirs, *ours;
  } kNames[] = {
      {"Megatron-LM", "--num-layers", "--model.layers"},
      {"Megatron-LM", "--hidden-size", "--model.d_model"},
      {"Megatron-LM", "--num-attention-heads", "--model.heads"},
      {"Megatron-LM", "--ffn-hidden-size", "--model.d_ff"},
      {"Megatron-LM", "--seq-length", "--model.seq_len"},
      {"Megatron-LM", "--max-position-embeddings", "--model.seq_len"},
      {"Megatron-LM", "--init-method-std", "--model.init_std"},
      {"Megatron-LM", "--micro-batch-size", "--train.micro_batch"},
      {"Megatron-LM", "--global-batch-size", "--train.global_batch"},
      {"Megatron-LM", "--train-iters", "--train.steps"},
      {"Megatron-LM", "--seed", "--train.seed"},
      {"Megatron-LM", "--log-interval", "--train.log_interval"},
      {"Megatron-LM", "--eval-interval", "--train.eval_interval"},
      {"Megatron-LM", "--eval-iters", "--train.eval_batches"},
      {"Megatron-LM", "--recompute-granularity", "--train.recompute"},
      {"Megatron-LM", "--bf16", "--train.precision bf16"},
      {"Megatron-LM", "--lr", "--optim.lr"},
      {"Megatron-LM", "--min-lr", "--optim.min_lr"},
      {"Megatron-LM", "--lr-warmup-iters", "--optim.warmup"},
      {"Megatron-LM", "--lr-decay-style", "--optim.decay"},
      {"Megatron-LM", "--weight-decay", "--optim.weight_decay"},
      {"Megatron-LM", "--adam-beta1", "--optim.beta1"},
      {"Megatron-LM", "--adam-beta2", "--optim.beta2"},
      {"Megatron-LM", "--adam-eps", "--optim.eps"},
      {"Megatron-LM", "--clip-grad", "--optim.clip"},
      {"Megatron-LM", "--tensor-model-parallel-size", "--parallel.tp"},
      {"Megatron-LM", "--pipeline-model-parallel-size", "--parallel.pp"},
      {"Megatron-LM", "--sequence-parallel", "--parallel.sequence_parallel true"},
      {"Megatron-LM", "--use-distributed-optimizer", "--parallel.zero 1"},
      {"Megatron-LM", "--save", "--run.dir"},
      {"Megatron-LM", "--save-interval", "--checkpoint.interval"},
      {"Megatron-LM", "--load", "--checkpoint.resume"},
      {"Megatron-LM", "--finetune", "--checkpoint.init"},
      {"Megatron-LM", "--data-path", "--data.path"},
      {"Megatron-LM", "--valid-data-path", "--data.valid_path"},
      {"Megatron-LM", "--data-cache-path", "--data.cache_dir"},
      {"Megatron-LM", "--vocab-size", "--model.vocab_size"},
      {"Megatron-LM", "--recompute-activations", "--train.recompute selective"},
      {"Megatron-LM", "--virtual-pipeline-model-parallel-size", "--parallel.virtual_stages"},
      {"Megatron-LM", "--exit-duration-in-mins", "--train.time_limit (seconds)"},
      {"Megatron-LM", "--tokenizer-model", "--data.tokenizer"},
      // torchtitan's TOML keys as command-line options.
      {"torchtitan", "--training.steps", "--train.steps"},
      {"torchtitan", "--training.local_batch_size", "--train.micro_batch"},
      {"torchtitan", "--training.batch_size", "--train.micro_batch"},
      {"torchtitan", "--training.global_batch_size", "--train.global_batch"},
      {"torchtitan", "--training.seq_len", "--model.seq_len"},
      {"torchtitan", "--training.max_norm", "--optim.clip"},
      {"torchtitan", "--training.dataset_path", "--data.path"},
      {"torchtitan", "--training.mixed_precision_param", "--train.precision"},
      {"torchtitan", "--optimizer.lr", "--optim.lr"},
      {"torchtitan", "--optimizer.eps", "--optim.eps"},
      {"torchtitan", "--optimizer.weight_decay", "--optim.weight_decay"},
      {"torchtitan", "--optimizer.beta1", "--optim.beta1"},
      {"torchtitan", "--optimizer.beta2", "--optim.beta2"},
      {"torchtitan", "--lr_scheduler.warmup_steps", "--optim.warmup"},
      {"torchtitan", "--lr_scheduler.decay_type", "--optim.decay"},
      {"torchtitan", "--metrics.log_freq", "--train.log_interval"},
      {"torchtitan", "--job.dump_folder", "--run.dir"},
      {"torchtitan", "--checkpoint.keep_latest_k", "--checkpoint.keep"},
      {"torchtitan", "--activation_checkpoint.mode", "--train.recompute"},
      {"torchtitan", "--parallelism.tensor_parallel_degree", "--parallel.tp"},
      {"torchtitan", "--parallelism.pipeline_parallel_degree", "--parallel.pp"},
      {"torchtitan", "--parallelism.data_parallel_replicate_degree", "--parallel.dp"},
      {"torchtitan", "--parallelism.data_parallel_shard_degree",
       "--parallel.dp with --parallel.zero 1 (which shards the optimizer state, not the weights)"},
      {"torchtitan", "--checkpoint.folder", "--run.dir (checkpoints go in RUN_DIR/checkpoints)"},
      {"torchtitan", "--comm.train_timeout_seconds", "--train.collective_timeout"},
      {"torchtitan", "--comm.init_timeout_seconds", "--train.startup_timeout"},
      {"torchtitan", "--model.tokenizer_path", "--data.tokenizer"},
      {"torchtitan", "--validation.freq", "--train.eval_interval"},
      {"torchtitan", "--validation.steps", "--train.eval_batches"},
      // llm.c's train_gpt2cu flags.
      {"llm.c", "-i", "--data.path"},
      {"llm.c", "-j", "--data.valid_path"},
      {"llm.c", "-o", "--run.dir"},
      {"llm.c", "-b", "--train.micro_batch"},
      {"llm.c", "-t", "--model.seq_len"},
      {"llm.c", "-d", "--train.global_batch (sequences, not tokens)"},
      {"llm.c", "-x", "--train.steps"},
      {"llm.c", "-l", "--optim.lr"},
      {"llm.c", "-u", "--optim.warmup"},
      {"llm.c", "-c", "--optim.weight_decay"},
      {"llm.c", "-v", "--train.eval_interval"},
      {"llm.c", "-m", "--train.eval_batches"},
      {"llm.c", "-n", "--checkpoint.interval"},
      {"llm.c", "-nk", "--checkpoint.keep"},
      {"llm.c", "-y", "--checkpoint.resume (auto for -y 1, none for -y 0)"},
      {"llm.c", "-k", "--optim.decay"},
      {"llm.c", "-q", "--optim.min_lr (a rate, where -q is a fraction of the peak)"},
      {"llm.c", "-g", "--sample.tokens"},
      {"llm.c", "-r", "--train.recompute"},
      {"llm.c", "-z", "--parallel.zero"},
  };
  for (const auto& n : kNames)
    if (dashed == n.theirs) return {n.trainer, n.ours};
  return {};
}

// Boost's message for an unknown option, with "(did you mean --X?)" when closest_option finds
// one, or "(Megatron-LM's --num-layers is --model.layers here)" for another trainer's option.
inline std::string unknown_option_text(const boost::program_options::unknown_option& e,
                                       const boost::program_options::options_description& all) {
  const std::string given = e.get_option_name();
  const std::string dashed = given.substr(0, given.find('='));  // "--num-layers=4"
  if (const Counterpart c = counterpart_of(dashed);
      !c.ours.empty() && all.find_nothrow(c.ours.substr(2, c.ours.find(' ') - 2), false))
    return std::string(e.what()) + " (" + c.trainer + "'s " + dashed + " is " + c.ours + " here)";
  const std::string name = dashed.substr(std::min(dashed.find_first_not_of('-'), dashed.size()));
  const std::string meant = closest_option(name, all);
  return std::string(e.what()) + (meant.empty() ? "" : " (did you mean --" + meant + "?)");
}

// Boost's "the argument ('abc') for option '--train.steps' is invalid" as
// `--train.steps: expected a whole number from -2^31 to 2^31 - 1, found "abc"`; Boost's own text
// for an option of another type, or one not in `all`.
inline std::string invalid_value_text(const boost::program_options::invalid_option_value& e,
                                      const boost::program_options::options_description& all) {
  namespace po = boost::program_options;
  const std::string what = e.what(), dashed = e.get_option_name();
  const size_t open = what.find("('"), close = what.rfind("')"),
               start = dashed.find_first_not_of('-');
  if (start == std::string::npos) return what;
  // Boost quotes the value it refused, unless it is empty ("steps =" in an INI file).
  const bool quoted = open != std::string::npos && close != std::string::npos && close > open;
  const std::string found = quoted ? what.substr(open + 2, close - open - 2) : "";
  const std::string name = dashed.substr(start);
  const po::option_description* d = all.find_nothrow(name, false);
  const auto* typed = d ? dynamic_cast<const po::typed_value_base*>(d->semantic().get()) : nullptr;
  if (!typed) return what;
  // Booleans fail as po::invalid_bool_value, whose message lists the words Boost takes.
  const std::type_info& type = typed->value_type();
  const char* expected = type == typeid(int)       ? "a whole number from -2^31 to 2^31 - 1"
                         : type == typeid(int64_t) ? "a whole number from -2^63 to 2^63 - 1"
                         : type == typeid(double)  ? "a number"
                                                   : nullptr;
  if (!expected) return what;
  return "--" + name + ": expected " + expected + ", found \"" + found + "\"";
}

// Any error Boost.Program_options raises, said as above: a bad value as invalid_value_text, an
// unknown option as unknown_option_text, the others in Boost's words.
inline std::string option_error_text(const boost::program_options::error& e,
                                     const boost::program_options::options_description& all) {
  namespace po = boost::program_options;
  if (const auto* v = dynamic_cast<const po::invalid_option_value*>(&e))
    return invalid_value_text(*v, all);
  if (const auto* u = dynamic_cast<const po::unknown_option*>(&e))
    return unknown_option_text(*u, all);
  return e.what();
}

// Words given to a command, said in a message: their count, then each in quotes ("2: "a" "b"",
// "none").
inline std::string words_found(const std::vector<std::string>& words) {
  if (words.empty()) return "none";
  std::string out = std::to_string(words.size()) + ":";
  for (const std::string& w : words) out.append(" \"").append(w).append("\"");
  return out;
}

// The words after `tessera COMMAND` (or `tessera COMMAND VERB`) parsed against `desc`, which
// holds --help: the options stored in `vm`, and the words given without an option before them
// (a DIR, a RUN_DIR) returned in order, after `check_words` (which throws InputError for a count
// the command does not take) has seen them. With --help, nullopt and nothing checked; else
// notify()'s checks (a required option) run after check_words. Boost's errors are said as
// option_error_text, with `see_help` (" (see tessera ... --help)") added.
inline std::optional<std::vector<std::string>> parse_command_words(
    const std::vector<std::string>& args, const boost::program_options::options_description& desc,
    boost::program_options::variables_map& vm, const std::string& see_help,
    const std::function<void(const std::vector<std::string>&)>& check_words) {
  namespace po = boost::program_options;
  std::vector<std::string> words;
  try {
    po::parsed_options parsed =
        po::command_line_parser(args).options(desc).style(command_line_style()).run();
    for (const po::option& o : parsed.options)
      if (o.position_key >= 0) words.push_back(o.original_tokens.front());
    po::store(parsed, vm);
    if (vm.count("help")) return std::nullopt;
    check_words(words);
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(option_error_text(e, desc) + see_help);
  }
  return words;
}

}  // namespace tessera
