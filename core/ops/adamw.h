// AdamW (Loshchilov & Hutter 2019): Adam with weight decay decoupled from the gradient.
//   g = grad_scale grad
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr * (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * p)
// t is the 1-based step. grad_scale is gradient clipping's factor, applied in the update's pass
// as llm.c does, instead of a pass of its own over every gradient. And the reductions the
// optimizer needs.
#pragma once

#include <vector>

#include "core/tensor.h"

namespace tessera::ops {

struct AdamWStep {
  double lr = 0;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0;  // already 0 for tensors that take no decay
  int64_t t = 1;
  // Rounded to the update's dtype (float32 for bfloat16), and the gradient multiplied by it in
  // that dtype: the same bits as scale(grad, grad_scale) first for a gradient of that dtype.
  double grad_scale = 1;
};

// On cuda all four tensors are float32 (fp32 master weights and moments).
void adamw_update(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                  const AdamWStep& s);
// The mixed-precision step in one pass: the update of adamw_update on the fp32 master weights,
// then value = master rounded to bfloat16 (to nearest even, as ops::cast). master, exp_avg and
// exp_avg_sq are float32, value bfloat16, grad float32 or bfloat16 (widened exactly), all of one
// shape and device. The same bits as adamw_update(master, grad as float32, exp_avg, exp_avg_sq,
// s) followed by cast(value, master), on either device.
void adamw_update_mixed(Tensor& master, Tensor& value, const Tensor& grad, Tensor& exp_avg,
                        Tensor& exp_avg_sq, const AdamWStep& s);

// sum of x^2 in double, summed in a fixed order (on the host the same bits for any thread
// count; on cuda the same bits on every run). x is float32 or bfloat16 on either device, or float64
// on the host. Waits for the GPU to return the value.
double sum_of_squares(const Tensor& x);
// The sum over xs, in order, of sum_of_squares(x), added in double: the same bits as that loop,
// but with a single wait for the GPU. All of xs on one device, dtypes mixed freely; 0 if empty.
double sum_of_squares(const std::vector<Tensor>& xs);
// x *= alpha (alpha rounded to x's dtype first on the host, to float on cuda and for bf16).
void scale(Tensor& x, double alpha);

}  // namespace tessera::ops
