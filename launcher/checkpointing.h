// Checkpoints of a training run (docs/CHECKPOINTS.md). Each rank writes the blocks of the global
// tensors it owns (parameters and both AdamW moments; replicated ones by one rank only) into its
// shard file; rank 0 then writes model.h5 (virtual datasets over the shards) and the MANIFEST, and
// commits: step_N.tmp is renamed to step_N, then `latest` is replaced. Loading reads, on every
// rank, the blocks its own layout needs, so a checkpoint resumes into any TP x PP x DP layout.
// Which checkpoint to resume, and whether one is usable: launcher/checkpoint_choice.h. Each
// function says who calls it: the saver and remove_unfinished_checkpoints are collective over
// the trainer's world, load_checkpoint over each DP group; the checks are rank 0's or local.
#pragma once

#include <atomic>
#include <chrono>
#include <exception>
#include <map>
#include <string>
#include <thread>

#include "io/checkpoint_io.h"

#include "launcher/trainer.h"

namespace tessera {

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

  // Starts a save (finishing the previous one first); returns the seconds training was held,
  // also waiting for the previous one.
  double save();
  // At a step boundary, collective: true when a save in flight has just been handed to commit;
  // rank 0 then prints `checkpoint: DIR written in the background`.
  bool poll();
  // Waits until every save is committed (collective). With --checkpoint.async, rank 0 prints
  // `checkpoint: DIR written (waited for it)` for a save that poll() had not announced.
  void finish();
  // The longest a save took from its start until every rank's shard was written (until the poll
  // that found it written, for one written in the background), of those so far; 0 before one.
  double longest_save_seconds() const { return longest_s_; }
  // Whether a save's shards may still be being written in the background, which finish() waits
  // for; and how long ago it started.
  bool writing() const { return pending_; }
  double seconds_since_save_start() const;
  // The newest directory this saver committed ("" before the first), on every rank.
  const std::string& committed() const { return committed_; }
  const std::string& directory() const { return dir_; }  // of the save in flight or last
  double write_seconds() const { return write_s_; }      // this rank's shard, last save

 private:
  void commit();
  void gather_crcs();   // collective: every rank's shard CRC to rank 0
  void note_written();  // the save in flight is written everywhere: pending_ false, timed
  Trainer& tr_;
  std::string root_, dir_, committed_;
  bool async_;
  bool pending_ = false;   // shards not yet known to be written everywhere
  std::string announced_;  // the last save poll() reported written
  std::atomic<bool> written_{false};
  double write_s_ = 0;
  std::chrono::steady_clock::time_point started_;  // of the last save
  double longest_s_ = 0;
  bool has_shard_ = false;
  uint32_t shard_crc_ = 0;
  std::map<std::string, uint32_t> crcs_;  // rank 0: of every shard, for the MANIFEST
  CheckpointMeta meta_;
  std::vector<Tensor> snapshot_;  // host copies of the blocks (asynchronous saves)
  std::thread writer_, committer_;
  std::exception_ptr error_;  // of a background write or commit, rethrown on the main thread
};

// InputError naming `dir` when `meta` lacks a key that a resume reads (step, adamw_step,
// consumed_samples, seed). Local.
void check_resume_meta(const CheckpointMeta& meta, const std::string& dir);

// InputError naming `dir` when its checkpoint cannot be resumed by the trainer `tr` (made, not
// started): a key a resume reads is missing; it was saved with another layer count, head count
// or position kind (what the tensors' shapes do not show); with another seed; at a position
// this run's micro-batch x data-parallel ranks do not divide; or by a run that read another
// sample sequence (SampleStream::sequence_key), unless --data.allow_change, which returns a
// note saying so. Rank 0 calls it before the ranks agree on their inputs.
std::string check_checkpoint_fits(const std::string& dir, Trainer& tr);

// Loads the state saved in `dir` into the trainer (started, any layout): parameters, moments,
// the optimizer's step, the loader's position and the step count. InputError naming the tensor
// and both shapes when the checkpoint holds another model. What shapes do not show (layers,
// heads, positions, the meta keys) `dir` must have passed already: check_checkpoint_fits, which
// train's rank 0 runs once when it chooses the checkpoint; so must its files, whose sizes and
// checksums the choice verified (no file's size is checked again here). Collective over each DP
// group: without ZeRO-1 DP rank 0 reads and broadcasts, with it each rank reads the elements of
// its piece and the values are all-gathered. A read that fails on one rank (an I/O error) ends it
// through fail_alone, whose abort ends the others waiting in those collectives.
void load_checkpoint(Trainer& tr, const std::string& dir);

// Rank 0, before the ranks agree to start: InputError naming `dir` when the checkpoint of
// --checkpoint.init holds another model's shape than `model` (check_saved_model); else the note
// that says where the weights come from and what starts afresh.
std::string check_initial_weights_fit(const std::string& dir, const ModelConfig& model);

// --checkpoint.init: the weights saved in `dir` into the trainer (started, any layout), its
// masters with bf16; the moments, step, schedule and loader stay a fresh start's. Collective as
// load_checkpoint is, which has the same preconditions.
void load_initial_weights(Trainer& tr, const std::string& dir);

// Rank 0, once the run has loaded `resumed`: when it is a step of this run's own `root` other
// than the one `latest` names (a rollback to an earlier step, or a fallback past a damaged
// newest one), `latest` is made to name it, and that is said: a run that then stops before its
// first save resumes where it started, not from the steps it turned away from. Steps of another
// run directory leave `latest` alone.
void point_latest_at_resumed_step(const std::string& root, const std::string& resumed);

// Loads only the weights saved in `dir` into `model` (any layout, any device; rounded to bf16
// for a bf16 model), for sampling. `rank` reads its own shard file where the saving layout
// matches. Presence and sizes are checked; the caller verifies the checksums. Local.
void load_weights(GPT& model, const std::string& dir, int rank);

}  // namespace tessera
