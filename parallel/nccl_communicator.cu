// NCCL collectives and point-to-point on device tensors. Each operation runs on the
// communicator's own stream after an event of the compute stream; the communicator is
// non-blocking (config.blocking = 0), so every NCCL call may answer ncclInProgress and is polled
// with ncclCommGetAsyncError against the deadline, and a failed or missing peer ends in
// ncclCommAbort and an InternalError rather than a hang.
#include "parallel/nccl_communicator.h"

#include <nccl.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "core/cuda_common.cuh"
#include "core/device.h"
#include "core/error.h"
#include "parallel/first_contact.h"
#include "parallel/watchdog.h"

namespace tessera {

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kDebugHint = "; rerun with NCCL_DEBUG=INFO for NCCL's own account";
// NCCL allows 2048 operations in one group; the pipeline posts a handful between waits.
constexpr size_t kMaxPendingP2p = 1024;

std::string seconds_text(double s) {
  std::ostringstream o;
  o << s << " s";
  return o.str();
}

Clock::time_point deadline_after(double seconds) {
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

// Yields for the first polls (a collective usually completes within microseconds), then sleeps
// so that a long wait does not take a core from the other ranks of the node.
void back_off(int poll) {
  if (poll < 2000)
    std::this_thread::yield();
  else
    std::this_thread::sleep_for(std::chrono::microseconds(50));
}

std::string nccl_error_text(ncclResult_t r, ncclComm_t comm) {
  std::string text = ncclGetErrorString(r);
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && *last != '\0') text += " (" + std::string(last) + ")";
  return text;
}

// An event that orders one stream after another; no timing.
class Event {
 public:
  Event() { CHECK_CUDA(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
  ~Event() { cudaEventDestroy(event_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// The end of one launched NCCL operation or point-to-point group: an event recorded on the NCCL
// stream right after it. The handles of one point-to-point group share it.
struct Completion {
  Event done;
  bool launched = false;
};

struct PendingP2p {
  bool is_send;
  Tensor tensor;  // keeps the buffer alive until the group starts
  int peer;
};

// How NCCL sees a tensor's elements. U16 (token ids) is moved as bytes: NCCL has no uint16.
struct Payload {
  ncclDataType_t type;
  size_t count;
};

Payload payload(const Tensor& t) {
  const size_t n = static_cast<size_t>(t.numel());
  switch (t.dtype()) {
    case DType::F32:
      return {ncclFloat32, n};
    case DType::F64:
      return {ncclFloat64, n};
    case DType::BF16:
      return {ncclBfloat16, n};
    case DType::I32:
      return {ncclInt32, n};
    case DType::U16:
      return {ncclUint8, n * sizeof(uint16_t)};
  }
  return {ncclUint8, t.bytes()};
}

ncclRedOp_t nccl_op(ReduceOp op) {
  return op == ReduceOp::Sum ? ncclSum : ncclMax;
}

// Keeps a stream busy for `ns` nanoseconds (tests of stream ordering).
__global__ void hold_stream_kernel(unsigned long long ns) {
  unsigned long long start = 0, now = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    __nanosleep(100000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < ns);
}

void hold_stream(cudaStream_t stream, double seconds) {
  TESSERA_CHECK(seconds >= 0 && seconds < 600,
                "hold_stream_for_testing: " + seconds_text(seconds) + " outside [0, 600)");
  hold_stream_kernel<<<1, 1, 0, stream>>>(static_cast<unsigned long long>(seconds * 1e9));
  CHECK_LAUNCH();
}

// The error NCCL found for `comm` while its operations ran (a peer gone, a network failure), as
// "NCCL reported ...", or "" when none. `query` is ncclCommGetAsyncError's own result ("" when
// it failed), `state` the error.
std::string reported_error(ncclComm_t comm, ncclResult_t& query, ncclResult_t& state) {
  state = ncclSuccess;
  query = ncclCommGetAsyncError(comm, &state);
  if (query != ncclSuccess || state == ncclSuccess || state == ncclInProgress) return "";
  return "NCCL reported " + nccl_error_text(state, comm);
}

// Whether NCCL blames a peer or the network (a remote process gone, a socket or link error)
// rather than this rank's call.
bool fault_outside(ncclResult_t r) {
  return r == ncclSystemError || r == ncclRemoteError;
}

// What the watchdog's thread may read of a communicator while the caller's thread uses it: the
// handle, under a lock of its own, from when the communicator is ready until it is aborted or
// destroyed (take_comm), so that the watchdog never queries a freed one.
struct ErrorProbe {
  std::mutex mutex;
  ncclComm_t comm = nullptr;

  // The error NCCL reports for the communicator while an operation waits (a peer gone, a
  // network failure), or "" when none, or when another thread holds the handle just now.
  std::string async_error() {
    std::unique_lock<std::mutex> lock(mutex, std::try_to_lock);
    if (!lock.owns_lock() || comm == nullptr) return "";
    ncclResult_t query = ncclSuccess, state = ncclSuccess;
    return reported_error(comm, query, state);
  }
};

}  // namespace

struct NcclCommunicator::State {
  State(std::string group, int device_index, double timeout, int my_rank, int n)
      : name(std::move(group)), device(device_index), rank(my_rank), size(n), timeout_s(timeout) {
    CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  }
  ~State();
  State(const State&) = delete;
  State& operator=(const State&) = delete;

  std::string name;
  int device = 0, rank = 0, size = 1;
  double timeout_s = 0;
  ncclComm_t comm = nullptr;  // null once aborted or destroyed
  std::shared_ptr<ErrorProbe> probe = std::make_shared<ErrorProbe>();
  cudaStream_t stream = nullptr;
  std::string failure;  // why the communicator was aborted
  Event compute_ready;  // recorded on the compute stream before each operation
  std::vector<PendingP2p> pending;
  std::shared_ptr<Completion> pending_done;
  ncclComm_t split_out = nullptr;  // written by NCCL's background split job: must outlive it
  Tensor barrier_word;             // one F32 on the device, made at the first barrier
  // The peers of earlier point-to-point groups, and the handshake's buffer (parallel/
  // first_contact.h): element 0 is sent, element 1 + peer receives from that peer.
  std::set<int> met_peers;
  Tensor handshake;
};

namespace {

using State = NcclCommunicator::State;

// "all_reduce in group dp (rank 3 of 8): ", the prefix of every message.
std::string where(const State& s, const char* op) {
  const std::string place = s.size > 0
                                ? "rank " + std::to_string(s.rank) + " of " + std::to_string(s.size)
                                : "being split off";
  return std::string(op) + " in group " + s.name + " (" + place + "): ";
}

// The communicator, ready: from now on the watchdog may query it for errors.
void publish_comm(State& s) {
  std::lock_guard<std::mutex> lock(s.probe->mutex);
  s.probe->comm = s.comm;
}

// Takes the communicator out of use, here and in the watchdog's probe, and returns it (or null)
// for ncclCommAbort or ncclCommDestroy.
ncclComm_t take_comm(State& s) {
  std::lock_guard<std::mutex> lock(s.probe->mutex);
  s.probe->comm = nullptr;
  return std::exchange(s.comm, nullptr);
}

void abort_comm(State& s, const std::string& why) {
  if (ncclComm_t comm = take_comm(s)) ncclCommAbort(comm);
  s.failure = why;
  s.pending.clear();
}

// Aborts the communicator, so that its kernels stop and the compute stream waiting for them goes
// on, then throws: a CommunicationError when the fault lies outside this rank (`outside`: a
// peer, the network, a deadline a peer missed), else an InternalError.
[[noreturn]] void fail(State& s, const char* op, const std::string& what, bool outside,
                       const char* file, int line) {
  abort_comm(s, what);
  const std::string message =
      where(s, op) + what + "; the NCCL communicator was aborted" + kDebugHint;
  if (outside) throw CommunicationError(message);
  fail_internal(file, line, message);
}

#define FAIL_AND_ABORT(state, op, what) fail((state), (op), (what), false, __FILE__, __LINE__)
// The failure of an NCCL result `r`: outside this rank or not, as fault_outside says.
#define FAIL_ON_RESULT(state, op, what, r) \
  fail((state), (op), (what), fault_outside(r), __FILE__, __LINE__)
#define LOST_AND_ABORT(state, op, what) fail((state), (op), (what), true, __FILE__, __LINE__)

void check_usable(const State& s, const char* op) {
  TESSERA_CHECK(s.comm != nullptr,
                where(s, op) + "the NCCL communicator was aborted earlier: " + s.failure);
}

// Polls `comm` until its pending NCCL call (init, split, an enqueue, finalize) has finished.
void wait_until_ready(State& s, ncclComm_t comm, const char* call, const char* op) {
  const Clock::time_point deadline = deadline_after(s.timeout_s);
  for (int poll = 0;; ++poll) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t query = ncclCommGetAsyncError(comm, &state);
    if (query != ncclSuccess)
      FAIL_AND_ABORT(s, op, "ncclCommGetAsyncError failed: " + nccl_error_text(query, comm));
    if (state == ncclSuccess) return;
    if (state != ncclInProgress)
      FAIL_ON_RESULT(s, op, std::string(call) + " failed: " + nccl_error_text(state, comm), state);
    if (Clock::now() > deadline)
      LOST_AND_ABORT(s, op,
                     std::string(call) + " timed out after " + seconds_text(s.timeout_s) +
                         " (did every rank of the group make this call, each on its own GPU?)");
    back_off(poll);
  }
}

// The result of a non-blocking NCCL call: done, or in progress (then polled), or failed.
void settle(State& s, ncclResult_t r, const char* call, const char* op) {
  if (r == ncclSuccess) return;
  if (r != ncclInProgress)
    FAIL_ON_RESULT(s, op, std::string(call) + " failed: " + nccl_error_text(r, s.comm), r);
  wait_until_ready(s, s.comm, call, op);
}

// An error NCCL found while the operations ran (a peer gone, a network failure).
void check_async_error(State& s, const char* op) {
  check_usable(s, op);
  ncclResult_t query = ncclSuccess, state = ncclSuccess;
  const std::string reported = reported_error(s.comm, query, state);
  if (query != ncclSuccess)
    FAIL_AND_ABORT(s, op, "ncclCommGetAsyncError failed: " + nccl_error_text(query, s.comm));
  if (!reported.empty()) FAIL_ON_RESULT(s, op, reported, state);
}

// Blocks the host until `done` has completed on the GPU, watching for NCCL errors and the deadline.
void wait_for_completion(State& s, const Completion& done, const char* op) {
  const Clock::time_point deadline = deadline_after(s.timeout_s);
  for (int poll = 0;; ++poll) {
    const cudaError_t q = cudaEventQuery(done.done.get());
    if (q == cudaSuccess) break;
    if (q != cudaErrorNotReady)
      fail_internal(__FILE__, __LINE__,
                    where(s, op) + "cudaEventQuery failed: " + cudaGetErrorString(q));
    check_async_error(s, op);
    if (Clock::now() > deadline)
      LOST_AND_ABORT(
          s, op,
          "timed out after " + seconds_text(s.timeout_s) +
              " waiting for the operation to complete (did every rank of the group call it?)");
    back_off(poll);
  }
  CHECK_CUDA(cudaStreamWaitEvent(cuda::compute_stream(), done.done.get(), 0));
}

// The NCCL stream waits for everything queued on the compute stream so far.
void order_after_compute(State& s) {
  CHECK_CUDA(cudaEventRecord(s.compute_ready.get(), cuda::compute_stream()));
  CHECK_CUDA(cudaStreamWaitEvent(s.stream, s.compute_ready.get(), 0));
}

// Starts the held-back sends and receives as one NCCL group (see isend in the header).
void start_pending_p2p(State& s, const char* op) {
  if (s.pending.empty()) return;
  check_usable(s, op);
  std::vector<PendingP2p> ops;
  ops.swap(s.pending);
  const std::shared_ptr<Completion> done = std::move(s.pending_done);
  std::vector<int> peers;
  for (const PendingP2p& p : ops) peers.push_back(p.peer);
  const std::vector<int> fresh = first_contacts(peers, s.rank, s.met_peers);
  if (!fresh.empty() && !s.handshake.defined())
    s.handshake = Tensor({s.size + 1}, DType::I32, Device::CUDA);
  order_after_compute(s);
  settle(s, ncclGroupStart(), "ncclGroupStart", op);
  ncclResult_t first_error = ncclSuccess;
  const auto note = [&first_error](ncclResult_t r) {
    if (first_error == ncclSuccess && r != ncclSuccess && r != ncclInProgress) first_error = r;
  };
  // First the handshakes with the peers met for the first time, then what was posted.
  int32_t* word = static_cast<int32_t*>(s.handshake.defined() ? s.handshake.raw() : nullptr);
  for (int peer : fresh) {
    note(ncclSend(word, 1, ncclInt32, peer, s.comm, s.stream));
    note(ncclRecv(word + 1 + peer, 1, ncclInt32, peer, s.comm, s.stream));
  }
  for (const PendingP2p& p : ops) {
    const Payload d = payload(p.tensor);
    note(p.is_send ? ncclSend(p.tensor.raw(), d.count, d.type, p.peer, s.comm, s.stream)
                   : ncclRecv(p.tensor.raw(), d.count, d.type, p.peer, s.comm, s.stream));
  }
  const ncclResult_t end = ncclGroupEnd();  // ends the group even after a failed call
  if (first_error != ncclSuccess)
    FAIL_ON_RESULT(s, op, "ncclSend/ncclRecv failed: " + nccl_error_text(first_error, s.comm),
                   first_error);
  settle(s, end, "ncclGroupEnd of the point-to-point group", op);
  CHECK_CUDA(cudaEventRecord(done->done.get(), s.stream));
  done->launched = true;
}

// Queues one collective after the compute stream's work and whatever this communicator already
// holds back; returns its completion.
template <typename Call>
std::shared_ptr<Completion> launch(State& s, const char* op, const char* call_name, Call&& call) {
  check_usable(s, op);
  start_pending_p2p(s, op);
  order_after_compute(s);
  auto done = std::make_shared<Completion>();
  settle(s, call(), call_name, op);
  CHECK_CUDA(cudaEventRecord(done->done.get(), s.stream));
  done->launched = true;
  return done;
}

// For the watchdog the operation is in flight from its posting until the GPU has completed it:
// test() ends it when it sees completion; wait() only orders the compute stream after it, so the
// watchdog's thread then polls the completion event itself.
class NcclRequest final : public CommRequest {
 public:
  NcclRequest(std::shared_ptr<State> state, std::shared_ptr<Completion> done,
              std::vector<Tensor> tensors, const char* op, WatchedRequest watched)
      : state_(std::move(state)),
        done_(std::move(done)),
        tensors_(std::move(tensors)),
        op_(op),
        watched_(std::move(watched)) {}

  ~NcclRequest() override {
    if (waited_) return;
    try {
      wait();
    } catch (const std::exception&) {
      // The communicator is aborted by now; its next operation reports why.
    }
  }

  void wait() override {
    if (waited_) return;
    waited_ = true;  // a failed wait is not retried, not even by the destructor
    try {
      start();
      CHECK_CUDA(cudaStreamWaitEvent(cuda::compute_stream(), done_->done.get(), 0));
    } catch (...) {
      watched_.end();  // failed: it waits no longer
      throw;
    }
    // Polled on the watchdog's thread: done, or an error NCCL reports meanwhile, which the
    // watchdog acts on at once (with NCCL's reason, not a bare deadline later).
    watched_.end_when([done = done_, probe = state_->probe, device = state_->device] {
      cudaSetDevice(device);  // this rank's GPU, not device 0's context
      if (cudaEventQuery(done->done.get()) != cudaErrorNotReady) return true;
      const std::string error = probe->async_error();
      if (!error.empty()) throw std::runtime_error(error);
      return false;
    });
  }

  bool test() override {
    start();
    const bool complete = query();
    if (complete) watched_.end();
    return complete;
  }

 private:
  void start() {
    if (!done_->launched) start_pending_p2p(*state_, op_);
    TESSERA_CHECK(done_->launched,
                  where(*state_, op_) +
                      "never started: the NCCL communicator was aborted: " + state_->failure);
  }

  bool query() {
    const cudaError_t q = cudaEventQuery(done_->done.get());
    if (q == cudaSuccess) return true;
    if (q != cudaErrorNotReady)
      fail_internal(__FILE__, __LINE__,
                    where(*state_, op_) + "cudaEventQuery failed: " + cudaGetErrorString(q));
    check_async_error(*state_, op_);
    return false;
  }

  std::shared_ptr<State> state_;
  std::shared_ptr<Completion> done_;
  std::vector<Tensor> tensors_;
  const char* op_;
  bool waited_ = false;
  WatchedRequest watched_;
};

void check_operand(const State& s, const Tensor& t, const char* op) {
  TESSERA_CHECK(t.device() == Device::CUDA,
                where(s, op) + "NCCL moves device tensors, found a " + device_name(t.device()) +
                    " tensor of shape " + shape_str(t.shape()) +
                    " (copy it with Tensor::to(Device::CUDA), or use the MPI communicator)");
  TESSERA_CHECK(t.is_contiguous(),
                where(s, op) + "tensor of shape " + shape_str(t.shape()) + " is not contiguous");
}

void check_reducible(const State& s, const Tensor& t, const char* op) {
  check_operand(s, t, op);
  TESSERA_CHECK(t.dtype() != DType::U16,
                where(s, op) + dtype_name(t.dtype()) +
                    " cannot be reduced; NCCL reduces float32, float64, bfloat16 and int32");
}

void check_all_gather(const State& s, const Tensor& out, const Tensor& in, const char* op) {
  check_operand(s, out, op);
  check_operand(s, in, op);
  check_all_gather_args(out, in, s.rank, s.size, where(s, op));  // in place is NCCL's rule too
}

void check_reduce_scatter(const State& s, const Tensor& out, const Tensor& in, const char* op) {
  check_reducible(s, out, op);
  check_reducible(s, in, op);
  check_reduce_scatter_args(out, in, s.size, where(s, op));
}

std::shared_ptr<Completion> start_all_reduce(State& s, Tensor& t, ReduceOp op, const char* name) {
  check_reducible(s, t, name);
  const Payload d = payload(t);
  return launch(s, name, "ncclAllReduce", [&] {
    return ncclAllReduce(t.raw(), t.raw(), d.count, d.type, nccl_op(op), s.comm, s.stream);
  });
}

std::shared_ptr<Completion> start_all_gather(State& s, Tensor& out, const Tensor& in,
                                             const char* name) {
  check_all_gather(s, out, in, name);
  const Payload d = payload(in);
  return launch(s, name, "ncclAllGather", [&] {
    return ncclAllGather(in.raw(), out.raw(), d.count, d.type, s.comm, s.stream);
  });
}

std::shared_ptr<Completion> start_reduce_scatter(State& s, Tensor& out, const Tensor& in,
                                                 ReduceOp op, const char* name) {
  check_reduce_scatter(s, out, in, name);
  const Payload d = payload(out);
  return launch(s, name, "ncclReduceScatter", [&] {
    return ncclReduceScatter(in.raw(), out.raw(), d.count, d.type, nccl_op(op), s.comm, s.stream);
  });
}

std::shared_ptr<Completion> post_p2p(State& s, bool is_send, const Tensor& t, int peer,
                                     const char* op) {
  check_operand(s, t, op);
  check_group_member(peer, s.size, where(s, op), "peer");
  check_usable(s, op);
  TESSERA_CHECK(s.pending.size() < kMaxPendingP2p,
                where(s, op) + std::to_string(kMaxPendingP2p) +
                    " point-to-point operations posted and none waited for");
  if (!s.pending_done) s.pending_done = std::make_shared<Completion>();
  s.pending.push_back({is_send, t, peer});
  return s.pending_done;
}

}  // namespace

NcclCommunicator::State::~State() {
  if (ncclComm_t comm = take_comm(*this)) {
    // Finalize flushes what is still queued; a peer that never finishes must not hang us here.
    ncclResult_t r = ncclCommFinalize(comm);
    const Clock::time_point deadline = deadline_after(timeout_s);
    for (int poll = 0; r == ncclInProgress && Clock::now() < deadline; ++poll) {
      if (ncclCommGetAsyncError(comm, &r) != ncclSuccess) r = ncclInternalError;
      back_off(poll);
    }
    if (r == ncclSuccess)
      ncclCommDestroy(comm);
    else
      ncclCommAbort(comm);
  }
  cudaStreamDestroy(stream);
}

NcclCommunicator::NcclCommunicator(std::shared_ptr<State> state) : state_(std::move(state)) {}

NcclCommunicator::~NcclCommunicator() {
  try {
    start_pending_p2p(*state_, "~NcclCommunicator");
  } catch (const std::exception&) {
    // Aborted: nothing is left to flush.
  }
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::create(Communicator& bootstrap, int device,
                                                           double timeout_s,
                                                           const std::string& name) {
  const int rank = bootstrap.rank(), size = bootstrap.size();
  TESSERA_CHECK(timeout_s > 0, "NCCL group " + name + ": timeout of " + seconds_text(timeout_s) +
                                   ", expected more than 0");
  select_cuda_device(device);

  // Rank 0's unique id behind a status word: if rank 0 cannot make one, every rank fails here
  // instead of the others waiting for an id that never comes.
  static_assert(sizeof(ncclUniqueId) % sizeof(int32_t) == 0, "unique id of whole int32 words");
  constexpr int64_t kIdWords = sizeof(ncclUniqueId) / sizeof(int32_t);
  Tensor message({1 + kIdWords}, DType::I32);
  ncclUniqueId id{};
  std::string id_error = "see rank 0's log";
  if (rank == 0) {
    const ncclResult_t r = ncclGetUniqueId(&id);
    if (r == ncclSuccess) {
      message.data<int32_t>()[0] = 1;
      std::memcpy(message.data<int32_t>() + 1, &id, sizeof id);
    } else {
      id_error = nccl_error_text(r, nullptr);
    }
  }
  bootstrap.broadcast(message, 0);
  if (message.data<int32_t>()[0] != 1)
    fail_internal(__FILE__, __LINE__,
                  "init of NCCL group " + name + " (rank " + std::to_string(rank) + " of " +
                      std::to_string(size) +
                      "): rank 0 could not create NCCL's unique id: " + id_error + kDebugHint);
  std::memcpy(&id, message.data<int32_t>() + 1, sizeof id);

  auto state = std::make_shared<State>(name, device, timeout_s, rank, size);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  config.commName = state->name.c_str();
  const ncclResult_t r = ncclCommInitRankConfig(&state->comm, size, id, rank, &config);
  if (r != ncclSuccess && r != ncclInProgress)
    FAIL_ON_RESULT(*state, "init",
                   "ncclCommInitRankConfig failed: " + nccl_error_text(r, state->comm), r);
  TESSERA_CHECK(state->comm != nullptr, where(*state, "init") + "NCCL returned no communicator");
  const WatchedRequest watched("init", name, 0);
  wait_until_ready(*state, state->comm, "ncclCommInitRankConfig", "init");
  publish_comm(*state);
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(std::move(state)));
}

int NcclCommunicator::rank() const {
  return state_->rank;
}
int NcclCommunicator::size() const {
  return state_->size;
}
std::string NcclCommunicator::name() const {
  return state_->name;
}
int NcclCommunicator::device() const {
  return state_->device;
}
double NcclCommunicator::timeout_s() const {
  return state_->timeout_s;
}

void NcclCommunicator::set_timeout_s(double timeout_s) {
  TESSERA_CHECK(timeout_s > 0, where(*state_, "set_timeout_s") + "timeout of " +
                                   seconds_text(timeout_s) + ", expected more than 0");
  state_->timeout_s = timeout_s;
}

void NcclCommunicator::all_reduce(Tensor& t, ReduceOp op) {
  const WatchedRequest watched("all_reduce", state_->name, t.bytes());
  wait_for_completion(*state_, *start_all_reduce(*state_, t, op, "all_reduce"), "all_reduce");
}

void NcclCommunicator::all_gather(Tensor& out, const Tensor& in) {
  const WatchedRequest watched("all_gather", state_->name, out.bytes());
  wait_for_completion(*state_, *start_all_gather(*state_, out, in, "all_gather"), "all_gather");
}

void NcclCommunicator::reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op) {
  const WatchedRequest watched("reduce_scatter", state_->name, in.bytes());
  wait_for_completion(*state_, *start_reduce_scatter(*state_, out, in, op, "reduce_scatter"),
                      "reduce_scatter");
}

void NcclCommunicator::broadcast(Tensor& t, int root) {
  State& s = *state_;
  check_operand(s, t, "broadcast");
  check_group_member(root, s.size, where(s, "broadcast"), "root");
  const WatchedRequest watched("broadcast", s.name, t.bytes());
  const Payload d = payload(t);
  const auto done = launch(s, "broadcast", "ncclBroadcast", [&] {
    return ncclBroadcast(t.raw(), t.raw(), d.count, d.type, root, s.comm, s.stream);
  });
  wait_for_completion(s, *done, "broadcast");
}

void NcclCommunicator::send(const Tensor& t, int peer) {
  const WatchedRequest watched("send", state_->name, t.bytes());
  const auto done = post_p2p(*state_, true, t, peer, "send");
  start_pending_p2p(*state_, "send");
  wait_for_completion(*state_, *done, "send");
}

void NcclCommunicator::recv(Tensor& t, int peer) {
  const WatchedRequest watched("recv", state_->name, t.bytes());
  const auto done = post_p2p(*state_, false, t, peer, "recv");
  start_pending_p2p(*state_, "recv");
  wait_for_completion(*state_, *done, "recv");
}

void NcclCommunicator::barrier() {
  State& s = *state_;
  check_usable(s, "barrier");
  if (!s.barrier_word.defined()) s.barrier_word = Tensor({1}, DType::F32, Device::CUDA);
  const WatchedRequest watched("barrier", s.name, 0);
  wait_for_completion(s, *start_all_reduce(s, s.barrier_word, ReduceOp::Sum, "barrier"), "barrier");
}

void NcclCommunicator::abort(int exit_code) {
  if (ncclComm_t comm = take_comm(*state_)) ncclCommAbort(comm);
  std::_Exit(exit_code);
}

std::unique_ptr<CommRequest> NcclCommunicator::all_reduce_async(Tensor& t, ReduceOp op) {
  WatchedRequest watched("all_reduce_async", state_->name, t.bytes());
  auto done = start_all_reduce(*state_, t, op, "all_reduce_async");
  return std::make_unique<NcclRequest>(state_, std::move(done), std::vector<Tensor>{t},
                                       "all_reduce_async", std::move(watched));
}

std::unique_ptr<CommRequest> NcclCommunicator::all_gather_async(Tensor& out, const Tensor& in) {
  WatchedRequest watched("all_gather_async", state_->name, out.bytes());
  auto done = start_all_gather(*state_, out, in, "all_gather_async");
  return std::make_unique<NcclRequest>(state_, std::move(done), std::vector<Tensor>{out, in},
                                       "all_gather_async", std::move(watched));
}

std::unique_ptr<CommRequest> NcclCommunicator::reduce_scatter_async(Tensor& out, const Tensor& in,
                                                                    ReduceOp op) {
  WatchedRequest watched("reduce_scatter_async", state_->name, in.bytes());
  auto done = start_reduce_scatter(*state_, out, in, op, "reduce_scatter_async");
  return std::make_unique<NcclRequest>(state_, std::move(done), std::vector<Tensor>{out, in},
                                       "reduce_scatter_async", std::move(watched));
}

std::unique_ptr<CommRequest> NcclCommunicator::isend(const Tensor& t, int peer) {
  WatchedRequest watched("isend", state_->name, t.bytes());
  auto done = post_p2p(*state_, true, t, peer, "isend");
  return std::make_unique<NcclRequest>(state_, std::move(done), std::vector<Tensor>{t}, "isend",
                                       std::move(watched));
}

std::unique_ptr<CommRequest> NcclCommunicator::irecv(Tensor& t, int peer) {
  WatchedRequest watched("irecv", state_->name, t.bytes());
  auto done = post_p2p(*state_, false, t, peer, "irecv");
  return std::make_unique<NcclRequest>(state_, std::move(done), std::vector<Tensor>{t}, "irecv",
                                       std::move(watched));
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key, const std::string& name) {
  State& s = *state_;
  check_usable(s, "split");
  start_pending_p2p(s, "split");
  // The child's State first: NCCL may keep the name's pointer for the child's lifetime.
  std::shared_ptr<State> child;
  if (color >= 0) child = std::make_shared<State>(name, s.device, s.timeout_s, -1, 0);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  config.commName = child ? child->name.c_str() : nullptr;
  s.split_out = nullptr;
  const WatchedRequest watched("split", s.name, 0);
  const ncclResult_t r =
      ncclCommSplit(s.comm, color >= 0 ? color : NCCL_SPLIT_NOCOLOR, key, &s.split_out, &config);
  if (r != ncclSuccess && r != ncclInProgress)
    FAIL_ON_RESULT(s, "split", "ncclCommSplit failed: " + nccl_error_text(r, s.comm), r);
  // The split runs as a job of the parent; the child's handle appears when it is done.
  wait_until_ready(s, s.comm, "ncclCommSplit", "split");
  if (!child) return nullptr;
  child->comm = s.split_out;
  s.split_out = nullptr;
  TESSERA_CHECK(child->comm != nullptr, where(s, "split") + "NCCL returned no communicator for " +
                                            name + " (color " + std::to_string(color) + ")");
  wait_until_ready(*child, child->comm, "ncclCommSplit", "split");
  if (ncclCommUserRank(child->comm, &child->rank) != ncclSuccess ||
      ncclCommCount(child->comm, &child->size) != ncclSuccess)
    FAIL_AND_ABORT(*child, "split", "cannot read the new communicator's rank and size");
  publish_comm(*child);
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(std::move(child)));
}

void NcclCommunicator::hold_stream_for_testing(double seconds) {
  hold_stream(state_->stream, seconds);
}

void NcclCommunicator::hold_compute_stream_for_testing(double seconds) {
  hold_stream(cuda::compute_stream(), seconds);
}

}  // namespace tessera
