// The transformer's hyper-parameters (GPT-2 family) and the slice of it one rank holds: its
// tensor-parallel shard and its pipeline stage's layers (or model chunks). validate() throws
// InputError naming the option (--model.*) when the numbers cannot make a model.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace tessera {

enum class PositionKind { Learned, Sinusoidal };

// What each layer keeps for its backward (docs/GPU.md, "Memory per GPU"):
//   None       everything its backward reads;
//   Selective  all but what is large and cheap to recompute: the GELU output (recomputed from
//              its input) and, on the CPU, the attention probabilities [B, H, T, T] (the
//              attention forward is rerun); on cuda attention keeps only [B, H, T] anyway;
//   Full       nothing but its input (the residual stream, kept anyway): the layer's forward is
//              rerun, TP all-reduces included, just before its backward.
// Losses and gradients are bitwise the same in every mode.
enum class Recompute { None, Selective, Full };

struct ModelConfig {
  int64_t vocab_size = 257;
  int64_t d_model = 256;
  int64_t layers = 4;
  int64_t heads = 4;
  int64_t d_ff = 1024;
  int64_t seq_len = 128;
  PositionKind pos = PositionKind::Learned;
  double init_std = 0.02;  // GPT-2; residual projections get init_std / sqrt(2 * layers)
  // The compute type and where the model lives: float32, float64 or bfloat16 on the CPU
  // (bfloat16 there: each op in float32, rounded; core/ops/dispatch.h); float32 or bfloat16 on
  // cuda. With bfloat16, AdamW keeps fp32 master weights and moments. LayerNorm statistics and
  // the per-token losses are float32 on cuda and under bfloat16 (row_stats_dtype).
  DType dtype = DType::F32;
  Device device = Device::CPU;
  Recompute recompute = Recompute::None;
  // The dtype of LayerNorm mean/rstd and of per-token losses on this device.
  DType stats_dtype() const { return row_stats_dtype(device, dtype); }

  // Throws InputError naming the option for impossible shapes, given the TP shard count.
  void validate(int tp_size = 1) const;
};

// Layers [begin, end).
struct LayerRange {
  int64_t begin = 0, end = 0;
};

// Which part of the model this rank holds.
struct ModelShard {
  int tp_rank = 0;
  int tp_size = 1;
  // This rank's model chunks, each a range of layers run as one piece of the pipeline: one, its
  // stage's layers; or with the interleaved schedule v of them, chunk c being virtual stage
  // c pp + stage (parallel/pipeline_schedule.h). Empty: every layer, one chunk.
  std::vector<LayerRange> chunks;
  bool has_embedding = true;  // first pipeline stage: its chunk 0 starts with the embedding
  bool has_head = true;       // last pipeline stage: its last chunk ends with the final norm,
                              // the LM head and the loss
  // Megatron-LM's sequence parallelism (Korthikanti et al. 2022), with tp_size > 1: outside the
  // attention and MLP, each TP rank holds its 1/tp of the micro-batch's tokens (rows
  // [B T r / tp, B T (r + 1) / tp) of the [B T, C] residual stream) instead of all of them
  // (tensor_parallel.h). B T must be a multiple of tp_size.
  bool sequence_parallel = false;

  // The residual stream of a micro-batch of B sequences of T tokens, C wide, on this rank:
  // [B, T, C], or with sequence parallelism its rows, [B*T/tp, C]; and the number of those rows.
  // InternalError when B*T does not split evenly.
  Shape stream_shape(int64_t B, int64_t T, int64_t C) const;
  int64_t stream_rows(int64_t B, int64_t T) const;
};

std::string position_kind_name(PositionKind k);
std::string recompute_name(Recompute r);

}  // namespace tessera
