// The CUDA AdamW and optimizer-reduction kernels, as device code without launchers:
// core/ops/adamw_cuda.cu launches them on the GPU (its top comment says what they do), and
// tests/test_kernels_emulated.cpp runs the same source on the CPU (include
// tests/simt_emulation.h first for that).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/cuda_device.cuh"
#include "core/ops/adamw.h"

namespace tessera::ops::cuda::adamw_kernels {
// Internal linkage, as the kernels had in their .cu files: each translation unit, a .cu file or
// the CPU emulation's test, has its own copy.
namespace {

using tessera::cuda::from_f32;
using tessera::cuda::global_index;
using tessera::cuda::to_f32;

constexpr int kThreads = 256;
// sum_of_squares: at most this many block partials, each from a grid-stride loop.
constexpr int kSumMaxBlocks = 1024;

// The step's scalars as float, as adamw_cpu.cpp computes them for T = float.
struct AdamWFactors {
  float b1, one_minus_b1, b2, one_minus_b2;
  float inv_bc1, inv_bc2;  // bias corrections 1 / (1 - beta^t)
  float lr, eps, wd;
  float grad_scale;
};

// One element of the update: m and v in place; returns the new parameter.
//   g = grad_scale grad
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g g
//   p -= lr (m inv_bc1 / (sqrt(v inv_bc2) + eps) + wd p)
__device__ __forceinline__ float adamw_element(float p, float grad, float& m, float& v,
                                               const AdamWFactors& f) {
  const float g = __fmul_rn(grad, f.grad_scale);
  m = __fadd_rn(__fmul_rn(f.b1, m), __fmul_rn(f.one_minus_b1, g));
  v = __fadd_rn(__fmul_rn(f.b2, v), __fmul_rn(__fmul_rn(f.one_minus_b2, g), g));
  const float adam =
      __fdiv_rn(__fmul_rn(m, f.inv_bc1), __fadd_rn(__fsqrt_rn(__fmul_rn(v, f.inv_bc2)), f.eps));
  return __fsub_rn(p, __fmul_rn(f.lr, __fadd_rn(adam, __fmul_rn(f.wd, p))));
}

__global__ void adamw_kernel(float* param, const float* grad, float* exp_avg, float* exp_avg_sq,
                             int64_t n, AdamWFactors f) {
  const int64_t i = global_index();
  if (i >= n) return;
  float m = exp_avg[i], v = exp_avg_sq[i];
  param[i] = adamw_element(param[i], grad[i], m, v, f);
  exp_avg[i] = m;
  exp_avg_sq[i] = v;
}

// value = the updated master rounded to bf16 as cast_cuda.cu rounds it (__float2bfloat16).
template <typename G>
__global__ void adamw_mixed_kernel(float* master, __nv_bfloat16* value, const G* grad,
                                   float* exp_avg, float* exp_avg_sq, int64_t n, AdamWFactors f) {
  const int64_t i = global_index();
  if (i >= n) return;
  float m = exp_avg[i], v = exp_avg_sq[i];
  const float p = adamw_element(master[i], to_f32(grad[i]), m, v, f);
  master[i] = p;
  value[i] = from_f32<__nv_bfloat16>(p);
  exp_avg[i] = m;
  exp_avg_sq[i] = v;
}

// Sums the blockDim.x (a power of two) values of `shared` into shared[0], in a fixed tree.
__device__ void block_tree_sum(double* shared) {
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
    __syncthreads();
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
  }
}

template <typename D>
__global__ void sum_of_squares_partials_kernel(double* partial, const D* x, int64_t n) {
  __shared__ double shared[kThreads];
  double acc = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = global_index(); i < n; i += stride) {
    const double v = to_f32(x[i]);
    acc += v * v;
  }
  shared[threadIdx.x] = acc;
  block_tree_sum(shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = shared[0];
}

// One block of kSumMaxBlocks threads: result[0] = the sum of partial[0, count).
__global__ void __launch_bounds__(kSumMaxBlocks)
    sum_partials_kernel(double* result, const double* partial, int count) {
  __shared__ double shared[kSumMaxBlocks];
  shared[threadIdx.x] = static_cast<int>(threadIdx.x) < count ? partial[threadIdx.x] : 0.0;
  block_tree_sum(shared);
  if (threadIdx.x == 0) result[0] = shared[0];
}

template <typename D>
__global__ void scale_kernel(D* x, int64_t n, float alpha) {
  const int64_t i = global_index();
  if (i < n) x[i] = from_f32<D>(to_f32(x[i]) * alpha);
}

// The step's scalars, computed on the host.
inline AdamWFactors factors_of(const AdamWStep& s) {
  const double steps = static_cast<double>(s.t);
  AdamWFactors f{};
  f.b1 = static_cast<float>(s.beta1);
  f.one_minus_b1 = static_cast<float>(1.0 - s.beta1);
  f.b2 = static_cast<float>(s.beta2);
  f.one_minus_b2 = static_cast<float>(1.0 - s.beta2);
  f.inv_bc1 = static_cast<float>(1.0 / (1.0 - std::pow(s.beta1, steps)));
  f.inv_bc2 = static_cast<float>(1.0 / (1.0 - std::pow(s.beta2, steps)));
  f.lr = static_cast<float>(s.lr);
  f.eps = static_cast<float>(s.eps);
  f.wd = static_cast<float>(s.weight_decay);
  f.grad_scale = static_cast<float>(s.grad_scale);
  return f;
}

}  // namespace
}  // namespace tessera::ops::cuda::adamw_kernels
