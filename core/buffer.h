// Buffer: one owning allocation, 64-byte aligned host memory or device memory. Tensors share a
// Buffer through a shared_ptr; the memory is freed when the last Tensor that views it is gone.
// Contents start zeroed on the host.
#pragma once

#include <cstddef>
#include <memory>

#include "core/dtype.h"

namespace tessera {

class Buffer {
 public:
  Buffer(size_t bytes, Device device);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_ = Device::CPU;
};

// Bytes of host memory held by live Buffers now, and the most held at once since the last reset
// (for the test of the memory estimate; the log reports the process's peak RSS).
size_t host_bytes_allocated();
size_t host_peak_bytes();
void reset_host_peak();

}  // namespace tessera
