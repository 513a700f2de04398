// cuDNN's fused attention (attention_cudnn.h). One SDPA graph per shape and direction, built on
// first use and kept: Q, K and V are strided views of the packed qkv [B, S, 3, H, hd], out and
// dout are [B, S, H, hd], the statistics [B, H, S, 1] fp32, all seen by cuDNN as [B, H, S, hd]
// with these strides, so nothing is transposed or copied. The mask is causal from the top left
// (query t sees keys 0..t), the scale 1/sqrt(hd), fp32 softmax and accumulation. The backward
// asks for cuDNN's deterministic algorithm, as tessera's own kernels are deterministic; where
// this cuDNN has none for the shape it says so once and runs the other. Its dQ, dK and dV are
// written straight into dqkv's three column blocks.
#include "core/ops/attention_cudnn.h"

#include "core/cuda_common.cuh"
#include "core/ops/attention_cuda.h"
#include "core/out_of_memory.h"

#if TESSERA_WITH_CUDNN_FRONTEND

#include <dlfcn.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>  // the frontend's shim uses std::strlen without it
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

// cuDNN is loaded with dlopen (cudnn_handle below), not linked; the frontend reads its entry
// points from this handle. Its JSON serialisation is not needed.
#define NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING
#define CUDNN_FRONTEND_SKIP_JSON_LIB
#include <cudnn_frontend.h>

namespace cudnn_frontend {
void* cudnn_dlhandle = nullptr;
}  // namespace cudnn_frontend

