// CUDA linear layer through cuBLASLt. tessera's matrices are row-major and cuBLASLt's
// column-major, and a row-major X[r, c] read column-major is X^T (c x r, leading dimension c). So
// every product is computed transposed, on the operands as stored: out = inp @ weight^T is
// out^T = op_T(weight^T) * inp^T, all three as they lie in memory; nothing is copied.
//
// Precision: compute is fp32 in both dtypes. F32 uses CUBLAS_COMPUTE_32F, which is strict IEEE
// fp32 (TF32 tensor cores would need CUBLAS_COMPUTE_32F_FAST_TF32): the GPU then matches the CPU
// twin to a few fp32 roundings, which the tests hold it to. BF16 keeps A, B, C and the bias in
// bf16 and accumulates in fp32 on the tensor cores.
//
// The bias rides in the GEMM epilogue (CUBLASLT_EPILOGUE_BIAS); its gradient is a column sum
// here, chunk partials then an in-order finish, that adds (+=) the same bits on every run, since
// cuBLASLt's BGRADB epilogue overwrites.
// A GEMM's descriptors, layouts and heuristic algorithm are built once per (shape, dtype,
// epilogue, operand alignments) and cached for the process.
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>

#include "core/cuda_common.cuh"
#include "core/ops/bias_kernels.cuh"
#include "core/ops/cuda_elementwise.cuh"
#include "core/ops/gelu_cuda.h"
#include "core/ops/matmul_cuda.h"

namespace tessera::ops::cuda {
namespace {

using namespace bias_kernels;
using tessera::cuda::alignment_of;
using tessera::cuda::blocks_for;
using tessera::cuda::dev;
using tessera::cuda::kPack;
using tessera::cuda::packable;
using tessera::cuda::StreamScratch;

template <typename T>
constexpr cudaDataType_t kDataType = std::is_same_v<T, float> ? CUDA_R_32F : CUDA_R_16BF;

bool uses_bias(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}
bool uses_aux(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_GELU_AUX || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS ||
         e == CUBLASLT_EPILOGUE_DGELU;
}

// The device buffers of one column-major product D[m, n] = op(A) op(B) (+ bias[m]) + beta D.
struct GemmOperands {
  const void* a;
  const void* b;
  void* d;           // also C
  const void* bias;  // the BIAS and GELU_AUX_BIAS epilogues
  const void* aux;   // the pre-activation, in D's layout: GELU_AUX writes it, DGELU reads it
};

// Everything a product's algorithm depends on: the key of the plan cache.
struct GemmKey {
  cudaDataType_t type;
  bool trans_a, trans_b;
  int64_t m, n, k;  // D is m x n, op(A) m x k, op(B) k x n
  int64_t lda, ldb, ldd;
  cublasLtEpilogue_t epilogue;
  uint32_t align_a, align_b, align_d, align_bias, align_aux;  // bytes

