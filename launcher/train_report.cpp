#include "launcher/train_report.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>

#include "core/buffer.h"
#include "core/bytes.h"
#include "core/device.h"
#include "core/model/gpt.h"
#include "core/number_text.h"
#include "core/ops/attention.h"
#include "core/ops/matmul.h"
#include "core/threads.h"
#include "io/durable_file.h"
#include "io/metrics.h"
#include "launcher/exit_codes.h"
#include "launcher/progress.h"
#include "launcher/sampling.h"
#include "launcher/trainer.h"

namespace tessera {

namespace {

using Clock = std::chrono::steady_clock;

// "1:02:03" (or "2:03" under an hour), the log line's ETA; progress.h's format_duration writes
// "1 h 02 min" for the progress line of long commands.
std::string clock_duration(double seconds) {
  const long s = std::lround(std::max(0.0, seconds));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

// A small table of the loss curve: one row per tenth of this run's steps (the first one
// `first_step`, 1-based), each the mean of its finite losses, with a bar that spans the rows'
// range (1 '#' at the lowest, 50 at the highest), so that the shape shows also when the loss
// moved little.
void print_loss_curve(const std::vector<double>& losses, int64_t first_step) {
  const int64_t n = static_cast<int64_t>(losses.size());
  const int64_t rows = std::min<int64_t>(10, n);
  if (rows < 2) return;
  std::vector<double> mean(static_cast<size_t>(rows), NAN);
  double lo = INFINITY, hi = -INFINITY;
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    int64_t count = 0;
    for (int64_t i = r * n / rows; i < (r + 1) * n / rows; ++i) {
      const double loss = losses[static_cast<size_t>(i)];
      if (!std::isfinite(loss)) continue;
      sum += loss;
      ++count;
    }
    if (count == 0) continue;
    const double m = sum / static_cast<double>(count);
    mean[static_cast<size_t>(r)] = m;
    lo = std::min(lo, m);
    hi = std::max(hi, m);
  }
  if (lo > hi) {
    std::printf("loss curve: no finite loss\n");
    return;
  }
  std::printf("loss curve (mean of each tenth of the run's steps; bars from %.4f to %.4f):\n", lo,
              hi);
  for (int64_t r = 0; r < rows; ++r) {
    const double loss = mean[static_cast<size_t>(r)];
    const int bar = !std::isfinite(loss) ? 0
                    : hi > lo ? 1 + static_cast<int>(std::lround(49 * (loss - lo) / (hi - lo)))
                              : 50;
    const std::string steps = std::to_string(first_step + r * n / rows) + "-" +
                              std::to_string(first_step + (r + 1) * n / rows - 1);
    std::printf("  steps %-13s %7.4f  %s\n", steps.c_str(), loss,
                std::string(static_cast<size_t>(bar), '#').c_str());
  }
}

// One line per corpus of a sample stream: format, documents, tokens, samples, weight. A
// validation split held out of the training corpora (`held_out`) gives its samples alone.
void print_samples(const char* what, const SampleStream& s, bool held_out = false) {
  for (int k = 0; k < s.num_corpora(); ++k) {
    const TokenCorpus& c = s.corpus(k);
    const std::string samples =
        count_of(s.samples_of(k), "sample") + " of " + std::to_string(s.seq_len()) + "+1 tokens";
    if (held_out) {
      std::printf("%s: %s held out of %s (the last of its samples), weight %.3f\n", what,
                  samples.c_str(), c.path().c_str(), s.weight(k));
      continue;
    }
    const std::string docs =
        c.num_documents() >= 0 ? count_of(c.num_documents(), "document") + ", " : "";
    std::printf("%s: %s (%s): %s%s, %s, weight %.3f\n", what, c.path().c_str(), c.format().c_str(),
                docs.c_str(), count_of(c.num_tokens(), "token").c_str(), samples.c_str(),
                s.weight(k));
  }
}

// A run that starts at step 0 in a directory whose metrics.jsonl holds an earlier run's records
// (one that saved no checkpoint) keeps them as metrics.jsonl.1 (.2, ...): each file is one run's
// series. A resumed run appends to its own.
// `stem` if nothing is there, else the first of STEM.1, STEM.2, ... that is free.
std::string free_name(const std::string& stem) {
  std::error_code ec;
  std::string name = stem;
  for (int k = 1; std::filesystem::exists(name, ec); ++k) name = stem + "." + std::to_string(k);
  return name;
}

void keep_earlier_metrics(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec) || std::filesystem::file_size(path, ec) == 0)
    return;
  const std::string kept = free_name(path);  // path itself is taken: path.1, ...
  std::filesystem::rename(path, kept);
  std::printf("metrics: an earlier run's %s kept as %s\n", path.c_str(), kept.c_str());
}

