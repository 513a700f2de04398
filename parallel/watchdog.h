// Watchdog: one per process, it turns a hang in communication into a report and an exit. The
// communicators record every operation they issue (begin) and its completion (end); once armed, a
// thread checks every 50 ms whether the oldest operation still in flight has waited longer than
// the deadline, and if so prints the last operations of this rank, aborts the communicators and
// ends the process. A rank that dies thus makes the others exit within the deadline instead of
// hanging. Recording is cheap and thread-safe, and happens whether or not the thread is armed.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace tessera {

// "SIGTERM", "SIGUSR1", ... or "signal N": for messages about signals.
std::string signal_name(int signo);

struct WatchdogConfig {
  int rank = 0;           // named in every line the watchdog prints
  double deadline_s = 0;  // how long one operation may wait; more than 0
  // Called on expiry, before exit_fn, so that peers blocked in a collective with this rank learn
  // of it (MPI_Abort, ncclCommAbort). May be empty. It runs on a thread of its own: one that
  // neither returns nor ends the process within abort_grace_s is abandoned and exit_fn called.
  std::function<void()> abort_communicators;
  double abort_grace_s = 10;
  int exit_code = 1;
  std::function<void(int)> exit_fn = [](int code) { std::_Exit(code); };
  // Where reports go; the default writes each to stderr in one write(2), so that the lines of
  // several ranks sharing a terminal or log file do not interleave.
  std::function<void(const std::string&)> write_fn;
  // A file each report and signal line is also appended to (its folder created), under a line
  // with the time and process id: a copy that survives a launcher which drops the output of the
  // ranks it tears down. Empty: none. An append that does not finish within report_file_grace_s
  // (a hung file system) is abandoned, so that it cannot keep the rank alive.
  std::string report_file;
  double report_file_grace_s = 2;
  // A signal (the launcher's or the scheduler's) prints what the rank waits for once the
  // operation in flight when it came has waited this long (at once if it has already): what a
  // stuck rank shows, and not the moment's barrier of a run that a stop signal ends as it
  // should, which ends before.
  double signal_line_after_s = 1;
};

class Watchdog {
 public:
  // The process's watchdog, which the communicators record into. Never destroyed, so that
  // communicators may record from destructors of static objects; disarm() it before leaving main,
  // since its thread must not outlive what abort_communicators refers to.
  static Watchdog& instance();

  Watchdog();
  ~Watchdog();  // disarms
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Records an operation as issued and returns its sequence number (1, 2, ... per watchdog).
  // kind ("all_reduce", "isend", ...) must be a string literal: it is kept by pointer. group is the
  // communicator's name(); bytes the size of the larger buffer of the operation.
  uint64_t begin(const char* kind, const std::string& group, size_t bytes);
  // Marks operation seq as complete (or failed: it waits no longer). Unknown or ended seq: no-op.
  void end(uint64_t seq);
  // Operation seq stays in flight until `completed`, polled from the watchdog thread, says it is
  // done: for work that completes on a device stream after the host has moved on (a stream-ordered
  // wait). A `completed` that throws a std::exception says the operation failed (an error its
  // library reported while it waited): the watchdog then acts at once as on expiry, naming the
  // operation and the exception's text. Unarmed, nobody polls, so this ends seq at once.
  void end_when(uint64_t seq, std::function<bool()> completed);

  // Starts the thread; a second arm replaces the configuration. On expiry the thread writes
  //   rank R: collective deadline of D s passed: #SEQ KIND in group G (BYTES bytes) waiting for W s
  // followed by report(), then aborts the communicators and calls exit_fn(exit_code), once; an
  // operation that failed in flight (end_when) the same way, its line
  //   rank R: #SEQ KIND in group G (BYTES bytes) failed after W s: WHY
  void arm(WatchdogConfig config);
  void set_deadline(double deadline_s);
  double deadline() const;
  // Stops and joins the thread. Operations waiting for `completed` are ended: nobody watches them.
  void disarm();
  // Whether the deadline passed and the watchdog acted on it (once per arm).
  bool fired() const;

