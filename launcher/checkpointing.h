// Checkpoints of a training run (docs/CHECKPOINTS.md). Each rank writes the blocks of the global
// tensors it owns (parameters and both AdamW moments; replicated ones by one rank only) into its
// shard file; rank 0 then writes model.h5 (virtual datasets over the shards) and the MANIFEST, and
// commits: step_N.tmp is renamed to step_N, then `latest` is replaced. Loading reads, on every
// rank, the blocks its own layout needs, so a checkpoint resumes into any TP x PP x DP layout.
// Every function here is collective over the trainer's world.
#pragma once

#include <atomic>
#include <exception>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "io/checkpoint_io.h"

#include "launcher/trainer.h"

namespace tessera {

// ROOT/step_00001000, the directory of step `step`.
std::string checkpoint_dir(const std::string& root, int64_t step);

// Removes ROOT/*.tmp left by an interrupted save (rank 0; the others wait).
void remove_unfinished_checkpoints(Communicator& world, const std::string& root);

// Saves the trainer's state after its last step into ROOT/step_N. Synchronously: every rank
// writes its shard, a barrier, rank 0 commits, a barrier. Asynchronously (--checkpoint.async):
// save() copies the rank's blocks to host memory and returns; a thread writes the shard; each
// step poll() asks all ranks (one small all-reduce) whether every shard is on disk, and then
// rank 0 commits on a thread of its own. The commit protocol is the same either way: nothing is
// visible before every file is written, fsynced and listed in the MANIFEST.
class CheckpointSaver {
 public:
  CheckpointSaver(Trainer& tr, std::string root, bool async);
  ~CheckpointSaver();
  CheckpointSaver(const CheckpointSaver&) = delete;
  CheckpointSaver& operator=(const CheckpointSaver&) = delete;

  // Starts a save (finishing the previous one first); returns the seconds training was held.
  double save();
  // At a step boundary, collective: true when a save in flight has just been handed to commit;
  // rank 0 then prints `checkpoint: DIR written in the background`.
  bool poll();
  // Waits until every save is committed (collective). With --checkpoint.async, rank 0 prints
  // `checkpoint: DIR written (waited for it)` for a save that poll() had not announced.
  void finish();
  // The newest directory this saver committed ("" before the first), on every rank.
  const std::string& committed() const { return committed_; }
  const std::string& directory() const { return dir_; }  // of the save in flight or last
  double write_seconds() const { return write_s_; }      // this rank's shard, last save

