// Either corpus format behind one view: a typed pointer to the mapped tokens and their count.
#include "io/token_corpus.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "core/error.h"
#include "io/indexed_dataset.h"
#include "io/llmc_shard.h"

namespace tessera {

namespace {

template <typename T>
void widen(const T* src, int64_t count, int32_t* out) {
  for (int64_t i = 0; i < count; ++i) out[i] = static_cast<int32_t>(src[i]);
}

template <typename T>
bool negative(T x) {
  if constexpr (std::is_signed_v<T>)
    return x < 0;
  else
    return false;
}

// The first position whose id lies outside [0, vocab), or -1: blocks of a vectorisable min/max,
// then a search inside the first bad block.
template <typename T>
int64_t first_bad_id(const T* p, int64_t n, int64_t vocab) {
  constexpr int64_t kBlock = 1 << 16;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    T lo = p[b], hi = p[b];
    for (int64_t i = b; i < e; ++i) {
      lo = p[i] < lo ? p[i] : lo;
      hi = p[i] > hi ? p[i] : hi;
    }
    if (negative(lo) || static_cast<int64_t>(hi) >= vocab)
      for (int64_t i = b; i < e; ++i)
        if (negative(p[i]) || static_cast<int64_t>(p[i]) >= vocab) return i;
  }
  return -1;
}

}  // namespace

TokenCorpus TokenCorpus::open(const std::string& path) {
  TokenCorpus c;
  c.path_ = path;
  if (is_llmc_shard(path)) {
    auto shard = std::make_shared<LlmcShard>(LlmcShard::open(path));
    c.megatron_ = false;
    c.token_file_ = path;
    c.dtype_ = DType::U16;
    c.tokens_ = shard->tokens();
    c.num_tokens_ = shard->num_tokens();
    c.keepalive_ = shard;
    return c;
  }
  auto data = std::make_shared<IndexedDataset>(IndexedDataset::open(path));
  c.dtype_ = data->dtype();
  c.token_file_ = data->bin_path();
  c.tokens_ = data->token_data();
  c.num_tokens_ = data->num_tokens();
  c.num_documents_ = data->num_documents();
  c.keepalive_ = data;
  return c;
}

std::string TokenCorpus::format() const {
  return megatron_ ? "Megatron indexed dataset" : "llm.c shard";
}

void TokenCorpus::read_tokens(int64_t start, int64_t count, int32_t* out) const {
  TESSERA_CHECK(start >= 0 && count >= 0 && start + count <= num_tokens_,
                "TokenCorpus::read_tokens: [" + std::to_string(start) + ", " +
                    std::to_string(start + count) + ") outside " + std::to_string(num_tokens_));
  if (dtype_ == DType::U16)
    widen(static_cast<const uint16_t*>(tokens_) + start, count, out);
  else
    widen(static_cast<const int32_t*>(tokens_) + start, count, out);
}

void TokenCorpus::check_token_ids(int64_t vocab) const {
  int64_t bad = -1;
  int64_t id = 0;
  if (dtype_ == DType::U16) {
    const auto* p = static_cast<const uint16_t*>(tokens_);
    bad = first_bad_id(p, num_tokens_, vocab);
    if (bad >= 0) id = p[bad];
  } else {
    const auto* p = static_cast<const int32_t*>(tokens_);
    bad = first_bad_id(p, num_tokens_, vocab);
    if (bad >= 0) id = p[bad];
  }
  if (bad >= 0)
    throw InputError("corpus " + token_file_ + ": token " + std::to_string(bad) + " has id " +
                     std::to_string(id) + ", expected ids in [0, --model.vocab_size " +
                     std::to_string(vocab) + ") (was it made with another tokenizer?)");
}

std::vector<int64_t> TokenCorpus::token_counts(int64_t vocab) const {
  check_token_ids(vocab);
  std::vector<int64_t> counts(static_cast<size_t>(vocab), 0);
  if (dtype_ == DType::U16) {
    const auto* p = static_cast<const uint16_t*>(tokens_);
    for (int64_t i = 0; i < num_tokens_; ++i) ++counts[p[i]];
  } else {
    const auto* p = static_cast<const int32_t*>(tokens_);
    for (int64_t i = 0; i < num_tokens_; ++i) ++counts[static_cast<size_t>(p[i])];
  }
  return counts;
}

double unigram_entropy(const std::vector<TokenCorpus>& corpora, const std::vector<double>& weights,
                       int64_t vocab) {
  TESSERA_CHECK(corpora.size() == weights.size() && !corpora.empty(),
                "unigram_entropy: one weight per corpus");
  double total_weight = 0;
  for (double w : weights) total_weight += w;
  std::vector<double> p(static_cast<size_t>(vocab), 0.0);
  for (size_t k = 0; k < corpora.size(); ++k) {
    const std::vector<int64_t> counts = corpora[k].token_counts(vocab);
    const double scale = weights[k] / total_weight / static_cast<double>(corpora[k].num_tokens());
    for (int64_t v = 0; v < vocab; ++v) p[v] += scale * static_cast<double>(counts[v]);
  }
  double h = 0;
  for (double x : p)
    if (x > 0) h -= x * std::log(x);
  return h;
}

}  // namespace tessera