// A run resumed at step `first_step` (0-based: the checkpoint's step) in a directory whose
// metrics.jsonl holds records of later steps (a run that went on past its last checkpoint, then
// crashed) moves those to metrics.jsonl.after_step_N, so that the file holds one record per step
// and nothing written is lost.
void set_aside_later_metrics(const std::string& path, int64_t first_step) {
  std::error_code ec;  // a FIFO or a link is the user's to keep (as MetricsWriter leaves it)
  if (!std::filesystem::is_regular_file(std::filesystem::symlink_status(path, ec))) return;
  std::ifstream in(path, std::ios::binary);
  if (!in) return;
  std::string kept, later, line;
  int64_t moved = 0;
  while (std::getline(in, line)) {
    const bool whole = !in.eof();  // an unfinished last line stays, for MetricsWriter to cut
    long long step = 0;
    if (whole && std::sscanf(line.c_str(), "{\"step\": %lld", &step) == 1 && step > first_step) {
      later += line + "\n";
      ++moved;
    } else {
      kept += line + (whole ? "\n" : "");
    }
  }
  if (moved == 0) return;
  const std::string aside = free_name(path + ".after_step_" + std::to_string(first_step));
  write_file_atomically(aside, later);
  write_file_atomically(path, kept);
  std::printf(
      "metrics: %lld records of steps after %lld, from a run that went on past its last "
      "checkpoint, moved from %s to %s\n",
      static_cast<long long>(moved), static_cast<long long>(first_step), path.c_str(),
      aside.c_str());
}

}  // namespace

double peak_flops_per_rank(const TrainConfig& cfg) {
  if (cfg.model.device != Device::CUDA) return 0.0;
  return this_gpu_peak_flops(cfg.model.dtype, cfg.peak_tflops);
}

void print_inputs(const TrainConfig& cfg, Trainer& tr) {
  const ModelConfig& m = cfg.model;
  std::printf(
      "model: %lld parameters (%lld layers, d %lld, %lld heads, d_ff %lld, T %lld, vocab "
      "%lld, %s positions)\n",
      static_cast<long long>(gpt_num_params(m)), static_cast<long long>(m.layers),
      static_cast<long long>(m.d_model), static_cast<long long>(m.heads),
      static_cast<long long>(m.d_ff), static_cast<long long>(m.seq_len),
      static_cast<long long>(m.vocab_size), position_kind_name(m.pos).c_str());
  print_samples("corpus", tr.samples());
  if (tr.validation_samples()) {
    const SampleStream& valid = *tr.validation_samples();
    print_samples("validation", valid, cfg.valid_path.empty());
    int64_t held = 0;
    for (int v = 0; v < valid.num_corpora(); ++v) held += valid.samples_of(v);
    if (const int64_t read = cfg.eval_batches * cfg.global_batch; held < read)
      std::printf(
          "validation: note: each validation reads %lld samples (--train.eval_batches %lld x "
          "--train.global_batch %lld), round and round over these %lld, so some count twice\n",
          static_cast<long long>(read), static_cast<long long>(cfg.eval_batches),
          static_cast<long long>(cfg.global_batch), static_cast<long long>(held));
    // A held-out split is of the training corpora by construction, and says so above.
    for (int v = 0; v < valid.num_corpora() && !cfg.valid_path.empty(); ++v)
      for (int k = 0; k < tr.samples().num_corpora(); ++k)
        if (same_corpus(valid.corpus(v), tr.samples().corpus(k)))
          std::printf(
              "validation: note: %s is also a training corpus (%s), so the validation loss is "
              "over samples the run trains on\n",
              valid.corpus(v).path().c_str(), tr.samples().corpus(k).path().c_str());
  } else if (cfg.holds_out_validation()) {
    std::printf(
        "validation: none (no training corpus has 2 samples of --model.seq_len + 1 tokens to "
        "split; give --data.valid_path)\n");
  } else if (!cfg.valid_path.empty() && cfg.eval_interval == 0) {
    std::printf(
        "validation: none (--train.eval_interval is 0, so --data.valid_path is not read)\n");
  } else if (cfg.eval_interval > 0 && cfg.valid_path.empty()) {
    std::printf("validation: none (--data.valid_fraction 0 and no --data.valid_path)\n");
  }
  // A held-out fraction asked for beside validation corpora holds nothing out.
  if (!cfg.valid_path.empty() && cfg.valid_fraction > 0 &&
      cfg.valid_fraction != TrainConfig{}.valid_fraction)
    std::printf(
        "validation: note: --data.valid_fraction %s is not used: --data.valid_path gives the "
        "validation corpora, and training reads all of --data.path\n",
        shortest_text(cfg.valid_fraction).c_str());
  if (const std::string note = tokenizer_note(cfg, {&tr.samples(), tr.validation_samples()});
      !note.empty())
    std::printf("data: note: %s\n", note.c_str());
}

