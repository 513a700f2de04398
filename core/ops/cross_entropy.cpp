// Vocab-parallel cross-entropy: checks the tensors, then runs the local phases of the kernel
// around the collectives over `tp`: MAX of the row maxima, then one SUM of a [2, M] double tensor
// that holds each row's sum of exp(x - max) and its target logit (0 on shards without the
// target), so the full logits are never gathered and only two collectives are issued. On the
// GPU both reduced tensors are device tensors (the NCCL communicator takes those; the size-1
// LocalCommunicator does not touch them).
#include "core/ops/cross_entropy.h"

#include "core/device.h"
#include "core/ops/cpu_kernels.h"
#include "core/ops/cross_entropy_cuda.h"
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

[[noreturn]] void refuse_target(const char* op, int32_t target, int64_t row, int64_t vocab_end) {
  fail_internal(__FILE__, __LINE__,
                std::string(op) + ": targets must be token ids in [0, " +
                    (vocab_end < 0 ? std::string("vocab") : std::to_string(vocab_end)) +
                    "), found " + std::to_string(target) + " at row " + std::to_string(row));
}

// A target outside the global vocabulary cannot be seen by one shard (it may belong to another),
// except a negative one, or any past the end when this shard is the whole vocabulary.
void check_targets(const char* op, const Tensor& targets, int64_t vocab_end) {
  const int32_t* t = targets.data<int32_t>();
  for (int64_t m = 0; m < targets.numel(); ++m) {
    if (t[m] < 0 || (vocab_end >= 0 && t[m] >= vocab_end)) refuse_target(op, t[m], m, vocab_end);
  }
}

// The device twin of check_targets, after the kernel that flagged the first bad row: reads the
// flag back (which waits for the kernels queued so far) and refuses that row's target.
void check_flagged_target(const char* op, const Tensor& first_bad, const Tensor& targets,
                          int64_t vocab_end) {
  int32_t flag = 0;
  copy_bytes(&flag, Device::CPU, first_bad.raw(), Device::CUDA, sizeof flag);
  if (flag == 0) return;
  const int64_t row = targets.numel() - flag;
  int32_t target = 0;
  copy_bytes(&target, Device::CPU, targets.data<int32_t>() + row, Device::CUDA, sizeof target);
  refuse_target(op, target, row, vocab_end);
}

}  // namespace

DType cross_entropy_loss_dtype(Device device, DType logits_dtype) {
  return row_stats_dtype(device, logits_dtype);
}

void cross_entropy_forward(Tensor& losses, Tensor& lse, const Tensor& logits, const Tensor& targets,
                           int64_t vocab_start, Communicator& tp) {
  const char* op = "cross_entropy_forward";
  const int64_t M = check_logits(op, logits, targets, vocab_start), V = logits.size(-1);
  const DType row_dtype = cross_entropy_loss_dtype(logits.device(), logits.dtype());
  detail::check_per_row(op, "losses", losses, row_dtype, logits, M);
  detail::check_per_row(op, "lse", lse, row_dtype, logits, M);
  const int64_t vocab_end = tp.size() == 1 && vocab_start == 0 ? V : -1;
  if (detail::host_bf16(logits))
    return detail::via_f32(cross_entropy_forward, losses, lse, logits, targets, vocab_start, tp);
  detail::dispatch(
      op, logits.dtype(), logits.device(),
      [&](auto tag) {
        using T = decltype(tag);
        check_targets(op, targets, vocab_end);
        Tensor gmax({M}, logits.dtype(), logits.device());
        cpu::cross_entropy_row_max(gmax.data<T>(), logits.data<T>(), M, V);
        all_reduce_stream_ordered(tp, gmax, ReduceOp::Max);
        Tensor partials({2, M}, DType::F64, logits.device());  // [sum of exp; target logit]
        double* sumexp = partials.data<double>();
        cpu::cross_entropy_partials(sumexp, sumexp + M, logits.data<T>(), gmax.data<T>(),
                                    targets.data<int32_t>(), M, V, vocab_start);
        all_reduce_stream_ordered(tp, partials, ReduceOp::Sum);
        cpu::cross_entropy_finish(losses.data<T>(), lse.data<T>(), gmax.data<T>(), sumexp,
                                  sumexp + M, M);
      },
      [&](auto tag) {
        using T = decltype(tag);
        TESSERA_CHECK(M < (int64_t{1} << 31), std::string(op) + ": " + std::to_string(M) +
                                                  " rows exceed the CUDA kernels' 2^31 - 1");
        Tensor gmax({M}, DType::F32, Device::CUDA);
        cuda::cross_entropy_row_max(gmax.data<float>(), logits.data<T>(), M, V);
        all_reduce_stream_ordered(tp, gmax, ReduceOp::Max);
        Tensor partials({2, M}, DType::F64, Device::CUDA);  // [sum of exp; target logit]
        Tensor first_bad({1}, DType::I32, Device::CUDA);
        double* sumexp = partials.data<double>();
        cuda::cross_entropy_partials(sumexp, sumexp + M, first_bad.data<int32_t>(),
                                     logits.data<T>(), gmax.data<float>(), targets.data<int32_t>(),
                                     M, V, vocab_start, vocab_end);
        all_reduce_stream_ordered(tp, partials, ReduceOp::Sum);
        cuda::cross_entropy_finish(losses.data<float>(), lse.data<float>(), gmax.data<float>(),
                                   sumexp, sumexp + M, M);
        // Every rank of tp holds the same targets, so all refuse a bad one here, together.
        check_flagged_target(op, first_bad, targets, vocab_end);
      });
}

void cross_entropy_backward(Tensor& dlogits, const Tensor& dlosses, const Tensor& logits,
                            const Tensor& lse, const Tensor& targets, int64_t vocab_start) {
  const char* op = "cross_entropy_backward";
  const int64_t M = check_logits(op, logits, targets, vocab_start), V = logits.size(-1);
  const DType row_dtype = cross_entropy_loss_dtype(logits.device(), logits.dtype());
  detail::check_per_row(op, "dlosses", dlosses, row_dtype, logits, M);
  detail::check_per_row(op, "lse", lse, row_dtype, logits, M);
  detail::check_rows(op, "dlogits", dlogits, logits, M, V);
  if (detail::host_bf16(logits))
    return detail::via_f32(cross_entropy_backward, dlogits, dlosses, logits, lse, targets,
                           vocab_start);
  detail::dispatch(
      op, logits.dtype(), logits.device(),
      [&](auto tag) {
        using T = decltype(tag);
        check_targets(op, targets, -1);
        cpu::cross_entropy_backward(dlogits.data<T>(), dlosses.data<T>(), logits.data<T>(),
                                    lse.data<T>(), targets.data<int32_t>(), M, V, vocab_start);
      },
      [&](auto tag) {
        using T = decltype(tag);
        // The targets were checked by the forward; reading them back here would wait for the
        // GPU. A negative one would count as off-shard.
        cuda::cross_entropy_backward(dlogits.data<T>(), dlosses.data<float>(), logits.data<T>(),
                                     lse.data<float>(), targets.data<int32_t>(), M, V, vocab_start);
      });
}

}  // namespace tessera::ops
