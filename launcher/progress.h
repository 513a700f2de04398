// A progress line on stderr for the commands that read or write much (tokenize, ckpt verify,
// diff, export): "WHAT: DONE / TOTAL MB, RATE MB/s, COUNTS, ETA T", rewritten in place at most
// every 0.5 s on a terminal, else one line every 5 s (logs of batch jobs stay short). Nothing is
// printed for work shorter than that. stdout keeps the results.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace tessera {

// "42 s", "7 min 05 s", "2 h 03 min".
std::string format_duration(double seconds);
// "1 document", "2 documents".
std::string count_of(int64_t n, const std::string& thing);

class ProgressLine {
 public:
  // `every`: the interval between lines, when not the terminal's or the log's (for tests).
  ProgressLine(bool enabled, std::string what, int64_t total_bytes,
               std::optional<std::chrono::milliseconds> every = std::nullopt);
  ~ProgressLine() { end(); }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  // Whether a line is due now; callers build COUNTS only then.
  bool due() const;
  void print(int64_t bytes_done, const std::string& counts);
  // Ends a line rewritten in place, so that what follows starts a line of its own.
  void end();
  // The last line, at bytes_done, when any was printed and the last one was not at bytes_done
  // already (a line left at its last update reads as work stopped part way); then end().
  void finish(int64_t bytes_done, const std::string& counts);

 private:
  using Clock = std::chrono::steady_clock;
  bool enabled_, tty_;
  std::chrono::milliseconds every_;
  std::string what_;
  int64_t total_;
  Clock::time_point start_ = Clock::now(), last_ = Clock::now();
  bool in_place_ = false;
  int64_t printed_ = -1;  // the bytes of the last line printed; -1: none
};

}  // namespace tessera
