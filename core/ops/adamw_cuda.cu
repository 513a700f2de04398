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
#include <cstdint>
#include <vector>

#include "core/cuda_common.cuh"
#include "core/ops/adamw_cuda.h"
#include "core/ops/adamw_kernels.cuh"

namespace tessera::ops::cuda {
namespace {

using namespace adamw_kernels;
using tessera::cuda::blocks_for;
using tessera::cuda::dev;
using tessera::cuda::StreamScratch;

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
