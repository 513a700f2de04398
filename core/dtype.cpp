// Names of dtypes and devices, as messages and file attributes spell them.
#include "core/dtype.h"

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

std::string device_name(Device d) {
  return d == Device::CPU ? "cpu" : "cuda";
}

}  // namespace tessera
