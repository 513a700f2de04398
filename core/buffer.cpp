// Host buffers come from aligned_alloc and are zeroed; device buffers from device_malloc
// (device_cuda.cu, or a clear error without the CUDA backend).
#include "core/buffer.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/out_of_memory.h"

namespace tessera {

namespace {
std::atomic<size_t> g_host_bytes{0};
std::atomic<size_t> g_host_peak{0};
constexpr size_t kAlignment = 64;
size_t host_allocation(size_t bytes) {
  size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  return rounded == 0 ? kAlignment : rounded;
}
}  // namespace

// Device allocation lives in device_cuda.cu when the CUDA backend is built (zeroed, like host
// memory); device_nocuda.cpp refuses it.
void* device_malloc(size_t bytes);
void device_free(void* p, size_t bytes);

Buffer::Buffer(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  if (device == Device::CPU) {
    size_t rounded = host_allocation(bytes);
    data_ = std::aligned_alloc(kAlignment, rounded);
    if (!data_)
      throw OutOfMemory("cannot allocate " + memory_size_text(rounded) + " of host memory");
    std::memset(data_, 0, rounded);
    const size_t now = g_host_bytes += rounded;
    size_t peak = g_host_peak.load();
    while (now > peak && !g_host_peak.compare_exchange_weak(peak, now)) {
    }
  } else {
    data_ = device_malloc(bytes);
  }
}

Buffer::~Buffer() {
  if (device_ == Device::CPU) {
    g_host_bytes -= host_allocation(bytes_);
    std::free(data_);
  } else {
    device_free(data_, bytes_);
  }
}

size_t host_bytes_allocated() {
  return g_host_bytes.load();
}

size_t host_peak_bytes() {
  return g_host_peak.load();
}

void reset_host_peak() {
  g_host_peak = g_host_bytes.load();
}

}  // namespace tessera
