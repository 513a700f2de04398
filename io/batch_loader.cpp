// In-memory shuffling sampler (see io/batch_loader.h).
#include "io/batch_loader.h"

#include <algorithm>
#include <numeric>
#include <string>

#include "core/error.h"
#include "core/rng.h"

namespace tessera {

BatchLoader::BatchLoader(const IndexedDataset& data, int64_t seq_len, int64_t vocab_size,
                         uint64_t seed, int dp_rank, int dp_size, int64_t epoch_multiple)
    : data_(data),
      seq_len_(seq_len),
      vocab_size_(vocab_size),
      seed_(seed),
      dp_rank_(dp_rank),
      dp_size_(dp_size) {
  TESSERA_CHECK(seq_len > 0 && vocab_size > 0, "seq_len and vocab_size must be positive");
  TESSERA_CHECK(
      dp_size > 0 && dp_rank >= 0 && dp_rank < dp_size,
      "dp_rank " + std::to_string(dp_rank) + " outside dp_size " + std::to_string(dp_size));
  num_samples_ = (data.num_tokens() - 1) / seq_len;
  if (num_samples_ < 1)
    throw InputError("corpus " + data.prefix() + ": expected at least seq_len + 1 = " +
                     std::to_string(seq_len + 1) + " tokens for one sample, found " +
                     std::to_string(data.num_tokens()) + " tokens");
  if (num_samples_ < dp_size)
    throw InputError("corpus " + data.prefix() + ": expected at least one sample per data-" +
                     "parallel rank (" + std::to_string(dp_size) + "), found " +
                     std::to_string(num_samples_) + " samples of seq_len " +
                     std::to_string(seq_len) + " in " + std::to_string(data.num_tokens()) +
                     " tokens");
  if (epoch_multiple <= 0) epoch_multiple = dp_size;
  TESSERA_CHECK(epoch_multiple % dp_size == 0, "epoch_multiple must be a multiple of dp_size");
  if (num_samples_ < epoch_multiple)
    throw InputError("corpus " + data.prefix() + ": expected at least one global batch of " +
                     std::to_string(epoch_multiple) +
                     " samples of seq_len + 1 = " + std::to_string(seq_len + 1) +
                     " tokens, found " + std::to_string(num_samples_) + " samples in " +
                     std::to_string(data.num_tokens()) + " tokens");
  samples_per_epoch_ = num_samples_ / epoch_multiple * epoch_multiple;
}

// Fisher-Yates with Philox uniforms: the order depends on (seed, epoch) only, on any platform.
void BatchLoader::shuffle_for(int64_t epoch) {
  if (order_epoch_ == epoch) return;
  order_.resize(static_cast<size_t>(num_samples_));
  std::iota(order_.begin(), order_.end(), int64_t{0});
  const uint64_t stream = name_hash("tessera.batch_loader") + static_cast<uint64_t>(epoch);
  for (int64_t i = num_samples_ - 1; i > 0; --i) {
    const double u = philox_uniform(seed_, stream, static_cast<uint64_t>(i));
    const int64_t j = std::min(i, static_cast<int64_t>(u * static_cast<double>(i + 1)));
    std::swap(order_[i], order_[j]);
  }
  order_epoch_ = epoch;
}

int64_t BatchLoader::sample_at(int64_t epoch, int64_t g) {
  TESSERA_CHECK(g >= 0 && g < num_samples_, "sample position out of range");
  shuffle_for(epoch);
  return order_[g];
}

void BatchLoader::read_sample(int64_t sample, int32_t* out) const {
  const int64_t start = sample * seq_len_;
  data_.read_tokens(start, seq_len_ + 1, out);
  for (int64_t i = 0; i <= seq_len_; ++i) {
    if (out[i] < 0 || out[i] >= vocab_size_) {
      const int64_t pos = start + i;
      throw InputError("corpus " + data_.bin_path() + ": token " + std::to_string(pos) +
                       " (document " + std::to_string(data_.document_of_token(pos)) + ") has id " +
                       std::to_string(out[i]) + ", expected an id below the " + "vocabulary size " +
                       std::to_string(vocab_size_) + " (--model.vocab_size)");
    }
  }
}

void BatchLoader::next_batch(int64_t batch, Tensor& tokens) {
  TESSERA_CHECK(batch > 0, "batch must be positive, found " + std::to_string(batch));
  const Shape shape{batch, seq_len_ + 1};
  if (!tokens.defined() || tokens.dtype() != DType::I32 || tokens.shape() != shape ||
      tokens.device() != Device::CPU || !tokens.is_contiguous())
    tokens = Tensor(shape, DType::I32);
  int32_t* rows = tokens.data<int32_t>();
  for (int64_t b = 0; b < batch; ++b) {
    if (position_ >= samples_per_epoch_) {
      ++epoch_;
      position_ = 0;
    }
    shuffle_for(epoch_);
    read_sample(order_[position_ + dp_rank_], rows + b * (seq_len_ + 1));
    position_ += dp_size_;
  }
}

void BatchLoader::set_state(int64_t epoch, int64_t position) {
  if (epoch < 0 || position < 0 || position > samples_per_epoch_ || position % dp_size_ != 0)
    throw InputError("loader state: expected epoch >= 0 and a position that is a multiple of " +
                     std::to_string(dp_size_) + " in [0, " + std::to_string(samples_per_epoch_) +
                     "], found epoch " + std::to_string(epoch) + ", position " +
                     std::to_string(position));
  epoch_ = epoch;
  position_ = position;
}

}  // namespace tessera
