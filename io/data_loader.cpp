// Blended, shuffled samples over memory-mapped corpora, read ahead on a background thread.
#include "io/data_loader.h"

#include <glob.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <map>
#include <sstream>

#include "core/error.h"
#include "core/number_text.h"
#include "core/rng.h"
#include "io/llmc_shard.h"
#include "io/sample_permutation.h"

namespace tessera {

namespace {

// A decimal number, as a weight (not hexadecimal, infinite or NaN; beyond a double's range:
// infinite or 0, which the caller refuses).
bool read_weight(const std::string& word, double& w) {
  return word.find_first_not_of("0123456789.eE+-") == std::string::npos &&
         reads_as_number(word, &w);
}

// Whether PATH names a corpus as written: PATH, PATH.bin or PATH.idx exists.
bool names_a_corpus(const std::string& path) {
  std::error_code ec;
  for (const char* ext : {"", ".bin", ".idx"})
    if (std::filesystem::exists(path + ext, ec)) return true;
  return false;
}

// A path holding *, ? or [ that names no corpus as it is.
bool is_glob(const std::string& path) {
  return path.find_first_of("*?[") != std::string::npos && !names_a_corpus(path);
}

// The corpora a glob matches, sorted: each llm.c shard, and each Megatron corpus once (PREFIX for
// PREFIX.bin or PREFIX.idx); a .bin without its .idx is left for TokenCorpus::open to judge.
// Part files (.tmp: an encode under way beside the corpora, or one killed) are no corpora.
std::vector<std::string> expand_glob(const std::string& pattern, const std::string& option) {
  glob_t found{};
  const int code = ::glob(pattern.c_str(), GLOB_NOSORT | GLOB_ERR, nullptr, &found);
  std::vector<std::string> files(found.gl_pathv, found.gl_pathv + found.gl_pathc);
  globfree(&found);
  if (code != 0 && code != GLOB_NOMATCH)
    throw InputError(option + ": " + pattern + ": " +
                     (code == GLOB_ABORTED ? "a directory it reads cannot be read"
                                           : "out of memory expanding it"));
  if (files.empty()) throw InputError(option + ": " + pattern + " matches no file");
  std::erase_if(files, [](const std::string& f) { return f.ends_with(".tmp"); });
  if (files.empty())
    throw InputError(option + ": " + pattern + " matches only part files (.tmp), no corpus");
  std::sort(files.begin(), files.end());
  std::vector<std::string> corpora;
  std::error_code ec;
  for (const std::string& f : files) {
    std::string corpus = f;
    if (f.ends_with(".idx") || (f.ends_with(".bin") && !is_llmc_shard(f) &&
                                std::filesystem::exists(f.substr(0, f.size() - 4) + ".idx", ec)))
      corpus = f.substr(0, f.size() - 4);
    if (std::find(corpora.begin(), corpora.end(), corpus) == corpora.end())
      corpora.push_back(corpus);
  }
  return corpora;
}

}  // namespace

std::vector<CorpusWeight> parse_corpus_blend(const std::string& text, const std::string& option) {
  if (std::count(text.begin(), text.end(), '"') % 2 != 0)
    throw InputError(option + ": expected a path with spaces in a pair of double quotes, found " +
                     "an unmatched \" in " + text);
  std::istringstream in(text);
  std::vector<std::string> words;
  // Quotes group, nothing escapes: a backslash in a path is a backslash.
  for (std::string w; in >> std::quoted(w, '"', '\0');) words.push_back(w);
  if (words.empty()) throw InputError(option + ": expected a corpus path, found nothing");
  for (const std::string& w : words)
    if (w.empty())
      throw InputError(option + ": expected corpus paths, found an empty one (\"\") in " + text);
  // The paths as written, each with its weight. A first word that reads as a number makes pairs
  // of weights and paths; else every word is a path, and together they are one group.
  std::vector<std::pair<double, std::string>> listed;
  const bool weighted = words.size() > 1 && reads_as_number(words[0]);
  const bool list = words.size() > 1 && !weighted;
  if (!weighted) {
    for (const std::string& word : words) {
      if (list && reads_as_number(word))
        throw InputError(option + ": expected paths, or pairs \"WEIGHT PATH ...\", found the " +
                         "number " + word + " among paths in \"" + text + "\"");
      listed.push_back({1.0, word});
    }
  } else {
    if (words.size() % 2 != 0)
      throw InputError(option + ": expected PATH or pairs \"WEIGHT PATH ...\", found " +
                       std::to_string(words.size()) + " words in \"" + text + "\"");
    for (size_t i = 0; i < words.size(); i += 2) {
      double w = 0;
      const bool number = read_weight(words[i], w);
      if (!number || !(w > 0) || !std::isfinite(w))
        throw InputError(option + ": expected a positive weight before " + words[i + 1] +
                         ", found \"" + words[i] + "\"" +
                         (!number  ? " (a path with spaces goes in double quotes)"
                          : w == 0 ? " (a corpus of weight 0 draws no samples: leave it out)"
                                   : ""));
      // "2023 2024" of corpora 2023 and 2024 would train on 2024 alone, weighted 2023.
      if (names_a_corpus(words[i]))
        throw InputError(option + ": \"" + words[i] + "\" reads as the weight of " + words[i + 1] +
                         ", but it is also a corpus' name; write corpora as paths that read as "
                         "no number (./" +
                         words[i] + "), or the weight so that it names no file");
      listed.push_back({w, words[i + 1]});
    }
  }
  double total = 0;
  for (const auto& [weight, path] : listed) total += weight;
  if (!std::isfinite(total)) {  // weights near DBL_MAX: relative to the largest, then summed
    double largest = 0;
    for (const auto& [weight, path] : listed) largest = std::max(largest, weight);
    total = 0;
    for (auto& [weight, path] : listed) total += weight /= largest;
  }
  std::vector<CorpusWeight> blend;
  for (size_t i = 0; i < listed.size(); ++i) {
    const auto& [weight, path] = listed[i];
    // The blend counts positions in doubles, exact up to 2^53: a share below 2^-53 is never
    // drawn (blend_weights checks each corpus of a group again).
    if (weight / total < 0x1p-53)
      throw InputError(option + ": weight " + words[2 * i] + " of " + path +
                       " is less than 2^-53 of the weights' sum: no sample would ever be drawn "
                       "from it; raise it or leave the corpus out");
    // Paths without weights are one group, of all the weight; a glob is a group of its own.
    const bool glob = is_glob(path);
    const int group = list ? 0 : glob ? static_cast<int>(i) : -1;
    const double share = list ? 1.0 : weight / total;
    if (!glob) {
      blend.push_back({share, path, group, "", list});
    } else {
      for (const std::string& corpus : expand_glob(path, option))
        blend.push_back({share, corpus, group, path, list});
    }
  }
  return blend;
}

std::vector<double> blend_weights(const std::vector<CorpusWeight>& blend,
                                  const std::vector<TokenCorpus>& corpora,
                                  const std::string& option) {
  TESSERA_CHECK(blend.size() == corpora.size(), "blend_weights: one corpus per blend entry");
  std::map<int, double> group_tokens;
  for (size_t i = 0; i < blend.size(); ++i)
    if (blend[i].group >= 0)
      group_tokens[blend[i].group] += static_cast<double>(corpora[i].num_tokens());
  std::vector<double> weights;
  for (size_t i = 0; i < blend.size(); ++i) {
    const CorpusWeight& c = blend[i];
    weights.push_back(c.group < 0 ? c.weight
                                  : c.weight * static_cast<double>(corpora[i].num_tokens()) /
                                        group_tokens.at(c.group));
    if (weights.back() < 0x1p-53)
      throw InputError(option + ": " + c.named() +
                       " gets less than 2^-53 of the blend by its tokens: no sample would ever "
                       "be drawn from it; raise its weight or leave it out");
  }
  return weights;
}

// --- SampleStream -----------------------------------------------------------------------------

SampleStream::SampleStream(std::vector<TokenCorpus> corpora, std::vector<double> weights,
                           const SampleOptions& options)
    : corpora_(std::move(corpora)), weights_(std::move(weights)), opt_(options) {
  TESSERA_CHECK(!corpora_.empty() && (weights_.empty() || corpora_.size() == weights_.size()),
                "SampleStream: one weight per corpus, or none");
  const bool by_samples = weights_.empty();
  const int64_t T = opt_.seq_len;
  for (const TokenCorpus& c : corpora_) {
    const int64_t n = (c.num_tokens() - 1) / T;
    if (n < 1)
      throw InputError("corpus " + c.path() +
                       ": expected at least seq_len + 1 = " + std::to_string(T + 1) +
                       " tokens for one sample, found " + std::to_string(c.num_tokens()));
    // At least one sample is held out when asked for, as long as one is left for training.
    const int64_t held =
        opt_.valid_fraction > 0 && n >= 2
            ? std::max<int64_t>(
                  1, static_cast<int64_t>(std::floor(static_cast<double>(n) * opt_.valid_fraction)))
            : 0;
    const int64_t first = opt_.valid_split ? n - held : 0;
    const int64_t count = opt_.valid_split ? held : n - held;
    // floor(n f) < n for f < 1, so that at least one sample is left for training.
    TESSERA_CHECK(opt_.valid_split || count >= 1,
                  "corpus " + c.path() + ": all " + std::to_string(n) + " samples held out");
    first_.push_back(first);
    count_.push_back(count);
    if (by_samples) weights_.push_back(static_cast<double>(count));
  }
  // A validation blend draws from the corpora that hold samples out, by their weights.
  double total = 0;
  for (size_t k = 0; k < corpora_.size(); ++k) {
    if (count_[k] < 1) weights_[k] = 0;
    total += weights_[k];
  }
  if (!(total > 0))
    throw InputError(
        "--data.valid_fraction: no corpus holds out a validation sample (each needs "
        "at least two samples of " +
        std::to_string(T + 1) + " tokens); use --data.valid_path or --data.valid_fraction 0");
  for (double& w : weights_) w /= total;
  shuffle_.resize(corpora_.size());
}

// The corpus whose supply lags its share the most, w_k (n + 1) - taken_k, first on ties (the
// greedy rule of Megatron-LM's blending). The lags sum to 1 before each draw, so the one drawn
// lags by at least 1/K: after every prefix of n, taken_k < n w_k + 1, and (the lags summing to 0
// after the draw) taken_k > n w_k - (K - 1). Measured: within 1.35 of n w_k (DATA.md).
int SampleStream::next_corpus(Cursor& c) const {
  if (c.taken.empty()) c.taken.assign(corpora_.size(), 0);
  int best = 0;
  double best_lag = -1e300;
  const double n = static_cast<double>(c.position + 1);
  for (size_t k = 0; k < corpora_.size(); ++k) {
    const double lag = weights_[k] * n - static_cast<double>(c.taken[k]);
    if (lag > best_lag) best_lag = lag, best = static_cast<int>(k);
  }
  ++c.taken[static_cast<size_t>(best)];
  ++c.position;
  return best;
}

std::string SampleStream::sequence_key() const {
  // The shuffle first: a checkpoint of a tessera that shuffled otherwise lacks this part.
  std::string key = "order: a Feistel permutation (12 rounds, SplitMix64) per corpus and epoch; ";
  for (size_t k = 0; k < corpora_.size(); ++k) {
    char part[200];
    std::snprintf(part, sizeof part,
                  "%scorpus %zu of %zu: %lld tokens, samples [%lld, %lld) of %lld + 1 tokens, "
                  "weight %.17g",
                  k > 0 ? "; " : "", k + 1, corpora_.size(),
                  static_cast<long long>(corpora_[k].num_tokens()),
                  static_cast<long long>(first_[k]), static_cast<long long>(first_[k] + count_[k]),
                  static_cast<long long>(opt_.seq_len), weights_[k]);
    key += part;
  }
  return key;
}

SampleStream::Cursor SampleStream::cursor_at(int64_t position) const {
  Cursor c;
  c.taken.assign(corpora_.size(), 0);
  if (corpora_.size() == 1) {
    c.taken[0] = position;
    c.position = position;
    return c;
  }
  while (c.position < position) next_corpus(c);
  return c;
}

SampleStream::Cursor SampleStream::cursor_from(int64_t position, const std::vector<int64_t>& taken,
                                               const std::string& what) const {
  const size_t behind = std::max<size_t>(1, corpora_.size() - 1);  // the most a corpus lags
  const auto fail = [&](const std::string& found) {
    throw InputError(what + ": expected the samples each of the blend's " +
                     std::to_string(corpora_.size()) +
                     (corpora_.size() == 1 ? " corpus" : " corpora") +
                     " had supplied by position " + std::to_string(position) +
                     " (summing to it, each less than its share + 1 and more than its share - " +
                     std::to_string(behind) + "), found " + found);
  };
  if (taken.size() != corpora_.size()) fail(std::to_string(taken.size()) + " counts");
  int64_t sum = 0;
  for (size_t k = 0; k < taken.size(); ++k) {
    // The bounds next_corpus keeps, with room for the rounding of the share.
    const double share = weights_[k] * static_cast<double>(position);
    const double ahead = static_cast<double>(taken[k]) - share;
    const double slack = 1e-9 * std::max(1.0, share);
    if (taken[k] < 0 || ahead >= 1 + slack || -ahead >= static_cast<double>(behind) + slack) {
      char text[120];
      std::snprintf(text, sizeof text, "%lld for corpus %zu, whose share is %.17g",
                    static_cast<long long>(taken[k]), k + 1, share);
      fail(text);
    }
    sum += taken[k];
  }
  if (sum != position) fail("counts summing to " + std::to_string(sum));
  return Cursor{position, taken};
}

uint64_t SampleStream::epoch_stream(int k, int64_t epoch) {
  return name_hash("tessera.samples/" + std::to_string(k)) + static_cast<uint64_t>(epoch);
}

void SampleStream::read(int k, int64_t j, int32_t* out) {
  const auto kk = static_cast<size_t>(k);
  const int64_t n = count_[kk], epoch = j / n, at = j % n;
  int64_t sample = at;
  if (opt_.shuffle) {
    std::optional<Shuffle>& s = shuffle_[kk];
    if (!s || s->epoch != epoch)
      s.emplace(Shuffle{epoch, SamplePermutation(n, opt_.seed, epoch_stream(k, epoch))});
    sample = s->order(at);
  }
  const int64_t start = (first_[kk] + sample) * opt_.seq_len, length = opt_.seq_len + 1;
  corpora_[kk].read_tokens(start, length, out);
  if (opt_.vocab_size <= 0) return;
  const int64_t bad = corpora_[kk].first_bad_token(start, length, opt_.vocab_size);
  if (bad < 0) return;
  throw InputError("corpus " + corpora_[kk].token_file() + ": " + corpora_[kk].token_place(bad) +
                   " has id " + std::to_string(out[bad - start]) +
                   ", expected ids in [0, --model.vocab_size " + std::to_string(opt_.vocab_size) +
                   ") (found as training read it: the file changed after the check before "
                   "training, or that check's record in --data.cache_dir is wrong; delete it)");
}

// --- DataLoader -------------------------------------------------------------------------------

DataLoader::DataLoader(SampleStream& stream, int dp_rank, int dp_size, int64_t micro_batch,
                       int prefetch)
    : stream_(stream),
      dp_rank_(dp_rank),
      dp_size_(dp_size),
      micro_batch_(micro_batch),
      prefetch_(prefetch) {
  TESSERA_CHECK(dp_size > 0 && dp_rank >= 0 && dp_rank < dp_size && micro_batch > 0,
                "DataLoader: bad data-parallel rank or micro batch");
  set_state(LoaderState{0, stream.seed(), {}});
}

DataLoader::~DataLoader() {
  stop_thread();
}

// One batch: the next micro_batch x dp_size positions, of which this rank takes every dp_size-th.
void DataLoader::produce(SampleStream::Cursor& c, Tensor& out) {
  const int64_t T = stream_.seq_len();
  out = Tensor({micro_batch_, T + 1}, DType::I32);
  int32_t* rows = out.data<int32_t>();
  for (int64_t b = 0; b < micro_batch_; ++b)
    for (int r = 0; r < dp_size_; ++r) {
      const int k = stream_.next_corpus(c);
      if (r == dp_rank_) stream_.read(k, c.taken[static_cast<size_t>(k)] - 1, rows + b * (T + 1));
    }
}

// Each side wakes the other only when it sleeps: a batch of a few microseconds' work must not
// pay a thread wake-up every time.
void DataLoader::run_prefetch(SampleStream::Cursor c) {
  try {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (!stop_ && static_cast<int>(ready_.size()) >= prefetch_) {
          producer_waiting_ = true;
          cv_.wait(lock, [&] { return stop_ || static_cast<int>(ready_.size()) < prefetch_; });
          producer_waiting_ = false;
        }
        if (stop_) return;
      }
      Tensor batch;
      produce(c, batch);
      std::lock_guard<std::mutex> lock(mu_);
      ready_.push_back(std::move(batch));
      if (consumer_waiting_) cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = std::current_exception();
    cv_.notify_all();
  }
}

