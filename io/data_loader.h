// The training data of a run. SampleStream turns one or more corpora into one sequence of
// samples: corpus k contributes the samples of seq_len + 1 tokens that tile its token stream
// (stride seq_len, across document boundaries), in an order shuffled per epoch from (seed, k,
// epoch) and computed per position (io/sample_permutation.h: no order is built or stored); a blend
// of corpora interleaves them greedily, always from the corpus that lags its share the most (as
// Megatron-LM's blending does), so that after every prefix of n samples corpus k has supplied
// fewer than n w_k + 1 samples and more than n w_k - (K - 1) of K corpora. Position g of that
// sequence is the same on every layout; DataLoader gives data-parallel rank r the positions g = r,
// r + DP, ... and prefetches them on a background thread. A loader's whole state is the number of
// positions consumed, so resuming from it reads exactly the next batch; the blend's per-corpus
// counts there are saved beside it, so that a resume need not walk the blend from position 0 to
// find them.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/tensor.h"
#include "io/sample_permutation.h"
#include "io/token_corpus.h"

namespace tessera {

struct CorpusWeight {
  double weight = 1.0;  // of the corpus, or of its whole group (each member holds the group's)
  std::string path;
  // >= 0: the corpus is one of a group (the files a glob matched, or a list without weights)
  // that shares `weight` by the corpora's sizes (blend_weights).
  int group = -1;
  std::string pattern;      // the glob that matched it, as written; empty for a path
  bool unweighted = false;  // one of several paths given without weights

  // How it came into the blend, for messages: "PATH", or "PATH (matched by PATTERN)".
  std::string named() const {
    return pattern.empty() ? path
                           : std::string(path).append(" (matched by ").append(pattern).append(")");
  }
};

// "PATH", "W1 PATH1 W2 PATH2 ..." (weights positive decimals; a first word that reads as a number
// makes pairs) or "PATH1 PATH2 ..." (no weights: each corpus weighted by its size, Megatron-LM's
// rule); a path with spaces in double quotes. A path holding *, ? or [ that names no corpus as
// written is a glob (glob(7), a backslash escaping) for the files it matches, sorted by name:
// llm.c shards, and Megatron corpora by their .bin or .idx (PREFIX.bin and PREFIX.idx are one
// corpus, PREFIX); together they take the glob's weight, by their sizes. Weights are normalised
// to sum 1 over the paths as written. Throws InputError naming `option` when the text is not of
// that form, or a glob matches nothing or cannot be read.
std::vector<CorpusWeight> parse_corpus_blend(const std::string& text, const std::string& option);

// The weight of each corpus of `blend` (open, in `corpora`): its own, or its share of its
// group's by tokens. Sums to 1. InputError naming `option` for a corpus whose share is below
// 2^-53, which would never be drawn.
std::vector<double> blend_weights(const std::vector<CorpusWeight>& blend,
                                  const std::vector<TokenCorpus>& corpora,
                                  const std::string& option);

struct SampleOptions {
  int64_t seq_len = 128;
  uint64_t seed = 1;
  bool shuffle = true;        // false: samples in corpus order (validation)
  double valid_fraction = 0;  // the last fraction of each corpus' samples is held out (at
                              // least one sample, if the corpus has two)
  bool valid_split = false;   // true: use the held-out samples instead of the others
  int64_t vocab_size = 0;     // > 0: every sample read is checked to hold ids below it (behind
                              // the whole-corpus check before training: a file changed since,
                              // or a wrong record of that check, stops the run by name)
};

class SampleStream {
 public:
  // Opens nothing itself: corpora come open (their ids already checked against the vocabulary).
  // No weights: each corpus weighs as many samples as it holds in the split, so that reading
  // them all in order takes each sample once. Throws InputError naming the corpus when it holds
  // no training sample, or when no corpus holds a validation sample for the validation split (a
  // corpus without one gets weight 0).
  SampleStream(std::vector<TokenCorpus> corpora, std::vector<double> weights,
               const SampleOptions& options);

  int64_t seq_len() const { return opt_.seq_len; }
  uint64_t seed() const { return opt_.seed; }
  int num_corpora() const { return static_cast<int>(corpora_.size()); }
  const TokenCorpus& corpus(int k) const { return corpora_[static_cast<size_t>(k)]; }
  double weight(int k) const { return weights_[static_cast<size_t>(k)]; }
  int64_t samples_of(int k) const { return count_[static_cast<size_t>(k)]; }
  // What decides the sequence besides the seed: the shuffle, and per corpus (in blend order) its
  // tokens, the samples this stream takes of it and its weight, one corpus per "; "-separated part.
  // No path: a corpus moved or copied elsewhere (a node-local copy per job) is the same. Saved with
  // a checkpoint, so that a resume that would read another sequence is noticed.
  std::string sequence_key() const;

