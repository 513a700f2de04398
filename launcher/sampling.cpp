// Top-k sampling with temperature over the last position's logits, through the pipeline.
#include "launcher/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace tessera {

namespace {

// Index drawn from the top-k of logits[0..V) at `temperature`, from uniform u in [0, 1).
int32_t draw(const float* logits, int64_t V, const SamplingOptions& o, double u) {
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  const int64_t k = o.top_k > 0 ? std::min(o.top_k, V) : V;
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int32_t x, int32_t y) { return logits[x] > logits[y]; });
  const double top = logits[order[0]];
  std::vector<double> probs(static_cast<size_t>(k));
  double sum = 0;
  for (int64_t j = 0; j < k; ++j)
    sum += probs[static_cast<size_t>(j)] = std::exp((logits[order[j]] - top) / o.temperature);
  u *= sum;
  for (int64_t j = 0; j < k; ++j) {
    u -= probs[static_cast<size_t>(j)];
    if (u < 0) return order[static_cast<size_t>(j)];
  }
  return order[static_cast<size_t>(k - 1)];
}

}  // namespace

std::vector<int32_t> generate(GPT& model, Communicator& tp, Communicator& pp,
                              std::vector<int32_t> context, const SamplingOptions& o) {
  const ModelConfig& cfg = model.config();
  TESSERA_CHECK(cfg.dtype == DType::F32, "generate() samples from float32 logits");
  TESSERA_CHECK(cfg.vocab_size % tp.size() == 0, "generate(): the vocabulary must split evenly");
  const int64_t T = cfg.seq_len, V = cfg.vocab_size, local_v = V / tp.size();
  const bool first = pp.rank() == 0, last = pp.rank() == pp.size() - 1;
  if (context.empty()) context.push_back(0);
  GPTActivations a = model.make_activations(1);
  Tensor inputs({1, T}, DType::I32), stage_input({1, T, cfg.d_model}, cfg.dtype);
  Tensor local_row({local_v}, DType::F32), row({V}, DType::F32), token({1}, DType::I32);
  std::vector<int32_t> out;
  const uint64_t stream = name_hash("sampling");
  for (int64_t i = 0; i < o.tokens; ++i) {
    // The last min(T, len) tokens; positions after them are padding the causal mask ignores.
    const int64_t n = std::min<int64_t>(T, static_cast<int64_t>(context.size()));
    inputs.zero();
    std::copy(context.end() - n, context.end(), inputs.data<int32_t>());
    if (!first) pp.recv(stage_input, pp.rank() - 1);
    model.forward(a, first ? &inputs : nullptr, nullptr, first ? nullptr : &stage_input);
    if (!last) pp.send(a.residual.back(), pp.rank() + 1);
    if (last) {
      std::memcpy(local_row.data<float>(), a.logits.data<float>() + (n - 1) * local_v,
                  static_cast<size_t>(local_v) * sizeof(float));
      tp.all_gather(row, local_row);
      const double u = philox_uniform(o.seed, stream, static_cast<uint64_t>(i));
      const int64_t drawable = o.vocab_limit > 0 ? std::min(o.vocab_limit, V) : V;
      token.data<int32_t>()[0] = draw(row.data<float>(), drawable, o, u);
    }
    pp.broadcast(token, pp.size() - 1);
    const int32_t t = token.data<int32_t>()[0];
    if (t == o.stop_token) break;
    context.push_back(t);
    out.push_back(t);
  }
  return out;
}

}  // namespace tessera
