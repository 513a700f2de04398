// HDF5 checkpoint files (docs/CHECKPOINTS.md). A checkpoint is a directory:
//   shards/rank_XXXXX.h5  each rank's blocks of global tensors (write_shard)
//   model.h5              every tensor whole, as a virtual dataset stitched from the shards, plus
//                         the run's metadata (write_model_h5); the file people open with h5py
//   MANIFEST              format tag, then CRC-32C, size and path of every file above
// This layer writes and reads those files. The commit protocol across ranks (write into a *.tmp
// directory, fsync, barrier, manifest, rename, then `latest`) belongs to the caller, built from
// the MANIFEST and `latest` of io/checkpoint_manifest.h, included here, and the filesystem steps
// of io/durable_file.h, which it includes.
//
// Thread safety: every function here holds one process-wide lock while it calls HDF5, so a save
// may run on a background thread while the main thread computes; HDF5 calls never overlap.
// File locking is off (shared filesystems often lack flock): the program starts with
// HDF5_USE_FILE_LOCKING=FALSE unless its environment sets that variable already.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/checkpoint_manifest.h"

namespace tessera {

// "step_00001000", "rank_00003.h5": the names the commit protocol and the shards use.
std::string step_directory_name(int64_t step);
std::string shard_file_name(int rank);
// The step of a step directory's name (step_directory_name's inverse); -1 for a name that is not
// step_ and digits, or whose digits overflow.
int64_t step_of_directory(const std::string& name);
// The committed step directories under ROOT, step_ and digits only (not step_N.tmp, nor a
// person's step_N.bak), newest (highest step) first; none when ROOT is not a directory.
std::vector<std::string> step_directories(const std::string& root);
// step_N.replaced: the old directory of a step being saved again, while the new one is renamed
// in (CheckpointSaver::commit); the next run restores it if the rename did not happen
// (launcher/checkpoint_choice.cpp).
inline const std::string kReplacedSuffix = ".replaced";

// One rectangular block of a global tensor: what a rank writes (write_shard) or reads into
// (launcher/checkpointing.cpp).
struct TensorBlock {
  std::string name;    // "model/layers/03/attn/qkv/weight", "optimizer/exp_avg/layers/03/..."
  Shape global_shape;  // at least one dimension
  Shape offset;        // where the block starts in the global tensor (same rank)
  Tensor data;         // contiguous, the block's extent; F32, F64 or BF16; on the CPU to write
};

// Writes one shard file. Tensor NAME's first block in this shard is the dataset /NAME, further
// blocks of the same tensor (the q, k and v pieces of a tensor-parallel QKV weight) are /NAME#1,
// /NAME#2, ... in the order given. Each dataset has attributes `tensor` (NAME), `global_shape`,
// `global_offset` (int64) and `dtype` ("float32", "float64", "bfloat16"). F32 is stored as
// IEEE F32LE, F64 as F64LE, BF16 as a 16-bit HDF5 float type (sign 15, exponent 7..14, bias 127,
// mantissa 0..6) written as raw bits. Blocks with no elements are skipped. Names are '/'-separated
// paths without '#', '%', empty, "." or ".." parts or a leading "meta" (reserved); a bad name or
// block is an InternalError. Creates (truncates) the file, writes, flushes, closes, then fsyncs
// it. A file system without room for the blocks (check_free_space), or one whose write fails
// (full, a size limit, an I/O error), is an InputError naming the file and the reason.
void write_shard(const std::string& path, const std::vector<TensorBlock>& blocks);

// InputError naming `path` when the file system it is to be written on has less room than
// `bytes` of tensors take (plus a little for HDF5's own structures); nothing when it cannot tell.
void check_free_space(const std::string& path, int64_t bytes);

// Small metadata stored in model.h5: ints and reals as scalar attributes of the root group,
// texts as string datasets /meta/KEY (no 64 KB attribute limit for the config).
struct CheckpointMeta {
  std::map<std::string, int64_t> ints;       // step, tp, pp, dp, consumed_samples, seed, ...
  std::map<std::string, double> reals;       // keys: no '/', not "." or empty
  std::map<std::string, std::string> texts;  // "config" (the resolved INI), "format", ...

