// One GPT-2 layer, forward then backward; see blocks.h for the tensor-parallel communication.
#include "core/model/blocks.h"

#include <cmath>
#include <cstdio>

#include "core/ops/attention.h"
#include "core/ops/gelu.h"
#include "core/ops/layernorm.h"

namespace tessera {

namespace {

std::string layer_name(int64_t layer, const char* rest) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "layers/%02lld/%s", static_cast<long long>(layer), rest);
  return buf;
}

}  // namespace

TransformerBlock::TransformerBlock(const ModelConfig& cfg, const ModelShard& shard, int64_t l)
    : layer_(l),
      C_(cfg.d_model),
      T_(cfg.seq_len),
      local_heads_(cfg.heads / shard.tp_size),
      local_ff_(cfg.d_ff / shard.tp_size),
      shard_(shard),
      recompute_(cfg.recompute),
      dtype_(cfg.dtype),
      stats_dtype_(cfg.stats_dtype()),
      device_(cfg.device) {
  const int64_t C = cfg.d_model, F = cfg.d_ff;
  const double std = cfg.init_std;
  const double resid_std = cfg.init_std / std::sqrt(2.0 * cfg.layers);  // GPT-2 paper, sec. 2.3
  using K = ParamKind;
  using I = ParamInit;
  ln1_w = make_param(layer_name(l, "ln1/weight"), K::Norm, I::Ones, 0, {C}, -1, 1, shard);
  ln1_b = make_param(layer_name(l, "ln1/bias"), K::Norm, I::Zeros, 0, {C}, -1, 1, shard);
  qkv_w = make_param(layer_name(l, "attn/qkv/weight"), K::Weight, I::Normal, std, {3 * C, C}, 0, 3,
                     shard);
  qkv_b = make_param(layer_name(l, "attn/qkv/bias"), K::Bias, I::Zeros, 0, {3 * C}, 0, 3, shard);
  proj_w = make_param(layer_name(l, "attn/proj/weight"), K::Weight, I::Normal, resid_std, {C, C}, 1,
                      1, shard);
  proj_b = make_param(layer_name(l, "attn/proj/bias"), K::Bias, I::Zeros, 0, {C}, -1, 1, shard);
  ln2_w = make_param(layer_name(l, "ln2/weight"), K::Norm, I::Ones, 0, {C}, -1, 1, shard);
  ln2_b = make_param(layer_name(l, "ln2/bias"), K::Norm, I::Zeros, 0, {C}, -1, 1, shard);
  up_w = make_param(layer_name(l, "mlp/up/weight"), K::Weight, I::Normal, std, {F, C}, 0, 1, shard);
  up_b = make_param(layer_name(l, "mlp/up/bias"), K::Bias, I::Zeros, 0, {F}, 0, 1, shard);
  down_w = make_param(layer_name(l, "mlp/down/weight"), K::Weight, I::Normal, resid_std, {C, F}, 1,
                      1, shard);
  down_b = make_param(layer_name(l, "mlp/down/bias"), K::Bias, I::Zeros, 0, {C}, -1, 1, shard);
}

std::vector<Param*> TransformerBlock::params() {
  return {&ln1_w, &ln1_b, &qkv_w, &qkv_b, &proj_w, &proj_b,
          &ln2_w, &ln2_b, &up_w,  &up_b,  &down_w, &down_b};
}

BlockActivations TransformerBlock::make_activations(int64_t B,
                                                    const BlockActivations* shared) const {
  const int64_t C = C_, T = T_, Cloc = qkv_w.local_shape()[0] / 3;
  // The residual stream's tokens on this rank, and their shape.
  const int64_t rows = shard_.stream_rows(B, T);
  const Shape stream = shard_.stream_shape(B, T, C);
  const bool full = shared && recompute_ == Recompute::Full;
  const bool selective = shared && recompute_ == Recompute::Selective;
  // A tensor this layer keeps, or the shared one it borrows.
  auto kept = [&](bool keep, const Tensor BlockActivations::*field, const Shape& shape,
                  DType dtype) { return keep ? Tensor(shape, dtype, device_) : shared->*field; };
  using A = BlockActivations;
  BlockActivations a;
  a.ln1 = kept(!full, &A::ln1, stream, dtype_);
  a.ln1_mean = kept(!full, &A::ln1_mean, {rows}, stats_dtype_);
  a.ln1_rstd = kept(!full, &A::ln1_rstd, {rows}, stats_dtype_);
  a.qkv = kept(!full, &A::qkv, {B, T, 3 * Cloc}, dtype_);
  // What the attention saves depends on the device (attention.h): the probabilities on the
  // host, each row's log-sum-exp on the GPU (small: selective recompute keeps it).
  const bool keep_att = !full && !(selective && device_ == Device::CPU);
  a.att = kept(keep_att, &A::att, ops::attention_saved_shape(device_, B, local_heads_, T),
               ops::attention_saved_dtype(device_, dtype_));
  a.atty = kept(!full, &A::atty, {B, T, Cloc}, dtype_);
  a.x1 = kept(!full, &A::x1, stream, dtype_);
  a.ln2 = kept(!full, &A::ln2, stream, dtype_);
  a.ln2_mean = kept(!full, &A::ln2_mean, {rows}, stats_dtype_);
  a.ln2_rstd = kept(!full, &A::ln2_rstd, {rows}, stats_dtype_);
  a.fc = kept(!full, &A::fc, {B, T, local_ff_}, dtype_);
  a.fc_gelu = kept(!full && !selective, &A::fc_gelu, {B, T, local_ff_}, dtype_);
  return a;
}

