// GELU and residual dispatchers: every tensor has the shape, dtype and device of the input; then
// the kernel for the dtype and device (gelu_cpu.cpp, gelu_cuda.cu) runs over all elements.
#include "core/ops/gelu.h"

#include "core/ops/cpu_kernels.h"
#include "core/ops/dispatch.h"
#include "core/ops/gelu_cuda.h"

namespace tessera::ops {

void gelu_forward(Tensor& out, const Tensor& inp) {
  const char* op = "gelu_forward";
  detail::check_real(op, "inp", inp);
  detail::check_like(op, "out", out, inp, inp.shape());
  if (detail::host_bf16(inp)) return detail::via_f32(gelu_forward, out, inp);
  detail::dispatch(
      op, inp.dtype(), inp.device(),
      [&](auto tag) {
        using T = decltype(tag);
        cpu::gelu_forward(out.data<T>(), inp.data<T>(), inp.numel());
      },
      [&](auto tag) {
        using T = decltype(tag);
        cuda::gelu_forward(out.data<T>(), inp.data<T>(), inp.numel());
      });
}

void gelu_backward(Tensor& dinp, const Tensor& dout, const Tensor& inp) {
  const char* op = "gelu_backward";
  detail::check_real(op, "inp", inp);
  detail::check_like(op, "dout", dout, inp, inp.shape());
  detail::check_like(op, "dinp", dinp, inp, inp.shape());
  if (detail::host_bf16(inp)) return detail::via_f32(gelu_backward, dinp, dout, inp);
  detail::dispatch(
      op, inp.dtype(), inp.device(),
      [&](auto tag) {
        using T = decltype(tag);
        cpu::gelu_backward(dinp.data<T>(), dout.data<T>(), inp.data<T>(), inp.numel());
      },
      [&](auto tag) {
        using T = decltype(tag);
        cuda::gelu_backward(dinp.data<T>(), dout.data<T>(), inp.data<T>(), inp.numel());
      });
}

void residual_forward(Tensor& out, const Tensor& a, const Tensor& b) {
  const char* op = "residual_forward";
  detail::check_real(op, "a", a);
  detail::check_like(op, "b", b, a, a.shape());
  detail::check_like(op, "out", out, a, a.shape());
  if (detail::host_bf16(a)) return detail::via_f32(residual_forward, out, a, b);
  detail::dispatch(
      op, a.dtype(), a.device(),
      [&](auto tag) {
        using T = decltype(tag);
        cpu::residual_forward(out.data<T>(), a.data<T>(), b.data<T>(), a.numel());
      },
      [&](auto tag) {
        using T = decltype(tag);
        cuda::residual_forward(out.data<T>(), a.data<T>(), b.data<T>(), a.numel());
      });
}

void residual_backward(Tensor& da, Tensor& db, const Tensor& dout) {
  const char* op = "residual_backward";
  detail::check_real(op, "dout", dout);
  detail::check_like(op, "da", da, dout, dout.shape());
  detail::check_like(op, "db", db, dout, dout.shape());
  if (detail::host_bf16(dout)) return detail::via_f32(residual_backward, da, db, dout);
  detail::dispatch(
      op, dout.dtype(), dout.device(),
      [&](auto tag) {
        using T = decltype(tag);
        cpu::residual_backward(da.data<T>(), db.data<T>(), dout.data<T>(), dout.numel());
      },
      [&](auto tag) {
        using T = decltype(tag);
        cuda::residual_backward(da.data<T>(), db.data<T>(), dout.data<T>(), dout.numel());
      });
}

}  // namespace tessera::ops
