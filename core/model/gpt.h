// GPT: the GPT-2 family decoder as one pipeline stage of one tensor-parallel rank holds it.
// With the default ModelShard it is the whole plain model. Data flow of a training microbatch:
//   tokens -> vocab-parallel embedding (+ positions) -> blocks -> final LayerNorm
//          -> LM head tied to the token embedding -> vocab-parallel cross-entropy -> loss,
// then backward() in reverse, accumulating into every Param's grad. Activations live in a
// GPTActivations per in-flight microbatch; the pipeline schedule may keep several.
#pragma once

#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "core/communicator.h"
#include "core/model/blocks.h"
#include "core/model/config.h"
#include "core/model/param.h"
#include "core/model/tensor_parallel.h"

namespace tessera {

struct GPTActivations {
  int64_t B = 0;
  int chunk = 0;                 // the model chunk they are of (ModelShard::chunks)
  Tensor inputs, targets;        // I32 [B, T]: the token ids (first chunk), the targets (last)
  std::vector<Tensor> residual;  // residual[i]: input of the chunk's i-th block, [B, T, C]
                                 // (GPT::stage_shape); residual.back() is the chunk's output
  std::vector<BlockActivations> blocks;
  Tensor lnf, lnf_mean, lnf_rstd;  // final LayerNorm (last stage)
  Tensor logits;                   // [B*T, V/tp]; holds d logits after backward
  Tensor losses, lse;              // [B*T]
};

// The parts of a chunk's activations (GPT::make_activations): its layers' (the residual stream
// at each layer's input and the chunk's output, the blocks'), which serve any chunk of as many
// layers, so the chunks of a pipeline stage share them (parallel/pipeline.h); and its ends' (the
// token ids of the model's first chunk; the final norm, logits, losses and targets of its last).
enum class ActivationParts { All, Layers, Ends };

// How many activation sets a model shard keeps at once: ends[c] of chunk c's ends, and layers[L]
// of the layers' part of a chunk of L layers, shared by the chunks of L layers.
struct ActivationSets {
  std::vector<int> ends;
  std::map<int64_t, int> layers;
};

// Called by backward() with each Param as soon as its gradient holds this backward's last
// contribution, so that data-parallel reduction can start while the backward goes on.
using GradReadyFn = std::function<void(Param&)>;

class GPT {
 public:
  GPT(const ModelConfig& cfg, const ModelShard& shard, Communicator& tp, uint64_t seed);

  const ModelConfig& config() const { return cfg_; }
  const ModelShard& shard() const { return shard_; }
  std::vector<Param*> params();  // every chunk's chunk_params, in order
  // The Params of chunk c: with the embedding or the LM head the token embedding, the positions
  // with the embedding, the chunk's blocks, the final norm with the head.
  std::vector<Param*> chunk_params(int chunk);
  int64_t num_local_params();
  void zero_grad();

  // The model chunks of this rank (ModelShard::chunks): 1 unless --parallel.virtual_stages > 1
  // (parallel/pipeline_schedule.h, the interleaved schedule).
  int chunks() const { return static_cast<int>(chunk_start_.size()) - 1; }
  // Whether chunk c starts with the embedding (the model's first) or ends with the LM head and
  // the loss (its last).
  bool has_embedding(int chunk) const { return shard_.has_embedding && chunk == 0; }
  bool has_head(int chunk) const { return shard_.has_head && chunk == chunks() - 1; }

  GPTActivations make_activations(int64_t B, int chunk = 0,
                                  ActivationParts parts = ActivationParts::All) const;
  // The residual stream between layers and stages for a micro-batch of B sequences: [B, T, C],
  // or with sequence parallelism this rank's rows of its tokens, [B*T/tp, C].
  Shape stage_shape(int64_t B) const;

  // Forward of one microbatch through a's chunk. The first chunk: inputs are token ids
  // (I32 [B, T]); others: stage_input is the previous chunk's output (stage_shape(B)). The last
  // with targets: returns the mean loss over the B*T tokens (without targets: stops at the
  // logits, for sampling).
  double forward(GPTActivations& a, const Tensor* inputs, const Tensor* targets,
                 const Tensor* stage_input = nullptr);
  // Backward of the microbatch last run through forward(a). The last chunk: the gradient of
  // loss_scale * mean loss; others: d_output is the gradient of the chunk's output. Writes
  // d_input (the gradient of the chunk's input) when given and not the first chunk. on_ready,
  // when given, is called for every Param of the chunk once its gradient is final.
  void backward(GPTActivations& a, double loss_scale, const Tensor* d_output = nullptr,
                Tensor* d_input = nullptr, const GradReadyFn* on_ready = nullptr);

  Param wte, wpe, lnf_w, lnf_b;  // wpe unused with sinusoidal positions
  std::vector<TransformerBlock> blocks;

