#include "io/mapped_file.h"

#include <sys/mman.h>

namespace tessera {

MappedFile::~MappedFile() {
  if (data) ::munmap(const_cast<void*>(data), bytes);
}

std::shared_ptr<const MappedFile> map_read_only(int fd, size_t bytes) {
  auto file = std::make_shared<MappedFile>();
  if (bytes == 0) return file;
  void* p = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return nullptr;
  file->data = p;
  file->bytes = bytes;
  return file;
}

}  // namespace tessera
