// What running on a cluster needs around the training loop: stop signals, where the ranks run,
// and the report of non-finite values (launcher/cluster.h, docs/CLUSTER.md).
#include "launcher/cluster.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <utility>

#include "core/device.h"
#include "core/error.h"
#include "core/ops/attention.h"
#include "core/ops/matmul.h"
#include "core/threads.h"
#include "core/write_fully.h"
#include "launcher/exit_codes.h"
#include "launcher/trainer.h"
#include "parallel/nccl_communicator.h"
#include "parallel/watchdog.h"

namespace tessera {

namespace {

const std::chrono::steady_clock::time_point g_process_start = std::chrono::steady_clock::now();

// The handler only stores, writes and exits: lock-free atomics, async-signal-safe calls.
std::atomic<int> g_stop_signal{0};
std::atomic<bool> g_agreed{false};             // the ranks agreed to start: a stop then saves
std::atomic<int64_t> g_first_interrupt_ns{0};  // CLOCK_MONOTONIC of the first SIGINT
static_assert(std::atomic<int>::is_always_lock_free && std::atomic<bool>::is_always_lock_free &&
              std::atomic<int64_t>::is_always_lock_free);

void write_note(const char* note, size_t length) {
  const int saved_errno = errno;  // the interrupted code may be about to read it
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, note, length);
  errno = saved_errno;
}

extern "C" void on_stop_signal(int signo) {
  if (!g_agreed.load()) {
    // Nothing to save yet, and each rank's own checks may wait on a file system: stop now, with
    // the code the stop would have had (a scheduler's signal is still requeued).
    static const char note[] =
        "tessera: stopped by a signal before the ranks agreed to start: nothing to save\n";
    write_note(note, sizeof note - 1);
    ::_exit(signo == SIGINT ? 130 : 3);
  }
  if (signo == SIGINT) {
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    const int64_t ns = int64_t{now.tv_sec} * 1000000000 + now.tv_nsec;
    int64_t first = 0;
    if (g_first_interrupt_ns.compare_exchange_strong(first, ns)) {
      static const char note[] =
          "tessera: SIGINT: saving a checkpoint after this step, then exit 130; SIGINT again "
          "stops at once, without saving\n";
      static const char after[] =
          "tessera: SIGINT: already stopping for SIGTERM or SIGUSR1 (exit 3); SIGINT again "
          "stops at once, without saving\n";
      if (g_stop_signal.load() == 0)
        write_note(note, sizeof note - 1);
      else
        write_note(after, sizeof after - 1);
    } else if (ns - first > 1000000000) {  // a second Ctrl-C: as by default
      struct sigaction by_default {};
      by_default.sa_handler = SIG_DFL;
      ::sigaction(SIGINT, &by_default, nullptr);
      ::raise(SIGINT);
      return;
    } else {
      return;  // the same Ctrl-C once more, within a second (sent to the process and its group)
    }
  }
  // A scheduler's signal is not replaced by a later SIGINT (which would turn its requeue into a
  // person's stop); it replaces an earlier one.
  int held = g_stop_signal.load();
  while ((held == 0 || held == SIGINT) && !g_stop_signal.compare_exchange_weak(held, signo)) {
  }
  Watchdog::signal_received(signo);  // an armed watchdog says what this rank waits in
}

}  // namespace

double seconds_since_process_start() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - g_process_start).count();
}

int stop_signal() {
  return g_stop_signal.load();
}

namespace {

std::atomic<bool> g_sigint_handled{false};  // install_stop_handlers took SIGINT

struct sigaction stop_action() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // system calls in progress resume; the loop looks at the flag
  return sa;
}

}  // namespace