  // For a signal handler: only records the signal (async-signal-safe). The armed watchdog then
  // prints one line naming the operation this rank waits in, if any, so that each surviving rank
  // says what it waited for when a launcher kills the job after one rank died. It does not exit.
  static void signal_received(int signo);

  // The last operations (up to 16), oldest first, one line each: sequence number, kind, group,
  // bytes, and whether in flight (with how long ago it started) or done (and how long it took).
  std::string report() const;

 private:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kRing = 64;         // operations remembered
  static constexpr size_t kReportLines = 16;  // of which a report lists the last

  struct Record {
    uint64_t seq = 0;
    const char* kind = "";
    std::string group;
    size_t bytes = 0;
    Clock::time_point started;
    Clock::time_point ended;
    bool done = false;
    std::string text() const;  // "#SEQ KIND in group G (BYTES bytes)"
  };
  struct InFlight {
    Record record;
    std::function<bool()> completed;  // empty: ended by end()
  };

  void run(unsigned signals_seen);
  bool poll_completions();  // true once fired (an operation failed)
  bool check_deadline();    // true once fired
  // A signal's line, for the operation in flight when it came: printed once that operation has
  // waited signal_line_after_s, or never if it ends before (the signal_pending_ it leaves).
  void note_signal(int signo);
  void print_pending_signal_line();
  void act_on_expiry(const std::string& text);
  // An operation's completion query threw: reports it with `why`, then acts as on expiry.
  void act_on_failure(const Record& failed, const std::string& why);
  void write(const std::string& text) const;  // through write_with, with this configuration
  // To c.write_fn (or stderr), and appended to c.report_file.
  static void write_with(const WatchdogConfig& c, const std::string& text);
  void end_locked(uint64_t seq, Clock::time_point now);
  std::string report_locked(Clock::time_point now) const;

  mutable std::mutex mutex_;
  uint64_t next_seq_ = 1;
  std::vector<Record> ring_;         // the last kRing operations, slot seq % kRing
  std::vector<InFlight> in_flight_;  // ordered by seq: front is the oldest
  struct PendingSignal {
    uint64_t seq = 0;  // the operation in flight when it came; 0: none pending
    int signo = 0;
  } signal_pending_;
  WatchdogConfig config_;
  bool armed_ = false;
  bool stop_ = false;
  bool fired_ = false;
  std::condition_variable wake_;
  std::thread thread_;
};

// The record of one operation: begun at construction, ended by end() or end_when(), else at
// destruction (also when the operation throws: it then waits no longer). An asynchronous
// operation's request handle holds one and ends it once it sees the operation complete; a
// blocking operation holds a const one for its scope.
class WatchedRequest {
 public:
  WatchedRequest(const char* kind, const std::string& group, size_t bytes)
      : seq_(Watchdog::instance().begin(kind, group, bytes)) {}
  ~WatchedRequest() { end(); }
  WatchedRequest(WatchedRequest&& other) noexcept : seq_(other.seq_) { other.seq_ = 0; }
  WatchedRequest& operator=(WatchedRequest&&) = delete;
  WatchedRequest(const WatchedRequest&) = delete;
  WatchedRequest& operator=(const WatchedRequest&) = delete;

  // Either hands the operation over for good: a later end(), or the destructor, does nothing.
  void end() {
    if (seq_ != 0) Watchdog::instance().end(seq_);
    seq_ = 0;
  }
  void end_when(std::function<bool()> completed) {
    if (seq_ != 0) Watchdog::instance().end_when(seq_, std::move(completed));
    seq_ = 0;
  }

 private:
  uint64_t seq_;  // 0 once ended, handed over or moved from (begin never returns 0)
};

}  // namespace tessera
