// JSON-lines metrics sink (see io/metrics.h).
#include "io/metrics.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>

#include "core/error.h"

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

MetricsWriter::MetricsWriter(std::string path) : path_(std::move(path)) {
  file_.reset(std::fopen(path_.c_str(), "a"));
  if (!file_)
    throw InputError("metrics file " + path_ + ": cannot open for appending (" +
                     std::strerror(errno) + ")");
}

void MetricsWriter::write(int64_t step, const std::vector<std::pair<std::string, double>>& fields) {
  const std::string line = metrics_json(step, fields) + '\n';
  if (std::fwrite(line.data(), 1, line.size(), file_.get()) != line.size() ||
      std::fflush(file_.get()) != 0)
    throw InputError("metrics file " + path_ + ": write failed (" + std::strerror(errno) + ")");
}

}  // namespace tessera
