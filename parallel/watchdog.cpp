// The watchdog's records and its thread. Records sit in a fixed ring (the last kRing operations)
// plus a short vector of those in flight, both under one mutex; the thread takes the same mutex
// for a moment every 50 ms, so recording stays at a few hundred nanoseconds.
#include "parallel/watchdog.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <system_error>

#include "core/error.h"
#include "core/write_fully.h"

namespace tessera {

namespace {

constexpr std::chrono::milliseconds kPoll{50};

// Written by signal_received, which may run in a signal handler: lock-free atomics only.
std::atomic<int> g_last_signal{0};
std::atomic<unsigned> g_signal_count{0};
static_assert(std::atomic<int>::is_always_lock_free && std::atomic<unsigned>::is_always_lock_free,
              "signal_received must be async-signal-safe");

double seconds_between(std::chrono::steady_clock::time_point from,
                       std::chrono::steady_clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

std::string format(const char* fmt, double value) {
  char text[64];
  std::snprintf(text, sizeof text, fmt, value);
  return text;
}

// Inside a catch block: what the exception being handled says.
std::string current_exception_text() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

void write_to_stderr(const std::string& text) {
  write_fully(STDERR_FILENO, text.data(), text.size());  // on failure: nowhere left to report to
}

// Appends "== TIME UTC, pid P ==" and `text` to `path` in one write, creating its folder. A
// failure is ignored: the report went to stderr first.
void append_to_file(const std::string& path, const std::string& text) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  char when[32] = "?";
  if (gmtime_r(&now, &utc)) std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &utc);
  std::string entry = "== ";
  entry.append(when).append(" UTC, pid ").append(std::to_string(getpid())).append(" ==\n");
  entry += text;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  write_fully(fd, entry.data(), entry.size());
  ::close(fd);
}

// The state shared with a thread run_for_at_most started, which may outlive the wait.
struct Progress {
  std::mutex mutex;
  std::condition_variable finished_cv;
  bool finished = false;
};

// Runs `work` on a thread of its own and waits up to `seconds` for it: true when it finished
// (returning or throwing). One that did not is abandoned, still running: for work that may block
// for good (an abort whose peer is gone, a write to a hung file system) on a path that must go on.
bool run_for_at_most(const std::function<void()>& work, double seconds) {
  auto progress = std::make_shared<Progress>();
  std::thread worker([work, progress] {
    try {
      work();
    } catch (...) {
      // Going on regardless: the caller reported what it was doing.
    }
    std::lock_guard<std::mutex> lock(progress->mutex);
    progress->finished = true;
    progress->finished_cv.notify_all();
  });
  bool finished = false;
  {
    std::unique_lock<std::mutex> lock(progress->mutex);
    finished = progress->finished_cv.wait_for(lock, std::chrono::duration<double>(seconds),
                                              [&] { return progress->finished; });
  }
  if (finished)
    worker.join();
  else
    worker.detach();
  return finished;
}

}  // namespace

std::string signal_name(int signo) {
  switch (signo) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGHUP:
      return "SIGHUP";
    case SIGQUIT:
      return "SIGQUIT";
    case SIGUSR1:
      return "SIGUSR1";
    case SIGUSR2:
      return "SIGUSR2";
    case SIGCONT:
      return "SIGCONT";
  }
  return "signal " + std::to_string(signo);
}

Watchdog& Watchdog::instance() {
  static Watchdog* const watchdog = new Watchdog;
  return *watchdog;
}

Watchdog::Watchdog() : ring_(kRing) {}

Watchdog::~Watchdog() {
  disarm();
}

uint64_t Watchdog::begin(const char* kind, const std::string& group, size_t bytes) {
  const Clock::time_point now = Clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  const uint64_t seq = next_seq_++;
  Record& r = ring_[seq % kRing];
  r.seq = seq;
  r.kind = kind;
  r.group = group;
  r.bytes = bytes;
  r.started = now;
  r.done = false;
  in_flight_.push_back({r, {}});
  return seq;
}

void Watchdog::end(uint64_t seq) {
  const Clock::time_point now = Clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  end_locked(seq, now);
}

void Watchdog::end_locked(uint64_t seq, Clock::time_point now) {
  const auto it = std::find_if(in_flight_.begin(), in_flight_.end(),
                               [seq](const InFlight& f) { return f.record.seq == seq; });
  if (it == in_flight_.end()) return;
  in_flight_.erase(it);
  Record& r = ring_[seq % kRing];
  if (r.seq != seq) return;  // fell out of the ring while in flight
  r.done = true;
  r.ended = now;
}

