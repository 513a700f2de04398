// One transformer layer's forward and backward on the GPU, built from the CUDA ops, at the
// widths of GPT-2 124M, 350M and 1.3B with T = 1024: time per op and its share of the layer,
// the achieved TFLOP/s of each GEMM and of attention, and the layer's MFU (model FLOPs per token
// 6 * 12 d^2 + 12 d T, as docs/DESIGN.md counts them, over the time, against the GPU's dense peak
// in --dtype, core/gpu_peak.cpp, unless --peak_tflops). It shows where a training step's time
// goes until the whole model runs on the GPU. `bench_gpu_ops --help` lists the options.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "bench/command_line.h"
#include "bench/gpu_kernel_options.h"
#include "core/device.h"
#include "core/ops/attention.h"
#include "core/ops/cast.h"
#include "core/ops/gelu.h"
#include "core/ops/layernorm.h"
#include "core/ops/matmul.h"
#include "core/tensor.h"

using namespace tessera;
using Clock = std::chrono::steady_clock;

namespace {

struct Shape3 {
  const char* key;  // as --shape names it
  const char* name;
  int64_t d, heads;
};
constexpr Shape3 kShapes[] = {{"124m", "GPT-2 124M", 768, 12},
                              {"350m", "GPT-2 350M", 1024, 16},
                              {"1.3b", "GPT-2 1.3B", 2048, 16}};

struct Op {
  std::string name;
  double flops;  // 0 for memory-bound ops
  std::function<void()> run;
};

double time_of(const std::function<void()>& fn, int repeat) {
  fn();  // warm-up (cuBLASLt heuristics, first launches)
  device_synchronize();
  const auto t0 = Clock::now();
  for (int i = 0; i < repeat; ++i) fn();
  device_synchronize();
  return std::chrono::duration<double>(Clock::now() - t0).count() / repeat;
}

Tensor filled(const Shape& shape, DType dtype, double stddev, uint32_t seed) {
  Tensor host(shape, DType::F32);
  uint32_t x = seed * 2654435761u + 1;
  for (int64_t i = 0; i < host.numel(); ++i) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    host.data<float>()[i] = static_cast<float>((x >> 8) * (1.0 / 16777216.0) - 0.5) * 3.4641f *
                            static_cast<float>(stddev);
  }
  Tensor d = host.to(Device::CUDA);
  if (dtype == DType::F32) return d;
  Tensor r(shape, dtype, Device::CUDA);
  ops::cast(r, d);
  return r;
}

