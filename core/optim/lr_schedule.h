// Learning-rate schedule: linear warm-up from lr/warmup to lr over `warmup` steps, then cosine
// or linear decay to min_lr at the last step (as in nanoGPT / Megatron-LM).
#pragma once

#include <cstdint>

namespace tessera {

enum class DecayKind { Cosine, Linear, Constant, WarmupStableDecay };

struct LRSchedule {
  double lr = 3e-4;
  double min_lr = 3e-5;
  int64_t warmup = 0;
  int64_t total_steps = 1;
  DecayKind decay = DecayKind::Cosine;
  // WarmupStableDecay: the fraction of total_steps (at least one step) at the end of the run in
  // which the rate falls linearly to min_lr; before it, after warm-up, it stays at lr.
  double cooldown = 0.2;

  // The rate of 0-based step s: s < warmup: lr (s+1)/warmup; afterwards, with
  // p = (s - warmup) / max(1, total_steps - 1 - warmup) in [0, 1]:
  // cosine min_lr + (lr - min_lr)(1 + cos(pi p))/2, linear lr - (lr - min_lr) p. Warmup-stable-
  // decay (MiniCPM, Hu et al. 2024): lr until the cool-down's start S, the later of the last
  // max(1, round(cooldown total_steps)) steps and the warm-up's end, then lr - (lr - min_lr) p
  // with p = (s - S + 1) / (total_steps - S): part of the way down at its first step, min_lr at
  // the last.
  double at(int64_t s) const;
  // S, the first step of WarmupStableDecay's cool-down.
  int64_t cooldown_start() const;
};

}  // namespace tessera
