// Metrics sink: appends one JSON object per logged step to a file (RUN_DIR/metrics.jsonl), and
// flushes each line, so a crashed or running job's file is always whole lines that `jq` reads: a
// write that fails (a full disk) takes back what part of its line it wrote, and a line left
// unfinished all the same (a node lost mid-write, perhaps leaving zeros) is cut when the file is
// opened again.
// Doubles are printed in the shortest form that reads back to the same value; NaN and Inf,
// which JSON cannot spell, are written as null.
#pragma once

#include <sys/types.h>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tessera {

class MetricsWriter {
 public:
  // Opens `path` for appending (created when missing), without an unfinished last line; throws
  // InputError naming it on failure.
  explicit MetricsWriter(std::string path);

  // Writes {"step": STEP, "NAME": VALUE, ...} with the fields in the given order.
  void write(int64_t step, const std::vector<std::pair<std::string, double>>& fields);

  const std::string& path() const { return path_; }
  // Bytes of an unfinished last line that opening the file cut (0: none), for a note in the log.
  int64_t cut_bytes() const { return cut_; }

 private:
  struct Close {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  std::string path_;
  off_t cut_ = 0;
  off_t whole_;                             // bytes of whole lines (-1: not a regular file)
  std::unique_ptr<std::FILE, Close> file_;  // null after a write failed
};

// The JSON text of one metrics line, without the newline (declared here for its test).
std::string metrics_json(int64_t step, const std::vector<std::pair<std::string, double>>& fields);

}  // namespace tessera
