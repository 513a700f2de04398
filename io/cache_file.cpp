#include "io/cache_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <string>

#include "core/write_fully.h"

namespace tessera {

namespace {

// A name no other writer uses, also across nodes (pids repeat there) and threads: host, pid, a
// counter and the clock. Created with O_EXCL and mode 0666 less the umask, as any file of the
// cache (mkstemp's 0600 would keep other users of a shared cache out).
int create_unique(const std::string& path, std::string& tmp) {
  static std::atomic<unsigned> counter{0};
  char host[64] = {};
  gethostname(host, sizeof host - 1);
  for (int attempt = 0; attempt < 100; ++attempt) {
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    tmp = path + ".tmp." + host + "." + std::to_string(::getpid()) + "." +
          std::to_string(counter++) + "." + std::to_string(now % 1000000007);
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0 || errno != EEXIST) return fd;
  }
  return -1;
}

}  // namespace

bool publish_cache_file(const std::string& path, const void* data, size_t bytes, bool replace) {
  std::string tmp;
  const int fd = create_unique(path, tmp);
  if (fd < 0) return false;
  const bool all = write_fully(fd, data, bytes);
  const bool written = ::close(fd) == 0 && all;
  bool published = false;
  if (written) {
    struct stat st {};
    if (replace) {
      published = std::rename(tmp.c_str(), path.c_str()) == 0;
    } else if (::link(tmp.c_str(), path.c_str()) == 0 || errno == EEXIST) {
      published = true;
    } else if (errno == EPERM || errno == ENOTSUP || errno == EOPNOTSUPP) {
      // No hard links on this file system: a rename, unless another writer's file came first.
      published = ::stat(path.c_str(), &st) == 0 || std::rename(tmp.c_str(), path.c_str()) == 0;
    }
  }
  ::unlink(tmp.c_str());  // after link, or after a failure; after rename there is nothing
  return published;
}

}  // namespace tessera
