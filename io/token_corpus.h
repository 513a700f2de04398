// TokenCorpus: one corpus as the loader reads it, a memory-mapped stream of token ids from
// either format tessera reads: a Megatron-LM indexed dataset (PREFIX.bin + PREFIX.idx) or an
// llm.c token shard (one .bin whose header starts with 20240520). Cheap to copy: copies share
// the mapping, which lives as long as any copy. Nothing per token is held in RAM.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"

namespace tessera {

class IndexedDataset;

class TokenCorpus {
 public:
  // `path` is an llm.c shard file or a Megatron prefix. Throws InputError naming the file for a
  // missing or malformed corpus, and for an empty one. With `parts` > 1 the ranks share the walk
  // over a Megatron index, this one making part `part` of it (IndexedDataset::open).
  static TokenCorpus open(const std::string& path, int part = 0, int parts = 1);

  const std::string& path() const { return path_; }
  const std::string& token_file() const { return token_file_; }  // PREFIX.bin or the shard
  std::string format() const;             // "Megatron indexed dataset" or "llm.c shard"
  DType dtype() const { return dtype_; }  // U16 or I32
  int64_t num_tokens() const { return num_tokens_; }
  int64_t num_documents() const { return num_documents_; }  // -1: the format has no documents

  // Where a message about a token points: "token P", and in a Megatron corpus the document
  // holding it (IndexedDataset::token_place).
  std::string token_place(int64_t pos) const;
  // The id each document ends with, when up to `max_documents` evenly spread ones, at least 2 of
  // them not empty, all end with the same: the end-of-document id of the tokenizer that made the
  // corpus (tessera's encode and Megatron-LM's --append-eod append it). None otherwise, and for an
  // llm.c shard (no documents).
  std::optional<int32_t> document_end_id(int64_t max_documents = 256) const;
  // Tokens [start, start + count) widened to int32.
  void read_tokens(int64_t start, int64_t count, int32_t* out) const;
  // The first of tokens [start, start + count) whose id lies outside [0, vocab), or -1: the
  // vectorised pass of check_token_ids over a range.
  int64_t first_bad_token(int64_t start, int64_t count, int64_t vocab) const;
  // The same among all the tokens, or among max_tokens of them in the 1024 evenly spread runs
  // token_counts reads.
  int64_t first_bad_token_among(int64_t vocab, int64_t max_tokens) const;
  // Throws InputError naming the file and the first offending position when an id lies outside
  // [0, vocab). One vectorised pass over the tokens (about 0.2 s per 10^9 uint16 tokens).
  void check_token_ids(int64_t vocab) const;
  // The same through a record in `cache_dir` (empty: none) of the ids' range, for this version
  // of the token file (its path, size, inode and modification time): a resumed run, or another
  // on the same corpus, reads no token to check them again. Written after a whole pass. With
  // `parts` > 1 and no record, only part `part` of `parts` equal slices is read: the ranks of a
  // run share the pass (the lowest failing one names the first offending position), and this
  // part's range is returned, for the ranks to record the whole with record_id_range. Without
  // `publish`, a whole pass is not recorded either (a check that writes nothing). `on_read`,
  // when given, hears how far the pass is, for a progress line: (0, bytes to read) before it,
  // then (bytes read, bytes to read) after each block of kIdCheckBlock tokens.
  static constexpr int64_t kIdCheckBlock = int64_t{1} << 22;
  using ReadProgress = std::function<void(int64_t done, int64_t total)>;
  struct SliceIds {
    int64_t lo = 0, hi = 0;  // the slice's range of ids (lo > hi: an empty slice)
    std::string key;         // the record's first line, for the file as it was read
    bool replace = false;    // a file of the record's name holds something else
  };
  std::optional<SliceIds> check_token_ids(int64_t vocab, const std::string& cache_dir, int part = 0,
                                          int parts = 1, bool publish = true,
                                          const ReadProgress& on_read = {}) const;
  // Records `whole` (the range of every slice) under its key in `cache_dir`.
  static void record_id_range(const std::string& cache_dir, const SliceIds& whole);
  // Occurrences of each id among all the tokens, or, in a corpus of more than `max_tokens`,
  // among max_tokens of them in 1024 evenly spread runs; the ids counted are checked as by
  // check_token_ids.
  std::vector<int64_t> token_counts(int64_t vocab,
                                    int64_t max_tokens = std::numeric_limits<int64_t>::max()) const;

 private:
  // f(p) with p the tokens as their stored type (const uint16_t* or const int32_t*).
  template <typename F>
  decltype(auto) with_tokens(F&& f) const {
    return dtype_ == DType::U16 ? f(static_cast<const uint16_t*>(tokens_))
                                : f(static_cast<const int32_t*>(tokens_));
  }
  // check_token_ids and token_counts (`count`) over tokens [begin, end), all or max_tokens of
  // them. A refusal of an id says `ids` ("its ids run from 0 to 511; ") when given.
  std::vector<int64_t> scan(int64_t vocab, int64_t begin, int64_t end, int64_t max_tokens,
                            bool count, const std::string& ids = "") const;
  std::string path_, token_file_;
  DType dtype_ = DType::U16;
  const void* tokens_ = nullptr;
  int64_t num_tokens_ = 0, num_documents_ = -1;
  std::shared_ptr<const void> keepalive_;          // the reader that owns the mapping
  std::shared_ptr<const IndexedDataset> dataset_;  // a Megatron corpus's; null: an llm.c shard
};

// True when `a` and `b` read the same token file, by whatever paths (the same inode).
bool same_corpus(const TokenCorpus& a, const TokenCorpus& b);
// What same_corpus compares: the token file's device and inode (none when it cannot be stat'ed),
// for a caller that checks many corpora against each other through a map.
std::optional<std::pair<uint64_t, uint64_t>> token_file_identity(const TokenCorpus& c);

// Entropy in nats/token of the token frequencies of `corpora` mixed with `weights` (normalised):
// the loss of the best model that ignores context. It reads at most about `max_tokens` tokens in
// all, however many and large the corpora: corpus k's frequencies come from max(1024, w_k
// max_tokens) of its tokens when it holds more (TokenCorpus::token_counts), and `sampled` (when
// given) tells whether any did.
inline constexpr int64_t kEntropyTokens = int64_t{1} << 27;
// How messages name that sample: "134 M evenly spread tokens".
inline std::string entropy_sample() {
  return std::to_string(kEntropyTokens / 1000000) + " M evenly spread tokens";
}
double unigram_entropy(const std::vector<TokenCorpus>& corpora, const std::vector<double>& weights,
                       int64_t vocab, int64_t max_tokens = kEntropyTokens, bool* sampled = nullptr);

}  // namespace tessera
