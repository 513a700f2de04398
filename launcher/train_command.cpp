// `tessera train` on every rank of an MPI world (one rank without mpirun): agree that the
// options, layout and corpus are good, build the grid, run the steps of launcher/trainer.h, and
// on rank 0 log each interval, write metrics.jsonl and the resolved config.ini, then summarise
// (what is printed: launcher/train_report.h).
#include "launcher/train_command.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <new>
#include <optional>
#include <thread>

#include "core/error.h"
#include "core/out_of_memory.h"
#include "io/durable_file.h"
#include "io/file_kind.h"
#include "launcher/checkpoint_choice.h"
#include "launcher/checkpointing.h"
#include "launcher/cluster.h"
#include "launcher/corpora.h"
#include "launcher/exit_codes.h"
#include "launcher/progress.h"
#include "launcher/replica_check.h"
#include "launcher/sampling.h"
#include "launcher/train_report.h"
#include "launcher/trainer.h"
#include "parallel/mpi_runtime.h"
#include "parallel/watchdog.h"

namespace tessera {

namespace {

using Clock = std::chrono::steady_clock;

// A save's barriers wait for the slowest shard writer and for rank 0's commit: while a
// SaveDeadline lives, the start-up deadline covers them instead of the collective one.
class SaveDeadline {
 public:
  explicit SaveDeadline(const TrainConfig& cfg) : cfg_(cfg) {
    Watchdog::instance().set_deadline(cfg.startup_deadline());
  }
  ~SaveDeadline() { Watchdog::instance().set_deadline(cfg_.collective_timeout); }
  SaveDeadline(const SaveDeadline&) = delete;
  SaveDeadline& operator=(const SaveDeadline&) = delete;

 private:
  const TrainConfig& cfg_;
};

// The write lock of a whole file, for F_SETLK (taking it) and F_GETLK (asking who holds it).
struct flock whole_file_write_lock() {
  struct flock whole {};
  whole.l_type = F_WRLCK;
  whole.l_whence = SEEK_SET;
  return whole;
}

// Who holds the lock file `path` open as `fd`, as its holder wrote it ("host H, pid P"), else
// "PATH is locked".
std::string lock_holder(int fd, const std::string& path) {
  char holder[256] = {};
  const ssize_t n = ::pread(fd, holder, sizeof holder - 1, 0);
  std::string who = n > 0 ? std::string(holder, static_cast<size_t>(n)) : "";
  while (!who.empty() && (who.back() == '\n' || who.back() == ' ')) who.pop_back();
  return who.empty() ? path + " is locked" : who;
}

// RUN_DIR/lock, held by this process until it ends: two runs in one directory would commit over
// each other's checkpoints. A POSIX record lock (fcntl), which the kernel drops with the process,
// however it ends, and which NFS (v4, or v3 with lockd) and Lustre mounted with `flock` honour;
// where the file system has no locks it is skipped. Any close() of the file would drop it too,
// so the descriptor stays open for the life of the process.
void lock_run_dir(const std::string& run_dir) {
  const std::string path = (std::filesystem::path(run_dir) / "lock").string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);  // umask decides
  if (fd < 0) throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
  struct flock whole = whole_file_write_lock();
  if (::fcntl(fd, F_SETLK, &whole) != 0) {
    const int err = errno;
    if (err != EACCES && err != EAGAIN) {  // a file system without locks: go on unlocked
      ::close(fd);
      std::printf(
          "run dir: %s takes no lock (%s): nothing stops a second run in this directory, "
          "which would overwrite this one's checkpoints\n",
          path.c_str(), std::strerror(err));
      return;
    }
    const std::string who = lock_holder(fd, path);
    ::close(fd);
    throw InputError("--run.dir " + run_dir + ": in use by another tessera run (" + who +
                     "); two runs in one directory would overwrite each other's checkpoints: "
                     "wait for it, or give another --run.dir (a lock of a host that is down "
                     "may outlive it on NFS: then delete " +
                     path + ")");
  }
  const std::string me = "host " + host_name() + ", pid " + std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, me.data(), me.size(), 0) < 0) {
    // The lock holds without the note; only the message to a second run is poorer.
  }
}