BlockScratch TransformerBlock::make_scratch(int64_t B) const {
  const int64_t C = C_, T = T_, Cloc = qkv_w.local_shape()[0] / 3;
  BlockScratch s;
  s.proj = Tensor({B, T, C}, dtype_, device_);
  s.dln = Tensor({B, T, C}, dtype_, device_);
  s.datty = Tensor({B, T, Cloc}, dtype_, device_);
  s.dqkv = Tensor({B, T, 3 * Cloc}, dtype_, device_);
  s.dfc = Tensor({B, T, local_ff_}, dtype_, device_);
  if (shard_.sequence_parallel) {
    s.rows = Tensor(shard_.stream_shape(B, T, C), dtype_, device_);
    s.norm_grads = Tensor({4, C}, dtype_, device_);
  }
  return s;
}

Tensor TransformerBlock::all_tokens(const Tensor& x, BlockScratch& s, Communicator& tp) const {
  if (!shard_.sequence_parallel) return x;
  all_gather_stream_ordered(tp, s.proj, x);
  return s.proj;
}

Tensor TransformerBlock::row_parallel(const RowParallelLinear& layer, const Tensor& inp,
                                      BlockScratch& s, Communicator& tp) const {
  if (!shard_.sequence_parallel) {
    layer.forward(s.proj, inp, tp);
    return s.proj;
  }
  layer.forward_scatter(s.rows, s.proj, inp, tp);
  return s.rows;
}

void TransformerBlock::forward(Tensor& x2, const Tensor& x0, BlockActivations& a, BlockScratch& s,
                               Communicator& tp) {
  ops::layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x0, ln1_w.value, ln1_b.value);
  qkv().forward(a.qkv, all_tokens(a.ln1, s, tp));
  ops::attention_forward(a.atty, a.att, a.qkv, local_heads_);
  const Tensor attention_out = row_parallel(proj(), a.atty, s, tp);
  // x1 = x0 + proj, and its LayerNorm, in one pass (one kernel on the GPU).
  ops::residual_layernorm_forward(a.x1, a.ln2, a.ln2_mean, a.ln2_rstd, x0, attention_out,
                                  ln2_w.value, ln2_b.value);
  // Not matmul_gelu_forward: selective recompute reruns gelu_forward alone, and every recompute
  // mode must give the same bits, which cuBLASLt's GELU epilogue would not (its own rounding).
  up().forward(a.fc, all_tokens(a.ln2, s, tp));
  ops::gelu_forward(a.fc_gelu, a.fc);
  ops::residual_forward(x2, a.x1, row_parallel(down(), a.fc_gelu, s, tp));
}

void TransformerBlock::recompute(const Tensor& x0, BlockActivations& a, BlockScratch& s,
                                 Communicator& tp) {
  switch (recompute_) {
    case Recompute::None:
      return;
    case Recompute::Selective:
      // Kept: qkv, atty, fc. The attention output is rewritten into scratch (same values).
      if (device_ == Device::CPU) ops::attention_forward(s.datty, a.att, a.qkv, local_heads_);
      ops::gelu_forward(a.fc_gelu, a.fc);
      return;
    case Recompute::Full: {
      // The output x2 is not needed: scratch takes it (as many rows as x0 has).
      Tensor x2 = s.dln.view({s.dln.numel() / C_, C_}).slice0(0, x0.numel() / C_).view(x0.shape());
      forward(x2, x0, a, s, tp);
      return;
    }
  }
}

void TransformerBlock::backward(Tensor& dx, const Tensor& x0, BlockActivations& a, BlockScratch& s,
                                Communicator& tp) {
  recompute(x0, a, s, tp);  // before any scratch below is used
  // The LayerNorms' parameter gradients: into the Params, or with sequence parallelism (each
  // rank's rows give part of them) into scratch, summed over TP at the end.
  Tensor norm_grads[4] = {ln2_w.grad, ln2_b.grad, ln1_w.grad, ln1_b.grad};
  if (shard_.sequence_parallel) {
    s.norm_grads.zero();
    for (int64_t i = 0; i < 4; ++i) norm_grads[i] = s.norm_grads.slice0(i, i + 1).view({C_});
  }
  // MLP: the residual passes dx2 straight to x1, and the branch's LayerNorm adds its gradient
  // on top, into dx itself once the branch has read it: dx becomes dx1.
  down().backward_gelu(s.dfc, all_tokens(dx, s, tp), a.fc_gelu, a.fc);
  // The one reduction of the MLP's backward.
  const Tensor dln2 = up().input_backward(shard_.sequence_parallel, s.rows, s.dln, s.dfc,
                                          all_tokens(a.ln2, s, tp), tp);
  ops::layernorm_backward(dx, norm_grads[0], norm_grads[1], dln2, a.x1, ln2_w.value, a.ln2_mean,
                          a.ln2_rstd);

  // Attention, the same way: dx becomes dx0.
  proj().backward(&s.datty, all_tokens(dx, s, tp), a.atty);
  ops::attention_backward(s.dqkv, s.datty, a.qkv, a.atty, a.att, local_heads_);
  const Tensor dln1 = qkv().input_backward(shard_.sequence_parallel, s.rows, s.dln, s.dqkv,
                                           all_tokens(a.ln1, s, tp), tp);
  ops::layernorm_backward(dx, norm_grads[2], norm_grads[3], dln1, x0, ln1_w.value, a.ln1_mean,
                          a.ln1_rstd);
  if (shard_.sequence_parallel)
    add_tp_sum_of_norm_grads(s.norm_grads, {&ln2_w, &ln2_b, &ln1_w, &ln1_b}, tp);
}

}  // namespace tessera
