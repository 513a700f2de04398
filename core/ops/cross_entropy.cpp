// Vocab-parallel cross-entropy: checks the tensors, then runs the local phases of the kernel
// around the collectives over `tp`: MAX of the row maxima, then one SUM of a [2, M] double tensor
// that holds each row's sum of exp(x - max) and its target logit (0 on shards without the
// target), so the full logits are never gathered and only two collectives are issued.
#include "core/ops/cross_entropy.h"

#include "core/ops/cpu_kernels.h"
#include "core/ops/dispatch.h"

namespace tessera::ops {
namespace {

// logits holds M rows of V (any leading shape) and targets M I32 ids; returns M.
int64_t check_logits(const char* op, const Tensor& logits, const Tensor& targets,
                     int64_t vocab_start) {
  detail::check_real(op, "logits", logits);
  TESSERA_CHECK(logits.dim() >= 1, std::string(op) + ": logits must be [M, V], found a scalar");
  const int64_t M = detail::leading_rows(logits);
  detail::check_per_row(op, "targets", targets, DType::I32, logits, M);
  TESSERA_CHECK(vocab_start >= 0, std::string(op) + ": vocab_start must be >= 0, found " +
                                      std::to_string(vocab_start));
  return M;
}

// A target outside the global vocabulary cannot be seen by one shard (it may belong to another),
// except a negative one, or any past the end when this shard is the whole vocabulary.
void check_targets(const char* op, const Tensor& targets, int64_t vocab_end) {
  const int32_t* t = targets.data<int32_t>();
  for (int64_t m = 0; m < targets.numel(); ++m) {
    TESSERA_CHECK(t[m] >= 0 && (vocab_end < 0 || t[m] < vocab_end),
                  std::string(op) + ": targets must be token ids in [0, " +
                      (vocab_end < 0 ? std::string("vocab") : std::to_string(vocab_end)) +
                      "), found " + std::to_string(t[m]) + " at row " + std::to_string(m));
  }
}

}  // namespace

void cross_entropy_forward(Tensor& losses, Tensor& lse, const Tensor& logits, const Tensor& targets,
                           int64_t vocab_start, Communicator& tp) {
  const char* op = "cross_entropy_forward";
  const int64_t M = check_logits(op, logits, targets, vocab_start), V = logits.size(-1);
  detail::check_per_row(op, "losses", losses, logits.dtype(), logits, M);
  detail::check_per_row(op, "lse", lse, logits.dtype(), logits, M);
  detail::dispatch_real(op, logits.dtype(), logits.device(), [&](auto tag) {
    using T = decltype(tag);
    check_targets(op, targets, tp.size() == 1 && vocab_start == 0 ? V : -1);
    Tensor gmax({M}, logits.dtype(), logits.device());
    cpu::cross_entropy_row_max(gmax.data<T>(), logits.data<T>(), M, V);
    tp.all_reduce(gmax, ReduceOp::Max);
    Tensor partials({2, M}, DType::F64, logits.device());  // [sum of exp; target logit]
    double* sumexp = partials.data<double>();
    cpu::cross_entropy_partials(sumexp, sumexp + M, logits.data<T>(), gmax.data<T>(),
                                targets.data<int32_t>(), M, V, vocab_start);
    tp.all_reduce(partials, ReduceOp::Sum);
    cpu::cross_entropy_finish(losses.data<T>(), lse.data<T>(), gmax.data<T>(), sumexp, sumexp + M,
                              M);
  });
}

void cross_entropy_backward(Tensor& dlogits, const Tensor& dlosses, const Tensor& logits,
                            const Tensor& lse, const Tensor& targets, int64_t vocab_start) {
  const char* op = "cross_entropy_backward";
  const int64_t M = check_logits(op, logits, targets, vocab_start), V = logits.size(-1);
  detail::check_per_row(op, "dlosses", dlosses, logits.dtype(), logits, M);
  detail::check_per_row(op, "lse", lse, logits.dtype(), logits, M);
  detail::check_rows(op, "dlogits", dlogits, logits, M, V);
  detail::dispatch_real(op, logits.dtype(), logits.device(), [&](auto tag) {
    using T = decltype(tag);
    check_targets(op, targets, -1);
    cpu::cross_entropy_backward(dlogits.data<T>(), dlosses.data<T>(), logits.data<T>(),
                                lse.data<T>(), targets.data<int32_t>(), M, V, vocab_start);
  });
}

}  // namespace tessera::ops