void print_pipeline(const TrainConfig& cfg, const Trainer& tr) {
  const GridLayout& l = tr.layout();
  // Each stage's layers; with model chunks, each chunk's ("0: layers 0-1 + 4-5").
  const int v = cfg.parallel.virtual_stages;
  std::string stages;
  bool uneven = false, unshared = false;  // unshared: a stage has chunks of different sizes
  for (int s = 0; s < l.pp; ++s) {
    std::string layers;
    bool several = v > 1;
    const LayerRange first = chunk_layers(cfg.model.layers, l.pp, v, s, 0);
    for (int c = 0; c < v; ++c) {
      const LayerRange r = chunk_layers(cfg.model.layers, l.pp, v, s, c);
      uneven |= r.end - r.begin != cfg.model.layers / (l.pp * v);
      unshared |= r.end - r.begin != first.end - first.begin;
      several |= r.end - r.begin > 1;
      layers.append(c ? " + " : "").append(std::to_string(r.begin));
      if (r.end - r.begin > 1) layers.append("-").append(std::to_string(r.end - 1));
    }
    stages.append(s ? ", " : "").append(std::to_string(s));
    stages.append(several ? ": layers " : ": layer ").append(layers);
  }
  std::string chunks;
  if (v > 1) chunks.append(" x ").append(std::to_string(v)).append(" model chunks, interleaved");
  std::printf("pipeline: %d stage%s%s (%s)%s; %s1F1B over %d microbatch%s of %lld; bubble %.1f%%\n",
              l.pp, l.pp == 1 ? "" : "s", chunks.c_str(), stages.c_str(),
              uneven ? ", uneven split" : "", v == 1 ? "" : "interleaved ", tr.microbatches(),
              tr.microbatches() == 1 ? "" : "es", static_cast<long long>(cfg.micro_batch),
              100.0 * bubble_fraction(l.pp, tr.microbatches(), v));
  if (unshared)
    std::printf(
        "pipeline: note: the chunks of a stage share their activation sets only when they have "
        "as many layers; with --model.layers a multiple of --parallel.pp x "
        "--parallel.virtual_stages = %d every stage's would (docs/PARALLELISM.md, \"Interleaved "
        "schedule\")\n",
        l.pp * v);
}

