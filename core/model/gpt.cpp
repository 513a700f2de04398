// The whole model of one stage: embedding, blocks, final norm, tied LM head, loss; and the
// formulas for its parameter count, FLOPs per token and activation memory.
#include "core/model/gpt.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "core/bytes.h"
#include "core/error.h"
#include "core/ops/attention.h"
#include "core/ops/cast.h"
#include "core/ops/cross_entropy.h"
#include "core/ops/embedding.h"
#include "core/ops/layernorm.h"
#include "core/profile.h"

namespace tessera {

GPT::GPT(const ModelConfig& cfg, const ModelShard& shard, Communicator& tp, uint64_t seed)
    : cfg_(cfg), shard_(shard), tp_(tp) {
  cfg_.validate(shard.tp_size);
  TESSERA_CHECK(tp.size() == shard.tp_size && tp.rank() == shard.tp_rank,
                "GPT: the TP communicator does not match the shard");
  if (shard_.chunks.empty()) shard_.chunks.push_back({0, cfg.layers});
  const int64_t V = cfg.vocab_size, C = cfg.d_model, T = cfg.seq_len;
  // The token embedding is also the LM head (tied), so both first and last stage hold it.
  wte = make_param("embedding/token/weight", ParamKind::Embedding, ParamInit::Normal, cfg.init_std,
                   {V, C}, 0, 1, shard);
  wpe = make_param("embedding/position/weight", ParamKind::Embedding, ParamInit::Normal,
                   cfg.init_std, {T, C}, -1, 1, shard);
  lnf_w = make_param("final_norm/weight", ParamKind::Norm, ParamInit::Ones, 0, {C}, -1, 1, shard);
  lnf_b = make_param("final_norm/bias", ParamKind::Norm, ParamInit::Zeros, 0, {C}, -1, 1, shard);
  vocab_start_ = wte.piece_begin();
  wte.tied_copy = shard.has_head && !shard.has_embedding;
  chunk_start_.push_back(0);
  for (const LayerRange& chunk : shard_.chunks) {
    for (int64_t l = chunk.begin; l < chunk.end; ++l) blocks.emplace_back(cfg, shard_, l);
    chunk_start_.push_back(blocks.size());
  }
  for (Param* p : params()) p->materialize(seed, cfg.dtype, cfg.device);
  if (cfg.pos == PositionKind::Sinusoidal) {
    const Tensor table =
        ops::sinusoidal_table(T, C, cfg.dtype == DType::F64 ? DType::F64 : DType::F32);
    sinusoid_ = ops::cast_to(table, cfg.dtype).to(cfg.device);  // rounded on the host
  }
}

std::vector<Param*> GPT::chunk_params(int chunk) {
  std::vector<Param*> ps;
  if (has_embedding(chunk) || has_head(chunk)) ps.push_back(&wte);
  if (has_embedding(chunk) && cfg_.pos == PositionKind::Learned) ps.push_back(&wpe);
  for (TransformerBlock& b : chunk_blocks(chunk))
    for (Param* p : b.params()) ps.push_back(p);
  if (has_head(chunk)) {
    ps.push_back(&lnf_w);
    ps.push_back(&lnf_b);
  }
  return ps;
}

std::span<const TransformerBlock> GPT::chunk_blocks(int chunk) const {
  const size_t begin = chunk_start_[static_cast<size_t>(chunk)];
  return {blocks.data() + begin, chunk_start_[static_cast<size_t>(chunk) + 1] - begin};
}

std::span<TransformerBlock> GPT::chunk_blocks(int chunk) {
  const std::span<const TransformerBlock> mine = std::as_const(*this).chunk_blocks(chunk);
  return {const_cast<TransformerBlock*>(mine.data()), mine.size()};
}

std::vector<Param*> GPT::params() {
  std::vector<Param*> ps;
  for (int c = 0; c < chunks(); ++c)
    for (Param* p : chunk_params(c)) ps.push_back(p);
  return ps;
}

int64_t GPT::num_local_params() {
  int64_t n = 0;
  for (Param* p : params()) n += p->value.numel();
  return n;
}

void GPT::zero_grad() {
  for (Param* p : params()) p->grad.zero();
}

Shape GPT::stage_shape(int64_t B) const {
  return shard_.stream_shape(B, cfg_.seq_len, cfg_.d_model);
}

GPTActivations GPT::make_activations(int64_t B, int chunk, ActivationParts parts) const {
  TESSERA_CHECK(chunk >= 0 && chunk < chunks(), "GPT::make_activations: no such chunk");
  const int64_t T = cfg_.seq_len, C = cfg_.d_model;
  GPTActivations a;
  a.B = B;
  a.chunk = chunk;
  const Device dev = cfg_.device;
  const bool ends = parts != ActivationParts::Layers;
  if (ends && has_embedding(chunk)) a.inputs = Tensor({B, T}, DType::I32, dev);
  if (parts != ActivationParts::Ends) {
    const std::span<const TransformerBlock> mine = chunk_blocks(chunk);
    for (size_t i = 0; i <= mine.size(); ++i)
      a.residual.emplace_back(stage_shape(B), cfg_.dtype, dev);
    const BlockActivations* shared = nullptr;
    if (cfg_.recompute != Recompute::None && !blocks.empty()) {
      auto it = shared_acts_.find(B);
      if (it == shared_acts_.end())
        it = shared_acts_.emplace(B, blocks[0].make_activations(B)).first;
      shared = &it->second;
    }
    for (const TransformerBlock& b : mine) a.blocks.push_back(b.make_activations(B, shared));
  }
  if (ends && has_head(chunk)) {
    a.lnf = Tensor({B, T, C}, cfg_.dtype, dev);
    a.lnf_mean = Tensor({shard_.stream_rows(B, T)}, cfg_.stats_dtype(), dev);
    a.lnf_rstd = Tensor({shard_.stream_rows(B, T)}, cfg_.stats_dtype(), dev);
    a.logits = Tensor({B * T, wte.local_shape()[0]}, cfg_.dtype, dev);
    a.losses = Tensor({B * T}, cfg_.stats_dtype(), dev);
    a.lse = Tensor({B * T}, cfg_.stats_dtype(), dev);
    a.targets = Tensor({B, T}, DType::I32, dev);
  }
  return a;
}

BlockScratch& GPT::scratch(int64_t B) {
  if (!scratch_ || scratch_B_ != B) {
    TESSERA_CHECK(!blocks.empty() || shard_.has_head, "GPT stage without layers or head");
    const int64_t T = cfg_.seq_len, C = cfg_.d_model;
    if (!blocks.empty())
      scratch_ = std::make_unique<BlockScratch>(blocks[0].make_scratch(B));
    else
      scratch_ = std::make_unique<BlockScratch>();
    const Device dev = cfg_.device;
    dres_ = Tensor();  // when needed (backward)
    if (shard_.has_head) {
      dlnf_ = Tensor({B, T, C}, cfg_.dtype, dev);
      dlosses_ = Tensor({B * T}, cfg_.stats_dtype(), dev);
      dlosses_value_ = std::numeric_limits<double>::quiet_NaN();
    }
    if (shard_.sequence_parallel && shard_.has_embedding)
      tokens_ = Tensor({B, T, C}, cfg_.dtype, dev);
    if (shard_.sequence_parallel && shard_.has_head) {
      rows_ = Tensor(stage_shape(B), cfg_.dtype, dev);
      norm_grads_ = Tensor({2, C}, cfg_.dtype, dev);
    }
    scratch_B_ = B;
  }
  return *scratch_;
}

// The mean of a float32 or float64 tensor on either device, summed on the host in order.
static double mean_of(const Tensor& t) {
  const Tensor host = t.device() == Device::CPU ? t : t.to(Device::CPU);
  double s = 0;
  for (int64_t i = 0; i < host.numel(); ++i)
    s += host.dtype() == DType::F32 ? host.data<float>()[i] : host.data<double>()[i];
  return s / static_cast<double>(host.numel());
}

double GPT::forward(GPTActivations& a, const Tensor* inputs, const Tensor* targets,
                    const Tensor* stage_input) {
  BlockScratch& s = scratch(a.B);
  Tensor& x0 = a.residual.front();
  const std::span<TransformerBlock> mine = chunk_blocks(a.chunk);
  if (has_embedding(a.chunk)) {
    TESSERA_CHECK(inputs != nullptr, "GPT::forward: the first stage needs token ids");
    const ProfileRange range("embedding forward");
    copy_into(a.inputs, *inputs);
    const Tensor& positions = cfg_.pos == PositionKind::Learned ? wpe.value : sinusoid_;
    if (shard_.sequence_parallel) {
      // Each token's row comes from one rank, the others add zeros: with the positions added
      // by TP rank 0 before the sum, the rows are bitwise those of the all-reduce below.
      ops::embedding_forward(tokens_, a.inputs, wte.value, vocab_start_);
      if (tp_.rank() == 0) ops::positional_forward(tokens_, positions);
      reduce_scatter_stream_ordered(tp_, x0, tokens_);
    } else {
      vocab_parallel_embedding_forward(x0, a.inputs, wte, vocab_start_, tp_);
      ops::positional_forward(x0, positions);
    }
  } else {
    TESSERA_CHECK(stage_input != nullptr, "GPT::forward: a later stage needs its input");
    copy_into(x0, *stage_input);
  }
  for (size_t i = 0; i < mine.size(); ++i) {
    const ProfileRange range("layer forward", mine[i].layer());
    mine[i].forward(a.residual[i + 1], a.residual[i], a.blocks[i], s, tp_);
  }
  if (!has_head(a.chunk)) return 0.0;
  const ProfileRange range("head and loss forward");

  if (shard_.sequence_parallel) {  // this rank's rows, then all of them for the LM head
    ops::layernorm_forward(rows_, a.lnf_mean, a.lnf_rstd, a.residual.back(), lnf_w.value,
                           lnf_b.value);
    all_gather_stream_ordered(tp_, a.lnf, rows_);
  } else {
    ops::layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, a.residual.back(), lnf_w.value,
                           lnf_b.value);
  }
  lm_head().forward(a.logits, a.lnf);
  if (!targets) return 0.0;
  copy_into(a.targets, *targets);
  ops::cross_entropy_forward(a.losses, a.lse, a.logits, a.targets.view({a.B * cfg_.seq_len}),
                             vocab_start_, tp_);
  return mean_of(a.losses);
}