  // ints[key], or `absent` for a key an older checkpoint lacks.
  int64_t int_or(const std::string& key, int64_t absent) const {
    const auto it = ints.find(key);
    return it == ints.end() ? absent : it->second;
  }
};

// Builds DIR/model.h5 from every DIR/shards/*.h5: for each tensor one virtual dataset of its
// global shape at /NAME (intermediate groups created), fill value NaN, attribute `dtype`, whose
// blocks map to the shard datasets by file names relative to model.h5 ("shards/rank_00003.h5"),
// so the directory can be moved. Every element of every tensor must come from exactly one block,
// all blocks of a tensor must agree on its global shape and dtype: else InternalError naming the
// tensor (and the shard files). Adds texts["format"] = kCheckpointFormat unless meta has one.
// Writes, flushes, closes, then fsyncs model.h5.
void write_model_h5(const std::string& dir, const CheckpointMeta& meta);

// The same from the shard files named (paths relative to DIR, "shards/rank_00003.h5") rather
// than those a listing of DIR/shards shows: a save's, which knows what every rank wrote, while a
// listing on a shared file system (NFS's attribute cache) may not yet show another node's file.
void write_model_h5(const std::string& dir, const CheckpointMeta& meta,
                    const std::vector<std::string>& shard_files);

// Reads tensors of one checkpoint. The model.h5 file stays open while the reader lives; moving
// a reader is cheap. Reads go through the virtual datasets, so any layout can read any block
// (but for the blocks of a shard prefer_shard names).
class CheckpointReader {
 public:
  // verify_manifest(dir, check) first, then opens DIR/model.h5 read-only and reads its meta and
  // list of tensors. InputError naming the file when model.h5 cannot be opened, or holds a
  // tensor tessera never writes (a scalar, a shape whose size overflows 64 bits).
  static CheckpointReader open(const std::string& dir, ManifestCheck check = ManifestCheck::kFull);

  // Holds model.h5's map of the shards to the shards: each file it maps onto must be there and
  // hold, under its attributes, the block (dataset, global_offset, shape) mapped onto it.
  // InputError naming the file otherwise: a shard removed together with its MANIFEST line, one
  // HDF5 cannot open, one copied from another rank, model or layout with its line rewritten. The
  // checksums cannot see these; unchecked, they read as NaN or as wrong values. (A shard of
  // another save of the same run and layout looks the same as its own: nothing tells them
  // apart.) Opens every shard, so it runs once (rank 0 before a resume, sample, ckpt
  // verify/diff/export).
  void check_shards() const;

  CheckpointReader(CheckpointReader&&) noexcept;
  CheckpointReader& operator=(CheckpointReader&&) noexcept;
  ~CheckpointReader();

  struct TensorInfo {
    std::string name;
    Shape shape;
    DType dtype;  // as stored: F32, F64 or BF16
  };

  const std::string& dir() const;
  const CheckpointMeta& meta() const;
  std::vector<TensorInfo> tensors() const;  // every dataset outside /meta, sorted by name
  bool has(const std::string& name) const;
  const TensorInfo& tensor(const std::string& name) const;  // InputError when absent

  // Reads the block [offset, offset + out.shape()) of tensor `name` into `out` (contiguous CPU
  // tensor of the same rank; F32 or F64 from any stored dtype, BF16 only from BF16, as raw bits).
  // InputError naming the tensor, the checkpoint and both shapes when the stored global shape is
  // not `global_shape` (a model of another shape); InternalError when the block lies outside it.
  // Elements of a missing shard read as NaN: verify_manifest and check_shards are what detect
  // those.
  void read(const std::string& name, const Shape& global_shape, const Shape& offset,
            Tensor& out) const;

  // From now on, a read of exactly a block that shards/rank_XXXXX.h5 of `rank` holds (same
  // tensor, offset and shape) reads that shard's dataset directly instead of through model.h5's
  // virtual datasets: a load into the layout that saved the checkpoint reads each rank's own
  // file, with no virtual-dataset mapping per read. Other reads still go through model.h5.
  // No such file (a rank that wrote nothing): nothing changes. InputError naming the file when
  // it exists but cannot be read as a shard.
  void prefer_shard(int rank);

 private:
  struct Impl;
  explicit CheckpointReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera
