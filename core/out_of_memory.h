// OutOfMemory: an allocation of host or GPU memory that could not be made, saying how much was
// asked for (and on the GPU what was free). A std::bad_alloc, so every command reports it as out
// of memory (launcher/exit_codes.cpp); `tessera train` adds the rank's estimate.
#pragma once

#include <cstddef>
#include <cstdio>
#include <new>
#include <stdexcept>
#include <string>

namespace tessera {

class OutOfMemory : public std::bad_alloc {
 public:
  explicit OutOfMemory(const std::string& what) : what_(what) {}
  const char* what() const noexcept override { return what_.what(); }

 private:
  std::runtime_error what_;  // its copies share the text, and never throw
};

// Bytes as the memory estimates print them: "2048.0 MB" (10^6 bytes), or "512 bytes" below
// 0.1 MB.
inline std::string memory_size_text(size_t bytes) {
  if (bytes < 100000) return std::to_string(bytes) + " bytes";
  char text[48];
  std::snprintf(text, sizeof text, "%.1f MB", static_cast<double>(bytes) / 1e6);
  return text;
}

}  // namespace tessera
