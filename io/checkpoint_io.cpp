// Shards and model.h5 of virtual datasets (see io/checkpoint_io.h for the layout; the reader is
// io/checkpoint_reader.cpp). HDF5 is used through io/h5_handle.h: every handle an H5Id, every call
// under an H5Lock and through CHECK_H5. Calls whose failure is the user's file (opening a damaged
// model.h5, reading a corrupt dataset) throw InputError naming that file. The MANIFEST and
// `latest` live in io/checkpoint_manifest.cpp, the fsync steps in io/durable_file.cpp.
#include "io/checkpoint_io.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <utility>

#include <sys/statvfs.h>

#include "core/error.h"
#include "io/checkpoint_blocks.h"
#include "io/durable_file.h"
#include "io/h5_handle.h"

namespace fs = std::filesystem;

namespace tessera {

static_assert(std::endian::native == std::endian::little,
              "tensors are written with memory type == file type (little-endian)");

namespace {

// ---------------------------------------------------------------------------------------------
// HDF5 objects and attributes

H5Id intermediate_groups() {
  H5Id lcpl(CHECK_H5(H5Pcreate(H5P_LINK_CREATE)), H5Pclose);
  CHECK_H5(H5Pset_create_intermediate_group(lcpl, 1));
  return lcpl;
}

// Fixed-length, NUL-terminated UTF-8: h5dump prints it, h5py reads it as bytes.
H5Id string_type(const std::string& value) {
  H5Id type(CHECK_H5(H5Tcopy(H5T_C_S1)), H5Tclose);
  CHECK_H5(H5Tset_size(type, value.size() + 1));
  CHECK_H5(H5Tset_cset(type, H5T_CSET_UTF8));
  return type;
}

void write_string_attribute(hid_t object, const char* name, const std::string& value) {
  H5Id type = string_type(value);
  H5Id space(CHECK_H5(H5Screate(H5S_SCALAR)), H5Sclose);
  H5Id a(CHECK_H5(H5Acreate2(object, name, type, space, H5P_DEFAULT, H5P_DEFAULT)), H5Aclose);
  CHECK_H5(H5Awrite(a, type, value.c_str()));
}

void write_shape_attribute(hid_t object, const char* name, const Shape& v) {
  const hsize_t n = v.size();
  H5Id space(CHECK_H5(H5Screate_simple(1, &n, nullptr)), H5Sclose);
  H5Id a(CHECK_H5(H5Acreate2(object, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT)),
         H5Aclose);
  CHECK_H5(H5Awrite(a, H5T_NATIVE_INT64, v.data()));
}

template <typename T>
void write_scalar_attribute(hid_t object, const std::string& name, hid_t file_type,
                            hid_t memory_type, T value) {
  H5Id space(CHECK_H5(H5Screate(H5S_SCALAR)), H5Sclose);
  H5Id a(CHECK_H5(H5Acreate2(object, name.c_str(), file_type, space, H5P_DEFAULT, H5P_DEFAULT)),
         H5Aclose);
  CHECK_H5(H5Awrite(a, memory_type, &value));
}

// ---------------------------------------------------------------------------------------------
// Shards

void check_tensor_name(const std::string& name) {
  bool ok = !name.empty() && name.front() != '/' && name.back() != '/' &&
            name.find("//") == std::string::npos && name.find_first_of("#%") == std::string::npos &&
            name != "meta" && name.rfind("meta/", 0) != 0;
  for (const char* part : {"/./", "/../"}) ok = ok && ("/" + name + "/").find(part) == name.npos;
  TESSERA_CHECK(ok, "checkpoint tensor name \"" + name +
                        "\": expected a/b/c parts without '#', '%', '.', '..' or a leading meta");
}

void check_block(const TensorBlock& b) {
  check_tensor_name(b.name);
  const Tensor& t = b.data;
  const std::string what = "block of " + b.name + " at " + shape_str(b.offset) + ", data " +
                           shape_str(t.shape()) + ", tensor " + shape_str(b.global_shape);
  TESSERA_CHECK(t.defined() && t.device() == Device::CPU && t.is_contiguous(),
                what + ": expected a contiguous CPU tensor");
  TESSERA_CHECK(!b.global_shape.empty() && b.offset.size() == b.global_shape.size() &&
                    t.shape().size() == b.global_shape.size(),
                what + ": expected offset and data of the tensor's rank (at least 1)");
  TESSERA_CHECK(block_inside(b.global_shape, b.offset, t.shape()),
                what + ": the block reaches outside the tensor");
}

void write_block(hid_t file, const std::string& dataset, const TensorBlock& b) {
  H5Id space = simple_space(b.data.shape());
  H5Id type = file_type(b.data.dtype());
  H5Id d(CHECK_H5(H5Dcreate2(file, dataset.c_str(), type, space, intermediate_groups(), H5P_DEFAULT,
                             H5P_DEFAULT)),
         H5Dclose);
  CHECK_H5(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, b.data.raw()));
  write_string_attribute(d, "tensor", b.name);
  write_shape_attribute(d, "global_shape", b.global_shape);
  write_shape_attribute(d, "global_offset", b.offset);
  write_string_attribute(d, "dtype", dtype_name(b.data.dtype()));
}

// A file system that is full, or refuses a file's size, is the machine's doing, not a bug: the
// write fails with one message naming the file and the system's reason. HDF5's innermost message
// for a failed write carries it as "errno = N". Called inside a catch block: anything else is
// rethrown as it was.
[[noreturn]] void rethrow_write_failure(const std::string& path, const std::string& what) {
  const size_t k = what.find("errno = ");
  const int err = k == std::string::npos ? 0 : std::atoi(what.c_str() + k + 8);
  if (err > 0) throw InputError(path + ": writing failed (" + std::strerror(err) + ")");
  throw;
}

// ---------------------------------------------------------------------------------------------
// model.h5

// The blocks tile the tensor exactly <=> each lies inside it, no two overlap, and their element
// counts add up to the tensor's.
void check_tiling(const std::string& name, const TensorPlan& p) {
  int64_t covered = 0;
  const size_t rank = p.global_shape.size();
  for (const SourceBlock& b : p.blocks) {
    TESSERA_CHECK(block_inside(p.global_shape, b.offset, b.shape),
                  "tensor " + name + " " + shape_str(p.global_shape) + ": block " + describe(b) +
                      " reaches outside the tensor");
    covered += shape_numel(b.shape);
  }
  // Only blocks whose ranges of dimension 0 meet can overlap: in order of their first row, each
  // is compared with those that start before it ends. With ZeRO-1's row ranges that is a few
  // per block, where all pairs were ~10^8 for a tensor cut by hundreds of DP ranks.
  std::vector<const SourceBlock*> by_row;
  for (const SourceBlock& b : p.blocks) by_row.push_back(&b);
  if (rank > 0)
    std::sort(by_row.begin(), by_row.end(), [](const SourceBlock* a, const SourceBlock* b) {
      return a->offset[0] < b->offset[0];
    });
  for (size_t i = 0; i < by_row.size(); ++i)
    for (size_t j = i + 1; j < by_row.size(); ++j) {
      const SourceBlock &a = *by_row[i], &b = *by_row[j];
      if (rank > 0 && b.offset[0] >= a.offset[0] + a.shape[0]) break;  // nor any after b
      bool overlap = true;
      for (size_t d = 0; d < rank; ++d)
        overlap = overlap && a.offset[d] < b.offset[d] + b.shape[d] &&
                  b.offset[d] < a.offset[d] + a.shape[d];
      TESSERA_CHECK(!overlap, "tensor " + name + ": blocks " + describe(a) + " and " + describe(b) +
                                  " overlap");
    }
  TESSERA_CHECK(covered == shape_numel(p.global_shape),
                "tensor " + name + " " + shape_str(p.global_shape) + ": its " +
                    std::to_string(p.blocks.size()) + " blocks cover " + std::to_string(covered) +
                    " of " + std::to_string(shape_numel(p.global_shape)) +
                    " elements (a gap: a rank's shard is missing or incomplete)");
}

void create_virtual_dataset(hid_t master, const std::string& name, const TensorPlan& p) {
  H5Id space = simple_space(p.global_shape);
  H5Id type = file_type(p.dtype);
  H5Id dcpl(CHECK_H5(H5Pcreate(H5P_DATASET_CREATE)), H5Pclose);
  const float nan32 = std::numeric_limits<float>::quiet_NaN();
  const double nan64 = std::numeric_limits<double>::quiet_NaN();
  const uint16_t nan16 = 0x7FC0;
  const void* fill = p.dtype == DType::F32   ? static_cast<const void*>(&nan32)
                     : p.dtype == DType::F64 ? static_cast<const void*>(&nan64)
                                             : static_cast<const void*>(&nan16);
  CHECK_H5(H5Pset_fill_value(dcpl, type, fill));
  for (const SourceBlock& b : p.blocks) {
    const std::vector<hsize_t> start(b.offset.begin(), b.offset.end());
    const std::vector<hsize_t> count(b.shape.begin(), b.shape.end());
    CHECK_H5(
        H5Sselect_hyperslab(space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr));
    H5Id source = simple_space(b.shape);
    CHECK_H5(H5Pset_virtual(dcpl, space, vds_literal(b.file).c_str(),
                            vds_literal(b.dataset).c_str(), source));
  }
  CHECK_H5(H5Sselect_all(space));
  H5Id d(CHECK_H5(H5Dcreate2(master, ("/" + name).c_str(), type, space, intermediate_groups(), dcpl,
                             H5P_DEFAULT)),
         H5Dclose);
  write_string_attribute(d, "dtype", dtype_name(p.dtype));
}

void check_meta_key(const std::string& key) {
  TESSERA_CHECK(!key.empty() && key != "." && key.find('/') == std::string::npos,
                "checkpoint meta key \"" + key + "\": expected a name without '/'");
}

void write_meta(hid_t file, const CheckpointMeta& meta) {
  for (const auto& [key, value] : meta.ints) {
    check_meta_key(key);
    write_scalar_attribute(file, key, H5T_STD_I64LE, H5T_NATIVE_INT64, value);
  }
  for (const auto& [key, value] : meta.reals) {
    check_meta_key(key);
    TESSERA_CHECK(!meta.ints.count(key), "checkpoint meta key " + key + " is an int and a real");
    write_scalar_attribute(file, key, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, value);
  }
  H5Id group(CHECK_H5(H5Gcreate2(file, "/meta", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)), H5Gclose);
  std::map<std::string, std::string> texts = meta.texts;
  texts.try_emplace("format", kCheckpointFormat);
  for (const auto& [key, value] : texts) {
    check_meta_key(key);
    H5Id type = string_type(value);
    H5Id space(CHECK_H5(H5Screate(H5S_SCALAR)), H5Sclose);
    H5Id d(CHECK_H5(
               H5Dcreate2(group, key.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
           H5Dclose);
    CHECK_H5(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, value.c_str()));
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Blocks (io/checkpoint_blocks.h)

std::string describe(const SourceBlock& b) {
  return b.file + ":" + b.dataset + " (offset " + shape_str(b.offset) + ", shape " +
         shape_str(b.shape) + ")";
}

void add_shard_blocks(const fs::path& dir, const std::string& file,
                      std::map<std::string, TensorPlan>& plans) {
  const std::string path = (dir / file).string();
  H5Id f(check_h5_input(H5Fopen(path.c_str(), H5F_ACC_RDONLY, file_access()), path,
                        "cannot open as HDF5"),
         H5Fclose);
  for_each_dataset(f, "", [&](const std::string& dataset, hid_t d) {
    const std::string where = path + ":" + dataset;
    H5Id a = open_attribute(d, "tensor", where);
    const std::string name = read_string(a, true, where);
    SourceBlock b{file, dataset, read_shape_attribute(d, "global_offset", where), dataset_shape(d)};
    const Shape global = read_shape_attribute(d, "global_shape", where);
    const DType dtype = stored_dtype(d, where);
    auto [it, fresh] = plans.try_emplace(name, TensorPlan{global, dtype, {}});
    TESSERA_CHECK(fresh || (it->second.global_shape == global && it->second.dtype == dtype),
                  "tensor " + name + ": " + where + " says " + shape_str(global) + " " +
                      dtype_name(dtype) + ", " + describe(it->second.blocks.front()) + " says " +
                      shape_str(it->second.global_shape) + " " + dtype_name(it->second.dtype));
    it->second.blocks.push_back(std::move(b));
  });
}

std::string vds_literal(const std::string& s) {
  std::string r;
  for (char c : s) r += c == '%' ? std::string("%%") : std::string(1, c);
  return r;
}

std::string from_vds_literal(const std::string& s) {
  std::string r;
  for (size_t k = 0; k < s.size(); ++k) {
    r += s[k];
    if (s[k] == '%' && k + 1 < s.size() && s[k + 1] == '%') ++k;
  }
  return r;
}

CheckpointMeta read_meta(hid_t file, const std::string& path) {
  CheckpointMeta meta;
  std::vector<std::string> names;
  CHECK_H5(H5Aiterate2(
      file, H5_INDEX_NAME, H5_ITER_INC, nullptr,
      [](hid_t, const char* name, const H5A_info_t*, void* out) -> herr_t {
        static_cast<std::vector<std::string>*>(out)->push_back(name);
        return 0;
      },
      &names));
  for (const std::string& name : names) {
    H5Id a(CHECK_H5(H5Aopen(file, name.c_str(), H5P_DEFAULT)), H5Aclose);
    H5Id type(CHECK_H5(H5Aget_type(a)), H5Tclose);
    const H5T_class_t kind = H5Tget_class(type);
    if (kind != H5T_INTEGER && kind != H5T_FLOAT) continue;
    require_one_value(a, true, path + ": attribute " + name);  // one number is read into one
    if (kind == H5T_INTEGER) CHECK_H5(H5Aread(a, H5T_NATIVE_INT64, &meta.ints[name]));
    if (kind == H5T_FLOAT) CHECK_H5(H5Aread(a, H5T_NATIVE_DOUBLE, &meta.reals[name]));
  }
  if (CHECK_H5(H5Lexists(file, "meta", H5P_DEFAULT)) > 0) {
    H5Id group(CHECK_H5(H5Gopen2(file, "meta", H5P_DEFAULT)), H5Gclose);
    for_each_dataset(group, "", [&](const std::string& key, hid_t d) {
      meta.texts[key.substr(1)] = read_string(d, false, path + ":/meta" + key);
    });
  }
  return meta;
}

// ---------------------------------------------------------------------------------------------
// Public functions

std::string step_directory_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

std::string shard_file_name(int rank) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "rank_%05d.h5", rank);
  return buf;
}

int64_t step_of_directory(const std::string& name) {
  if (name.size() <= 5 || name.rfind("step_", 0) != 0 ||
      !std::all_of(name.begin() + 5, name.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return -1;
  int64_t step = -1;
  const auto [end, ec] = std::from_chars(name.data() + 5, name.data() + name.size(), step);
  return ec == std::errc() && end == name.data() + name.size() ? step : -1;
}

std::vector<std::string> step_directories(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> steps;
  if (!fs::is_directory(root)) return {};
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (const int64_t step = step_of_directory(name); e.is_directory() && step >= 0)
      steps.emplace_back(step, name);
  }
  // By number: step_100000000 is newer than step_99999999, which a sort of the names would put
  // first. Equal numbers (step_7, step_07) by name.
  std::sort(steps.rbegin(), steps.rend());
  std::vector<std::string> names;
  for (auto& [step, name] : steps) names.push_back(std::move(name));
  return names;
}

// Refused before writing rather than a file cut off half-way; 1% and 64 KB for HDF5's own
// structures, an estimate.
void check_free_space(const std::string& path, int64_t bytes) {
  struct statvfs fs_info {};
  if (::statvfs(fs::path(path).parent_path().c_str(), &fs_info) != 0) return;  // unknown: try
  const double free_bytes =
      static_cast<double>(fs_info.f_bavail) * static_cast<double>(fs_info.f_frsize);
  const double needed = 1.01 * static_cast<double>(bytes) + 65536.0;
  if (free_bytes < needed) {
    char text[160];
    std::snprintf(text, sizeof text,
                  ": needs about %.1f MB, its file system has %.1f MB free (no space left)",
                  needed / 1e6, free_bytes / 1e6);
    throw InputError(path + text);
  }
}

void write_shard(const std::string& path, const std::vector<TensorBlock>& blocks) {
  int64_t bytes = 0;
  for (const TensorBlock& b : blocks) {
    check_block(b);
    bytes += static_cast<int64_t>(b.data.bytes());
  }
  check_free_space(path, bytes);
  try {
    H5Lock lock;
    H5Id file(check_h5_input(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, file_access()),
                             path, "cannot create the shard file"),
              H5Fclose);
    std::map<std::string, int> seen;
    for (const TensorBlock& b : blocks) {
      if (b.data.numel() == 0) continue;
      const int k = seen[b.name]++;
      // Appended piece by piece: GCC 12 reports a bogus -Wrestrict on "#" + std::string&&.
      std::string dataset = "/" + b.name;
      if (k > 0) dataset.append("#").append(std::to_string(k));
      write_block(file, dataset, b);
    }
    CHECK_H5(H5Fflush(file, H5F_SCOPE_GLOBAL));
    check_h5_input(file.close(), path, "closing the shard file failed");
  } catch (const std::exception& e) {
    rethrow_write_failure(path, e.what());
  }
  fsync_path(path);
}

void write_model_h5(const std::string& dir, const CheckpointMeta& meta) {
  std::vector<std::string> shard_files = checkpoint_files(dir);
  std::erase(shard_files, "model.h5");
  write_model_h5(dir, meta, shard_files);
}

void write_model_h5(const std::string& dir, const CheckpointMeta& meta,
                    const std::vector<std::string>& shard_files) {
  const std::string path = (fs::path(dir) / "model.h5").string();
  {
    H5Lock lock;
    std::map<std::string, TensorPlan> plans;
    for (const std::string& file : shard_files) add_shard_blocks(dir, file, plans);
    for (const auto& [name, plan] : plans) check_tiling(name, plan);
    try {
      H5Id file(check_h5_input(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, file_access()),
                               path, "cannot create model.h5"),
                H5Fclose);
      for (const auto& [name, plan] : plans) create_virtual_dataset(file, name, plan);
      write_meta(file, meta);
      CHECK_H5(H5Fflush(file, H5F_SCOPE_GLOBAL));
      check_h5_input(file.close(), path, "closing model.h5 failed");
    } catch (const std::exception& e) {
      rethrow_write_failure(path, e.what());
    }
  }
  fsync_path(path);
}

}  // namespace tessera