void install_stop_handlers() {
  const struct sigaction sa = stop_action();
  sigaction(SIGUSR1, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  // Output piped to a program that a Ctrl-C ended (`tessera train ... | tee log`) must not kill
  // the run on its next line, before its checkpoint: a write to it fails instead.
  std::signal(SIGPIPE, SIG_IGN);
  // Ctrl-C: once like SIGTERM, then (a second later or more) as by default. Left alone when
  // ignored (a background job of a shell), so that a Ctrl-C meant for the shell's foreground
  // does not stop it.
  struct sigaction old {};
  const bool take = sigaction(SIGINT, nullptr, &old) == 0 && old.sa_handler != SIG_IGN;
  if (take) sigaction(SIGINT, &sa, nullptr);
  g_sigint_handled = take;
}

std::string restore_stop_handlers() {
  const struct sigaction sa = stop_action();
  std::string replaced;
  for (const int s : {SIGUSR1, SIGTERM, SIGINT}) {
    struct sigaction now {};
    if (s == SIGINT && !g_sigint_handled) continue;
    if (sigaction(s, nullptr, &now) != 0 || now.sa_handler == on_stop_signal) continue;
    sigaction(s, &sa, nullptr);
    replaced += std::string(replaced.empty() ? "" : ", ") + signal_name(s);
  }
  return replaced;
}

void ranks_agreed_to_start() {
  g_agreed.store(true);
}

std::string host_name() {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return host;
}

int gpu_index_for(int visible_gpus, int local_rank) {
  if (visible_gpus == 1) return 0;
  if (local_rank >= visible_gpus)
    throw InputError("--train.device cuda: this rank is number " + std::to_string(local_rank) +
                     " on its node, which shows it " + std::to_string(visible_gpus) +
                     " GPUs; start at most one rank per GPU on each node");
  return local_rank;
}

int gpu_for(int local_rank) {
  const int gpus = cuda_device_count();
  if (gpus == 0) throw InputError("--train.device cuda: " + cuda_summary());
  return gpu_index_for(gpus, local_rank);
}

void choose_kernels(const TrainConfig& cfg) {
  ops::set_bf16_attention_kernels(cfg.attention_kernels);
  ops::set_dgelu_epilogue(cfg.dgelu_epilogue);
}

void configure_process(const TrainConfig& cfg, int ranks_on_node, int local_rank) {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  set_cpu_threads(cfg.threads > 0 ? cfg.threads : std::max(1, cores / ranks_on_node));
  if (cfg.model.device == Device::CUDA) {
    // Chosen now, before any library (cuDNN, NCCL) opens a context on the default GPU 0.
    select_cuda_device(gpu_for(local_rank));
  }
  choose_kernels(cfg);
  // cuDNN is loaded now, so that a machine without it stops the run before it starts.
  if (cfg.model.device == Device::CUDA && cfg.model.dtype == DType::BF16 &&
      cfg.attention_kernels == ops::AttentionKernels::Cudnn)
    ops::cudnn_attention_version();
}

std::string shared_gpu_error(const std::vector<std::string>& placements) {
  std::unordered_map<std::string, size_t> first;  // placement -> the first rank there
  for (size_t b = 0; b < placements.size(); ++b) {
    const auto [seen, fresh] = first.try_emplace(placements[b], b);
    if (fresh) continue;
    std::istringstream where(placements[b]);
    std::string host, bus;
    where >> host >> bus;
    return "--train.device cuda: ranks " + std::to_string(seen->second) + " and " +
           std::to_string(b) + " both use the GPU at PCI " + bus + " on " + host +
           "; start at most one rank per GPU on each node, each seeing all of the node's "
           "GPUs or only its own";
  }
  return "";
}

std::unique_ptr<Communicator> open_device_world(const TrainConfig& cfg, Communicator& world,
                                                int local_rank) {
  if (cfg.model.device != Device::CUDA) return nullptr;
#ifdef TESSERA_WITH_CUDA
  // A rank that sees one GPU takes it (gpu_index_for): ranks that see the same one would get as
  // far as NCCL's start before it refused them. configure_process has selected the GPU.
  const std::string error =
      shared_gpu_error(all_gather_strings(world, host_name() + ' ' + cuda_device_bus_id()));
  if (!error.empty()) throw InputError(error);
  // NCCL's own deadline a minute past the watchdog's, so that the watchdog, which reports what
  // every rank waits in, speaks first; NCCL's is the backstop.
  return NcclCommunicator::create(world, gpu_for(local_rank), cfg.startup_deadline() + 60, "world");
#else
  (void)world;
  (void)local_rank;
  throw InputError("--train.device cuda: this tessera was built without CUDA");
#endif
}

namespace {

// One line on stderr in one write(2): ranks that share a log do not interleave their words.
void write_line(std::string line) {
  line += '\n';
  std::cerr.flush();
  write_fully(STDERR_FILENO, line.data(), line.size());
}

// "rank R: ", which begins each rank's own line.
std::string rank_prefix(const Communicator& world) {
  return std::string("rank ").append(std::to_string(world.rank())).append(": ");
}

}  // namespace

int agree_on_inputs(Communicator& world, const ErrorReport& failure, bool name_failing_rank) {
  // The lowest failing rank prints its message, a shared failure's first: one rank's part of a
  // check the ranks share found a fault of the input itself, which the others may have passed
  // by, to fail later on what they went on to read.
  // Each failing rank's priority is its own: shared failures above machine-specific ones, lower
  // ranks above higher. Its exit code rides below it, so that every rank exits with the code of
  // the message printed.
  const int32_t priority =
      failure.code ? (failure.machine_specific ? 1 : 2) * world.size() - world.rank() : 0;
  const int32_t mine = failure.code ? priority * 256 + (failure.code & 255) : 0;
  Tensor verdict({1}, DType::I32);
  verdict.data<int32_t>()[0] = mine;
  world.all_reduce(verdict, ReduceOp::Max);
  const int32_t agreed = verdict.data<int32_t>()[0];
  if (agreed == 0) return 0;
  // How many failed: where not all, the input differs between machines (a mount missing on one
  // node, a file not yet there), and the message says whose it is.
  Tensor failed({1}, DType::I32);  // the failures that may be a machine's own
  failed.data<int32_t>()[0] = failure.code && failure.machine_specific ? 1 : 0;
  world.all_reduce(failed, ReduceOp::Sum);
  const int count = failed.data<int32_t>()[0];
  if (agreed == mine) {
    std::string line = failure.message;
    if (name_failing_rank && count < world.size() &&
        failure.machine_specific) {  // after "tessera: error: ", if there
      const size_t at = line.rfind(": error: ", 40);
      line.insert(at == std::string::npos ? 0 : at + 9,
                  "rank " + std::to_string(world.rank()) + " (host " + host_name() + "; " +
                      std::to_string(count) + " of " + std::to_string(world.size()) +
                      " ranks failed): ");
    }
    write_line(line);
  }
  return agreed % 256;
}

int fail_alone(Communicator& world, const char* command) {
  const ErrorReport r = report_error(std::current_exception(), command);
  if (world.size() == 1) {
    write_line(r.message);
    return r.code;
  }
  write_line("rank " + std::to_string(world.rank()) + " (host " + host_name() + "): " + r.message);
  world.abort(r.code);
  return r.code;  // not reached: abort ends the process
}

WatchdogArmed::WatchdogArmed(Communicator& world, double deadline_s, std::string report_file) {
  WatchdogConfig wc;
  wc.rank = world.rank();
  wc.deadline_s = deadline_s;
  wc.exit_code = kExitHang;
  wc.abort_communicators = [&world] { world.abort(kExitHang); };
  wc.report_file = std::move(report_file);
  Watchdog::instance().arm(wc);
}

WatchdogArmed::~WatchdogArmed() {
  Watchdog::instance().disarm();
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string out;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    if (!out.empty()) out += ", ";
    out += std::to_string(ranks[i]);
    if (j > i) out += '-' + std::to_string(ranks[j]);
    i = j + 1;
  }
  return out;
}

