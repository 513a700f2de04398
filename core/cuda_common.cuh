// What every CUDA source file of tessera shares: error checking, the compute stream, the cuBLASLt
// handle and its workspace, the mapping of tessera's element types onto CUDA's, and the device
// helpers of core/cuda_device.cuh. Included by
// *.cu files only (DESIGN, "Layers"); host code talks to the GPU through core/device.h and the
// op headers.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "core/cuda_device.cuh"
#include "core/dtype.h"
#include "core/error.h"

#define CHECK_CUDA(call)                                                              \
  do {                                                                                \
    cudaError_t err_ = (call);                                                        \
    if (err_ != cudaSuccess)                                                          \
      ::tessera::fail_internal(__FILE__, __LINE__,                                    \
                               std::string(#call) + ": " + cudaGetErrorString(err_)); \
  } while (0)

#define CHECK_CUBLAS(call)                                                                     \
  do {                                                                                         \
    cublasStatus_t st_ = (call);                                                               \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                          \
      ::tessera::fail_internal(__FILE__, __LINE__,                                             \
                               std::string(#call) + ": cuBLAS status " + std::to_string(st_)); \
  } while (0)

// After a kernel launch: a bad launch configuration is reported here, a fault in the kernel at
// the next synchronisation.
#define CHECK_LAUNCH() CHECK_CUDA(cudaGetLastError())

namespace tessera {
// Device memory from the compute stream's pool, counted in device_bytes_in_use() and the peak
// (core/device.h), and given back in stream order; an allocation the GPU has no room for throws
// OutOfMemory (core/out_of_memory.h). device_allocate leaves the bytes as they are;
// Buffers use device_malloc, which zeroes them.
void* device_allocate(size_t bytes);
void* device_malloc(size_t bytes);
void device_free(void* p, size_t bytes);
}  // namespace tessera

namespace tessera::cuda {

// The stream every kernel, cuBLASLt call and host<->device copy of the compute path runs on
// (created on first use, on the current device). NCCL has its own (parallel/nccl_*).
cudaStream_t compute_stream();
// cuBLASLt's entry points, from libcublasLt loaded with dlopen on first use. Linking it instead
// would make every tessera process, CPU runs and tests included, map and relocate its 540 MB at
// start-up (210 MB resident). InputError naming the library when it cannot be loaded.
struct CublasLtApi {
  decltype(&cublasLtCreate) Create;
  decltype(&cublasLtMatmul) Matmul;
  decltype(&cublasLtMatmulAlgoGetHeuristic) MatmulAlgoGetHeuristic;
  decltype(&cublasLtMatmulDescCreate) MatmulDescCreate;
  decltype(&cublasLtMatmulDescDestroy) MatmulDescDestroy;
  decltype(&cublasLtMatmulDescSetAttribute) MatmulDescSetAttribute;
  decltype(&cublasLtMatmulPreferenceCreate) MatmulPreferenceCreate;
  decltype(&cublasLtMatmulPreferenceDestroy) MatmulPreferenceDestroy;
  decltype(&cublasLtMatmulPreferenceSetAttribute) MatmulPreferenceSetAttribute;
  decltype(&cublasLtMatrixLayoutCreate) MatrixLayoutCreate;
  decltype(&cublasLtMatrixLayoutDestroy) MatrixLayoutDestroy;
};
const CublasLtApi& cublaslt();

// dlopen (RTLD_NOW | RTLD_LOCAL) of a CUDA library by its soname: the file `given` names when it
// is not null or empty, then the loader's search path, then the toolkit's library folder this
// tessera was built against. nullptr when none opens; `tried` then lists each attempt with its
// error, a line each.
void* open_cuda_library(const std::string& soname, const char* given, std::string& tried);

// One cuBLASLt handle and a 32 MiB workspace on the current device, created on first use.
cublasLtHandle_t cublaslt_handle();
void* cublaslt_workspace();
size_t cublaslt_workspace_bytes();

// tessera's element types as CUDA sees them: bf16 and __nv_bfloat16 share the layout.
template <typename T>
struct device_type {
  using type = T;
};
template <>
struct device_type<bf16> {
  using type = __nv_bfloat16;
};
template <typename T>
using device_t = typename device_type<T>::type;

template <typename T>
device_t<T>* dev(T* p) {
  return reinterpret_cast<device_t<T>*>(p);
}
template <typename T>
const device_t<T>* dev(const T* p) {
  return reinterpret_cast<const device_t<T>*>(p);
}
// The other way: a kernel-side bf16 pointer as tessera's bf16, for the op entry points.
inline bf16* as_bf16(__nv_bfloat16* p) {
  return reinterpret_cast<bf16*>(p);
}
inline const bf16* as_bf16(const __nv_bfloat16* p) {
  return reinterpret_cast<const bf16*>(p);
}

// Untyped device memory for the duration of one launcher call, from the same stream-ordered
// pool as device Tensors and counted with them (device_allocate, core/device_cuda.cu), without a
// Tensor's shape and dtype, and not zeroed. Never a null pointer, even for 0 bytes (CUB reads a
// null temp buffer as a size query).
class StreamScratch {
 public:
  explicit StreamScratch(size_t bytes) : p_(device_allocate(bytes)), bytes_(bytes) {}
  ~StreamScratch() { device_free(p_, bytes_); }
  StreamScratch(const StreamScratch&) = delete;
  StreamScratch& operator=(const StreamScratch&) = delete;
  template <typename U>
  U* as() const {
    return static_cast<U*>(p_);
  }

 private:
  void* p_;
  size_t bytes_;
};

// Kernels above 48 KB of dynamic shared memory must opt in, per kernel and device. A process uses
// one GPU, chosen before any kernel runs, so once per kernel is enough: allow_smem<kernel>(bytes)
// before its launches.
template <auto Kernel>
void allow_smem(int bytes) {
  static const bool allowed = [bytes] {
    CHECK_CUDA(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    return true;
  }();
  (void)allowed;
}

}  // namespace tessera::cuda
