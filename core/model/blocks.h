// TransformerBlock: one pre-LayerNorm GPT-2 layer, tensor-parallel in Megatron's way.
//   x1 = x0 + proj(attention(qkv(ln1(x0))))      qkv column-parallel, proj row-parallel
//   x2 = x1 + down(gelu(up(ln2(x1))))              up column-parallel, down row-parallel
// The communication is that of the layers in tensor_parallel.h: one all-reduce over TP after
// each row-parallel matmul in the forward, one after each column-parallel matmul's input
// gradient in the backward (the conjugate pairs). With sequence parallelism the residual stream,
// the LayerNorms and their outputs hold this rank's rows of the [B T, C] tokens only: each
// all-reduce is a reduce-scatter, an all-gather of the LayerNorm's output feeds each
// column-parallel matmul, and the backward gathers again what it needs whole (the LayerNorm
// outputs, as Megatron-LM does, rather than keeping them whole). Forward and backward sit side
// by side.
#pragma once

#include <vector>

#include "core/communicator.h"
#include "core/model/config.h"
#include "core/model/param.h"
#include "core/model/tensor_parallel.h"

namespace tessera {

// What one layer's forward saves for its backward, for one microbatch of B sequences. With
// recompute, the tensors a layer does not keep are views of one set shared by every layer
// (make_activations' `shared`), which its backward refills just before it needs them.
// Shapes without sequence parallelism; with it, [B, T, C] and [B*T] are [B*T/tp, C] and
// [B*T/tp], this rank's rows.
struct BlockActivations {
  Tensor ln1, ln1_mean, ln1_rstd;  // [B, T, C], [B*T], [B*T]
  Tensor qkv;                      // [B, T, 3 C/tp]
  Tensor att;  // what attention saves: [B, H/tp, T, T] probabilities (CPU), [B, H/tp, T] LSE (cuda)
  Tensor atty;                     // [B, T, C/tp] attention output before the projection
  Tensor x1;                       // [B, T, C] residual stream after attention
  Tensor ln2, ln2_mean, ln2_rstd;  // as ln1
  Tensor fc, fc_gelu;              // [B, T, F/tp]
};

// Gradient buffers reused by every layer's backward.
struct BlockScratch {
  // [B, T, C] a row-parallel layer's output (all-reduced in place; with sequence parallelism
  // the partial sums before the reduce-scatter), and with sequence parallelism also what is
  // gathered whole (a LayerNorm's output, the residual stream's gradient).
  Tensor proj;
  // [B, T, C] a column-parallel layer's input gradient (all-reduced in place; with sequence
  // parallelism the partial sums before the reduce-scatter); under full recompute also the
  // layer's output, which the rerun forward writes and nothing reads.
  Tensor dln;
  Tensor datty;  // [B, T, C/tp]
  Tensor dqkv;   // [B, T, 3 C/tp]
  Tensor dfc;    // [B, T, F/tp]: the gradient of fc, the GELU's input
  // Sequence parallelism only: this rank's rows [B*T/tp, C] of a reduce-scatter's sum, and the
  // LayerNorms' parameter gradients from this rank's rows [4, C], summed over TP.
  Tensor rows, norm_grads;
};

class TransformerBlock {
 public:
  TransformerBlock(const ModelConfig& cfg, const ModelShard& shard, int64_t layer);
  std::vector<Param*> params();
  int64_t layer() const { return layer_; }  // its index in the whole model

  // Without `shared`, every tensor is new: a full set. With it (a full set from this call,
  // shared by every layer), the tensors the recompute mode does not keep are `shared`'s.
  BlockActivations make_activations(int64_t B, const BlockActivations* shared = nullptr) const;
  BlockScratch make_scratch(int64_t B) const;

  // x2 = block(x0); x0 and x2 are [B, T, C] ([B*T/tp, C] with sequence parallelism) and must
  // be different tensors.
  void forward(Tensor& x2, const Tensor& x0, BlockActivations& a, BlockScratch& s,
               Communicator& tp);
  // In place: dx holds d loss / d x2 on entry and d loss / d x0 on return; parameter gradients
  // are accumulated. With recompute, first refills the tensors `a` shares (so `a` is written).
  void backward(Tensor& dx, const Tensor& x0, BlockActivations& a, BlockScratch& s,
                Communicator& tp);

  Param ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, up_w, up_b, down_w, down_b;

 private:
  // The four linear layers, as views of this block's Params.
  ColumnParallelLinear qkv() { return {qkv_w, &qkv_b}; }
  RowParallelLinear proj() { return {proj_w, &proj_b}; }
  ColumnParallelLinear up() { return {up_w, &up_b}; }
  RowParallelLinear down() { return {down_w, &down_b}; }
  // Reruns the forward parts whose outputs `a` shares instead of keeping.
  void recompute(const Tensor& x0, BlockActivations& a, BlockScratch& s, Communicator& tp);
  // The communication that sequence parallelism changes (tensor_parallel.h), either way:
  // a column-parallel layer's input from this rank's tokens (x itself, or gathered into s.proj);
  Tensor all_tokens(const Tensor& x, BlockScratch& s, Communicator& tp) const;
  // a row-parallel layer's output (the whole of it, or this rank's rows). (A column-parallel
  // layer's input gradient: ColumnParallelLinear::input_backward.)
  Tensor row_parallel(const RowParallelLinear& layer, const Tensor& inp, BlockScratch& s,
                      Communicator& tp) const;
  int64_t layer_, C_, T_, local_heads_, local_ff_;
  ModelShard shard_;  // its TP rank and size, and whether sequence parallel
  Recompute recompute_;
  DType dtype_;
  DType stats_dtype_;  // LayerNorm statistics
  Device device_;
};

}  // namespace tessera
