// Tensor: dtype + shape + strides + device + a pointer into a shared Buffer. Strides count
// elements, not bytes, and are row-major contiguous unless a view says otherwise; all ops here
// require contiguous inputs and check it. Copying a Tensor copies the view, never the data:
// use clone() for a deep copy.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/dtype.h"

namespace tessera {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  // A new zero-filled, contiguous tensor.
  Tensor(Shape shape, DType dtype, Device device = Device::CPU);

  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return numel_; }
  size_t bytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  bool defined() const { return buffer_ != nullptr; }
  bool is_contiguous() const;

  void* raw() const { return data_; }
  template <typename T>
  T* data() const;  // checks that T matches dtype()

  // Same elements, another shape (numel must match; the tensor must be contiguous).
  Tensor view(Shape shape) const;
  // Rows [begin, end) of dimension 0, sharing the buffer.
  Tensor slice0(int64_t begin, int64_t end) const;
  Tensor clone() const;  // same device
  // A contiguous copy on `device` (host <-> GPU, or a copy on the same side).
  Tensor to(Device device) const;
  void zero();
  void fill(double value);

 private:
  std::shared_ptr<Buffer> buffer_;
  void* data_ = nullptr;
  Shape shape_;
  Shape strides_;
  int64_t numel_ = 0;
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
};

// Whether the memory of a and b shares a byte (tensors on one device; empty ones never do).
bool overlaps(const Tensor& a, const Tensor& b);

// The elements of a host tensor of floats (F32, F64, BF16) that are NaN or infinite.
int64_t count_non_finite(const Tensor& host);

// Copies src into dst: bytes when the dtypes agree (any devices), else element by element on the
// host, converting between F32 and F64. Device dtype conversions are ops::cast.
void copy_into(Tensor& dst, const Tensor& src);

}  // namespace tessera