void DataLoader::start_thread(const SampleStream::Cursor& from) {
  stop_ = false;
  error_ = nullptr;
  ready_.clear();
  try {
    thread_ = std::thread([this, from] { run_prefetch(from); });
  } catch (...) {  // no thread to be had: the next batch says so, where it would wait forever
    error_ = std::current_exception();
  }
}

void DataLoader::stop_thread() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  thread_.join();
}

void DataLoader::next_batch(Tensor& tokens) {
  if (prefetch_ == 0) {
    produce(cursor_, tokens);
  } else {
    std::unique_lock<std::mutex> lock(mu_);
    if (ready_.empty() && !error_) {
      const auto t0 = std::chrono::steady_clock::now();
      consumer_waiting_ = true;
      cv_.wait(lock, [&] { return !ready_.empty() || error_; });
      consumer_waiting_ = false;
      wait_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    if (ready_.empty()) std::rethrow_exception(error_);
    tokens = std::move(ready_.front());
    ready_.pop_front();
    if (producer_waiting_) cv_.notify_all();
  }
  consumed_ += micro_batch_ * dp_size_;
}

void DataLoader::next_inputs_and_targets(Tensor& inputs, Tensor& targets) {
  Tensor batch;
  next_batch(batch);
  const int64_t B = batch.shape()[0], T = batch.shape()[1] - 1;
  const Shape shape{B, T};
  for (Tensor* t : {&inputs, &targets})  // an undefined tensor has no shape: allocated too
    if (t->shape() != shape || t->dtype() != DType::I32) *t = Tensor(shape, DType::I32);
  const int32_t* src = batch.data<int32_t>();
  int32_t* in = inputs.data<int32_t>();
  int32_t* tg = targets.data<int32_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      in[b * T + t] = src[b * (T + 1) + t];
      tg[b * T + t] = src[b * (T + 1) + t + 1];
    }
}

