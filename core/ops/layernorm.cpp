// LayerNorm dispatcher: checks that inp, out and their gradients hold N rows of C (any leading
// shape), weight and bias are [C] and mean and rstd hold N values, then calls the kernel for the
// dtype and device.
#include "core/ops/layernorm.h"

#include "core/ops/cpu_kernels.h"
#include "core/ops/dispatch.h"

namespace tessera::ops {
namespace {

void check_layernorm(const char* op, const Tensor& inp, const Tensor& weight, const Tensor& mean,
                     const Tensor& rstd) {
  detail::check_real(op, "inp", inp);
  TESSERA_CHECK(inp.dim() >= 1, std::string(op) + ": inp must have at least one dimension");
  detail::check_like(op, "weight", weight, inp, {inp.size(-1)});
  detail::check_per_row(op, "mean", mean, inp.dtype(), inp, detail::leading_rows(inp));
  detail::check_per_row(op, "rstd", rstd, inp.dtype(), inp, detail::leading_rows(inp));
}

}  // namespace

void layernorm_forward(Tensor& out, Tensor& mean, Tensor& rstd, const Tensor& inp,
                       const Tensor& weight, const Tensor& bias) {
  const char* op = "layernorm_forward";
  check_layernorm(op, inp, weight, mean, rstd);
  detail::check_like(op, "bias", bias, inp, weight.shape());
  detail::check_rows(op, "out", out, inp, detail::leading_rows(inp), inp.size(-1));
  detail::dispatch_real(op, inp.dtype(), inp.device(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t C = inp.size(-1);
    cpu::layernorm_forward(out.data<T>(), mean.data<T>(), rstd.data<T>(), inp.data<T>(),
                           weight.data<T>(), bias.data<T>(), detail::leading_rows(inp), C);
  });
}

void layernorm_backward(Tensor& dinp, Tensor& dweight, Tensor& dbias, const Tensor& dout,
                        const Tensor& inp, const Tensor& weight, const Tensor& mean,
                        const Tensor& rstd) {
  const char* op = "layernorm_backward";
  check_layernorm(op, inp, weight, mean, rstd);
  detail::check_rows(op, "dout", dout, inp, detail::leading_rows(inp), inp.size(-1));
  detail::check_rows(op, "dinp", dinp, inp, detail::leading_rows(inp), inp.size(-1));
  detail::check_like(op, "dweight", dweight, inp, weight.shape());
  detail::check_like(op, "dbias", dbias, inp, weight.shape());
  detail::dispatch_real(op, inp.dtype(), inp.device(), [&](auto tag) {
    using T = decltype(tag);
    const int64_t C = inp.size(-1);
    cpu::layernorm_backward(dinp.data<T>(), dweight.data<T>(), dbias.data<T>(), dout.data<T>(),
                            inp.data<T>(), weight.data<T>(), mean.data<T>(), rstd.data<T>(),
                            detail::leading_rows(inp), C);
  });
}

}  // namespace tessera::ops
