#include "io/cache_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <vector>

namespace tessera {

bool publish_cache_file(const std::string& path, const void* data, size_t bytes, bool replace) {
  std::vector<char> tmp(path.begin(), path.end());
  for (const char c : std::string(".tmpXXXXXX")) tmp.push_back(c);
  tmp.push_back('\0');
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) return false;
  const char* p = static_cast<const char*>(data);
  size_t left = bytes;
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    p += n;
    left -= static_cast<size_t>(n);
  }
  const bool written = ::close(fd) == 0 && left == 0;
  bool published = false;
  if (written) {
    if (replace) {
      published = std::rename(tmp.data(), path.c_str()) == 0;
    } else if (::link(tmp.data(), path.c_str()) == 0 || errno == EEXIST) {
      published = true;
    } else if (errno == EPERM || errno == ENOTSUP || errno == EOPNOTSUPP) {
      published = std::rename(tmp.data(), path.c_str()) == 0;  // no hard links here
    }
  }
  ::unlink(tmp.data());  // after link, or after a failure; after rename there is nothing
  return published;
}

}  // namespace tessera
