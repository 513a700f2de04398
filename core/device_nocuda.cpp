// Stand-ins used when tessera is built without the CUDA backend (-DTESSERA_CUDA=OFF).
#include <cstddef>
#include <string>

#include "core/device.h"
#include "core/error.h"

namespace tessera {

void* device_malloc(size_t) {
  throw InputError("--train.device cuda: this tessera was built without CUDA (TESSERA_CUDA=OFF)");
}
void device_free(void*) {}
bool cuda_backend_built() {
  return false;
}
int cuda_device_count() {
  return 0;
}
std::string cuda_summary() {
  return "cuda: not built (TESSERA_CUDA=OFF)";
}

}  // namespace tessera
