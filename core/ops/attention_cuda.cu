// Causal flash attention, forward and backward (contract in attention_cuda.h), on CUDA cores;
// bf16 can also run on tensor cores (attention_bf16_cuda.cu, chosen by AttentionKernels in
// attention.h). fp32 always runs here: the strict path the tests hold to the fp32 reference.
//
// The fp32 kernels: one thread block of 4 warps takes a 32-row tile of one (batch, head); it
// walks the 32-key tiles its rows can see, up to the diagonal, with shared-memory tiles in fp32
// and the running softmax statistics in registers, so the T x T matrix never reaches global
// memory. Each warp owns 8 rows of the tile and each lane one column of a 32-wide score tile,
// so the softmax reductions are warp shuffles and only __syncwarp separates a warp's phases.
//   forward: O = softmax(scale Q K^T) V online (FA2, Dao 2023, alg. 1), L = m + log(l) per row.
//   backward: D = rowsum(dO * O) (both dtypes); dK, dV by the block that owns the key tile,
//   looping over the query tiles below it; dQ by the block that owns the query tile, in a
//   second kernel that recomputes P and dP: deterministic, no atomics, at the cost of computing
//   S and dP twice.
// Shared-memory tiles that a lane reads by row (lane = row) are padded to HD + 1 floats, so
// the 32 lanes hit 32 different banks; tiles read by broadcast or by column are not.
#include "core/ops/attention_cuda.h"

#include <initializer_list>
#include <string>
#include <type_traits>

#include "core/cuda_common.cuh"
#include "core/ops/attention_cuda.cuh"
#include "core/ops/attention_cuda_core_kernels.cuh"
#include "core/ops/attention_cudnn.h"

namespace tessera::ops::cuda {
namespace {

using namespace attention_cuda_cores;
using ::tessera::cuda::alignment_of;
using ::tessera::cuda::allow_smem;
using ::tessera::cuda::as_bf16;
using ::tessera::cuda::blocks_for;
using ::tessera::cuda::dev;

// Grid: x = tiles along T, y = batch * head (at most kAttentionMaxBatchHeads).
dim3 grid_of(const char* op, int64_t B, int64_t S, int64_t H) {
  TESSERA_CHECK(B * H <= kAttentionMaxBatchHeads && S <= (int64_t{1} << 30),
                std::string(op) + ": batch * heads = " + std::to_string(B * H) +
                    " and T = " + std::to_string(S) +
                    " exceed the CUDA kernel's grid (batch * heads <= 65535, T <= 2^30)");
  return dim3(blocks_for(S, kTile), static_cast<unsigned>(B * H));
}

// Whether cuDNN runs this call: chosen, T > 1 (its backward refuses a single query and key, and
// forward and backward go together), every operand 16-byte aligned.
bool cudnn_takes(AttentionKernels kernels, int64_t S, std::initializer_list<const void*> operands) {
  if (kernels != AttentionKernels::Cudnn || S < 2) return false;
  for (const void* p : operands)
    if (alignment_of(p) < 16) return false;
  return true;
}

template <int HD, typename T>
void launch_forward(T* out, float* lse, const T* qkv, int64_t B, int64_t S, int64_t H,
                    AttentionKernels kernels) {
  // The tensor-core kernels copy qkv and dout in 16-byte chunks (cp.async) and store out and
  // dqkv as bf16 pairs, and cuDNN moves 16-byte vectors throughout; less aligned operands (views
  // into a buffer) take the CUDA-core kernels, which read and write element by element. So does
  // T = 1, which cuDNN's backward refuses (cudnn_takes). cuDNN has no grid limit of tessera's.
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (cudnn_takes(kernels, S, {qkv, out, lse})) {
      attention_forward_cudnn(as_bf16(out), lse, as_bf16(qkv), B, S, H, HD);
      return;
    }
  }
  const dim3 grid = grid_of("attention_forward", B, S, H);
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (kernels == AttentionKernels::TensorCores && alignment_of(qkv) >= 16 &&
        alignment_of(out) >= 4) {
      attention_forward_bf16<HD>(out, lse, qkv, B, S, H, attention_scale(HD));
      return;
    }
  }
  constexpr size_t smem = forward_smem_bytes<HD>();
  allow_smem<attention_forward_kernel<HD, T>>(static_cast<int>(smem));
  attention_forward_kernel<HD, T><<<grid, kThreads, smem, ::tessera::cuda::compute_stream()>>>(
      out, lse, qkv, static_cast<int>(S), static_cast<int>(H), attention_scale(HD));
  CHECK_LAUNCH();
}