void print_topology(Communicator& world, int local_rank, const std::string& device) {
  // Each rank's "host local_rank pid" (host names hold no spaces).
  const std::vector<std::string> rows = all_gather_strings(
      world, host_name() + ' ' + std::to_string(local_rank) + ' ' + std::to_string(getpid()));
  if (world.rank() != 0) return;
  std::vector<std::string> hosts, locals(rows.size()), pids(rows.size());
  std::vector<std::vector<int>> ranks;
  for (int r = 0; r < world.size(); ++r) {
    std::istringstream row(rows[static_cast<size_t>(r)]);
    std::string name;
    row >> name >> locals[static_cast<size_t>(r)] >> pids[static_cast<size_t>(r)];
    const size_t h =
        static_cast<size_t>(std::find(hosts.begin(), hosts.end(), name) - hosts.begin());
    if (h == hosts.size()) {
      hosts.push_back(name);
      ranks.emplace_back();
    }
    ranks[h].push_back(r);
  }
  std::printf("topology: %d rank%s on %zu host%s, device %s\n", world.size(),
              world.size() == 1 ? "" : "s", hosts.size(), hosts.size() == 1 ? "" : "s",
              device.c_str());
  for (size_t h = 0; h < hosts.size(); ++h) {
    std::string host_locals, host_pids;
    for (const int r : ranks[h]) {
      if (!host_locals.empty()) host_locals += ' ', host_pids += ' ';
      host_locals += locals[static_cast<size_t>(r)];
      host_pids += pids[static_cast<size_t>(r)];
    }
    std::printf("  %s: ranks %s (%zu), local ranks %s, pids %s\n", hosts[h].c_str(),
                rank_list(ranks[h]).c_str(), ranks[h].size(), host_locals.c_str(),
                host_pids.c_str());
  }
  std::fflush(stdout);
}

