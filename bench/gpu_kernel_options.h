// What the GPU benches share: --attention and --dgelu_epilogue, which bf16 kernels the GPU runs,
// including the opt-in ones not yet run on a GPU (docs/DECISIONS.md), as `tessera train`'s [gpu]
// options; and --peak_tflops, what MFU divides by.
#pragma once

#include <cstdio>
#include <string>

#include "bench/command_line.h"
#include "core/device.h"
#include "core/error.h"
#include "core/ops/attention.h"
#include "core/ops/matmul.h"

namespace tessera::bench {

// --attention and --dgelu_epilogue, into `attention` and `dgelu` (their defaults).
inline void add_gpu_kernel_options(CommandLine& cl, std::string& attention, std::string& dgelu) {
  using ops::AttentionKernels;
  cl.add("attention", attention,
         {ops::attention_kernels_name(AttentionKernels::CudaCores),
          ops::attention_kernels_name(AttentionKernels::TensorCores),
          ops::attention_kernels_name(AttentionKernels::Cudnn)},
         "the bf16 attention kernels on cuda")
      .add("dgelu_epilogue", dgelu, {"off", "on"},
           "the MLP's GELU backward in cuBLASLt's epilogue");
}

// Sets the process's attention kernels and DGELU epilogue, as add_gpu_kernel_options read them;
// false, with a message on stderr, where cuDNN's attention is asked for and cannot run.
inline bool set_gpu_kernels(const std::string& attention, const std::string& dgelu) {
  ops::AttentionKernels kernels{};
  TESSERA_CHECK(ops::attention_kernels_named(attention, &kernels),
                "set_gpu_kernels: no attention kernels named " + attention);
  if (kernels == ops::AttentionKernels::Cudnn) {
    try {
      std::printf("cuDNN %s\n", ops::cudnn_attention_version().c_str());
    } catch (const InputError& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return false;
    }
  }
  ops::set_bf16_attention_kernels(kernels);
  ops::set_dgelu_epilogue(dgelu == "on");
  return true;
}

// How many GEMMs ran with a fused GELU epilogue (ops::gelu_epilogue_counts): an epilogue asked
// for and refused by cuBLASLt falls back with the same results, and only this line tells.
inline void print_gelu_epilogues() {
  const ops::GeluEpilogueCounts n = ops::gelu_epilogue_counts();
  std::printf("gelu epilogue GEMMs fused: forward %lld, backward %lld\n",
              static_cast<long long>(n.forward), static_cast<long long>(n.backward));
}

// The peak TFLOP/s for MFU: `given` (--peak_tflops) when positive, else this GPU's dense peak in
// `dtype` (gpu_peak_flops); 0, with a message on stderr, for a GPU that table does not know.
inline double peak_tflops(double given, DType dtype) {
  const double peak = this_gpu_peak_flops(dtype, given) * 1e-12;
  if (peak <= 0)
    std::fprintf(stderr, "--peak_tflops: no dense %s peak is known for \"%s\"; give it\n",
                 dtype_name(dtype).c_str(), cuda_device_name().c_str());
  return peak;
}

}  // namespace tessera::bench
