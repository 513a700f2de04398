// A simple in-memory sampler over an IndexedDataset (to be replaced by the streaming loader).
// The token stream is cut into samples of seq_len + 1 tokens with stride seq_len, across
// document boundaries. Each epoch visits the samples in a Philox-driven shuffle of (seed, epoch);
// global position g of that order belongs to DP rank g % dp_size, so ranks built with the same
// arguments read disjoint samples, in lockstep, and the state is the same on every rank.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "io/indexed_dataset.h"

namespace tessera {

class BatchLoader {
 public:
  // Keeps a copy of `data` (copies share the mapping). An epoch hands out a multiple of
  // epoch_multiple samples (a multiple of dp_size; 0: dp_size): with the global batch there, no
  // step straddles two epochs, and every layout of the same global batch reads the same samples
  // in every step. Throws InputError when the corpus holds fewer samples than that.
  BatchLoader(const IndexedDataset& data, int64_t seq_len, int64_t vocab_size, uint64_t seed,
              int dp_rank = 0, int dp_size = 1, int64_t epoch_multiple = 0);

  // Samples in the token stream: (tokens - 1) / seq_len.
  int64_t num_samples() const { return num_samples_; }
  // Samples that one epoch hands out over all ranks: num_samples rounded down to a multiple of
  // epoch_multiple (the last few of each shuffled order are skipped so that ranks stay in
  // lockstep).
  int64_t samples_per_epoch() const { return samples_per_epoch_; }
  // Sample index (its first token is at index * seq_len) at position g of epoch's order.
  int64_t sample_at(int64_t epoch, int64_t g);

  // Fills tokens, I32 [batch, seq_len + 1] on the CPU, with this rank's next `batch` samples,
  // starting the next epoch when this one is used up. Reallocates `tokens` unless it already has
  // that dtype, shape and device. Throws InputError on a token id outside [0, vocab_size).
  void next_batch(int64_t batch, Tensor& tokens);

  // The loader's place, the same on every rank: the epoch, and how many samples of that epoch
  // all ranks together have consumed (a multiple of dp_size). For checkpoints.
  int64_t epoch() const { return epoch_; }
  int64_t position() const { return position_; }
  // Throws InputError when position is not a multiple of dp_size or beyond the epoch.
  void set_state(int64_t epoch, int64_t position);

 private:
  void shuffle_for(int64_t epoch);
  void read_sample(int64_t sample, int32_t* out) const;

  IndexedDataset data_;
  int64_t seq_len_, vocab_size_;
  uint64_t seed_;
  int dp_rank_, dp_size_;
  int64_t num_samples_ = 0, samples_per_epoch_ = 0;
  int64_t epoch_ = 0, position_ = 0;
  int64_t order_epoch_ = -1;    // the epoch `order_` was shuffled for
  std::vector<int64_t> order_;  // one entry per sample
};

}  // namespace tessera