void print_schedule_notes(const TrainConfig& cfg) {
  // A short run of a long schedule (a trial of a config) is allowed, and said.
  // (Warmup-stable-decay cools down in the last step after such a warm-up: its own line says so.)
  const bool wsd = cfg.schedule.decay == DecayKind::WarmupStableDecay;
  if (cfg.schedule.warmup > 0 && cfg.schedule.warmup >= cfg.steps - 1 &&
      cfg.schedule.decay != DecayKind::Constant && !(wsd && cfg.schedule.warmup < cfg.steps))
    std::printf(
        "lr: --optim.warmup %lld of --train.steps %lld: %s, and no decay to "
        "--optim.min_lr\n",
        static_cast<long long>(cfg.schedule.warmup), static_cast<long long>(cfg.steps),
        cfg.schedule.warmup >= cfg.steps ? "the run ends before the peak"
                                         : "the run ends at the peak");
  if (wsd && cfg.schedule.warmup < cfg.steps)
    std::printf(
        "lr: warmup-stable-decay: %g from step %lld to step %lld, then linearly to --optim.min_lr "
        "%g by step %lld (--optim.cooldown %g)\n",
        cfg.schedule.lr, static_cast<long long>(std::min(cfg.schedule.warmup, cfg.steps)),
        static_cast<long long>(cfg.schedule.cooldown_start()), cfg.schedule.min_lr,
        static_cast<long long>(cfg.steps), cfg.schedule.cooldown);
}

std::string steps_text(const TrainConfig& cfg, const SampleStream& s) {
  // How often the steps pass over each corpus' samples, by its blend weight: the most.
  double most = 0, least = 0;
  int which = 0;
  for (int k = 0; k < s.num_corpora(); ++k) {
    const double epochs = static_cast<double>(cfg.steps) * static_cast<double>(cfg.global_batch) *
                          s.weight(k) / static_cast<double>(std::max<int64_t>(s.samples_of(k), 1));
    if (k == 0 || epochs < least) least = epochs;
    if (epochs > most) most = epochs, which = k;
  }
  char epochs[32];
  std::snprintf(epochs, sizeof epochs, most < 1000 ? "%.3g" : "%.0f", most);
  const std::string text = count_of(cfg.steps, "step") + " of " +
                           count_of(cfg.global_batch, "sequence") + " (" +
                           count_of(cfg.global_batch * cfg.model.seq_len, "token") + "), " +
                           std::to_string(cfg.steps * cfg.global_batch * cfg.model.seq_len) +
                           " tokens in all, " + epochs + " epochs of ";
  // Corpora weighted by their sizes (an unweighted blend, a glob's shards) repeat alike.
  return most - least <= 1e-9 * most ? text + "the training samples"
                                     : text + s.corpus(which).path() + ", the most repeated corpus";
}

RankMemory rank_memory(const TrainConfig& cfg, const GridLayout& l, const GridCoord& at) {
  const bool zero = cfg.parallel.zero == 1 && l.dp > 1;
  const ModelShard shard = run_shard(cfg, l, at);
  RankMemory m{at, gpt_shard_params(cfg.model, shard)};
  m.state = param_state_bytes(cfg.model.dtype, m.params,
                              zero ? (m.params + l.dp - 1) / l.dp : m.params, zero);
  m.activations = pipeline_activation_bytes(cfg.model, shard, l.pp, at.pp, cfg.micro_batch,
                                            static_cast<int>(cfg.accumulation_steps(l.dp)));
  m.beyond =
      saturated_bytes(WideBytes{m.state} + m.activations) == std::numeric_limits<int64_t>::max();
  return m;
}

RankMemory largest_rank_memory(const TrainConfig& cfg, const GridLayout& l) {
  // Ranks differ by their stage and their piece of the vocabulary, of at most two sizes: one TP
  // rank of each size will do.
  std::vector<int> tp_ranks;
  std::vector<int64_t> piece_sizes;
  for (int tp = 0; tp < l.tp; ++tp) {
    const int64_t rows = tp_piece_size(cfg.model.vocab_size, tp, l.tp);
    if (std::find(piece_sizes.begin(), piece_sizes.end(), rows) != piece_sizes.end()) continue;
    piece_sizes.push_back(rows);
    tp_ranks.push_back(tp);
  }
  RankMemory most;
  for (int stage = 0; stage < l.pp; ++stage)
    for (const int tp : tp_ranks) {
      const RankMemory m = rank_memory(cfg, l, {tp, 0, stage});
      if (WideBytes{m.state} + m.activations > WideBytes{most.state} + most.activations) most = m;
    }
  return most;
}

