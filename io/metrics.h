// Metrics sink: appends one JSON object per logged step to a file (RUN_DIR/metrics.jsonl), and
// flushes each line, so a crashed or running job's file is always whole lines that `jq` reads.
// Doubles are printed in the shortest form that reads back to the same value; NaN and Inf,
// which JSON cannot spell, are written as null.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tessera {

class MetricsWriter {
 public:
  // Opens `path` for appending (created when missing); throws InputError naming it on failure.
  explicit MetricsWriter(std::string path);

  // Writes {"step": STEP, "NAME": VALUE, ...} with the fields in the given order.
  void write(int64_t step, const std::vector<std::pair<std::string, double>>& fields);

  const std::string& path() const { return path_; }

 private:
  struct Close {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  std::string path_;
  std::unique_ptr<std::FILE, Close> file_;
};

// The JSON text of one metrics line, without the newline (exposed for tests and other sinks).
std::string metrics_json(int64_t step, const std::vector<std::pair<std::string, double>>& fields);

}  // namespace tessera
