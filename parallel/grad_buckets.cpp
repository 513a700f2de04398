// Flat gradient buffers cut into buckets; each bucket's DP reduction starts when it is complete.
#include "parallel/grad_buckets.h"

#include "core/error.h"
#include "core/ops/adamw.h"
#include "core/ops/cast.h"

namespace tessera {

namespace {

int64_t round_up(int64_t n, int64_t m) {
  return (n + m - 1) / m * m;
}

}  // namespace

GradBuckets::GradBuckets(const std::vector<std::vector<Param*>>& groups, Communicator& dp,
                         int64_t bucket_elements, bool shard)
    : dp_(dp), shard_(shard) {
  TESSERA_CHECK(!groups.empty() && !groups[0].empty(), "GradBuckets: no parameters");
  const DType dtype = groups[0][0]->value.dtype();
  const Device device = groups[0][0]->value.device();
  // Every tensor starts on a 256-byte boundary of the flat buffers, the alignment cuBLASLt's
  // fastest kernels want of a weight or bias that is a view into them (and a misaligned bias in
  // its epilogue has been reported to fault);
  // with ZeRO-1 each DP rank's piece of a bucket starts on one too. The padding is zeros, which
  // AdamW leaves zero and norms do not see.
  granule_ = std::max<int64_t>(1, 256 / static_cast<int64_t>(dtype_size(dtype)));
  const int64_t align = shard ? granule_ * dp.size() : granule_;
  // Lay out the buckets first, then allocate the flat buffers and move the tensors in.
  int64_t offset = 0;
  std::vector<Param*> order;
  for (const std::vector<Param*>& group : groups) {
    group_buckets_.push_back(buckets_.size());
    Bucket* open = nullptr;
    for (Param* p : group) {
      TESSERA_CHECK(p->value.dtype() == dtype, "GradBuckets: parameters of mixed dtypes");
      if (!open || open->size >= bucket_elements) {
        buckets_.emplace_back();
        open = &buckets_.back();
        open->offset = offset;
      }
      order.push_back(p);
      const int64_t at = round_up(offset, granule_);
      slot_of_[p] = Slot{buckets_.size() - 1, at, false};
      open->params.push_back(p);
      open->size += at - offset + p->value.numel();
      offset = at + p->value.numel();
      // Pad at the bucket's end so that every DP rank's piece has the same, aligned length.
      const bool closes = open->size >= bucket_elements || p == group.back();
      if (closes) {
        const int64_t padded = round_up(open->size, align);
        offset += padded - open->size;
        open->size = padded;
      }
    }
  }
  group_buckets_.push_back(buckets_.size());
  // The gradients start from zero in the flat buffer: each Param's own goes first. Then the
  // values move in, each one's storage freed as it goes: the flat buffers never sit beside a
  // second copy of the parameters (the memory estimate's peak is the step's).
  for (Param* p : order) p->grad = Tensor();
  values_ = Tensor({offset}, dtype, device);
  for (Param* p : order) {
    const int64_t at = slot_of_.at(p).offset;
    Tensor value = values_.slice0(at, at + p->value.numel()).view(p->value.shape());
    copy_into(value, p->value);
    p->value = value;
  }
  grads_ = Tensor({offset}, dtype, device);
  for (Param* p : order) {
    const int64_t at = slot_of_.at(p).offset;
    p->grad = grads_.slice0(at, at + p->value.numel()).view(p->value.shape());
  }
  if (dtype == DType::BF16) sums_ = Tensor({offset}, DType::F32, device);  // mixed_precision()
  for (Bucket& b : buckets_) {
    b.pending = static_cast<int>(b.params.size());
    // ZeRO-1 with one DP rank: the piece is the whole bucket, reduced where it lies.
    if (shard_)
      b.shard_grad = dp.size() == 1 ? bucket_grads(b)
                                    : Tensor({piece_length(b)}, flat_grads().dtype(), device);
  }
}

void GradBuckets::zero_grad() {
  grads_.zero();
  if (mixed_precision()) sums_.zero();
  for (Bucket& b : buckets_) b.pending = static_cast<int>(b.params.size());
  for (auto& [param, slot] : slot_of_) slot.ready = false;
  finished_ = false;
}

void GradBuckets::fold_range(int64_t offset, int64_t size) {
  if (!mixed_precision()) return;
  Tensor sum = sums_.slice0(offset, offset + size), grad = grads_.slice0(offset, offset + size);
  ops::accumulate(sum, grad);
  grad.zero();
}

void GradBuckets::end_microbatch(size_t group) {
  TESSERA_CHECK(
      group + 1 < group_buckets_.size() && group_buckets_[group] < group_buckets_[group + 1],
      "GradBuckets::end_microbatch: no such group, or an empty one");
  if (!mixed_precision()) return;
  const Bucket& first = buckets_[group_buckets_[group]];
  const Bucket& last = buckets_[group_buckets_[group + 1] - 1];
  for (const Bucket* b = &first; b <= &last; ++b)
    TESSERA_CHECK(b->pending > 0, "GradBuckets::end_microbatch: a bucket of group " +
                                      std::to_string(group) + " is already being reduced");
  fold_range(first.offset, last.offset + last.size - first.offset);
}

std::vector<GradBuckets::PieceSpan> GradBuckets::piece_spans(const Bucket& b) const {
  const int64_t piece_begin = this->piece_begin(b), piece_end = piece_begin + piece_length(b);
  std::vector<PieceSpan> spans;
  for (Param* p : b.params) {
    const int64_t begin = offset_of(*p), end = begin + p->value.numel();
    const int64_t lo = std::max(begin, piece_begin), hi = std::min(end, piece_end);
    if (lo < hi) spans.push_back(PieceSpan{p, lo - begin, hi - lo, lo - piece_begin});
  }
  return spans;
}

Tensor GradBuckets::grad_of(const Param& p) {
  const int64_t at = offset_of(p);
  return flat_grads().slice0(at, at + p.grad.numel()).view(p.grad.shape());
}

std::vector<Tensor> merged_views(const Tensor& flat,
                                 const std::vector<std::pair<int64_t, int64_t>>& ranges) {
  std::vector<std::pair<int64_t, int64_t>> runs;
  for (const auto& [begin, end] : ranges) {
    if (!runs.empty() && runs.back().second == begin)
      runs.back().second = end;
    else
      runs.emplace_back(begin, end);
  }
  std::vector<Tensor> views;
  for (const auto& [begin, end] : runs) views.push_back(flat.slice0(begin, end));
  return views;
}

std::vector<std::pair<int64_t, int64_t>> GradBuckets::ranges_of(
    const std::function<bool(const Param&)>& keep) const {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const Bucket& b : buckets_)
    for (const Param* p : b.params)
      if (keep(*p))
        ranges.emplace_back(offset_of(*p), round_up(offset_of(*p) + p->value.numel(), granule_));
  return ranges;
}