namespace tessera::ops::cuda {
namespace {

namespace fe = cudnn_frontend;

// The frontend opens the CUDA runtime too: the one this binary links, not another major (a name
// set in the environment already is kept). Set during static initialisation, before main, while
// no other thread (MPI's, the CUDA driver's) can read the environment.
[[maybe_unused]] const bool kCudartNamed =
    setenv("CUDNN_FRONTEND_CUDART_LIB_NAME",
           ("libcudart.so." + std::to_string(CUDART_VERSION / 1000)).c_str(), /*overwrite=*/0) == 0;

// Where cuDNN is looked for: TESSERA_CUDNN_LIBRARY (a file), the loader's path, the toolkit's
// library folder.
void load_cudnn() {
  static const bool loaded = [] {
    std::string tried;
    fe::cudnn_dlhandle = tessera::cuda::open_cuda_library(
        "libcudnn.so.9", std::getenv("TESSERA_CUDNN_LIBRARY"), tried);
    if (fe::cudnn_dlhandle == nullptr)
      throw InputError(
          "--gpu.attention cudnn: cannot load cuDNN 9; tried" + tried +
          "\nput cuDNN's library folder on LD_LIBRARY_PATH or name libcudnn.so.9 in "
          "TESSERA_CUDNN_LIBRARY, or choose --gpu.attention tensor_cores or cuda_cores");
    // cuDNN is built for one CUDA major, whose libraries (cuBLASLt) it loads itself.
    using CudartVersion = size_t (*)();
    const auto cudart_version =
        reinterpret_cast<CudartVersion>(dlsym(fe::cudnn_dlhandle, "cudnnGetCudartVersion"));
    if (cudart_version != nullptr && cudart_version() / 1000 != CUDART_VERSION / 1000)
      throw InputError("--gpu.attention cudnn: the cuDNN found was built for CUDA " +
                       std::to_string(cudart_version() / 1000) + ", this tessera for CUDA " +
                       std::to_string(CUDART_VERSION / 1000) + ": install cuDNN 9 for CUDA " +
                       std::to_string(CUDART_VERSION / 1000) +
                       " or name its libcudnn.so.9 in TESSERA_CUDNN_LIBRARY, or choose "
                       "--gpu.attention tensor_cores or cuda_cores");
    return true;
  }();
  (void)loaded;
}

cudnnHandle_t cudnn_handle() {
  load_cudnn();
  static cudnnHandle_t handle = [] {
    cudnnHandle_t h = nullptr;
    const cudnnStatus_t st = fe::detail::create_handle(&h);
    if (st != CUDNN_STATUS_SUCCESS)
      throw InputError("--gpu.attention cudnn: cudnnCreate failed: " +
                       std::string(fe::detail::get_error_string(st)));
    return h;
  }();
  const cudnnStatus_t st = fe::detail::set_stream(handle, tessera::cuda::compute_stream());
  TESSERA_CHECK(st == CUDNN_STATUS_SUCCESS,
                "cudnnSetStream: " + std::string(fe::detail::get_error_string(st)));
  return handle;
}

// The graphs' tensors, by the uid that binds each to a pointer at execution.
enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV };

struct Shape4 {
  int64_t B, S, H, hd;
  bool operator<(const Shape4& o) const {  // a graph cache key (the .cu files are C++17)
    return std::tie(B, S, H, hd) < std::tie(o.B, o.S, o.H, o.hd);
  }
};

// Strides, in elements, of [B, H, S, hd] views: into qkv [B, S, 3 H hd] (Q at column 0, K at
// H hd, V at 2 H hd) and into out / dout [B, S, H hd]; the statistics are [B, H, S, 1].
std::vector<int64_t> dims_of(const Shape4& s) {
  return {s.B, s.H, s.S, s.hd};
}
std::vector<int64_t> qkv_strides(const Shape4& s) {
  const int64_t row = 3 * s.H * s.hd;
  return {s.S * row, s.hd, row, 1};
}
std::vector<int64_t> out_strides(const Shape4& s) {
  const int64_t row = s.H * s.hd;
  return {s.S * row, s.hd, row, 1};
}

std::string shape_text(const Shape4& s) {
  return "B " + std::to_string(s.B) + ", T " + std::to_string(s.S) + ", heads " +
         std::to_string(s.H) + ", head_dim " + std::to_string(s.hd);
}

// cuDNN cannot build a graph: what a shape it does not support gives. `unsupported`: cuDNN said
// it has no algorithm (or plan) for it, as opposed to an error on the way.
struct Refused : InputError {
  Refused(const std::string& what, bool unsupported) : InputError(what), unsupported(unsupported) {}
  bool unsupported;
};

// The failures that mean "this cuDNN has nothing for this graph", not that something broke.
bool is_unsupported(fe::error_code_t code) {
  return code == fe::error_code_t::GRAPH_NOT_SUPPORTED ||
         code == fe::error_code_t::GRAPH_EXECUTION_PLAN_CREATION_FAILED ||
         code == fe::error_code_t::HEURISTIC_QUERY_FAILED;
}

// A step of building a graph that failed: Refused, naming the option and the alternatives.
void expect(fe::error_t status, const char* step, const Shape4& s, bool backward) {
  if (status.is_good()) return;
  throw Refused("--gpu.attention cudnn: cuDNN " + fe::detail::get_backend_version_string() +
                    " cannot run causal bf16 attention " + (backward ? "backward" : "forward") +
                    " for " + shape_text(s) + " (" + step + ": " + status.get_message() +
                    "); choose --gpu.attention tensor_cores or cuda_cores",
                is_unsupported(status.get_code()));
}

// A step of running a built graph that failed: tessera's error, not the input's.
void expect_run(fe::error_t status, const char* step, const Shape4& s, bool backward) {
  if (status.is_good()) return;
  fail_internal(__FILE__, __LINE__,
                std::string("cuDNN attention ") + (backward ? "backward" : "forward") + " for " +
                    shape_text(s) + ": " + step + " failed: " + status.get_message() + " " +
                    fe::detail::get_last_error_string_() +
                    " (CUDA: " + cudaGetErrorString(cudaGetLastError()) + ")");
}

using Graph = fe::graph::Graph;
using Tensor_attributes = fe::graph::Tensor_attributes;

// sm: the compute capability to build for, as 90; 0 for the current GPU's.
std::shared_ptr<Graph> new_graph(int sm) {
  auto g = std::make_shared<Graph>();
  if (sm > 0) g->set_sm_version(sm);
  g->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  return g;
}

std::shared_ptr<Tensor_attributes> input(Graph& g, const char* name, Uid uid,
                                         std::vector<int64_t> dims, std::vector<int64_t> strides) {
  return g.tensor(
      Tensor_attributes().set_name(name).set_uid(uid).set_dim(dims).set_stride(strides));
}

// Q, K and V: views of the packed qkv.
std::array<std::shared_ptr<Tensor_attributes>, 3> qkv_inputs(Graph& g, const Shape4& s) {
  return {input(g, "Q", kQ, dims_of(s), qkv_strides(s)),
          input(g, "K", kK, dims_of(s), qkv_strides(s)),
          input(g, "V", kV, dims_of(s), qkv_strides(s))};
}

std::vector<int64_t> stats_dims(const Shape4& s) {
  return {s.B, s.H, s.S, 1};
}
std::vector<int64_t> stats_strides(const Shape4& s) {
  return {s.H * s.S, s.S, 1, 1};
}

// Validates the graph, asks cuDNN's heuristics for plans (its fallback list after them) and
// builds the first that works.
void finish(Graph& g, const Shape4& s, bool backward) {
  cudnnHandle_t handle = cudnn_handle();
  expect(g.validate(), "validate", s, backward);
  expect(g.build_operation_graph(handle), "build_operation_graph", s, backward);
  expect(g.create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK}),
         "create_execution_plans", s, backward);
  expect(g.check_support(), "check_support", s, backward);
  expect(g.build_plans(), "build_plans", s, backward);
}