void bench_layer(const Shape3& s, int64_t B, int64_t T, DType dt, int repeat, double peak) {
  const int64_t C = s.d, H = s.heads, F = 4 * C, M = B * T;
  const auto t = [&](const Shape& shape, double std = 0.02, uint32_t seed = 1) {
    return filled(shape, dt, std, seed);
  };
  const auto stats = [&] { return Tensor({M}, DType::F32, Device::CUDA); };
  // Parameters and their gradients.
  Tensor ln1_w = t({C}, 0.1, 2), ln1_b = t({C}, 0.1, 3), ln2_w = t({C}, 0.1, 4),
         ln2_b = t({C}, 0.1, 5);
  Tensor w_qkv = t({3 * C, C}, 0.02, 6), b_qkv = t({3 * C}, 0.02, 7);
  Tensor w_proj = t({C, C}, 0.02, 8), b_proj = t({C}, 0.02, 9);
  Tensor w_fc = t({F, C}, 0.02, 10), b_fc = t({F}, 0.02, 11);
  Tensor w_out = t({C, F}, 0.02, 12), b_out = t({C}, 0.02, 13);
  Tensor g_ln1_w = t({C}), g_ln1_b = t({C}), g_ln2_w = t({C}), g_ln2_b = t({C});
  Tensor g_qkv = t({3 * C, C}), gb_qkv = t({3 * C}), g_proj = t({C, C}), gb_proj = t({C});
  Tensor g_fc = t({F, C}), gb_fc = t({F}), g_out = t({C, F}), gb_out = t({C});
  // Activations.
  Tensor x = t({B, T, C}, 1.0, 20), ln1 = t({B, T, C}), qkv = t({B, T, 3 * C}, 1.0, 21);
  Tensor atty = t({B, T, C}), proj = t({B, T, C}), x1 = t({B, T, C}), ln2 = t({B, T, C});
  Tensor fc = t({B, T, F}), fc_gelu = t({B, T, F}), out = t({B, T, C});
  Tensor m1 = stats(), r1 = stats(), m2 = stats(), r2 = stats();
  Tensor saved(ops::attention_saved_shape(Device::CUDA, B, H, T), DType::F32, Device::CUDA);
  // Gradients of activations.
  Tensor dout = t({B, T, C}, 1.0, 30), dfc = t({B, T, F});
  Tensor dln2 = t({B, T, C}), dx1 = t({B, T, C}), dproj = t({B, T, C}), datty = t({B, T, C});
  Tensor dqkv = t({B, T, 3 * C}), dln1 = t({B, T, C}), dx = t({B, T, C});

  const double gemm = 2.0 * M * C;                              // x F for each GEMM's fan-out
  const double attn = 2.0 * 2.0 * B * H * T * T * (C / H) / 2;  // QK^T and PV, causal half
  std::vector<Op> fwd = {
      {"layernorm 1", 0, [&] { ops::layernorm_forward(ln1, m1, r1, x, ln1_w, ln1_b); }},
      {"qkv GEMM", gemm * 3 * C, [&] { ops::matmul_forward(qkv, ln1, w_qkv, &b_qkv); }},
      {"attention", attn, [&] { ops::attention_forward(atty, saved, qkv, H); }},
      {"proj GEMM", gemm * C, [&] { ops::matmul_forward(proj, atty, w_proj, &b_proj); }},
      {"residual + layernorm 2", 0,
       [&] { ops::residual_layernorm_forward(x1, ln2, m2, r2, x, proj, ln2_w, ln2_b); }},
      // As the model: GEMM then GELU, since selective recompute reruns the GELU alone.
      {"fc GEMM", gemm * F, [&] { ops::matmul_forward(fc, ln2, w_fc, &b_fc); }},
      {"GELU", 0, [&] { ops::gelu_forward(fc_gelu, fc); }},
      {"out GEMM", gemm * F, [&] { ops::matmul_forward(out, fc_gelu, w_out, &b_out); }},
  };
  std::vector<Op> bwd = {
      {"out GEMM + GELU backward", 2 * gemm * F,
       [&] { ops::matmul_gelu_backward(dfc, &g_out, &gb_out, dout, fc_gelu, fc, w_out); }},
      {"fc GEMM backward", 2 * gemm * F,
       [&] { ops::matmul_backward(&dln2, &g_fc, &gb_fc, dfc, ln2, w_fc); }},
      {"layernorm 2 backward", 0,
       [&] { ops::layernorm_backward(dx1, g_ln2_w, g_ln2_b, dln2, x1, ln2_w, m2, r2); }},
      {"proj GEMM backward", 2 * gemm * C,
       [&] { ops::matmul_backward(&datty, &g_proj, &gb_proj, dx1, atty, w_proj); }},
      {"attention backward", 2.5 * attn,
       [&] { ops::attention_backward(dqkv, datty, qkv, atty, saved, H); }},
      {"qkv GEMM backward", 2 * gemm * 3 * C,
       [&] { ops::matmul_backward(&dln1, &g_qkv, &gb_qkv, dqkv, ln1, w_qkv); }},
      {"layernorm 1 backward", 0,
       [&] { ops::layernorm_backward(dx, g_ln1_w, g_ln1_b, dln1, x, ln1_w, m1, r1); }},
  };
  std::vector<Op> all = fwd;
  all.insert(all.end(), bwd.begin(), bwd.end());
  const double layer = time_of(
      [&] {
        for (Op& op : all) op.run();
      },
      repeat);
  std::printf("\n%s: d %lld, %lld heads, B %lld x T %lld = %lld tokens, %s\n", s.name,
              static_cast<long long>(C), static_cast<long long>(H), static_cast<long long>(B),
              static_cast<long long>(T), static_cast<long long>(M), dtype_name(dt).c_str());
  std::printf("| op | ms | share | TFLOP/s |\n| --- | --- | --- | --- |\n");
  double sum = 0;
  for (Op& op : all) {
    const double sec = time_of(op.run, repeat);
    sum += sec;
    char tf[32] = "";
    if (op.flops > 0) std::snprintf(tf, sizeof tf, "%.0f", op.flops / sec / 1e12);
    std::printf("| %s | %.3f | %.1f%% | %s |\n", op.name.c_str(), sec * 1e3, 100 * sec / layer, tf);
  }
  if (ops::bf16_attention_kernels() == ops::AttentionKernels::Cudnn && dt == DType::BF16) {
    // cuDNN's other backward, not in the layer above: what determinism costs.
    ops::set_cudnn_deterministic(false);
    const double sec =
        time_of([&] { ops::attention_backward(dqkv, datty, qkv, atty, saved, H); }, repeat);
    ops::set_cudnn_deterministic(true);
    std::printf("| attention backward, cuDNN not deterministic | %.3f | | %.0f |\n", sec * 1e3,
                2.5 * attn / sec / 1e12);
  }
  const double model_flops = static_cast<double>(M) * (72.0 * C * C + 12.0 * C * T);
  std::printf(
      "layer forward + backward: %.3f ms (ops timed one by one: %.3f ms), %.0f tokens/s per "
      "layer, model %.0f TFLOP/s, layer MFU %.3f (peak %.0f TFLOP/s)\n",
      layer * 1e3, sum * 1e3, M / layer, model_flops / layer / 1e12,
      model_flops / layer / (peak * 1e12), peak);
}

}  // namespace

