// AdamW (Loshchilov & Hutter 2019): Adam with weight decay decoupled from the gradient.
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr * (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * p)
// t is the 1-based step. And the reductions the optimizer needs.
#pragma once

#include "core/tensor.h"

namespace tessera::ops {

struct AdamWStep {
  double lr = 0;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0;  // already 0 for tensors that take no decay
  int64_t t = 1;
};

// On cuda all four tensors are float32 (fp32 master weights and moments).
void adamw_update(Tensor& param, const Tensor& grad, Tensor& exp_avg, Tensor& exp_avg_sq,
                  const AdamWStep& s);

// sum of x^2 in double, summed in a fixed order (deterministic for a given thread count; on cuda,
// x float32 or bfloat16, the same bits on every run). Waits for the GPU to return the value.
double sum_of_squares(const Tensor& x);
// x *= alpha (alpha rounded to x's dtype first on the host, to float on cuda).
void scale(Tensor& x, double alpha);

}  // namespace tessera::ops
