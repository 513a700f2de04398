// What a path is, for the files tessera reads whole (a MANIFEST, `latest`, a cache record, a
// corpus, a tokenizer model): a FIFO there would block the reader forever, a directory read as
// empty; and for the messages that say what stood where a file was expected.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "core/error.h"

namespace tessera {

// "" for a regular file (or a link to one) and for a path with nothing there; otherwise what it
// is, for a message: "a directory", "a FIFO", "a socket", "a device".
inline std::string non_regular_kind(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || S_ISREG(st.st_mode)) return "";
  if (S_ISDIR(st.st_mode)) return "a directory";
  if (S_ISFIFO(st.st_mode)) return "a FIFO";
  if (S_ISSOCK(st.st_mode)) return "a socket";
  return "a device";
}

// The identity of the file at `path` (device and inode, through symlinks): two paths to one
// file have one. None when it cannot be stat'ed: such a file is the same as no other.
inline std::optional<std::pair<uint64_t, uint64_t>> file_identity(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return std::pair<uint64_t, uint64_t>{st.st_dev, st.st_ino};
}

// A file a command is to write, given as `option` (e.g. "--output"): InputError unless the path
// names nothing yet or a regular file to replace.
inline void require_file_to_write(const std::string& option, const std::string& path) {
  if (path.empty()) throw InputError(option + ": expected a file to write, found \"\"");
  if (const std::string kind = non_regular_kind(path); !kind.empty())
    throw InputError(option + " " + path + ": expected a file to write, found " + kind);
}

}  // namespace tessera
