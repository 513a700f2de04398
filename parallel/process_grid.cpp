// Rank arithmetic of the TP x DP x PP grid, and the split of the world into its groups.
#include "parallel/process_grid.h"

#include <sstream>

#include "core/error.h"

namespace tessera {

GridCoord GridLayout::coord_of(int rank) const {
  return GridCoord{rank % tp, rank / tp % dp, rank / (tp * dp)};
}

std::vector<int> GridLayout::tp_group(int rank) const {
  GridCoord c = coord_of(rank);
  std::vector<int> g;
  for (c.tp = 0; c.tp < tp; ++c.tp) g.push_back(rank_of(c));
  return g;
}

std::vector<int> GridLayout::dp_group(int rank) const {
  GridCoord c = coord_of(rank);
  std::vector<int> g;
  for (c.dp = 0; c.dp < dp; ++c.dp) g.push_back(rank_of(c));
  return g;
}

std::vector<int> GridLayout::pp_group(int rank) const {
  GridCoord c = coord_of(rank);
  std::vector<int> g;
  for (c.pp = 0; c.pp < pp; ++c.pp) g.push_back(rank_of(c));
  return g;
}

std::vector<int> GridLayout::embedding_group(int rank) const {
  GridCoord c = coord_of(rank);
  if (c.pp != 0 && c.pp != pp - 1) return {};
  c.pp = 0;
  std::vector<int> g{rank_of(c)};
  c.pp = pp - 1;
  if (pp > 1) g.push_back(rank_of(c));
  return g;
}

std::string GridLayout::describe() const {
  std::ostringstream s;
  s << "TP " << tp << " x DP " << dp << " x PP " << pp << " = " << world_size() << " rank"
    << (world_size() == 1 ? "" : "s");
  return s.str();
}

GridLayout resolve_layout(int tp, int pp, int dp, int world_size) {
  if (tp < 1)
    throw InputError("--parallel.tp: expected a positive number, found " + std::to_string(tp));
  if (pp < 1)
    throw InputError("--parallel.pp: expected a positive number, found " + std::to_string(pp));
  if (dp < 0)
    throw InputError("--parallel.dp: expected a positive number or 0 (inferred), found " +
                     std::to_string(dp));
  // In 64 bits: tp x pp x dp of options near 2^31 each must not wrap (to 0, dividing by it).
  const int64_t model_parallel = int64_t{tp} * pp;
  if (dp == 0) {
    if (world_size % model_parallel != 0)
      throw InputError("--parallel.tp " + std::to_string(tp) + " x --parallel.pp " +
                       std::to_string(pp) + " = " + std::to_string(model_parallel) +
                       " does not divide the world size " + std::to_string(world_size) +
                       " (the number of MPI ranks)");
    dp = static_cast<int>(world_size / model_parallel);
  }
  int64_t ranks = 0;
  const bool overflow = __builtin_mul_overflow(model_parallel, int64_t{dp}, &ranks);
  if (overflow || ranks != world_size)
    throw InputError("--parallel.tp " + std::to_string(tp) + " x --parallel.pp " +
                     std::to_string(pp) + " x --parallel.dp " + std::to_string(dp) + " = " +
                     (overflow ? std::string("more than 2^63") : std::to_string(ranks)) +
                     " ranks, but the world size is " + std::to_string(world_size) +
                     " (the number of MPI ranks)");
  return GridLayout{tp, dp, pp};
}

LayerRange stage_layers(int64_t layers, int pp, int stage) {
  const int64_t base = layers / pp, extra = layers % pp;
  const int64_t begin = stage * base + std::min<int64_t>(stage, extra);
  return LayerRange{begin, begin + base + (stage < extra ? 1 : 0)};
}

LayerRange chunk_layers(int64_t layers, int pp, int chunks, int stage, int chunk) {
  return stage_layers(layers, pp * chunks, chunk * pp + stage);
}

namespace {
// A color that numbers the groups of one kind: the coordinates other than the group's own.
std::unique_ptr<CountingCommunicator> split_group(Communicator& world, int color, int key,
                                                  const std::string& name) {
  std::unique_ptr<Communicator> comm = world.split(color, key, name);
  if (!comm) return nullptr;
  return std::make_unique<CountingCommunicator>(std::move(comm));
}
}  // namespace

ProcessGrid::ProcessGrid(Communicator& world, const GridLayout& layout)
    : world_(world), layout_(layout), coord_(layout.coord_of(world.rank())) {
  TESSERA_CHECK(
      world.size() == layout.world_size(),
      "ProcessGrid: world size " + std::to_string(world.size()) + " != " + layout.describe());
  const GridCoord c = coord_;
  tp_ = split_group(world, c.pp * layout.dp + c.dp, c.tp, "tp");
  dp_ = split_group(world, c.pp * layout.tp + c.tp, c.dp, "dp");
  pp_ = split_group(world, c.dp * layout.tp + c.tp, c.pp, "pp");
  const bool holds_embedding = first_stage() || last_stage();
  embedding_ =
      split_group(world, holds_embedding ? c.dp * layout.tp + c.tp : -1, c.pp, "embedding");
  TESSERA_CHECK(tp_->size() == layout.tp && dp_->size() == layout.dp && pp_->size() == layout.pp,
                "ProcessGrid: a group came out with the wrong size");
}

ModelShard model_shard(const ModelConfig& cfg, const GridLayout& layout, const GridCoord& at,
                       int chunks) {
  ModelShard s;
  s.tp_rank = at.tp;
  s.tp_size = layout.tp;
  for (int c = 0; c < chunks; ++c)
    s.chunks.push_back(chunk_layers(cfg.layers, layout.pp, chunks, at.pp, c));
  s.has_embedding = at.pp == 0;
  s.has_head = at.pp == layout.pp - 1;
  return s;
}

namespace {
void describe_kind(std::ostringstream& s, const char* kind, const GridLayout& l,
                   std::vector<int> (GridLayout::*group)(int) const) {
  s << "  " << kind << " groups:";
  std::vector<int> seen(static_cast<size_t>(l.world_size()), 0);
  for (int r = 0; r < l.world_size(); ++r) {
    if (seen[static_cast<size_t>(r)]) continue;
    const std::vector<int> g = (l.*group)(r);
    if (g.empty()) continue;
    s << " [";
    for (size_t i = 0; i < g.size(); ++i) {
      s << (i ? " " : "") << g[i];
      seen[static_cast<size_t>(g[i])] = 1;
    }
    s << "]";
  }
  s << "\n";
}
}  // namespace

std::string ProcessGrid::describe_groups() const {
  std::ostringstream s;
  s << "grid: " << layout_.describe() << ", rank = (pp * " << layout_.dp << " + dp) * "
    << layout_.tp << " + tp\n";
  describe_kind(s, "tp", layout_, &GridLayout::tp_group);
  describe_kind(s, "dp", layout_, &GridLayout::dp_group);
  describe_kind(s, "pp", layout_, &GridLayout::pp_group);
  describe_kind(s, "embedding", layout_, &GridLayout::embedding_group);
  return s.str();
}

double replica_loss_share(const ProcessGrid& grid, double loss_sum, double count) {
  return grid.last_stage() && grid.coord().tp == 0 ? loss_sum / (count * grid.layout().dp) : 0;
}

double mean_loss_of_replicas(const ProcessGrid& grid, Communicator& world, double loss_sum,
                             double count) {
  Tensor global({1}, DType::F64);
  global.data<double>()[0] = replica_loss_share(grid, loss_sum, count);
  world.all_reduce(global, ReduceOp::Sum);
  return global.data<double>()[0];
}

}  // namespace tessera