int main(int argc, char** argv) {
  std::string shape = "all", dtype = "bf16", attention = "cuda_cores", dgelu = "off";
  int64_t batch = 8;
  int repeat = 20;
  double peak = 0;  // TFLOP/s; 0: this GPU's dense peak in --dtype (bench::peak_tflops)
  std::vector<std::string> shapes{"all"};
  for (const Shape3& s : kShapes) shapes.push_back(s.key);
  bench::CommandLine cl("bench_gpu_ops",
                        "One transformer layer's forward and backward on the GPU, op by op, at "
                        "GPT-2 widths and T = 1024.");
  cl.add("shape", shape, shapes, "a width, or all three")
      .add("batch", batch, "micro-batch", int64_t{1})
      .add("dtype", dtype, {"bf16", "f32"}, "the ops' precision")
      .add("repeat", repeat, "timed repetitions of each op", 1)
      .add("peak_tflops", peak, "MFU's peak (0: this GPU's dense peak in --dtype)", 0.0);
  bench::add_gpu_kernel_options(cl, attention, dgelu);
  cl.parse(argc, argv);
  if (!bench::set_gpu_kernels(attention, dgelu)) return 2;
  if (cuda_device_count() == 0) {
    std::printf("bench_gpu_ops: no GPU (%s)\n", cuda_summary().c_str());
    return 77;
  }
  std::printf("%s; bf16 attention on %s\n", cuda_summary().c_str(), attention.c_str());
  std::printf("dgelu epilogue %s\n", dgelu.c_str());
  const DType dt = dtype == "f32" ? DType::F32 : DType::BF16;
  peak = bench::peak_tflops(peak, dt);
  if (peak <= 0) return 2;
  for (const Shape3& s : kShapes)
    if (shape == "all" || shape == s.key) bench_layer(s, batch, 1024, dt, repeat, peak);
  bench::print_gelu_epilogues();
  return 0;
}
