// Internal-contract failures carry file:line, so a bug report points at the broken check.
#include "core/error.h"

#include <filesystem>

namespace tessera {

void fail_internal(const char* file, int line, const std::string& what) {
  throw InternalError(std::string(file) + ":" + std::to_string(line) + ": " + what);
}

std::string found_instead_of_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return "no such file";
  return std::filesystem::is_directory(path, ec) ? "a directory" : "something that is not a file";
}

}  // namespace tessera
