// The training loop of one process: read the corpus, build the model, then per step accumulate
// gradients over global_batch / micro_batch microbatches, clip, take an AdamW step at the
// scheduled rate, and log. Rank-parallel layouts plug into the same loop (parallel/).
#include "launcher/train_command.h"

#include <sys/resource.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/error.h"
#include "core/model/gpt.h"
#include "core/threads.h"
#include "io/batch_loader.h"
#include "io/byte_tokenizer.h"
#include "io/indexed_dataset.h"
#include "io/metrics.h"
#include "launcher/sampling.h"
#include "parallel/local_communicator.h"

namespace tessera {

namespace {

using Clock = std::chrono::steady_clock;

std::string format_duration(double seconds) {
  const long s = std::lround(std::max(0.0, seconds));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

// Splits a loader batch [B, T+1] into inputs [B, T] and next-token targets [B, T].
void split_batch(const Tensor& batch, Tensor& inputs, Tensor& targets) {
  const int64_t B = inputs.size(0), T = inputs.size(1);
  const int32_t* src = batch.data<int32_t>();
  int32_t* in = inputs.data<int32_t>();
  int32_t* tg = targets.data<int32_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      in[b * T + t] = src[b * (T + 1) + t];
      tg[b * T + t] = src[b * (T + 1) + t + 1];
    }
}

// A small table of the loss curve, one row per tenth of the run, with a bar per row.
void print_loss_curve(const std::vector<double>& losses) {
  const int64_t n = static_cast<int64_t>(losses.size());
  const int64_t rows = std::min<int64_t>(10, n);
  if (rows < 2) return;
  const double top = *std::max_element(losses.begin(), losses.end());
  std::printf("loss curve:\n");
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = r * (n - 1) / (rows - 1);
    const int bar = top > 0 ? static_cast<int>(std::lround(50.0 * losses[i] / top)) : 0;
    std::printf("  step %6lld  %7.4f  %s\n", static_cast<long long>(i + 1), losses[i],
                std::string(std::max(bar, 0), '#').c_str());
  }
}

void write_text_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path);
  if (!out) throw InputError("--run.dir: cannot write " + path.string());
  out << text;
}

}  // namespace

