#include "io/mapped_file.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>

namespace tessera {

namespace {

// The live mappings, for the SIGBUS handler: a read past the end of a file that shrank after it
// was mapped (rewritten in place by another program) raises SIGBUS at an address inside one of
// them. Fixed slots, written under a mutex and read by the handler without one: a slot's range
// is published last (release) and cleared first, so the handler sees a whole slot or none.
struct Slot {
  std::atomic<uintptr_t> begin{0}, end{0};  // [begin, end); 0, 0: free
  char path[512] = {};
};
constexpr size_t kSlots = 256;
Slot g_slots[kSlots];
std::mutex g_slots_mutex;
struct sigaction g_previous {};  // the handler before ours, for faults of other addresses

// Writes `text` whole to stderr (async-signal-safe).
void say(const char* text) {
  for (size_t left = std::strlen(text); left > 0;) {
    const ssize_t n = ::write(2, text, left);
    if (n <= 0) return;
    text += n;
    left -= static_cast<size_t>(n);
  }
}

extern "C" void on_bus_error(int signo, siginfo_t* info, void*) {
  const auto at = reinterpret_cast<uintptr_t>(info->si_addr);
  for (const Slot& s : g_slots) {
    const uintptr_t begin = s.begin.load(std::memory_order_acquire);
    if (begin == 0 || at < begin || at >= s.end.load(std::memory_order_acquire)) continue;
    say("tessera: error: ");
    say(s.path);
    say(": the file became shorter while tessera read it (a bus error on its memory map): "
        "another program rewrote it in place; write new corpora under new names, or to a "
        "temporary name renamed over the old one (as tessera tokenize encode does)\n");
    ::_exit(2);
  }
  // Not a mapping of ours: the fault is the previous handler's (or the default's) to report.
  // Restored, it runs when the faulting instruction runs again on return; a signal sent (kill,
  // raise: no fault to run again) is sent again.
  ::sigaction(signo, &g_previous, nullptr);
  if (info->si_code <= 0) ::raise(signo);
}

void install_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_bus_error;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGBUS, &sa, &g_previous);
  });
}

void remember(const void* data, size_t bytes, const std::string& path) {
  install_handler();
  const std::lock_guard<std::mutex> lock(g_slots_mutex);
  for (Slot& s : g_slots) {
    if (s.begin.load(std::memory_order_relaxed) != 0) continue;
    const size_t n = std::min(path.size(), sizeof s.path - 1);
    std::memcpy(s.path, path.data(), n);
    s.path[n] = '\0';
    const auto begin = reinterpret_cast<uintptr_t>(data);
    s.end.store(begin + bytes, std::memory_order_release);
    s.begin.store(begin, std::memory_order_release);
    return;
  }
  // More mappings than slots: this one's bus error is reported as any other.
}

void forget(const void* data) {
  const std::lock_guard<std::mutex> lock(g_slots_mutex);
  for (Slot& s : g_slots)
    if (s.begin.load(std::memory_order_relaxed) == reinterpret_cast<uintptr_t>(data)) {
      s.begin.store(0, std::memory_order_release);
      s.end.store(0, std::memory_order_release);
      return;
    }
}

}  // namespace

MappedFile::~MappedFile() {
  if (!data) return;
  forget(data);
  ::munmap(const_cast<void*>(data), bytes);
}

std::shared_ptr<const MappedFile> map_read_only(int fd, size_t bytes, const std::string& path) {
  auto file = std::make_shared<MappedFile>();
  if (bytes == 0) return file;
  void* p = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return nullptr;
  file->data = p;
  file->bytes = bytes;
  remember(p, bytes, path);
  return file;
}

}  // namespace tessera
