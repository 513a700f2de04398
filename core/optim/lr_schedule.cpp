// Warm-up, then cosine or linear decay; the formula is in lr_schedule.h.
#include "core/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace tessera {

int64_t LRSchedule::cooldown_start() const {
  const auto steps = std::max<int64_t>(
      1, std::llround(cooldown * static_cast<double>(std::max<int64_t>(total_steps, 1))));
  return std::max(total_steps - steps, warmup);  // not before the warm-up ends
}

double LRSchedule::at(int64_t s) const {
  if (s < warmup) return lr * static_cast<double>(s + 1) / static_cast<double>(warmup);
  if (decay == DecayKind::Constant) return lr;
  if (decay == DecayKind::WarmupStableDecay) {
    const int64_t start = cooldown_start();
    if (s < start) return lr;
    if (total_steps <= start) return min_lr;  // past a run that ends in its warm-up
    const double steps = static_cast<double>(total_steps - start);
    return lr - (lr - min_lr) * std::min(static_cast<double>(s - start + 1) / steps, 1.0);
  }
  const double span = static_cast<double>(std::max<int64_t>(1, total_steps - 1 - warmup));
  const double p = std::clamp(static_cast<double>(s - warmup) / span, 0.0, 1.0);
  if (decay == DecayKind::Linear) return lr - (lr - min_lr) * p;
  return min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * p));
}

}  // namespace tessera
