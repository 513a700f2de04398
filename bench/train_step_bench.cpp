// One training step (forward, backward, AdamW) of a GPT shape on the CPU: ms/step, tokens/s,
// and CPU MFU = model FLOP/s / the FLOP/s of one large sgemm measured in the same run. Also the
// peak resident memory against 16 bytes/param + activations (docs/PERFORMANCE.md).
//   bench_train_step [--shape gpt2_124m|small] [--threads N] [--steps N] [--warmup N]
#include <cblas.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/model/gpt.h"
#include "core/optim/optimizer.h"
#include "core/threads.h"
#include "parallel/local_communicator.h"

using namespace tessera;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Best of `reps` runs of a square sgemm: the machine's attainable fp32 FLOP/s.
double sgemm_flops(int n, int reps) {
  std::vector<float> a(static_cast<size_t>(n) * n), b(a.size()), c(a.size());
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  for (auto& x : a) x = u(rng);
  for (auto& x : b) x = u(rng);
  double best = 1e30;
  for (int r = 0; r < reps + 1; ++r) {  // the first run warms up
    auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    if (r > 0) best = std::min(best, seconds_since(t0));
  }
  return 2.0 * n * n * n / best;
}

double peak_rss_bytes() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) * 1024.0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string shape = "gpt2_124m";
  int threads = 2, steps = 5, warmup = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--shape"))
      shape = argv[i + 1];
    else if (!std::strcmp(argv[i], "--threads"))
      threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--steps"))
      steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--warmup"))
      warmup = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  ModelConfig c;
  int64_t B = 4;
  if (shape == "gpt2_124m") {
    c.vocab_size = 50257, c.d_model = 768, c.layers = 12, c.heads = 12, c.d_ff = 3072;
    c.seq_len = 64;
  } else if (shape == "small") {
    c.vocab_size = 257, c.d_model = 256, c.layers = 4, c.heads = 4, c.d_ff = 1024;
    c.seq_len = 128, B = 8;
  } else {
    std::fprintf(stderr, "--shape: expected gpt2_124m or small, found %s\n", shape.c_str());
    return 2;
  }
  set_cpu_threads(threads);

  LocalCommunicator tp("tp");
  GPT model(c, ModelShard{}, tp, 1);
  AdamW opt(model.params(), AdamWConfig{});
  GPTActivations a = model.make_activations(B);
  Tensor inputs({B, c.seq_len}, DType::I32), targets({B, c.seq_len}, DType::I32);
  std::mt19937_64 rng(2);
  for (int64_t i = 0; i < inputs.numel(); ++i) {
    inputs.data<int32_t>()[i] = static_cast<int32_t>(rng() % c.vocab_size);
    targets.data<int32_t>()[i] = static_cast<int32_t>(rng() % c.vocab_size);
  }

  std::vector<double> fwd, bwd, optim, total;
  for (int s = 0; s < warmup + steps; ++s) {
    auto t0 = Clock::now();
    model.zero_grad();
    model.forward(a, &inputs, &targets);
    const double t_fwd = seconds_since(t0);
    model.backward(a, 1.0);
    const double t_bwd = seconds_since(t0) - t_fwd;
    clip_grad_norm(model.params(), 1.0, tp);
    opt.step(1e-4);
    const double t_all = seconds_since(t0);
    if (s >= warmup) {
      fwd.push_back(t_fwd), bwd.push_back(t_bwd), optim.push_back(t_all - t_fwd - t_bwd);
      total.push_back(t_all);
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double step_s = median(total);
  const double peak = sgemm_flops(2048, 3);
  const double tokens = static_cast<double>(B * c.seq_len);
  const double model_flops = gpt_flops_per_token(c) * tokens / step_s;
  const int64_t n_params = model.num_local_params();
  const double formula = 16.0 * n_params + gpt_activation_bytes(c, B);
  const double rss = peak_rss_bytes();

  std::printf("shape %s: %lld params, B %lld, T %lld, %d threads, median of %d steps\n",
              shape.c_str(), static_cast<long long>(n_params), static_cast<long long>(B),
              static_cast<long long>(c.seq_len), threads, steps);
  std::printf(
      "| step ms | fwd ms | bwd ms | optim ms | tokens/s | model GFLOP/s | sgemm GFLOP/s "
      "| CPU MFU | peak RSS MB | formula MB | RSS/formula |\n");
  std::printf("| %.1f | %.1f | %.1f | %.1f | %.0f | %.1f | %.1f | %.3f | %.0f | %.0f | %.2f |\n",
              1e3 * step_s, 1e3 * median(fwd), 1e3 * median(bwd), 1e3 * median(optim),
              tokens / step_s, model_flops * 1e-9, peak * 1e-9, model_flops / peak, rss / 1e6,
              formula / 1e6, rss / formula);
  return 0;
}
