// What the shards and model.h5 each say about the blocks of the tensors: shared by the writer of
// model.h5 (io/checkpoint_io.cpp) and CheckpointReader (io/checkpoint_reader.cpp). Internal to
// io/, as io/h5_handle.h is. Callers hold the H5Lock.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

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

// model.h5's meta: its integer and real attributes, and the strings of /meta.
CheckpointMeta read_meta(hid_t file, const std::string& path);

}  // namespace tessera
