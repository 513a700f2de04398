// `tessera eval`: the checkpoint's model (launcher/saved_model.h) over a corpus's samples in
// order, forward only: the mean loss per token, as training's validation computes it.
#include "launcher/eval_command.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/number_text.h"
#include "io/data_loader.h"
#include "launcher/corpora.h"
#include "launcher/progress.h"
#include "launcher/sampling.h"
#include "launcher/saved_model.h"
#include "parallel/pipeline.h"

namespace tessera {

namespace {

constexpr const char* kUsage =
    "usage: tessera eval --checkpoint DIR [--data.path CORPUS] [--eval.samples N] [options]\n"
    "\n"
    "The mean loss per token of the model saved in DIR (a checkpoint step_N, or a run's\n"
    "checkpoints/ directory, of which the one `latest` names is taken) over samples read in\n"
    "order, unshuffled, as training's validation reads them: those of --data.path when given\n"
    "(globs and blends as in tessera train; a blend is read as one corpus, each sample once),\n"
    "else the saving run's validation samples (its --data.valid_path, or the held-out end of\n"
    "each of its corpora). The options start from the config saved in the checkpoint; any\n"
    "`tessera train` option overrides it, except the model's shape. Under mpirun the ranks run\n"
    "--parallel.tp x --parallel.pp, the rest data-parallel. Token ids are checked as in\n"
    "tessera train, recorded in the saving run's data cache when it is here (or in a\n"
    "--data.cache_dir given).\n"
    "\n"
    "  --eval.samples N          samples to read from the start (0, the default: all of them)\n"
    "  --train.micro_batch B     sequences per forward\n"
    "  --train.device cpu|cuda  --train.precision auto|fp32|bf16  --train.threads N\n"
    "  --parallel.tp N --parallel.pp N   the layout of the ranks under mpirun\n";

// The corpus, opened and checked against the vocabulary, and how much of it is read.
struct EvalData {
  std::unique_ptr<CorpusOpener> opener;  // its id-check records are written once all checked
  std::unique_ptr<SampleStream> stream;
  std::string what;         // the corpus as given
  std::string option;       // the option that gave it
  int64_t samples = 0;      // read: whole micro-batches of every DP rank
  int64_t left_out = 0;     // of those asked for, less than a round of micro-batches
  int64_t token_bytes = 2;  // of the first corpus, for the progress line
  // What the saving run's own validation read, when these are its validation samples: its
  // first eval_batches x global_batch samples (0: they are not), of `available`.
  int64_t validated = 0, available = 0, eval_batches = 0, global_batch = 0;
};

// The samples to read: --data.path's when given, else the saving run's validation samples (its
// --data.valid_path, or the held-out end of each of its corpora). A blend is read as one corpus:
// weighted by the corpora's samples, so that reading them all takes each sample once.
EvalData open_eval_data(const TrainConfig& cfg, const TrainConfig& saved,
                        const SavedModelArgs& args, const GridLayout& layout, int rank) {
  EvalData d;
  // --data.path given here: on the command line, or by a --config file as another corpus.
  const bool given = gives_option(args, "--data.path") || cfg.data_path != saved.data_path;
  const bool own_corpus = given || !cfg.valid_path.empty();
  const std::string option = given || cfg.valid_path.empty() ? "--data.path" : "--data.valid_path";
  const std::string path = option == "--data.path" ? cfg.data_path : cfg.valid_path;
  d.option = option;
  // The id-check records: those of --data.cache_dir when given here (as in tessera train), else
  // those of the saving run when its data cache is here; eval creates no directory of its own.
  d.opener = std::make_unique<CorpusOpener>(
      data_cache_dir(cfg, gives_option(args, "--data.cache_dir")), rank, layout.world_size());
  std::vector<TokenCorpus> corpora;
  check_saved_paths(
      args, option, path, option == "--data.path" ? saved.data_path : saved.valid_path,
      [&] {  // a glob is expanded by the parse
        corpora = d.opener->open(parse_corpus_blend(path, option), cfg.model.vocab_size, option);
      });
  d.token_bytes = static_cast<int64_t>(dtype_size(corpora.front().dtype()));
  SampleOptions so;
  so.seq_len = cfg.model.seq_len;
  so.seed = cfg.seed;
  so.shuffle = false;
  so.vocab_size = cfg.model.vocab_size;
  if (!own_corpus) {
    so.valid_fraction = cfg.valid_fraction;
    so.valid_split = true;
  }
  d.stream = std::make_unique<SampleStream>(std::move(corpora), std::vector<double>{}, so);
  int64_t available = 0;
  for (int k = 0; k < d.stream->num_corpora(); ++k) available += d.stream->samples_of(k);
  d.what = own_corpus ? path
                      : "the held-out end (--data.valid_fraction " +
                            shortest_text(cfg.valid_fraction) + ") of " + path;
  // A run that never evaluated held nothing out: it trained on these samples too. One that held
  // out less trained on the samples before its own held-out end.
  if (!own_corpus && cfg.eval_interval == 0) {
    d.what += ", which its run trained on (--train.eval_interval 0: nothing was held out)";
  } else if (!own_corpus && saved.eval_interval > 0 && saved.valid_path.empty() &&
             cfg.valid_fraction > saved.valid_fraction) {
    d.what += ", more than its run held out (--data.valid_fraction " +
              shortest_text(saved.valid_fraction) + "): it trained on the rest";
  }
  d.available = available;
  // These are the saving run's validation samples when nothing given here changed them.
  const bool its_validation = !given && saved.eval_interval > 0 && cfg.eval_interval > 0 &&
                              cfg.valid_path == saved.valid_path &&
                              cfg.valid_fraction == saved.valid_fraction;
  if (its_validation) {
    d.validated = saved.eval_batches * saved.global_batch;
    d.eval_batches = saved.eval_batches;
    d.global_batch = saved.global_batch;
  }
  int64_t asked = available;
  if (const auto it = args.own.find("--eval.samples"); it != args.own.end()) {
    size_t used = 0;
    int64_t n = -1;
    try {
      n = std::stoll(it->second, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != it->second.size() || n < 0)
      throw InputError("--eval.samples: expected a count of samples, 0 or more, found \"" +
                       it->second + "\"");
    if (n > available)
      throw InputError("--eval.samples: expected at most the " + std::to_string(available) +
                       " samples of " + d.what + " (of --model.seq_len " +
                       std::to_string(cfg.model.seq_len) + " + 1 tokens), found " +
                       std::to_string(n));
    if (n > 0) asked = n;
  }
  const int dp = layout.dp;
  const int64_t round = cfg.micro_batch * dp;
  d.samples = asked / round * round;
  d.left_out = asked - d.samples;
  if (d.samples == 0)
    throw InputError(std::to_string(asked) + " samples of " + d.what +
                     " make no micro-batch of --train.micro_batch " +
                     std::to_string(cfg.micro_batch) + " on each of " + std::to_string(dp) +
                     " data-parallel rank" + (dp == 1 ? "" : "s") +
                     " (--eval.samples, or a smaller --train.micro_batch)");
  return d;
}

}  // namespace

int eval_command(int argc, char** argv) {
  auto data = std::make_shared<EvalData>();
  SavedModelCommand c;
  c.name = "eval";
  c.usage = kUsage;
  c.own = {"--eval.samples"};
  c.prepare = [data](TrainConfig& cfg, const TrainConfig& saved, const SavedModelArgs& args,
                     const GridLayout& layout,
                     int rank) { *data = open_eval_data(cfg, saved, args, layout, rank); };
  c.together = [data](Communicator& world) {
    check_same_corpora(world, data->stream->sequence_key(), data->option, *data->stream);
    data->opener->record_id_ranges(world);
  };
  c.run = [data](SavedModel& m) {
    const TrainConfig& cfg = m.cfg;
    ProcessGrid& grid = m.grid;
    const int64_t B = cfg.micro_batch, T = cfg.model.seq_len;
    const int dp = grid.layout().dp;
    // Rounds of pp micro-batches per DP rank keep every stage of a pipeline busy.
    const int per_round = grid.layout().pp;
    const int64_t microbatches = data->samples / (B * dp);
    DataLoader loader(*data->stream, grid.coord().dp, dp, B, 2);
    PipelineEngine engine(m.model, grid.pp(), B, per_round);
    std::vector<Tensor> inputs, targets;
    double loss_sum = 0;
    ProgressLine progress(m.root, "eval", data->samples * T * data->token_bytes);
    const auto bytes_of = [&](int64_t microbatches_done) {
      return microbatches_done * B * dp * T * data->token_bytes;
    };
    const auto samples_of = [&](int64_t microbatches_done) {
      return std::to_string(microbatches_done * B * dp) + " of " + std::to_string(data->samples) +
             " samples";
    };
    for (int64_t done = 0; done < microbatches;) {
      const int64_t n = std::min<int64_t>(per_round, microbatches - done);
      inputs.resize(static_cast<size_t>(n));
      targets.resize(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i)
        loader.next_inputs_and_targets(inputs[static_cast<size_t>(i)],
                                       targets[static_cast<size_t>(i)]);
      loss_sum += engine.evaluate(inputs, targets);
      done += n;
      if (progress.due()) progress.print(bytes_of(done), samples_of(done));
    }
    progress.finish(bytes_of(microbatches), samples_of(microbatches));
    // The mean of the micro-batches' mean losses.
    const double loss =
        mean_loss_of_replicas(grid, m.world, loss_sum, static_cast<double>(microbatches));
    if (!m.root) return;
    std::string left_out;
    if (data->left_out > 0)
      left_out = " (the last " + count_of(data->left_out, "sample") + " of those asked for " +
                 (data->left_out == 1 ? "is" : "are") + " left out: " + std::to_string(dp) +
                 " data-parallel rank" + (dp == 1 ? "" : "s") + " x --train.micro_batch " +
                 std::to_string(B) + " do not divide them)";
    std::printf("eval: %s of %lld+1 tokens from %s%s\n", count_of(data->samples, "sample").c_str(),
                static_cast<long long>(T), data->what.c_str(), left_out.c_str());
    // Byte-level tokens are bytes: the loss in bits per byte, the usual measure of such models;
    // unless the corpus looks made by another tokenizer.
    const std::string note = tokenizer_note(cfg, {data->stream.get()});
    char bits[64] = "";
    if (ids_are_bytes(cfg) && note.empty())
      std::snprintf(bits, sizeof bits, ", %.4f bits per byte", loss / std::log(2.0));
    std::printf("eval loss %.4f nats/token, perplexity %.2f%s\n", loss, std::exp(loss), bits);
    if (!note.empty())
      std::printf(
          "eval: note: %s%s\n", note.c_str(),
          ids_are_bytes(cfg) ? "; bits per byte left out, as its ids may not be bytes" : "");
    // Why the loss the saving run logged may differ: its validation read a fixed number.
    if (data->validated > 0 && data->validated != data->samples) {
      const bool fits = data->validated <= data->available;
      const std::string n = count_of(data->validated, "sample");
      const std::string read =
          fits ? "its first " + n
               : n + " round and round over these " + std::to_string(data->available);
      // --eval.samples N reads N only when whole micro-batches of every DP rank make it.
      const std::string then =
          !fits ? ", counting some twice"
          : data->validated % (B * dp) == 0
              ? "; --eval.samples " + std::to_string(data->validated) + " gives its loss"
              : "";
      std::printf(
          "eval: note: the saving run's validation read %s (--train.eval_batches %lld x "
          "--train.global_batch %lld)%s\n",
          read.c_str(), static_cast<long long>(data->eval_batches),
          static_cast<long long>(data->global_batch), then.c_str());
    }
  };
  return run_saved_model(argc, argv, c);
}

}  // namespace tessera
