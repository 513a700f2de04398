#include "launcher/corpora.h"

#include <filesystem>
#include <map>
#include <optional>
#include <system_error>
#include <utility>

#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "launcher/progress.h"

namespace tessera {

namespace {

// A 64-bit hash as four doubles for a Max all-reduce: its two exact 32-bit halves, each as itself
// and negated. The hash was the same on every rank when, after the reduction, each half's maximum
// is minus the maximum of its negation (same_hash).
void put_hash(uint64_t hash, double* m) {
  const auto high = static_cast<double>(hash >> 32), low = static_cast<double>(hash & 0xFFFFFFFFu);
  m[0] = high, m[1] = -high, m[2] = low, m[3] = -low;
}
bool same_hash(const double* m) {
  return m[0] == -m[1] && m[2] == -m[3];
}

// "2 corpora, 12345 tokens"
std::string count_corpora(const SampleStream& s) {
  int64_t tokens = 0;
  for (int k = 0; k < s.num_corpora(); ++k) tokens += s.corpus(k).num_tokens();
  std::string text = std::to_string(s.num_corpora());
  text.append(s.num_corpora() == 1 ? " corpus, " : " corpora, ")
      .append(std::to_string(tokens))
      .append(" tokens");
  return text;
}

}  // namespace

CorpusOpener::CorpusOpener(std::string cache_dir, int rank, int world_size, bool record)
    : cache_dir_(std::move(cache_dir)), rank_(rank), world_size_(world_size), record_(record) {}

std::vector<TokenCorpus> CorpusOpener::open(const std::vector<CorpusWeight>& blend, int64_t vocab,
                                            const std::string& option) {
  std::vector<TokenCorpus> corpora;
  // same_corpus through a map of token_file_identity: one stat per corpus, not two per pair.
  std::map<std::pair<uint64_t, uint64_t>, size_t> seen;  // token file -> its first corpus
  for (const CorpusWeight& c : blend) {
    try {
      corpora.push_back(TokenCorpus::open(c.path, rank_, world_size_));
    } catch (const SharedInputError&) {
      throw;  // a fault inside a corpus that is there: the hint below is not about it
    } catch (const InputError& e) {
      if (!c.pattern.empty())  // the user wrote the pattern, not this name
        throw InputError(std::string(e.what()) + " (" + option + ": matched by " + c.pattern + ")");
      if (!c.unweighted) throw InputError(option + ": " + e.what());
      throw InputError(option + ": " + e.what() + " (" + option +
                       " lists paths without weights; a path with spaces goes in double quotes)");
    }
    if (const auto id = token_file_identity(corpora.back())) {
      const auto [first, fresh] = seen.try_emplace(*id, corpora.size() - 1);
      if (!fresh)
        throw InputError(option + ": " + c.named() + " is the corpus " +
                         blend[first->second].named() +
                         " again; give each corpus once (with the sum of its weights)");
    }
    // Rank 0's progress through its part, on a corpus too large to check at once.
    std::optional<ProgressLine> line;
    const std::string part =
        world_size_ == 1 ? "every token" : "this rank's part, 1/" + std::to_string(world_size_);
    const auto progress = [&](int64_t done, int64_t total) {
      if (!line)
        line.emplace(rank_ == 0, corpora.back().path() + ": token id check", total);
      else if (done == total)
        line->finish(done, part);
      else if (line->due())
        line->print(done, part);
    };
    const auto ids =
        corpora.back().check_token_ids(vocab, cache_dir_, rank_, world_size_, record_, progress);
    slices_.push_back({ids.has_value(), ids.value_or(TokenCorpus::SliceIds{})});
  }
  return corpora;
}

void CorpusOpener::record_id_ranges(Communicator& world) {
  // Every rank checked one slice of each corpus that had no record: the ranges of all the slices
  // make the record, which rank 0 writes once every rank's part is in. A corpus that some rank
  // found recorded (written meanwhile by another run) needs none, and one whose file changed
  // between the ranks' reads (their keys differ) gets none.
  TESSERA_CHECK(world.size() == world_size_ && world.rank() == rank_,
                "CorpusOpener::record_id_ranges on another world than it opened for");
  const auto n = static_cast<int64_t>(slices_.size());
  if (n == 0) return;
  Tensor counts({n}, DType::F64), maxima({6 * n}, DType::F64);
  for (int64_t k = 0; k < n; ++k) {
    const IdSlice& s = slices_[static_cast<size_t>(k)];
    counts.data<double>()[k] = s.sliced ? 1 : 0;
    // Max of -lo and of hi; an empty slice (more ranks than tokens) contributes nothing. Then
    // the key's hash, which every rank must have had.
    const bool any = s.sliced && s.ids.lo <= s.ids.hi;
    double* m = maxima.data<double>() + 6 * k;
    m[0] = any ? -static_cast<double>(s.ids.lo) : -1e300;
    m[1] = any ? static_cast<double>(s.ids.hi) : -1e300;
    put_hash(name_hash(s.ids.key), m + 2);
  }
  world.all_reduce(counts, ReduceOp::Sum);
  world.all_reduce(maxima, ReduceOp::Max);
  if (world.rank() == 0)
    for (int64_t k = 0; k < n; ++k) {
      const double* m = maxima.data<double>() + 6 * k;
      if (counts.data<double>()[k] != world.size() || !same_hash(m + 2)) continue;
      TokenCorpus::SliceIds whole = slices_[static_cast<size_t>(k)].ids;
      whole.lo = static_cast<int64_t>(-m[0]);
      whole.hi = static_cast<int64_t>(m[1]);
      TokenCorpus::record_id_range(cache_dir_, whole);
    }
  slices_.clear();
}

InputError cache_dir_refusal(const TrainConfig& cfg, const std::string& why) {
  return InputError("--data.cache_dir " + cfg.cache_dir +
                    ": expected a directory this rank can create or use, found: " + why);
}

std::string data_cache_path(const TrainConfig& cfg) {
  return cfg.cache_dir.empty() ? cfg.run_dir + "/data_cache" : cfg.cache_dir;
}

std::string data_cache_dir(const TrainConfig& cfg, bool create) {
  std::string dir = data_cache_path(cfg);
  std::error_code ec;
  if (!create) return std::filesystem::is_directory(dir, ec) ? dir : "";
  std::filesystem::create_directories(dir, ec);
  if (!ec && !std::filesystem::is_directory(dir, ec))
    ec = std::make_error_code(std::errc::not_a_directory);
  if (ec && !cfg.cache_dir.empty()) throw cache_dir_refusal(cfg, ec.message());
  if (ec) dir.clear();
  return dir;
}

void check_same_corpora(Communicator& world, const std::string& key, const std::string& option,
                        const SampleStream& stream) {
  Tensor m({4}, DType::F64);
  put_hash(name_hash(key), m.data<double>());
  world.all_reduce(m, ReduceOp::Max);
  if (!same_hash(m.data<double>()))
    throw InputError(std::string(option)
                         .append(": the ranks did not open the same corpora (this rank's: ")
                         .append(count_corpora(stream))
                         .append("): a glob matched other files, or a corpus has another "
                                 "size, on some node; give every node the same files"));
}

}  // namespace tessera
