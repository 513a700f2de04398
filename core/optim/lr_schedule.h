// Learning-rate schedule: linear warm-up from lr/warmup to lr over `warmup` steps, then cosine
// or linear decay to min_lr at the last step (as in nanoGPT / Megatron-LM).
#pragma once

#include <cstdint>

namespace tessera {

enum class DecayKind { Cosine, Linear, Constant };

struct LRSchedule {
  double lr = 3e-4;
  double min_lr = 3e-5;
  int64_t warmup = 0;
  int64_t total_steps = 1;
  DecayKind decay = DecayKind::Cosine;

  // The rate of 0-based step s: s < warmup: lr (s+1)/warmup; afterwards, with
  // p = (s - warmup) / max(1, total_steps - 1 - warmup) in [0, 1]:
  // cosine min_lr + (lr - min_lr)(1 + cos(pi p))/2, linear lr - (lr - min_lr) p.
  double at(int64_t s) const;
};

}  // namespace tessera
