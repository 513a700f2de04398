// Param: one named parameter tensor as this rank holds it: its global name and shape, how it is
// split over tensor-parallel ranks, the local values and their gradient. Initial values are a
// function of (seed, global name, global element index) only (core/rng.h), so every layout
// starts from the same weights.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/model/config.h"
#include "core/tensor.h"

namespace tessera {

enum class ParamKind { Weight, Bias, Norm, Embedding };  // decides weight decay

enum class ParamInit { Normal, Zeros, Ones };

// The start of rank r's piece when `extent` rows are cut into `size` contiguous pieces that differ
// by at most one row: [extent r / size, extent (r + 1) / size).
inline int64_t tp_piece_begin(int64_t extent, int rank, int size) {
  return extent * rank / size;
}
// The rows of that piece.
inline int64_t tp_piece_size(int64_t extent, int rank, int size) {
  return tp_piece_begin(extent, rank + 1, size) - tp_piece_begin(extent, rank, size);
}

struct Param {
  std::string name;  // global name, e.g. "layers/03/attn/qkv/weight"
  ParamKind kind = ParamKind::Weight;
  ParamInit init = ParamInit::Normal;
  double init_std = 0.02;
  Shape global_shape;
  // Tensor-parallel split: dimension split_dim (or -1: replicated on every TP rank) is cut into
  // `groups` equal blocks (3 for the fused q|k|v projection), and each block into tp_size
  // contiguous pieces; rank r holds piece r of every block. Pieces may differ by one row when
  // the extent is not divisible (the vocabulary): piece r = [E*r/tp, E*(r+1)/tp).
  int split_dim = -1;
  int groups = 1;
  int tp_rank = 0;
  int tp_size = 1;

  // This rank's copy of a tensor that another pipeline stage holds too (the LM head tied to the
  // token embedding, on the last stage): its gradient is summed over the embedding group, and
  // it is counted once, on the first stage, in norms and checkpoints.
  bool tied_copy = false;

  // The local shard. Once a Trainer has started, views into GradBuckets' flat buffers of all the
  // values and all the gradients, which then own the memory (parallel/grad_buckets.h).
  Tensor value;
  Tensor grad;  // same shape as value

  bool tp_replicated() const { return split_dim < 0 || tp_size == 1; }
  // Whether this rank's copy counts when summing over the model-parallel ranks: TP-replicated
  // tensors count on TP rank 0, tied copies not at all.
  bool counted_here() const { return (!tp_replicated() || tp_rank == 0) && !tied_copy; }
  // [begin, end) of this rank's piece within one block of the split dimension (a tensor with
  // one: split_dim >= 0; with tp_size 1 the whole block).
  int64_t piece_begin() const;
  int64_t piece_end() const;
  Shape local_shape() const;
  // Index in the row-major global tensor of element `local_index` of the local shard.
  int64_t global_index(int64_t local_index) const { return index_map()(local_index); }
  // global_index with the shard's layout worked out once, for a walk over every element.
  struct IndexMap {
    bool identity = true;                         // TP-replicated: the same index
    int64_t inner = 1;                            // elements after the split dimension
    int64_t local_extent = 1, global_extent = 1;  // of the split dimension
    int64_t piece = 1, block = 1, begin = 0;      // this rank's piece of each of its blocks
    int64_t operator()(int64_t local_index) const {
      if (identity) return local_index;
      const int64_t outer = local_index / (inner * local_extent);
      const int64_t local_d = (local_index / inner) % local_extent;
      const int64_t global_d = (local_d / piece) * block + begin + local_d % piece;
      return (outer * global_extent + global_d) * inner + local_index % inner;
    }
  };
  IndexMap index_map() const;
  // Allocates value and grad (zeroed) of `dtype` on `device` and fills value from (seed, name,
  // global index), computed on the host in float64 (F64) or float32 (F32, BF16 rounded from it).
  void materialize(uint64_t seed, DType dtype, Device device = Device::CPU);
};

// A Param of this rank's shard, not yet materialized. split_dim = -1: replicated over TP.
Param make_param(std::string name, ParamKind kind, ParamInit init, double init_std,
                 Shape global_shape, int split_dim, int groups, const ModelShard& shard);

}  // namespace tessera
