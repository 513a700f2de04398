// Linear layer dispatcher: checks that inp[M, K], weight[N, K], bias[N] and out[M, N] agree (inp,
// out and their gradients with any leading shape holding M rows), that every tensor has inp's
// dtype and device, and that every GEMM dimension fits BLAS's int; then calls the kernel for the
// dtype and device (matmul_cpu.cpp, matmul_cuda.cu).
#include "core/ops/matmul.h"

#include <atomic>
#include <climits>
#include <cstdint>

#include "core/ops/cpu_kernels.h"
#include "core/ops/dispatch.h"
#include "core/ops/gelu.h"
#include "core/ops/matmul_cuda.h"

namespace tessera::ops {
namespace {

struct GemmDims {
  int64_t M, K, N;
};

GemmDims check_linear(const char* op, const Tensor& inp, const Tensor& weight) {
  detail::check_real(op, "inp", inp);
  detail::check_tensor(op, "weight", weight, inp.dtype(), inp.device());
  TESSERA_CHECK(inp.dim() >= 1, std::string(op) + ": inp must have at least one dimension");
  TESSERA_CHECK(weight.dim() == 2 && weight.size(1) == inp.size(-1),
                std::string(op) + ": weight must be [N, " + std::to_string(inp.size(-1)) +
                    "] for inp " + shape_str(inp.shape()) + ", found " + shape_str(weight.shape()));
  const GemmDims d{detail::leading_rows(inp), inp.size(-1), weight.size(0)};
  TESSERA_CHECK(d.M <= INT_MAX && d.K <= INT_MAX && d.N <= INT_MAX,
                std::string(op) + ": GEMM dimensions M=" + std::to_string(d.M) +
                    " K=" + std::to_string(d.K) + " N=" + std::to_string(d.N) +
                    " exceed BLAS's 32-bit int");
  return d;
}

bool g_dgelu_epilogue = false;
std::atomic<int64_t> g_fused_forward{0}, g_fused_backward{0};

}  // namespace

GeluEpilogueCounts gelu_epilogue_counts() {
  return {g_fused_forward.load(), g_fused_backward.load()};
}

void set_dgelu_epilogue(bool on) {
  g_dgelu_epilogue = on;
}

bool dgelu_epilogue() {
  return g_dgelu_epilogue;
}

void matmul_forward(Tensor& out, const Tensor& inp, const Tensor& weight, const Tensor* bias) {
  const char* op = "matmul_forward";
  const GemmDims d = check_linear(op, inp, weight);
  detail::check_rows(op, "out", out, inp, d.M, d.N);
  if (bias != nullptr) detail::check_like(op, "bias", *bias, inp, {d.N});
  if (detail::host_bf16(inp)) return detail::via_f32(matmul_forward, out, inp, weight, bias);
  detail::dispatch(
      op, inp.dtype(), inp.device(),
      [&](auto tag) {
        using T = decltype(tag);
        cpu::matmul_forward(out.data<T>(), inp.data<T>(), weight.data<T>(),
                            bias ? bias->data<T>() : nullptr, d.M, d.K, d.N);
      },
      [&](auto tag) {
        using T = decltype(tag);
        cuda::matmul_forward(out.data<T>(), inp.data<T>(), weight.data<T>(),
                             bias ? bias->data<T>() : nullptr, d.M, d.K, d.N);
      });
}

void matmul_backward(Tensor* dinp, Tensor* dweight, Tensor* dbias, const Tensor& dout,
                     const Tensor& inp, const Tensor& weight) {
  const char* op = "matmul_backward";
  const GemmDims d = check_linear(op, inp, weight);
  detail::check_rows(op, "dout", dout, inp, d.M, d.N);
  if (dinp != nullptr) detail::check_rows(op, "dinp", *dinp, inp, d.M, d.K);
  if (dweight != nullptr) detail::check_like(op, "dweight", *dweight, inp, weight.shape());
  if (dbias != nullptr) detail::check_like(op, "dbias", *dbias, inp, {d.N});
  if (detail::host_bf16(inp))
    return detail::via_f32(matmul_backward, dinp, dweight, dbias, dout, inp, weight);
  detail::dispatch(
      op, inp.dtype(), inp.device(),
      [&](auto tag) {
        using T = decltype(tag);
        cpu::matmul_backward(dinp ? dinp->data<T>() : nullptr,
                             dweight ? dweight->data<T>() : nullptr,
                             dbias ? dbias->data<T>() : nullptr, dout.data<T>(), inp.data<T>(),
                             weight.data<T>(), d.M, d.K, d.N);
      },
      [&](auto tag) {
        using T = decltype(tag);
        cuda::matmul_backward(dinp ? dinp->data<T>() : nullptr,
                              dweight ? dweight->data<T>() : nullptr,
                              dbias ? dbias->data<T>() : nullptr, dout.data<T>(), inp.data<T>(),
                              weight.data<T>(), d.M, d.K, d.N);
      });
}

void matmul_gelu_forward(Tensor& out, Tensor& pre_gelu, const Tensor& inp, const Tensor& weight,
                         const Tensor* bias) {
  const char* op = "matmul_gelu_forward";
  const GemmDims d = check_linear(op, inp, weight);
  detail::check_rows(op, "out", out, inp, d.M, d.N);
  detail::check_rows(op, "pre_gelu", pre_gelu, inp, d.M, d.N);
  if (bias != nullptr) detail::check_like(op, "bias", *bias, inp, {d.N});
  TESSERA_CHECK(!overlaps(out, pre_gelu), std::string(op) +
                                              ": out and pre_gelu must not overlap (gelu_backward "
                                              "needs pre_gelu), found them sharing memory");
  if (inp.device() == Device::CPU) {  // its two halves: bf16 rounds pre_gelu between them
    matmul_forward(pre_gelu, inp, weight, bias);
    gelu_forward(out, pre_gelu.view(out.shape()));  // the same rows, any leading shape
    return;
  }
  detail::dispatch_cuda(op, inp.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (cuda::matmul_gelu_forward(out.data<T>(), pre_gelu.data<T>(), inp.data<T>(),
                                  weight.data<T>(), bias ? bias->data<T>() : nullptr, d.M, d.K,
                                  d.N))
      ++g_fused_forward;
  });
}

