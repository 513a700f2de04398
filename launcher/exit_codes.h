// The exit codes of `tessera`, documented in the README ("Exit codes"). Scripts and Slurm
// templates rely on them.
#pragma once

namespace tessera {

enum ExitCode : int {
  kExitOk = 0,
  kExitInternalError = 1,  // a bug: an internal contract was broken
  kExitBadInput = 2,       // a config, option, corpus or file is wrong; the message says which
};

// Runs a subcommand, catching every exception once and turning it into a one-line message on
// stderr and the matching exit code.
int run_guarded(int (*command)(int, char**), int argc, char** argv);

}  // namespace tessera
