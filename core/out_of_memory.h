// OutOfMemory: an allocation of host or GPU memory that could not be made, saying how much was
// asked for (and on the GPU what was free). A std::bad_alloc, so every command reports it as out
// of memory (launcher/exit_codes.cpp); `tessera train` adds the rank's estimate.
#pragma once

#include <new>
#include <string>
#include <utility>

namespace tessera {

class OutOfMemory : public std::bad_alloc {
 public:
  explicit OutOfMemory(std::string what) : what_(std::move(what)) {}
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  std::string what_;
};

}  // namespace tessera
