// Names of dtypes and devices, as messages and file attributes spell them.
#include "core/dtype.h"

#include <cstring>

namespace tessera {

std::string dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "float32";
    case DType::F64:
      return "float64";
    case DType::BF16:
      return "bfloat16";
    case DType::I32:
      return "int32";
    case DType::U16:
      return "uint16";
  }
  return "?";
}

bf16 to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu))  // NaN: keep it quiet, keep sign
    return bf16{static_cast<uint16_t>((u >> 16) | 0x0040u)};
  u += 0x7FFFu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return bf16{static_cast<uint16_t>(u >> 16)};
}

std::string device_name(Device d) {
  return d == Device::CPU ? "cpu" : "cuda";
}

}  // namespace tessera
