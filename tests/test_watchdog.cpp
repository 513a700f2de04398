// The watchdog: an operation past its deadline ends the process with the configured code and a
// report naming it; ended operations never do; the report and the signal line say what a rank
// waits in. Exit and output are injected, so these run in one process with deadlines of 0.2 to
// 2 s.
// Ranks that really hang or die under mpirun: tests/test_cluster.cpp.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "parallel/watchdog.h"
#include "tests/temp_dir.h"

namespace tessera {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr int kRank = 3;
constexpr int kExitCode = 5;

// What a watchdog did, through its injected exit_fn and write_fn. Shared by pointer: a thread
// that a test abandons (a hanging abort) may still hold it.
struct Observed {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<int> exit_codes;
  std::vector<std::string> writes;

  // Waits up to `limit` for `done` (evaluated under the lock).
  template <typename Pred>
  bool wait_until(Pred done, std::chrono::duration<double> limit) {
    std::unique_lock<std::mutex> lock(mutex);
    return changed.wait_for(lock, limit, done);
  }
  bool wait_for_exit(std::chrono::duration<double> limit) {
    return wait_until([this] { return !exit_codes.empty(); }, limit);
  }
  std::vector<int> codes() {
    std::lock_guard<std::mutex> lock(mutex);
    return exit_codes;
  }
  std::string all_writes() {
    std::lock_guard<std::mutex> lock(mutex);
    std::string text;
    for (const std::string& w : writes) text += w;
    return text;
  }
  size_t write_count() {
    std::lock_guard<std::mutex> lock(mutex);
    return writes.size();
  }
};

WatchdogConfig config_for(const std::shared_ptr<Observed>& seen, double deadline_s) {
  WatchdogConfig c;
  c.rank = kRank;
  c.deadline_s = deadline_s;
  c.exit_code = kExitCode;
  c.signal_line_after_s = 0;  // the signal tests wait no time before their signal
  c.exit_fn = [seen](int code) {
    std::lock_guard<std::mutex> lock(seen->mutex);
    seen->exit_codes.push_back(code);
    seen->changed.notify_all();
  };
  c.write_fn = [seen](const std::string& text) {
    std::lock_guard<std::mutex> lock(seen->mutex);
    seen->writes.push_back(text);
    seen->changed.notify_all();
  };
  return c;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

TEST(Watchdog, OperationPastItsDeadlineExitsWithTheCodeAndAReportNamingIt) {
  auto seen = std::make_shared<Observed>();
  Watchdog w;
  w.begin("broadcast", "world", 64);
  w.end(1);
  const Clock::time_point start = Clock::now();
  const uint64_t seq = w.begin("all_reduce", "dp", 4096);
  w.arm(config_for(seen, 0.2));

  ASSERT_TRUE(seen->wait_for_exit(5s)) << "no exit within 5 s of a 0.2 s deadline";
  EXPECT_GE(seconds_since(start), 0.2);
  EXPECT_EQ(seen->codes(), std::vector<int>{kExitCode});
  EXPECT_TRUE(w.fired());
  ASSERT_EQ(seen->write_count(), 1u) << "the report is one write, so that ranks do not interleave";
  const std::string text = seen->all_writes();
  EXPECT_EQ(text.rfind("rank 3: collective deadline of 0.2 s passed: #" + std::to_string(seq) +
                           " all_reduce in group dp (4096 bytes) waiting for ",
                       0),
            0u)
      << text;
  EXPECT_TRUE(contains(text, "rank 3:   #1 broadcast in group world (64 bytes): done in ")) << text;
  EXPECT_TRUE(
      contains(text, "rank 3:   #2 all_reduce in group dp (4096 bytes): in flight, started "))
      << text;
}

// Operations of 10 ms against a deadline of 1 s (a loaded machine may stretch each many times
// over), for two deadlines in all, then more than a deadline with nothing in flight.
TEST(Watchdog, EndedOperationsNeverFire) {
  auto seen = std::make_shared<Observed>();
  Watchdog w;
  w.arm(config_for(seen, 1.0));
  const Clock::time_point start = Clock::now();
  while (seconds_since(start) < 2.0) {
    const uint64_t seq = w.begin("all_reduce", "dp", 8);
    std::this_thread::sleep_for(10ms);
    w.end(seq);
  }
  std::this_thread::sleep_for(1200ms);
  EXPECT_TRUE(seen->codes().empty());
  EXPECT_EQ(seen->write_count(), 0u) << seen->all_writes();
  EXPECT_FALSE(w.fired());
}

TEST(Watchdog, SetDeadlineTightensAndLoosensTheArmedDeadline) {
  auto seen = std::make_shared<Observed>();
  Watchdog w;
  w.arm(config_for(seen, 60));  // start-up: loose
  w.begin("recv", "pp", 128);
  std::this_thread::sleep_for(400ms);
  EXPECT_TRUE(seen->codes().empty()) << "fired before a 60 s deadline";

  w.set_deadline(0.2);
  EXPECT_EQ(w.deadline(), 0.2);
  ASSERT_TRUE(seen->wait_for_exit(5s)) << "a tightened deadline did not apply";
  EXPECT_TRUE(contains(seen->all_writes(), "deadline of 0.2 s passed: #1 recv in group pp"));

  auto seen_loose = std::make_shared<Observed>();
  Watchdog loosened;
  loosened.arm(config_for(seen_loose, 0.2));
  loosened.set_deadline(60);
  loosened.begin("recv", "pp", 128);
  std::this_thread::sleep_for(600ms);
  EXPECT_TRUE(seen_loose->codes().empty()) << "a loosened deadline did not apply";
}

TEST(Watchdog, FiresOnceEvenWithSeveralOperationsPastTheDeadline) {
  auto seen = std::make_shared<Observed>();
  Watchdog w;
  w.begin("isend", "pp", 16);
  w.begin("irecv", "pp", 16);
  w.arm(config_for(seen, 0.1));
  ASSERT_TRUE(seen->wait_for_exit(5s));
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(seen->codes().size(), 1u);
  EXPECT_TRUE(contains(seen->all_writes(), "passed: #1 isend")) << "names the oldest";
}

TEST(Watchdog, ReportListsTheLastSixteenOperationsOldestFirstWithTheirState) {
  Watchdog w;
  const char* kinds[] = {"all_reduce", "all_gather", "reduce_scatter", "send", "recv"};
  for (uint64_t i = 1; i <= 20; ++i) {
    const uint64_t seq = w.begin(kinds[i % 5], "group" + std::to_string(i), 100 * i);
    ASSERT_EQ(seq, i);
    if (i != 18) w.end(seq);
  }
  const std::string text = w.report();
  EXPECT_EQ(text.rfind("rank 0: last 16 operations, oldest first:\n", 0), 0u) << text;
  EXPECT_FALSE(contains(text, "#4 ")) << text;
  size_t previous = 0;
  for (uint64_t i = 5; i <= 20; ++i) {
    const std::string line = "  #" + std::to_string(i) + " " + kinds[i % 5] + " in group group" +
                             std::to_string(i) + " (" + std::to_string(100 * i) +
                             " bytes): " + (i == 18 ? "in flight, started " : "done in ");
    const size_t at = text.find(line);
    ASSERT_NE(at, std::string::npos) << line << "\nnot in\n" << text;
    EXPECT_GT(at, previous) << "#" << i << " out of order";
    previous = at;
  }
  EXPECT_EQ(Watchdog().report(), "rank 0: no operations recorded\n");
}

TEST(Watchdog, SignalPrintsOneLineNamingTheOperationInFlightAndDoesNotExit) {
  auto seen = std::make_shared<Observed>();
  Watchdog w;
  // With signal_line_after_s: an operation that ends before it has waited that long says nothing
  // (a run that a stop signal ends as it should); one still waiting then is named (a stuck rank).
  auto patient_seen = std::make_shared<Observed>();
  WatchdogConfig patient = config_for(patient_seen, 60);
  patient.signal_line_after_s = 0.5;
  w.arm(patient);
  const uint64_t brief = w.begin("barrier", "world", 0);
  Watchdog::signal_received(SIGUSR1);
  std::this_thread::sleep_for(100ms);
  w.end(brief);
  std::this_thread::sleep_for(700ms);
  EXPECT_EQ(patient_seen->write_count(), 0u) << patient_seen->all_writes();
  const uint64_t stuck = w.begin("all_reduce", "tp", 64);
  Watchdog::signal_received(SIGTERM);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(patient_seen->write_count(), 0u) << patient_seen->all_writes();
  ASSERT_TRUE(patient_seen->wait_until([&] { return !patient_seen->writes.empty(); }, 5s));
  const std::string late = patient_seen->all_writes();
  EXPECT_EQ(late.rfind("rank 3: SIGTERM received while waiting 0.", 0), 0u) << late;
  EXPECT_TRUE(
      contains(late, " s in #" + std::to_string(stuck) + " all_reduce in group tp (64 bytes)\n"))
      << late;
  w.end(stuck);
  w.disarm();
  w.arm(config_for(seen, 60));
  Watchdog::signal_received(SIGTERM);  // nothing in flight: nothing to say
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(seen->write_count(), 0u) << seen->all_writes();

  const uint64_t seq = w.begin("recv", "pp", 128);
  Watchdog::signal_received(SIGUSR1);
  ASSERT_TRUE(seen->wait_until([&] { return !seen->writes.empty(); }, 5s));
  std::this_thread::sleep_for(200ms);
  ASSERT_EQ(seen->write_count(), 1u) << seen->all_writes();
  const std::string line = seen->all_writes();
  EXPECT_EQ(line.rfind("rank 3: SIGUSR1 received while waiting ", 0), 0u) << line;
  EXPECT_TRUE(contains(line, " s in #" + std::to_string(seq) + " recv in group pp (128 bytes)\n"))
      << line;
  EXPECT_TRUE(seen->codes().empty()) << "a signal is the launcher's to act on";
}

// The signal line goes to file descriptor 2, here a file, read until the line is whole (at most
// 10 s: the watchdog's thread prints it within a poll, 50 ms, of the signal).
TEST(Watchdog, DefaultOutputIsStderr) {
  const std::filesystem::path file = test_support::fresh_test_dir("tessera_watchdog") / "stderr";
  std::fflush(stderr);
  const int saved = ::dup(2);
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_TRUE(saved >= 0 && fd >= 0);
  ::dup2(fd, 2);
  ::close(fd);
  Watchdog w;
  WatchdogConfig c = config_for(std::make_shared<Observed>(), 60);
  c.write_fn = nullptr;
  w.arm(c);
  w.begin("barrier", "world", 0);
  Watchdog::signal_received(SIGTERM);
  std::string err;
  for (const Clock::time_point start = Clock::now();
       !err.ends_with("\n") && seconds_since(start) < 10; std::this_thread::sleep_for(20ms)) {
    std::ifstream in(file);
    err.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  w.disarm();
  ::dup2(saved, 2);
  ::close(saved);
  std::filesystem::remove_all(file.parent_path());
  EXPECT_TRUE(contains(err, "rank 3: SIGTERM received while waiting ")) << err;
  EXPECT_TRUE(contains(err, " s in #1 barrier in group world (0 bytes)\n")) << err;
}

TEST(Watchdog, AbortsTheCommunicatorsBeforeExiting) {
  auto seen = std::make_shared<Observed>();
  auto order = std::make_shared<std::vector<std::string>>();
  Watchdog w;
  WatchdogConfig c = config_for(seen, 0.1);
  c.abort_communicators = [seen, order] {
    std::lock_guard<std::mutex> lock(seen->mutex);
    order->push_back("abort");
  };
  c.exit_fn = [seen, order](int code) {
    std::lock_guard<std::mutex> lock(seen->mutex);
    order->push_back("exit");
    seen->exit_codes.push_back(code);
    seen->changed.notify_all();
  };
  w.begin("all_gather", "tp", 32);
  w.arm(c);
  ASSERT_TRUE(seen->wait_for_exit(5s));
  std::lock_guard<std::mutex> lock(seen->mutex);
  EXPECT_EQ(*order, (std::vector<std::string>{"abort", "exit"}));
}

TEST(Watchdog, AbortThatHangsIsAbandonedAfterTheGraceAndTheRankStillExits) {
  struct Gate {
    std::mutex mutex;
    std::condition_variable opened_cv;
    bool open = false;
    std::atomic<bool> abort_returned{false};
  };
  auto gate = std::make_shared<Gate>();
  auto seen = std::make_shared<Observed>();
  Watchdog w;
  WatchdogConfig c = config_for(seen, 0.1);
  c.abort_grace_s = 0.2;
  c.abort_communicators = [gate] {
    std::unique_lock<std::mutex> lock(gate->mutex);
    gate->opened_cv.wait(lock, [&] { return gate->open; });
    gate->abort_returned = true;
  };
  w.begin("all_reduce", "dp", 4);
  w.arm(c);
  ASSERT_TRUE(seen->wait_for_exit(5s)) << "a hanging abort kept the rank alive";
  EXPECT_TRUE(contains(seen->all_writes(), "aborting the communicators did not finish in 0.2 s"));
  {
    std::lock_guard<std::mutex> lock(gate->mutex);
    gate->open = true;
  }
  gate->opened_cv.notify_all();
  for (int i = 0; i < 100 && !gate->abort_returned; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(gate->abort_returned);
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The report and the signal line are also appended to report_file, its folder made, after what
// the file held: a copy that a launcher tearing the job down cannot drop.
TEST(Watchdog, ReportsAreAlsoAppendedToTheReportFile) {
  const std::filesystem::path dir = test_support::fresh_test_dir("tessera_watchdog");
  const std::filesystem::path file = dir / "watchdog" / "rank_3.txt";
  std::filesystem::create_directories(file.parent_path());
  std::ofstream(file) << "an earlier run's report\n";
  auto seen = std::make_shared<Observed>();
  Watchdog w;
  WatchdogConfig c = config_for(seen, 600.0);
  c.report_file = file.string();
  w.arm(c);
  w.begin("recv", "pp", 128);
  Watchdog::signal_received(SIGTERM);
  ASSERT_TRUE(seen->wait_until([&] { return !seen->writes.empty(); }, 5s));
  w.set_deadline(0.1);
  ASSERT_TRUE(seen->wait_for_exit(10s));
  const std::string text = read_file(file);
  std::filesystem::remove_all(dir);
  EXPECT_EQ(text.rfind("an earlier run's report\n== ", 0), 0u) << text;
  const size_t signal = text.find("rank 3: SIGTERM received while waiting ");
  const size_t deadline = text.find("rank 3: collective deadline of 0.1 s passed: #1 recv");
  ASSERT_NE(signal, std::string::npos) << text;
  ASSERT_NE(deadline, std::string::npos) << text;
  EXPECT_LT(signal, deadline) << text;
  EXPECT_TRUE(contains(text, " UTC, pid " + std::to_string(getpid()) + " ==\nrank 3: collective"))
      << text;
  EXPECT_TRUE(contains(text, "rank 3:   #1 recv in group pp (128 bytes): in flight, started "))
      << text;
}

// A report file whose write blocks (here a FIFO nobody reads, as a hung file system would) is
// abandoned after report_file_grace_s: the rank still aborts and exits.
TEST(Watchdog, AReportFileThatBlocksDoesNotKeepTheRankAlive) {
  const std::filesystem::path dir = test_support::fresh_test_dir("tessera_watchdog");
  const std::filesystem::path fifo = dir / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto seen = std::make_shared<Observed>();
  auto aborted = std::make_shared<std::atomic<bool>>(false);
  Watchdog w;
  WatchdogConfig c = config_for(seen, 0.1);
  c.report_file = fifo.string();
  c.report_file_grace_s = 0.2;
  c.abort_communicators = [aborted] { *aborted = true; };
  w.begin("all_reduce", "dp", 4);
  w.arm(c);
  ASSERT_TRUE(seen->wait_for_exit(5s)) << "a blocked report file kept the rank alive";
  EXPECT_TRUE(aborted->load());
  EXPECT_TRUE(contains(seen->all_writes(), "collective deadline of 0.1 s passed"))
      << seen->all_writes();
  // Lets the abandoned append finish (it may not have reached open yet: keep reading until the
  // report came through), so that no thread of this test outlives it.
  const int fd = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(fd, 0);
  std::string got;
  char buffer[4096];
  for (const Clock::time_point start = Clock::now();
       !contains(got, "in flight, started ") && seconds_since(start) < 10;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n > 0)
      got.append(buffer, static_cast<size_t>(n));
    else
      std::this_thread::sleep_for(10ms);
  }
  ::close(fd);
  std::filesystem::remove_all(dir);
  EXPECT_TRUE(contains(got, "collective deadline of 0.1 s passed")) << got;
}

TEST(Watchdog, EndWhenKeepsTheOperationInFlightUntilItsCompletionSaysDone) {
  auto seen = std::make_shared<Observed>();
  auto completed = std::make_shared<std::atomic<bool>>(false);
  Watchdog w;
  w.arm(config_for(seen, 2.0));
  const uint64_t seq = w.begin("all_reduce_async", "dp", 64);
  w.end_when(seq, [completed] { return completed->load(); });
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(contains(w.report(), "all_reduce_async in group dp (64 bytes): in flight"));
  *completed = true;
  const Clock::time_point start = Clock::now();
  while (!contains(w.report(), "all_reduce_async in group dp (64 bytes): done in ") &&
         seconds_since(start) < 10)
    std::this_thread::sleep_for(20ms);
  EXPECT_TRUE(contains(w.report(), "all_reduce_async in group dp (64 bytes): done in "));
  EXPECT_TRUE(seen->codes().empty()) << seen->all_writes();

  const uint64_t never = w.begin("all_gather_async", "dp", 64);
  w.end_when(never, [] { return false; });
  ASSERT_TRUE(seen->wait_for_exit(10s)) << "an operation that never completes did not fire";
  EXPECT_TRUE(contains(seen->all_writes(), "passed: #2 all_gather_async in group dp"));

  Watchdog unarmed;  // nobody would poll: ended at once
  unarmed.end_when(unarmed.begin("isend", "pp", 8), [] { return false; });
  EXPECT_TRUE(contains(unarmed.report(), "#1 isend in group pp (8 bytes): done in "));
}

// A failure inside the watchdog's own thread (here a completion query that throws something
// that is not an error the watchdog could name) ends the rank with the watchdog's code, long
// before the deadline, where it ended it by std::terminate.
TEST(Watchdog, FailureInsideTheWatchdogExitsWithItsCode) {
  auto seen = std::make_shared<Observed>();
  Watchdog w;
  w.arm(config_for(seen, 600.0));
  w.end_when(w.begin("all_reduce_async", "dp", 64), []() -> bool { throw 42; });
  ASSERT_TRUE(seen->wait_for_exit(10s)) << "the watchdog's failure did not end the rank";
  EXPECT_EQ(seen->codes(), std::vector<int>{kExitCode});
  EXPECT_TRUE(contains(seen->all_writes(),
                       "rank 3: the collective watchdog failed (an exception that is not a "
                       "std::exception); exiting"))
      << seen->all_writes();
  EXPECT_FALSE(contains(seen->all_writes(), "deadline")) << seen->all_writes();
}

// An operation whose completion query reports an error (NCCL's asynchronous error while a
// stream-ordered collective waits) ends the rank at once with that error and the operation
// named, not at the deadline with a bare "passed"; the communicators are aborted first.
TEST(Watchdog, AnOperationThatFailsInFlightEndsTheRankAtOnceNamingIt) {
  auto seen = std::make_shared<Observed>();
  auto aborted = std::make_shared<std::atomic<bool>>(false);
  Watchdog w;
  WatchdogConfig c = config_for(seen, 600.0);
  c.abort_communicators = [aborted] { *aborted = true; };
  w.arm(c);
  w.end(w.begin("all_reduce", "tp", 8));
  auto failed = std::make_shared<std::atomic<bool>>(false);
  w.end_when(w.begin("all_reduce_async", "dp", 64), [failed]() -> bool {
    if (*failed) throw std::runtime_error("NCCL reported unhandled system error");
    return false;
  });
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(seen->codes().empty()) << "fired before the operation failed";
  *failed = true;  // within the 10 s below, where the deadline is 600 s
  ASSERT_TRUE(seen->wait_for_exit(10s)) << "the failed operation did not end the rank";
  EXPECT_EQ(seen->codes(), std::vector<int>{kExitCode});
  EXPECT_TRUE(aborted->load());
  const std::string text = seen->all_writes();
  EXPECT_TRUE(contains(text, "rank 3: #2 all_reduce_async in group dp (64 bytes) failed after "))
      << text;
  EXPECT_TRUE(contains(text, " s: NCCL reported unhandled system error\n")) << text;
  EXPECT_TRUE(contains(text, "#1 all_reduce in group tp (8 bytes): done in ")) << text;
  EXPECT_FALSE(contains(text, "deadline")) << text;
  EXPECT_TRUE(w.fired());
}

TEST(Watchdog, ConcurrentRecordingKeepsSequenceNumbersUnique) {
  constexpr int kThreads = 8, kEach = 2000;
  Watchdog w;
  std::vector<std::vector<uint64_t>> seqs(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&w, &seqs, t] {
      for (int i = 0; i < kEach; ++i) {
        const uint64_t seq = w.begin("all_reduce", "dp", 4);
        seqs[t].push_back(seq);
        w.end(seq);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::set<uint64_t> unique;
  for (const auto& s : seqs) unique.insert(s.begin(), s.end());
  EXPECT_EQ(unique.size(), size_t{kThreads} * kEach);
  EXPECT_EQ(*unique.begin(), 1u);
  EXPECT_EQ(*unique.rbegin(), uint64_t{kThreads} * kEach);
  EXPECT_FALSE(contains(w.report(), "in flight"));
}

TEST(Watchdog, RequestRecordEndsWithItsHandleAndScopeRecordWithItsScope) {
  const std::string group = "scope_test_group";
  {
    const WatchedRequest op("barrier", group, 0);
    EXPECT_TRUE(contains(Watchdog::instance().report(),
                         "barrier in group " + group + " (0 bytes): in flight"));
  }
  EXPECT_TRUE(contains(Watchdog::instance().report(),
                       "barrier in group " + group + " (0 bytes): done in "));
  {
    WatchedRequest request("isend", group, 8);
    WatchedRequest moved = std::move(request);
    EXPECT_TRUE(contains(Watchdog::instance().report(),
                         "isend in group " + group + " (8 bytes): in flight"));
  }
  EXPECT_TRUE(
      contains(Watchdog::instance().report(), "isend in group " + group + " (8 bytes): done in "));
}

}  // namespace
}  // namespace tessera
