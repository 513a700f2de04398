// JSON-lines metrics sink (see io/metrics.h).
#include "io/metrics.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/file_kind.h"

namespace tessera {

namespace {

void append_json_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
}

void append_json_number(std::string& out, double v) {
  if (!std::isfinite(v)) {
    out += "null";
    return;
  }
  char buf[32];
  // Shortest digits that read back to the same double, in %g's layout (0.0003, 1e+20).
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general);
  out.append(buf, r.ptr);
}

}  // namespace

std::string metrics_json(int64_t step, const std::vector<std::pair<std::string, double>>& fields) {
  std::string line = "{\"step\": " + std::to_string(step);
  for (const auto& [name, value] : fields) {
    line += ", ";
    append_json_string(line, name);
    line += ": ";
    append_json_number(line, value);
  }
  line += '}';
  return line;
}

namespace {

// An earlier run's last line cut short (its disk filled, its node died and left zeros) is no
// line at all: cuts it from the regular file at `path`, so that the next line starts a line of
// its own. Returns the bytes kept (0 for no file), or -1 for what is not a regular file (a FIFO
// someone reads), left as it is; `cut` is what went.
off_t drop_unfinished_line(const std::string& path, off_t& cut) {
  cut = 0;
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return errno == ENOENT ? 0 : -1;
  if (!S_ISREG(st.st_mode)) return -1;
  std::ifstream in(path, std::ios::binary);
  constexpr off_t kBlock = 64 << 10;
  std::vector<char> block(kBlock);
  off_t whole = 0;  // just past the last line break
  off_t text = 0;   // bytes after it that are not NUL (a lost node's zeros do not count)
  for (off_t end = st.st_size; end > 0 && whole == 0; end -= kBlock) {
    const off_t start = std::max<off_t>(0, end - kBlock);
    in.seekg(start);
    in.read(block.data(), end - start);
    if (in.gcount() != end - start) throw InputError("metrics file " + path + ": cannot read it");
    const char* begin = block.data();
    const char* stop = begin + (end - start);
    if (const void* nl = memrchr(begin, '\n', static_cast<size_t>(stop - begin))) {
      whole = start + (static_cast<const char*>(nl) - begin) + 1;
      begin = static_cast<const char*>(nl) + 1;
    }
    text += std::count_if(begin, stop, [](char c) { return c != '\0'; });
  }
  if (whole == 0 && text > kBlock)  // no line at all, and much text: not ours, left whole
    throw InputError("metrics file " + path + ": expected JSON lines, found " +
                     std::to_string(text) + " bytes of text without a line break");
  if (whole < st.st_size && truncate(path.c_str(), whole) != 0)
    throw InputError("metrics file " + path + ": cannot cut its unfinished last line (" +
                     std::strerror(errno) + ")");
  cut = st.st_size - whole;
  return whole;
}

}  // namespace

MetricsWriter::MetricsWriter(std::string path)
    : path_(std::move(path)), whole_(drop_unfinished_line(path_, cut_)) {
  // Without blocking: a FIFO (a reader the user started, a dashboard) with no reader yet would
  // hold the run in open() forever.
  const int fd =
      ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC, 0666);
  if (fd < 0 && errno == ENXIO) {
    const std::string kind = non_regular_kind(path_);
    throw InputError("metrics file " + path_ +
                     (kind == "a FIFO"
                          ? ": a FIFO that no process reads; start its reader first, or remove it"
                          : ": expected a file to append to, found " + kind));
  }
  const int flags = fd < 0 ? -1 : ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  if (fd >= 0) file_.reset(::fdopen(fd, "a"));
  if (!file_) {
    const int error = errno;
    if (fd >= 0) ::close(fd);
    throw InputError("metrics file " + path_ + ": cannot open for appending (" +
                     std::strerror(error) + ")");
  }
}

void MetricsWriter::write(int64_t step, const std::vector<std::pair<std::string, double>>& fields) {
  if (!file_) throw InputError("metrics file " + path_ + ": an earlier write failed");
  const std::string line = metrics_json(step, fields) + '\n';
  if (std::fwrite(line.data(), 1, line.size(), file_.get()) == line.size() &&
      std::fflush(file_.get()) == 0) {
    if (whole_ >= 0) whole_ += static_cast<off_t>(line.size());
    return;
  }
  // Whatever part of the line reached the file goes, so that the file stays whole lines.
  const int error = errno;
  file_.reset();
  const bool taken_back = whole_ >= 0 && truncate(path_.c_str(), whole_) == 0;
  throw InputError("metrics file " + path_ + ": write failed (" + std::strerror(error) + ")" +
                   (taken_back ? "" : "; its last line may be unfinished"));
}

}  // namespace tessera