std::string memory_estimate_text(const TrainConfig& cfg, const GridLayout& l, const RankMemory& m,
                                 bool largest) {
  const double state_mb = static_cast<double>(m.state) / 1e6;
  const double activation_mb = static_cast<double>(m.activations) / 1e6;
  // Which rank: every rank alike, or the largest by its TP rank (an uneven vocabulary piece)
  // and its stage.
  std::string which;
  if (l.world_size() > 1 && l.tp * l.pp == 1) which = " for each rank";
  if (l.tp * l.pp > 1) {
    const std::string tp = "TP rank " + std::to_string(m.at.tp),
                      pp = "stage " + std::to_string(m.at.pp);
    which = std::string(largest ? " for the largest rank (" : " for this rank (") +
            (l.pp == 1   ? tp
             : l.tp == 1 ? pp
                         : tp + " of " + pp) +
            ")";
  }
  const char* doc = l.world_size() > 1                 ? "PARALLELISM.md, \"Memory per rank\""
                    : cfg.model.device == Device::CUDA ? "GPU.md, \"Memory per GPU\""
                                                       : "PERFORMANCE.md, \"Memory\"";
  char text[512];
  if (m.beyond) {
    std::snprintf(text, sizeof text,
                  "estimate beyond 2^63 bytes%s (%lld parameters): no machine holds this model "
                  "(docs/%s)",
                  which.c_str(), static_cast<long long>(m.params), doc);
    return text;
  }
  // Host tensors it leaves out, on the CPU.
  std::string without;
  const bool cpu = cfg.model.device == Device::CPU;
  if (cpu && cfg.model.dtype == DType::BF16) without = "the float32 copies of each bf16 op";
  if (cpu && cfg.checkpoint_async)
    without += (without.empty() ? "" : " and ") + std::string("the asynchronous save's copy");
  if (!without.empty()) without = ", not counting " + without;
  std::snprintf(text, sizeof text,
                "estimate %.1f MB%s = %.1f MB of parameters, gradients and optimizer state (%lld "
                "parameters) + %.1f MB of activations%s (docs/%s)",
                state_mb + activation_mb, which.c_str(), state_mb, static_cast<long long>(m.params),
                activation_mb, without.c_str(), doc);
  return text;
}

RankMemory print_memory_estimate(const TrainConfig& cfg, const GridLayout& l) {
  const RankMemory m = largest_rank_memory(cfg, l);
  std::printf("memory (%s): %s\n", cfg.model.device == Device::CUDA ? "GPU" : "host",
              memory_estimate_text(cfg, l, m).c_str());
  return m;
}

void print_tensor_parallel(const TrainConfig& cfg, const GridLayout& l) {
  const int64_t tokens = cfg.micro_batch * cfg.model.seq_len;
  if (l.tp > 1)
    std::printf(
        "tensor parallel: %d ranks; %s\n", l.tp,
        cfg.parallel.sequence_parallel
            ? ("sequence parallel: each keeps " + std::to_string(tokens / l.tp) +
               " of a micro-batch's " + std::to_string(tokens) + " tokens between the layers")
                  .c_str()
            : "every rank keeps every token between the layers "
              "(--parallel.sequence_parallel false)");
  else if (cfg.parallel.sequence_parallel)
    std::printf(
        "sequence parallel: no effect (--parallel.tp 1: no tensor-parallel group to split the "
        "tokens over)\n");
}

std::string zero_text(const TrainConfig& cfg, const GridLayout& l) {
  return cfg.parallel.zero == 0 ? ""
         : l.dp == 1            ? ", ZeRO-1 with no effect (one data-parallel rank: nothing to "
                                  "shard the optimizer state over)"
         : cfg.model.dtype == DType::BF16
             ? ", ZeRO-1 (AdamW moments and fp32 master weights sharded)"
             : ", ZeRO-1 (AdamW moments sharded)";
}

