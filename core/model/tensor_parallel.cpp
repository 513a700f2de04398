// Tensor-parallel layers, each a compute op plus its one collective; see tensor_parallel.h for
// the table of conjugate pairs (Megatron-LM, Shoeybi et al. 2019, sec. 3).
#include "core/model/tensor_parallel.h"

#include <string>

#include "core/error.h"
#include "core/ops/embedding.h"
#include "core/ops/matmul.h"

namespace tessera {

namespace {

template <typename T>
void add_bias_rows_cpu(T* o, const T* b, int64_t rows, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) o[r * C + c] += b[c];
}

}  // namespace

void add_bias_rows(Tensor& out, const Tensor& bias) {
  TESSERA_CHECK(out.device() == Device::CPU && bias.device() == Device::CPU,
                "add_bias_rows: CUDA backend not built yet");
  TESSERA_CHECK(out.dtype() == bias.dtype() && out.is_contiguous() && bias.is_contiguous() &&
                    out.dim() >= 1 && out.size(-1) == bias.numel(),
                "add_bias_rows: out " + shape_str(out.shape()) + " " + dtype_name(out.dtype()) +
                    " does not take bias " + shape_str(bias.shape()) + " " +
                    dtype_name(bias.dtype()));
  const int64_t C = bias.numel(), rows = out.numel() / C;
  if (out.dtype() == DType::F32)
    add_bias_rows_cpu(out.data<float>(), bias.data<float>(), rows, C);
  else
    add_bias_rows_cpu(out.data<double>(), bias.data<double>(), rows, C);
}

void ColumnParallelLinear::forward(Tensor& out, const Tensor& inp) const {
  ops::matmul_forward(out, inp, w.value, b ? &b->value : nullptr);
}

void ColumnParallelLinear::backward(Tensor* dinp, const Tensor& dout, const Tensor& inp,
                                    Communicator& tp) const {
  ops::matmul_backward(dinp, &w.grad, b ? &b->grad : nullptr, dout, inp, w.value);
  // The conjugate of the identity forward: each rank's output slice saw the whole input.
  if (dinp && tp.size() > 1) tp.all_reduce(*dinp, ReduceOp::Sum);
}

void RowParallelLinear::forward(Tensor& out, const Tensor& inp, Communicator& tp) const {
  if (tp.size() == 1) {
    ops::matmul_forward(out, inp, w.value, b ? &b->value : nullptr);
    return;
  }
  ops::matmul_forward(out, inp, w.value, nullptr);
  tp.all_reduce(out, ReduceOp::Sum);
  if (b) add_bias_rows(out, b->value);
}

void RowParallelLinear::backward(Tensor* dinp, const Tensor& dout, const Tensor& inp) const {
  ops::matmul_backward(dinp, &w.grad, b ? &b->grad : nullptr, dout, inp, w.value);
}

void RowParallelLinear::backward_gelu(Tensor& dpre, const Tensor& dout, const Tensor& inp,
                                      const Tensor& pre_gelu) const {
  ops::matmul_gelu_backward(dpre, &w.grad, b ? &b->grad : nullptr, dout, inp, pre_gelu, w.value);
}

void vocab_parallel_embedding_forward(Tensor& out, const Tensor& ids, const Param& wte,
                                      int64_t vocab_start, Communicator& tp) {
  ops::embedding_forward(out, ids, wte.value, vocab_start);
  // Rows of other vocabulary shards come from their ranks.
  if (tp.size() > 1) tp.all_reduce(out, ReduceOp::Sum);
}

void vocab_parallel_embedding_backward(Param& wte, const Tensor& dout, const Tensor& ids,
                                       int64_t vocab_start) {
  ops::embedding_backward(wte.grad, dout, ids, vocab_start);
}

}  // namespace tessera
