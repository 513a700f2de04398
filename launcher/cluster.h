// What running on a cluster needs around the training loop (docs/CLUSTER.md): SIGUSR1/SIGTERM
// turned into a stop request that the loop reads at step boundaries, the wall clock of
// --train.time_limit, where every rank runs, and the per-rank report of a non-finite step.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/communicator.h"
#include "launcher/config.h"
#include "launcher/exit_codes.h"

namespace tessera {

class Trainer;
struct StepStats;

// SIGUSR1 and SIGTERM set the stop request (and tell the watchdog); SA_RESTART, so system calls
// in progress resume. SIGINT too, once; again after a second or more, it stops the process at
// once (twice within a second is one Ctrl-C sent to the process and to its group). Before
// ranks_agreed_to_start(), any of them ends the process at once (exit 3, or 130 for SIGINT):
// nothing is saved yet, and a rank's own checks may be waiting on a file system. Call once,
// before MPI starts its threads.
void install_stop_handlers();
// Puts back those of the handlers that something replaced since (MPI_Init may install its own,
// which would turn a scheduler's warning into an abort without a checkpoint); the names of the
// signals put back, "" when none.
std::string restore_stop_handlers();
// Every rank passed the first agreement on the inputs: from here a stop signal asks, on every
// rank alike, for a checkpoint after the next step (the step's all-reduce carries the vote).
void ranks_agreed_to_start();
// The signal that asked this rank to stop (SIGUSR1, SIGTERM), or 0; signal_name() names it.
int stop_signal();
// Seconds since this process started: the clock of --train.time_limit.
double seconds_since_process_start();

// This machine's name, as the topology, the shared-GPU check and the replica check print it.
std::string host_name();

// --train.device cuda: the index of this rank's GPU among the `visible_gpus` it sees. With one
// GPU visible, that one: Slurm's per-task binding (--gpus-per-task=1) shows each rank its own
// (ranks that in fact share one are refused by open_device_world, shared_gpu_error). With
// several, the one its index among its node's ranks names. InputError saying why there is none.
int gpu_index_for(int visible_gpus, int local_rank);
// gpu_index_for this process's visible GPUs.
int gpu_for(int local_rank);
// Of every rank's "HOST BUS_ID" (its GPU's PCI bus id), by rank: the InputError message naming
// the first two ranks that share a GPU, or "" when each has its own.
std::string shared_gpu_error(const std::vector<std::string>& placements);

// This process's settings from cfg, before any op runs: its OpenMP threads (--train.threads, else
// the node's cores over its `ranks_on_node`), on cuda the GPU of `local_rank` (gpu_for,
// selected now), and the [gpu] kernels (choose_kernels).
void configure_process(const TrainConfig& cfg, int ranks_on_node, int local_rank);
// The [gpu] kernels, process-wide: bf16 attention's (whose workspace the memory estimate counts)
// and the DGELU epilogue. Touches no GPU.
void choose_kernels(const TrainConfig& cfg);

// What the grid's groups are split from: on cuda an NCCL communicator over `world` (collective),
// on the GPU of `local_rank`; on the CPU null, and `world` serves. NCCL's own bound on a silent
// peer is the loosest of the watchdog's deadlines (cfg.startup_deadline()): the watchdog, which
// reports every rank's last operations and exits 5, speaks first, and NCCL's InternalError is
// the backstop.
std::unique_ptr<Communicator> open_device_world(const TrainConfig& cfg, Communicator& world,
                                                int local_rank);

// The ranks' verdict on their inputs, each rank's `failure` (code 0: none), agreed by one
// all-reduce over world (collective): 0 when every rank succeeded, else one exit code for all,
// that of the message printed once, by the lowest failing rank (naming itself, its host and how
// many failed when not all did), or the lowest whose failure is a SharedInputError when there is
// one (a fault of the input, found in this rank's part of a shared check). So a bad input stops
// every rank alike and cannot leave one waiting in a collective.
// `name_failing_rank` false: for checks one rank makes for all (rank 0's choice of checkpoint),
// where a failure of that rank alone says nothing about its machine.
int agree_on_inputs(Communicator& world, const ErrorReport& failure, bool name_failing_rank = true);

// In a catch block after the ranks agreed on their inputs, where a failure may be this rank's
// alone: the message on stderr, one line in one write (with "rank N (host H): " when there are
// several) and the exit code with
// one rank, else an abort of the MPI world with that code, so that no rank waits forever.
int fail_alone(Communicator& world, const char* command);

// Arms the watchdog for the collectives that follow: each may wait `deadline_s`, then every rank
// reports what it waits for, the MPI world is aborted and the process exits 5 (docs/CLUSTER.md).
// A `report_file` gets a copy of what the watchdog prints (WatchdogConfig::report_file).
// Disarms it when it goes out of scope.
class WatchdogArmed {
 public:
  WatchdogArmed(Communicator& world, double deadline_s, std::string report_file = {});
  ~WatchdogArmed();
  WatchdogArmed(const WatchdogArmed&) = delete;
  WatchdogArmed& operator=(const WatchdogArmed&) = delete;
};

// "0-3" or "0, 2, 5": a sorted list of ranks, runs of consecutive ones shortened.
std::string rank_list(const std::vector<int>& ranks);

// Where every rank runs, printed by rank 0: one line per host with its ranks, their local ranks
// (the GPU each uses on cuda) and process ids. Collective over world.
void print_topology(Communicator& world, int local_rank, const std::string& device);

// After step `step` (0-based) had a non-finite loss or gradient norm and the run stops: every
// rank writes what it found to RUN_DIR/nonfinite_step_N/rank_R.txt and says it on stderr; rank 0
// names the ranks and `why` the run stops. Collective over world.
void report_nonfinite(const TrainConfig& cfg, Trainer& tr, Communicator& world, int64_t step,
                      const StepStats& s, const std::string& why);

// After step `step` (0-based) every rank agreed to stop (StepStats::stop_on_*) and saved
// `checkpoint`: rank 0 prints the `preempted:` line, which counts the ranks that had a signal
// when the ranks agreed; a rank whose signal came later (`signal_counted` false) says so on
// stderr.
int report_preempted(const TrainConfig& cfg, Communicator& world, int64_t step, const StepStats& s,
                     const std::string& checkpoint, bool signal_counted);

}  // namespace tessera
