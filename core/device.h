// What accelerators this process can use. Without the CUDA backend, or without a GPU and its
// driver, cuda_device_count() is 0 and GPU code paths and tests are skipped.
#pragma once

#include <string>

namespace tessera {

bool cuda_backend_built();
// Number of usable GPUs; 0 when none or no driver ("CUDA driver version is insufficient").
int cuda_device_count();
// One line: "cuda: 1 device(s), NVIDIA H100 ..." or why there is none.
std::string cuda_summary();

}  // namespace tessera