  auto tied() const {
    return std::tie(type, trans_a, trans_b, m, n, k, lda, ldb, ldd, epilogue, align_a, align_b,
                    align_d, align_bias, align_aux);
  }
  bool operator<(const GemmKey& o) const { return tied() < o.tied(); }
};

// The operands' alignments are part of the key: cuBLASLt's heuristic assumes 256-byte aligned
// operands unless told otherwise, which a view into a buffer need not be.
template <typename T>
GemmKey make_key(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, int64_t lda,
                 int64_t ldb, int64_t ldd, cublasLtEpilogue_t epilogue, const GemmOperands& ops) {
  GemmKey key{kDataType<T>, trans_a, trans_b, m, n, k, lda, ldb, ldd, epilogue, 0, 0, 0, 0, 0};
  key.align_a = alignment_of(ops.a);
  key.align_b = alignment_of(ops.b);
  key.align_d = alignment_of(ops.d);
  key.align_bias = alignment_of(ops.bias);
  key.align_aux = alignment_of(ops.aux);
  return key;
}

const char* epilogue_name(cublasLtEpilogue_t e) {
  switch (e) {
    case CUBLASLT_EPILOGUE_BIAS:
      return "BIAS";
    case CUBLASLT_EPILOGUE_GELU_AUX:
      return "GELU_AUX";
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS:
      return "GELU_AUX_BIAS";
    case CUBLASLT_EPILOGUE_DGELU:
      return "DGELU";
    default:
      return "DEFAULT";
  }
}

std::string describe(const GemmKey& k) {
  return std::string(k.type == CUDA_R_32F ? "float32" : "bfloat16") +
         " GEMM (column-major) m=" + std::to_string(k.m) + " n=" + std::to_string(k.n) +
         " k=" + std::to_string(k.k) + ", A " + (k.trans_a ? "transposed" : "as stored") +
         " lda=" + std::to_string(k.lda) + ", B " + (k.trans_b ? "transposed" : "as stored") +
         " ldb=" + std::to_string(k.ldb) + ", ldd=" + std::to_string(k.ldd) + ", epilogue " +
         epilogue_name(k.epilogue) + ", alignments A/B/D/bias/aux " + std::to_string(k.align_a) +
         "/" + std::to_string(k.align_b) + "/" + std::to_string(k.align_d) + "/" +
         std::to_string(k.align_bias) + "/" + std::to_string(k.align_aux) + " bytes";
}

// A product's cuBLASLt descriptors and the algorithm the heuristic chose for them; `found` is
// false when it offered none (heuristic_status then says how it answered). Owns its handles.
struct GemmPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool found = false;
  cublasStatus_t heuristic_status = CUBLAS_STATUS_SUCCESS;

  GemmPlan() = default;
  GemmPlan(const GemmPlan&) = delete;
  GemmPlan& operator=(const GemmPlan&) = delete;
  ~GemmPlan() {
    if (d != nullptr) tessera::cuda::cublaslt().MatrixLayoutDestroy(d);
    if (b != nullptr) tessera::cuda::cublaslt().MatrixLayoutDestroy(b);
    if (a != nullptr) tessera::cuda::cublaslt().MatrixLayoutDestroy(a);
    if (desc != nullptr) tessera::cuda::cublaslt().MatmulDescDestroy(desc);
  }
};

struct Preference {
  cublasLtMatmulPreference_t p = nullptr;
  Preference() { CHECK_CUBLAS(tessera::cuda::cublaslt().MatmulPreferenceCreate(&p)); }
  Preference(const Preference&) = delete;
  Preference& operator=(const Preference&) = delete;
  ~Preference() { tessera::cuda::cublaslt().MatmulPreferenceDestroy(p); }
  template <typename V>
  void set(cublasLtMatmulPreferenceAttributes_t attr, const V& value) {
    CHECK_CUBLAS(
        tessera::cuda::cublaslt().MatmulPreferenceSetAttribute(p, attr, &value, sizeof(value)));
  }
};

template <typename V>
void set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const V& value) {
  CHECK_CUBLAS(tessera::cuda::cublaslt().MatmulDescSetAttribute(desc, attr, &value, sizeof(value)));
}

// Points the epilogue at this call's bias and aux buffers. A cached plan was chosen for buffers
// of the same alignment, which is all the heuristic reads of these pointers.
void set_epilogue_pointers(cublasLtMatmulDesc_t desc, const GemmKey& key, const GemmOperands& ops) {
  if (uses_bias(key.epilogue)) set_desc(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, ops.bias);
  if (uses_aux(key.epilogue)) set_desc(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, ops.aux);
}

