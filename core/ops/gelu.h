// GELU, tanh form (Hendrycks & Gimpel 2016, as in GPT-2):
// gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). And the residual add.
#pragma once

#include "core/tensor.h"

namespace tessera::ops {

void gelu_forward(Tensor& out, const Tensor& inp);
// dinp = dout * gelu'(inp) (written, not accumulated: the MLP's backward needs no zeroing pass).
// dinp may be dout itself.
void gelu_backward(Tensor& dinp, const Tensor& dout, const Tensor& inp);

// out = a + b (same shapes).
void residual_forward(Tensor& out, const Tensor& a, const Tensor& b);
// da += dout; db += dout.
void residual_backward(Tensor& da, Tensor& db, const Tensor& dout);

}  // namespace tessera::ops