TrainResult train(const TrainConfig& cfg) {
  set_cpu_threads(cfg.threads > 0 ? cfg.threads
                                  : static_cast<int>(std::thread::hardware_concurrency()));
  std::error_code ec;
  std::filesystem::create_directories(cfg.run_dir, ec);
  if (ec) throw InputError("--run.dir " + cfg.run_dir + ": cannot create (" + ec.message() + ")");
  write_text_file(std::filesystem::path(cfg.run_dir) / "config.ini", cfg.resolved_ini);

  IndexedDataset corpus = IndexedDataset::open(cfg.data_path);
  BatchLoader loader(corpus, cfg.model.seq_len, cfg.model.vocab_size, cfg.seed);
  LocalCommunicator tp("tp");
  GPT model(cfg.model, ModelShard{}, tp, cfg.seed);
  std::vector<Param*> params = model.params();
  AdamW optimizer(params, cfg.adamw);
  MetricsWriter metrics((std::filesystem::path(cfg.run_dir) / "metrics.jsonl").string());

  const int64_t T = cfg.model.seq_len, micro = cfg.micro_batch, accum = cfg.accumulation_steps();
  const int64_t tokens_per_step = cfg.global_batch * T;
  const double flops_per_token = gpt_flops_per_token(cfg.model);
  std::printf(
      "model: %lld parameters (%lld layers, d %lld, %lld heads, d_ff %lld, T %lld, vocab "
      "%lld, %s positions)\n",
      static_cast<long long>(model.num_local_params()), static_cast<long long>(cfg.model.layers),
      static_cast<long long>(cfg.model.d_model), static_cast<long long>(cfg.model.heads),
      static_cast<long long>(cfg.model.d_ff), static_cast<long long>(T),
      static_cast<long long>(cfg.model.vocab_size), position_kind_name(cfg.model.pos).c_str());
  std::printf("corpus: %s: %lld documents, %lld tokens, %lld samples of %lld+1 tokens\n",
              cfg.data_path.c_str(), static_cast<long long>(corpus.num_documents()),
              static_cast<long long>(corpus.num_tokens()),
              static_cast<long long>(loader.num_samples()), static_cast<long long>(T));
  std::printf(
      "train: %lld steps of %lld sequences (%lld tokens) = %lld microbatches of %lld; "
      "%d threads; run dir %s\n",
      static_cast<long long>(cfg.steps), static_cast<long long>(cfg.global_batch),
      static_cast<long long>(tokens_per_step), static_cast<long long>(accum),
      static_cast<long long>(micro), cpu_threads(), cfg.run_dir.c_str());
  std::fflush(stdout);

  GPTActivations acts = model.make_activations(micro);
  Tensor batch({micro, T + 1}, DType::I32), inputs({micro, T}, DType::I32),
      targets({micro, T}, DType::I32);
  TrainResult result;
  const auto start = Clock::now();
  auto interval_start = start;
  double interval_loss = 0;
  int64_t interval_steps = 0;
  for (int64_t step = 0; step < cfg.steps; ++step) {
    model.zero_grad();
    double loss = 0;
    for (int64_t m = 0; m < accum; ++m) {
      loader.next_batch(micro, batch);
      split_batch(batch, inputs, targets);
      loss += model.forward(acts, &inputs, &targets) / static_cast<double>(accum);
      model.backward(acts, 1.0 / static_cast<double>(accum));
    }
    const double grad_norm = clip_grad_norm(params, cfg.adamw.clip, tp);
    const double lr = cfg.schedule.at(step);
    optimizer.step(lr);
    result.losses.push_back(loss);
    interval_loss += loss;
    ++interval_steps;

    const bool last = step + 1 == cfg.steps;
    if ((step + 1) % cfg.log_interval == 0 || last || step == 0) {
      const auto now = Clock::now();
      const double interval_s = std::chrono::duration<double>(now - interval_start).count();
      const double elapsed_s = std::chrono::duration<double>(now - start).count();
      const double step_ms = 1e3 * interval_s / static_cast<double>(interval_steps);
      const double tokens_per_s =
          static_cast<double>(tokens_per_step * interval_steps) / interval_s;
      const double eta_s =
          elapsed_s / static_cast<double>(step + 1) * static_cast<double>(cfg.steps - step - 1);
      const double mean_loss = interval_loss / static_cast<double>(interval_steps);
      std::printf(
          "step %6lld/%lld | loss %.4f | lr %.3e | grad norm %.3f | %.0f tok/s | "
          "%.1f ms/step | ETA %s\n",
          static_cast<long long>(step + 1), static_cast<long long>(cfg.steps), loss, lr, grad_norm,
          tokens_per_s, step_ms, format_duration(eta_s).c_str());
      std::fflush(stdout);
      metrics.write(step + 1, {{"loss", loss},
                               {"lr", lr},
                               {"grad_norm", grad_norm},
                               {"tokens_per_s", tokens_per_s},
                               {"step_ms", step_ms},
                               {"tflops", tokens_per_s * flops_per_token * 1e-12},
                               {"mean_loss", mean_loss}});
      result.final_loss = mean_loss;
      interval_start = now;
      interval_loss = 0;
      interval_steps = 0;
    }
  }

  print_loss_curve(result.losses);
  const double entropy = unigram_entropy(corpus, cfg.model.vocab_size);
  const double gap = entropy - result.final_loss;
  std::printf(
      "final loss %.4f nats/token (mean of the last log interval) vs the corpus' unigram "
      "entropy %.4f nats/token: %.2f nats/token %s it\n",
      result.final_loss, entropy, std::abs(gap), gap >= 0 ? "below" : "above");
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const int64_t n_params = model.num_local_params();
  const double activation_mb = static_cast<double>(gpt_activation_bytes(cfg.model, micro)) / 1e6;
  std::printf(
      "peak memory %.0f MB; estimate %.0f MB = 16 B x %lld parameters + %.0f MB of "
      "activations (docs/PERFORMANCE.md)\n",
      static_cast<double>(usage.ru_maxrss) * 1024.0 / 1e6,
      16.0 * static_cast<double>(n_params) / 1e6 + activation_mb, static_cast<long long>(n_params),
      activation_mb);
  std::fflush(stdout);

  if (cfg.sample_tokens > 0) {
    SamplingOptions so;
    so.tokens = cfg.sample_tokens;
    so.temperature = cfg.sample_temperature;
    so.top_k = cfg.sample_top_k;
    so.seed = cfg.seed;
    so.stop_token = cfg.model.vocab_size == kByteVocab ? kEndOfDocument : -1;
    std::vector<int32_t> prompt = ByteTokenizer::encode(cfg.sample_prompt);
    std::vector<int32_t> sample = generate(model, prompt, so);
    std::printf("sample (%lld tokens, temperature %.2f, top-k %lld):\n%s%s\n",
                static_cast<long long>(sample.size()), cfg.sample_temperature,
                static_cast<long long>(cfg.sample_top_k), cfg.sample_prompt.c_str(),
                ByteTokenizer::decode(sample).c_str());
  }
  return result;
}

int train_command(int argc, char** argv) {
  TrainConfig cfg;
  if (!parse_train_config(argc, argv, cfg)) return 0;
  train(cfg);
  return 0;
}

}  // namespace tessera
