// Element types and devices a Tensor can hold. fp32 is the CPU compute type; fp64 exists so
// that tests can check every op's gradient against finite differences in double precision;
// bf16 is the GPU compute type (issue: GPU backend); int32/uint16 hold token ids.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace tessera {

enum class DType : uint8_t { F32, F64, BF16, I32, U16 };
enum class Device : uint8_t { CPU, CUDA };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64:
      return 8;
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::BF16:
    case DType::U16:
      return 2;
  }
  return 0;
}

std::string dtype_name(DType t);
std::string device_name(Device d);

// The dtype of per-row statistics (LayerNorm mean and rstd, attention's log-sum-exp,
// cross-entropy losses and lse) of a computation in `compute` on `device`: float32 on the GPU
// and for bf16 anywhere (fp32 statistics under bf16), else the compute type.
constexpr DType row_stats_dtype(Device device, DType compute) {
  return device == Device::CUDA || compute == DType::BF16 ? DType::F32 : compute;
}

// A bfloat16 value as stored: the upper 16 bits of an IEEE float32. Host code only moves and
// converts these: arithmetic on them happens in CUDA kernels (as __nv_bfloat16, same layout),
// and host ops on bf16 tensors compute in float32 (core/ops/dispatch.h, via_f32).
struct bf16 {
  uint16_t bits = 0;
};
// Round to nearest even, as __float2bfloat16 does; NaN stays NaN.
bf16 to_bf16(float x);
inline float to_float(bf16 x) {
  const uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  __builtin_memcpy(&f, &u, sizeof f);
  return f;
}

template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<bf16>() {
  return DType::BF16;
}
template <>
constexpr DType dtype_of<float>() {
  return DType::F32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::F64;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::I32;
}
template <>
constexpr DType dtype_of<uint16_t>() {
  return DType::U16;
}

}  // namespace tessera
