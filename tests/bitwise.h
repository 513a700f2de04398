// bitwise_equal: two tensors, on the host or a GPU, hold the same bytes (the same shape in
// elements of the same size). For results that must repeat exactly: reruns, fused ops against
// their compositions, resumes.
#pragma once

#include <cstring>

#include "core/tensor.h"

namespace tessera::test_support {

inline bool bitwise_equal(const Tensor& a, const Tensor& b) {
  const Tensor ha = a.to(Device::CPU), hb = b.to(Device::CPU);
  return ha.bytes() == hb.bytes() && std::memcmp(ha.raw(), hb.raw(), ha.bytes()) == 0;
}

}  // namespace tessera::test_support
