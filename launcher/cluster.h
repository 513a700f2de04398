// What running on a cluster needs around the training loop (docs/CLUSTER.md): SIGUSR1/SIGTERM
// turned into a stop request that the loop reads at step boundaries, the wall clock of
// --train.time_limit, where every rank runs, and the per-rank report of a non-finite step.
#pragma once

#include <string>
#include <vector>

#include "core/communicator.h"
#include "launcher/config.h"

namespace tessera {

class Trainer;
struct StepStats;

// SIGUSR1 and SIGTERM set the stop request (and tell the watchdog); SA_RESTART, so system calls
// in progress resume. Call once, before MPI starts its threads.
void install_stop_handlers();
// The signal that asked this rank to stop (SIGUSR1, SIGTERM), or 0; signal_name() names it.
int stop_signal();
// Seconds since this process started: the clock of --train.time_limit.
double seconds_since_process_start();

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
// `checkpoint`: a rank that got a signal says so on stderr, rank 0 prints the `preempted:` line.
void report_preempted(const TrainConfig& cfg, Communicator& world, int64_t step, const StepStats& s,
                      const std::string& checkpoint);

}  // namespace tessera
