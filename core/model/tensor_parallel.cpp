// Tensor-parallel layers, each a compute op plus its one collective; see tensor_parallel.h for
// the table of conjugate pairs (Megatron-LM, Shoeybi et al. 2019, sec. 3).
#include "core/model/tensor_parallel.h"

#include <string>

#include "core/error.h"
#include "core/ops/cast.h"
#include "core/ops/embedding.h"
#include "core/ops/gelu.h"
#include "core/ops/matmul.h"

namespace tessera {

void ColumnParallelLinear::forward(Tensor& out, const Tensor& inp) const {
  ops::matmul_forward(out, inp, w.value, b ? &b->value : nullptr);
}

void ColumnParallelLinear::backward(Tensor* dinp, const Tensor& dout, const Tensor& inp,
                                    Communicator& tp) const {
  ops::matmul_backward(dinp, &w.grad, b ? &b->grad : nullptr, dout, inp, w.value);
  // The conjugate of the identity forward: each rank's output slice saw the whole input.
  if (dinp) all_reduce_stream_ordered(tp, *dinp, ReduceOp::Sum);
}

void ColumnParallelLinear::backward_scatter(Tensor& dinp_rows, Tensor& partial, const Tensor& dout,
                                            const Tensor& inp, Communicator& tp) const {
  ops::matmul_backward(&partial, &w.grad, b ? &b->grad : nullptr, dout, inp, w.value);
  reduce_scatter_stream_ordered(tp, dinp_rows, partial);
}

Tensor ColumnParallelLinear::input_backward(bool sequence_parallel, Tensor& rows, Tensor& whole,
                                            const Tensor& dout, const Tensor& inp,
                                            Communicator& tp) const {
  if (!sequence_parallel) {
    backward(&whole, dout, inp, tp);
    return whole;
  }
  backward_scatter(rows, whole, dout, inp, tp);
  return rows;
}

void RowParallelLinear::forward(Tensor& out, const Tensor& inp, Communicator& tp) const {
  // The replicated bias goes in once: through TP rank 0's GEMM (its bias epilogue on the GPU),
  // before the sum of the ranks' partial products.
  ops::matmul_forward(out, inp, w.value, b && tp.rank() == 0 ? &b->value : nullptr);
  all_reduce_stream_ordered(tp, out, ReduceOp::Sum);
}

void RowParallelLinear::forward_scatter(Tensor& out_rows, Tensor& partial, const Tensor& inp,
                                        Communicator& tp) const {
  ops::matmul_forward(partial, inp, w.value, b && tp.rank() == 0 ? &b->value : nullptr);
  reduce_scatter_stream_ordered(tp, out_rows, partial);
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
  all_reduce_stream_ordered(tp, out, ReduceOp::Sum);
}

void add_tp_sum_of_norm_grads(Tensor& partial, std::initializer_list<Param*> params,
                              Communicator& tp) {
  TESSERA_CHECK(partial.dim() == 2 && partial.size(0) == static_cast<int64_t>(params.size()),
                "add_tp_sum_of_norm_grads: expected one row of partial per parameter");
  if (partial.dtype() == DType::BF16) {
    Tensor wide = ops::cast_to(partial, DType::F32);
    all_reduce_stream_ordered(tp, wide, ReduceOp::Sum);
    ops::cast(partial, wide);
  } else {
    all_reduce_stream_ordered(tp, partial, ReduceOp::Sum);
  }
  int64_t row = 0;
  for (Param* p : params) {
    const Tensor sum = partial.slice0(row, row + 1).view(p->grad.shape());
    ops::residual_forward(p->grad, p->grad, sum);
    ++row;
  }
}

void vocab_parallel_embedding_backward(Param& wte, const Tensor& dout, const Tensor& ids,
                                       int64_t vocab_start) {
  ops::embedding_backward(wte.grad, dout, ids, vocab_start);
}

}  // namespace tessera
