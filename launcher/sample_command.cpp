// `tessera sample`: the checkpoint's model (launcher/saved_model.h) continues the prompt.
#include "launcher/sample_command.h"

#include "launcher/sampling.h"
#include "launcher/saved_model.h"

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

}  // namespace

int sample_command(int argc, char** argv) {
  SavedModelCommand c;
  c.name = "sample";
  c.usage = kUsage;
  c.aliases = {{"--prompt", "--sample.prompt"}};
  c.prepare = [](TrainConfig& cfg, const TrainConfig& saved, const SavedModelArgs& args,
                 const GridLayout&, int) {
    if (cfg.sample_tokens == 0) cfg.sample_tokens = 100;
    check_saved_paths(args, "--data.tokenizer", cfg.tokenizer_model, saved.tokenizer_model,
                      [&] { check_sampling_tokenizer(cfg); });
  };
  c.run = [](SavedModel& m) { print_sample(m.cfg, m.model, m.grid.tp(), m.grid.pp(), m.root); };
  return run_saved_model(argc, argv, c);
}

}  // namespace tessera