namespace {

// Reports each of `params` final to the backward's hook, when there is one.
void report_ready(const GradReadyFn* on_ready, std::initializer_list<Param*> params) {
  if (on_ready)
    for (Param* p : params) (*on_ready)(*p);
}

}  // namespace

void GPT::backward(GPTActivations& a, double loss_scale, const Tensor* d_output, Tensor* d_input,
                   const GradReadyFn* on_ready) {
  BlockScratch& s = scratch(a.B);
  // The residual stream's gradient, which the layers take from the last to the first in place:
  // in d_input itself when the chunk returns one, so that nothing is copied out at the end.
  const bool in_d_input = d_input && !has_embedding(a.chunk);
  if (!in_d_input && !dres_.defined()) dres_ = Tensor(stage_shape(a.B), cfg_.dtype, cfg_.device);
  Tensor& dres = in_d_input ? *d_input : dres_;
  if (has_head(a.chunk)) {
    head_backward(a, loss_scale, dres, on_ready);
  } else {
    TESSERA_CHECK(d_output != nullptr, "GPT::backward: a non-last stage needs d_output");
    copy_into(dres, *d_output);
  }
  const std::span<TransformerBlock> mine = chunk_blocks(a.chunk);
  for (size_t i = mine.size(); i-- > 0;) {
    const ProfileRange range("layer backward", mine[i].layer());
    mine[i].backward(dres, a.residual[i], a.blocks[i], s, tp_);
    // Without a hook (every microbatch but a step's last) no list of Params is built.
    if (on_ready)
      for (Param* p : mine[i].params()) (*on_ready)(*p);
  }
  if (has_embedding(a.chunk)) embedding_backward(a, dres, on_ready);
}

