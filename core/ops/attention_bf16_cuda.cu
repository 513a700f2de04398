// Launches the tensor-core attention kernels of core/ops/attention_bf16_kernels.cuh on the
// compute stream (contract in core/ops/attention_cuda.cuh).
#include <cuda_bf16.h>

#include <cstdint>

#include "core/cuda_common.cuh"
#include "core/ops/tensor_core.cuh"
// After tensor_core.cuh: the kernels use its instructions.
#include "core/ops/attention_bf16_kernels.cuh"

namespace tessera::ops::cuda {
namespace {

using namespace attention_bf16;
using ::tessera::cuda::allow_smem;

dim3 grid_of(int64_t B, int64_t S, int64_t H) {
  return dim3(::tessera::cuda::blocks_for(S, kBlockRows), static_cast<unsigned>(B * H));
}

}  // namespace

template <int HD>
void attention_forward_bf16(bf16x1* out, float* lse, const bf16x1* qkv, int64_t B, int64_t S,
                            int64_t H, float scale) {
  constexpr int smem = forward_smem_bytes<HD>();
  allow_smem<forward_kernel<HD>>(smem);
  forward_kernel<HD><<<grid_of(B, S, H), kThreads, smem, ::tessera::cuda::compute_stream()>>>(
      out, lse, qkv, static_cast<int>(S), static_cast<int>(H), scale);
  CHECK_LAUNCH();
}

template <int HD>
void attention_backward_bf16(bf16x1* dqkv, const bf16x1* dout, const bf16x1* qkv, const float* lse,
                             const float* delta, int64_t B, int64_t S, int64_t H, float scale) {
  cudaStream_t stream = ::tessera::cuda::compute_stream();
  const int Si = static_cast<int>(S), Hi = static_cast<int>(H);
  constexpr int dkdv_smem = dkdv_smem_bytes<HD>();
  allow_smem<backward_dkdv_kernel<HD>>(dkdv_smem);
  backward_dkdv_kernel<HD><<<grid_of(B, S, H), kThreads, dkdv_smem, stream>>>(dqkv, qkv, dout, lse,
                                                                              delta, Si, Hi, scale);
  CHECK_LAUNCH();
  constexpr int dq_smem = dq_smem_bytes<HD>();
  allow_smem<backward_dq_kernel<HD>>(dq_smem);
  backward_dq_kernel<HD>
      <<<grid_of(B, S, H), kThreads, dq_smem, stream>>>(dqkv, qkv, dout, lse, delta, Si, Hi, scale);
  CHECK_LAUNCH();
}

template void attention_forward_bf16<64>(bf16x1*, float*, const bf16x1*, int64_t, int64_t, int64_t,
                                         float);
template void attention_forward_bf16<128>(bf16x1*, float*, const bf16x1*, int64_t, int64_t, int64_t,
                                          float);
template void attention_backward_bf16<64>(bf16x1*, const bf16x1*, const bf16x1*, const float*,
                                          const float*, int64_t, int64_t, int64_t, float);
template void attention_backward_bf16<128>(bf16x1*, const bf16x1*, const bf16x1*, const float*,
                                           const float*, int64_t, int64_t, int64_t, float);

}  // namespace tessera::ops::cuda