std::vector<Tensor> GradBuckets::counted_grads() {
  return merged_views(flat_grads(), ranges_of([](const Param& p) { return p.counted_here(); }));
}

std::vector<Tensor> GradBuckets::value_views(const std::function<bool(const Param&)>& keep) {
  return merged_views(flat_values(), ranges_of(keep));
}

void GradBuckets::launch(Bucket& b) {
  fold_range(b.offset, b.size);
  if (dp_.size() == 1) return;
  Tensor flat = bucket_grads(b);
  b.completed = false;
  if (shard_)
    b.request = dp_.reduce_scatter_async(b.shard_grad, flat, ReduceOp::Sum);
  else
    b.request = dp_.all_reduce_async(flat, ReduceOp::Sum);
}

void GradBuckets::mark_ready(Param& p) {
  auto it = slot_of_.find(&p);
  TESSERA_CHECK(it != slot_of_.end(), "GradBuckets: unknown parameter " + p.name);
  TESSERA_CHECK(!finished_, "GradBuckets: " + p.name + " reported final after finish()");
  TESSERA_CHECK(!it->second.ready, "GradBuckets: " + p.name + " reported final twice in a step");
  it->second.ready = true;
  Bucket& b = buckets_[it->second.bucket];
  if (--b.pending == 0) launch(b);
  // Host MPI progresses a non-blocking collective only inside MPI calls: give the ones in
  // flight a turn (those not yet seen complete: each test costs a query of the GPU with NCCL).
  for (Bucket& other : buckets_)
    if (other.request && !other.completed) other.completed = other.request->test();
}

void GradBuckets::finish() {
  for (Bucket& b : buckets_)
    if (b.pending > 0) {
      b.pending = 0;
      launch(b);
    }
  finished_ = true;
  const double inv_dp = 1.0 / dp_.size();
  for (Bucket& b : buckets_) {
    if (b.request) b.request->wait();
    b.request.reset();
    if (dp_.size() == 1) continue;
    if (shard_) {
      ops::scale(b.shard_grad, inv_dp);
    } else {
      Tensor flat = bucket_grads(b);
      ops::scale(flat, inv_dp);
    }
  }
}

}  // namespace tessera
