// One training step (forward, backward, clipping, AdamW) of a GPT shape on one device: ms/step,
// tokens/s and MFU. On the CPU, MFU = model FLOP/s / the FLOP/s of one large sgemm measured in
// the same run, with the peak resident memory against 16 bytes/param + activations; on the GPU,
// model FLOP/s over the GPU's dense peak in the precision (989 TFLOP/s bf16 on H100/H200 SXM;
// core/gpu_peak.cpp) unless --peak_tflops, with the peak device memory (docs/PERFORMANCE.md).
// `bench_train_step --help` lists the options. On the GPU the micro-batch is, unless --batch, the
// largest power of two that fits by estimate.
#include <cblas.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "bench/command_line.h"
#include "bench/gpu_kernel_options.h"
#include "core/device.h"
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
  std::string shape = "gpt2_124m", device_name = "cpu", precision = "auto", recompute = "none";
  std::string attention = "cuda_cores", dgelu = "off";
  int threads = 2, steps = 5, warmup = 2;
  int64_t batch = 0, seq_len = 0;
  double peak_tflops = 0;  // 0: this GPU's dense peak in --precision (bench::peak_tflops)
  bench::CommandLine cl("bench_train_step",
                        "One training step of a GPT shape on one device: ms/step, tokens/s, MFU.");
  cl.add("shape", shape, {"gpt2_124m", "gpt2_350m", "gpt2_1.3b", "small"}, "the model's shape")
      .add("device", device_name, {"cpu", "cuda"}, "where the step runs")
      .add("precision", precision, {"auto", "fp32", "bf16"}, "auto: bf16 on cuda, fp32 on the cpu")
      .add("batch", batch,
           "micro-batch (0: the shape's own on the cpu, the largest that fits on cuda)", int64_t{0})
      .add("seq_len", seq_len, "sequence length (0: the shape's)", int64_t{0})
      .add("threads", threads, "host threads", 1)
      .add("steps", steps, "timed steps", 1)
      .add("warmup", warmup, "untimed steps first", 0)
      .add("peak_tflops", peak_tflops, "MFU's peak (0: this GPU's dense peak)", 0.0)
      .add("recompute", recompute, {"none", "selective", "full"}, "activation recompute");
  bench::add_gpu_kernel_options(cl, attention, dgelu);
  cl.parse(argc, argv);
  const bool gpu = device_name == "cuda";
  if (gpu && cuda_device_count() == 0) {
    std::printf("bench_train_step: no GPU (%s)\n", cuda_summary().c_str());
    return 77;
  }
  ModelConfig c;
  c.device = gpu ? Device::CUDA : Device::CPU;
  if (precision == "auto") precision = gpu ? "bf16" : "fp32";
  if (precision == "bf16") c.dtype = DType::BF16;
  if (gpu) {
    peak_tflops = bench::peak_tflops(peak_tflops, c.dtype);
    if (peak_tflops <= 0) return 2;
  }
  int64_t B = 4;
  // On the GPU the vocabulary is padded to 50304 (a multiple of 128), as llm.c does.
  const int64_t gpt2_vocab = gpu ? 50304 : 50257;
  if (shape == "gpt2_124m") {
    c.vocab_size = gpt2_vocab, c.d_model = 768, c.layers = 12, c.heads = 12, c.d_ff = 3072;
    c.seq_len = gpu ? 1024 : 64;
  } else if (shape == "gpt2_350m") {
    c.vocab_size = gpt2_vocab, c.d_model = 1024, c.layers = 24, c.heads = 16, c.d_ff = 4096;
    c.seq_len = 1024, B = 8;
  } else if (shape == "gpt2_1.3b") {
    c.vocab_size = gpt2_vocab, c.d_model = 2048, c.layers = 24, c.heads = 16, c.d_ff = 8192;
    c.seq_len = 1024, B = 4;
  } else {  // small
    c.vocab_size = 257, c.d_model = 256, c.layers = 4, c.heads = 4, c.d_ff = 1024;
    c.seq_len = 128, B = 8;
  }
  if (recompute == "selective") c.recompute = Recompute::Selective;
  if (recompute == "full") c.recompute = Recompute::Full;
  if (!bench::set_gpu_kernels(attention, dgelu)) return 2;
  if (seq_len > 0) c.seq_len = seq_len;
  if (batch > 0) {
    B = batch;
  } else if (gpu) {
    // The largest power-of-two micro-batch (up to 64) whose estimate fits in 85% of the GPU's
    // memory less 2 GB (cuBLASLt workspace, NCCL, the pool's slack): parameter state
    // (gpt_state_bytes, AdamW alone: no fp32 gradient sums) plus activations
    // (gpt_activation_bytes).
    const double state = static_cast<double>(gpt_state_bytes(c, false));
    const double budget = 0.85 * static_cast<double>(device_memory_bytes()) - 2e9;
    B = 1;
    while (B < 64 && state + gpt_activation_bytes(c, 2 * B) <= budget) B *= 2;
    std::printf("micro-batch %lld: the largest that fits, by estimate %.1f of %.1f GB\n",
                static_cast<long long>(B), (state + gpt_activation_bytes(c, B)) / 1e9,
                static_cast<double>(device_memory_bytes()) / 1e9);
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

  // Phase times: on the GPU each boundary waits for the stream, so the split is exact and the
  // whole step (which then has three waits) slightly slower than it would be unsplit. "fwd"
  // includes clearing the gradients, "optim" the clipping.
  std::vector<double> fwd, bwd, optim, total;
  for (int s = 0; s < warmup + steps; ++s) {
    auto t0 = Clock::now();
    model.zero_grad();
    model.forward(a, &inputs, &targets);  // reads the loss back: waits for the GPU
    const double t_fwd = seconds_since(t0);
    model.backward(a, 1.0);
    if (gpu) device_synchronize();
    const double t_bwd = seconds_since(t0) - t_fwd;
    // As the Trainer clips: the norm, then its factor in the update's pass (here from the bf16
    // gradients themselves in bf16, where the Trainer steps from fp32 sums).
    opt.step(1e-4, clip_scale(global_grad_norm(model.params(), tp), 1.0));
    if (gpu) device_synchronize();
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
  const double tokens = static_cast<double>(B * c.seq_len);
  const double model_flops = gpt_flops_per_token(c) * tokens / step_s;
  const int64_t n_params = model.num_local_params();

  std::printf("shape %s: %lld params, B %lld, T %lld, %s %s, recompute %s, median of %d steps\n",
              shape.c_str(), static_cast<long long>(n_params), static_cast<long long>(B),
              static_cast<long long>(c.seq_len), device_name.c_str(), precision.c_str(),
              recompute.c_str(), steps);
  if (gpu) {
    std::printf("bf16 attention on %s\n", attention.c_str());
    std::printf("dgelu epilogue %s\n", dgelu.c_str());
    std::printf(
        "| step ms | fwd ms | bwd ms | optim ms | tokens/s | model TFLOP/s | MFU (peak %.0f "
        "TFLOP/s) | peak GPU MB |\n",
        peak_tflops);
    std::printf("| %.1f | %.1f | %.1f | %.1f | %.0f | %.1f | %.3f | %.0f |\n", 1e3 * step_s,
                1e3 * median(fwd), 1e3 * median(bwd), 1e3 * median(optim), tokens / step_s,
                model_flops * 1e-12, model_flops / (peak_tflops * 1e12),
                static_cast<double>(device_peak_bytes()) / 1e6);
    bench::print_gelu_epilogues();
    return 0;
  }
  // The training's peak, before the sgemm calibration's own matrices (50 MB) add to it.
  const double rss = peak_rss_bytes();
  const double peak = sgemm_flops(2048, 3);
  const double formula =
      static_cast<double>(gpt_state_bytes(c, false) + gpt_activation_bytes(c, B));
  std::printf(
      "| step ms | fwd ms | bwd ms | optim ms | tokens/s | model GFLOP/s | sgemm GFLOP/s "
      "| CPU MFU | peak RSS MB | formula MB | RSS/formula |\n");
  std::printf("| %.1f | %.1f | %.1f | %.1f | %.0f | %.1f | %.1f | %.3f | %.0f | %.0f | %.2f |\n",
              1e3 * step_s, 1e3 * median(fwd), 1e3 * median(bwd), 1e3 * median(optim),
              tokens / step_s, model_flops * 1e-9, peak * 1e-9, model_flops / peak, rss / 1e6,
              formula / 1e6, rss / formula);
  return 0;
}
