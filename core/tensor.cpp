// Tensor views, copies, fills and the count of non-finite values; bytes move between host and
// device through core/device.h.
#include "core/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/device.h"
#include "core/error.h"

namespace tessera {

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    TESSERA_CHECK(d >= 0, "negative dimension in " + shape_str(s));
    TESSERA_CHECK(!__builtin_mul_overflow(n, d, &n),
                  "shape " + shape_str(s) + " holds more than 2^63 elements");
  }
  return n;
}

static Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

Tensor::Tensor(Shape shape, DType dtype, Device device)
    : shape_(std::move(shape)), dtype_(dtype), device_(device) {
  numel_ = shape_numel(shape_);
  TESSERA_CHECK(
      numel_ <= std::numeric_limits<int64_t>::max() / static_cast<int64_t>(dtype_size(dtype_)),
      "shape " + shape_str(shape_) + " of " + dtype_name(dtype_) + " holds more than 2^63 bytes");
  strides_ = contiguous_strides(shape_);
  buffer_ = std::make_shared<Buffer>(bytes(), device);
  data_ = buffer_->data();
}

int64_t Tensor::size(int64_t d) const {
  if (d < 0) d += dim();
  TESSERA_CHECK(d >= 0 && d < dim(), "dimension out of range for " + shape_str(shape_));
  return shape_[d];
}

bool Tensor::is_contiguous() const {
  return strides_ == contiguous_strides(shape_);
}

template <typename T>
T* Tensor::data() const {
  TESSERA_CHECK(dtype_ == dtype_of<T>(), "tensor holds " + dtype_name(dtype_) + ", accessed as " +
                                             dtype_name(dtype_of<T>()));
  return static_cast<T*>(data_);
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template int32_t* Tensor::data<int32_t>() const;
template uint16_t* Tensor::data<uint16_t>() const;
template bf16* Tensor::data<bf16>() const;

Tensor Tensor::view(Shape shape) const {
  TESSERA_CHECK(is_contiguous(), "view of a non-contiguous tensor");
  TESSERA_CHECK(shape_numel(shape) == numel_,
                "view " + shape_str(shape) + " of a tensor of shape " + shape_str(shape_));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  t.strides_ = contiguous_strides(t.shape_);
  return t;
}

Tensor Tensor::slice0(int64_t begin, int64_t end) const {
  TESSERA_CHECK(
      dim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0],
      "slice [" + std::to_string(begin) + ", " + std::to_string(end) + ") of " + shape_str(shape_));
  Tensor t = *this;
  t.shape_[0] = end - begin;
  t.numel_ = shape_numel(t.shape_);
  t.data_ = static_cast<char*>(data_) + begin * strides_[0] * dtype_size(dtype_);
  return t;
}

Tensor Tensor::clone() const {
  if (!defined()) return Tensor();
  Tensor t(shape_, dtype_, device_);
  copy_into(t, *this);
  return t;
}

Tensor Tensor::to(Device device) const {
  TESSERA_CHECK(is_contiguous(), "to(): copy of a non-contiguous tensor");
  if (!defined()) return Tensor();
  Tensor t(shape_, dtype_, device);
  copy_bytes(t.raw(), device, data_, device_, bytes());
  return t;
}

// Host bytes zeroed in 1 MiB pieces over the OpenMP threads: a large model's gradients are
// hundreds of MB, cleared before every step, and one core writes memory at about half the rate
// of two (docs/PERFORMANCE.md).
static void zero_host(void* data, size_t bytes) {
  constexpr size_t kPiece = size_t{1} << 20;
  const auto pieces = static_cast<int64_t>((bytes + kPiece - 1) / kPiece);
  char* const p = static_cast<char*>(data);
#pragma omp parallel for schedule(static) if (pieces > 1)
  for (int64_t i = 0; i < pieces; ++i) {
    const size_t begin = static_cast<size_t>(i) * kPiece;
    std::memset(p + begin, 0, std::min(kPiece, bytes - begin));
  }
}

void Tensor::zero() {
  TESSERA_CHECK(is_contiguous(), "zero() needs a contiguous tensor");
  if (device_ == Device::CUDA)
    device_zero(data_, bytes());
  else
    zero_host(data_, bytes());
}

void Tensor::fill(double value) {
  TESSERA_CHECK(device_ == Device::CPU, "fill() needs a host tensor");
  switch (dtype_) {
    case DType::F32: {
      float* p = data<float>();
      for (int64_t i = 0; i < numel_; ++i) p[i] = static_cast<float>(value);
      break;
    }
    case DType::F64: {
      double* p = data<double>();
      for (int64_t i = 0; i < numel_; ++i) p[i] = value;
      break;
    }
    case DType::I32: {
      int32_t* p = data<int32_t>();
      for (int64_t i = 0; i < numel_; ++i) p[i] = static_cast<int32_t>(value);
      break;
    }
    default:
      TESSERA_CHECK(false, "fill() of " + dtype_name(dtype_));
  }
}

bool overlaps(const Tensor& a, const Tensor& b) {
  const char* pa = static_cast<const char*>(a.raw());
  const char* pb = static_cast<const char*>(b.raw());
  return a.bytes() > 0 && b.bytes() > 0 && pa < pb + b.bytes() && pb < pa + a.bytes();
}

int64_t count_non_finite(const Tensor& host) {
  TESSERA_CHECK(host.device() == Device::CPU && host.is_contiguous(),
                "count_non_finite: expected a contiguous host tensor");
  const auto count = [&](const auto* v, auto as_double) {
    int64_t n = 0;
    for (int64_t i = 0; i < host.numel(); ++i) n += !std::isfinite(as_double(v[i]));
    return n;
  };
  switch (host.dtype()) {
    case DType::F32:
      return count(host.data<float>(), [](float x) { return static_cast<double>(x); });
    case DType::F64:
      return count(host.data<double>(), [](double x) { return x; });
    case DType::BF16:
      return count(host.data<bf16>(), [](bf16 x) { return static_cast<double>(to_float(x)); });
    default:
      break;
  }
  TESSERA_CHECK(false, "count_non_finite: expected floats, found " + dtype_name(host.dtype()));
  return 0;
}

void copy_into(Tensor& dst, const Tensor& src) {
  TESSERA_CHECK(dst.numel() == src.numel(),
                "copy of " + shape_str(src.shape()) + " into " + shape_str(dst.shape()));
  TESSERA_CHECK(dst.is_contiguous() && src.is_contiguous(), "copy of non-contiguous tensors");
  if (dst.dtype() == src.dtype()) {
    copy_bytes(dst.raw(), dst.device(), src.raw(), src.device(), src.bytes());
    return;
  }
  TESSERA_CHECK(dst.device() == Device::CPU && src.device() == Device::CPU,
                "copy from " + dtype_name(src.dtype()) + " to " + dtype_name(dst.dtype()) +
                    " on the device: use ops::cast");
  if (dst.dtype() == DType::F64 && src.dtype() == DType::F32) {
    const float* s = src.data<float>();
    double* d = dst.data<double>();
    for (int64_t i = 0; i < src.numel(); ++i) d[i] = s[i];
  } else if (dst.dtype() == DType::F32 && src.dtype() == DType::F64) {
    const double* s = src.data<double>();
    float* d = dst.data<float>();
    for (int64_t i = 0; i < src.numel(); ++i) d[i] = static_cast<float>(s[i]);
  } else {
    TESSERA_CHECK(false, "copy from " + dtype_name(src.dtype()) + " to " + dtype_name(dst.dtype()));
  }
}

}  // namespace tessera