std::unique_ptr<GemmPlan> make_plan(const GemmKey& key, const GemmOperands& ops) {
  auto plan = std::make_unique<GemmPlan>();
  CHECK_CUBLAS(
      tessera::cuda::cublaslt().MatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_a = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  set_desc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, op_a);
  set_desc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, op_b);
  set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, key.epilogue);
  if (uses_bias(key.epilogue)) set_desc(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, key.type);
  // The aux (pre-activation) matrix has D's type and layout; cuBLASLt wants its leading dimension
  // divisible by 8, which the caller has checked.
  if (uses_aux(key.epilogue)) set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, key.ldd);
  set_epilogue_pointers(plan->desc, key, ops);

  const uint64_t rows_a = key.trans_a ? key.k : key.m, cols_a = key.trans_a ? key.m : key.k;
  const uint64_t rows_b = key.trans_b ? key.n : key.k, cols_b = key.trans_b ? key.k : key.n;
  CHECK_CUBLAS(
      tessera::cuda::cublaslt().MatrixLayoutCreate(&plan->a, key.type, rows_a, cols_a, key.lda));
  CHECK_CUBLAS(
      tessera::cuda::cublaslt().MatrixLayoutCreate(&plan->b, key.type, rows_b, cols_b, key.ldb));
  CHECK_CUBLAS(
      tessera::cuda::cublaslt().MatrixLayoutCreate(&plan->d, key.type, key.m, key.n, key.ldd));

  Preference pref;
  pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
           static_cast<uint64_t>(tessera::cuda::cublaslt_workspace_bytes()));
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_d);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_d);
  // A refusal (no algorithm, or a configuration this cuBLASLt does not support) is not an error
  // here: the caller falls back or reports it.
  cublasLtMatmulHeuristicResult_t result{};
  int count = 0;
  plan->heuristic_status = tessera::cuda::cublaslt().MatmulAlgoGetHeuristic(
      tessera::cuda::cublaslt_handle(), plan->desc, plan->a, plan->b, plan->d, plan->d, pref.p, 1,
      &result, &count);
  plan->found = plan->heuristic_status == CUBLAS_STATUS_SUCCESS && count > 0;
  plan->algo = result.algo;
  return plan;
}

// Plans by key, built on first use and kept for the process, like the cuBLASLt handle: a
// training run meets a handful of shapes. The mutex makes one call's lookup, pointer update and
// enqueue a single step.
std::mutex g_plans_mutex;
std::map<GemmKey, std::unique_ptr<GemmPlan>>& plans() {
  static auto* cache = new std::map<GemmKey, std::unique_ptr<GemmPlan>>();
  return *cache;
}

// Queues D = op(A) op(B) (+ epilogue) + beta D on the compute stream and returns true; or
// returns false with nothing queued, and why in *refusal, when cuBLASLt has no algorithm for it.
bool try_gemm(const GemmKey& key, const GemmOperands& ops, float beta,
              std::string* refusal = nullptr) {
  std::lock_guard<std::mutex> lock(g_plans_mutex);
  std::unique_ptr<GemmPlan>& plan = plans()[key];
  if (plan == nullptr) plan = make_plan(key, ops);
  if (!plan->found) {
    if (refusal != nullptr)
      *refusal = "cuBLASLt offers no algorithm (heuristic status " +
                 std::to_string(plan->heuristic_status) + ") for a " + describe(key);
    return false;
  }
  set_epilogue_pointers(plan->desc, key, ops);
  const float alpha = 1.0f;
  CHECK_CUBLAS(tessera::cuda::cublaslt().Matmul(
      tessera::cuda::cublaslt_handle(), plan->desc, &alpha, ops.a, plan->a, ops.b, plan->b, &beta,
      ops.d, plan->d, ops.d, plan->d, &plan->algo, tessera::cuda::cublaslt_workspace(),
      tessera::cuda::cublaslt_workspace_bytes(), tessera::cuda::compute_stream()));
  return true;
}

void gemm(const GemmKey& key, const GemmOperands& ops, float beta) {
  std::string refusal;
  TESSERA_CHECK(try_gemm(key, ops, beta, &refusal), "matmul (CUDA): " + refusal);
}