void Watchdog::end_when(uint64_t seq, std::function<bool()> completed) {
  const Clock::time_point now = Clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_) {
    end_locked(seq, now);
    return;
  }
  for (InFlight& f : in_flight_) {
    if (f.record.seq == seq) f.completed = std::move(completed);
  }
}

void Watchdog::arm(WatchdogConfig config) {
  TESSERA_CHECK(config.deadline_s > 0, "watchdog of rank " + std::to_string(config.rank) +
                                           ": deadline of " + format("%g", config.deadline_s) +
                                           " s, expected more than 0");
  disarm();
  std::lock_guard<std::mutex> lock(mutex_);
  config_ = std::move(config);
  armed_ = true;
  stop_ = false;
  fired_ = false;
  // Counted here, not in the thread: a signal right after arm() must not go unseen.
  const unsigned signals_seen = g_signal_count.load(std::memory_order_acquire);
  thread_ = std::thread(&Watchdog::run, this, signals_seen);
}

void Watchdog::set_deadline(double deadline_s) {
  std::lock_guard<std::mutex> lock(mutex_);
  TESSERA_CHECK(deadline_s > 0, "watchdog of rank " + std::to_string(config_.rank) +
                                    ": deadline of " + format("%g", deadline_s) +
                                    " s, expected more than 0");
  config_.deadline_s = deadline_s;
}

double Watchdog::deadline() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return config_.deadline_s;
}

bool Watchdog::fired() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return fired_;
}

void Watchdog::disarm() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) {
    if (thread_.get_id() == std::this_thread::get_id())
      thread_.detach();  // exit_fn or abort_communicators disarming: the thread ends on its own
    else
      thread_.join();
  }
  const Clock::time_point now = Clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  armed_ = false;
  std::vector<uint64_t> watched;
  for (const InFlight& f : in_flight_) {
    if (f.completed) watched.push_back(f.record.seq);
  }
  for (uint64_t seq : watched) end_locked(seq, now);
}

void Watchdog::signal_received(int signo) {
  g_last_signal.store(signo, std::memory_order_relaxed);
  g_signal_count.fetch_add(1, std::memory_order_release);
}

void Watchdog::run(unsigned signals_seen) {
  try {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        if (wake_.wait_for(lock, kPoll, [this] { return stop_; })) return;
      }
      if (poll_completions()) return;
      const unsigned signals = g_signal_count.load(std::memory_order_acquire);
      if (signals != signals_seen) {
        signals_seen = signals;
        note_signal(g_last_signal.load(std::memory_order_relaxed));
      }
      print_pending_signal_line();
      if (check_deadline()) return;
    }
  } catch (...) {
    // A watchdog that cannot watch (a completion query that threw, no memory for a line, no
    // thread for the abort) must not leave the rank unguarded, nor end it by std::terminate: it
    // acts as on expiry (report, abort the communicators, exit), and should that fail too, says
    // so in a fixed line and exits.
    try {
      int rank = 0;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        rank = config_.rank;
      }
      act_on_expiry("rank " + std::to_string(rank) + ": the collective watchdog failed (" +
                    current_exception_text() + "); exiting\n" + report());
    } catch (...) {
      static const char note[] = "tessera: the collective watchdog failed; exiting\n";
      write_fully(STDERR_FILENO, note, sizeof note - 1);
      std::lock_guard<std::mutex> lock(mutex_);
      config_.exit_fn(config_.exit_code);  // a call, not a copy: nothing to allocate
    }
  }
}

// Asks the operations that complete on their own (end_when) whether they have, outside the lock:
// a device query takes microseconds, and the caller's begin/end must not wait for it. One whose
// query throws has failed: the watchdog acts on it at once, as on expiry.
bool Watchdog::poll_completions() {
  std::vector<InFlight> watched;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const InFlight& f : in_flight_) {
      if (f.completed) watched.push_back(f);
    }
  }
  if (watched.empty()) return false;
  std::vector<uint64_t> finished;
  for (const InFlight& f : watched) {
    try {
      if (f.completed()) finished.push_back(f.record.seq);
    } catch (const std::exception& e) {
      act_on_failure(f.record, e.what());
      return true;
    }
  }
  const Clock::time_point now = Clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  for (uint64_t seq : finished) end_locked(seq, now);
  return false;
}