template <int HD, typename T>
void launch_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse,
                     int64_t B, int64_t S, int64_t H, AttentionKernels kernels) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (cudnn_takes(kernels, S, {qkv, dout, out, lse, dqkv})) {
      attention_backward_cudnn(as_bf16(dqkv), as_bf16(dout), as_bf16(qkv), as_bf16(out), lse, B, S,
                               H, HD);
      return;
    }
  }
  const dim3 grid = grid_of("attention_backward", B, S, H);
  cudaStream_t stream = ::tessera::cuda::compute_stream();
  // No clearing: the dK/dV kernel stores the K and V columns of dqkv, the dQ kernel the Q ones.
  const int Si = static_cast<int>(S), Hi = static_cast<int>(H);
  const int64_t rows = B * S * H;
  // rowsum(dout * out) per row (FA2's D), written whole by the first kernel.
  const ::tessera::cuda::StreamScratch delta_scratch(static_cast<size_t>(rows) * sizeof(float));
  float* delta = delta_scratch.as<float>();
  attention_delta_kernel<HD, T>
      <<<blocks_for(rows, kWarps), kThreads, 0, stream>>>(delta, dout, out, rows, Si, Hi);
  CHECK_LAUNCH();
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (kernels == AttentionKernels::TensorCores && alignment_of(qkv) >= 16 &&
        alignment_of(dout) >= 16 && alignment_of(dqkv) >= 4) {
      attention_backward_bf16<HD>(dqkv, dout, qkv, lse, delta, B, S, H, attention_scale(HD));
      return;
    }
  }
  constexpr size_t dkdv_smem = backward_dkdv_smem_bytes<HD>();
  allow_smem<attention_backward_dkdv_kernel<HD, T>>(static_cast<int>(dkdv_smem));
  attention_backward_dkdv_kernel<HD, T><<<grid, kThreads, dkdv_smem, stream>>>(
      dqkv, qkv, dout, lse, delta, Si, Hi, attention_scale(HD));
  CHECK_LAUNCH();
  constexpr size_t dq_smem = backward_dq_smem_bytes<HD>();
  allow_smem<attention_backward_dq_kernel<HD, T>>(static_cast<int>(dq_smem));
  attention_backward_dq_kernel<HD, T><<<grid, kThreads, dq_smem, stream>>>(
      dqkv, qkv, dout, lse, delta, Si, Hi, attention_scale(HD));
  CHECK_LAUNCH();
}

[[noreturn]] void refuse_head_dim(const char* op, int64_t hd) {
  fail_internal(__FILE__, __LINE__,
                std::string(op) + ": no CUDA kernel for head_dim " + std::to_string(hd) +
                    " (the flash attention kernels take head_dim " + kAttentionHeadDims + ")");
}

}  // namespace

template <typename T>
void attention_forward(T* out, float* lse, const T* qkv, int64_t B, int64_t S, int64_t H,
                       int64_t hd, AttentionKernels kernels) {
  if (B * S * H == 0) return;
  switch (hd) {
    case 64:
      launch_forward<64>(dev(out), lse, dev(qkv), B, S, H, kernels);
      break;
    case 128:
      launch_forward<128>(dev(out), lse, dev(qkv), B, S, H, kernels);
      break;
    default:
      refuse_head_dim("attention_forward", hd);
  }
}

template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse,
                        int64_t B, int64_t S, int64_t H, int64_t hd, AttentionKernels kernels) {
  if (B * S * H == 0) return;
  switch (hd) {
    case 64:
      launch_backward<64>(dev(dqkv), dev(dout), dev(qkv), dev(out), lse, B, S, H, kernels);
      break;
    case 128:
      launch_backward<128>(dev(dqkv), dev(dout), dev(qkv), dev(out), lse, B, S, H, kernels);
      break;
    default:
      refuse_head_dim("attention_backward", hd);
  }
}

template void attention_forward<float>(float*, float*, const float*, int64_t, int64_t, int64_t,
                                       int64_t, AttentionKernels);
template void attention_forward<bf16>(bf16*, float*, const bf16*, int64_t, int64_t, int64_t,
                                      int64_t, AttentionKernels);
template void attention_backward<float>(float*, const float*, const float*, const float*,
                                        const float*, int64_t, int64_t, int64_t, int64_t,
                                        AttentionKernels);
template void attention_backward<bf16>(bf16*, const bf16*, const bf16*, const bf16*, const float*,
                                       int64_t, int64_t, int64_t, int64_t, AttentionKernels);

}  // namespace tessera::ops::cuda
