// LayerNorm dispatcher: checks that inp, out and their gradients hold N rows of C (any leading
// shape), weight and bias are [C] and mean and rstd hold N values (float32 on cuda, inp's dtype on
// the host), then calls the kernel for the dtype and device.
#include "core/ops/layernorm.h"

#include "core/ops/cpu_kernels.h"
#include "core/ops/dispatch.h"
#include "core/ops/gelu.h"
#include "core/ops/layernorm_cuda.h"

namespace tessera::ops {
namespace {

// The dtype of mean and rstd: fp32 statistics on the GPU, inp's own dtype on the host.
DType statistics_dtype(const Tensor& inp) {
  return row_stats_dtype(inp.device(), inp.dtype());
}

void check_layernorm(const char* op, const char* inp_name, const Tensor& inp, const Tensor& weight,
                     const Tensor& mean, const Tensor& rstd) {
  detail::check_real(op, inp_name, inp);
  TESSERA_CHECK(inp.dim() >= 1,
                std::string(op) + ": " + inp_name + " must have at least one dimension");
  detail::check_like(op, "weight", weight, inp, {inp.size(-1)});
  const int64_t rows = detail::leading_rows(inp);
  detail::check_per_row(op, "mean", mean, statistics_dtype(inp), inp, rows);
  detail::check_per_row(op, "rstd", rstd, statistics_dtype(inp), inp, rows);
}

}  // namespace

void layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp,
                       const Tensor& weight, const Tensor& bias) {
  const char* op = "layernorm_forward";
  check_layernorm(op, "inp", inp, weight, mean, rstd);
  detail::check_like(op, "bias", bias, inp, weight.shape());
  detail::check_rows(op, "out", out, inp, detail::leading_rows(inp), inp.size(-1));
  const int64_t N = detail::leading_rows(inp), C = inp.size(-1);
  if (detail::host_bf16(inp))
    return detail::via_f32(layernorm_forward, out, mean, rstd, inp, weight, bias);
  detail::dispatch(
      op, inp.dtype(), inp.device(),
      [&](auto tag) {
        using T = decltype(tag);
        cpu::layernorm_forward(out.data<T>(), mean.data<T>(), rstd.data<T>(), inp.data<T>(),
                               weight.data<T>(), bias.data<T>(), N, C);
      },
      [&](auto tag) {
        using T = decltype(tag);
        cuda::layernorm_forward(out.data<T>(), mean.data<float>(), rstd.data<float>(),
                                inp.data<T>(), weight.data<T>(), bias.data<T>(), N, C);
      });
}

void layernorm_backward(Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout,
                        const Tensor& inp, const Tensor& weight, const Tensor& mean,
                        const Tensor& rstd) {
  const char* op = "layernorm_backward";
  check_layernorm(op, "inp", inp, weight, mean, rstd);
  detail::check_rows(op, "dout", dout, inp, detail::leading_rows(inp), inp.size(-1));
  detail::check_rows(op, "dinp", dinp, inp, detail::leading_rows(inp), inp.size(-1));
  detail::check_like(op, "dweight", dweight, inp, weight.shape());
  detail::check_like(op, "dbias", dbias, inp, weight.shape());
  const int64_t N = detail::leading_rows(inp), C = inp.size(-1);
  if (detail::host_bf16(inp))
    return detail::via_f32(layernorm_backward, dinp, dweight, dbias, dout, inp, weight, mean, rstd);
  detail::dispatch(
      op, inp.dtype(), inp.device(),
      [&](auto tag) {
        using T = decltype(tag);
        cpu::layernorm_backward(dinp.data<T>(), dweight.data<T>(), dbias.data<T>(), dout.data<T>(),
                                inp.data<T>(), weight.data<T>(), mean.data<T>(), rstd.data<T>(), N,
                                C);
      },
      [&](auto tag) {
        using T = decltype(tag);
        cuda::layernorm_backward(dinp.data<T>(), dweight.data<T>(), dbias.data<T>(), dout.data<T>(),
                                 inp.data<T>(), weight.data<T>(), mean.data<float>(),
                                 rstd.data<float>(), N, C);
      });
}

void residual_layernorm_forward(Tensor& residual, Tensor& out, Tensor& mean, Tensor& rstd,
                                const Tensor& a, const Tensor& b, const Tensor& weight,
                                const Tensor& bias) {
  const char* op = "residual_layernorm_forward";
  check_layernorm(op, "a", a, weight, mean, rstd);
  detail::check_like(op, "b", b, a, a.shape());
  detail::check_like(op, "residual", residual, a, a.shape());
  detail::check_like(op, "bias", bias, a, weight.shape());
  detail::check_rows(op, "out", out, a, detail::leading_rows(a), a.size(-1));
  const int64_t N = detail::leading_rows(a), C = a.size(-1);
  if (a.device() == Device::CPU) {  // its two halves: the LayerNorm reads the stored residual
    residual_forward(residual, a, b);
    layernorm_forward(out, mean, rstd, residual, weight, bias);
    return;
  }
  detail::dispatch_cuda(op, a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    cuda::residual_layernorm_forward(residual.data<T>(), out.data<T>(), mean.data<float>(),
                                     rstd.data<float>(), a.data<T>(), b.data<T>(), weight.data<T>(),
                                     bias.data<T>(), N, C);
  });
}

}  // namespace tessera::ops
