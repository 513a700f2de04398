// Attention dispatcher: checks that qkv is [B, T, 3 H hd] for the given number of heads, out and
// dout are [B, T, H hd], and the saved tensor is what attention.h says for the device (att on
// the host, lse on the GPU, whose kernels also need a supported head dim); then calls the
// kernel for the dtype and device.
#include "core/ops/attention.h"

#include "core/bytes.h"
#include "core/error.h"
#include "core/ops/attention_cuda.h"
#include "core/ops/attention_cudnn.h"
#include "core/ops/cpu_kernels.h"
#include "core/ops/dispatch.h"

namespace tessera::ops {
namespace {

struct AttentionDims {
  int64_t B, S, H, hd;
};

AttentionDims check_attention(const char* op, const Tensor& qkv, const Tensor& saved,
                              int64_t heads) {
  detail::check_real(op, "qkv", qkv);
  TESSERA_CHECK(heads > 0 && qkv.dim() == 3 && qkv.size(2) % (3 * heads) == 0,
                std::string(op) + ": qkv must be [B, T, 3 * heads * head_dim] with heads = " +
                    std::to_string(heads) + ", found " + shape_str(qkv.shape()));
  const AttentionDims d{qkv.size(0), qkv.size(1), heads, qkv.size(2) / (3 * heads)};
  const Device device = qkv.device();
  const char* name = device == Device::CUDA ? "lse" : "att";
  detail::check_tensor(op, name, saved, attention_saved_dtype(device, qkv.dtype()), device);
  detail::check_shape(op, name, saved, attention_saved_shape(device, d.B, d.H, d.S));
  TESSERA_CHECK(device != Device::CUDA || cuda::attention_head_dim_supported(d.hd),
                std::string(op) + ": head_dim " + std::to_string(d.hd) +
                    " has no CUDA kernel; the flash attention kernels take head_dim " +
                    cuda::kAttentionHeadDims);
  return d;
}

AttentionKernels g_bf16_kernels = AttentionKernels::CudaCores;

}  // namespace

void set_bf16_attention_kernels(AttentionKernels kernels) {
  g_bf16_kernels = kernels;
}

AttentionKernels bf16_attention_kernels() {
  return g_bf16_kernels;
}

const char* attention_kernels_name(AttentionKernels kernels) {
  switch (kernels) {
    case AttentionKernels::TensorCores:
      return "tensor_cores";
    case AttentionKernels::Cudnn:
      return "cudnn";
    case AttentionKernels::CudaCores:
      break;
  }
  return "cuda_cores";
}

bool attention_kernels_named(const std::string& name, AttentionKernels* kernels) {
  for (const AttentionKernels k :
       {AttentionKernels::CudaCores, AttentionKernels::TensorCores, AttentionKernels::Cudnn}) {
    if (name == attention_kernels_name(k)) {
      *kernels = k;
      return true;
    }
  }
  return false;
}

bool cudnn_attention_built() {
#ifdef TESSERA_WITH_CUDA
  return cuda::cudnn_attention_built();
#else
  return false;
#endif
}

void set_cudnn_deterministic(bool deterministic) {
#ifdef TESSERA_WITH_CUDA
  cuda::set_cudnn_deterministic(deterministic);
#else
  (void)deterministic;
#endif
}

std::string cudnn_attention_version() {
#ifdef TESSERA_WITH_CUDA
  return cuda::cudnn_attention_version();
#else
  throw InputError("--gpu.attention cudnn: this build has no CUDA backend (TESSERA_CUDA=OFF)");
#endif
}

Shape attention_saved_shape(Device device, int64_t B, int64_t H, int64_t T) {
  if (device == Device::CUDA) return {B, H, T};
  return {B, H, T, T};
}

int64_t attention_workspace_bytes(Device device, DType qkv_dtype, int64_t B, int64_t H, int64_t T) {
  // T = 1 runs on tessera's kernels (cuDNN's backward refuses it).
  const bool cudnn = device == Device::CUDA && qkv_dtype == DType::BF16 &&
                     g_bf16_kernels == AttentionKernels::Cudnn && T > 1;
  return cudnn ? saturated_bytes(2 * WideBytes{B} * H * T * T) : 0;
}

DType attention_saved_dtype(Device device, DType qkv_dtype) {
  return row_stats_dtype(device, qkv_dtype);  // lse on the GPU; probabilities on the host
}

void attention_forward(Tensor& out, Tensor& saved, const Tensor& qkv, int64_t heads) {
  const char* op = "attention_forward";
  const AttentionDims d = check_attention(op, qkv, saved, heads);
  detail::check_like(op, "out", out, qkv, {d.B, d.S, d.H * d.hd});
  if (detail::host_bf16(qkv)) return detail::via_f32(attention_forward, out, saved, qkv, heads);
  detail::dispatch(
      op, qkv.dtype(), qkv.device(),
      [&](auto tag) {
        using T = decltype(tag);
        cpu::attention_forward(out.data<T>(), saved.data<T>(), qkv.data<T>(), d.B, d.S, d.H, d.hd);
      },
      [&](auto tag) {
        using T = decltype(tag);
        cuda::attention_forward(out.data<T>(), saved.data<float>(), qkv.data<T>(), d.B, d.S, d.H,
                                d.hd, g_bf16_kernels);
      });
}

void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                        const Tensor& saved, int64_t heads) {
  const char* op = "attention_backward";
  const AttentionDims d = check_attention(op, qkv, saved, heads);
  detail::check_like(op, "dout", dout, qkv, {d.B, d.S, d.H * d.hd});
  detail::check_like(op, "out", out, qkv, {d.B, d.S, d.H * d.hd});
  detail::check_like(op, "dqkv", dqkv, qkv, qkv.shape());
  if (detail::host_bf16(qkv))
    return detail::via_f32(attention_backward, dqkv, dout, qkv, out, saved, heads);
  detail::dispatch(
      op, qkv.dtype(), qkv.device(),
      [&](auto tag) {
        using T = decltype(tag);
        cpu::attention_backward(dqkv.data<T>(), dout.data<T>(), qkv.data<T>(), saved.data<T>(), d.B,
                                d.S, d.H, d.hd);
      },
      [&](auto tag) {
        using T = decltype(tag);
        cuda::attention_backward(dqkv.data<T>(), dout.data<T>(), qkv.data<T>(), out.data<T>(),
                                 saved.data<float>(), d.B, d.S, d.H, d.hd, g_bf16_kernels);
      });
}

}  // namespace tessera::ops
