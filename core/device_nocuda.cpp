// Stand-ins used when tessera is built without the CUDA backend (-DTESSERA_CUDA=OFF).
#include <cstddef>
#include <cstring>
#include <string>

#include "core/device.h"
#include "core/error.h"

namespace tessera {

void* device_malloc(size_t) {
  throw InputError("--train.device cuda: this tessera was built without CUDA (TESSERA_CUDA=OFF)");
}
void device_free(void*, size_t) {}
void select_cuda_device(int) {
  throw InputError("--train.device cuda: this tessera was built without CUDA (TESSERA_CUDA=OFF)");
}
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  TESSERA_CHECK(dst_device == Device::CPU && src_device == Device::CPU,
                "device copy without the CUDA backend");
  if (bytes) std::memcpy(dst, src, bytes);
}
void device_zero(void*, size_t) {
  TESSERA_CHECK(false, "device memory without the CUDA backend");
}
void device_synchronize() {}
size_t device_bytes_in_use() {
  return 0;
}
size_t device_peak_bytes() {
  return 0;
}
size_t device_memory_bytes() {
  return 0;
}
void reset_device_peak() {}
bool cuda_backend_built() {
  return false;
}
int cuda_device_count() {
  return 0;
}
std::string cuda_device_name() {
  return "";
}
std::string cuda_device_bus_id() {
  return "";
}
std::string cuda_summary() {
  return "cuda: not built (TESSERA_CUDA=OFF)";
}

}  // namespace tessera