void print_precision_note(const TrainConfig& cfg) {
  if (cfg.model.device == Device::CPU && cfg.model.dtype == DType::BF16)
    std::printf(
        "precision: bf16 on the cpu, each op in float32 and rounded to bf16 (fp32 masters): "
        "mixed precision as on a GPU, for testing; slower than --train.precision fp32\n");
}

void print_replica_check(const TrainConfig& cfg) {
  if (cfg.check_replicas > 0)
    std::printf(
        "replica check: every %lld steps and before each save, the copies of each parameter "
        "that several ranks hold are compared bitwise (a difference halts the run, exit 1)\n",
        static_cast<long long>(cfg.check_replicas));
}

void print_start(const TrainConfig& cfg, Trainer& tr) {
  const ModelConfig& m = cfg.model;
  const GridLayout& l = tr.layout();
  print_inputs(cfg, tr);
  std::printf("%s", tr.grid().describe_groups().c_str());
  print_tensor_parallel(cfg, l);
  print_pipeline(cfg, tr);
  std::printf(
      "data parallel: %s, %s closing at %.1f MB (largest %.1f MB)%s\n",
      count_of(l.dp, "replica").c_str(),
      count_of(static_cast<int64_t>(tr.buckets().bucket_count()), "gradient bucket").c_str(),
      static_cast<double>(tr.bucket_elements()) * sizeof(float) / 1e6,
      static_cast<double>(tr.buckets().largest_bucket()) * sizeof(float) / 1e6,
      zero_text(cfg, l).c_str());
  print_memory_estimate(cfg, l);
  print_precision_note(cfg);
  if (m.device == Device::CUDA) {
    std::string gpu = cuda_device_name();
    const double peak = peak_flops_per_rank(cfg);
    char figure[96];
    std::snprintf(figure, sizeof figure, ", dense %s peak %.0f TFLOP/s (the log's MFU)",
                  dtype_name(m.dtype).c_str(), peak * 1e-12);
    gpu += peak > 0 ? figure : ", peak FLOP/s unknown (no MFU in the log; --gpu.peak_tflops)";
    if (m.dtype == DType::BF16) {
      gpu += "; bf16 attention on ";
      gpu += ops::attention_kernels_name(cfg.attention_kernels);
      if (cfg.attention_kernels == ops::AttentionKernels::Cudnn) {
        gpu += ' ';
        gpu += ops::cudnn_attention_version();
      }
      gpu += ", DGELU epilogue ";
      gpu += cfg.dgelu_epilogue ? "on" : "off";
    }
    std::printf("gpu: %s\n", gpu.c_str());
  }
  // OpenMP and OpenBLAS may give fewer threads than were asked for (OpenBLAS's build limit).
  const std::string asked = cfg.threads > 0 && cfg.threads != cpu_threads()
                                ? " (--train.threads " + std::to_string(cfg.threads) + " asked)"
                                : "";
  std::printf("train: %s; %d thread%s per rank%s; run dir %s\n",
              steps_text(cfg, tr.samples()).c_str(), cpu_threads(), cpu_threads() == 1 ? "" : "s",
              asked.c_str(), cfg.run_dir.c_str());
  print_replica_check(cfg);
  print_schedule_notes(cfg);
  std::fflush(stdout);
}

