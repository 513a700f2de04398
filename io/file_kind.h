// What a path is, for the files tessera reads whole (a MANIFEST, `latest`, a cache record, a
// corpus, a tokenizer model): a FIFO there would block the reader forever, a directory read as
// empty; and for the messages that say what stood where a file was expected.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
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

// Why the directory `path` could not be created now, or (`write_inside`) written in: the error
// that making it one directory at a time (create_directories, make_run_dir) and its first write
// would meet, judged by the path's directories as the kernel resolves them ("a/f/.." with a file
// f is no directory; a symlink's ".." is its target's parent): a file where a directory is, a
// symlink to nowhere where one is to be made, a name too long, a directory it may not write in.
// "" when it could, and for "" (no directory). For checking without creating (`tessera train
// --check`).
inline std::string unusable_directory(const std::string& path, bool write_inside) {
  namespace fs = std::filesystem;
  if (path.empty()) return "";
  const auto error = [](int e) { return std::error_code(e, std::generic_category()).message(); };
  fs::path prefix;
  bool to_make = false;  // a directory of the path is not there: it and the rest are to be made
  for (const fs::path& part : fs::path(path)) {
    if (part.empty()) continue;  // "DIR/"
    const fs::path next = prefix / part;
    if (!to_make) {
      struct stat st {};
      if (::stat(next.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return error(ENOTDIR);
        prefix = next;
        continue;
      }
      if (errno != ENOENT) return error(errno);
      if (::lstat(next.c_str(), &st) == 0) return error(EEXIST);  // a symlink to nowhere
      const fs::path in = prefix.empty() ? fs::path(".") : prefix;
      if (::access(in.c_str(), W_OK | X_OK) != 0) return error(errno);
      to_make = true;
    }
    if (part.native().size() > NAME_MAX) return error(ENAMETOOLONG);
    prefix = next;
  }
  if (!to_make && write_inside && ::access(prefix.c_str(), W_OK | X_OK) != 0) return error(errno);
  return "";
}

// A file a command is to write, given as `option` (e.g. "--output"): InputError unless the path
// names nothing yet or a regular file to replace.
inline void require_file_to_write(const std::string& option, const std::string& path) {
  if (path.empty()) throw InputError(option + ": expected a file to write, found \"\"");
  if (const std::string kind = non_regular_kind(path); !kind.empty())
    throw InputError(option + " " + path + ": expected a file to write, found " + kind);
}

// After require_file_to_write: a file already at `path` is replaced only when it is empty or one
// of the command's own outputs: `is_output` of its first `head_bytes` bytes (fewer in a short file)
// and its size. Else InputError: "OPTION PATH: expected a new file or an earlier EARLIER to
// replace, found a file that is not FORMAT": not the metrics, corpus or checkpoint file a
// mistyped path would destroy.
inline void require_replaceable_output(
    const std::string& option, const std::string& path, const char* earlier, const char* format,
    size_t head_bytes,
    const std::function<bool(std::string_view head, uintmax_t size)>& is_output) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec || size == 0) return;  // an empty file holds nothing to lose
  std::ifstream in(path, std::ios::binary);
  std::string head(head_bytes, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(in.gcount()));
  if (!is_output(head, size))
    throw InputError(option + " " + path + ": expected a new file or an earlier " + earlier +
                     " to replace, found a file that is not " + format +
                     " (remove it first if it is to go)");
}

}  // namespace tessera
