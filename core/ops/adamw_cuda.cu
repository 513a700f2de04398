// CUDA AdamW update and the reductions the optimizer needs. The update is one fused,
// memory-bound pass over (param, grad, m, v) in fp32, with the step's scalar factors computed
// once on the host exactly as the CPU twin computes them; adamw_element spells every operation
// with a round-to-nearest intrinsic so that nvcc cannot contract a multiply and an add into an
// FMA, which keeps it bit-compatible with the CPU loop. The mixed-precision kernel runs the same
// adamw_element and also writes the bf16 copy, saving a cast pass (and the fp32 copy of a bf16
// gradient). sum_of_squares accumulates in double per thread, reduces each block in a fixed tree,
// then sums the block partials in one block: a partition that depends on n only, so every run
// gives the same bits. A list of tensors gets those kernels per tensor, each finishing into its
// own slot, and one copy of the slots back: one wait for the GPU, not one per tensor.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/cuda_common.cuh"
#include "core/ops/adamw_cuda.h"

namespace tessera::ops::cuda {
namespace {

using tessera::cuda::blocks_for;
using tessera::cuda::dev;
using tessera::cuda::from_f32;
using tessera::cuda::global_index;
using tessera::cuda::StreamScratch;
using tessera::cuda::to_f32;

constexpr int kThreads = 256;
// sum_of_squares: at most this many block partials, each from a grid-stride loop.
constexpr int kSumMaxBlocks = 1024;

// The step's scalars as float, as adamw_cpu.cpp computes them for T = float.
struct AdamWFactors {
  float b1, one_minus_b1, b2, one_minus_b2;
  float inv_bc1, inv_bc2;  // bias corrections 1 / (1 - beta^t)
  float lr, eps, wd;
};

// One element of the update: m and v in place; returns the new parameter.
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g g
//   p -= lr (m inv_bc1 / (sqrt(v inv_bc2) + eps) + wd p)
__device__ __forceinline__ float adamw_element(float p, float g, float& m, float& v,
                                               const AdamWFactors& f) {
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
__global__ void sum_partials_kernel(double* result, const double* partial, int count) {
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

// Queues the sum of squares of x[0, n), n > 0, into *result; partial holds kSumMaxBlocks doubles.
template <typename D>
void queue_sum_of_squares(double* result, double* partial, const D* x, int64_t n,
                          cudaStream_t stream) {
  const int blocks = static_cast<int>(
      std::min<int64_t>(static_cast<int64_t>(blocks_for(n, kThreads)), kSumMaxBlocks));
  sum_of_squares_partials_kernel<<<blocks, kThreads, 0, stream>>>(partial, x, n);
  CHECK_LAUNCH();
  sum_partials_kernel<<<1, kSumMaxBlocks, 0, stream>>>(result, partial, blocks);
  CHECK_LAUNCH();
}

AdamWFactors factors_of(const AdamWStep& s) {
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
  return f;
}

}  // namespace

void adamw_update(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n,
                  const AdamWStep& s) {
  if (n == 0) return;
  adamw_kernel<<<blocks_for(n, kThreads), kThreads, 0, tessera::cuda::compute_stream()>>>(
      param, grad, exp_avg, exp_avg_sq, n, factors_of(s));
  CHECK_LAUNCH();
}

template <typename G>
void adamw_update_mixed(float* master, bf16* value, const G* grad, float* exp_avg,
                        float* exp_avg_sq, int64_t n, const AdamWStep& s) {
  if (n == 0) return;
  adamw_mixed_kernel<<<blocks_for(n, kThreads), kThreads, 0, tessera::cuda::compute_stream()>>>(
      master, dev(value), dev(grad), exp_avg, exp_avg_sq, n, factors_of(s));
  CHECK_LAUNCH();
}

std::vector<double> sum_of_squares(const std::vector<SquaresOperand>& xs) {
  std::vector<double> sums(xs.size(), 0.0);
  if (xs.empty()) return sums;
  cudaStream_t stream = tessera::cuda::compute_stream();
  // The kernels run in stream order, so every operand's partials can use the same buffer.
  StreamScratch partials(kSumMaxBlocks * sizeof(double));
  StreamScratch slots(xs.size() * sizeof(double));
  double* partial = partials.as<double>();
  double* slot = slots.as<double>();
  CHECK_CUDA(cudaMemsetAsync(slot, 0, xs.size() * sizeof(double), stream));  // empty operands
  for (size_t i = 0; i < xs.size(); ++i) {
    const SquaresOperand& x = xs[i];
    if (x.n == 0) continue;
    if (x.dtype == DType::BF16)
      queue_sum_of_squares(slot + i, partial, dev(static_cast<const bf16*>(x.data)), x.n, stream);
    else
      queue_sum_of_squares(slot + i, partial, static_cast<const float*>(x.data), x.n, stream);
  }
  CHECK_CUDA(cudaMemcpyAsync(sums.data(), slot, xs.size() * sizeof(double), cudaMemcpyDeviceToHost,
                             stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  return sums;
}

template <typename T>
void scale(T* x, int64_t n, double alpha) {
  if (n == 0) return;
  scale_kernel<<<blocks_for(n, kThreads), kThreads, 0, tessera::cuda::compute_stream()>>>(
      dev(x), n, static_cast<float>(alpha));
  CHECK_LAUNCH();
}

template void adamw_update_mixed<float>(float*, bf16*, const float*, float*, float*, int64_t,
                                        const AdamWStep&);
template void adamw_update_mixed<bf16>(float*, bf16*, const bf16*, float*, float*, int64_t,
                                       const AdamWStep&);
template void scale<float>(float*, int64_t, double);
template void scale<bf16>(bf16*, int64_t, double);

}  // namespace tessera::ops::cuda
