// The benches' --attention and --dgelu_epilogue: which bf16 kernels the GPU runs, including the
// opt-in ones not yet run on a GPU (docs/DECISIONS.md), as `tessera train`'s [gpu] options.
#pragma once

#include <cstdio>
#include <string>

#include "core/ops/attention.h"
#include "core/ops/matmul.h"

namespace tessera::bench {

// Sets the process's attention kernels ("cuda_cores" | "tensor_cores") and DGELU epilogue
// ("off" | "on"); false, with a message on stderr, for a value that names neither choice.
inline bool set_gpu_kernels(const std::string& attention, const std::string& dgelu) {
  ops::AttentionKernels kernels{};
  if (!ops::attention_kernels_named(attention, &kernels)) {
    std::fprintf(stderr, "--attention: expected cuda_cores or tensor_cores, found %s\n",
                 attention.c_str());
    return false;
  }
  if (dgelu != "on" && dgelu != "off") {
    std::fprintf(stderr, "--dgelu_epilogue: expected on or off, found %s\n", dgelu.c_str());
    return false;
  }
  ops::set_bf16_attention_kernels(kernels);
  ops::set_dgelu_epilogue(dgelu == "on");
  return true;
}

}  // namespace tessera::bench
