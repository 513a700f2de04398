// What a path is, for the files tessera reads whole (a MANIFEST, `latest`, a cache record): a
// FIFO there would block the reader forever, a directory read as empty.
#pragma once

#include <sys/stat.h>

#include <string>

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

}  // namespace tessera
