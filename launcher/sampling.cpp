// Top-k sampling with temperature over the last position's logits.
#include "launcher/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace tessera {

std::vector<int32_t> generate(GPT& model, std::vector<int32_t> context, const SamplingOptions& o) {
  const ModelConfig& cfg = model.config();
  TESSERA_CHECK(model.shard().tp_size == 1 && model.shard().has_embedding && model.shard().has_head,
                "generate() needs the whole model on one rank");
  const int64_t T = cfg.seq_len, V = cfg.vocab_size;
  if (context.empty()) context.push_back(0);
  GPTActivations a = model.make_activations(1);
  Tensor inputs({1, T}, DType::I32);
  std::vector<int32_t> out;
  std::vector<double> probs(V);
  std::vector<int32_t> order(V);
  const uint64_t stream = name_hash("sampling");
  for (int64_t i = 0; i < o.tokens; ++i) {
    // The last min(T, len) tokens; positions after them are padding the causal mask ignores.
    const int64_t n = std::min<int64_t>(T, static_cast<int64_t>(context.size()));
    inputs.zero();
    std::copy(context.end() - n, context.end(), inputs.data<int32_t>());
    model.forward(a, &inputs, nullptr);
    const float* logits = a.logits.data<float>() + (n - 1) * V;
    std::iota(order.begin(), order.end(), 0);
    const int64_t k = o.top_k > 0 ? std::min(o.top_k, V) : V;
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int32_t x, int32_t y) { return logits[x] > logits[y]; });
    const double top = logits[order[0]];
    double sum = 0;
    for (int64_t j = 0; j < k; ++j)
      sum += probs[j] = std::exp((logits[order[j]] - top) / o.temperature);
    double u = philox_uniform(o.seed, stream, static_cast<uint64_t>(i)) * sum;
    int64_t pick = k - 1;
    for (int64_t j = 0; j < k; ++j) {
      u -= probs[j];
      if (u < 0) {
        pick = j;
        break;
      }
    }
    const int32_t token = order[pick];
    if (token == o.stop_token) break;
    context.push_back(token);
    out.push_back(token);
  }
  return out;
}

}  // namespace tessera
