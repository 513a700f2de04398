// Top-k sampling with temperature over the last position's logits, through the pipeline.
#include "launcher/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>

#include "core/error.h"
#include "core/model/param.h"
#include "core/ops/cast.h"
#include "core/rng.h"
#include "io/sentencepiece_tokenizer.h"
#include "parallel/pipeline.h"

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
  // u within rounding of the sum: the last candidate that can be drawn, not one whose probability
  // underflowed to 0 (with top-k 0, the least likely of the whole vocabulary).
  int64_t last = k - 1;
  while (last > 0 && !(probs[static_cast<size_t>(last)] > 0)) --last;
  return order[static_cast<size_t>(last)];
}

// Text with a tokenizer, or when the ids are bytes; token ids otherwise.
bool samples_are_text(const TrainConfig& cfg) {
  return !cfg.tokenizer_model.empty() || ids_are_bytes(cfg);
}

}  // namespace

std::vector<int32_t> generate(GPT& model, Communicator& tp, Communicator& pp,
                              std::vector<int32_t> context, const SamplingOptions& o) {
  const ModelConfig& cfg = model.config();
  TESSERA_CHECK(o.stop_token < cfg.vocab_size,
                "generate(): stop token " + std::to_string(o.stop_token) +
                    " outside the vocabulary of " + std::to_string(cfg.vocab_size));
  const int64_t T = cfg.seq_len, V = cfg.vocab_size;
  // TP rank r holds the logits of ids [V r / tp, V (r + 1) / tp), pieces that differ by one when
  // tp does not divide V: every rank sends a piece of the largest size, and the host keeps the
  // ids each one holds.
  const int tps = tp.size();
  const int64_t piece = (V + tps - 1) / tps, local_v = tp_piece_size(V, tp.rank(), tps);
  const bool last = pp.rank() == pp.size() - 1;
  // The model starts as every document after the first does in the corpus: after an end of
  // document (GPT-2's <|endoftext|>), a prompt or none. A model of ids, with no end to stop at,
  // starts after its prompt alone, or after id 0.
  if (o.stop_token >= 0)
    context.insert(context.begin(), o.stop_token);
  else if (context.empty())
    context.push_back(0);
  // Tensors the communicators move live where the model does (NCCL groups on cuda); the draw
  // itself reads the gathered row on the host.
  const Device dev = cfg.device;
  // One set per model chunk: with the interleaved schedule a token's forward goes round the
  // ring of stages once per chunk (the last stage's output on to the first stage's next chunk).
  std::vector<GPTActivations> acts;
  for (int c = 0; c < model.chunks(); ++c) acts.push_back(model.make_activations(1, c));
  const int previous = previous_stage(pp), next = next_stage(pp);
  Tensor inputs({1, T}, DType::I32), stage_input(model.stage_shape(1), cfg.dtype, dev);
  Tensor local_row({piece}, DType::F32, dev), pieces({piece * tps}, DType::F32, dev);
  local_row.zero();  // the tail of a shorter piece, sent and dropped
  std::vector<float> row(static_cast<size_t>(V));
  Tensor token({1}, DType::I32, dev), host_token({1}, DType::I32);
  std::vector<int32_t> out;
  const uint64_t stream = name_hash("sampling");
  for (int64_t i = 0; i < o.tokens; ++i) {
    // The last min(T, len) tokens; positions after them are padding the causal mask ignores.
    const int64_t n = std::min<int64_t>(T, static_cast<int64_t>(context.size()));
    inputs.zero();
    std::copy(context.end() - n, context.end(), inputs.data<int32_t>());
    for (int c = 0; c < model.chunks(); ++c) {
      GPTActivations& a = acts[static_cast<size_t>(c)];
      const bool embeds = model.has_embedding(c);
      if (!embeds) pp.recv(stage_input, previous);
      model.forward(a, embeds ? &inputs : nullptr, nullptr, embeds ? nullptr : &stage_input);
      if (!model.has_head(c)) pp.send(a.residual.back(), next);
    }
    if (last) {
      const Tensor logits_row = acts.back().logits.slice0(n - 1, n).view({local_v});
      Tensor head = local_row.slice0(0, local_v);
      ops::cast(head, logits_row);  // a copy, or bf16 -> fp32
      tp.all_gather(pieces, local_row);
      const Tensor host_pieces = pieces.to(Device::CPU);
      for (int r = 0; r < tps; ++r) {
        const float* from = host_pieces.data<float>() + r * piece;
        const int64_t begin = tp_piece_begin(V, r, tps), end = tp_piece_begin(V, r + 1, tps);
        std::copy(from, from + (end - begin), row.begin() + begin);
      }
      const double u = philox_uniform(o.seed, stream, static_cast<uint64_t>(i));
      const int64_t drawable = o.vocab_limit > 0 ? std::min(o.vocab_limit, V) : V;
      host_token.data<int32_t>()[0] = draw(row.data(), drawable, o, u);
      copy_into(token, host_token);
    }
    pp.broadcast(token, pp.size() - 1);
    copy_into(host_token, token);
    const int32_t t = host_token.data<int32_t>()[0];
    if (t == o.stop_token) break;
    context.push_back(t);
    out.push_back(t);
  }
  return out;
}

bool ids_are_bytes(const TrainConfig& cfg) {
  return cfg.tokenizer_model.empty() && cfg.model.vocab_size <= kByteLevelVocabMax;
}

