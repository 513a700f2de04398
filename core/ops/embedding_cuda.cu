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

namespace tessera::ops::cuda {
namespace {

using tessera::cuda::blocks_for;
using tessera::cuda::dev;
using tessera::cuda::from_f32;
using tessera::cuda::global_index;
using tessera::cuda::StreamScratch;
using tessera::cuda::to_f32;

constexpr int kThreads = 256;

// One block per token: its row of the table, or zeros for a token of another shard.
template <typename D>
__global__ void embedding_forward_kernel(D* out, const int32_t* tokens, const D* table,
                                         int64_t vocab_start, int64_t rows, int64_t C) {
  const int64_t token = blockIdx.x;
  const int64_t row = static_cast<int64_t>(tokens[token]) - vocab_start;
  D* o = out + token * C;
  if (row >= 0 && row < rows) {
    const D* t = table + row * C;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) o[c] = t[c];
  } else {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) o[c] = from_f32<D>(0.0f);
  }
}

// The sort's input: key = the token's row in this shard, or `rows` (sorted last, then skipped)
// for a token of another shard; value = the token's index.
__global__ void embedding_sort_keys_kernel(uint32_t* keys, int32_t* index, const int32_t* tokens,
                                           int64_t n_tokens, int64_t vocab_start, int64_t rows) {
  const int64_t i = global_index();
  if (i >= n_tokens) return;
  const int64_t row = static_cast<int64_t>(tokens[i]) - vocab_start;
  keys[i] = static_cast<uint32_t>(row >= 0 && row < rows ? row : rows);
  index[i] = static_cast<int32_t>(i);
}

// One block per sorted position p. The block at the first token of a row adds all of that row's
// tokens (sorted[p, end), in token order since the sort is stable) onto dtable's row; the blocks
// at the other positions, and at tokens of other shards, return at once.
template <typename D>
__global__ void embedding_backward_kernel(D* dtable, const D* dout, const uint32_t* sorted_keys,
                                          const int32_t* sorted_index, int64_t n_tokens,
                                          int64_t rows, int64_t C) {
  const int64_t p = blockIdx.x;
  const uint32_t key = sorted_keys[p];
  if (key == static_cast<uint32_t>(rows) || (p > 0 && sorted_keys[p - 1] == key)) return;
  int64_t end = p + 1;
  while (end < n_tokens && sorted_keys[end] == key) ++end;
  D* g = dtable + static_cast<int64_t>(key) * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = to_f32(g[c]);
#pragma unroll 4
    for (int64_t q = p; q < end; ++q)
      acc += to_f32(dout[static_cast<int64_t>(sorted_index[q]) * C + c]);
    g[c] = from_f32<D>(acc);
  }
}

// Thread (i, b) adds pos element i (of S * C) to batch row b.
template <typename D>
__global__ void positional_forward_kernel(D* x, const D* pos, int64_t SC) {
  const int64_t i = global_index();
  if (i >= SC) return;
  D* xb = x + static_cast<int64_t>(blockIdx.y) * SC;
  xb[i] = from_f32<D>(to_f32(xb[i]) + to_f32(pos[i]));
}

// One thread per element of dpos[0:S]: adds dx[0..B) in batch order, as the CPU twin does.
template <typename D>
__global__ void positional_backward_kernel(D* dpos, const D* dx, int64_t B, int64_t SC) {
  const int64_t i = global_index();
  if (i >= SC) return;
  float acc = to_f32(dpos[i]);
  for (int64_t b = 0; b < B; ++b) acc += to_f32(dx[b * SC + i]);
  dpos[i] = from_f32<D>(acc);
}

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
