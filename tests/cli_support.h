// Running the `tessera` binary from tests as a user would: with a shell command line, on one
// process or under mpiexec, capturing its output; and reading metrics.jsonl back. A test target
// that includes it defines TESSERA_BIN (the binary) and MPIEXEC (the MPI launcher).
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace tessera::test_support {

namespace fs = std::filesystem;

struct CliRun {
  int exit_code = -1;
  std::string out, err;
};

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

}  // namespace tessera::test_support
