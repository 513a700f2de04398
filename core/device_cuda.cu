// CUDA runtime calls for device memory and device discovery. Only this file and other *.cu
// files talk to the CUDA runtime (DESIGN, "Layers").
#include <cuda_runtime.h>

#include <string>

#include "core/device.h"
#include "core/error.h"

#define CHECK_CUDA(call)                                                              \
  do {                                                                                \
    cudaError_t err_ = (call);                                                        \
    if (err_ != cudaSuccess)                                                          \
      ::tessera::fail_internal(__FILE__, __LINE__,                                    \
                               std::string(#call) + ": " + cudaGetErrorString(err_)); \
  } while (0)

namespace tessera {

void* device_malloc(size_t bytes) {
  void* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, bytes == 0 ? 1 : bytes));
  CHECK_CUDA(cudaMemset(p, 0, bytes));
  return p;
}

void device_free(void* p) {
  cudaFree(p);
}

bool cuda_backend_built() {
  return true;
}

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

std::string cuda_summary() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return std::string("cuda: no GPU (") + cudaGetErrorString(err) + ")";
  }
  std::string s = "cuda: " + std::to_string(n) + " device(s)";
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) == cudaSuccess)
      s += std::string(i ? ", " : ": ") + prop.name;
  }
  return s;
}

}  // namespace tessera
