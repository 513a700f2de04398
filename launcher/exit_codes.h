// The exit codes of `tessera`, documented in the README ("Exit codes"). Scripts and Slurm
// templates rely on them.
#pragma once

#include <cstddef>
#include <exception>
#include <string>

namespace tessera {

enum ExitCode : int {
  kExitOk = 0,
  kExitInternalError = 1,  // a bug: an internal contract was broken
  kExitBadInput = 2,       // a config, option, corpus or file is wrong; the message says which
  kExitPreempted = 3,      // SIGUSR1/SIGTERM or --train.time_limit: checkpoint saved, requeue
  kExitNonFinite = 4,      // NaN/Inf loss or gradient norm: --train.nan_policy halt, or too many
                           // skipped steps in a row
  kExitHang = 5,  // a collective passed its deadline, a peer rank died, or NCCL lost a peer
  kExitInterrupted = 130,  // SIGINT (Ctrl-C) alone: checkpoint saved; as a shell reports ^C,
                           // so that batch scripts do not requeue what a person stopped
};

// `text` as a terminal should show it: a byte that is neither printable ASCII, a line break, a
// tab nor part of valid UTF-8 (a control character, an escape sequence, a binary file's bytes) is
// written \xHH, and a line longer than `max_line` bytes keeps its head and tail, saying how much
// was cut between them.
std::string printable(const std::string& text, size_t max_line = 2000);

// What an exception means for the user: its exit code and the one-line message to print, made
// printable (a message may quote a file that is not what it should be).
struct ErrorReport {
  int code = 0;
  std::string message;
  // Whether the failure may be this rank's machine's own (a file one node lacks), which
  // agree_on_inputs then says; false for a SharedInputError.
  bool machine_specific = true;
};
ErrorReport report_error(std::exception_ptr error, const char* command);

// Runs a subcommand, catching every exception once and turning it into a one-line message on
// stderr and the matching exit code.
int run_guarded(int (*command)(int, char**), int argc, char** argv);

}  // namespace tessera
