// Causal multi-head self-attention on this rank's heads. qkv is [B, T, 3 * H * hd], laid out
// as [q of heads 0..H-1 | k of heads 0..H-1 | v of heads 0..H-1], each head hd wide; out is
// [B, T, H * hd]. Scale 1/sqrt(hd). What the forward saves for the backward depends on the
// device (allocate it with attention_saved_shape / attention_saved_dtype):
//   CPU:  att[B, H, T, T] of qkv's dtype (F32 for bf16), the softmax probabilities (0 above
//         the diagonal);
//   CUDA: lse[B, H, T] F32, each row's log-sum-exp of its scaled, masked scores: flash
//         attention recomputes the probabilities from it and never stores the T x T matrix.
// CUDA takes head_dim 64 or 128 (others are refused with a message naming the op).
#pragma once

#include "core/tensor.h"

namespace tessera::ops {

Shape attention_saved_shape(Device device, int64_t B, int64_t H, int64_t T);
DType attention_saved_dtype(Device device, DType qkv_dtype);

void attention_forward(Tensor& out, Tensor& saved, const Tensor& qkv, int64_t heads);
// Writes (=) dqkv, a fresh activation gradient, as matmul_backward writes its input gradient.
// out is the forward's output: the CUDA backward needs rowsum(dout * out) (FA2); the CPU kernel
// does not read it, but it is checked like dout.
void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                        const Tensor& saved, int64_t heads);

// The CUDA kernels behind bfloat16 attention, for the whole process: CudaCores (the default),
// TensorCores (tessera's mma.sync kernels with fp32 accumulation, FlashAttention-2's scheme) or
// Cudnn (cuDNN's fused attention, core/ops/attention_cudnn.h). The tensor-core kernels are the
// fast path of tessera's own; they become the default once they have passed the GPU tests on a
// GPU (docs/GPU.md). float32 always runs on CUDA cores, exact to the fp32 reference; operands
// less aligned than the fast kernels need (views into a buffer) run on CUDA cores too.
enum class AttentionKernels { CudaCores, TensorCores, Cudnn };
void set_bf16_attention_kernels(AttentionKernels kernels);
AttentionKernels bf16_attention_kernels();
// "cuda_cores" / "tensor_cores" / "cudnn", as options and logs spell them; false for any other
// name.
const char* attention_kernels_name(AttentionKernels kernels);
bool attention_kernels_named(const std::string& name, AttentionKernels* kernels);
// Whether this build has AttentionKernels::Cudnn (CUDA on, the cuDNN frontend's headers found).
bool cudnn_attention_built();
// GPU memory the chosen kernels take for themselves inside one attention backward, beyond the
// operands, for the memory estimate (gpt_activation_bytes): none for tessera's kernels; for
// cuDNN's deterministic backward at most 2 B H T^2 bytes (docs/GPU.md, "Memory per GPU").
int64_t attention_workspace_bytes(Device device, DType qkv_dtype, int64_t B, int64_t H, int64_t T);
// Whether cuDNN's backward asks for its deterministic algorithm (the default; attention_cudnn.h).
void set_cudnn_deterministic(bool deterministic);
// Loads cuDNN for AttentionKernels::Cudnn and returns its version ("9.19.0"); InputError naming
// --gpu.attention where this build or this machine has no cuDNN attention.
std::string cudnn_attention_version();

}  // namespace tessera::ops
