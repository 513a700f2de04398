// A file mapped read-only into memory (MAP_SHARED: the processes of a node share its pages in the
// page cache, and the kernel may evict them), unmapped when the last shared_ptr to it goes. What
// the corpus readers hold instead of copies.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace tessera {

struct MappedFile {
  const void* data = nullptr;  // null for an empty mapping
  size_t bytes = 0;
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();
};

// The first `bytes` bytes of open file `fd`, mapped read-only (`fd` may be closed afterwards);
// null, with errno set, when mmap fails. Zero bytes map nothing and succeed. While the mapping
// lives, a read of it that faults because the file `path` became shorter (rewritten in place by
// another program: SIGBUS) ends the process with exit code 2 and one line naming `path`, not a
// bus error.
std::shared_ptr<const MappedFile> map_read_only(int fd, size_t bytes, const std::string& path);

}  // namespace tessera