void GPT::head_backward(GPTActivations& a, double loss_scale, Tensor& dres,
                        const GradReadyFn* on_ready) {
  const ProfileRange range("head and loss backward");
  // d loss / d losses[m] = loss_scale / (B T): the loss is a mean over tokens.
  // Filled when it changes only (once per run in training): a copy to the GPU waits for it.
  const double dloss = loss_scale / static_cast<double>(a.B * cfg_.seq_len);
  if (dloss != dlosses_value_) {
    Tensor host(dlosses_.shape(), dlosses_.dtype());
    host.fill(dloss);
    copy_into(dlosses_, host);
    dlosses_value_ = dloss;
  }
  ops::cross_entropy_backward(a.logits, dlosses_, a.logits, a.lse,
                              a.targets.view({a.B * cfg_.seq_len}), vocab_start_);
  dres.zero();
  // With sequence parallelism, of the summed gradient this rank's rows; the norm's parameter
  // gradients from them, summed over TP (tensor_parallel.h).
  const Tensor dlnf =
      lm_head().input_backward(shard_.sequence_parallel, rows_, dlnf_, a.logits, a.lnf, tp_);
  if (shard_.sequence_parallel) {
    norm_grads_.zero();
    Tensor dw = norm_grads_.slice0(0, 1).view({cfg_.d_model});
    Tensor db = norm_grads_.slice0(1, 2).view({cfg_.d_model});
    ops::layernorm_backward(dres, dw, db, dlnf, a.residual.back(), lnf_w.value, a.lnf_mean,
                            a.lnf_rstd);
    add_tp_sum_of_norm_grads(norm_grads_, {&lnf_w, &lnf_b}, tp_);
  } else {
    ops::layernorm_backward(dres, lnf_w.grad, lnf_b.grad, dlnf, a.residual.back(), lnf_w.value,
                            a.lnf_mean, a.lnf_rstd);
  }
  report_ready(on_ready, {&lnf_w, &lnf_b});
  if (!shard_.has_embedding) report_ready(on_ready, {&wte});
}