void print_summary(const TrainConfig& cfg, Trainer& tr, const TrainResult& result,
                   Communicator& world) {
  // Peak memory, the most of any rank: of tessera's tensors (on the GPU, or on the host), which
  // the estimate counts, and the process's.
  const bool gpu = cfg.model.device == Device::CUDA;
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  Tensor peak({2}, DType::F64);
  peak.data<double>()[0] = static_cast<double>(gpu ? device_peak_bytes() : host_peak_bytes());
  peak.data<double>()[1] = static_cast<double>(usage.ru_maxrss) * 1024.0;
  world.all_reduce(peak, ReduceOp::Max);
  if (world.rank() != 0) return;
  print_loss_curve(result.losses, result.first_step + 1);
  const auto [final_loss, mean_first, mean_last] = result.final_loss;
  const std::string final_mean = mean_first == mean_last
                                     ? "at step " + std::to_string(mean_last)
                                     : "mean of steps " + std::to_string(mean_first) + "-" +
                                           std::to_string(mean_last) + ", the last log interval";
  if (result.exit_code == kExitOk) {
    const SampleStream& train = tr.samples();
    std::vector<TokenCorpus> corpora;
    std::vector<double> weights;
    for (int k = 0; k < train.num_corpora(); ++k) {
      corpora.push_back(train.corpus(k));
      weights.push_back(train.weight(k));
    }
    bool estimated = false;
    const double entropy =
        unigram_entropy(corpora, weights, cfg.model.vocab_size, kEntropyTokens, &estimated);
    const double gap = entropy - final_loss;
    std::printf(
        "final loss %.4f nats/token (%s) vs the corpus' unigram entropy %.4f nats/token%s: "
        "%.2f nats/token %s it\n",
        final_loss, final_mean.c_str(), entropy,
        estimated ? (" (from " + entropy_sample() +
                     (corpora.size() > 1 ? ", shared among the corpora by weight)" : ")"))
                        .c_str()
                  : "",
        std::abs(gap), gap >= 0 ? "below" : "above");
  } else {
    // A stopped run (a signal, the time limit) reads no corpus now: its grace is for exiting.
    std::printf("final loss %.4f nats/token (%s)\n", final_loss, final_mean.c_str());
  }
  // The tensors' peak beside the estimate of the rank that needs the most; then the process's.
  const char* most = world.size() > 1 ? ", the most of any rank," : "";
  std::printf(
      "peak %s memory of tessera's tensors%s %.1f MB; %s\n", gpu ? "GPU" : "host", most,
      peak.data<double>()[0] / 1e6,
      memory_estimate_text(cfg, tr.layout(), largest_rank_memory(cfg, tr.layout())).c_str());
  std::printf(
      "peak RSS%s %.0f MB (the process: the program, its libraries, MPI's buffers, the pages of "
      "the corpora it read)\n",
      most, peak.data<double>()[1] / 1e6);
  std::fflush(stdout);
}

IntervalLog::IntervalLog(const TrainConfig& cfg, bool root, double peak_flops, int64_t first_step)
    : cfg_(cfg),
      tokens_per_step_(static_cast<double>(cfg.global_batch * cfg.model.seq_len)),
      flops_per_token_(gpt_flops_per_token(cfg.model)),
      peak_flops_(peak_flops),
      first_step_(first_step) {
  if (root) {
    const std::string path = (std::filesystem::path(cfg.run_dir) / "metrics.jsonl").string();
    if (first_step == 0)
      keep_earlier_metrics(path);
    else
      set_aside_later_metrics(path, first_step);
    metrics_ = std::make_unique<MetricsWriter>(path);
    if (metrics_->cut_bytes())
      std::printf("metrics: cut the unfinished last line an earlier run left in %s (%lld bytes)\n",
                  metrics_->path().c_str(), static_cast<long long>(metrics_->cut_bytes()));
  }
}

void IntervalLog::skipped(int64_t step, const StepStats& s, int64_t in_a_row, int64_t total) {
  if (!metrics_) return;
  // The values that are not finite, with the verb for one or both.
  const bool loss = !std::isfinite(s.loss), norm = !std::isfinite(s.grad_norm);
  const std::string what =
      std::string(loss ? "loss " + std::to_string(s.loss) : "") + (loss && norm ? " and " : "") +
      (norm ? "grad norm " + std::to_string(s.grad_norm) : "") + (loss && norm ? " are" : " is");
  std::printf(
      "step %6lld/%lld | skipped: %s not finite; weights unchanged (%lld in a row, %lld in "
      "all; --train.nan_policy skip)\n",
      static_cast<long long>(step + 1), static_cast<long long>(cfg_.steps), what.c_str(),
      static_cast<long long>(in_a_row), static_cast<long long>(total));
  std::fflush(stdout);
  metrics_->write(step + 1, {{"skipped", 1.0}, {"skipped_steps", static_cast<double>(total)}});
  ++interval_steps_;  // its tokens were computed: the interval's rate counts it, its loss not
}

