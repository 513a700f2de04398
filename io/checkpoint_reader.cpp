// CheckpointReader (io/checkpoint_io.h): model.h5's meta and tensors, blocks read through its
// virtual datasets or straight from the preferred shard, and model.h5's map of the shards held to
// the shards. HDF5 through io/h5_handle.h, as in io/checkpoint_io.cpp.
#include <algorithm>
#include <bit>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "io/checkpoint_blocks.h"
#include "io/checkpoint_io.h"
#include "io/h5_handle.h"

namespace fs = std::filesystem;

namespace tessera {

namespace {

// Reads `file_space`'s selection of dataset `d` (stored as `stored`) into `out`: F32 or F64 from
// any stored dtype, BF16 as raw bits. Caller holds the H5Lock.
void read_selection(hid_t d, hid_t file_space, DType stored, Tensor& out, const std::string& path,
                    const std::string& name) {
  H5Id memory_space = simple_space(out.shape());
  const bool widen_bf16 = stored == DType::BF16 && out.dtype() != DType::BF16;
  std::vector<uint16_t> bits(widen_bf16 ? static_cast<size_t>(out.numel()) : 0);
  const hid_t native = out.dtype() == DType::F32 ? H5T_NATIVE_FLOAT : H5T_NATIVE_DOUBLE;
  H5Id type = widen_bf16 || out.dtype() == DType::BF16 ? bf16_type()
                                                       : H5Id(CHECK_H5(H5Tcopy(native)), H5Tclose);
  check_h5_input(H5Dread(d, type, memory_space, file_space, H5P_DEFAULT,
                         widen_bf16 ? static_cast<void*>(bits.data()) : out.raw()),
                 path, "reading tensor " + name + " failed");
  float* f32 = out.dtype() == DType::F32 ? out.data<float>() : nullptr;
  double* f64 = out.dtype() == DType::F64 ? out.data<double>() : nullptr;
  for (size_t i = 0; i < bits.size(); ++i) {  // bf16 is the upper half of an f32
    const float v = std::bit_cast<float>(static_cast<uint32_t>(bits[i]) << 16);
    if (f32) f32[i] = v;
    if (f64) f64[i] = v;
  }
}

// One dataset of the preferred shard: which block of which tensor it holds.
struct ShardBlock {
  Shape offset, shape;
  std::string dataset;
};

// The text H5Pget_virtual_filename/dsetname hand back, for mapping i of `dcpl`.
std::string virtual_name(hid_t dcpl, size_t i, bool file) {
  const auto get = [&](char* out, size_t size) {
    return file ? H5Pget_virtual_filename(dcpl, i, out, size)
                : H5Pget_virtual_dsetname(dcpl, i, out, size);
  };
  std::string name(static_cast<size_t>(CHECK_H5(get(nullptr, 0))) + 1, '\0');
  CHECK_H5(get(name.data(), name.size()));
  name.resize(name.size() - 1);
  return from_vds_literal(name);
}

// The blocks of tensor `name` (dataset `d` of model.h5) that its virtual dataset maps onto shard
// datasets, as (tensor, block) by shard file; none for a dataset that is not virtual.
void add_mapped_blocks(
    hid_t d, const std::string& name,
    std::map<std::string, std::vector<std::pair<std::string, SourceBlock>>>& out) {
  H5Id dcpl(CHECK_H5(H5Dget_create_plist(d)), H5Pclose);
  if (H5Pget_layout(dcpl) != H5D_VIRTUAL) return;
  size_t count = 0;
  CHECK_H5(H5Pget_virtual_count(dcpl, &count));
  for (size_t i = 0; i < count; ++i) {
    // The block's place in the tensor, whose extent is the whole shard dataset's (HDF5 1.10 does
    // not keep the source dataspace's extent until the source is opened).
    H5Id block(CHECK_H5(H5Pget_virtual_vspace(dcpl, i)), H5Sclose);
    const size_t rank = static_cast<size_t>(CHECK_H5(H5Sget_simple_extent_ndims(block)));
    std::vector<hsize_t> first(rank), last(rank);
    CHECK_H5(H5Sget_select_bounds(block, first.data(), last.data()));
    SourceBlock b{virtual_name(dcpl, i, true), virtual_name(dcpl, i, false), Shape(rank),
                  Shape(rank)};
    for (size_t k = 0; k < rank; ++k) {
      b.offset[k] = static_cast<int64_t>(first[k]);
      b.shape[k] = static_cast<int64_t>(last[k] - first[k] + 1);
    }
    out[b.file].emplace_back(name, std::move(b));
  }
}

}  // namespace

struct CheckpointReader::Impl {
  std::string dir;
  H5Id file{H5I_INVALID_HID, H5Fclose};
  CheckpointMeta meta;
  std::map<std::string, TensorInfo> tensors;
  std::string shard_path;  // prefer_shard's file, open while `shard` is
  H5Id shard{H5I_INVALID_HID, H5Fclose};
  std::map<std::string, std::vector<ShardBlock>> shard_blocks;  // by tensor name
  ~Impl() {
    H5Lock lock;
    shard.reset();
    file.reset();
  }
};

CheckpointReader::CheckpointReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CheckpointReader::CheckpointReader(CheckpointReader&&) noexcept = default;
CheckpointReader& CheckpointReader::operator=(CheckpointReader&&) noexcept = default;
CheckpointReader::~CheckpointReader() = default;

CheckpointReader CheckpointReader::open(const std::string& dir, ManifestCheck check) {
  verify_manifest(dir, check);
  auto impl = std::make_unique<Impl>();
  impl->dir = dir;
  const std::string path = (fs::path(dir) / "model.h5").string();
  H5Lock lock;
  impl->file = H5Id(check_h5_input(H5Fopen(path.c_str(), H5F_ACC_RDONLY, file_access()), path,
                                   "cannot open as HDF5"),
                    H5Fclose);
  try {
    impl->meta = read_meta(impl->file, path);
    for_each_dataset(impl->file, "", [&](const std::string& dataset, hid_t d) {
      if (dataset.rfind("/meta/", 0) == 0) return;
      const std::string name = dataset.substr(1);
      const Shape shape = dataset_shape(d);
      if (shape.empty())  // tessera writes none; a model.h5 edited by hand may hold one
        throw InputError(path + ": tensor " + name +
                         " is a scalar, expected a tensor of one or more dimensions");
      int64_t bytes = 8;  // of the widest element read (float64), as ckpt verify reads them
      for (const int64_t extent : shape)
        if (extent < 0 || __builtin_mul_overflow(bytes, extent, &bytes))
          throw InputError(path + ": tensor " + name + " of shape " + shape_str(shape) +
                           " has more elements than any memory holds (a model.h5 edited by hand?)");
      impl->tensors[name] = {name, shape, stored_dtype(d, path + ":" + dataset)};
    });
  } catch (const InternalError& e) {  // a file that passed the MANIFEST but HDF5 cannot read
    throw damaged_checkpoint_file(path, e.what());
  }
  return CheckpointReader(std::move(impl));
}

void CheckpointReader::check_shards() const {
  H5Lock lock;
  const fs::path dir(impl_->dir);
  const std::string master = (dir / "model.h5").string();
  std::map<std::string, std::vector<std::pair<std::string, SourceBlock>>> mapped;  // by file
  try {
    for_each_dataset(impl_->file, "", [&](const std::string& dataset, hid_t d) {
      if (dataset.rfind("/meta/", 0) != 0) add_mapped_blocks(d, dataset.substr(1), mapped);
    });
  } catch (const InternalError& e) {  // as in open(): the file, not tessera, is at fault
    throw damaged_checkpoint_file(master, e.what());
  }
  for (const auto& [file, blocks] : mapped) {
    // A shard removed together with its MANIFEST line passes verify_manifest.
    if (!fs::is_regular_file(dir / file))
      throw InputError(master + ": tensor " + blocks.front().first + " lies partly in " + file +
                       ", which is missing (and not in the MANIFEST: removed with its line?)");
    std::map<std::string, TensorPlan> held;  // what the shard says it holds
    try {
      add_shard_blocks(dir, file, held);
    } catch (const InternalError& e) {
      throw InputError((dir / file).string() + ": unreadable as a shard (" + e.what() + ")");
    }
    for (const auto& [tensor, b] : blocks) {
      const auto it = held.find(tensor);
      const TensorInfo& info = impl_->tensors.at(tensor);
      const bool found =
          it != held.end() && it->second.global_shape == info.shape &&
          it->second.dtype == info.dtype &&
          std::any_of(it->second.blocks.begin(), it->second.blocks.end(),
                      [&](const SourceBlock& h) {
                        return h.dataset == b.dataset && h.offset == b.offset && h.shape == b.shape;
                      });
      if (!found)
        throw InputError((dir / file).string() + ": holds no dataset " + b.dataset +
                         " with the block at " + shape_str(b.offset) + " of shape " +
                         shape_str(b.shape) + " of tensor " + tensor + " (" +
                         shape_str(info.shape) + " " + dtype_name(info.dtype) +
                         "), which model.h5 maps onto it (a shard of another rank, model or "
                         "layout?)");
    }
  }
}

const std::string& CheckpointReader::dir() const {
  return impl_->dir;
}
const CheckpointMeta& CheckpointReader::meta() const {
  return impl_->meta;
}

std::vector<CheckpointReader::TensorInfo> CheckpointReader::tensors() const {
  std::vector<TensorInfo> r;
  for (const auto& [name, info] : impl_->tensors) r.push_back(info);
  return r;
}

bool CheckpointReader::has(const std::string& name) const {
  return impl_->tensors.count(name) > 0;
}

const CheckpointReader::TensorInfo& CheckpointReader::tensor(const std::string& name) const {
  const auto it = impl_->tensors.find(name);
  if (it == impl_->tensors.end())
    throw InputError("checkpoint " + impl_->dir + ": no tensor " + name + " (it holds " +
                     std::to_string(impl_->tensors.size()) +
                     " tensors; a model of another architecture?)");
  return it->second;
}

void CheckpointReader::read(const std::string& name, const Shape& global_shape, const Shape& offset,
                            Tensor& out) const {
  const TensorInfo& info = tensor(name);
  if (info.shape != global_shape)
    throw InputError("checkpoint " + impl_->dir + ": tensor " + name + " has shape " +
                     shape_str(info.shape) + ", expected " + shape_str(global_shape) +
                     " (a checkpoint of a model of another shape?)");
  TESSERA_CHECK(out.defined() && out.device() == Device::CPU && out.is_contiguous(),
                "checkpoint read of " + name + ": expected a contiguous CPU tensor");
  TESSERA_CHECK(out.dtype() != DType::BF16 || info.dtype == DType::BF16,
                "checkpoint read of " + name + ": bfloat16 out of a " + dtype_name(info.dtype) +
                    " tensor is not supported");
  TESSERA_CHECK(block_inside(global_shape, offset, out.shape()),
                "checkpoint read of " + name + " " + shape_str(global_shape) + ": block " +
                    shape_str(out.shape()) + " at " + shape_str(offset) + " lies outside");
  if (out.numel() == 0) return;
  H5Lock lock;
  const auto local = impl_->shard_blocks.find(name);
  if (local != impl_->shard_blocks.end())
    for (const ShardBlock& b : local->second)
      if (b.offset == offset && b.shape == out.shape()) {
        H5Id d(check_h5_input(H5Dopen2(impl_->shard, b.dataset.c_str(), H5P_DEFAULT),
                              impl_->shard_path, "cannot open dataset " + b.dataset),
               H5Dclose);
        read_selection(d, H5S_ALL, info.dtype, out, impl_->shard_path, name);
        return;
      }
  const std::string path = (fs::path(impl_->dir) / "model.h5").string();
  H5Id d(check_h5_input(H5Dopen2(impl_->file, ("/" + name).c_str(), H5P_DEFAULT), path,
                        "cannot open tensor " + name),
         H5Dclose);
  H5Id file_space(CHECK_H5(H5Dget_space(d)), H5Sclose);
  const std::vector<hsize_t> start(offset.begin(), offset.end());
  const std::vector<hsize_t> count(out.shape().begin(), out.shape().end());
  CHECK_H5(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start.data(), nullptr, count.data(),
                               nullptr));
  read_selection(d, file_space, info.dtype, out, path, name);
}

void CheckpointReader::prefer_shard(int rank) {
  const std::string path = (fs::path(impl_->dir) / "shards" / shard_file_name(rank)).string();
  if (!fs::exists(path)) return;
  H5Lock lock;
  H5Id file(check_h5_input(H5Fopen(path.c_str(), H5F_ACC_RDONLY, file_access()), path,
                           "cannot open as HDF5"),
            H5Fclose);
  std::map<std::string, std::vector<ShardBlock>> blocks;
  try {
    for_each_dataset(file, "", [&](const std::string& dataset, hid_t d) {
      const std::string where = path + ":" + dataset;
      H5Id a = open_attribute(d, "tensor", where);
      const std::string name = read_string(a, true, where);
      const auto info = impl_->tensors.find(name);
      if (info == impl_->tensors.end() || stored_dtype(d, where) != info->second.dtype) return;
      blocks[name].push_back(
          {read_shape_attribute(d, "global_offset", where), dataset_shape(d), dataset});
    });
  } catch (const InternalError& e) {
    throw damaged_checkpoint_file(path, e.what());
  }
  impl_->shard = std::move(file);
  impl_->shard_path = path;
  impl_->shard_blocks = std::move(blocks);
}

}  // namespace tessera
