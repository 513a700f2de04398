// AdamW and optimizer-reduction dispatchers: param, grad and both moments share one shape, dtype
// and device (float32 on cuda: fp32 master weights and moments), and the step is 1-based (t = 0
// would divide by 1 - beta^0 = 0); then the kernel for the dtype and device runs. The mixed
// update and the sums of squares also take bfloat16 operands on the host, which the CPU kernels
// widen exactly.
#include "core/ops/adamw.h"

#include <string>
#include <vector>

#include "core/ops/adamw_cuda.h"
#include "core/ops/cast.h"
#include "core/ops/cpu_kernels.h"
#include "core/ops/dispatch.h"

namespace tessera::ops {

namespace {

void check_step(const char* op, const AdamWStep& s) {
  TESSERA_CHECK(s.t >= 1, std::string(op) + ": step t must be >= 1, found " + std::to_string(s.t));
  TESSERA_CHECK(s.beta1 >= 0 && s.beta1 < 1 && s.beta2 >= 0 && s.beta2 < 1,
                std::string(op) + ": betas must be in [0, 1), found " + std::to_string(s.beta1) +
                    ", " + std::to_string(s.beta2));
}

// A sum_of_squares operand: float32 or bfloat16 on either device, or float64 on the host.
void check_squares_operand(const std::string& name, const Tensor& x) {
  const bool ok = x.defined() && x.is_contiguous() &&
                  (x.dtype() == DType::F32 || x.dtype() == DType::BF16 ||
                   (x.dtype() == DType::F64 && x.device() == Device::CPU));
  TESSERA_CHECK(ok, std::string("sum_of_squares: ") + name +
                        " must be a contiguous float32 or bfloat16 tensor (or float64 on the "
                        "host), found " +
                        detail::describe(x));
}

double host_sum_of_squares(const Tensor& x) {
  switch (x.dtype()) {
    case DType::F64:
      return cpu::sum_of_squares(x.data<double>(), x.numel());
    case DType::BF16:
      return cpu::sum_of_squares(x.data<bf16>(), x.numel());
    default:
      return cpu::sum_of_squares(x.data<float>(), x.numel());
  }
}

// The sum of squares of each of xs (checked, all on one device), in order.
std::vector<double> each_sum_of_squares(const std::vector<Tensor>& xs) {
  std::vector<double> sums;
  if (xs.empty()) return sums;
  if (xs.front().device() == Device::CPU) {
    for (const Tensor& x : xs) sums.push_back(host_sum_of_squares(x));
    return sums;
  }
#ifdef TESSERA_WITH_CUDA
  std::vector<cuda::SquaresOperand> operands;
  for (const Tensor& x : xs) operands.push_back({x.raw(), x.dtype(), x.numel()});
  return cuda::sum_of_squares(operands);
#else
  detail::refuse_without_cuda("sum_of_squares");
#endif
}

}  // namespace

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
  check_step(op, s);
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

void adamw_update_mixed(Tensor& master, Tensor& value, const Tensor& grad, Tensor& exp_avg,
                        Tensor& exp_avg_sq, const AdamWStep& s) {
  const char* op = "adamw_update_mixed";
  TESSERA_CHECK(master.defined(), std::string(op) +
                                      ": master (fp32 master weights) must be a contiguous float32 "
                                      "tensor, found an undefined tensor");
  const Device device = master.device();
  detail::check_tensor(op, "master (fp32 master weights)", master, DType::F32, device);
  detail::check_tensor(op, "value (bf16 copy of master)", value, DType::BF16, device);
  detail::check_shape(op, "value (bf16 copy of master)", value, master.shape());
  TESSERA_CHECK(grad.defined() && grad.is_contiguous() && grad.device() == device &&
                    (grad.dtype() == DType::F32 || grad.dtype() == DType::BF16),
                std::string(op) + ": grad must be a contiguous float32 or bfloat16 tensor on " +
                    device_name(device) + ", found " + detail::describe(grad));
  detail::check_shape(op, "grad", grad, master.shape());
  detail::check_like(op, "exp_avg", exp_avg, master, master.shape());
  detail::check_like(op, "exp_avg_sq", exp_avg_sq, master, master.shape());
  check_step(op, s);
  const int64_t n = master.numel();
  if (device == Device::CPU) {  // the CPU kernels composed: no pass to save on the host
    const Tensor grad32 = cast_to(grad, DType::F32);
    cpu::adamw_update(master.data<float>(), grad32.data<float>(), exp_avg.data<float>(),
                      exp_avg_sq.data<float>(), n, s);
    cpu::cast(value.data<bf16>(), master.data<float>(), n);
    return;
  }
#ifdef TESSERA_WITH_CUDA
  if (grad.dtype() == DType::BF16) {
    cuda::adamw_update_mixed(master.data<float>(), value.data<bf16>(), grad.data<bf16>(),
                             exp_avg.data<float>(), exp_avg_sq.data<float>(), n, s);
  } else {
    cuda::adamw_update_mixed(master.data<float>(), value.data<bf16>(), grad.data<float>(),
                             exp_avg.data<float>(), exp_avg_sq.data<float>(), n, s);
  }
#else
  detail::refuse_without_cuda(op);
#endif
}

double sum_of_squares(const Tensor& x) {
  check_squares_operand("x", x);
  return each_sum_of_squares({x}).front();
}

double sum_of_squares(const std::vector<Tensor>& xs) {
  for (size_t i = 0; i < xs.size(); ++i) {
    const std::string name = std::string("xs[") + std::to_string(i) + "]";
    check_squares_operand(name, xs[i]);
    TESSERA_CHECK(xs[i].device() == xs.front().device(),
                  std::string("sum_of_squares: all of xs must be on one device, found xs[0] on ") +
                      device_name(xs.front().device()) + " and " + name + " on " +
                      device_name(xs[i].device()));
  }
  double total = 0;
  for (double sum : each_sum_of_squares(xs)) total += sum;
  return total;
}

void scale(Tensor& x, double alpha) {
  const char* op = "scale";
  detail::check_real(op, "x", x);
  if (detail::host_bf16(x)) return detail::via_f32(scale, x, alpha);
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
