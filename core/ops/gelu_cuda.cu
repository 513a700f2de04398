// CUDA GELU (tanh form) and residual add: elementwise, memory-bound kernels over packs of 4
// elements (core/ops/cuda_elementwise.cuh). Arithmetic is fp32 whatever the storage type, with the
// CPU twin's float formulas (gelu_cpu.cpp); expf is the accurate one, since the build has no fast
// math.
#include <cstdint>

#include "core/ops/cuda_elementwise.cuh"
#include "core/ops/gelu_cuda.h"
#include "core/ops/gelu_kernels.cuh"

namespace tessera::ops::cuda {
namespace {

using namespace gelu_kernels;
using tessera::cuda::blocks_for_packs;
using tessera::cuda::dev;
using tessera::cuda::kElementwiseThreads;
using tessera::cuda::packable;

}  // namespace

template <typename T>
void gelu_forward(T* out, const T* inp, int64_t n) {
  if (n == 0) return;
  gelu_forward_kernel<<<blocks_for_packs(n), kElementwiseThreads, 0,
                        tessera::cuda::compute_stream()>>>(dev(out), dev(inp), n,
                                                           packable(dev(out), dev(inp)));
  CHECK_LAUNCH();
}

template <typename T>
void gelu_backward(T* dinp, const T* dout, const T* inp, int64_t n) {
  if (n == 0) return;
  gelu_backward_kernel<<<blocks_for_packs(n), kElementwiseThreads, 0,
                         tessera::cuda::compute_stream()>>>(
      dev(dinp), dev(dout), dev(inp), n, packable(dev(dinp), dev(dout), dev(inp)));
  CHECK_LAUNCH();
}

template <typename T>
void residual_forward(T* out, const T* a, const T* b, int64_t n) {
  tessera::cuda::add(dev(out), dev(a), dev(b), n);
}

template <typename T>
void residual_backward(T* da, T* db, const T* dout, int64_t n) {
  if (n == 0) return;
  residual_backward_kernel<<<blocks_for_packs(n), kElementwiseThreads, 0,
                             tessera::cuda::compute_stream()>>>(
      dev(da), dev(db), dev(dout), n, packable(dev(da), dev(db), dev(dout)));
  CHECK_LAUNCH();
}

#define TESSERA_GELU_INSTANTIATE(T)                                   \
  template void gelu_forward<T>(T*, const T*, int64_t);               \
  template void gelu_backward<T>(T*, const T*, const T*, int64_t);    \
  template void residual_forward<T>(T*, const T*, const T*, int64_t); \
  template void residual_backward<T>(T*, T*, const T*, int64_t);
TESSERA_GELU_INSTANTIATE(float)
TESSERA_GELU_INSTANTIATE(bf16)
#undef TESSERA_GELU_INSTANTIATE

}  // namespace tessera::ops::cuda