void IntervalLog::validation(int64_t step, double loss) {
  if (!metrics_) return;
  std::printf("validation | step %lld | loss %.4f\n", static_cast<long long>(step + 1), loss);
  std::fflush(stdout);
  metrics_->write(step + 1, {{"valid_loss", loss}});
}

void IntervalLog::validation_stopped(int64_t step, int64_t done, int64_t total) {
  if (!metrics_) return;
  if (done == 0)
    std::printf("validation | step %lld | not run: the run stops after this step\n",
                static_cast<long long>(step + 1));
  else
    std::printf(
        "validation | step %lld | stopped after %lld of %lld batches: the run stops "
        "after this step\n",
        static_cast<long long>(step + 1), static_cast<long long>(done),
        static_cast<long long>(total));
  std::fflush(stdout);
}

void IntervalLog::add(int64_t step, const StepStats& s, double epochs) {
  if (interval_losses_++ == 0) interval_first_ = step + 1;
  interval_loss_ += s.loss;
  ++interval_steps_;
  const bool last = step + 1 == cfg_.steps;
  const bool boundary = (step + 1) % cfg_.log_interval == 0 || last;
  if (boundary || step == first_step_) log_line(step, s, epochs, boundary);
}

void IntervalLog::end_early(int64_t step, const StepStats& s, double epochs) {
  // A skipped step has its line already.
  if (!s.skipped && interval_losses_ > 0 && last_mean_.last != step + 1)
    log_line(step, s, epochs, true);
}

void IntervalLog::log_line(int64_t step, const StepStats& s, double epochs, bool ends) {
  const auto now = Clock::now();
  const double interval_s = std::chrono::duration<double>(now - interval_start_).count();
  const double elapsed_s = std::chrono::duration<double>(now - start_).count();
  const double steps = static_cast<double>(interval_steps_);
  const double step_ms = 1e3 * interval_s / steps;
  const double tokens_per_s = tokens_per_step_ * steps / interval_s;
  // From this run's own steps: a resumed run has done none of the earlier ones.
  const double eta_s = elapsed_s / static_cast<double>(step + 1 - first_step_) *
                       static_cast<double>(cfg_.steps - step - 1);
  const double mean_loss = interval_loss_ / static_cast<double>(interval_losses_);
  const int64_t losses = interval_losses_;
  last_mean_ = {mean_loss, interval_first_, step + 1};
  interval_start_ = now;
  interval_steps_ = 0;
  // The mean is over the steps since the last multiple of --train.log_interval, across the
  // run's first line: a resumed run's means are those of the run it continues (its first line,
  // step 11 of a run resumed at 10, would have made its step 20 the mean of 12-20).
  if (ends) {
    interval_loss_ = 0;
    interval_losses_ = 0;
  }
  if (metrics_) {
    const double flops = tokens_per_s * flops_per_token_;
    char mfu[32] = "", mean[32] = "";
    if (peak_flops_ > 0) std::snprintf(mfu, sizeof mfu, " | MFU %.3f", flops / peak_flops_);
    if (losses > 1) std::snprintf(mean, sizeof mean, " (mean %.4f)", mean_loss);
    std::printf(
        "step %6lld/%lld | loss %.4f%s | lr %.3e | grad norm %.3f | %.0f tok/s%s | "
        "%.1f ms/step | ETA %s\n",
        static_cast<long long>(step + 1), static_cast<long long>(cfg_.steps), s.loss, mean, s.lr,
        s.grad_norm, tokens_per_s, mfu, step_ms, clock_duration(eta_s).c_str());
    std::fflush(stdout);
    std::vector<std::pair<std::string, double>> fields = {
        {"loss", s.loss},           {"lr", s.lr},
        {"grad_norm", s.grad_norm}, {"tokens_per_s", tokens_per_s},
        {"step_ms", step_ms},       {"tflops", flops * 1e-12},
        {"epoch", epochs},          {"mean_loss", mean_loss}};
    if (peak_flops_ > 0) fields.emplace_back("mfu", flops / peak_flops_);
    metrics_->write(step + 1, fields);
  }
}

}  // namespace tessera
