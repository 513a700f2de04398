// The HDF5 C API made safe for the checkpoint files: every handle lives in an H5Id (closed on
// scope exit, so an exception leaks nothing), every call goes through CHECK_H5, and every caller
// holds an H5Lock while it calls HDF5. HDF5 appears only in io/, so this header is included only
// by io/*.cpp files; nothing outside io/ sees an hid_t. Tensor dtypes map to HDF5 types here too,
// bfloat16 included (docs/CHECKPOINTS.md).
#pragma once

#include <hdf5.h>

#include <functional>
#include <mutex>
#include <string>
#include <utility>

#include "core/error.h"
#include "core/tensor.h"

namespace tessera {

// HDF5's innermost error description (the most specific cause), and the error stack cleared.
std::string h5_error_detail();

template <typename T>
T check_h5(T result, const char* call, const char* file, int line) {
  if (result < 0)
    fail_internal(file, line, std::string("HDF5 call ") + call + " failed: " + h5_error_detail());
  return result;
}

// A negative return becomes an InternalError naming the call, file:line and HDF5's message.
#define CHECK_H5(call) ::tessera::check_h5((call), #call, __FILE__, __LINE__)

// The user's file is the likely cause: InputError naming it.
template <typename T>
T check_h5_input(T result, const std::string& path, const std::string& what) {
  if (result < 0) throw InputError(path + ": " + what + " (" + h5_error_detail() + ")");
  return result;
}

// An HDF5 identifier and the function that closes it.
class H5Id {
 public:
  H5Id(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  H5Id(H5Id&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), close_(o.close_) {}
  H5Id& operator=(H5Id&& o) noexcept {
    reset();
    id_ = std::exchange(o.id_, H5I_INVALID_HID);
    close_ = o.close_;
    return *this;
  }
  ~H5Id() { reset(); }
  operator hid_t() const { return id_; }
  void reset() {
    if (id_ >= 0) close_(id_);
    id_ = H5I_INVALID_HID;
  }
  herr_t close() { return close_(std::exchange(id_, H5I_INVALID_HID)); }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// Held around every HDF5 call of io/: one process-wide recursive mutex (the static of an inline
// function, so one per program), so our calls never overlap, whatever the threads. HDF5 keeps error
// stacks per thread, so automatic error printing is turned off once per thread: each failure prints
// one message, ours.
class H5Lock {
 public:
  H5Lock() {
    // Before HDF5's first call: no exit handler. tessera closes every file it opens; the handler
    // would only close again a file whose write failed, and HDF5 1.10 crashes doing so.
    [[maybe_unused]] static const bool no_exit_handler = H5dont_atexit() >= 0;
    thread_local bool quiet = false;
    if (!quiet) quiet = H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr) >= 0;
  }

 private:
  static std::recursive_mutex& mutex() {
    static std::recursive_mutex m;
    return m;
  }
  std::lock_guard<std::recursive_mutex> guard_{mutex()};
};

// File access properties with file locking off (see h5_handle.cpp for why).
H5Id file_access();

// bfloat16 (docs/CHECKPOINTS.md): IEEE F32LE cut to its upper 16 bits.
H5Id bf16_type();

// The file type of a checkpoint tensor: IEEE F32LE, F64LE or bf16_type(); InternalError for
// any other dtype.
H5Id file_type(DType dtype);

// The dtype a dataset is stored as (F32, F64 or BF16); InputError naming `where` otherwise.
DType stored_dtype(hid_t dataset, const std::string& where);

// Objects and attributes of the checkpoint files, read. Callers hold the H5Lock.
H5Id simple_space(const Shape& shape);
// InputError naming `where` unless the attribute (`attribute`) or dataset holds one value: what
// a read into one string or number needs (h5py writes lists as readily).
void require_one_value(hid_t object, bool attribute, const std::string& where);
// A fixed-length string, of an attribute (`attribute`) or a dataset; InputError naming `where`
// otherwise (also for more than one).
std::string read_string(hid_t object, bool attribute, const std::string& where);
// Attribute `name` of `object`, opened; InputError naming `where` when absent.
H5Id open_attribute(hid_t object, const char* name, const std::string& where);
// An int64 vector attribute (a shape or an offset); InputError naming `where` when absent.
Shape read_shape_attribute(hid_t object, const char* name, const std::string& where);
Shape dataset_shape(hid_t dataset);
// Calls fn(path, dataset) for every dataset below `group` ("/a/b/c"), depth first, by name,
// through hard links only (a soft or external link, which tessera never writes, is passed over).
// InputError naming the group when groups nest deeper than kMaxGroupDepth: a hard link to a
// group's own ancestor (a file edited by hand) would otherwise be followed until the stack ends.
inline constexpr int kMaxGroupDepth = 32;
void for_each_dataset(hid_t group, const std::string& prefix,
                      const std::function<void(const std::string&, hid_t)>& fn);

}  // namespace tessera
