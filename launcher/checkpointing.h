// Checkpoints of a training run (docs/CHECKPOINTS.md). Each rank writes the blocks of the global
// tensors it owns (parameters and both AdamW moments; replicated ones by one rank only) into its
// shard file; rank 0 then writes model.h5 (virtual datasets over the shards) and the MANIFEST, and
// commits: step_N.tmp is renamed to step_N, then `latest` is replaced. Loading reads, on every
// rank, the blocks its own layout needs, so a checkpoint resumes into any TP x PP x DP layout.
// Every function here is collective over the trainer's world.
#pragma once

#include <string>

#include "launcher/trainer.h"

namespace tessera {

// ROOT/step_00001000, the directory of step `step`.
std::string checkpoint_dir(const std::string& root, int64_t step);

// Removes ROOT/*.tmp left by an interrupted save (rank 0; the others wait).
void remove_unfinished_checkpoints(Communicator& world, const std::string& root);

// Saves the trainer's state after its last step; returns the committed directory.
std::string save_checkpoint(Trainer& tr, const std::string& root);

// The checkpoint that --checkpoint.resume selects, on this rank alone (rank 0 calls it before
// the ranks agree on their inputs): "none" gives "", a path must verify (else InputError),
// "auto" takes ROOT/latest and, if that does not verify, the newest step_N that does, saying so
// in `note`; "" when there is none.
std::string choose_checkpoint(const std::string& root, const std::string& resume,
                              std::string& note);

// Rank 0's string on every rank of `world` (collective).
std::string broadcast_text(Communicator& world, const std::string& text);

// Loads the state saved in `dir` into the trainer (started, any layout): parameters, moments,
// the optimizer's step, the loader's position and the step count. InputError naming the tensor
// and both shapes when the checkpoint holds another model.
void load_checkpoint(Trainer& tr, const std::string& dir);

}  // namespace tessera
