// GradBuckets: data-parallel gradient reduction in buckets, overlapped with the backward pass.
// Every Param's value and gradient move into two flat buffers, laid out in the order the
// backward completes them (last layer first), and the gradient buffer is cut into buckets of
// about `bucket_elements`. When the backward reports the last Param of a bucket final, the
// bucket's reduction starts at once (asynchronously) while the backward goes on; finish() waits
// for all and averages over DP. Every Param starts on a 256-byte boundary of the buffers (zeros
// between). With `shard` (ZeRO-1) each bucket is padded to a multiple of DP x 256 bytes and
// reduce-scattered: DP rank r then holds the averaged gradient of piece r of every
// bucket only, which is all that its optimizer shard needs (parallel/zero_optimizer.h).
//
// Mixed precision (bfloat16 Params): the backward writes bf16 gradients (Param::grad, views of
// the bf16 flat buffer), which are folded into an fp32 flat buffer after every microbatch
// (end_microbatch) and, in the last, bucket by bucket as they become final; the DP reduction,
// clipping and the optimizer work on the fp32 sums (flat_grads, grad_of); with `shard` the sums
// are reduce-scattered, and each piece (shard_grad) is fp32.
#pragma once

#include <algorithm>
#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>

#include "core/communicator.h"
#include "core/model/param.h"

namespace tessera {

// Views of the 1-d tensor `flat` over the element ranges [begin, end), given in increasing
// order, each run of adjacent ranges as one view.
std::vector<Tensor> merged_views(const Tensor& flat,
                                 const std::vector<std::pair<int64_t, int64_t>>& ranges);

class GradBuckets {
 public:
  struct Bucket {
    // Elements in the flat buffers: each tensor starts 256-byte aligned, and the size is padded
    // so that every DP rank's piece (ZeRO-1) starts so too.
    int64_t offset = 0, size = 0;
    std::vector<Param*> params;
    int pending = 0;  // params not yet final in this step
    std::unique_ptr<CommRequest> request;
    bool completed = false;  // request->test() has said so
    // ZeRO-1: this rank's reduced piece of flat_grads(), size / DP elements (with one DP rank a
    // view of the bucket in flat_grads()).
    Tensor shard_grad;
  };

  // groups: the Params in the order their gradients become final; each group starts a new
  // bucket (a Param the caller also reduces elsewhere afterwards, like the tied embedding, gets
  // its own). Every Param's value and gradient become views into the flat buffers, the gradients
  // zero.
  GradBuckets(const std::vector<std::vector<Param*>>& groups, Communicator& dp,
              int64_t bucket_elements, bool shard);

  void zero_grad();
  // Mixed precision: folds the bf16 gradients of the constructor's groups[group] into the fp32
  // sums (else nothing), in one piece. Call after each backward but a step's last, with each
  // group it wrote (a model chunk's); none of the group's buckets may have been launched.
  void end_microbatch(size_t group);
  // The backward's hook: p's gradient is final for this step.
  void mark_ready(Param& p);
  // Starts what has not started, waits for every bucket, and averages over DP.
  void finish();

  bool sharded() const { return shard_; }
  // ZeRO-1: this rank's piece of bucket b, [piece_begin, piece_begin + piece_length) of the flat
  // buffers (every rank's piece has the same length, a multiple of 256 bytes: b.size is a
  // multiple of DP x 256 bytes).
  int64_t piece_length(const Bucket& b) const { return b.size / dp_.size(); }
  int64_t piece_begin(const Bucket& b) const { return b.offset + dp_.rank() * piece_length(b); }
  // Bucket b's gradients in flat_grads().
  Tensor bucket_grads(const Bucket& b) { return flat_grads().slice0(b.offset, b.offset + b.size); }
  // ZeRO-1: this rank's piece of bucket b in flat_values().
  Tensor piece_values(const Bucket& b) {
    return values_.slice0(piece_begin(b), piece_begin(b) + piece_length(b));
  }
  // ZeRO-1: a Param of bucket b that reaches into this rank's piece, with its elements
  // [first, first + count) there (row-major), at element `at` of the piece.
  struct PieceSpan {
    Param* param;
    int64_t first, count, at;
  };
  std::vector<PieceSpan> piece_spans(const Bucket& b) const;
  std::vector<Bucket>& buckets() { return buckets_; }
  Tensor& flat_values() { return values_; }
  // Element offset of p's value and gradient within the flat buffers.
  int64_t offset_of(const Param& p) const { return slot_of_.at(&p).offset; }
  // The step's gradients: the fp32 sums with mixed precision, else the Params' own.
  Tensor& flat_grads() { return mixed_precision() ? sums_ : grads_; }
  // The bucket that holds p.
  Bucket& bucket_of(const Param& p) { return buckets_[slot_of_.at(&p).bucket]; }
  // p's gradient within flat_grads(), shaped like p.
  Tensor grad_of(const Param& p);
  // The gradients of the Params this rank counts (Param::counted_here) as views of flat_grads(),
  // in its order, each run of adjacent ones as one view: what the gradient norm sums, in a few
  // long sums (one, where every Param counts) instead of one per Param.
  std::vector<Tensor> counted_grads();
  // The values of the Params for which `keep` holds, as views of flat_values() in the same way.
  std::vector<Tensor> value_views(const std::function<bool(const Param&)>& keep);
  bool mixed_precision() const { return sums_.defined(); }
  Communicator& dp() { return dp_; }
  int64_t bucket_count() const { return static_cast<int64_t>(buckets_.size()); }
  // The most elements of any bucket: a bucket closes once it reaches the size asked for, so one
  // large Param (the embedding) makes a bucket of its own, larger than that.
  int64_t largest_bucket() const {
    int64_t most = 0;
    for (const Bucket& b : buckets_) most = std::max(most, b.size);
    return most;
  }

 private:
  // The element ranges of the Params for which `keep` holds, in flat order: each from its offset
  // to the next 256-byte boundary after it, the zeros up to where the next tensor starts, so that
  // a run of neighbours is one range.
  std::vector<std::pair<int64_t, int64_t>> ranges_of(
      const std::function<bool(const Param&)>& keep) const;
  void launch(Bucket& b);
  void fold_range(int64_t offset, int64_t size);
  Communicator& dp_;
  bool shard_;
  int64_t granule_ = 1;  // elements in 256 bytes: every tensor's offset is a multiple
  Tensor values_, grads_;
  Tensor sums_;  // mixed precision: fp32 gradient sums, laid out like grads_; else undefined
  std::vector<Bucket> buckets_;
  // The buckets of the constructor's groups[g]: [group_buckets_[g], group_buckets_[g + 1]).
  std::vector<size_t> group_buckets_;
  struct Slot {
    size_t bucket;
    int64_t offset;  // in the flat buffers
    bool ready;      // reported final in this step
  };
  std::unordered_map<const Param*, Slot> slot_of_;
  bool finished_ = false;  // finish() has run in this step
};

}  // namespace tessera
