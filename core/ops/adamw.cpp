// AdamW and optimizer-reduction dispatchers: param, grad and both moments share one shape, dtype
// and device (float32 on cuda: fp32 master weights and moments), and the step is 1-based (t = 0
// would divide by 1 - beta^0 = 0); then the kernel for the dtype and device runs.
#include "core/ops/adamw.h"

#include "core/ops/adamw_cuda.h"
#include "core/ops/cpu_kernels.h"
#include "core/ops/dispatch.h"

namespace tessera::ops {

void adamw_update(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                  const AdamWStep& s) {
  const char* op = "adamw_update";
  detail::check_real(op, "param", param);
  if (param.device() == Device::CUDA)  // the bf16 compute copies are cast from these
    detail::check_tensor(op, "param (fp32 master weights on cuda)", param, DType::F32,
                         Device::CUDA);
  detail::check_like(op, "grad", grad, param, param.shape());
  detail::check_like(op, "exp_avg", exp_avg, param, param.shape());
  detail::check_like(op, "exp_avg_sq", exp_avg_sq, param, param.shape());
  TESSERA_CHECK(s.t >= 1, std::string(op) + ": step t must be >= 1, found " + std::to_string(s.t));
  TESSERA_CHECK(s.beta1 >= 0 && s.beta1 < 1 && s.beta2 >= 0 && s.beta2 < 1,
                std::string(op) + ": betas must be in [0, 1), found " + std::to_string(s.beta1) +
                    ", " + std::to_string(s.beta2));
  detail::dispatch(
      op, param.dtype(), param.device(),
      [&](auto tag) {
        using T = decltype(tag);
        cpu::adamw_update(param.data<T>(), grad.data<T>(), exp_avg.data<T>(), exp_avg_sq.data<T>(),
                          param.numel(), s);
      },
      [&](auto) {
        cuda::adamw_update(param.data<float>(), grad.data<float>(), exp_avg.data<float>(),
                           exp_avg_sq.data<float>(), param.numel(), s);
      });
}

double sum_of_squares(const Tensor& x) {
  const char* op = "sum_of_squares";
  detail::check_real(op, "x", x);
  double result = 0;
  detail::dispatch(
      op, x.dtype(), x.device(),
      [&](auto tag) {
        using T = decltype(tag);
        result = cpu::sum_of_squares(x.data<T>(), x.numel());
      },
      [&](auto tag) {
        using T = decltype(tag);
        result = cuda::sum_of_squares(x.data<T>(), x.numel());
      });
  return result;
}

void scale(Tensor& x, double alpha) {
  const char* op = "scale";
  detail::check_real(op, "x", x);
  detail::dispatch(
      op, x.dtype(), x.device(),
      [&](auto tag) {
        using T = decltype(tag);
        cpu::scale(x.data<T>(), x.numel(), alpha);
      },
      [&](auto tag) {
        using T = decltype(tag);
        cuda::scale(x.data<T>(), x.numel(), alpha);
      });
}

}  // namespace tessera::ops