// out[M, N] = inp[M, K] @ weight[N, K]^T (+ bias), and with aux the GELU epilogue writing
// gelu into out and the pre-activation into aux. Column-major: out^T (N x M, ld N) =
// op_T(weight as stored: K x N, ld K) * inp as stored (K x M, ld K).
struct Gemm {
  GemmKey key;
  GemmOperands ops;
};
template <typename T>
Gemm forward_gemm(T* out, const T* inp, const T* weight, const T* bias, T* aux, int64_t M,
                  int64_t K, int64_t N) {
  const cublasLtEpilogue_t epilogue =
      aux != nullptr
          ? (bias != nullptr ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX)
          : (bias != nullptr ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT);
  const GemmOperands ops{weight, inp, out, bias, aux};
  return Gemm{make_key<T>(true, false, N, M, K, K, K, N, epilogue, ops), ops};
}

// dbias[N] += the column sums of dout[M, N], M and N > 0.
template <typename D>
void bias_backward(D* dbias, const D* dout, int64_t M, int64_t N) {
  cudaStream_t stream = tessera::cuda::compute_stream();
  const int64_t chunks = column_sums::chunks_of(M);
  StreamScratch partials(static_cast<size_t>(chunks * N) * sizeof(float));
  // Whole packs need an aligned base pointer and rows a whole number of packs long.
  const bool packed = N % kPack == 0 && packable(dout);
  bias_backward_partials_kernel<<<column_sums::partials_grid(M, N), column_sums::partials_block(),
                                  0, stream>>>(partials.as<float>(), dout, M, N, packed);
  CHECK_LAUNCH();
  column_sums::
      finish_kernel<<<column_sums::finish_grid(N), column_sums::finish_block(), 0, stream>>>(
          column_sums::ColumnSums<D, 1>{{dbias}, {partials.as<float>()}}, chunks, N);
  CHECK_LAUNCH();
}

}  // namespace

template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int64_t M, int64_t K,
                    int64_t N) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    fill_rows_kernel<<<blocks_for(M * N, kFillThreads), kFillThreads, 0,
                       tessera::cuda::compute_stream()>>>(dev(out), dev(bias), M, N);
    CHECK_LAUNCH();
    return;
  }
  const Gemm g = forward_gemm(out, inp, weight, bias, static_cast<T*>(nullptr), M, K, N);
  gemm(g.key, g.ops, 0.0f);
}

template <typename T>
void matmul_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                     int64_t M, int64_t K, int64_t N) {
  if (M == 0) return;
  if (N == 0) {  // the product over an empty inner dimension
    if (dinp != nullptr && K > 0)
      CHECK_CUDA(cudaMemsetAsync(dinp, 0, static_cast<size_t>(M * K) * sizeof(T),
                                 tessera::cuda::compute_stream()));
    return;
  }
  if (dbias != nullptr) bias_backward(dev(dbias), dev(dout), M, N);
  if (K == 0) return;
  // dinp[M, K] = dout[M, N] @ weight[N, K]: beta 0, so dinp is neither zeroed nor read first.
  // Column-major: dinp^T (K x M, ld K) = weight as stored (K x N, ld K) * dout as stored
  // (N x M, ld N).
  if (dinp != nullptr) {
    const GemmOperands ops{weight, dout, dinp, nullptr, nullptr};
    gemm(make_key<T>(false, false, K, M, N, K, N, K, CUBLASLT_EPILOGUE_DEFAULT, ops), ops, 0.0f);
  }
  // dweight[N, K] += dout^T @ inp[M, K]. Column-major: dweight^T (K x N, ld K) +=
  // inp as stored (K x M, ld K) * op_T(dout as stored: N x M, ld N).
  if (dweight != nullptr) {
    const GemmOperands ops{inp, dout, dweight, nullptr, nullptr};
    gemm(make_key<T>(false, true, K, N, M, K, N, K, CUBLASLT_EPILOGUE_DEFAULT, ops), ops, 1.0f);
  }
}

