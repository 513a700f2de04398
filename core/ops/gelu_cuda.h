// The CUDA kernels behind gelu.h, as the dispatcher calls them: raw device pointers of n elements,
// T float or bf16, arithmetic in fp32. Work is queued on cuda::compute_stream() and not waited
// for. Plain C++ (no CUDA headers), so that host code can include it; defined in gelu_cuda.cu.
#pragma once

#include <cstdint>

namespace tessera::ops::cuda {

template <typename T>
void gelu_forward(T* out, const T* inp, int64_t n);
// dinp = dout * gelu'(inp); dinp may be dout.
template <typename T>
void gelu_backward(T* dinp, const T* dout, const T* inp, int64_t n);
template <typename T>
void residual_forward(T* out, const T* a, const T* b, int64_t n);
// da += dout; db += dout.
template <typename T>
void residual_backward(T* da, T* db, const T* dout, int64_t n);

}  // namespace tessera::ops::cuda
