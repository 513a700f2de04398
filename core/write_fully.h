// Writing a whole buffer to a file descriptor with write(2), for the places that cannot go
// through stdio: a report that must leave in one piece (ranks share a log), or a file created
// with open(2).
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstddef>

namespace tessera {

// Writes all `n` bytes of `data` to `fd`, retrying interrupted and short writes: a line of a
// log goes out in one write(2) call whenever the kernel takes it whole. False on failure.
inline bool write_fully(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t done = ::write(fd, p, n);
    if (done < 0 && errno == EINTR) continue;
    if (done <= 0) return false;
    p += done;
    n -= static_cast<size_t>(done);
  }
  return true;
}

}  // namespace tessera
