// Cast and accumulate dispatchers: both tensors defined, contiguous, of one shape and on one
// device, with a dtype pair that device has a kernel for; then the host kernel (cast_cpu.cpp) or
// the CUDA one (cast_cuda.cu). Refusals name the op and the dtypes, shapes and devices found.
#include "core/ops/cast.h"

#include <cstdint>
#include <string>

#include "core/ops/cast_cuda.h"
#include "core/ops/cpu_kernels.h"
#include "core/ops/dispatch.h"

namespace tessera::ops {

namespace {

void check_operands(const char* op, const Tensor& dst, const Tensor& src) {
  TESSERA_CHECK(
      dst.defined() && dst.is_contiguous(),
      std::string(op) + ": dst must be a contiguous tensor, found " + detail::describe(dst));
  TESSERA_CHECK(
      src.defined() && src.is_contiguous(),
      std::string(op) + ": src must be a contiguous tensor, found " + detail::describe(src));
  TESSERA_CHECK(dst.device() == src.device(),
                std::string(op) + ": dst and src must be on one device, found dst " +
                    detail::describe(dst) + " and src " + detail::describe(src));
  detail::check_shape(op, "dst", dst, src.shape());
}

bool is_pair(const Tensor& dst, DType to, const Tensor& src, DType from) {
  return dst.dtype() == to && src.dtype() == from;
}

[[noreturn]] void refuse_pair(const Tensor& dst, const Tensor& src, const char* supported) {
  fail_internal(__FILE__, __LINE__,
                "cast: no conversion from " + dtype_name(src.dtype()) + " to " +
                    dtype_name(dst.dtype()) + " on " + device_name(src.device()) +
                    " (there: " + supported + "); found src " + detail::describe(src) + ", dst " +
                    detail::describe(dst));
}

}  // namespace

Tensor cast_to(const Tensor& src, DType dtype) {
  if (src.dtype() == dtype) return src;
  Tensor dst(src.shape(), dtype, src.device());
  cast(dst, src);
  return dst;
}

void cast(Tensor& dst, const Tensor& src) {
  check_operands("cast", dst, src);
  const int64_t n = src.numel();
  const bool f32_f64 =
      is_pair(dst, DType::F64, src, DType::F32) || is_pair(dst, DType::F32, src, DType::F64);
  if (dst.dtype() == src.dtype() || (src.device() == Device::CPU && f32_f64)) {
    copy_into(dst, src);  // bytes, or the host's float32 <-> float64 conversion
  } else if (src.device() == Device::CPU) {
    if (is_pair(dst, DType::BF16, src, DType::F32)) {
      cpu::cast(dst.data<bf16>(), src.data<float>(), n);
    } else if (is_pair(dst, DType::F32, src, DType::BF16)) {
      cpu::cast(dst.data<float>(), src.data<bf16>(), n);
    } else {
      refuse_pair(dst, src, "float32 <-> float64, float32 <-> bfloat16");
    }
  } else {
#ifdef TESSERA_WITH_CUDA
    if (is_pair(dst, DType::BF16, src, DType::F32)) {
      cuda::cast(dst.data<bf16>(), src.data<float>(), n);
    } else if (is_pair(dst, DType::F32, src, DType::BF16)) {
      cuda::cast(dst.data<float>(), src.data<bf16>(), n);
    } else {
      refuse_pair(dst, src, "float32 <-> bfloat16");
    }
#else
    detail::refuse_without_cuda("cast");
#endif
  }
}

void accumulate(Tensor& dst, const Tensor& src) {
  const char* op = "accumulate";
  check_operands(op, dst, src);
  TESSERA_CHECK(dst.dtype() == DType::F32,
                std::string(op) + ": dst must be float32, found " + detail::describe(dst));
  TESSERA_CHECK(
      src.dtype() == DType::F32 || src.dtype() == DType::BF16,
      std::string(op) + ": src must be float32 or bfloat16, found " + detail::describe(src));
  const int64_t n = src.numel();
  const bool from_bf16 = src.dtype() == DType::BF16;
  if (src.device() == Device::CPU) {
    if (from_bf16) {
      cpu::accumulate(dst.data<float>(), src.data<bf16>(), n);
    } else {
      cpu::accumulate(dst.data<float>(), src.data<float>(), n);
    }
  } else {
#ifdef TESSERA_WITH_CUDA
    if (from_bf16) {
      cuda::accumulate(dst.data<float>(), src.data<bf16>(), n);
    } else {
      cuda::accumulate(dst.data<float>(), src.data<float>(), n);
    }
#else
    detail::refuse_without_cuda(op);
#endif
  }
}

}  // namespace tessera::ops
