// Element type conversions, the glue of mixed precision: bf16 compute copies of fp32 master
// weights, fp32 gradients accumulated from bf16 ones. Both tensors on the same device.
#pragma once

#include "core/tensor.h"

namespace tessera::ops {

// dst = src, converted element by element: F32 <-> F64 on the host, F32 <-> BF16 on either
// device (to bf16 rounds to nearest even, as tessera::to_bf16; from bf16 is exact), and a plain
// copy where the dtypes agree. Same shape, same device, contiguous; other pairs are refused.
void cast(Tensor& dst, const Tensor& src);
// A new tensor of `dtype` holding src cast (by the rules of cast), on src's device; src itself
// when it has that dtype already.
Tensor cast_to(const Tensor& src, DType dtype);
// dst += src in fp32: dst is F32, src F32 or BF16, same shape and device, contiguous.
void accumulate(Tensor& dst, const Tensor& src);

}  // namespace tessera::ops
