// CPU casts between float32 and bfloat16 (float64 goes through copy_into), and accumulation of
// float32 or bfloat16 into float32: elementwise loops over contiguous arrays, split over OpenMP
// threads. float -> bf16 is tessera::to_bf16 (round to nearest even, NaN stays NaN), the rule the
// GPU's __float2bfloat16 follows, so host and device casts agree bit for bit on every number.
#include <cstdint>

#include "core/dtype.h"
#include "core/ops/cpu_kernels.h"

namespace tessera::ops::cpu {
namespace {

inline void convert(bf16& dst, float src) {
  dst = to_bf16(src);
}
inline void convert(float& dst, bf16 src) {
  dst = to_float(src);
}

inline float widen(float x) {
  return x;
}
inline float widen(bf16 x) {
  return to_float(x);
}

}  // namespace

template <typename Dst, typename Src>
void cast(Dst* dst, const Src* src, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) convert(dst[i], src[i]);
}

template <typename Src>
void accumulate(float* dst, const Src* src, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) dst[i] += widen(src[i]);
}

template void cast<bf16, float>(bf16*, const float*, int64_t);
template void cast<float, bf16>(float*, const bf16*, int64_t);
template void accumulate<float>(float*, const float*, int64_t);
template void accumulate<bf16>(float*, const bf16*, int64_t);

}  // namespace tessera::ops::cpu
