// Gradient clipping in place, for a model trained alone in tests (the Trainer and bench_train_step
// hand clip_scale's factor to AdamW::step instead, core/optim/optimizer.h).
#pragma once

#include <vector>

#include "core/communicator.h"
#include "core/model/param.h"
#include "core/ops/adamw.h"
#include "core/optim/optimizer.h"

namespace tessera::test_support {

// Scales all gradients so their global norm is at most max_norm; returns the norm before.
inline double clip_grad_norm(const std::vector<Param*>& params, double max_norm,
                             Communicator& model_parallel) {
  const double norm = global_grad_norm(params, model_parallel);
  if (const double coef = clip_scale(norm, max_norm); coef < 1)
    for (Param* p : params) ops::scale(p->grad, coef);
  return norm;
}

}  // namespace tessera::test_support
