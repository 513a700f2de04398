// The CUDA kernels behind cast.h, as the dispatcher calls them: raw device pointers of n
// elements. Work is queued on cuda::compute_stream() and not waited for. Plain C++ (no CUDA
// headers), so that host code can include it; defined in cast_cuda.cu.
#pragma once

#include <cstdint>

namespace tessera::ops::cuda {

// dst[i] = src[i] converted: instantiated for (bf16, float), rounding to nearest even as
// __float2bfloat16 and tessera::to_bf16 do, and (float, bf16), which is exact.
template <typename Dst, typename Src>
void cast(Dst* dst, const Src* src, int64_t n);
// dst[i] += src[i] in fp32; Src is float or bf16.
template <typename Src>
void accumulate(float* dst, const Src* src, int64_t n);

}  // namespace tessera::ops::cuda
