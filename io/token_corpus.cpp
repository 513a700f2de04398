// Either corpus format behind one view: a typed pointer to the mapped tokens and their count.
#include "io/token_corpus.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <tuple>

#include "core/error.h"
#include "core/rng.h"
#include "io/cache_file.h"
#include "io/file_kind.h"
#include "io/indexed_dataset.h"
#include "io/llmc_shard.h"

namespace tessera {

namespace {

template <typename T>
void widen(const T* src, int64_t count, int32_t* out) {
  for (int64_t i = 0; i < count; ++i) out[i] = static_cast<int32_t>(src[i]);
}

// The smallest and largest id of p[0, n) (n > 0), in a loop the compiler vectorises.
template <typename T>
std::pair<int64_t, int64_t> id_range(const T* p, int64_t n) {
  T lo = p[0], hi = p[0];
  for (int64_t i = 0; i < n; ++i) {
    lo = p[i] < lo ? p[i] : lo;
    hi = p[i] > hi ? p[i] : hi;
  }
  return {static_cast<int64_t>(lo), static_cast<int64_t>(hi)};
}

// The first position whose id lies outside [0, vocab), or -1: blocks of id_range, then a search
// inside the first bad block.
template <typename T>
int64_t first_bad_id(const T* p, int64_t n, int64_t vocab) {
  constexpr int64_t kBlock = 1 << 16;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    const auto [lo, hi] = id_range(p + b, e - b);
    if (lo < 0 || hi >= vocab)
      for (int64_t i = b; i < e; ++i)
        if (static_cast<int64_t>(p[i]) < 0 || static_cast<int64_t>(p[i]) >= vocab) return i;
  }
  return -1;
}

}  // namespace

TokenCorpus TokenCorpus::open(const std::string& path, int part, int parts) {
  TokenCorpus c;
  c.path_ = path;
  if (is_llmc_shard(path)) {
    auto shard = std::make_shared<LlmcShard>(LlmcShard::open(path));
    c.token_file_ = path;
    c.dtype_ = DType::U16;
    c.tokens_ = shard->tokens();
    c.num_tokens_ = shard->num_tokens();
    c.keepalive_ = shard;
    return c;
  }
  auto data = std::make_shared<IndexedDataset>(IndexedDataset::open(path, part, parts));
  c.dtype_ = data->dtype();
  c.token_file_ = data->bin_path();
  c.tokens_ = data->token_data();
  c.num_tokens_ = data->num_tokens();
  c.num_documents_ = data->num_documents();
  c.keepalive_ = data;
  c.dataset_ = data;
  return c;
}

std::string TokenCorpus::token_place(int64_t pos) const {
  return dataset_ ? dataset_->token_place(pos) : "token " + std::to_string(pos);
}

std::string TokenCorpus::format() const {
  return dataset_ ? "Megatron indexed dataset" : "llm.c shard";
}

std::optional<int32_t> TokenCorpus::document_end_id(int64_t max_documents) const {
  const int64_t n = dataset_ ? dataset_->num_documents() : 0, read = std::min(n, max_documents);
  if (read < 2) return std::nullopt;
  std::optional<int32_t> id;
  int64_t ends = 0;
  for (int64_t i = 0; i < read; ++i) {
    // Evenly spread, the first and the last included (n < 2^55: no overflow).
    const int64_t last = dataset_->document_last_token(i * (n - 1) / (read - 1));
    if (last < 0) continue;
    int32_t t;
    read_tokens(last, 1, &t);
    if (id && t != *id) return std::nullopt;
    id = t;
    ++ends;
  }
  return ends >= 2 ? id : std::nullopt;
}

void TokenCorpus::read_tokens(int64_t start, int64_t count, int32_t* out) const {
  // Written so that no sum can overflow, whatever the arguments.
  TESSERA_CHECK(start >= 0 && count >= 0 && start <= num_tokens_ && count <= num_tokens_ - start,
                "TokenCorpus::read_tokens: " + std::to_string(count) + " tokens from " +
                    std::to_string(start) + " outside " + std::to_string(num_tokens_));
  with_tokens([&](const auto* p) { widen(p + start, count, out); });
}

int64_t TokenCorpus::first_bad_token(int64_t start, int64_t count, int64_t vocab) const {
  TESSERA_CHECK(start >= 0 && count >= 0 && start <= num_tokens_ && count <= num_tokens_ - start,
                "TokenCorpus::first_bad_token: range outside the corpus");
  const int64_t bad =
      with_tokens([&](const auto* p) { return first_bad_id(p + start, count, vocab); });
  return bad < 0 ? -1 : start + bad;
}