 private:
  void commit();
  void gather_crcs();  // collective: every rank's shard CRC to rank 0
  Trainer& tr_;
  std::string root_, dir_, committed_;
  bool async_;
  bool pending_ = false;   // shards not yet known to be written everywhere
  std::string announced_;  // the last save poll() reported written
  std::atomic<bool> written_{false};
  double write_s_ = 0;
  bool has_shard_ = false;
  uint32_t shard_crc_ = 0;
  std::map<std::string, uint32_t> crcs_;  // rank 0: of every shard, for the MANIFEST
  CheckpointMeta meta_;
  std::vector<Tensor> snapshot_;  // host copies of the blocks (asynchronous saves)
  std::thread writer_, committer_;
  std::exception_ptr error_;  // of a background write or commit, rethrown on the main thread
};

// InputError naming `dir` when `meta` lacks a key that a resume reads (step, adamw_step,
// consumed_samples, seed).
void check_resume_meta(const CheckpointMeta& meta, const std::string& dir);

// InputError naming `dir` when its checkpoint cannot be resumed by the trainer `tr` (made, not
// started): a key a resume reads is missing; it was saved with another layer count, head count
// or position kind (what the tensors' shapes do not show); with another seed; at a position
// this run's micro-batch x data-parallel ranks do not divide; or by a run that read another
// sample sequence (SampleStream::sequence_key), unless --data.allow_change, which returns a
// note saying so. Rank 0 calls it before the ranks agree on their inputs.
std::string check_checkpoint_fits(const std::string& dir, Trainer& tr);

// The checkpoint `dir`, opened, once it verifies: every checksum of its MANIFEST
// (verify_manifest), and model.h5's map of the shards against the shards
// (CheckpointReader::check_shards); InputError naming the file otherwise. What "usable" means
// below, and what `tessera ckpt verify` and `export` check. The CRC pass reads every byte of
// the checkpoint: a progress line on stderr (launcher/progress.h) names it `what`.
CheckpointReader verify_checkpoint(const std::string& dir, const std::string& what);

// How a candidate checkpoint is judged: InputError naming what is wrong, else it is usable.
using CheckpointVerifier = std::function<void(const std::string& dir)>;
// verify_checkpoint, on this process alone (`tessera sample`).
inline void verify_here(const std::string& dir) {
  verify_checkpoint(dir, "sample: checking " + dir);
}

// ROOT/latest if it verifies, else the newest step_N under ROOT that does, adding to `note` what
// was skipped and why, in order; "" when none does (`note` then says why, if anything was
// there). The directory `latest` names is verified once. A CheckpointUnreadable is passed on
// (a checkpoint that cannot be read is not skipped for an older one), with what was skipped.
std::string newest_checkpoint(const std::string& root, std::string& note,
                              const CheckpointVerifier& verify = verify_here);

// The checkpoint that --checkpoint.resume selects, on this rank alone (rank 0 calls it before
// the ranks agree on their inputs): "none" gives "", a PATH must verify, "auto" is
// newest_checkpoint. A run that would save over checkpoints it does not continue is an
// InputError: "none", or a PATH outside ROOT, while ROOT holds step directories, and "auto"
// when ROOT holds some and none verifies.
std::string choose_checkpoint(const std::string& root, const std::string& resume, std::string& note,
                              const CheckpointVerifier& verify = verify_here);

// NOTE + "; " + PART (PART alone when NOTE is empty; nothing when PART is): the notes of a
// checkpoint's choice, said on one line.
void add_note(std::string& note, const std::string& part);

// Restores ROOT/step_N.replaced, the old directory of a step that a save was replacing when
// its run stopped, as step_N, unless the new step_N made it in (then the old one is deleted).
// Returns what it restored, for the log ("" when nothing). Rank 0, under the run's lock.
std::string restore_replaced_checkpoints(const std::string& root);

// choose_checkpoint by every rank of `world` together (collective; `note` and the exceptions on
// rank 0, which drives the choice): rank 0 checks each candidate's MANIFEST sizes, the ranks
// share the CRC-32C pass over its files (in 64 MiB pieces, combined per file), and rank 0
// checks model.h5's map of the shards; so no rank reads the whole checkpoint before a resume.
// First, rank 0 restores a step being replaced when a run stopped (in `note`). A
// rank that cannot read its pieces stops the choice (CheckpointUnreadable), naming it. Every rank
// returns the choice ("" on the other ranks when rank 0 throws, which the ranks' next agreement
// turns into its exit). The same checks as verify_checkpoint, in the same order.
std::string choose_checkpoint_together(Communicator& world, const std::string& root,
                                       const std::string& resume, std::string& note);

// Its CRC-32C pass over checkpoint `dir`'s files, whose MANIFEST rank 0 read (`manifest_text`),
// shared by every rank of `world` (collective): the files are cut into pieces of `piece_bytes`,
// piece j read by rank j % N, and the pieces' CRCs combined per file, so every rank reads about
// 1/N of the bytes, however few the files. Throws the same on every rank: InputError naming the
// first damaged file; CheckpointUnreadable naming the lowest rank (and its host) that could not
// read its pieces, which is that machine's fault, not the checkpoint's.
void verify_crcs_together(Communicator& world, const std::string& dir,
                          const std::string& manifest_text,
                          uint64_t piece_bytes = uint64_t{64} << 20);

// Loads the state saved in `dir` into the trainer (started, any layout): parameters, moments,
// the optimizer's step, the loader's position and the step count. InputError naming the tensor
// and both shapes when the checkpoint holds another model. What shapes do not show (layers,
// heads, positions, the meta keys) `dir` must have passed already: check_checkpoint_fits, which
// train's rank 0 runs once when it chooses the checkpoint. Collective over each DP group: without
// ZeRO-1 DP rank 0 reads and broadcasts, with it each rank reads the elements of its piece and
// the values are all-gathered. A read that fails on one rank (an I/O error) ends it through
// fail_alone, whose abort ends the others waiting in those collectives.
void load_checkpoint(Trainer& tr, const std::string& dir);

// Loads only the weights saved in `dir` into `model` (any layout, any device; rounded to bf16
// for a bf16 model), for sampling. `rank` reads its own shard file where the saving layout
// matches. Presence and sizes are checked; the caller verifies the checksums.
void load_weights(GPT& model, const std::string& dir, int rank);

}  // namespace tessera
