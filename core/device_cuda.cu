// CUDA runtime calls for device memory, copies, the compute stream, cuBLASLt's handle and device
// discovery. Only *.cu files talk to the CUDA runtime (docs/DESIGN.md, "Layers").
#include <dlfcn.h>

#include <atomic>
#include <cstring>
#include <string>
#include <type_traits>

#include "core/cuda_common.cuh"
#include "core/device.h"
#include "core/out_of_memory.h"

namespace tessera {

namespace {
std::atomic<size_t> g_device_bytes{0};
std::atomic<size_t> g_device_peak{0};
}  // namespace

// Device memory comes from the device's stream-ordered pool (cudaMallocAsync) on the compute
// stream, and goes back to it in stream order (cudaFreeAsync): freeing a tensor never waits for
// the GPU, and the pool keeps freed memory for the next allocation instead of returning it to
// the driver at each synchronisation. A buffer an NCCL stream still reads is safe: the
// communicator makes the compute stream wait for its work before the caller can drop it.
void* device_allocate(size_t bytes) {
  static const bool pool_keeps_memory = [] {
    int device = 0;
    cudaMemPool_t pool = nullptr;
    CHECK_CUDA(cudaGetDevice(&device));
    CHECK_CUDA(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t keep_all = UINT64_MAX;
    CHECK_CUDA(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_all));
    return true;
  }();
  (void)pool_keeps_memory;
  void* p = nullptr;
  const size_t n = bytes == 0 ? 1 : bytes;
  const cudaError_t err = cudaMallocAsync(&p, n, cuda::compute_stream());
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    throw OutOfMemory("cannot allocate " + memory_size_text(n) + " of GPU memory (" +
                      memory_size_text(free_b) + " free of " + memory_size_text(total_b) + ")");
  }
  CHECK_CUDA(err);  // another error (an earlier kernel's, say) is not a question of size
  const size_t now = g_device_bytes += n;
  size_t peak = g_device_peak.load();
  while (now > peak && !g_device_peak.compare_exchange_weak(peak, now)) {
  }
  return p;
}

void* device_malloc(size_t bytes) {
  void* p = device_allocate(bytes);
  CHECK_CUDA(cudaMemsetAsync(p, 0, bytes == 0 ? 1 : bytes, cuda::compute_stream()));
  return p;
}

void device_free(void* p, size_t bytes) {
  (void)cudaFreeAsync(p, cuda::compute_stream());
  g_device_bytes -= bytes == 0 ? 1 : bytes;
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

std::string cuda_device_name() {
  int device = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  return prop.name;
}

std::string cuda_device_bus_id() {
  int device = 0;
  char id[32] = {};
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetPCIBusId(id, sizeof id, device) != cudaSuccess) {
    cudaGetLastError();
    return "";
  }
  return id;
}

void select_cuda_device(int index) {
  CHECK_CUDA(cudaSetDevice(index));
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (src_device == Device::CPU && dst_device == Device::CPU) {  // no CUDA call: no GPU needed
    std::memcpy(dst, src, bytes);
    return;
  }
  const cudaMemcpyKind kind =
      src_device == Device::CPU
          ? cudaMemcpyHostToDevice
          : (dst_device == Device::CPU ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice);
  CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, kind, cuda::compute_stream()));
  // The host waits only when it is an end of the copy: a copy between device buffers is ordered
  // with the kernels on the stream (and NCCL waits for the stream), so waiting would only stop
  // the host from queueing ahead, twice per layer in the backward.
  if (kind != cudaMemcpyDeviceToDevice) CHECK_CUDA(cudaStreamSynchronize(cuda::compute_stream()));
}

void device_zero(void* p, size_t bytes) {
  CHECK_CUDA(cudaMemsetAsync(p, 0, bytes, cuda::compute_stream()));
}

void device_synchronize() {
  CHECK_CUDA(cudaStreamSynchronize(cuda::compute_stream()));
}

size_t device_bytes_in_use() {
  return g_device_bytes.load();
}
size_t device_peak_bytes() {
  return g_device_peak.load();
}
void reset_device_peak() {
  g_device_peak = g_device_bytes.load();
}
size_t device_memory_bytes() {
  if (cuda_device_count() == 0) return 0;
  size_t free = 0, total = 0;
  CHECK_CUDA(cudaMemGetInfo(&free, &total));
  return total;
}

namespace cuda {

// One per process: tessera drives one GPU per rank from one thread.
cudaStream_t compute_stream() {
  static cudaStream_t stream = [] {
    cudaStream_t s = nullptr;
    CHECK_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  }();
  return stream;
}

void* open_cuda_library(const std::string& soname, const char* given, std::string& tried) {
  std::string names[3];
  int n = 0;
  if (given != nullptr && *given) names[n++] = given;
  names[n++] = soname;
  names[n++] = std::string(TESSERA_CUDA_LIBRARY_DIR) + "/" + soname;
  for (int i = 0; i < n; ++i) {
    if (void* lib = dlopen(names[i].c_str(), RTLD_NOW | RTLD_LOCAL)) return lib;
    tried += "\n  " + names[i] + ": " + dlerror();
  }
  return nullptr;
}

const CublasLtApi& cublaslt() {
  static const CublasLtApi api = [] {
    const std::string name = "libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR);
    std::string tried;
    void* lib = open_cuda_library(name, nullptr, tried);
    if (lib == nullptr)
      throw InputError("cuBLASLt: cannot load " + name + "; tried" + tried +
                       "\nput the CUDA toolkit's library folder on LD_LIBRARY_PATH");
    auto load = [&](auto& fn, const char* symbol) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, symbol));
      if (fn == nullptr) throw InputError("cuBLASLt: " + name + " has no " + symbol);
    };
    CublasLtApi a{};
    load(a.Create, "cublasLtCreate");
    load(a.Matmul, "cublasLtMatmul");
    load(a.MatmulAlgoGetHeuristic, "cublasLtMatmulAlgoGetHeuristic");
    load(a.MatmulDescCreate, "cublasLtMatmulDescCreate");
    load(a.MatmulDescDestroy, "cublasLtMatmulDescDestroy");
    load(a.MatmulDescSetAttribute, "cublasLtMatmulDescSetAttribute");
    load(a.MatmulPreferenceCreate, "cublasLtMatmulPreferenceCreate");
    load(a.MatmulPreferenceDestroy, "cublasLtMatmulPreferenceDestroy");
    load(a.MatmulPreferenceSetAttribute, "cublasLtMatmulPreferenceSetAttribute");
    load(a.MatrixLayoutCreate, "cublasLtMatrixLayoutCreate");
    load(a.MatrixLayoutDestroy, "cublasLtMatrixLayoutDestroy");
    return a;
  }();
  return api;
}

constexpr size_t kWorkspaceBytes = size_t{32} << 20;

cublasLtHandle_t cublaslt_handle() {
  static cublasLtHandle_t handle = [] {
    cublasLtHandle_t h = nullptr;
    CHECK_CUBLAS(cublaslt().Create(&h));
    return h;
  }();
  return handle;
}

void* cublaslt_workspace() {
  static void* workspace = [] {
    void* p = nullptr;
    CHECK_CUDA(cudaMalloc(&p, kWorkspaceBytes));
    return p;
  }();
  return workspace;
}

size_t cublaslt_workspace_bytes() {
  return kWorkspaceBytes;
}

}  // namespace cuda
}  // namespace tessera
