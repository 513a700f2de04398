// ProcessGrid: how the world's ranks form the tensor-, data- and pipeline-parallel groups.
// world = TP x DP x PP with TP fastest-varying (the TP ranks of a group share a node), then DP,
// then PP: rank = (pp * DP + dp) * TP + tp (docs/DESIGN.md, "Main nouns"). GridLayout is the pure
// arithmetic; ProcessGrid splits a world communicator into the groups once, at start, and owns
// them. Every group communicator counts the bytes it moves (parallel/counting_communicator.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/communicator.h"
#include "core/model/config.h"
#include "parallel/counting_communicator.h"

namespace tessera {

struct GridCoord {
  int tp = 0, dp = 0, pp = 0;
};

struct GridLayout {
  int tp = 1, dp = 1, pp = 1;

  int world_size() const { return tp * dp * pp; }
  int rank_of(GridCoord c) const { return (c.pp * dp + c.dp) * tp + c.tp; }
  GridCoord coord_of(int rank) const;
  // The world ranks of each group that `rank` belongs to, in group-rank order.
  std::vector<int> tp_group(int rank) const;
  std::vector<int> dp_group(int rank) const;
  std::vector<int> pp_group(int rank) const;
  // {first stage, last stage} of rank's pipeline (one rank when PP = 1); empty for a rank of
  // a middle stage. The tied embedding's gradient is summed over it.
  std::vector<int> embedding_group(int rank) const;
  std::string describe() const;  // "TP 2 x DP 1 x PP 2 = 4 ranks"
};

// The layout for `world_size` ranks from --parallel.tp/pp/dp (dp = 0: world / (tp * pp)).
// Throws InputError naming the options when the numbers do not multiply to the world size.
GridLayout resolve_layout(int tp, int pp, int dp, int world_size);

// Layers [begin, end) of pipeline stage `stage`: L / PP each, and the first L % PP stages one
// more: not the last stage, which also carries the final norm, the LM head and the loss.
LayerRange stage_layers(int64_t layers, int pp, int stage);
// Layers of model chunk `chunk` of `stage` with `chunks` chunks on each stage (the interleaved
// schedule): those of virtual stage chunk pp + stage of chunks x pp.
LayerRange chunk_layers(int64_t layers, int pp, int chunks, int stage, int chunk);
// What the rank at `at` of `layout` holds of a model: its TP shard and its stage's layers, or
// with `chunks` > 1 its model chunks of the interleaved schedule (chunk_layers).
ModelShard model_shard(const ModelConfig& cfg, const GridLayout& layout, const GridCoord& at,
                       int chunks = 1);

class ProcessGrid {
 public:
  // Collective over `world`: every rank calls it with the same layout.
  ProcessGrid(Communicator& world, const GridLayout& layout);

  const GridLayout& layout() const { return layout_; }
  const GridCoord& coord() const { return coord_; }
  bool first_stage() const { return coord_.pp == 0; }
  bool last_stage() const { return coord_.pp == layout_.pp - 1; }

  Communicator& world() { return world_; }
  CountingCommunicator& tp() { return *tp_; }
  CountingCommunicator& dp() { return *dp_; }
  CountingCommunicator& pp() { return *pp_; }
  // nullptr on middle pipeline stages.
  CountingCommunicator* embedding() { return embedding_.get(); }

  // What this rank holds of a model (model_shard).
  ModelShard shard(const ModelConfig& cfg, int chunks = 1) const {
    return model_shard(cfg, layout_, coord_, chunks);
  }
  // A table of every group's world ranks, for the log of rank 0.
  std::string describe_groups() const;

 private:
  Communicator& world_;
  GridLayout layout_;
  GridCoord coord_;
  std::unique_ptr<CountingCommunicator> tp_, dp_, pp_, embedding_;
};

// This rank's part of the mean loss over the data-parallel replicas, where each replica's last
// stage holds the sum of `count` micro-batch mean losses (`loss_sum`; taken from its TP rank 0):
// summed over the grid, the parts give the mean; 0 on every other rank.
double replica_loss_share(const ProcessGrid& grid, double loss_sum, double count);
// That sum: one all-reduce over `world`, which every rank of the grid calls.
double mean_loss_of_replicas(const ProcessGrid& grid, Communicator& world, double loss_sum,
                             double count);

}  // namespace tessera
