// Attention dispatcher: checks that qkv is [B, T, 3 H hd] for the given number of heads, out and
// dout are [B, T, H hd] and att is [B, H, T, T], then calls the kernel for the dtype and device.
#include "core/ops/attention.h"

#include "core/ops/cpu_kernels.h"
#include "core/ops/dispatch.h"

namespace tessera::ops {
namespace {

struct AttentionDims {
  int64_t B, S, H, hd;
};

AttentionDims check_attention(const char* op, const Tensor& qkv, const Tensor& att, int64_t heads) {
  detail::check_real(op, "qkv", qkv);
  TESSERA_CHECK(heads > 0 && qkv.dim() == 3 && qkv.size(2) % (3 * heads) == 0,
                std::string(op) + ": qkv must be [B, T, 3 * heads * head_dim] with heads = " +
                    std::to_string(heads) + ", found " + shape_str(qkv.shape()));
  const AttentionDims d{qkv.size(0), qkv.size(1), heads, qkv.size(2) / (3 * heads)};
  detail::check_like(op, "att", att, qkv, {d.B, d.H, d.S, d.S});
  return d;
}

}  // namespace

void attention_forward(Tensor& out, Tensor& att, const Tensor& qkv, int64_t heads) {
  const char* op = "attention_forward";
  const AttentionDims d = check_attention(op, qkv, att, heads);
  detail::check_like(op, "out", out, qkv, {d.B, d.S, d.H * d.hd});
  detail::dispatch_real(op, qkv.dtype(), qkv.device(), [&](auto tag) {
    using T = decltype(tag);
    cpu::attention_forward(out.data<T>(), att.data<T>(), qkv.data<T>(), d.B, d.S, d.H, d.hd);
  });
}

void attention_backward(Tensor& dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& att,
                        int64_t heads) {
  const char* op = "attention_backward";
  const AttentionDims d = check_attention(op, qkv, att, heads);
  detail::check_like(op, "dout", dout, qkv, {d.B, d.S, d.H * d.hd});
  detail::check_like(op, "dqkv", dqkv, qkv, qkv.shape());
  detail::dispatch_real(op, qkv.dtype(), qkv.device(), [&](auto tag) {
    using T = decltype(tag);
    cpu::attention_backward(dqkv.data<T>(), dout.data<T>(), qkv.data<T>(), att.data<T>(), d.B, d.S,
                            d.H, d.hd);
  });
}

}  // namespace tessera::ops