  // A place in the sequence: the position and how many samples each corpus has supplied.
  struct Cursor {
    int64_t position = 0;
    std::vector<int64_t> taken;
  };
  Cursor cursor_at(int64_t position) const;  // walks the blend from 0: O(position x corpora)
  // The cursor at `position` from its per-corpus counts (a saved cursor, LoaderState::taken),
  // checked against the blend's bounds: one count per corpus, summing to the position, each
  // within the bounds next_corpus keeps (necessary, not sufficient: a checkpoint's CRCs guard
  // the counts against damage). Throws InputError naming `what` otherwise.
  Cursor cursor_from(int64_t position, const std::vector<int64_t>& taken,
                     const std::string& what) const;
  // The corpus that position cursor.position draws from, and the cursor moved past it.
  int next_corpus(Cursor& c) const;
  // Reads corpus k's j-th sample (j counts across epochs) into out[seq_len + 1]: sample
  // SamplePermutation(n, seed, epoch_stream(k, j / n))(j % n) of its n (in order when not
  // shuffled). One thread at a time: it keeps each corpus' permutation of the current epoch.
  void read(int k, int64_t j, int32_t* out);
  // The stream of corpus k's order in `epoch`: name_hash("tessera.samples/<k>") + epoch.
  static uint64_t epoch_stream(int k, int64_t epoch);

 private:
  std::vector<TokenCorpus> corpora_;
  std::vector<double> weights_;
  SampleOptions opt_;
  std::vector<int64_t> first_, count_;  // per corpus: first sample of the split, and how many
  struct Shuffle {
    int64_t epoch;
    SamplePermutation order;  // its setup costs as much as a lookup: kept for the epoch
  };
  std::vector<std::optional<Shuffle>> shuffle_;  // per corpus, the epoch last read
};

// The loader's state, saved with a checkpoint: positions of the sample sequence consumed by all
// DP ranks together, and the seed it was made with (checked on restore). `taken`, when not empty,
// is the samples each corpus has supplied at that position (SampleStream::Cursor), which restoring
// otherwise recomputes by walking the blend from position 0: O(consumed x corpora).
struct LoaderState {
  int64_t consumed = 0;
  uint64_t seed = 0;
  std::vector<int64_t> taken;
};

class DataLoader {
 public:
  // Rank dp_rank of dp_size reads micro_batch samples per batch. prefetch > 0 runs a thread
  // that keeps up to that many batches ready; 0 reads on the caller's thread.
  DataLoader(SampleStream& stream, int dp_rank, int dp_size, int64_t micro_batch, int prefetch);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // This rank's next batch, I32 [micro_batch, seq_len + 1]: `tokens` becomes a new tensor (read
  // on this thread, or taken from the prefetch queue).
  void next_batch(Tensor& tokens);
  // The same as the model reads it: the first seq_len tokens of each sample into `inputs`, the
  // last seq_len (each input's next token) into `targets`, I32 [micro_batch, seq_len] each
  // (allocated unless they already are that).
  void next_inputs_and_targets(Tensor& inputs, Tensor& targets);
  // With `taken` (the blend walked on from the last call's place).
  LoaderState state();
  // Continues from `s`: the next batch is the one a run that had consumed s.consumed positions
  // would read next. Throws InputError for another seed, a position between batches, or counts
  // the blend cannot reach at that position (SampleStream::cursor_from).
  void set_state(const LoaderState& s);
  // Epochs of corpus 0 consumed, for the log (walks the blend from the last call's place).
  double epochs();
  // Time next_batch spent waiting for the prefetch thread, in seconds (0 when it never waits).
  double wait_seconds() const { return wait_s_; }

 private:
  void produce(SampleStream::Cursor& c, Tensor& out);
  void start_thread(const SampleStream::Cursor& from);
  void stop_thread();
  void run_prefetch(SampleStream::Cursor c);
  const SampleStream::Cursor& consumed_cursor();

  SampleStream& stream_;
  int dp_rank_, dp_size_;
  int64_t micro_batch_;
  int prefetch_;
  int64_t consumed_ = 0;  // positions, over all DP ranks
  double wait_s_ = 0;
  // Caller-thread reading (prefetch == 0).
  SampleStream::Cursor cursor_;
  // The blend at `consumed_` or before, walked lazily: the prefetch thread's cursor is ahead.
  SampleStream::Cursor consumed_cursor_;
  // Prefetching.
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Tensor> ready_;
  bool stop_ = false, producer_waiting_ = false, consumer_waiting_ = false;
  std::exception_ptr error_;
};

}  // namespace tessera