std::shared_ptr<Graph> forward_graph(const Shape4& s, int sm = 0) {
  load_cudnn();
  auto g = new_graph(sm);
  auto [q, k, v] = qkv_inputs(*g, s);
  auto options = fe::graph::SDPA_attributes()
                     .set_name("attention")
                     .set_generate_stats(true)
                     .set_attn_scale(attention_scale(s.hd))
                     .set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT)
                     .set_diagonal_band_right_bound(0);
  auto [o, stats] = g->sdpa(q, k, v, options);
  o->set_output(true).set_uid(kO).set_dim(dims_of(s)).set_stride(out_strides(s));
  stats->set_output(true)
      .set_uid(kStats)
      .set_data_type(fe::DataType_t::FLOAT)
      .set_dim(stats_dims(s))
      .set_stride(stats_strides(s));
  return g;
}

std::shared_ptr<Graph> backward_graph(const Shape4& s, bool deterministic, int sm = 0) {
  load_cudnn();
  auto g = new_graph(sm);
  auto [q, k, v] = qkv_inputs(*g, s);
  auto o = input(*g, "O", kO, dims_of(s), out_strides(s));
  auto d_o = input(*g, "dO", kDO, dims_of(s), out_strides(s));
  auto stats = input(*g, "Stats", kStats, stats_dims(s), stats_strides(s));
  stats->set_data_type(fe::DataType_t::FLOAT);
  auto options = fe::graph::SDPA_backward_attributes()
                     .set_name("attention_backward")
                     .set_attn_scale(attention_scale(s.hd))
                     .set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT)
                     .set_diagonal_band_right_bound(0)
                     .set_deterministic_algorithm(deterministic);
  auto [dq, dk, dv] = g->sdpa_backward(q, k, v, o, d_o, stats, options);
  dq->set_output(true).set_uid(kDQ).set_dim(dims_of(s)).set_stride(qkv_strides(s));
  dk->set_output(true).set_uid(kDK).set_dim(dims_of(s)).set_stride(qkv_strides(s));
  dv->set_output(true).set_uid(kDV).set_dim(dims_of(s)).set_stride(qkv_strides(s));
  return g;
}

std::shared_ptr<Graph> built_forward_graph(const Shape4& s) {
  auto g = forward_graph(s);
  finish(*g, s, /*backward=*/false);
  return g;
}

// Whether backward graphs ask for cuDNN's deterministic algorithm (set_cudnn_deterministic).
bool g_deterministic = true;

// The backward graph: deterministic, if asked, where this cuDNN has such an algorithm for the
// shape.
std::shared_ptr<Graph> built_backward_graph(const Shape4& s, bool deterministic) {
  const auto build = [&](bool as_asked) {
    auto g = backward_graph(s, as_asked);
    finish(*g, s, /*backward=*/true);
    return g;
  };
  if (!deterministic) return build(false);
  try {
    return build(true);
  } catch (const Refused& e) {
    if (!e.unsupported) throw;
    std::fprintf(stderr,
                 "note: cuDNN has no deterministic attention backward for %s; its other "
                 "algorithm runs, so gradients may differ in the last bits between runs (%s)\n",
                 shape_text(s).c_str(), e.what());
    return build(false);
  }
}

// Built graphs, by shape, direction and (backward) determinism: building one takes
// milliseconds to seconds.
std::shared_ptr<Graph> graph_for(const Shape4& s, bool backward) {
  static std::mutex mutex;
  static std::map<std::tuple<Shape4, bool, bool>, std::shared_ptr<Graph>> graphs;
  std::lock_guard<std::mutex> lock(mutex);
  const bool deterministic = backward && g_deterministic;
  std::shared_ptr<Graph>& g = graphs[{s, backward, deterministic}];
  if (!g) g = backward ? built_backward_graph(s, deterministic) : built_forward_graph(s);
  return g;
}

