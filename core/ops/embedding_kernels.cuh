// The CUDA embedding kernels, as device code without launchers: core/ops/embedding_cuda.cu
// launches them on the GPU (with CUB's radix sort between the backward's two kernels; its top
// comment says how they work), and tests/test_kernels_emulated.cpp runs the same source on the
// CPU (include tests/simt_emulation.h first for that).
#pragma once

#include <cstdint>

#include "core/cuda_device.cuh"

namespace tessera::ops::cuda::embedding_kernels {
// Internal linkage, as the kernels had in their .cu files: each translation unit, a .cu file or
// the CPU emulation's test, has its own copy.
namespace {

using ::tessera::cuda::from_f32;
using ::tessera::cuda::global_index;
using ::tessera::cuda::to_f32;

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

}  // namespace
}  // namespace tessera::ops::cuda::embedding_kernels