// What a run would be told of RUN_DIR's lock now, without taking it: "" when none holds it (or
// there is none, or the file system takes no locks).
std::string run_dir_holder(const std::string& run_dir) {
  const std::string path = (std::filesystem::path(run_dir) / "lock").string();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  struct flock whole = whole_file_write_lock();
  const std::string who =
      ::fcntl(fd, F_GETLK, &whole) == 0 && whole.l_type != F_UNLCK ? lock_holder(fd, path) : "";
  ::close(fd);
  return who;
}

// A run resumed at `step` of `steps` or more ends at once, saying so.
void print_nothing_to_train(int64_t step, int64_t steps) {
  std::printf("nothing to train: the checkpoint is at step %lld of --train.steps %lld\n",
              static_cast<long long>(step), static_cast<long long>(steps));
}

// The files of RUN_DIR that a run writes (its lock, config.ini, metrics.jsonl), where a directory
// stands in the way: refused at the start, not when the first of them is written.
void refuse_directories_in_place_of_files(const std::string& run_dir) {
  for (const char* name : {"lock", "config.ini", "metrics.jsonl"}) {
    const std::filesystem::path file = std::filesystem::path(run_dir) / name;
    std::error_code ec;
    if (std::filesystem::is_directory(file, ec))
      throw InputError(file.string() +
                       ": expected a file this run writes, found a directory; move it away");
  }
}

// The refusal of --run.dir `dir`, which cannot be created for `why`.
InputError run_dir_refusal(const std::string& dir, const std::string& why) {
  return InputError("--run.dir " + dir + ": cannot create (" + why + ")");
}

// The directories a start made for RUN_DIR, in the order made (its missing parents, and RUN_DIR
// itself when it was not there), for a refused start to remove.
struct MadeDirs {
  std::vector<std::filesystem::path> dirs;
  bool run_dir = false;  // the last of them is RUN_DIR ("x/.." makes x, but names a directory
                         // that was there)
};

// A refused start leaves no directory that prepare_run_dir made: in RUN_DIR, when it made it,
// its lock and the data cache the corpora's opening made there (with the id-check records of
// the corpora it opened); then each directory it made, newest first, when empty. Whatever else
// is found there stays, and the directory with it.
void remove_refused_run_dir(const TrainConfig& cfg, const MadeDirs& made) {
  std::error_code ec;
  if (made.run_dir) {
    std::filesystem::remove(std::filesystem::path(cfg.run_dir) / "lock", ec);
    if (cfg.cache_dir.empty())
      std::filesystem::remove_all(std::filesystem::path(cfg.run_dir) / "data_cache", ec);
  }
  for (auto dir = made.dirs.rbegin(); dir != made.dirs.rend(); ++dir)
    std::filesystem::remove(*dir, ec);  // when empty
}

// Creates and locks RUN_DIR, before the corpora are read (a second run stops there); nothing else
// in it is written before the run is known to go ahead. RUN_DIR is made one directory at a time,
// as create_directories makes it, keeping which ones this start made.
MadeDirs prepare_run_dir(const TrainConfig& cfg) {
  MadeDirs made;
  try {
    std::filesystem::path prefix;
    for (const std::filesystem::path& part : std::filesystem::path(cfg.run_dir)) {
      prefix /= part;
      if (part.empty() || part == ".") continue;  // "DIR/", "DIR/."
      std::error_code ec;
      made.run_dir = std::filesystem::create_directory(prefix, ec);
      if (ec == std::errc::file_exists)  // a file in the way, said as create_directories says it
        ec = std::make_error_code(std::errc::not_a_directory);
      if (ec) throw run_dir_refusal(cfg.run_dir, ec.message());
      if (made.run_dir) made.dirs.push_back(prefix);
    }
    refuse_directories_in_place_of_files(cfg.run_dir);
    lock_run_dir(cfg.run_dir);
  } catch (...) {
    remove_refused_run_dir(cfg, made);
    throw;
  }
  return made;
}

}  // namespace

std::string checkpoints_root(const TrainConfig& cfg) {
  return (std::filesystem::path(cfg.run_dir) / "checkpoints").string();
}

