// Where a shard's elements sit in the global tensor, and layout-independent initialization.
#include "core/model/param.h"

#include "core/ops/cast.h"

#include "core/error.h"
#include "core/rng.h"

namespace tessera {

int64_t Param::piece_begin() const {
  TESSERA_CHECK(split_dim >= 0, name + ": a tensor that is not split has no piece");
  return tp_piece_begin(global_shape[split_dim] / groups, tp_rank, tp_size);
}

int64_t Param::piece_end() const {
  TESSERA_CHECK(split_dim >= 0, name + ": a tensor that is not split has no piece");
  return tp_piece_begin(global_shape[split_dim] / groups, tp_rank + 1, tp_size);
}

Shape Param::local_shape() const {
  Shape s = global_shape;
  if (!tp_replicated()) s[split_dim] = groups * (piece_end() - piece_begin());
  return s;
}

Param::IndexMap Param::index_map() const {
  IndexMap m;
  if (tp_replicated()) return m;
  const auto d = static_cast<size_t>(split_dim);
  m.identity = false;
  for (size_t k = d + 1; k < global_shape.size(); ++k) m.inner *= global_shape[k];
  m.begin = piece_begin();
  m.piece = piece_end() - m.begin;
  m.local_extent = groups * m.piece;
  m.global_extent = global_shape[d];
  m.block = global_shape[d] / groups;
  return m;
}

Param make_param(std::string name, ParamKind kind, ParamInit init, double init_std,
                 Shape global_shape, int split_dim, int groups, const ModelShard& shard) {
  Param p;
  p.name = std::move(name);
  p.kind = kind;
  p.init = init;
  p.init_std = init_std;
  p.global_shape = std::move(global_shape);
  p.split_dim = split_dim;
  p.groups = groups;
  p.tp_rank = shard.tp_rank;
  p.tp_size = shard.tp_size;
  return p;
}

void Param::materialize(uint64_t seed, DType dtype, Device device) {
  TESSERA_CHECK(
      global_shape[split_dim < 0 ? 0 : split_dim] % groups == 0,
      name + ": split dimension not divisible into " + std::to_string(groups) + " groups");
  TESSERA_CHECK(dtype == DType::F32 || dtype == DType::F64 || dtype == DType::BF16,
                name + ": parameters are float32, float64 or bfloat16");
  const DType host_dtype = dtype == DType::F64 ? DType::F64 : DType::F32;
  value = Tensor(local_shape(), host_dtype);
  grad = Tensor(local_shape(), dtype, device);
  const uint64_t stream = name_hash(name);
  const int64_t n = value.numel();
  const IndexMap to_global = index_map();
  auto fill = [&](auto* p) {
    using T = std::remove_pointer_t<decltype(p)>;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      switch (init) {
        case ParamInit::Zeros:
          p[i] = T(0);
          break;
        case ParamInit::Ones:
          p[i] = T(1);
          break;
        case ParamInit::Normal:
          p[i] = static_cast<T>(init_std * philox_normal(seed, stream, to_global(i)));
          break;
      }
    }
  };
  if (host_dtype == DType::F32)
    fill(value.data<float>());
  else
    fill(value.data<double>());
  value = ops::cast_to(value, dtype);  // rounded on the host
  if (device != Device::CPU) value = value.to(device);
}

}  // namespace tessera