void GPT::embedding_backward(GPTActivations& a, const Tensor& dres, const GradReadyFn* on_ready) {
  const ProfileRange range("embedding backward");
  // Every token's gradient: with sequence parallelism gathered from the TP ranks' rows.
  if (shard_.sequence_parallel) all_gather_stream_ordered(tp_, tokens_, dres);
  const Tensor& dembedding = shard_.sequence_parallel ? tokens_ : dres;
  if (cfg_.pos == PositionKind::Learned) ops::positional_backward(wpe.grad, dembedding);
  vocab_parallel_embedding_backward(wte, dembedding, a.inputs, vocab_start_);
  report_ready(on_ready, {&wte});
  if (cfg_.pos == PositionKind::Learned) report_ready(on_ready, {&wpe});
}

int64_t gpt_num_params(const ModelConfig& c) {
  const int64_t C = c.d_model, F = c.d_ff;
  int64_t per_layer = 2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + F * C + F + C * F + C;
  int64_t n = c.vocab_size * C + c.layers * per_layer + 2 * C;
  if (c.pos == PositionKind::Learned) n += c.seq_len * C;
  return n;
}

namespace {
using Wide = WideBytes;  // byte counts (saturated_bytes)

// The rows of the vocabulary the shard's embedding and LM head hold.
int64_t vocab_rows(const ModelConfig& c, const ModelShard& s) {
  return tp_piece_size(c.vocab_size, s.tp_rank, s.tp_size);
}

}  // namespace

std::vector<int64_t> gpt_chunk_layers(const ModelConfig& c, const ModelShard& s) {
  if (s.chunks.empty()) return {c.layers};
  std::vector<int64_t> layers;
  for (const LayerRange& r : s.chunks) layers.push_back(r.end - r.begin);
  return layers;
}

int64_t gpt_shard_params(const ModelConfig& c, const ModelShard& s) {
  const int64_t C = c.d_model, F = c.d_ff, t = s.tp_size;
  // Column-parallel QKV and fc with their biases, row-parallel proj and out; kept whole: two
  // LayerNorms and the proj and out biases.
  const int64_t per_layer = (3 * C * C + 3 * C + C * C + F * C + F + C * F) / t + 4 * C + 2 * C;
  int64_t n = 0;
  for (const int64_t layers : gpt_chunk_layers(c, s)) n += layers * per_layer;
  if (s.has_embedding || s.has_head) n += vocab_rows(c, s) * C;  // one table when a stage has both
  if (s.has_embedding && c.pos == PositionKind::Learned) n += c.seq_len * C;
  if (s.has_head) n += 2 * C;
  return n;
}

int64_t param_state_bytes(DType dtype, int64_t values, int64_t state, bool reduced_piece,
                          bool grad_sums) {
  const Wide elem = dtype_size(dtype), n = values, piece = reduced_piece ? state : 0;
  if (dtype == DType::BF16)  // bf16 values and gradients; the rest fp32
    return saturated_bytes(elem * 2 * n + 4 * ((grad_sums ? n : 0) + 3 * Wide{state} + piece));
  return saturated_bytes(elem * (2 * n + 2 * Wide{state} + piece));
}

int64_t gpt_state_bytes(const ModelConfig& c, bool grad_sums) {
  const int64_t n = gpt_num_params(c);
  return param_state_bytes(c.dtype, n, n, false, grad_sums);
}

