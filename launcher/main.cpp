// The `tessera` program: one binary, one subcommand per job (README, "Running"). Each subcommand
// parses its own options; run_guarded maps errors to exit codes.
#include <cstring>
#include <iostream>

#include "launcher/ckpt_command.h"
#include "launcher/eval_command.h"
#include "launcher/exit_codes.h"
#include "launcher/plot_command.h"
#include "launcher/sample_command.h"
#include "launcher/tokenize_command.h"
#include "launcher/train_command.h"

namespace {

void usage(std::ostream& out) {
  out << "usage: tessera <command> [options]\n\n"
         "commands:\n"
         "  train      pretrain a GPT on a tokenised corpus   (tessera train --help)\n"
         "  tokenize   turn text into a corpus and back        (tessera tokenize --help)\n"
         "  ckpt       show, verify, diff, export checkpoints  (tessera ckpt --help)\n"
         "  sample     continue a prompt with a checkpoint's model (tessera sample --help)\n"
         "  eval       a checkpoint's loss over a corpus            (tessera eval --help)\n"
         "  plot       a run's loss curve, in the terminal and as SVG (tessera plot --help)\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage(argc < 2 ? std::cerr : std::cout);
    return argc < 2 ? tessera::kExitBadInput : tessera::kExitOk;
  }
  if (!std::strcmp(argv[1], "train"))
    return tessera::run_guarded(tessera::train_command, argc - 1, argv + 1);
  if (!std::strcmp(argv[1], "tokenize"))
    return tessera::run_guarded(tessera::tokenize_command, argc - 1, argv + 1);
  if (!std::strcmp(argv[1], "ckpt"))
    return tessera::run_guarded(tessera::ckpt_command, argc - 1, argv + 1);
  if (!std::strcmp(argv[1], "sample"))
    return tessera::run_guarded(tessera::sample_command, argc - 1, argv + 1);
  if (!std::strcmp(argv[1], "eval"))
    return tessera::run_guarded(tessera::eval_command, argc - 1, argv + 1);
  if (!std::strcmp(argv[1], "plot"))
    return tessera::run_guarded(tessera::plot_command, argc - 1, argv + 1);
  std::cerr << "tessera: error: unknown command '" << argv[1] << "'\n";
  usage(std::cerr);
  return tessera::kExitBadInput;
}