TrainResult run_training(const TrainConfig& cfg, Trainer& tr, Communicator& world,
                         const std::string& resume_dir, const std::string& init_dir,
                         int local_rank) {
  const bool root = world.rank() == 0;
  const std::string ckpt_root = checkpoints_root(cfg);
  tr.start(world, local_rank);
  remove_unfinished_checkpoints(world, ckpt_root);
  if (!resume_dir.empty()) {
    load_checkpoint(tr, resume_dir);
    if (root)
      std::printf("resumed from %s: step %lld, %lld samples consumed\n", resume_dir.c_str(),
                  static_cast<long long>(tr.steps_done()),
                  static_cast<long long>(tr.loader().state().consumed));
  } else if (!init_dir.empty()) {
    load_initial_weights(tr, init_dir);
  }
  // Once nothing can refuse the start any more: a start refused on any rank leaves the run
  // directory's config.ini as the run that saved its checkpoints wrote it. The load is the last
  // step that may fail (a shard unreadable on a later stage, whose rank then aborts the world),
  // and it talks within DP groups only: the barrier waits for every rank's.
  if (!resume_dir.empty() || !init_dir.empty()) world.barrier();
  if (root)
    write_file_atomically((std::filesystem::path(cfg.run_dir) / "config.ini").string(),
                          tr.config().resolved_ini);  // a resume's: what its weights began from
  if (root && !resume_dir.empty()) point_latest_at_resumed_step(ckpt_root, resume_dir);
  if (root) print_start(cfg, tr);
  if (tr.steps_done() >= cfg.steps) {
    if (root) print_nothing_to_train(tr.steps_done(), cfg.steps);
    return TrainResult{};
  }
  CheckpointSaver saver(tr, ckpt_root, cfg.checkpoint_async);
  // Every save whole (written and committed), under the looser deadline a save may take.
  const auto finish_saves = [&] {
    const SaveDeadline deadline(cfg);
    saver.finish();
  };
  const int64_t first = tr.steps_done();
  IntervalLog log(cfg, root, world.size() * peak_flops_per_rank(cfg), first);
  TrainResult result;
  result.first_step = first;
  const auto start = Clock::now();
  const std::vector<RankStep> stalls = rank_steps("--debug.stall", cfg.debug_stall);
  // The seconds the final save may take, should the run stop at this step: a whole save (the
  // longest so far), after the rest of a save still writing in the background and the interval
  // save this step makes otherwise, both of which it would wait for.
  bool interval_save_due = false;
  const auto final_save_s = [&] {
    const double running = saver.writing() ? saver.seconds_since_save_start() : 0;
    const double longest = std::max(saver.longest_save_seconds(), running);
    return longest + (saver.writing() ? longest - running : 0) + (interval_save_due ? longest : 0);
  };
  // This rank's wish to stop (StopReason bits), asked at the end of each step's backward and
  // before each validation batch: a signal, or --train.time_limit, which stops while the slowest
  // step so far, twice, and the final save still fit before the limit.
  double slowest_step_s = 0;
  int64_t saves = 0;
  bool signal_counted = false;  // this rank's signal was in an agreement's count
  const auto stop_wish = [&] {
    const int signo = stop_signal();
    int stop = signo ? kStopSignal : 0;
    signal_counted |= signo != 0;
    if (signo == SIGINT) stop |= kStopInterrupt;
    if (cfg.time_limit > 0 &&
        seconds_since_process_start() + 2 * slowest_step_s + final_save_s() >= cfg.time_limit)
      stop |= kStopTime;
    return stop;
  };
  for (int64_t step = first; step < cfg.steps; ++step) {
    if (has_rank_step(stalls, world.rank(), step + 1))
      std::this_thread::sleep_for(std::chrono::hours(1));
    if (first == 0 && cfg.debug_wait_for_stop == step + 1)
      while (stop_signal() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const auto step_start = Clock::now();
    interval_save_due = cfg.checkpoint_interval > 0 && (step + 1) % cfg.checkpoint_interval == 0;
    StepStats s = tr.step(stop_wish);
    // The step alone: a validation, which a stop ends, is not what the time limit must leave
    // room for.
    slowest_step_s =
        std::max(slowest_step_s, std::chrono::duration<double>(Clock::now() - step_start).count());
    if (step == first) Watchdog::instance().set_deadline(cfg.collective_timeout);
    result.losses.push_back(s.loss);
    if (s.skipped) {
      const int64_t skipped_in_a_row = tr.skipped_in_a_row();
      if (cfg.nan_policy == "halt" || skipped_in_a_row > cfg.nan_max_skips) {
        report_nonfinite(cfg, tr, world, step, s,
                         cfg.nan_policy == "halt"
                             ? "--train.nan_policy halt"
                             : std::to_string(skipped_in_a_row) +
                                   " steps in a row, more than --train.nan_max_skips " +
                                   std::to_string(cfg.nan_max_skips));
        result.exit_code = kExitNonFinite;
        break;
      }
      log.skipped(step, s, skipped_in_a_row, tr.skipped_total());
    } else {
      log.add(step, s, tr.loader().epochs());
    }
    const bool last = step + 1 == cfg.steps;
    const bool eval_now = cfg.eval_interval > 0 && ((step + 1) % cfg.eval_interval == 0 || last);
    if (tr.has_validation() && eval_now) {
      // Not begun when the step agreed to stop; ended early when a rank wishes to stop during it.
      const bool stopping = s.stops();
      const auto eval_start = Clock::now();
      const std::optional<double> valid_loss = stopping ? std::nullopt : tr.evaluate(stop_wish, s);
      log.exclude(Clock::now() - eval_start);
      if (valid_loss)
        log.validation(step, *valid_loss);
      else
        log.validation_stopped(step, stopping ? 0 : tr.batches_evaluated(), cfg.eval_batches);
    }
    // After the validation, which a stop wished for during it makes the step's (`s`) too.
    const bool preempted = !last && s.stops();
    const bool exiting = cfg.exit_after > 0 && step + 1 - first == cfg.exit_after;
    if (preempted || exiting) log.end_early(step, s, tr.loader().epochs());
    const bool save =
        exiting || preempted || interval_save_due || (cfg.checkpoint_interval > 0 && last);
    // Every N steps, and before every save, so that no checkpoint holds copies that differ.
    if (cfg.check_replicas > 0 && ((step + 1) % cfg.check_replicas == 0 || save)) {
      const std::string mismatch = replica_mismatch(tr);
      if (!mismatch.empty()) {
        if (root)
          std::printf(
              "halt: step %lld: %s (--train.check_replicas): a fault of a GPU, its memory or a "
              "link, or a bug; no checkpoint of this state is saved; exit code %d\n",
              static_cast<long long>(step + 1), mismatch.c_str(), kExitInternalError);
        result.exit_code = kExitInternalError;
        break;
      }
    }
    saver.poll();
    if (save) {
      const auto save_start = Clock::now();
      double held_s = 0;
      {
        const SaveDeadline deadline(cfg);
        held_s = saver.save();
        ++saves;
        if (preempted) saver.finish();  // the checkpoint must be whole before the process ends
      }
      log.exclude(Clock::now() - save_start);
      if (root) {
        std::printf(
            "checkpoint: %s: training held %.3f s%s\n", saver.directory().c_str(), held_s,
            cfg.checkpoint_async && !preempted ? " (state copied; writing in the background)" : "");
        std::fflush(stdout);  // the line to find after a hang or an abort
      }
    }
    if (preempted) {
      result.exit_code = report_preempted(cfg, world, step, s, saver.directory(), signal_counted);
      break;
    }
    // A signal (or the time limit) during an interval save: the run stops with that checkpoint
    // now, not one step and a second save later, which the scheduler's grace may not hold.
    if (save && !last && !exiting) {
      interval_save_due = false;  // made: the time left need not hold it again
      const StepStats wish = tr.agree_on_stop(stop_wish());
      if (wish.stops()) {
        log.end_early(step, s, tr.loader().epochs());
        finish_saves();  // before it is named as the checkpoint to resume from
        result.exit_code =
            report_preempted(cfg, world, step, wish, saver.directory(), signal_counted);
        break;
      }
    }
    if (exiting) {
      if (root)
        std::printf("exit after %lld steps of this run (--train.exit_after), at step %lld\n",
                    static_cast<long long>(cfg.exit_after), static_cast<long long>(step + 1));
      break;
    }
  }
  finish_saves();  // the last save may still be writing or committing
  result.final_loss = log.last_mean();
  if (result.exit_code == kExitNonFinite || result.exit_code == kExitInternalError) return result;
  const double run_s = std::chrono::duration<double>(Clock::now() - start).count();
  if (tr.skipped_total() > 0 && root)
    std::printf("skipped steps: %lld (non-finite loss or gradient norm)\n",
                static_cast<long long>(tr.skipped_total()));
  print_summary(cfg, tr, result, world);
  if (root)
    std::printf("data: the loop waited %.3f s for batches, %.2f%% of the %.1f s of training\n",
                tr.loader().wait_seconds(), 100.0 * tr.loader().wait_seconds() / run_s, run_s);
  if (saves == 0 && cfg.checkpoint_interval == 0 && root)
    std::printf(
        "checkpoint: none saved (--checkpoint.interval 0): this run's weights are not "
        "kept; give an interval to keep them, and to sample from them with tessera "
        "sample\n");
  if (cfg.sample_tokens > 0 && result.exit_code == kExitOk)
    print_sample(cfg, tr.model(), tr.grid().tp(), tr.grid().pp(), root);
  return result;
}

namespace {

// The note of a --checkpoint.init that a run resuming its own checkpoint does not read.
std::string init_not_read(const TrainConfig& cfg) {
  return "--checkpoint.init " + cfg.checkpoint_init +
         " is not read: this run resumes its own checkpoint";
}

// --check's ranks: RANKS, else the ranks started (mpirun), else tp x pp x dp (dp 0 as 1).
int checked_ranks(const TrainConfig& cfg, int started_ranks) {
  const ParallelConfig& p = cfg.parallel;
  return cfg.check_ranks > 0 ? cfg.check_ranks
         : started_ranks > 1 ? started_ranks
                             : p.tp * p.pp * std::max(p.dp, 1);
}

// The layout on `ranks` ranks, and the directories the run would make, refused as the run
// refuses them (the layout's message said of the ranks checked for, not of the ranks started).
void check_layout_and_directories(const TrainConfig& cfg, int ranks) {
  try {
    cfg.layout_for(ranks);
  } catch (const InputError& e) {
    std::string what = e.what();
    const std::string started = "(the number of MPI ranks)";
    if (const size_t at = what.find(started); at != std::string::npos)
      what.replace(at, started.size(), "(the ranks checked for)");
    throw InputError(what);
  }
  if (const std::string why = unusable_directory(cfg.run_dir, true); !why.empty())
    throw run_dir_refusal(cfg.run_dir, why);
  refuse_directories_in_place_of_files(cfg.run_dir);
  if (const std::string why = unusable_directory(cfg.cache_dir, false); !why.empty())
    throw cache_dir_refusal(cfg, why);
}

// The checkpoint the run would resume (or start from, --checkpoint.init), chosen and verified as
// the ranks of a run would (a step a stopped save was replacing is said, not restored), and
// checked against the run; with the lines the run prints about it.
void check_checkpoint_choice(const TrainConfig& cfg, Trainer& tr) {
  const std::string root = checkpoints_root(cfg);
  int64_t step = -1;  // of the checkpoint verified last, which is the one chosen
  const CheckpointVerifier verify = [&step](const std::string& dir) {
    step = verify_checkpoint(dir, "check: " + dir).meta().int_or("step", -1);
  };
  std::string note;
  const std::string resume =
      choose_checkpoint_restoring(root, cfg.checkpoint_resume, note, verify, true);
  if (!resume.empty()) {
    add_note(note, check_checkpoint_fits(resume, tr));
    if (!cfg.checkpoint_init.empty()) add_note(note, init_not_read(cfg));
    std::printf("checkpoint: resumes %s (step %lld)\n", resume.c_str(),
                static_cast<long long>(step));
    if (step >= cfg.steps) print_nothing_to_train(step, cfg.steps);
  } else if (!cfg.checkpoint_init.empty()) {
    add_note(note, check_initial_weights_fit(
                       choose_initial_weights(root, cfg.checkpoint_init, verify), cfg.model));
  } else {
    std::printf("checkpoint: none to resume in %s; the run starts at step 0\n", root.c_str());
  }
  if (!note.empty()) std::printf("checkpoint: %s\n", printable(note).c_str());
}

// `tessera train --check [RANKS]`, on one process: the checks of a run's start for RANKS ranks,
// done here alone and writing nothing (no run directory, lock, id-check record, restored
// checkpoint): the layout and directories, the tokenizer, the corpora (every token id, unless
// the run's id-check records hold them), the checkpoint; with the lines a run prints about them,
// and the memory of the largest rank. Throws what the run's start would refuse.
void check_run(const TrainConfig& cfg, int started_ranks) {
  const auto start = Clock::now();
  const int ranks = checked_ranks(cfg, started_ranks);
  std::printf("check: a run of %s%s, checked by this process alone; nothing is written\n",
              count_of(ranks, "rank").c_str(),
              cfg.check_ranks > 0 || started_ranks > 1 || cfg.parallel.dp > 0
                  ? ""
                  : " (--parallel.dp 0 takes the ranks started: give --check RANKS for the job's)");
  check_layout_and_directories(cfg, ranks);
  Trainer tr(cfg, 0, ranks, true);
  check_sampling_tokenizer(cfg);
  print_inputs(cfg, tr);
  const GridLayout& l = tr.layout();
  std::printf("layout: tp %d x pp %d x dp %d = %s\n", l.tp, l.pp, l.dp,
              count_of(l.world_size(), "rank").c_str());
  print_tensor_parallel(cfg, l);
  print_pipeline(cfg, tr);
  std::printf("data parallel: %s%s\n", count_of(l.dp, "replica").c_str(),
              zero_text(cfg, l).c_str());
  print_precision_note(cfg);
  std::printf("train: %s; run dir %s\n", steps_text(cfg, tr.samples()).c_str(),
              cfg.run_dir.c_str());
  print_replica_check(cfg);
  print_schedule_notes(cfg);
  if (const std::string who = run_dir_holder(cfg.run_dir); !who.empty())
    std::printf(
        "run dir: note: in use by a tessera run now (%s): a run started before it ends is "
        "refused\n",
        who.c_str());
  check_checkpoint_choice(cfg, tr);
  // Beyond 2^63 bytes a run's allocations fail: refused as the run would refuse it.
  if (print_memory_estimate(cfg, l).beyond) {
    std::fflush(stdout);
    throw std::bad_alloc();
  }
  std::printf(
      "check: passed in %.1f s: a run of %s with these options and inputs starts (its machines "
      "are not checked: %s, the network)\n",
      std::chrono::duration<double>(Clock::now() - start).count(), count_of(ranks, "rank").c_str(),
      cfg.model.device == Device::CUDA ? "GPUs, NCCL" : "cores, memory");
  std::fflush(stdout);
}

// Runs `work` on rank `rank` of `world_size`; an allocation it cannot make goes on as an
// OutOfMemory that adds what this rank was estimated to need (rank_memory), so that the
// out-of-memory message sets the two side by side. For the run itself, whose model and
// activations are allocated at its start (Trainer::start); not for the Trainer's construction,
// which opens the corpora.
void with_estimate_on_oom(const TrainConfig& cfg, int rank, int world_size,
                          const std::function<void()>& work) {
  try {
    work();
  } catch (const std::bad_alloc& e) {
    const auto* known = dynamic_cast<const OutOfMemory*>(&e);
    const GridLayout l = cfg.layout_for(world_size);
    const RankMemory m = rank_memory(cfg, l, l.coord_of(rank));
    throw OutOfMemory((known ? std::string(known->what()) + "; " : std::string()) +
                      memory_estimate_text(cfg, l, m, false));
  }
}

}  // namespace

int train_command(int argc, char** argv) {
  install_stop_handlers();  // before MPI_Init: a signal during it is not lost
  MpiRuntime mpi(&argc, &argv);
  Communicator& world = mpi.world();
  const bool root = world.rank() == 0;
  if (const std::string replaced = restore_stop_handlers(); !replaced.empty() && root)
    std::fprintf(stderr, "note: MPI_Init replaced tessera's %s handler; put back\n",
                 replaced.c_str());
  if (!root) std::cout.setstate(std::ios::failbit);  // --help and logs come from rank 0 only

  // Phase 1 touches no other rank: options, layout and corpus, checked the same way on every
  // rank. Then one all-reduce agrees on the verdict, so a bad input stops every rank with the
  // same exit code, printed once, and cannot leave a rank waiting in a collective.
  TrainConfig cfg;
  std::unique_ptr<Trainer> trainer;
  ErrorReport failure;
  bool help = false;
  MadeDirs made_run_dir;
  std::string resume_dir, init_dir, resume_note;
  try {
    help = !parse_train_config(argc, argv, cfg);
    if (!help && cfg.check_ranks >= 0) {
      choose_kernels(cfg);  // for the memory estimate
      if (root) check_run(cfg, world.size());
    } else if (!help) {
      configure_process(cfg, mpi.ranks_on_this_node(), mpi.rank_on_this_node());
      // What rank 0 checks for all: a failure says nothing about its machine. The run directory
      // first, so that a second run in it stops before it opens and checks the corpora.
      const auto for_all = [](const std::function<void()>& check) {
        try {
          check();
        } catch (const InputError& e) {
          throw SharedInputError(e.what());
        }
      };
      cfg.layout_for(world.size());  // a layout error creates no run directory
      if (root) for_all([&] { made_run_dir = prepare_run_dir(cfg); });
      trainer = std::make_unique<Trainer>(cfg, world.rank(), world.size());
      // The tokenizer: on every rank when this run samples; on rank 0 alone when it does not,
      // since `tessera sample` reads it from config.ini.
      if (cfg.sample_tokens > 0) check_sampling_tokenizer(cfg);
      if (root && cfg.sample_tokens == 0) for_all([&] { check_sampling_tokenizer(cfg); });
    }
  } catch (...) {
    failure = report_error(std::current_exception(), "train");
  }
  // From here a rank that dies or hangs would leave the others waiting in a collective: the
  // watchdog gives each collective a deadline (looser until the first step is done), then
  // reports, aborts the MPI world and exits 5 (docs/CLUSTER.md). Armed for the agreement too,
  // which a rank stuck in phase 1 (a hung file system) would never reach: then the others
  // stop at --train.startup_timeout (the default's, when their options did not parse). Each
  // rank's report is also kept in RUN_DIR/watchdog/rank_R.txt, when its options name a run dir.
  // The default's when the options are bad; none for a check, whose one process may read for
  // long what a run's ranks share.
  const double deadline = cfg.check_ranks >= 0 ? 1e9 : cfg.startup_deadline();
  const WatchdogArmed watchdog(
      world, failure.code || !(deadline > 0) ? TrainConfig{}.startup_deadline() : deadline,
      failure.code || cfg.check_ranks >= 0 ? std::string{}
                                           : (std::filesystem::path(cfg.run_dir) / "watchdog" /
                                              ("rank_" + std::to_string(world.rank()) + ".txt"))
                                                 .string());
  // A start refused by the ranks together (below, and twice more before the first step).
  const auto refused = [&](int code) {
    if (code) remove_refused_run_dir(cfg, made_run_dir);
    return code;
  };
  if (const int code = refused(agree_on_inputs(world, failure, cfg.check_ranks < 0))) return code;
  if (help || cfg.check_ranks >= 0) return kExitOk;
  // Together from here: a stop signal no longer ends a rank at once (where each rank is in the
  // start-up's collectives differs), but stops them all after the first step, saved.
  ranks_agreed_to_start();

  // That every rank opened the same corpora; which checkpoint to resume: chosen by rank 0, whose
  // candidates' bytes every rank reads a part of, then checked against this run (rank 0). A
  // refusal is agreed like a bad input.
  try {
    trainer->check_same_corpora(world);
    resume_dir = choose_checkpoint_together(world, checkpoints_root(cfg), cfg.checkpoint_resume,
                                            resume_note);
    if (root && !resume_dir.empty())
      add_note(resume_note, check_checkpoint_fits(resume_dir, *trainer));
  } catch (...) {
    failure = report_error(std::current_exception(), "train");
  }
  if (const int code = refused(agree_on_inputs(world, failure, false))) return code;
  // --checkpoint.init, for a run without checkpoints of its own to resume: verified together, its
  // model's shape checked (rank 0), and agreed like the choice above.
  if (!cfg.checkpoint_init.empty() && !resume_dir.empty() && root)
    add_note(resume_note, init_not_read(cfg));
  if (!cfg.checkpoint_init.empty() && resume_dir.empty()) {
    try {
      init_dir = choose_initial_weights_together(world, checkpoints_root(cfg), cfg.checkpoint_init);
      if (root) add_note(resume_note, check_initial_weights_fit(init_dir, cfg.model));
    } catch (...) {
      failure = report_error(std::current_exception(), "train");
    }
    if (const int code = refused(agree_on_inputs(world, failure, false))) return code;
  }

  // Phase 2: a failure now may be one rank's alone; the others would wait for it forever.
  try {
    // resume_dir is the same on every rank (choose_checkpoint_together); resume_note is rank 0's.
    if (root && !resume_note.empty())
      std::printf("checkpoint: %s\n", printable(resume_note).c_str());
    print_topology(world, mpi.rank_on_this_node(),
                   cfg.model.device == Device::CUDA ? "cuda (one GPU per rank)" : "cpu");
    int code = kExitOk;
    with_estimate_on_oom(cfg, world.rank(), world.size(), [&] {
      code = run_training(cfg, *trainer, world, resume_dir, init_dir, mpi.rank_on_this_node())
                 .exit_code;
    });
    return code;
  } catch (...) {
    return fail_alone(world, "train");
  }
}

}  // namespace tessera
