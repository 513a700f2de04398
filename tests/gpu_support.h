// What the GPU tests share: random host tensors, copies to and from the GPU, comparisons of a
// CUDA result with its CPU twin's at a stated tolerance, guards for the kernel settings a test
// picks, and the names of dtype-parameterised tests. The test binary (test_gpu.cpp) runs only
// where a GPU is present and exits 77 (skipped) elsewhere.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>

#include "core/ops/attention.h"
#include "core/ops/cast.h"
#include "core/ops/matmul.h"
#include "core/tensor.h"

namespace tessera::gpu_test {

// A host F32 tensor of N(0, stddev) values from `seed`.
inline Tensor random_host(const Shape& shape, uint64_t seed, double stddev = 1.0) {
  Tensor t(shape, DType::F32);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, static_cast<float>(stddev));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

// The host F32 tensor on the GPU as `dtype` (F32 or BF16).
inline Tensor to_gpu(const Tensor& host_f32, DType dtype) {
  Tensor d = host_f32.to(Device::CUDA);
  if (dtype == DType::F32) return d;
  Tensor r(host_f32.shape(), dtype, Device::CUDA);
  ops::cast(r, d);
  return r;
}

// A GPU tensor (F32 or BF16) back on the host as F32.
inline Tensor to_host_f32(const Tensor& gpu) {
  Tensor f32 = gpu;
  if (gpu.dtype() != DType::F32) {
    f32 = Tensor(gpu.shape(), DType::F32, Device::CUDA);
    ops::cast(f32, gpu);
  }
  return f32.to(Device::CPU);
}

// The GPU tensor's values in a view that starts one element into a larger buffer: its address
// is aligned to the element size only, which rules out vector accesses, cp.async and cuBLASLt's
// kernels for 16-byte aligned operands.
inline Tensor misaligned_copy(const Tensor& gpu) {
  Tensor buffer({gpu.numel() + 1}, gpu.dtype(), Device::CUDA);
  Tensor view = buffer.slice0(1, gpu.numel() + 1).view(gpu.shape());
  copy_into(view, gpu);
  return view;
}

// The host tensor rounded through bf16 and back: the CPU twin's input when the GPU computes in
// bf16, so that both start from the same values.
inline Tensor round_to_bf16(const Tensor& host_f32) {
  Tensor r = host_f32.clone();
  for (int64_t i = 0; i < r.numel(); ++i)
    r.data<float>()[i] = to_float(to_bf16(r.data<float>()[i]));
  return r;
}

// Every element within atol + rtol * |expected|; reports the worst element.
inline void expect_close(const Tensor& actual, const Tensor& expected, double atol, double rtol,
                         const std::string& what) {
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  Tensor a(actual.shape(), DType::F64), e(expected.shape(), DType::F64);
  copy_into(a, actual);
  copy_into(e, expected);
  double worst = 0;
  int64_t at = -1;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double x = a.data<double>()[i], y = e.data<double>()[i];
    const double excess = std::abs(x - y) - (atol + rtol * std::abs(y));
    if (!(excess <= 0) && (at < 0 || excess > worst || std::isnan(x))) {
      worst = std::isnan(excess) ? INFINITY : excess;
      at = i;
    }
  }
  EXPECT_LT(at, 0) << what << ": element " << at << " is " << (at >= 0 ? a.data<double>()[at] : 0)
                   << ", expected " << (at >= 0 ? e.data<double>()[at] : 0) << " (atol " << atol
                   << ", rtol " << rtol << ")";
}

// A process-wide kernel setting (get, set) changed for one test and restored after it: later
// tests of the binary expect the defaults.
template <typename T, T (*Get)(), void (*Set)(T)>
class ScopedSetting {
 public:
  explicit ScopedSetting(T value) : saved_(Get()) { Set(value); }
  ~ScopedSetting() { Set(saved_); }
  ScopedSetting(const ScopedSetting&) = delete;
  ScopedSetting& operator=(const ScopedSetting&) = delete;

 private:
  T saved_;
};
// The bf16 attention kernels, and the DGELU epilogue on or off, for one test.
using Bf16AttentionKernels = ScopedSetting<ops::AttentionKernels, ops::bf16_attention_kernels,
                                           ops::set_bf16_attention_kernels>;
using DgeluEpilogue = ScopedSetting<bool, ops::dgelu_epilogue, ops::set_dgelu_epilogue>;

// The name of a dtype-parameterised test instance: the dtype's name ("float32", ...).
inline std::string dtype_test_name(const ::testing::TestParamInfo<DType>& info) {
  return dtype_name(info.param);
}

}  // namespace tessera::gpu_test
