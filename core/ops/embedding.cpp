// Token and positional embedding dispatchers: check that tokens are I32, that out and dout hold
// one row of the table's width per token, and that the positional table has at least T rows;
// then call the kernel for the dtype and device. sinusoidal_table is built on the host only
// (callers move it with Tensor::to).
#include "core/ops/embedding.h"

#include "core/ops/cpu_kernels.h"
#include "core/ops/dispatch.h"
#include "core/ops/embedding_cuda.h"

namespace tessera::ops {
namespace {

void check_embedding(const char* op, const char* table_name, const Tensor& table,
                     const char* out_name, const Tensor& out, const Tensor& tokens,
                     int64_t vocab_start) {
  detail::check_real(op, table_name, table);
  detail::check_tensor(op, "tokens", tokens, DType::I32, table.device());
  TESSERA_CHECK(table.dim() == 2, std::string(op) + ": " + table_name +
                                      " must be [rows, C], found " + shape_str(table.shape()));
  TESSERA_CHECK(vocab_start >= 0, std::string(op) + ": vocab_start must be >= 0, found " +
                                      std::to_string(vocab_start));
  detail::check_rows(op, out_name, out, table, tokens.numel(), table.size(1));
}

void check_positional(const char* op, const Tensor& x, const char* x_name, const Tensor& pos,
                      const char* pos_name) {
  detail::check_real(op, x_name, x);
  detail::check_tensor(op, pos_name, pos, x.dtype(), x.device());
  TESSERA_CHECK(x.dim() == 3, std::string(op) + ": " + x_name + " must be [B, T, C], found " +
                                  shape_str(x.shape()));
  TESSERA_CHECK(pos.dim() == 2 && pos.size(0) >= x.size(1) && pos.size(1) == x.size(2),
                std::string(op) + ": " + pos_name + " must be [>= " + std::to_string(x.size(1)) +
                    ", " + std::to_string(x.size(2)) + "] for " + x_name + " " +
                    shape_str(x.shape()) + ", found " + shape_str(pos.shape()));
}

}  // namespace

void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table,
                       int64_t vocab_start) {
  const char* op = "embedding_forward";
  check_embedding(op, "table", table, "out", out, tokens, vocab_start);
  if (detail::host_bf16(table))
    return detail::via_f32(embedding_forward, out, tokens, table, vocab_start);
  detail::dispatch(
      op, table.dtype(), table.device(),
      [&](auto tag) {
        using T = decltype(tag);
        cpu::embedding_forward(out.data<T>(), tokens.data<int32_t>(), table.data<T>(),
                               tokens.numel(), vocab_start, table.size(0), table.size(1));
      },
      [&](auto tag) {
        using T = decltype(tag);
        cuda::embedding_forward(out.data<T>(), tokens.data<int32_t>(), table.data<T>(),
                                tokens.numel(), vocab_start, table.size(0), table.size(1));
      });
}

void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& tokens,
                        int64_t vocab_start) {
  const char* op = "embedding_backward";
  check_embedding(op, "dtable", dtable, "dout", dout, tokens, vocab_start);
  if (detail::host_bf16(dout))
    return detail::via_f32(embedding_backward, dtable, dout, tokens, vocab_start);
  detail::dispatch(
      op, dtable.dtype(), dtable.device(),
      [&](auto tag) {
        using T = decltype(tag);
        cpu::embedding_backward(dtable.data<T>(), dout.data<T>(), tokens.data<int32_t>(),
                                tokens.numel(), vocab_start, dtable.size(0), dtable.size(1));
      },
      [&](auto tag) {
        using T = decltype(tag);
        cuda::embedding_backward(dtable.data<T>(), dout.data<T>(), tokens.data<int32_t>(),
                                 tokens.numel(), vocab_start, dtable.size(0), dtable.size(1));
      });
}

void positional_forward(Tensor& x, const Tensor& pos) {
  const char* op = "positional_forward";
  check_positional(op, x, "x", pos, "pos");
  if (detail::host_bf16(x)) return detail::via_f32(positional_forward, x, pos);
  detail::dispatch(
      op, x.dtype(), x.device(),
      [&](auto tag) {
        using T = decltype(tag);
        cpu::positional_forward(x.data<T>(), pos.data<T>(), x.size(0), x.size(1), x.size(2));
      },
      [&](auto tag) {
        using T = decltype(tag);
        cuda::positional_forward(x.data<T>(), pos.data<T>(), x.size(0), x.size(1), x.size(2));
      });
}

void positional_backward(Tensor& dpos, const Tensor& dx) {
  const char* op = "positional_backward";
  check_positional(op, dx, "dx", dpos, "dpos");
  if (detail::host_bf16(dx)) return detail::via_f32(positional_backward, dpos, dx);
  detail::dispatch(
      op, dx.dtype(), dx.device(),
      [&](auto tag) {
        using T = decltype(tag);
        cpu::positional_backward(dpos.data<T>(), dx.data<T>(), dx.size(0), dx.size(1), dx.size(2));
      },
      [&](auto tag) {
        using T = decltype(tag);
        cuda::positional_backward(dpos.data<T>(), dx.data<T>(), dx.size(0), dx.size(1), dx.size(2));
      });
}

Tensor sinusoidal_table(int64_t T, int64_t C, DType dtype) {
  const char* op = "sinusoidal_table";
  TESSERA_CHECK(T >= 0 && C >= 0, std::string(op) + ": sizes must be >= 0, found T=" +
                                      std::to_string(T) + " C=" + std::to_string(C));
  TESSERA_CHECK(dtype == DType::F32 || dtype == DType::F64,
                std::string(op) + ": dtype must be float32 or float64, found " + dtype_name(dtype));
  Tensor pe({T, C}, dtype);
  detail::dispatch_real(op, dtype, Device::CPU, [&](auto tag) {
    using E = decltype(tag);
    cpu::sinusoidal_table(pe.data<E>(), T, C);
  });
  return pe;
}

}  // namespace tessera::ops
