// What every op dispatcher (core/ops/<op>.cpp) does before it calls a kernel: check each tensor's
// dtype, device, contiguity and shape, failing with a message that names the op, the argument,
// what was expected and what was found; then pick the kernel instantiation for the dtype.
// Internal to core/ops.
#pragma once

#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "core/ops/cpu_kernels.h"
#include "core/tensor.h"

namespace tessera::ops::detail {

inline std::string describe(const Tensor& t) {
  if (!t.defined()) return "an undefined tensor";
  return dtype_name(t.dtype()) + " " + shape_str(t.shape()) + " on " + device_name(t.device()) +
         (t.is_contiguous() ? "" : " (non-contiguous)");
}

// t is defined, contiguous, of dtype `dtype` and on `device`.
inline void check_tensor(const char* op, const char* name, const Tensor& t, DType dtype,
                         Device device) {
  TESSERA_CHECK(t.defined() && t.is_contiguous() && t.dtype() == dtype && t.device() == device,
                std::string(op) + ": " + name + " must be a contiguous " + dtype_name(dtype) +
                    " tensor on " + device_name(device) + ", found " + describe(t));
}

// --- bfloat16 on the host ----------------------------------------------------------------------
// The host has no bf16 kernels: an op on host bf16 tensors checks its arguments as they are,
// then runs its float32 kernel on float32 copies of them and rounds what it wrote back to bf16
// (to nearest even), as the GPU's bf16 kernels compute in fp32 and round their outputs. A fused
// op rounds where its unfused parts would. Slow, and meant for that: mixed precision (bf16
// compute, fp32 masters, gradient sums and statistics) trained and tested without a GPU.

inline bool host_bf16(const Tensor& t) {
  return t.defined() && t.device() == Device::CPU && t.dtype() == DType::BF16;
}

// The float32 stand-ins of one op call's host bf16 tensors: one per distinct tensor, so that
// arguments that alias (an op run in place, residual_backward's da == db) stay one tensor.
class F32StandIns {
 public:
  // t itself unless it is host bf16; then its float32 copy, shaped like t.
  Tensor of(const Tensor& t) {
    if (!host_bf16(t)) return t;
    for (const Entry& e : entries_) {
      if (e.raw == t.raw() && e.wide.numel() == t.numel()) return e.wide.view(t.shape());
      // Copies of partly overlapping views would not see each other's writes.
      TESSERA_CHECK(!overlaps(e.original, t),
                    "via_f32: two bf16 arguments overlap in part; ops take whole tensors or "
                    "disjoint ones");
    }
    Entry& e = entries_.emplace_back();
    e.raw = t.raw();
    e.original = t;
    e.wide = Tensor(t.shape(), DType::F32);
    cpu::cast(e.wide.data<float>(), t.data<bf16>(), t.numel());
    return e.wide;
  }
  // After the call: rounds the stand-in of each tensor the op may have written back into it.
  void round_back(Tensor& written) {
    if (!host_bf16(written)) return;
    const Tensor wide = of(written);
    cpu::cast(written.data<bf16>(), wide.data<float>(), written.numel());
  }