int64_t gpt_shard_activation_bytes(const ModelConfig& c, const ModelShard& s, int64_t B,
                                   const ActivationSets& sets) {
  const std::vector<int64_t> layers = gpt_chunk_layers(c, s);
  TESSERA_CHECK(sets.ends.size() == layers.size() &&
                    std::all_of(layers.begin(), layers.end(),
                                [&](int64_t L) { return sets.layers.count(L) == 1; }),
                "gpt_shard_activation_bytes: expected a number of sets per model chunk and per "
                "chunk's number of layers");
  const Wide t = s.tp_size, T = c.seq_len, C = c.d_model, BT = B * T;
  // This rank's pieces of the attention's width, its heads and the MLP (column-parallel), and
  // the residual stream's tokens: all of them, or with sequence parallelism its 1/t.
  const Wide Cl = C / t, Fl = c.d_ff / t, S = s.stream_rows(B, T);
  const int64_t Hl = c.heads / s.tp_size;
  // Bytes of an element of the model's dtype, and of the row statistics (LayerNorm mean and
  // rstd, losses, log-sum-exp), which are float32 under bf16 (ModelConfig::stats_dtype).
  const Wide elem = dtype_size(c.dtype), stat = dtype_size(c.stats_dtype());
  const Wide ids = 4;  // int32 token ids
  // What attention saves: the probabilities [B, H, T, T] on the CPU, the fp32 log-sum-exp
  // [B, H, T] on CUDA (flash attention), in its dtype (ops::attention_saved_dtype).
  Wide attention = dtype_size(ops::attention_saved_dtype(c.device, c.dtype));
  for (const int64_t d : ops::attention_saved_shape(c.device, B, Hl, c.seq_len)) attention *= d;
  // One layer's BlockActivations: the LayerNorms' inputs, outputs and statistics and the residual
  // after attention over the stream's tokens; QKV, the attention's output, fc and its GELU over
  // every token of this rank's piece.
  const Wide full_layer = elem * (3 * S * C + BT * (4 * Cl + 2 * Fl)) + stat * 4 * S + attention;
  // Recompute: what each layer keeps, plus one full set the model's layers share.
  Wide per_layer = full_layer, shared = 0;
  if (c.recompute == Recompute::Selective) {
    // The GELU output is recomputed, and on the CPU the probabilities (CUDA keeps its LSE).
    per_layer = full_layer - elem * BT * Fl - (c.device == Device::CUDA ? 0 : attention);
    shared = full_layer;
  } else if (c.recompute == Recompute::Full) {
    per_layer = 0, shared = full_layer;
  }
  // GPT::make_activations' parts, times their sets: of L layers, the residual stream at every
  // layer's input and the chunk's output, the layers'; the ends of the first chunk, its token
  // ids, and of the last, the final norm's output (every token) and statistics, the logits,
  // losses, log-sum-exp, targets.
  const Wide head = elem * BT * (C + vocab_rows(c, s)) + stat * (2 * S + 2 * BT) + ids * BT;
  Wide bytes = 0, all_layers = 0;
  for (const auto& [L, n] : sets.layers) bytes += n * (elem * (L + 1) * S * C + L * per_layer);
  for (size_t k = 0; k < layers.size(); ++k) {
    const bool first = s.has_embedding && k == 0, last = s.has_head && k + 1 == layers.size();
    bytes += sets.ends[k] * ((first ? ids * BT : 0) + (last ? head : 0));
    all_layers += layers[k];
  }
  // What the backward reuses, once per rank (GPT::scratch): BlockScratch, and with sequence
  // parallelism its rows and the LayerNorms' gradients; on the first stage the residual stream's
  // gradient (the other stages work in the gradient they send back) and with sequence
  // parallelism every token's embedding; on the last the final norm's output gradient and the
  // losses' gradient, with sequence parallelism this rank's rows of the norm and its gradients.
  if (all_layers > 0) {
    bytes += shared + elem * BT * (2 * C + 4 * Cl + Fl);
    if (s.sequence_parallel) bytes += elem * (S * C + 4 * C);
  }
  if (s.has_embedding) bytes += elem * S * C + (s.sequence_parallel ? elem * BT * C : 0);
  if (s.has_head)
    bytes += elem * BT * C + stat * BT + (s.sequence_parallel ? elem * (S * C + 2 * C) : 0);
  return saturated_bytes(bytes +
                         ops::attention_workspace_bytes(c.device, c.dtype, B, Hl, c.seq_len));
}

int64_t gpt_activation_bytes(const ModelConfig& c, int64_t B) {
  return gpt_shard_activation_bytes(c, ModelShard{}, B, ActivationSets{{1}, {{c.layers, 1}}});
}

double gpt_flops_per_token(const ModelConfig& c) {
  // Matmul weights: every layer's four projections plus the tied LM head.
  const double C = static_cast<double>(c.d_model), F = static_cast<double>(c.d_ff);
  const double N = c.layers * (4 * C * C + 2 * C * F) + c.vocab_size * C;
  return 6.0 * N + 12.0 * c.layers * C * c.seq_len;
}

}  // namespace tessera