 private:
  ModelConfig cfg_;
  ModelShard shard_;
  Communicator& tp_;
  // Chunk c's blocks are blocks[chunk_start_[c], chunk_start_[c + 1]) (chunk_blocks).
  std::vector<size_t> chunk_start_;
  std::span<TransformerBlock> chunk_blocks(int chunk);
  std::span<const TransformerBlock> chunk_blocks(int chunk) const;
  Tensor sinusoid_;  // [T, C] fixed table when cfg.pos == Sinusoidal
  int64_t vocab_start_ = 0;
  // With recompute: per microbatch size, the one set of layer activations every layer shares
  // for what it does not keep (blocks.h).
  mutable std::map<int64_t, BlockActivations> shared_acts_;
  std::unique_ptr<BlockScratch> scratch_;
  int64_t scratch_B_ = 0;
  // The residual stream's gradient where the caller gives no d_input to work in (the first
  // chunk's backward): allocated at its first use.
  Tensor dres_;
  Tensor dlnf_;     // gradient of the final LayerNorm's output (last stage)
  Tensor dlosses_;  // [B*T] d loss / d per-token loss
  // Sequence parallelism only: every token's embedding (before the reduce-scatter) or its
  // gradient (gathered), [B, T, C]; this rank's rows of the final LayerNorm's output or input
  // gradient; the final LayerNorm's parameter gradients from those rows, [2, C].
  Tensor tokens_, rows_, norm_grads_;
  // What every element of dlosses_ holds (NaN: not yet filled).
  double dlosses_value_ = std::numeric_limits<double>::quiet_NaN();
  BlockScratch& scratch(int64_t B);
  // The LM head: the token embedding as a column-parallel layer over the vocabulary.
  ColumnParallelLinear lm_head() { return {wte, nullptr}; }
  // backward()'s first and last parts: the loss, the LM head and the final norm, which leave
  // the residual stream's gradient in dres; the embeddings, from it.
  void head_backward(GPTActivations& a, double loss_scale, Tensor& dres,
                     const GradReadyFn* on_ready);
  void embedding_backward(GPTActivations& a, const Tensor& dres, const GradReadyFn* on_ready);
};

// FLOPs of one token's forward + backward (PaLM, appendix B; Megatron-LM and nanoGPT count so):
// 6 N + 12 L d T, with N every weight that takes part in a matmul (so the tied LM head counts
// once) and the attention term over the whole T x T, not halved for the causal mask. llm.c
// counts every parameter in N and halves the attention term (6 L d T): by its formula the same
// run's MFU is 0.94 of this one for GPT-2 124M and 350M, 0.97 for 1.3B.
double gpt_flops_per_token(const ModelConfig& cfg);
int64_t gpt_num_params(const ModelConfig& cfg);
// Parameters of the part `shard` of the model (GPT::num_local_params of a GPT made with it),
// from the shapes alone: its layers' TP pieces and the LayerNorms and row-parallel biases each TP
// rank keeps whole; on the first stage the embedding's vocabulary piece and the learned
// positions, on the last the tied copy of that piece (when it is not the first) and the final
// LayerNorm (docs/PARALLELISM.md, "Memory per rank").
int64_t gpt_shard_params(const ModelConfig& cfg, const ModelShard& shard);
// The layers of each of the shard's model chunks.
std::vector<int64_t> gpt_chunk_layers(const ModelConfig& cfg, const ModelShard& shard);
// Bytes of parameters, gradients and optimizer state on a rank that holds `values` parameter
// values (with their gradients), `state` of them with optimizer state (moments; fp32 masters
// with bf16): all of them, or its ZeRO-1 piece; with ZeRO-1 over several DP ranks
// (`reduced_piece`) that piece's reduced gradient too; and with bf16 and `grad_sums` the fp32
// sums of the gradients over microbatches that the Trainer's gradient buckets keep.
int64_t param_state_bytes(DType dtype, int64_t values, int64_t state, bool reduced_piece,
                          bool grad_sums = true);
// Bytes of parameter state on one rank holding the whole model, without ZeRO: values, gradients
// and AdamW's two moments in the model's dtype (16 bytes a parameter in fp32); with bf16, bf16
// values and gradients and fp32 master weights and moments (16 bytes), and with `grad_sums`
// also the fp32 sums over microbatches that the Trainer's gradient buckets keep (20 bytes; a
// model stepped by AdamW alone, as bench_train_step does, has none).
int64_t gpt_state_bytes(const ModelConfig& cfg, bool grad_sums);
// Bytes of activations and backward scratch for a microbatch of B sequences on one rank holding
// the whole model (docs/PERFORMANCE.md, "Memory"), including the workspace the chosen attention
// kernels take (ops::attention_workspace_bytes): the memory beyond gpt_state_bytes.
int64_t gpt_activation_bytes(const ModelConfig& cfg, int64_t B);
// The same for the part `shard` of the model, keeping `sets` of its chunks' activations at once
// (the pipeline's microbatches in flight; PipelineEngine adds the buffers between stages): its
// layers' TP pieces, with sequence parallelism the residual stream's 1/tp, the shared set of a
// recompute mode once, the head on the last stage, the embedding's buffers on the first
// (docs/PARALLELISM.md, "Memory per rank").
int64_t gpt_shard_activation_bytes(const ModelConfig& cfg, const ModelShard& shard, int64_t B,
                                   const ActivationSets& sets);

}  // namespace tessera
