// CUDA phases of vocab-parallel softmax cross-entropy (contract in cross_entropy_cuda.h). Rows
// hold up to ~50k logits: one block of 256 threads per row streams it with fp32 math and a
// block reduction whose order is fixed (warp shuffles, then the warps' results in warp order),
// so results are bitwise reproducible. The sum of exponentials is kept in float per thread
// (~200 terms of at most 1 each) and reduced across threads in double, as the CPU twin's is.
// The probabilities are never stored: the backward recomputes them from the saved lse.
// Faster later: 16-byte vector loads, and the max and sum-of-exp fused into one online pass
// (which the all-reduce of the max between them rules out across shards, not within one).
#include "core/ops/cross_entropy_cuda.h"

#include <string>

#include "core/cuda_common.cuh"
#include "core/ops/cross_entropy_kernels.cuh"

namespace tessera::ops::cuda {
namespace {

using namespace cross_entropy_kernels;
using ::tessera::cuda::dev;

unsigned rows_grid(int64_t M) {
  TESSERA_CHECK(M < (int64_t{1} << 31), "cross_entropy (cuda): " + std::to_string(M) +
                                            " rows exceed the grid of one block per row");
  return static_cast<unsigned>(M);
}

}  // namespace

template <typename T>
void cross_entropy_row_max(float* row_max, const T* logits, int64_t M, int64_t V) {
  if (M == 0) return;
  cross_entropy_row_max_kernel<<<rows_grid(M), kThreads, 0, ::tessera::cuda::compute_stream()>>>(
      row_max, dev(logits), V);
  CHECK_LAUNCH();
}

template <typename T>
void cross_entropy_partials(double* sumexp, double* target_logit, int32_t* first_bad,
                            const T* logits, const float* gmax, const int32_t* targets, int64_t M,
                            int64_t V, int64_t vocab_start, int64_t vocab_end) {
  if (M == 0) return;
  cross_entropy_partials_kernel<<<rows_grid(M), kThreads, 0, ::tessera::cuda::compute_stream()>>>(
      sumexp, target_logit, first_bad, dev(logits), gmax, targets, M, V, vocab_start, vocab_end);
  CHECK_LAUNCH();
}

void cross_entropy_finish(float* losses, float* lse, const float* gmax, const double* sumexp,
                          const double* target_logit, int64_t M) {
  if (M == 0) return;
  cross_entropy_finish_kernel<<<::tessera::cuda::blocks_for(M, kThreads), kThreads, 0,
                                ::tessera::cuda::compute_stream()>>>(losses, lse, gmax, sumexp,
                                                                     target_logit, M);
  CHECK_LAUNCH();
}

template <typename T>
void cross_entropy_backward(T* dlogits, const float* dlosses, const T* logits, const float* lse,
                            const int32_t* targets, int64_t M, int64_t V, int64_t vocab_start) {
  if (M == 0) return;
  cross_entropy_backward_kernel<<<rows_grid(M), kThreads, 0, ::tessera::cuda::compute_stream()>>>(
      dev(dlogits), dlosses, dev(logits), lse, targets, V, vocab_start);
  CHECK_LAUNCH();
}

#define TESSERA_CROSS_ENTROPY_CUDA_INSTANTIATE(T)                                              \
  template void cross_entropy_row_max<T>(float*, const T*, int64_t, int64_t);                  \
  template void cross_entropy_partials<T>(double*, double*, int32_t*, const T*, const float*,  \
                                          const int32_t*, int64_t, int64_t, int64_t, int64_t); \
  template void cross_entropy_backward<T>(T*, const float*, const T*, const float*,            \
                                          const int32_t*, int64_t, int64_t, int64_t);
TESSERA_CROSS_ENTROPY_CUDA_INSTANTIATE(float)
TESSERA_CROSS_ENTROPY_CUDA_INSTANTIATE(bf16)
#undef TESSERA_CROSS_ENTROPY_CUDA_INSTANTIATE

}  // namespace tessera::ops::cuda
