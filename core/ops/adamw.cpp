// AdamW and optimizer-reduction dispatchers: param, grad and both moments share one shape, dtype
// and device, and the step is 1-based (t = 0 would divide by 1 - beta^0 = 0); then the kernel
// for the dtype and device runs.
#include "core/ops/adamw.h"

#include "core/ops/cpu_kernels.h"
#include "core/ops/dispatch.h"

namespace tessera::ops {

void adamw_update(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                  const AdamWStep& s) {
  const char* op = "adamw_update";
  detail::check_real(op, "param", param);
  detail::check_like(op, "grad", grad, param, param.shape());
  detail::check_like(op, "exp_avg", exp_avg, param, param.shape());
  detail::check_like(op, "exp_avg_sq", exp_avg_sq, param, param.shape());
  TESSERA_CHECK(s.t >= 1, std::string(op) + ": step t must be >= 1, found " + std::to_string(s.t));
  TESSERA_CHECK(s.beta1 >= 0 && s.beta1 < 1 && s.beta2 >= 0 && s.beta2 < 1,
                std::string(op) + ": betas must be in [0, 1), found " + std::to_string(s.beta1) +
                    ", " + std::to_string(s.beta2));
  detail::dispatch_real(op, param.dtype(), param.device(), [&](auto tag) {
    using T = decltype(tag);
    cpu::adamw_update(param.data<T>(), grad.data<T>(), exp_avg.data<T>(), exp_avg_sq.data<T>(),
                      param.numel(), s);
  });
}

double sum_of_squares(const Tensor& x) {
  const char* op = "sum_of_squares";
  detail::check_real(op, "x", x);
  double result = 0;
  detail::dispatch_real(op, x.dtype(), x.device(), [&](auto tag) {
    using T = decltype(tag);
    result = cpu::sum_of_squares(x.data<T>(), x.numel());
  });
  return result;
}

void scale(Tensor& x, double alpha) {
  const char* op = "scale";
  detail::check_real(op, "x", x);
  detail::dispatch_real(op, x.dtype(), x.device(), [&](auto tag) {
    using T = decltype(tag);
    cpu::scale(x.data<T>(), x.numel(), alpha);
  });
}

}  // namespace tessera::ops