namespace {

// f(start, count) for the runs of tokens a scan of [begin, end) reads: all of them, or
// max_tokens of them in kRuns evenly spread runs.
template <typename F>
void for_each_spread_run(int64_t begin, int64_t end, int64_t max_tokens, F&& f) {
  constexpr int64_t kRuns = 1024;
  const int64_t n = end - begin;
  const bool all = n <= max_tokens || max_tokens < kRuns;
  const int64_t runs = all ? 1 : kRuns, run = all ? n : max_tokens / kRuns;
  for (int64_t r = 0; r < runs; ++r) f(begin + (all ? 0 : (n - run) / (kRuns - 1) * r), run);
}

}  // namespace

int64_t TokenCorpus::first_bad_token_among(int64_t vocab, int64_t max_tokens) const {
  int64_t bad = -1;
  for_each_spread_run(0, num_tokens_, max_tokens, [&](int64_t start, int64_t run) {
    if (bad < 0) bad = first_bad_token(start, run, vocab);
  });
  return bad;
}

std::vector<int64_t> TokenCorpus::scan(int64_t vocab, int64_t begin, int64_t end,
                                       int64_t max_tokens, bool count,
                                       const std::string& ids) const {
  std::vector<int64_t> counts(count ? static_cast<size_t>(vocab) : 0, 0);
  for_each_spread_run(begin, end, max_tokens, [&](int64_t start, int64_t run) {
    const int64_t bad = first_bad_token(start, run, vocab);
    if (bad >= 0)
      throw InputError("corpus " + token_file_ + ": " + token_place(bad) + " has id " +
                       std::to_string(with_tokens([&](const auto* p) { return int64_t{p[bad]}; })) +
                       ", expected ids in [0, --model.vocab_size " + std::to_string(vocab) + ") (" +
                       ids + "was it made with another tokenizer?)");
    if (count)
      with_tokens([&](const auto* p) {
        for (int64_t i = start; i < start + run; ++i) ++counts[static_cast<size_t>(p[i])];
      });
  });
  return counts;
}

namespace {

// For a refusal: the range of the ids read, so that one more run finds the vocabulary they need.
std::string ids_run(const char* which, int64_t lo, int64_t hi) {
  return std::string(which) + " run from " + std::to_string(lo) + " to " + std::to_string(hi) +
         "; ";
}

}  // namespace

void TokenCorpus::check_token_ids(int64_t vocab) const {
  const auto [lo, hi] = with_tokens([&](const auto* p) { return id_range(p, num_tokens_); });
  if (lo < 0 || hi >= vocab)
    scan(vocab, 0, num_tokens_, num_tokens_, false, ids_run("its ids", lo, hi));
}

namespace {

// The id-check record of a token file in a cache directory: its first line, what identifies this
// version of the file (path, size, inode, modification time), and its path. An empty key when
// there is no cache directory or the file cannot be examined.
struct IdRecord {
  std::string key;
  std::filesystem::path path;
};

std::filesystem::path id_record_path(const std::string& cache_dir, const std::string& key) {
  char name[64];
  std::snprintf(name, sizeof name, "ids_v1_%016llx.txt",
                static_cast<unsigned long long>(name_hash(key)));
  return std::filesystem::path(cache_dir) / name;
}

IdRecord id_record(const std::string& token_file, const std::string& cache_dir) {
  namespace fs = std::filesystem;
  struct stat st {};
  if (cache_dir.empty() || ::stat(token_file.c_str(), &st) != 0) return {};
  char stamp[160];
  std::snprintf(stamp, sizeof stamp, " size %lld inode %llu mtime %lld.%09ld",
                static_cast<long long>(st.st_size), static_cast<unsigned long long>(st.st_ino),
                static_cast<long long>(st.st_mtim.tv_sec), st.st_mtim.tv_nsec);
  IdRecord r;
  r.key = fs::absolute(token_file).lexically_normal().string() + stamp;
  r.path = id_record_path(cache_dir, r.key);
  return r;
}

void publish_id_record(const IdRecord& r, int64_t lo, int64_t hi, bool replace) {
  const std::string text =
      r.key + "\nids " + std::to_string(lo) + " .. " + std::to_string(hi) + "\n";
  publish_cache_file(r.path.string(), text.data(), text.size(), replace);
}

}  // namespace

