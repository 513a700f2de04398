// CPU token and positional embeddings. The table gradient is a scatter-add (several tokens may
// share a row), so instead of atomics it is split over column blocks: each thread adds every
// token's slice of its columns in token order, which gives the same bits for any thread count.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/ops/cpu_kernels.h"

namespace tessera::ops::cpu {

template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* table, int64_t n_tokens,
                       int64_t vocab_start, int64_t rows, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n_tokens; ++i) {
    const int64_t row = static_cast<int64_t>(tokens[i]) - vocab_start;
    T* o = out + i * C;
    if (row >= 0 && row < rows) {
      std::memcpy(o, table + row * C, static_cast<size_t>(C) * sizeof(T));
    } else {
      std::fill(o, o + C, T(0));
    }
  }
}

template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* tokens, int64_t n_tokens,
                        int64_t vocab_start, int64_t rows, int64_t C) {
  parallel_column_blocks(C, [&](int64_t c0, int64_t c1) {
    for (int64_t i = 0; i < n_tokens; ++i) {
      const int64_t row = static_cast<int64_t>(tokens[i]) - vocab_start;
      if (row < 0 || row >= rows) continue;
      T* g = dtable + row * C;
      const T* d = dout + i * C;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) g[c] += d[c];
    }
  });
}

template <typename T>
void positional_forward(T* x, const T* pos, int64_t B, int64_t S, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t bs = 0; bs < B * S; ++bs) {
    T* xr = x + bs * C;
    const T* p = pos + (bs % S) * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) xr[c] += p[c];
  }
}

template <typename T>
void positional_backward(T* dpos, const T* dx, int64_t B, int64_t S, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t s = 0; s < S; ++s) {
    T* g = dpos + s * C;
    for (int64_t b = 0; b < B; ++b) {
      const T* d = dx + (b * S + s) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) g[c] += d[c];
    }
  }
}

template <typename T>
void sinusoidal_table(T* pe, int64_t S, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t c = 0; c < C; c += 2) {
      // Vaswani et al. 2017, section 3.5: the pair (2i, 2i+1) turns at 1 / 10000^(2i/C).
      const double angle = static_cast<double>(s) /
                           std::pow(10000.0, static_cast<double>(c) / static_cast<double>(C));
      pe[s * C + c] = static_cast<T>(std::sin(angle));
      if (c + 1 < C) pe[s * C + c + 1] = static_cast<T>(std::cos(angle));
    }
  }
}

#define TESSERA_EMBEDDING_INSTANTIATE(T)                                                       \
  template void embedding_forward<T>(T*, const int32_t*, const T*, int64_t, int64_t, int64_t,  \
                                     int64_t);                                                 \
  template void embedding_backward<T>(T*, const T*, const int32_t*, int64_t, int64_t, int64_t, \
                                      int64_t);                                                \
  template void positional_forward<T>(T*, const T*, int64_t, int64_t, int64_t);                \
  template void positional_backward<T>(T*, const T*, int64_t, int64_t, int64_t);               \
  template void sinusoidal_table<T>(T*, int64_t, int64_t);
TESSERA_EMBEDDING_INSTANTIATE(float)
TESSERA_EMBEDDING_INSTANTIATE(double)
#undef TESSERA_EMBEDDING_INSTANTIATE

}  // namespace tessera::ops::cpu
