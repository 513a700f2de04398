// HDF5 plumbing shared by io/'s HDF5 files (see io/h5_handle.h): the error-stack reader, file
// locking off for the whole process, and the dtype <-> HDF5 type mapping.
#include "io/h5_handle.h"

#include <algorithm>
#include <cstdlib>

namespace tessera {

namespace {

// No file locking: flock is missing on some NFS/Lustre mounts (NOTES, "HDF5"), and the commit
// protocol, not a lock, keeps readers away from files being written. The property covers the
// files we open; HDF5 1.10 opens a virtual dataset's source files with default properties, where
// only HDF5_USE_FILE_LOCKING=FALSE turns locking off. So it is set here, during static
// initialisation (before main, while no other thread can read the environment), unless the user
// has set it already.
[[maybe_unused]] const bool kFileLockingOffByDefault =
    ::setenv("HDF5_USE_FILE_LOCKING", "FALSE", 0) == 0;

}  // namespace

std::string h5_error_detail() {
  std::string detail;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
        if (n == 0 && e->desc) *static_cast<std::string*>(out) = e->desc;
        return 0;
      },
      &detail);
  H5Eclear2(H5E_DEFAULT);
  return detail;
}

H5Id file_access() {
  H5Id fapl(CHECK_H5(H5Pcreate(H5P_FILE_ACCESS)), H5Pclose);
  CHECK_H5(H5Pset_file_locking(fapl, false, true));
  return fapl;
}

H5Id bf16_type() {
  H5Id t(CHECK_H5(H5Tcopy(H5T_IEEE_F32LE)), H5Tclose);
  CHECK_H5(H5Tset_fields(t, 15, 7, 8, 0, 7));
  CHECK_H5(H5Tset_precision(t, 16));
  CHECK_H5(H5Tset_size(t, 2));
  CHECK_H5(H5Tset_ebias(t, 127));
  return t;
}

H5Id file_type(DType dtype) {
  if (dtype == DType::BF16) return bf16_type();
  TESSERA_CHECK(dtype == DType::F32 || dtype == DType::F64,
                "checkpoint tensors are float32, float64 or bfloat16, not " + dtype_name(dtype));
  return {CHECK_H5(H5Tcopy(dtype == DType::F32 ? H5T_IEEE_F32LE : H5T_IEEE_F64LE)), H5Tclose};
}

DType stored_dtype(hid_t dataset, const std::string& where) {
  H5Id t(CHECK_H5(H5Dget_type(dataset)), H5Tclose);
  const size_t size = H5Tget_size(t);
  size_t spos, epos, esize, mpos, msize;
  if (H5Tget_class(t) == H5T_FLOAT && size == 4) return DType::F32;
  if (H5Tget_class(t) == H5T_FLOAT && size == 8) return DType::F64;
  if (H5Tget_class(t) == H5T_FLOAT && size == 2 &&
      H5Tget_fields(t, &spos, &epos, &esize, &mpos, &msize) >= 0 && esize == 8 && msize == 7)
    return DType::BF16;
  const std::string found =
      "HDF5 type class " + std::to_string(H5Tget_class(t)) + ", size " + std::to_string(size);
  throw InputError(where + ": expected a float32, float64 or bfloat16 dataset, found " + found);
}

H5Id simple_space(const Shape& shape) {
  const std::vector<hsize_t> dims(shape.begin(), shape.end());
  return {CHECK_H5(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)),
          H5Sclose};
}

void require_one_value(hid_t object, bool attribute, const std::string& where) {
  H5Id space(CHECK_H5(attribute ? H5Aget_space(object) : H5Dget_space(object)), H5Sclose);
  const hssize_t values = CHECK_H5(H5Sget_simple_extent_npoints(space));
  if (values != 1)
    throw InputError(where + ": holds " + std::to_string(values) +
                     " values, expected one (a file edited by hand?)");
}

std::string read_string(hid_t object, bool attribute, const std::string& where) {
  H5Id type(CHECK_H5(attribute ? H5Aget_type(object) : H5Dget_type(object)), H5Tclose);
  if (H5Tget_class(type) != H5T_STRING || H5Tis_variable_str(type) > 0)
    throw InputError(where + ": expected a fixed-length string");
  require_one_value(object, attribute, where);
  std::string s(H5Tget_size(type), '\0');
  CHECK_H5(attribute ? H5Aread(object, type, s.data())
                     : H5Dread(object, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, s.data()));
  return s.substr(0, s.find('\0'));
}

H5Id open_attribute(hid_t object, const char* name, const std::string& where) {
  if (CHECK_H5(H5Aexists(object, name)) == 0)
    throw InputError(where + ": no attribute `" + std::string(name) + "` (not a tessera shard?)");
  return {CHECK_H5(H5Aopen(object, name, H5P_DEFAULT)), H5Aclose};
}

Shape read_shape_attribute(hid_t object, const char* name, const std::string& where) {
  H5Id a = open_attribute(object, name, where);
  H5Id space(CHECK_H5(H5Aget_space(a)), H5Sclose);
  Shape v(static_cast<size_t>(CHECK_H5(H5Sget_simple_extent_npoints(space))));
  CHECK_H5(H5Aread(a, H5T_NATIVE_INT64, v.data()));
  return v;
}

Shape dataset_shape(hid_t dataset) {
  H5Id space(CHECK_H5(H5Dget_space(dataset)), H5Sclose);
  std::vector<hsize_t> dims(static_cast<size_t>(CHECK_H5(H5Sget_simple_extent_ndims(space))));
  CHECK_H5(H5Sget_simple_extent_dims(space, dims.data(), nullptr));
  return Shape(dims.begin(), dims.end());
}

void for_each_dataset(hid_t group, const std::string& prefix,
                      const std::function<void(const std::string&, hid_t)>& fn) {
  if (std::count(prefix.begin(), prefix.end(), '/') > kMaxGroupDepth)
    throw InputError("HDF5 group " + prefix.substr(0, 200) + "...: groups nested deeper than " +
                     std::to_string(kMaxGroupDepth) +
                     " (a link to a group's own ancestor?); no tensor name is that deep");
  H5G_info_t info;
  CHECK_H5(H5Gget_info(group, &info));
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    H5L_info_t link;
    CHECK_H5(H5Lget_info_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, &link, H5P_DEFAULT));
    if (link.type != H5L_TYPE_HARD) continue;
    const ssize_t n = CHECK_H5(
        H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT));
    std::string name(static_cast<size_t>(n) + 1, '\0');
    CHECK_H5(H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(),
                                H5P_DEFAULT));
    name.resize(static_cast<size_t>(n));
    H5Id object(CHECK_H5(H5Oopen(group, name.c_str(), H5P_DEFAULT)), H5Oclose);
    const std::string path = prefix + "/" + name;
    if (H5Iget_type(object) == H5I_GROUP) for_each_dataset(object, path, fn);
    if (H5Iget_type(object) == H5I_DATASET) fn(path, object);
  }
}

}  // namespace tessera