std::optional<TokenCorpus::SliceIds> TokenCorpus::check_token_ids(
    int64_t vocab, const std::string& cache_dir, int part, int parts, bool publish,
    const ReadProgress& on_read) const {
  // The ids of this rank's slice (the whole file for one part), checked: their range, or an
  // InputError naming the first offending position.
  const auto slice = [&]() -> std::pair<int64_t, int64_t> {
    const auto [begin, end] = part_of(num_tokens_, part, parts);
    const int64_t size = end - begin;
    if (size == 0)
      return {std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min()};
    // Block by block, for the progress line.
    const auto token_bytes = static_cast<int64_t>(dtype_size(dtype_));
    if (on_read) on_read(0, size * token_bytes);
    std::pair<int64_t, int64_t> range = {std::numeric_limits<int64_t>::max(),
                                         std::numeric_limits<int64_t>::min()};
    for (int64_t b = begin; b < end; b += kIdCheckBlock) {
      const int64_t n = std::min(end - b, kIdCheckBlock);
      const auto [lo, hi] = with_tokens([&](const auto* p) { return id_range(p + b, n); });
      range = {std::min(range.first, lo), std::max(range.second, hi)};
      if (on_read) on_read((b + n - begin) * token_bytes, size * token_bytes);
    }
    if (range.first >= 0 && range.second < vocab) return range;
    try {
      scan(vocab, begin, begin + size, size, false,
           ids_run(parts == 1 ? "its ids" : "the ids of the tokens this rank read", range.first,
                   range.second));
    } catch (const InputError& e) {
      if (parts == 1) throw;
      throw SharedInputError(std::string(e.what()) +
                             shared_part_note("tokens", num_tokens_, part, parts));
    }
    return range;
  };
  const IdRecord record = id_record(token_file_, cache_dir);
  int64_t lo = 0, hi = -1;
  bool other = false;  // a file of that name for another key (or damaged): replaced
  if (!record.key.empty() && !non_regular_kind(record.path).empty()) {
    other = true;  // a FIFO would block the read; the record's publication replaces it
  } else if (!record.key.empty()) {
    std::ifstream in(record.path);
    std::string line;
    long long a = 0, b = 0;
    if (std::getline(in, line) && line == record.key && std::getline(in, line) &&
        std::sscanf(line.c_str(), "ids %lld .. %lld", &a, &b) == 2 && a <= b)
      lo = a, hi = b;
    else
      other = in.is_open();
  }
  if (hi >= lo) {               // recorded: no token read unless an id is out of range
    if (lo < 0 || hi >= vocab)  // names the first offending position
      scan(vocab, 0, num_tokens_, num_tokens_, false, ids_run("its ids", lo, hi));
    return std::nullopt;
  }
  const std::pair<int64_t, int64_t> range = slice();
  if (record.key.empty() || !publish) return std::nullopt;
  if (parts > 1)  // the record of the whole waits for every rank's part
    return SliceIds{range.first, range.second, record.key, other};
  publish_id_record(record, range.first, range.second, other);
  return std::nullopt;
}

void TokenCorpus::record_id_range(const std::string& cache_dir, const SliceIds& whole) {
  publish_id_record({whole.key, id_record_path(cache_dir, whole.key)}, whole.lo, whole.hi,
                    whole.replace);
}

std::vector<int64_t> TokenCorpus::token_counts(int64_t vocab, int64_t max_tokens) const {
  return scan(vocab, 0, num_tokens_, max_tokens, true);
}

std::optional<std::pair<uint64_t, uint64_t>> token_file_identity(const TokenCorpus& c) {
  return file_identity(c.token_file());
}

bool same_corpus(const TokenCorpus& a, const TokenCorpus& b) {
  const auto x = token_file_identity(a);
  return x && x == token_file_identity(b);
}

double unigram_entropy(const std::vector<TokenCorpus>& corpora, const std::vector<double>& weights,
                       int64_t vocab, int64_t max_tokens, bool* sampled) {
  TESSERA_CHECK(corpora.size() == weights.size() && !corpora.empty(),
                "unigram_entropy: one weight per corpus");
  double total_weight = 0;
  for (double w : weights) total_weight += w;
  std::vector<double> p(static_cast<size_t>(vocab), 0.0);
  if (sampled) *sampled = false;
  for (size_t k = 0; k < corpora.size(); ++k) {
    // The budget shared by weight (a blend of thousands of corpora reads no more than one), at
    // least one token of each of the 1024 runs token_counts spreads.
    const int64_t budget = std::max<int64_t>(
        1024, std::llround(static_cast<double>(max_tokens) * weights[k] / total_weight));
    if (sampled && corpora[k].num_tokens() > budget) *sampled = true;
    const std::vector<int64_t> counts = corpora[k].token_counts(vocab, budget);
    int64_t counted = 0;
    for (int64_t c : counts) counted += c;
    const double scale = weights[k] / total_weight / static_cast<double>(counted);
    for (int64_t v = 0; v < vocab; ++v) p[v] += scale * static_cast<double>(counts[v]);
  }
  double h = 0;
  for (double x : p)
    if (x > 0) h -= x * std::log(x);
  return h;
}

}  // namespace tessera
