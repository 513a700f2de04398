// The CUDA kernels behind matmul.h, as the dispatcher calls them: raw device pointers, T float or
// bf16, every pointer of a call of the same T; the dispatcher has checked shapes, dtypes and
// contiguity. Work is queued on cuda::compute_stream() and not waited for. Plain C++ (no CUDA
// headers), so that host code can include it; defined in matmul_cuda.cu.
#pragma once

#include <cstdint>

namespace tessera::ops::cuda {

// out[M, N] = inp[M, K] @ weight[N, K]^T (+ bias[N] when non-null), row-major.
template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int64_t M, int64_t K,
                    int64_t N);
// Writes dinp, accumulates into dweight and dbias (each when non-null), as cpu::matmul_backward.
template <typename T>
void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                     int64_t M, int64_t K, int64_t N);
// pre_gelu = inp @ weight^T (+ bias); out = gelu(pre_gelu). out and pre_gelu do not overlap.
// Returns whether one GEMM with cuBLASLt's GELU epilogue did it (else a GEMM, then the kernel).
template <typename T>
bool matmul_gelu_forward(T* out, T* pre_gelu, const T* inp, const T* weight, const T* bias,
                         int64_t M, int64_t K, int64_t N);
// dpre = (dout @ weight) * gelu'(pre_gelu), and dweight, dbias as matmul_backward; dpre overlaps
// none of the inputs. `epilogue`: try cuBLASLt's DGELU epilogue (bf16 only). Returns whether
// the epilogue did it.
template <typename T>
bool matmul_gelu_backward(T* dpre, T* dweight, T* dbias, const T* dout, const T* inp,
                          const T* pre_gelu, const T* weight, int64_t M, int64_t K, int64_t N,
                          bool epilogue);

}  // namespace tessera::ops::cuda
