// Text generation from a trained model: autoregressive sampling with temperature and top-k,
// random numbers from Philox so a seed gives the same text. The model's context window slides
// over the last seq_len tokens. Runs on every rank of a TP x PP layout: each stage forwards its
// layers and sends the activations on; the last stage gathers the last position's logits over
// TP (one row of V values, never the whole [T, V]) and draws the token, which the PP group then
// broadcasts, so every rank ends with the same text.
#pragma once

#include <cstdint>
#include <vector>

#include "core/communicator.h"
#include "core/model/gpt.h"

namespace tessera {

struct SamplingOptions {
  int64_t tokens = 100;
  double temperature = 0.8;
  int64_t top_k = 40;  // 0: all
  uint64_t seed = 0;
  int32_t stop_token = -1;  // generation ends early on this token (-1: never)
  // Draw only ids below this (0: the whole vocabulary): a vocabulary padded for TP has ids the
  // tokenizer never makes and cannot decode.
  int64_t vocab_limit = 0;
};

// tp and pp: the model's tensor- and pipeline-parallel groups (size-1 groups for one rank).
// Collective over both; the vocabulary must split evenly over tp.
std::vector<int32_t> generate(GPT& model, Communicator& tp, Communicator& pp,
                              std::vector<int32_t> prompt, const SamplingOptions& o);

}  // namespace tessera
