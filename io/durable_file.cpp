// Files that survive a crash: see durable_file.h.
#include "io/durable_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/write_fully.h"

namespace fs = std::filesystem;

namespace tessera {

namespace {

[[noreturn]] void system_error(const std::string& path, const std::string& what) {
  throw InputError(path + ": " + what + " (" + std::strerror(errno) + ")");
}

std::string parent_directory(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

}  // namespace

void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) system_error(tmp, "cannot write");
  }
  fsync_path(tmp);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) system_error(tmp, "cannot rename to " + path);
  fsync_directory(parent_directory(path));
}

void write_file_through(const std::string& tmp, const std::string& path, const std::string& what,
                        const std::function<void(const PutBytes& put)>& write) {
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    throw InputError(what + ": cannot create " + tmp + " (" + std::strerror(err) +
                     (err == EEXIST ? "; another write of " + path +
                                          " may be under way, or one was stopped: remove it if "
                                          "it is to go)"
                                    : ")"));
  }
  struct stat created {};
  ::fstat(fd, &created);
  bool open = true;
  const auto failed = [&](const char* step) {
    throw InputError(what + ": " + step + " " + tmp + " failed (" + std::strerror(errno) + ")");
  };
  try {
    write([&](const void* data, size_t n) {
      if (!write_fully(fd, data, n)) failed("writing");
    });
    if (::fsync(fd) != 0) failed("fsync of");
    open = false;
    if (::close(fd) != 0) failed("writing");
    if (std::rename(tmp.c_str(), path.c_str()) != 0) system_error(tmp, "cannot rename to " + path);
  } catch (...) {  // no TMP of ours left behind
    if (open) ::close(fd);
    struct stat now {};
    if (::stat(tmp.c_str(), &now) == 0 && now.st_dev == created.st_dev &&
        now.st_ino == created.st_ino)
      ::unlink(tmp.c_str());
    throw;
  }
  fsync_directory(parent_directory(path));
}

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) system_error(path, "cannot open to fsync");
  const int r = ::fsync(fd);
  ::close(fd);
  if (r != 0) system_error(path, "fsync failed");
}

void fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) system_error(dir, "cannot open the directory to fsync");
  const int r = ::fsync(fd);
  ::close(fd);
  if (r != 0) system_error(dir, "fsync of the directory failed");
}

void rename_directory(const std::string& from, const std::string& to) {
  if (fs::exists(to)) throw InputError(to + ": exists already, cannot rename " + from + " to it");
  if (std::rename(from.c_str(), to.c_str()) != 0) system_error(from, "cannot rename to " + to);
  fsync_directory(parent_directory(to));
  if (fs::absolute(parent_directory(from)) != fs::absolute(parent_directory(to)))
    fsync_directory(parent_directory(from));
}

}  // namespace tessera
