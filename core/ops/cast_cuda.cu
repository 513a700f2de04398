// CUDA casts between float32 and bfloat16, and fp32 accumulation of either into float32:
// elementwise, memory-bound kernels over packs of 4 elements (core/ops/cuda_elementwise.cuh).
// float -> bf16 is __float2bfloat16: round to nearest even, the rule tessera::to_bf16 follows on
// the host.
#include <cstdint>

#include "core/ops/cast_cuda.h"
#include "core/ops/cuda_elementwise.cuh"

namespace tessera::ops::cuda {
namespace {

using tessera::cuda::blocks_for_packs;
using tessera::cuda::cast_kernel;
using tessera::cuda::dev;
using tessera::cuda::kElementwiseThreads;
using tessera::cuda::packable;

}  // namespace

template <typename Dst, typename Src>
void cast(Dst* dst, const Src* src, int64_t n) {
  if (n == 0) return;
  cast_kernel<<<blocks_for_packs(n), kElementwiseThreads, 0, tessera::cuda::compute_stream()>>>(
      dev(dst), dev(src), n, packable(dev(dst), dev(src)));
  CHECK_LAUNCH();
}

template <typename Src>
void accumulate(float* dst, const Src* src, int64_t n) {
  tessera::cuda::add(dst, static_cast<const float*>(dst), dev(src), n);
}

template void cast<bf16, float>(bf16*, const float*, int64_t);
template void cast<float, bf16>(float*, const bf16*, int64_t);
template void accumulate<float>(float*, const float*, int64_t);
template void accumulate<bf16>(float*, const bf16*, int64_t);

}  // namespace tessera::ops::cuda
