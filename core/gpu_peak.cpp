// Dense peak FLOP/s of the GPUs tessera's MFU knows, from NVIDIA's data sheets (the figures
// without structured sparsity). Matched by name as CUDA reports it ("NVIDIA H100 80GB HBM3"),
// the more specific names first.
#include <string>

#include "core/device.h"

namespace tessera {

double gpu_peak_flops(const std::string& name, DType dtype) {
  struct Peak {
    const char* name;   // a part of the device name
    double bf16, fp32;  // TFLOP/s: bf16 on tensor cores, fp32 on CUDA cores (no TF32)
  };
  static const Peak kPeaks[] = {
      {"H100 NVL", 835, 60},  {"H100 PCIe", 756, 51}, {"H100", 989, 67},  // H100 is SXM
      {"H800 PCIe", 756, 51}, {"H800", 989, 67},      {"H200 NVL", 835, 60},
      {"H200", 989, 67},  // SXM, and GH200
      {"A100", 312, 19.5},    {"A800", 312, 19.5},
  };
  if (dtype != DType::BF16 && dtype != DType::F32) return 0;
  for (const Peak& p : kPeaks)
    if (name.find(p.name) != std::string::npos)
      return 1e12 * (dtype == DType::BF16 ? p.bf16 : p.fp32);
  return 0;
}

double this_gpu_peak_flops(DType dtype, double given_tflops) {
  if (given_tflops > 0) return given_tflops * 1e12;
  return gpu_peak_flops(cuda_device_name(), dtype);
}

}  // namespace tessera
