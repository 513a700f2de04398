// What `tessera sample` and `tessera eval` share: they run the model of a checkpoint. The model,
// its tokenizer and the other options come from the config saved in the checkpoint; every
// `tessera train` option given overrides that config, except the model's shape, which is the
// checkpoint's. The ranks run on a layout of their own: one rank, or under mpirun
// --parallel.tp x --parallel.pp (x the data-parallel rest), whatever layout saved it.
//
// run_saved_model() is the whole command but for its work: the arguments and the checkpoint
// (every checksum) on rank 0, then the config and the command's inputs on every rank, then the
// command's checks made together, each phase agreed so that a bad input stops every rank with one
// message; then the model, loaded, handed to the command.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/communicator.h"
#include "core/model/gpt.h"
#include "launcher/config.h"
#include "parallel/process_grid.h"

namespace tessera {

struct SavedModelArgs {
  std::string checkpoint;
  bool help = false;
  std::vector<std::string> train_args;     // argv[0] and the train options
  std::map<std::string, std::string> own;  // the command's own options, as given
};

// What a command runs with, once its model is loaded.
struct SavedModel {
  const TrainConfig& cfg;
  const SavedModelArgs& args;
  const std::string& dir;  // the checkpoint
  Communicator& world;
  ProcessGrid& grid;
  GPT& model;
  bool root;
};

struct SavedModelCommand {
  const char* name;   // "sample"
  const char* usage;  // printed for --help
  // Short options that stand for train options ("--prompt" -> "--sample.prompt"), and the
  // command's own options, which take a value (SavedModelArgs::own).
  std::map<std::string, std::string> aliases;
  std::vector<std::string> own;
  // Adjusts and checks the config on every rank before the model is built (InputError for bad
  // input: agreed, one message); may read the command's inputs, for the ranks' layout and this
  // rank (`rank`) of it. `saved` is the saving run's config, as it trained. No collectives: a
  // rank may have failed before.
  std::function<void(TrainConfig& cfg, const TrainConfig& saved, const SavedModelArgs&,
                     const GridLayout&, int rank)>
      prepare;
  // When given: collective checks of what prepare read, on every rank once all prepared; an
  // InputError must be the same on every rank (agreed, one message).
  std::function<void(Communicator& world)> together;
  std::function<void(SavedModel&)> run;  // the work; a failure is this rank's alone
};

int run_saved_model(int argc, char** argv, const SavedModelCommand& command);

// Whether the command line gives the train option `option` (as "--x v" or "--x=v").
bool gives_option(const SavedModelArgs& args, const std::string& option);

// Runs `check` of the paths `value` of `option`. When they are the saving run's (`saved`, and
// not given on the command line `args`), an
// InputError it throws for a file not found says where they came from: the checkpoint's
// config.ini, whose relative paths are read from the directory tessera runs in, which may not
// be the saving run's.
void check_saved_paths(const SavedModelArgs& args, const std::string& option,
                       const std::string& value, const std::string& saved,
                       const std::function<void()>& check);

}  // namespace tessera
