// Text generation from a trained model: autoregressive sampling with temperature and top-k,
// random numbers from Philox so a seed gives the same text. The model's context window slides
// over the last seq_len tokens. Needs the whole vocabulary on this rank (TP = 1, one stage).
#pragma once

#include <cstdint>
#include <vector>

#include "core/model/gpt.h"

namespace tessera {

struct SamplingOptions {
  int64_t tokens = 100;
  double temperature = 0.8;
  int64_t top_k = 40;  // 0: all
  uint64_t seed = 0;
  int32_t stop_token = -1;  // generation ends early on this token (-1: never)
};

std::vector<int32_t> generate(GPT& model, std::vector<int32_t> prompt, const SamplingOptions& o);

}  // namespace tessera