const SampleStream::Cursor& DataLoader::consumed_cursor() {
  // Read on the caller's thread, the reading cursor is there (unless a batch failed half-read).
  if (prefetch_ == 0 && cursor_.position == consumed_) return cursor_;
  while (consumed_cursor_.position < consumed_) stream_.next_corpus(consumed_cursor_);
  return consumed_cursor_;
}

LoaderState DataLoader::state() {
  return LoaderState{consumed_, stream_.seed(), consumed_cursor().taken};
}

void DataLoader::set_state(const LoaderState& s) {
  const int64_t batch = micro_batch_ * dp_size_;
  if (s.seed != stream_.seed())
    throw InputError("loader state: saved with seed " + std::to_string(s.seed) +
                     ", but this run's --train.seed is " + std::to_string(stream_.seed()));
  if (s.consumed < 0 || s.consumed % batch != 0)
    throw InputError(
        "loader state: expected a position that is a multiple of micro batch x "
        "data-parallel ranks = " +
        std::to_string(batch) + ", found " + std::to_string(s.consumed));
  SampleStream::Cursor at = s.taken.empty()
                                ? stream_.cursor_at(s.consumed)
                                : stream_.cursor_from(s.consumed, s.taken, "loader state");
  stop_thread();
  consumed_ = s.consumed;
  consumed_cursor_ = at;
  if (prefetch_ == 0)
    cursor_ = std::move(at);
  else
    start_thread(at);
}

double DataLoader::epochs() {
  return static_cast<double>(consumed_cursor().taken[0]) /
         static_cast<double>(stream_.samples_of(0));
}

}  // namespace tessera