std::string Watchdog::Record::text() const {
  std::string s = "#";
  s += std::to_string(seq);
  s.append(" ").append(kind).append(" in group ").append(group).append(" (");
  s.append(std::to_string(bytes)).append(" bytes)");
  return s;
}

void Watchdog::act_on_failure(const Record& failed, const std::string& why) {
  std::string text;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    fired_ = true;
    const Clock::time_point now = Clock::now();
    text = "rank " + std::to_string(config_.rank) + ": " + failed.text() + " failed after " +
           format("%.3f", seconds_between(failed.started, now)) + " s: " + why + "\n" +
           report_locked(now);
  }
  act_on_expiry(text);
}

void Watchdog::note_signal(int signo) {
  std::lock_guard<std::mutex> lock(mutex_);
  signal_pending_ = {};
  if (!in_flight_.empty()) signal_pending_ = {in_flight_.front().record.seq, signo};
}

void Watchdog::print_pending_signal_line() {
  std::string line;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (signal_pending_.seq == 0) return;
    const auto it = std::find_if(in_flight_.begin(), in_flight_.end(), [&](const InFlight& f) {
      return f.record.seq == signal_pending_.seq;
    });
    if (it == in_flight_.end()) {  // it ended: the rank was not stuck there
      signal_pending_ = {};
      return;
    }
    const double waited = seconds_between(it->record.started, Clock::now());
    if (waited < config_.signal_line_after_s) return;
    line = "rank " + std::to_string(config_.rank) + ": " + signal_name(signal_pending_.signo) +
           " received while waiting " + format("%.3f", waited) + " s in " + it->record.text() +
           "\n";
    signal_pending_ = {};
  }
  write(line);
}

bool Watchdog::check_deadline() {
  std::string text;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (in_flight_.empty()) return false;
    const Clock::time_point now = Clock::now();
    const Record& r = in_flight_.front().record;
    const double waited = seconds_between(r.started, now);
    if (waited <= config_.deadline_s) return false;
    fired_ = true;
    text = "rank " + std::to_string(config_.rank) + ": collective deadline of " +
           format("%g", config_.deadline_s) + " s passed: " + r.text() + " waiting for " +
           format("%.3f", waited) + " s\n" + report_locked(now);
  }
  act_on_expiry(text);
  return true;
}

// Report, abort (bounded by abort_grace_s: an abort that hangs must not keep the rank alive),
// exit.
void Watchdog::act_on_expiry(const std::string& text) {
  WatchdogConfig c;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    c = config_;
  }
  write_with(c, text);
  if (c.abort_communicators && !run_for_at_most(c.abort_communicators, c.abort_grace_s))
    write_with(c, "rank " + std::to_string(c.rank) +
                      ": aborting the communicators did not finish in " +
                      format("%g", c.abort_grace_s) + " s; exiting without\n");
  c.exit_fn(c.exit_code);
}

void Watchdog::write(const std::string& text) const {
  WatchdogConfig c;  // what write_with reads of it
  {
    std::lock_guard<std::mutex> lock(mutex_);
    c.write_fn = config_.write_fn;
    c.report_file = config_.report_file;
    c.report_file_grace_s = config_.report_file_grace_s;
  }
  write_with(c, text);
}

void Watchdog::write_with(const WatchdogConfig& c, const std::string& text) {
  if (c.write_fn)
    c.write_fn(text);
  else
    write_to_stderr(text);
  if (!c.report_file.empty())
    run_for_at_most([path = c.report_file, text] { append_to_file(path, text); },
                    c.report_file_grace_s);
}

std::string Watchdog::report() const {
  const Clock::time_point now = Clock::now();
  std::lock_guard<std::mutex> lock(mutex_);
  return report_locked(now);
}

std::string Watchdog::report_locked(Clock::time_point now) const {
  const std::string prefix = "rank " + std::to_string(config_.rank) + ": ";
  const uint64_t last = next_seq_ - 1;
  if (last == 0) return prefix + "no operations recorded\n";
  const uint64_t first = last >= kReportLines ? last - kReportLines + 1 : 1;
  std::string text =
      prefix + "last " + std::to_string(last - first + 1) + " operations, oldest first:\n";
  for (uint64_t seq = first; seq <= last; ++seq) {
    const Record& r = ring_[seq % kRing];
    text += prefix + "  " + r.text() + ": ";
    if (r.done)
      text += "done in " + format("%.3f", seconds_between(r.started, r.ended)) + " s, started ";
    else
      text += "in flight, started ";
    text += format("%.3f", seconds_between(r.started, now)) + " s ago\n";
  }
  return text;
}

}  // namespace tessera
