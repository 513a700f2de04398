// Which checkpoint a run resumes, and whether a checkpoint is usable (docs/CHECKPOINTS.md,
// "Resuming"): its MANIFEST's sizes and checksums, then model.h5's map of the shards. One
// process judges alone (verify_checkpoint, newest_checkpoint, choose_checkpoint: `tessera ckpt`,
// `sample`, `eval`); the ranks of a training run judge together, sharing the checksum pass
// (choose_checkpoint_together, verify_crcs_together: collective over their world).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "core/communicator.h"
#include "io/checkpoint_io.h"

namespace tessera {

// The checkpoint `dir`, opened, once it verifies: every checksum of its MANIFEST
// (verify_manifest), and model.h5's map of the shards against the shards
// (CheckpointReader::check_shards); InputError naming the file otherwise. What "usable" means
// below, and what `tessera ckpt verify` and `export` check. The CRC pass reads every byte of
// the checkpoint: a progress line on stderr (launcher/progress.h) names it `what`.
CheckpointReader verify_checkpoint(const std::string& dir, const std::string& what);

// How a candidate checkpoint is judged: InputError naming what is wrong, else it is usable.
using CheckpointVerifier = std::function<void(const std::string& dir)>;

// ROOT/latest if it verifies, else the newest step_N under ROOT that does, adding to `note` what
// was skipped and why, in order; "" when none does (`note` then says why, if anything was
// there). The directory `latest` names is verified once. A CheckpointUnreadable is passed on
// (a checkpoint that cannot be read is not skipped for an older one), with what was skipped.
std::string newest_checkpoint(const std::string& root, std::string& note,
                              const CheckpointVerifier& verify);

// The checkpoint that --checkpoint.resume selects: "none" gives "", a PATH must verify, "auto" is
// newest_checkpoint. A run that would save over checkpoints it does not continue is an
// InputError: "none", or a PATH outside ROOT, while ROOT holds step directories, and "auto"
// when ROOT holds some and none verifies.
std::string choose_checkpoint(const std::string& root, const std::string& resume, std::string& note,
                              const CheckpointVerifier& verify);

// InputError when DIR is a directory of checkpoints (a run's checkpoints/, holding `latest` or
// step_N directories), or a run directory whose checkpoints/ holds some, rather than one
// checkpoint, naming the step directory to give instead: the one `latest` names, else the
// newest. `what` names the option or command ("--checkpoint.resume", "ckpt verify"). Commands
// that take a directory of checkpoints (sample, eval) choose among them instead.
void refuse_directory_of_checkpoints(const std::string& what, const std::string& dir);

// DIR/checkpoints when DIR, which is no checkpoint (its caller found neither MANIFEST nor
// model.h5 in it), is a run directory whose checkpoints/ holds step directories; "" otherwise.
std::string run_directory_checkpoints(const std::string& dir);

// The name of the directory PATH when it lies directly in ROOT (PATH also given as "DIR/", as a
// shell completes it, or relative to the working directory), else "": a step of the run itself.
std::string name_in_root(const std::string& root, const std::string& path);

// NOTE + "; " + PART (PART alone when NOTE is empty; nothing when PART is): the notes of a
// checkpoint's choice, said on one line.
void add_note(std::string& note, const std::string& part);

// choose_checkpoint by every rank of `world` together (collective; `note` and the exceptions on
// rank 0, which drives the choice): rank 0 checks each candidate's MANIFEST sizes, the ranks
// share the CRC-32C pass over its files (in 64 MiB pieces, combined per file), and rank 0
// checks model.h5's map of the shards; so no rank reads the whole checkpoint before a resume.
// First, rank 0 restores a step that a save was replacing when a run stopped (step_N.replaced,
// said in `note`). A rank that cannot read its pieces stops the choice (CheckpointUnreadable),
// naming it. Every rank returns the choice ("" on the other ranks when rank 0 throws, which the
// ranks' next agreement turns into its exit). The same checks as verify_checkpoint, in the same
// order (one function runs both).
std::string choose_checkpoint_together(Communicator& world, const std::string& root,
                                       const std::string& resume, std::string& note);

// The checkpoint --checkpoint.init names (`path`), verified by every rank of `world` together as
// choose_checkpoint_together verifies a resume's: a step directory (a directory of them, or a run
// directory, is refused naming one; so is an unfinished save of this run's `root`, which it
// removes before it starts), every checksum. Collective; rank 0 throws, the others return ""
// then.
std::string choose_initial_weights_together(Communicator& world, const std::string& root,
                                            const std::string& path);

// choose_checkpoint after restore_replaced_checkpoints (`dry_run`: said, not done), with both
// notes in `note`: what choose_checkpoint_together runs on rank 0, and `tessera train --check` on
// its one process.
std::string choose_checkpoint_restoring(const std::string& root, const std::string& resume,
                                        std::string& note, const CheckpointVerifier& verify,
                                        bool dry_run = false);

// choose_initial_weights_together's checks of `path` by one process, the checkpoint judged by
// `verify`.
std::string choose_initial_weights(const std::string& root, const std::string& path,
                                   const CheckpointVerifier& verify);

// Restores ROOT/step_N.replaced, the old directory of a step that a save was replacing when
// its run stopped, as step_N, unless the new step_N made it in (then the old one is deleted).
// Returns what it restored, for the log ("" when nothing). Rank 0, under the run's lock.
// `dry_run` (`tessera train --check`): changes nothing, and says what a run would restore.
std::string restore_replaced_checkpoints(const std::string& root, bool dry_run = false);

// Its CRC-32C pass over checkpoint `dir`'s files, whose MANIFEST rank 0 read (`manifest_text`),
// shared by every rank of `world` (collective): the files are cut into pieces of `piece_bytes`,
// piece j read by rank j % N, and the pieces' CRCs combined per file, so every rank reads about
// 1/N of the bytes, however few the files. Throws the same on every rank: InputError naming the
// first damaged file; CheckpointUnreadable naming the lowest rank (and its host) that could not
// read its pieces, which is that machine's fault, not the checkpoint's.
void verify_crcs_together(Communicator& world, const std::string& dir,
                          const std::string& manifest_text,
                          uint64_t piece_bytes = uint64_t{64} << 20);

}  // namespace tessera