void matmul_gelu_backward(Tensor& dpre, Tensor* dweight, Tensor* dbias, const Tensor& dout,
                          const Tensor& inp, const Tensor& pre_gelu, const Tensor& weight) {
  const char* op = "matmul_gelu_backward";
  const GemmDims d = check_linear(op, inp, weight);
  detail::check_rows(op, "dout", dout, inp, d.M, d.N);
  detail::check_rows(op, "pre_gelu", pre_gelu, inp, d.M, d.K);
  detail::check_rows(op, "dpre", dpre, inp, d.M, d.K);
  if (dweight != nullptr) detail::check_like(op, "dweight", *dweight, inp, weight.shape());
  if (dbias != nullptr) detail::check_like(op, "dbias", *dbias, inp, {d.N});
  for (const auto& [name, input] : {std::pair<const char*, const Tensor*>{"pre_gelu", &pre_gelu},
                                    {"inp", &inp},
                                    {"dout", &dout}}) {
    TESSERA_CHECK(!overlaps(dpre, *input), std::string(op) + ": dpre must not overlap " + name +
                                               ", found them sharing memory");
  }
  if (inp.device() == Device::CPU) {  // its two halves: bf16 rounds dpre between them
    matmul_backward(&dpre, dweight, dbias, dout, inp, weight);
    gelu_backward(dpre, dpre, pre_gelu.view(dpre.shape()));  // the same rows, any leading shape
    return;
  }
  detail::dispatch_cuda(op, inp.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (cuda::matmul_gelu_backward(dpre.data<T>(), dweight ? dweight->data<T>() : nullptr,
                                   dbias ? dbias->data<T>() : nullptr, dout.data<T>(),
                                   inp.data<T>(), pre_gelu.data<T>(), weight.data<T>(), d.M, d.K,
                                   d.N, g_dgelu_epilogue))
      ++g_fused_backward;
  });
}

}  // namespace tessera::ops