// The fused epilogue (cuBLASLt's GELU is the tanh form, as gelu.h) is used in bf16 only: its
// tanh may be a fast approximation, invisible under bf16 rounding but not within the F32 path's
// fp32 tolerance, so F32 runs GEMM + bias, then the accurate gelu kernel. The aux matrix's
// leading dimension N must also be divisible by 8 and aux 16-byte aligned (cuBLASLt takes no
// alignment preference for it, as matmul_gelu_backward); other shapes, and any configuration
// cuBLASLt has no fused algorithm for, take the same unfused route.
template <typename T>
bool matmul_gelu_forward(T* out, T* pre_gelu, const T* inp, const T* weight, const T* bias,
                         int64_t M, int64_t K, int64_t N) {
  if (M == 0 || N == 0) return false;
  if (std::is_same_v<T, bf16> && K > 0 && N % 8 == 0 && alignment_of(pre_gelu) >= 16) {
    const Gemm fused = forward_gemm(out, inp, weight, bias, pre_gelu, M, K, N);
    if (try_gemm(fused.key, fused.ops, 0.0f)) return true;
  }
  matmul_forward(pre_gelu, inp, weight, bias, M, K, N);
  gelu_forward(out, static_cast<const T*>(pre_gelu), M * N);
  return false;
}

// cuBLASLt's DGELU epilogue multiplies the product by gelu'(aux) as it stores it, aux being the
// pre-activation in GELU_AUX's layout. bf16 only, for the reason matmul_gelu_forward gives; the
// aux leading dimension K must be divisible by 8 and aux 16-byte aligned. Otherwise, when not
// asked for, or when cuBLASLt offers no fused algorithm: the GEMM, then the gelu kernel in place.
template <typename T>
bool matmul_gelu_backward(T* dpre, T* dweight, T* dbias, const T* dout, const T* inp,
                          const T* pre_gelu, const T* weight, int64_t M, int64_t K, int64_t N,
                          bool epilogue) {
  if (M == 0) return false;
  bool fused = false;
  if (epilogue && std::is_same_v<T, bf16> && K > 0 && N > 0 && K % 8 == 0 &&
      alignment_of(pre_gelu) >= 16) {
    // As matmul_backward's dinp product (beta 0), with the epilogue reading pre_gelu.
    const GemmOperands ops{weight, dout, dpre, nullptr, pre_gelu};
    const GemmKey key = make_key<T>(false, false, K, M, N, K, N, K, CUBLASLT_EPILOGUE_DGELU, ops);
    std::string refusal;
    fused = try_gemm(key, ops, 0.0f, &refusal);
    // Asked for and refused: said once per process, so that a run (or a benchmark) shows it.
    static std::once_flag told;
    if (!fused)
      std::call_once(told, [&] {
        std::fprintf(stderr, "matmul_gelu_backward: %s; the GEMM, then the gelu kernel\n",
                     refusal.c_str());
      });
  }
  if (!fused) {
    matmul_backward(dpre, static_cast<T*>(nullptr), static_cast<T*>(nullptr), dout, inp, weight, M,
                    K, N);
    gelu_backward(dpre, static_cast<const T*>(dpre), pre_gelu, M * K);
  }
  matmul_backward(static_cast<T*>(nullptr), dweight, dbias, dout, inp, weight, M, K, N);
  return fused;
}

#define TESSERA_MATMUL_INSTANTIATE(T)                                                           \
  template void matmul_forward<T>(T*, const T*, const T*, const T*, int64_t, int64_t, int64_t); \
  template void matmul_backward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t,  \
                                   int64_t);                                                    \
  template bool matmul_gelu_forward<T>(T*, T*, const T*, const T*, const T*, int64_t, int64_t,  \
                                       int64_t);                                                \
  template bool matmul_gelu_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,     \
                                        int64_t, int64_t, int64_t, bool);
TESSERA_MATMUL_INSTANTIATE(float)
TESSERA_MATMUL_INSTANTIATE(bf16)
#undef TESSERA_MATMUL_INSTANTIATE

}  // namespace tessera::ops::cuda
