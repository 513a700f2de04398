// What the shards and model.h5 each say about the blocks of the tensors: shared by the writer of
// model.h5 (io/checkpoint_io.cpp) and CheckpointReader (io/checkpoint_reader.cpp). Internal to
// io/, as io/h5_handle.h is. Callers hold the H5Lock.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/checkpoint_io.h"
#include "io/h5_handle.h"

namespace tessera {

// One block of a tensor as the master maps it.
struct SourceBlock {
  std::string file;     // relative to model.h5: "shards/rank_00003.h5"
  std::string dataset;  // "/model/layers/03/attn/qkv/weight#1"
  Shape offset, shape;
};

struct TensorPlan {
  Shape global_shape;
  DType dtype = DType::F32;
  std::vector<SourceBlock> blocks;
};

// "FILE:DATASET (offset [..], shape [..])", for messages.
std::string describe(const SourceBlock& b);

// Adds the blocks shard `file` (relative to `dir`) holds to `plans`, by tensor name, from each
// dataset's attributes (tensor, global_offset, global_shape) and dtype. InputError naming the file
// when HDF5 cannot open it or an attribute is missing; InternalError when two of its blocks
// disagree on their tensor's shape or dtype.
void add_shard_blocks(const std::filesystem::path& dir, const std::string& file,
                      std::map<std::string, TensorPlan>& plans);

// VDS source names may hold printf-like patterns ("%b"); a literal '%' is written "%%".
std::string vds_literal(const std::string& s);
// vds_literal's inverse: "%%" back to '%'.
std::string from_vds_literal(const std::string& s);

// Whether a block of `extent` at `offset` lies inside a tensor of shape `global`, all three of
// one rank.
inline bool block_inside(const Shape& global, const Shape& offset, const Shape& extent) {
  if (offset.size() != global.size() || extent.size() != global.size()) return false;
  for (size_t d = 0; d < global.size(); ++d)
    if (offset[d] < 0 || extent[d] < 0 || offset[d] + extent[d] > global[d]) return false;
  return true;
}

// The InputError for a checkpoint file that passed its MANIFEST but HDF5 cannot read (`what`):
// the file is damaged (not CheckpointUnreadable, an I/O fault of the machine).
inline InputError damaged_checkpoint_file(const std::string& path, const std::string& what) {
  return InputError(path + ": unreadable (" + what + "); `tessera ckpt verify` checks it");
}

// model.h5's meta: its integer and real attributes, and the strings of /meta.
CheckpointMeta read_meta(hid_t file, const std::string& path);

}  // namespace tessera
