// The progress line of the long commands (launcher/progress.h).
#include "launcher/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <utility>

namespace tessera {

std::string format_duration(double seconds) {
  const long long s = static_cast<long long>(seconds + 0.5);
  char buf[48];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%lld s", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%lld min %02lld s", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lld h %02lld min", s / 3600, s % 3600 / 60);
  }
  return buf;
}

std::string count_of(int64_t n, const std::string& thing) {
  return std::to_string(n) + " " + thing + (n == 1 ? "" : "s");
}

ProgressLine::ProgressLine(bool enabled, std::string what, int64_t total_bytes,
                           std::optional<std::chrono::milliseconds> every)
    : enabled_(enabled),
      tty_(::isatty(STDERR_FILENO) == 1),
      every_(every.value_or(std::chrono::milliseconds(tty_ ? 500 : 5000))),
      what_(std::move(what)),
      total_(total_bytes) {}

bool ProgressLine::due() const {
  return enabled_ && Clock::now() - last_ >= every_;
}

void ProgressLine::print(int64_t bytes_done, const std::string& counts) {
  last_ = Clock::now();
  const double seconds =
      std::max(std::chrono::duration<double>(Clock::now() - start_).count(), 1e-9);
  const double rate = static_cast<double>(bytes_done) / seconds;  // bytes/s
  const std::string eta =
      rate > 0
          ? format_duration(static_cast<double>(std::max<int64_t>(total_ - bytes_done, 0)) / rate)
          : "?";
  std::fprintf(stderr, "%s%s: %.1f / %.1f MB, %.1f MB/s, %s, ETA %s%s", tty_ ? "\r" : "",
               what_.c_str(), static_cast<double>(bytes_done) / 1e6,
               static_cast<double>(total_) / 1e6, rate / 1e6, counts.c_str(), eta.c_str(),
               tty_ ? "\033[K" : "\n");
  std::fflush(stderr);
  in_place_ = tty_;
  printed_ = bytes_done;
}

void ProgressLine::finish(int64_t bytes_done, const std::string& counts) {
  if (printed_ >= 0 && printed_ != bytes_done) print(bytes_done, counts);
  end();
}

void ProgressLine::end() {
  if (in_place_) std::fputc('\n', stderr);
  in_place_ = false;
}

}  // namespace tessera
