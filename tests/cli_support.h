// Running the `tessera` binary from tests as a user would: with a shell command line, on one
// process or under mpiexec, capturing its output; and reading back what it leaves: metrics.jsonl
// and the data cache's id-check records. A test target that includes it defines TESSERA_BIN (the
// binary) and MPIEXEC (the MPI launcher), and links tessera_io.
#pragma once

#include <sys/wait.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "io/token_corpus.h"

namespace tessera::test_support {

namespace fs = std::filesystem;

struct CliRun {
  int exit_code = -1;
  std::string out, err;
};

// The bytes of a file ("" when it cannot be read).
inline std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Runs `launcher args` (shell words), capturing stdout and stderr.
inline CliRun run_tessera_with(const std::string& launcher, const std::string& args,
                               const fs::path& dir) {
  const fs::path out = dir / "stdout.txt", err = dir / "stderr.txt";
  const std::string cmd = launcher + " " + args + " >" + out.string() + " 2>" + err.string();
  const int status = std::system(cmd.c_str());
  CliRun r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream o(out), e(err);
  std::stringstream so, se;
  so << o.rdbuf();
  se << e.rdbuf();
  r.out = so.str();
  r.err = se.str();
  return r;
}

inline CliRun run_tessera(const std::string& args, const fs::path& dir) {
  return run_tessera_with(TESSERA_BIN, args, dir);
}

// Runs the binary on `ranks` MPI ranks, at most `limit_s` seconds, so that a hang fails the
// test instead of stalling it. As root (containers, CI) Open MPI wants to be told twice; more
// ranks than cores are allowed, and waiting ranks yield their core instead of spinning.
inline CliRun run_mpi(int ranks, const std::string& args, const fs::path& dir, int limit_s = 120) {
  return run_tessera_with(
      "timeout " + std::to_string(limit_s) +
          " env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
          " OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1 " +
          std::string(MPIEXEC) + " -n " + std::to_string(ranks) + " " + TESSERA_BIN,
      args, dir);
}

// The "loss" fields of metrics.jsonl, as written ("loss":1.234).
inline std::vector<std::string> loss_fields(const fs::path& metrics) {
  std::ifstream in(metrics);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    const size_t k = line.find("\"loss\":");
    if (k == std::string::npos) continue;
    out.push_back(line.substr(k, line.find(',', k) - k));
  }
  return out;
}

inline std::vector<double> losses_of(const fs::path& metrics) {
  std::vector<double> out;
  for (const std::string& f : loss_fields(metrics))  // "loss":1.234
    out.push_back(std::stod(f.substr(f.find(':') + 1)));
  return out;
}

// The id-check records in a data cache directory (none when it is not there).
inline std::vector<fs::path> id_records(const fs::path& cache) {
  std::vector<fs::path> found;
  std::error_code ec;
  if (fs::is_directory(cache, ec))
    for (const auto& e : fs::directory_iterator(cache))
      if (e.path().filename().string().rfind("ids_v1_", 0) == 0) found.push_back(e.path());
  return found;
}

// That `record` names the token file of `corpus` and holds the range of all its ids.
inline void expect_record_of_whole_corpus(const fs::path& record, const std::string& corpus) {
  std::ifstream in(record);
  std::string key, range;
  std::getline(in, key);
  std::getline(in, range);
  const TokenCorpus c = TokenCorpus::open(corpus);
  EXPECT_EQ(key.rfind(fs::absolute(c.token_file()).string() + " size ", 0), 0u) << key;
  std::vector<int32_t> ids(static_cast<size_t>(c.num_tokens()));
  c.read_tokens(0, c.num_tokens(), ids.data());
  EXPECT_EQ(range, "ids " + std::to_string(*std::min_element(ids.begin(), ids.end())) + " .. " +
                       std::to_string(*std::max_element(ids.begin(), ids.end())));
}

}  // namespace tessera::test_support
