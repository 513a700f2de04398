// CUDA token and positional embeddings. The forward is a gather, one block per token.
// The table gradient is a scatter-add where several tokens may share a row; rather than float
// atomics (whose order, hence bits, change run to run) the tokens are sorted by row with CUB's
// stable radix sort, and one block per distinct row adds that row's dout rows in token order,
// starting from dtable's value: the same sums in the same order as the CPU twin, so fp32 results
// match it bit for bit. The positional gradient sums the batch in order, one thread per (t, c).
#include <cub/cub.cuh>

#include <climits>
#include <cstdint>
#include <string>

#include "core/cuda_common.cuh"
#include "core/ops/embedding_cuda.h"
#include "core/ops/embedding_kernels.cuh"

namespace tessera::ops::cuda {
namespace {

using namespace embedding_kernels;
using tessera::cuda::blocks_for;
using tessera::cuda::dev;
using tessera::cuda::StreamScratch;

// The number of low bits that hold every key in [0, max_key].
int key_bits(int64_t max_key) {
  int bits = 1;
  while (bits < 32 && (int64_t{1} << bits) <= max_key) ++bits;
  return bits;
}

}  // namespace

template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* table, int64_t n_tokens,
                       int64_t vocab_start, int64_t rows, int64_t C) {
  if (n_tokens == 0 || C == 0) return;
  embedding_forward_kernel<<<static_cast<unsigned>(n_tokens), kThreads, 0,
                             tessera::cuda::compute_stream()>>>(dev(out), tokens, dev(table),
                                                                vocab_start, rows, C);
  CHECK_LAUNCH();
}

template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* tokens, int64_t n_tokens,
                        int64_t vocab_start, int64_t rows, int64_t C) {
  if (n_tokens == 0 || C == 0) return;
  TESSERA_CHECK(
      n_tokens <= INT_MAX && rows < UINT32_MAX,
      "embedding_backward (cuda): at most 2^31 - 1 tokens and 2^32 - 1 table rows, found " +
          std::to_string(n_tokens) + " tokens and " + std::to_string(rows) + " rows");
  cudaStream_t stream = tessera::cuda::compute_stream();
  const int n = static_cast<int>(n_tokens);
  // keys, sorted keys, index, sorted index: four arrays of n 32-bit words.
  StreamScratch arrays(4 * static_cast<size_t>(n) * sizeof(uint32_t));
  uint32_t* keys = arrays.as<uint32_t>();
  uint32_t* sorted_keys = keys + n;
  int32_t* index = reinterpret_cast<int32_t*>(sorted_keys + n);
  int32_t* sorted_index = index + n;
  embedding_sort_keys_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
      keys, index, tokens, n_tokens, vocab_start, rows);
  CHECK_LAUNCH();

  const int end_bit = key_bits(rows);
  size_t temp_bytes = 0;
  CHECK_CUDA(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys, sorted_keys, index,
                                             sorted_index, n, 0, end_bit, stream));
  StreamScratch temp(temp_bytes);
  CHECK_CUDA(cub::DeviceRadixSort::SortPairs(temp.as<void>(), temp_bytes, keys, sorted_keys, index,
                                             sorted_index, n, 0, end_bit, stream));

  embedding_backward_kernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
      dev(dtable), dev(dout), sorted_keys, sorted_index, n_tokens, rows, C);
  CHECK_LAUNCH();
}

template <typename T>
void positional_forward(T* x, const T* pos, int64_t B, int64_t S, int64_t C) {
  if (B * S * C == 0) return;
  TESSERA_CHECK(B <= 65535, "positional_forward (cuda): at most 65535 sequences per batch, found " +
                                std::to_string(B));
  const dim3 grid(blocks_for(S * C, kThreads), static_cast<unsigned>(B));
  positional_forward_kernel<<<grid, kThreads, 0, tessera::cuda::compute_stream()>>>(
      dev(x), dev(pos), S * C);
  CHECK_LAUNCH();
}

template <typename T>
void positional_backward(T* dpos, const T* dx, int64_t B, int64_t S, int64_t C) {
  if (S * C == 0) return;
  positional_backward_kernel<<<blocks_for(S * C, kThreads), kThreads, 0,
                               tessera::cuda::compute_stream()>>>(dev(dpos), dev(dx), B, S * C);
  CHECK_LAUNCH();
}

#define TESSERA_EMBEDDING_CUDA_INSTANTIATE(T)                                                  \
  template void embedding_forward<T>(T*, const int32_t*, const T*, int64_t, int64_t, int64_t,  \
                                     int64_t);                                                 \
  template void embedding_backward<T>(T*, const T*, const int32_t*, int64_t, int64_t, int64_t, \
                                      int64_t);                                                \
  template void positional_forward<T>(T*, const T*, int64_t, int64_t, int64_t);                \
  template void positional_backward<T>(T*, const T*, int64_t, int64_t, int64_t);
TESSERA_EMBEDDING_CUDA_INSTANTIATE(float)
TESSERA_EMBEDDING_CUDA_INSTANTIATE(bf16)
#undef TESSERA_EMBEDDING_CUDA_INSTANTIATE

}  // namespace tessera::ops::cuda