 private:
  struct Entry {
    const void* raw = nullptr;
    Tensor original, wide;
  };
  std::vector<Entry> entries_;
};

// One argument of via_f32, as an op passes its own parameters on: a Tensor& (or a Tensor*, which
// may be null) is written, a const one read; anything else is passed through.
template <typename A>
struct F32Arg {
  A value;
  F32Arg(F32StandIns&, A v) : value(static_cast<A>(v)) {}
  A get() { return static_cast<A>(value); }
  void done(F32StandIns&) {}
};
template <>
struct F32Arg<Tensor&> {
  Tensor& original;
  Tensor wide;
  F32Arg(F32StandIns& s, Tensor& t) : original(t), wide(s.of(t)) {}
  Tensor& get() { return wide; }
  void done(F32StandIns& s) { s.round_back(original); }
};
template <>
struct F32Arg<const Tensor&> {
  Tensor wide;
  F32Arg(F32StandIns& s, const Tensor& t) : wide(s.of(t)) {}
  const Tensor& get() { return wide; }
  void done(F32StandIns&) {}
};
// A Tensor* (written) or const Tensor* (read), either of which may be null.
template <typename T>
struct F32PointerArg {
  T* original;
  Tensor wide;
  F32PointerArg(F32StandIns& s, T* t) : original(t), wide(t ? s.of(*t) : Tensor()) {}
  T* get() { return original ? &wide : nullptr; }
  void done(F32StandIns& s) {
    if constexpr (!std::is_const_v<T>)
      if (original) s.round_back(*original);
  }
};
template <>
struct F32Arg<Tensor*&> : F32PointerArg<Tensor> {
  using F32PointerArg<Tensor>::F32PointerArg;
};
template <>
struct F32Arg<const Tensor*&> : F32PointerArg<const Tensor> {
  using F32PointerArg<const Tensor>::F32PointerArg;
};

// op(args...) for host bf16 tensors: op runs on their float32 stand-ins (its checks, which the
// caller already ran on the real dtypes, and its kernels then see float32), and what it wrote is
// rounded back.
template <typename Op, typename... Args>
void via_f32(Op&& op, Args&&... args) {
  F32StandIns stand_ins;
  std::tuple<F32Arg<Args>...> wide{F32Arg<Args>(stand_ins, std::forward<Args>(args))...};
  std::apply([&](auto&... a) { op(a.get()...); }, wide);
  std::apply([&](auto&... a) { (a.done(stand_ins), ...); }, wide);
}

// t is a defined, contiguous floating-point tensor: F32, F64 or BF16 on the host (BF16 through
// via_f32), F32 or BF16 on the GPU. The first floating-point argument of an op, whose dtype and
// device the others share.
inline void check_real(const char* op, const char* name, const Tensor& t) {
  const bool host_ok = t.device() == Device::CPU &&
                       (t.dtype() == DType::F32 || t.dtype() == DType::F64 || host_bf16(t));
  const bool cuda_ok =
      t.device() == Device::CUDA && (t.dtype() == DType::F32 || t.dtype() == DType::BF16);
  TESSERA_CHECK(t.defined() && t.is_contiguous() && (host_ok || cuda_ok),
                std::string(op) + ": " + name +
                    " must be a contiguous float32, float64 or bfloat16 tensor on the host, or "
                    "float32 or bfloat16 on cuda; found " +
                    describe(t));
}

inline void check_shape(const char* op, const char* name, const Tensor& t, const Shape& expected) {
  TESSERA_CHECK(t.shape() == expected, std::string(op) + ": " + name + " must have shape " +
                                           shape_str(expected) + ", found " + shape_str(t.shape()));
}

// t is contiguous with ref's dtype and device, and has the given shape.
inline void check_like(const char* op, const char* name, const Tensor& t, const Tensor& ref,
                       const Shape& shape) {
  check_tensor(op, name, t, ref.dtype(), ref.device());
  check_shape(op, name, t, shape);
}

// t holds `rows` rows of `width` elements, contiguous, with ref's dtype and device: its last
// dimension is `width` and its leading shape any whose product is `rows`, since ops treat
// [B, T, C] and [B * T, C] alike.
inline void check_rows(const char* op, const char* name, const Tensor& t, const Tensor& ref,
                       int64_t rows, int64_t width) {
  check_tensor(op, name, t, ref.dtype(), ref.device());
  TESSERA_CHECK(t.dim() >= 1 && t.size(-1) == width && t.numel() == rows * width,
                std::string(op) + ": " + name + " must be " + shape_str({rows, width}) +
                    " (any leading shape), found " + shape_str(t.shape()));
}

// t holds one value per row, in any shape, as a contiguous tensor of `dtype` on ref's device.
inline void check_per_row(const char* op, const char* name, const Tensor& t, DType dtype,
                          const Tensor& ref, int64_t rows) {
  check_tensor(op, name, t, dtype, ref.device());
  TESSERA_CHECK(t.numel() == rows, std::string(op) + ": " + name + " must hold " +
                                       std::to_string(rows) + " values (one per row), found " +
                                       shape_str(t.shape()));
}

// The number of rows of t seen as [rows, t.size(-1)]: the product of its leading dimensions.
inline int64_t leading_rows(const Tensor& t) {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) rows *= t.size(d);
  return rows;
}

// Calls fn(float{}) or fn(double{}) for the dtype, after refusing devices without a backend.
// For ops with no CUDA kernel (yet): a CUDA tensor is refused with a message naming the op.
template <typename Fn>
void dispatch_real(const char* op, DType dtype, Device device, Fn&& fn) {
  TESSERA_CHECK(device == Device::CPU, std::string(op) + ": no CUDA kernel");
  if (dtype == DType::F32) {
    fn(float{});
  } else {
    TESSERA_CHECK(dtype == DType::F64, std::string(op) + ": no kernel for " + dtype_name(dtype));
    fn(double{});
  }
}

// A CUDA tensor reached an op in a build without the CUDA backend.
[[noreturn]] inline void refuse_without_cuda(const char* op) {
  fail_internal(__FILE__, __LINE__,
                std::string(op) + ": tessera was built without CUDA (TESSERA_CUDA=OFF)");
}

// The GPU half of dispatch: on_cuda(float{}) or on_cuda(bf16{}). For an op whose host path is
// written out by its caller (a fused op that is, on the host, its parts in turn).
template <typename CudaFn>
void dispatch_cuda(const char* op, DType dtype, CudaFn&& on_cuda) {
#ifdef TESSERA_WITH_CUDA
  if (dtype == DType::F32) {
    on_cuda(float{});
  } else {
    TESSERA_CHECK(dtype == DType::BF16,
                  std::string(op) + ": no CUDA kernel for " + dtype_name(dtype));
    on_cuda(bf16{});
  }
#else
  (void)dtype;
  (void)on_cuda;
  refuse_without_cuda(op);
#endif
}

// On the host calls on_cpu(float{}) or on_cpu(double{}); on the GPU on_cuda(float{}) or
// on_cuda(bf16{}). Without the CUDA backend on_cuda is never instantiated, so a dispatcher may
// name CUDA kernels that a CPU-only build does not have.
template <typename CpuFn, typename CudaFn>
void dispatch(const char* op, DType dtype, Device device, CpuFn&& on_cpu, CudaFn&& on_cuda) {
  if (device == Device::CPU)
    dispatch_real(op, dtype, device, on_cpu);
  else
    dispatch_cuda(op, dtype, on_cuda);
}

}  // namespace tessera::ops::detail