void report_nonfinite(const TrainConfig& cfg, Trainer& tr, Communicator& world, int64_t step,
                      const StepStats& s, const std::string& why) {
  const std::vector<std::string> found = tr.nonfinite_here();
  const std::filesystem::path dir =
      std::filesystem::path(cfg.run_dir) / ("nonfinite_step_" + std::to_string(step + 1));
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  std::string names;
  for (const std::string& n : found) {
    if (!names.empty()) names += ", ";
    names += n;
  }
  {
    const GridCoord c = tr.grid().coord();
    const std::filesystem::path file = dir / ("rank_" + std::to_string(world.rank()) + ".txt");
    std::ofstream out(file);
    out << "step " << step + 1 << "\nrank " << world.rank() << " (tp " << c.tp << ", pp " << c.pp
        << ", dp " << c.dp << ")\nglobal loss " << s.loss << "\nglobal grad norm " << s.grad_norm
        << "\nnon-finite here: " << (names.empty() ? "nothing" : names) << "\n";
    out.close();
    if (ec || !out)  // the run still halts; what the file would hold is on stderr below
      write_line(rank_prefix(world) + "cannot write " + file.string() +
                 (ec ? " (" + ec.message() + ")" : std::string()));
  }
  if (!found.empty())
    write_line(rank_prefix(world) + "step " + std::to_string(step + 1) + ": non-finite " + names);
  Tensor flags({world.size()}, DType::I32);
  flags.data<int32_t>()[world.rank()] = found.empty() ? 0 : 1;
  world.all_reduce(flags, ReduceOp::Max);
  if (world.rank() != 0) return;
  std::vector<int> ranks;
  for (int r = 0; r < world.size(); ++r)
    if (flags.data<int32_t>()[r]) ranks.push_back(r);
  std::printf(
      "halt: step %lld: loss %g, grad norm %g are not finite (%s), on rank%s %s; "
      "weights left as after step %lld; diagnostics in %s; exit code %d\n",
      static_cast<long long>(step + 1), s.loss, s.grad_norm, why.c_str(),
      ranks.size() == 1 ? "" : "s", ranks.empty() ? "?" : rank_list(ranks).c_str(),
      static_cast<long long>(step), dir.string().c_str(), kExitNonFinite);
  std::fflush(stdout);
}

int report_preempted(const TrainConfig& cfg, Communicator& world, int64_t step, const StepStats& s,
                     const std::string& checkpoint, bool signal_counted) {
  // Ctrl-C alone is a person stopping the run, not a scheduler: its own code, which the batch
  // templates do not requeue. Decided from the agreed counts, so every rank exits alike.
  const int terminated = s.stop_on_signal - s.stop_on_interrupt;
  const bool interrupted = s.stop_on_interrupt > 0 && terminated == 0 && s.stop_on_time == 0;
  const int code = interrupted ? kExitInterrupted : kExitPreempted;
  if (const int signo = stop_signal(); signo && !signal_counted)
    write_line(rank_prefix(world) + signal_name(signo) + " received: stopped after step " +
               std::to_string(step + 1));
  if (world.rank() != 0) return code;
  std::string why;
  const auto add = [&](const std::string& what, int ranks) {
    if (ranks == 0) return;
    if (!why.empty()) why += " and ";
    why += what;
    why += " on ";
    why += std::to_string(ranks);  // those that had it when the step's all-reduce counted
    why += ranks == 1 ? " rank" : " ranks";
  };
  add("SIGUSR1/SIGTERM", terminated);
  add("SIGINT", s.stop_on_interrupt);
  char limit[64];
  std::snprintf(limit, sizeof limit, "--train.time_limit %g s", cfg.time_limit);
  add(limit, s.stop_on_time);
  std::printf("%s: %s; stopped after step %lld of %lld with checkpoint %s; exit code %d (%s)\n",
              interrupted ? "interrupted" : "preempted", why.c_str(),
              static_cast<long long>(step + 1), static_cast<long long>(cfg.steps),
              checkpoint.c_str(), code,
              interrupted ? "rerun to resume from it" : "rerun, or requeue, to resume from it");
  std::fflush(stdout);
  return code;
}

}  // namespace tessera