std::string prompt_and_continuation_text(const Tokenizer& tokenizer, std::vector<int32_t> prompt,
                                         std::span<const int32_t> continuation) {
  prompt.insert(prompt.end(), continuation.begin(), continuation.end());
  return tokenizer.decode(prompt);
}

void print_sample(const TrainConfig& cfg, GPT& model, Communicator& tp, Communicator& pp,
                  bool root) {
  SamplingOptions so;
  so.tokens = cfg.sample_tokens;
  so.temperature = cfg.sample_temperature;
  so.top_k = cfg.sample_top_k;
  so.seed = cfg.seed;
  const auto heading = [&](size_t tokens) {
    // Fewer than asked for: generation drew the end of a document, where it stops.
    const bool ended = static_cast<int64_t>(tokens) < so.tokens;
    std::printf("sample (%lld tokens%s, temperature %.2f, top-k %lld):\n",
                static_cast<long long>(tokens), ended ? ", up to an end of document" : "",
                cfg.sample_temperature, static_cast<long long>(cfg.sample_top_k));
  };
  if (!samples_are_text(cfg)) {  // no prompt (check_sampling_tokenizer), no end to stop at
    const std::vector<int32_t> sample = generate(model, tp, pp, {}, so);
    if (!root) return;
    heading(sample.size());
    std::string ids = "token ids (no --data.tokenizer to decode them):";
    for (const int32_t id : sample) ids.append(" ").append(std::to_string(id));
    std::printf("%s\n", ids.c_str());
    return;
  }
  // Ids past the tokenizer's vocabulary pad the model's (for TP) and are never drawn.
  const std::unique_ptr<Tokenizer> tokenizer = open_tokenizer(cfg.tokenizer_model);
  // A model whose vocabulary lacks the end-of-document id (a byte-level model of fewer than 257
  // ids) never draws it, and would embed it before the prompt as zeros: it has none.
  if (tokenizer->end_of_document() < cfg.model.vocab_size)
    so.stop_token = tokenizer->end_of_document();
  so.vocab_limit = std::min(tokenizer->vocab_size(), cfg.model.vocab_size);
  const std::vector<int32_t> prompt = tokenizer->encode(cfg.sample_prompt);
  const std::vector<int32_t> sample = generate(model, tp, pp, prompt, so);
  if (root) {
    heading(sample.size());
    // Written whole: the text may hold NUL bytes, where %s would stop.
    const std::string text = prompt_and_continuation_text(*tokenizer, prompt, sample) + "\n";
    std::fwrite(text.data(), 1, text.size(), stdout);
  }
}

std::string tokenizer_note(const TrainConfig& cfg,
                           std::initializer_list<const SampleStream*> streams) {
  if (!samples_are_text(cfg)) return "";
  std::unique_ptr<Tokenizer> tokenizer;
  try {
    tokenizer = open_tokenizer(cfg.tokenizer_model);
  } catch (const InputError&) {
    return "";
  }
  for (const SampleStream* stream : streams)
    for (int k = 0; stream && k < stream->num_corpora(); ++k) {
      std::string note = tokenizer_mismatch(stream->corpus(k), *tokenizer);
      if (note.empty()) continue;
      return note.append(", which decodes this model's samples: if it was encoded with ")
          .append(cfg.tokenizer_model.empty() ? "a SentencePiece model" : "another one")
          .append(", give that as --data.tokenizer");
    }
  return "";
}

void check_sampling_tokenizer(const TrainConfig& cfg) {
  if (!samples_are_text(cfg)) {
    if (!cfg.sample_prompt.empty())
      throw InputError("--sample.prompt: a model of --model.vocab_size " +
                       std::to_string(cfg.model.vocab_size) +
                       " without --data.tokenizer reads token ids, not text (only a byte-level "
                       "model, of at most " +
                       std::to_string(kByteLevelVocabMax) +
                       " ids, needs no tokenizer); give the --data.tokenizer its corpus was "
                       "encoded with, or no prompt");
    return;
  }
  std::unique_ptr<Tokenizer> t;
  try {
    t = open_tokenizer(cfg.tokenizer_model);
  } catch (const InputError& e) {
    throw InputError(std::string("--data.tokenizer: ") + e.what());
  }
  if (!cfg.tokenizer_model.empty() && t->vocab_size() > cfg.model.vocab_size)
    throw InputError("--data.tokenizer " + cfg.tokenizer_model + ": its vocabulary of " +
                     std::to_string(t->vocab_size()) + " ids does not fit --model.vocab_size " +
                     std::to_string(cfg.model.vocab_size));
  // The byte-level tokenizer has 257 ids, more than a model trained on a corpus of fewer may
  // have: its prompt must still be ids the model knows (another would embed as zeros).
  const std::vector<int32_t> prompt = t->encode(cfg.sample_prompt);
  for (size_t i = 0; i < prompt.size(); ++i)
    if (prompt[i] >= cfg.model.vocab_size)
      throw InputError("--sample.prompt: its token " + std::to_string(i) + " is id " +
                       std::to_string(prompt[i]) + " (" +
                       (cfg.tokenizer_model.empty() ? std::string("byte-level")
                                                    : "--data.tokenizer " + cfg.tokenizer_model) +
                       "), beyond --model.vocab_size " + std::to_string(cfg.model.vocab_size) +
                       "; give a prompt of ids below it");
}

}  // namespace tessera