void execute(const Graph& g, std::unordered_map<int64_t, void*>& pointers, const Shape4& s,
             bool backward) {
  int64_t workspace_bytes = 0;
  expect_run(g.get_workspace_size(workspace_bytes), "get_workspace_size", s, backward);
  // The deterministic backward's workspace grows with B H T^2 (about 2 bytes each, on Hopper
  // with cuDNN before 9.25): say so when it does not fit.
  std::unique_ptr<tessera::cuda::StreamScratch> workspace;
  try {
    workspace =
        std::make_unique<tessera::cuda::StreamScratch>(static_cast<size_t>(workspace_bytes));
  } catch (const OutOfMemory& e) {
    throw OutOfMemory(std::string(e.what()) + "; this was cuDNN's attention " +
                      (backward ? "backward" : "forward") + " workspace for " + shape_text(s) +
                      ", which --gpu.attention tensor_cores or cuda_cores do not need");
  }
  expect_run(g.execute(cudnn_handle(), pointers, workspace->as<void>()), "execute", s, backward);
}

void* mut(const void* p) {
  return const_cast<void*>(p);  // the variant pack takes void*; cuDNN only reads inputs
}

}  // namespace

bool cudnn_attention_built() {
  return true;
}

void set_cudnn_deterministic(bool deterministic) {
  g_deterministic = deterministic;
}

std::string cudnn_attention_version() {
  load_cudnn();
  return fe::detail::get_backend_version_string();
}

void validate_cudnn_attention(int64_t B, int64_t S, int64_t H, int64_t hd, int sm) {
  const Shape4 s{B, S, H, hd};
  expect(forward_graph(s, sm)->validate(), "validate", s, /*backward=*/false);
  for (const bool deterministic : {true, false})
    expect(backward_graph(s, deterministic, sm)->validate(), "validate", s, /*backward=*/true);
}

void attention_forward_cudnn(bf16* out, float* lse, const bf16* qkv, int64_t B, int64_t S,
                             int64_t H, int64_t hd) {
  const Shape4 s{B, S, H, hd};
  const int64_t C = H * hd;
  std::unordered_map<int64_t, void*> pointers{
      {kQ, mut(qkv)}, {kK, mut(qkv + C)}, {kV, mut(qkv + 2 * C)}, {kO, out}, {kStats, lse}};
  execute(*graph_for(s, /*backward=*/false), pointers, s, /*backward=*/false);
}

void attention_backward_cudnn(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                              const float* lse, int64_t B, int64_t S, int64_t H, int64_t hd) {
  const Shape4 s{B, S, H, hd};
  const int64_t C = H * hd;
  std::unordered_map<int64_t, void*> pointers{
      {kQ, mut(qkv)}, {kK, mut(qkv + C)}, {kV, mut(qkv + 2 * C)},
      {kO, mut(out)}, {kDO, mut(dout)},   {kStats, mut(lse)},
      {kDQ, dqkv},    {kDK, dqkv + C},    {kDV, dqkv + 2 * C}};
  execute(*graph_for(s, /*backward=*/true), pointers, s, /*backward=*/true);
}

}  // namespace tessera::ops::cuda

#else  // !TESSERA_WITH_CUDNN_FRONTEND

namespace tessera::ops::cuda {
namespace {

[[noreturn]] void not_built() {
  throw InputError(
      "--gpu.attention cudnn: this build has no cuDNN attention (the cuDNN frontend's headers "
      "were not found when it was configured: scripts/setup.sh installs them, and CMake's "
      "CUDNN_FRONTEND_INCLUDE_DIR names their folder); choose tensor_cores or cuda_cores");
}

}  // namespace

bool cudnn_attention_built() {
  return false;
}
std::string cudnn_attention_version() {
  not_built();
}
void validate_cudnn_attention(int64_t, int64_t, int64_t, int64_t, int) {
  not_built();
}
void set_cudnn_deterministic(bool) {}
void attention_forward_cudnn(bf16*, float*, const bf16*, int64_t, int64_t, int64_t, int64_t) {
  not_built();
}
void attention_backward_cudnn(bf16*, const bf16*, const bf16*, const bf16*, const float*, int64_t,
                              int64_t, int64_t, int64_t) {
  not_built();
}

}  // namespace tessera::ops::cuda

#endif
