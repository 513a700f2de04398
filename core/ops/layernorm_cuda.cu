// CUDA LayerNorm, after llm.c's layernorm kernels. One warp per row: the mean, then the biased
// variance, in two passes over the row as the CPU twin does (no E[x^2] - E[x]^2 cancellation),
// always in fp32 whatever the storage type.
//
// The backward is memory-bound and moves rows in packs of kPack neighbouring elements
// (core/ops/cuda_elementwise.cuh), whole-pack accesses where the pointers and C allow, element by
// element otherwise. dinp is written one warp per row: a pass for the row's two means, then a
// pass that re-reads the row (from cache) and adds into dinp. dweight and dbias, sums over rows,
// are summed per fixed chunk of kChunkRows rows and stripe of kStripeColumns columns into a
// scratch buffer, and a finish kernel then adds each column's chunks in chunk order. Every sum
// has an order fixed by N and C alone and there are no floating-point atomics, so the result is
// the same bits on every run. Scratch comes from the stream-ordered allocator, so the backward
// never synchronises the device.
#include <cstdint>

#include "core/cuda_common.cuh"
#include "core/ops/layernorm_cuda.h"
#include "core/ops/layernorm_kernels.cuh"

namespace tessera::ops::cuda {
namespace {

using namespace layernorm_kernels;
using tessera::cuda::blocks_for;
using tessera::cuda::dev;
using tessera::cuda::packable;
using tessera::cuda::StreamScratch;

}  // namespace

template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight,
                       const T* bias, int64_t N, int64_t C) {
  if (N == 0) return;
  layernorm_forward_kernel<<<blocks_for(N, kRowsPerBlock), kThreads, 0,
                             tessera::cuda::compute_stream()>>>(dev(out), mean, rstd, dev(inp),
                                                                dev(weight), dev(bias), N, C);
  CHECK_LAUNCH();
}

template <typename T>
void residual_layernorm_forward(T* residual, T* out, float* mean, float* rstd, const T* a,
                                const T* b, const T* weight, const T* bias, int64_t N, int64_t C) {
  if (N == 0) return;
  residual_layernorm_forward_kernel<<<blocks_for(N, kRowsPerBlock), kThreads, 0,
                                      tessera::cuda::compute_stream()>>>(
      dev(residual), dev(out), mean, rstd, dev(a), dev(b), dev(weight), dev(bias), N, C);
  CHECK_LAUNCH();
}

template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const float* mean, const float* rstd, int64_t N, int64_t C) {
  if (N == 0 || C == 0) return;
  cudaStream_t stream = tessera::cuda::compute_stream();
  // Whole packs need aligned base pointers and rows a whole number of packs long.
  const bool packed = C % kPack == 0 && packable(dev(dinp), dev(dout), dev(inp), dev(weight));
  layernorm_backward_dinp_kernel<<<blocks_for(N, kRowsPerBlock), kThreads, 0, stream>>>(
      dev(dinp), dev(dout), dev(inp), dev(weight), mean, rstd, N, C, packed);
  CHECK_LAUNCH();

  const int64_t chunks = column_sums::chunks_of(N);
  StreamScratch partials(2 * static_cast<size_t>(chunks * C) * sizeof(float));
  float* dweight_part = partials.as<float>();
  float* dbias_part = dweight_part + chunks * C;
  layernorm_param_partials_kernel<<<column_sums::partials_grid(N, C), column_sums::partials_block(),
                                    0, stream>>>(dweight_part, dbias_part, dev(dout), dev(inp),
                                                 mean, rstd, N, C,
                                                 C % kPack == 0 && packable(dev(dout), dev(inp)));
  CHECK_LAUNCH();
  const column_sums::ColumnSums<tessera::cuda::device_t<T>, 2> sums{{dev(dweight), dev(dbias)},
                                                                    {dweight_part, dbias_part}};
  column_sums::
      finish_kernel<<<column_sums::finish_grid(C), column_sums::finish_block(), 0, stream>>>(
          sums, chunks, C);
  CHECK_LAUNCH();
}

#define TESSERA_LAYERNORM_CUDA_INSTANTIATE(T)                                                   \
  template void layernorm_forward<T>(T*, float*, float*, const T*, const T*, const T*, int64_t, \
                                     int64_t);                                                  \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const float*,   \
                                      const float*, int64_t, int64_t);                          \
  template void residual_layernorm_forward<T>(T*, T*, float*, float*, const T*, const T*,       \
                                              const T*, const T*, int64_t, int64_t);
TESSERA_LAYERNORM_CUDA_INSTANTIATE(float)
TESSERA_LAYERNORM_CUDA_INSTANTIATE(bf16)
#undef TESSERA_LAYERNORM_CUDA_INSTANTIATE

}  // namespace tessera::ops::cuda
