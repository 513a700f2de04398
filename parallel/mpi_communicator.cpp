// MPI collectives and point-to-point over host tensors; every MPI error becomes an InternalError.
#include "parallel/mpi_communicator.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <vector>

#include "core/error.h"
#include "core/ops/cast.h"
#include "parallel/watchdog.h"

namespace tessera {

namespace {

// One tag for all point-to-point traffic: ordering between a pair then follows from MPI's
// non-overtaking rule alone, which the pipeline schedule relies on.
constexpr int kTag = 0;

std::atomic<int64_t> g_max_chunk_elements{int64_t{1} << 30};

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) {
    return "MPI error code " + std::to_string(code);
  }
  return std::string(text, static_cast<size_t>(length));
}

void check_mpi(int code, const char* call, const std::string& group, const char* file, int line) {
  if (code == MPI_SUCCESS) return;
  throw InternalError(std::string(file) + ":" + std::to_string(line) + ": " + call +
                      " failed in group " + group + ": " + mpi_error_string(code));
}

// MPI_Waitall/Testall report a failed request as MPI_ERR_IN_STATUS; the status says which error.
int first_status_error(int code, const std::vector<MPI_Status>& statuses) {
  if (code != MPI_ERR_IN_STATUS) return code;
  for (const MPI_Status& s : statuses) {
    if (s.MPI_ERROR != MPI_SUCCESS && s.MPI_ERROR != MPI_ERR_PENDING) return s.MPI_ERROR;
  }
  return code;
}

}  // namespace

// CHECK_MPI_IN names the group explicitly; CHECK_MPI is for members, where name_ is the group.
#define CHECK_MPI_IN(group, call) check_mpi((call), #call, (group), __FILE__, __LINE__)
#define CHECK_MPI(call) CHECK_MPI_IN(name_, call)

namespace {

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::F32:
      return MPI_FLOAT;
    case DType::F64:
      return MPI_DOUBLE;
    case DType::I32:
      return MPI_INT32_T;
    case DType::U16:
    case DType::BF16:  // moved as raw bits; reductions refuse it (check_reducible)
      return MPI_UINT16_T;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(ReduceOp op) {
  return op == ReduceOp::Sum ? MPI_SUM : MPI_MAX;
}

std::string where(const std::string& group, const char* op) {
  return std::string(op) + " in group " + group + ": ";
}

void check_operand(const Tensor& t, const std::string& group, const char* op) {
  TESSERA_CHECK(t.device() == Device::CPU, where(group, op) + "MPI moves host tensors, found a " +
                                               device_name(t.device()) + " tensor");
  TESSERA_CHECK(t.is_contiguous(), where(group, op) + "tensor of shape " + shape_str(t.shape()) +
                                       " is not contiguous");
}

// MPI has no bf16 type: summing its bits as uint16 would be silently wrong. (The blocking
// all_reduce and reduce_scatter widen bf16 to float32 themselves.)
void check_reducible(const Tensor& t, const std::string& group, const char* op) {
  check_operand(t, group, op);
  TESSERA_CHECK(t.dtype() != DType::BF16,
                where(group, op) + "bf16 cannot be reduced over MPI; reduce in f32 instead");
}

// The send buffer of an all-gather: MPI_IN_PLACE when `in` already is this rank's block of
// `out` (the ZeRO-1 parameter gather), else `in`.
const void* all_gather_source(const Tensor& out, const Tensor& in, int rank, int size,
                              const std::string& group) {
  check_operand(out, group, "all_gather");
  check_operand(in, group, "all_gather");
  const bool in_place = check_all_gather_args(out, in, rank, size, where(group, "all_gather"));
  TESSERA_CHECK(in.numel() <= INT_MAX, where(group, "all_gather") + std::to_string(in.numel()) +
                                           " elements per rank exceed MPI's int count");
  return in_place ? MPI_IN_PLACE : in.raw();
}

void check_reduce_scatter(const Tensor& out, const Tensor& in, int size, const std::string& group) {
  check_reducible(out, group, "reduce_scatter");
  check_reducible(in, group, "reduce_scatter");
  check_reduce_scatter_args(out, in, size, where(group, "reduce_scatter"));
  TESSERA_CHECK(out.numel() <= INT_MAX, where(group, "reduce_scatter") +
                                            std::to_string(out.numel()) +
                                            " elements per rank exceed MPI's int count");
}

// Calls f(byte pointer, first element, count) over pieces of at most max_chunk_elements() and
// at most 1 GiB: below MPI's int count, and below the 2 GiB messages that some transports and
// collective algorithms (which count bytes in an int) mishandle. (all_gather and reduce_scatter
// are not chunked: their blocks per rank are checked against the int count only.) An empty tensor
// still makes one call of count 0, so that a receive matches its send.
template <typename F>
void for_each_chunk(const Tensor& t, F&& f) {
  const int64_t max = std::min(MpiCommunicator::max_chunk_elements(),
                               (int64_t{1} << 30) / static_cast<int64_t>(dtype_size(t.dtype())));
  char* base = static_cast<char*>(t.raw());
  int64_t first = 0;
  do {
    const int count = static_cast<int>(std::min(max, t.numel() - first));
    f(base + first * static_cast<int64_t>(dtype_size(t.dtype())), first, count);
    first += count;
  } while (first < t.numel());
}

// A receive of `expected` elements at element `first` of a `total`-element tensor.
void check_received_count(const MPI_Status& status, MPI_Datatype type, int expected, int64_t first,
                          int64_t total, int peer, const std::string& group) {
  int found = 0;
  CHECK_MPI_IN(group, MPI_Get_count(&status, type, &found));
  if (found == expected) return;
  const std::string found_text =
      found == MPI_UNDEFINED ? "a message of a partial element" : std::to_string(first + found);
  fail_internal(__FILE__, __LINE__,
                "recv from rank " + std::to_string(peer) + " in group " + group + ": expected " +
                    std::to_string(total) + " elements, found " + found_text);
}

// The MPI_Requests of one logical operation (several when chunked). Holds the tensors so that
// their buffers outlive the transfer even if the caller drops them. The operation is in flight
// for the watchdog from construction (before the first piece is posted) until a wait() or test()
// sees it complete or fail, or the destructor has waited for it.
class MpiRequest final : public CommRequest {
 public:
  MpiRequest(const char* kind, std::string group, std::vector<Tensor> tensors, size_t bytes)
      : name_(std::move(group)), tensors_(std::move(tensors)), watched_(kind, name_, bytes) {}

  ~MpiRequest() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!done_ && !finalized) {
      MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE);
    }
  }

  // A send or a collective piece.
  void add(MPI_Request r) {
    requests_.push_back(r);
    receives_.push_back({-1, 0});
  }
  // A receive piece, whose element count is checked on completion.
  void add_receive(MPI_Request r, int expected, int64_t first, int64_t total, MPI_Datatype type,
                   int peer) {
    requests_.push_back(r);
    receives_.push_back({expected, first});
    total_ = total;
    type_ = type;
    peer_ = peer;
  }

  void wait() override {
    if (done_) return;
    std::vector<MPI_Status> statuses(requests_.size());
    const int n = static_cast<int>(requests_.size());
    const int code = MPI_Waitall(n, requests_.data(), statuses.data());
    finish();  // complete, or failed: a failed wait is not retried
    CHECK_MPI(first_status_error(code, statuses));
    check_receives(statuses);
  }

  bool test() override {
    if (done_) return true;
    std::vector<MPI_Status> statuses(requests_.size());
    int complete = 0;
    const int n = static_cast<int>(requests_.size());
    const int code = MPI_Testall(n, requests_.data(), &complete, statuses.data());
    if (code != MPI_SUCCESS) finish();
    CHECK_MPI(first_status_error(code, statuses));
    if (!complete) return false;
    finish();
    check_receives(statuses);
    return true;
  }

 private:
  struct Receive {
    int expected;  // -1: not a receive
    int64_t first;
  };

  // The operation completed or failed: either way it no longer waits, for the watchdog too, and
  // is not waited for again, not even by the destructor.
  void finish() {
    done_ = true;
    watched_.end();
  }

  void check_receives(const std::vector<MPI_Status>& statuses) const {
    for (size_t i = 0; i < receives_.size(); ++i) {
      if (receives_[i].expected < 0) continue;
      check_received_count(statuses[i], type_, receives_[i].expected, receives_[i].first, total_,
                           peer_, name_);
    }
  }

  std::string name_;
  std::vector<Tensor> tensors_;
  std::vector<MPI_Request> requests_;
  std::vector<Receive> receives_;
  int64_t total_ = 0;
  MPI_Datatype type_ = MPI_DATATYPE_NULL;
  int peer_ = -1;
  bool done_ = false;
  WatchedRequest watched_;  // members go after the destructor body: ends after its MPI_Waitall
};

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name, bool owns)
    : comm_(comm), name_(std::move(name)), owns_(owns) {
  int initialized = 0;
  CHECK_MPI(MPI_Initialized(&initialized));
  TESSERA_CHECK(initialized, "MpiCommunicator " + name_ + " created before MPI_Init");
  TESSERA_CHECK(comm_ != MPI_COMM_NULL, "MpiCommunicator " + name_ + " over MPI_COMM_NULL");
  CHECK_MPI(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  CHECK_MPI(MPI_Comm_rank(comm_, &rank_));
  CHECK_MPI(MPI_Comm_size(comm_, &size_));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_ && !finalized) MPI_Comm_free(&comm_);
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::world() {
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "world", false);
}

void MpiCommunicator::set_max_chunk_elements_for_testing(int64_t n) {
  TESSERA_CHECK(n >= 1 && n <= INT_MAX,
                "max chunk of " + std::to_string(n) + " elements outside [1, INT_MAX]");
  g_max_chunk_elements = n;
}

int64_t MpiCommunicator::max_chunk_elements() {
  return g_max_chunk_elements;
}

void MpiCommunicator::all_reduce(Tensor& t, ReduceOp op) {
  if (t.dtype() == DType::BF16) {
    // MPI has no bf16 type: reduced in float32 and rounded once (host bf16 training, TP > 1).
    check_operand(t, name_, "all_reduce");
    Tensor wide = ops::cast_to(t, DType::F32);
    all_reduce(wide, op);
    ops::cast(t, wide);
    return;
  }
  check_reducible(t, name_, "all_reduce");
  const WatchedRequest watched("all_reduce", name_, t.bytes());
  const MPI_Datatype type = mpi_type(t.dtype());
  for_each_chunk(t, [&](char* p, int64_t, int count) {
    CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, p, count, type, mpi_op(op), comm_));
  });
}

void MpiCommunicator::all_gather(Tensor& out, const Tensor& in) {
  const void* source = all_gather_source(out, in, rank_, size_, name_);
  const MPI_Datatype type = mpi_type(in.dtype());
  const int count = static_cast<int>(in.numel());
  const WatchedRequest watched("all_gather", name_, out.bytes());
  CHECK_MPI(MPI_Allgather(source, count, type, out.raw(), count, type, comm_));
}

void MpiCommunicator::reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op) {
  if (in.dtype() == DType::BF16 && out.dtype() == DType::BF16) {
    // As all_reduce: in float32, rounded once (host bf16 training with sequence parallelism).
    check_operand(in, name_, "reduce_scatter");
    check_operand(out, name_, "reduce_scatter");
    Tensor wide_out(out.shape(), DType::F32);
    reduce_scatter(wide_out, ops::cast_to(in, DType::F32), op);
    ops::cast(out, wide_out);
    return;
  }
  check_reduce_scatter(out, in, size_, name_);
  const int count = static_cast<int>(out.numel());
  const WatchedRequest watched("reduce_scatter", name_, in.bytes());
  CHECK_MPI(MPI_Reduce_scatter_block(in.raw(), out.raw(), count, mpi_type(in.dtype()), mpi_op(op),
                                     comm_));
}

void MpiCommunicator::broadcast(Tensor& t, int root) {
  check_operand(t, name_, "broadcast");
  check_group_member(root, size_, where(name_, "broadcast"), "root");
  const WatchedRequest watched("broadcast", name_, t.bytes());
  const MPI_Datatype type = mpi_type(t.dtype());
  for_each_chunk(
      t, [&](char* p, int64_t, int count) { CHECK_MPI(MPI_Bcast(p, count, type, root, comm_)); });
}

void MpiCommunicator::send(const Tensor& t, int peer) {
  check_operand(t, name_, "send");
  check_group_member(peer, size_, where(name_, "send"), "peer");
  const WatchedRequest watched("send", name_, t.bytes());
  const MPI_Datatype type = mpi_type(t.dtype());
  for_each_chunk(t, [&](char* p, int64_t, int count) {
    CHECK_MPI(MPI_Send(p, count, type, peer, kTag, comm_));
  });
}

void MpiCommunicator::recv(Tensor& t, int peer) {
  check_operand(t, name_, "recv");
  check_group_member(peer, size_, where(name_, "recv"), "peer");
  const WatchedRequest watched("recv", name_, t.bytes());
  const MPI_Datatype type = mpi_type(t.dtype());
  for_each_chunk(t, [&](char* p, int64_t first, int count) {
    MPI_Status status;
    CHECK_MPI(MPI_Recv(p, count, type, peer, kTag, comm_, &status));
    check_received_count(status, type, count, first, t.numel(), peer, name_);
  });
}

void MpiCommunicator::barrier() {
  const WatchedRequest watched("barrier", name_, 0);
  CHECK_MPI(MPI_Barrier(comm_));
}

void MpiCommunicator::abort(int exit_code) {
  MPI_Abort(comm_, exit_code);
  std::_Exit(exit_code);  // MPI_Abort may return on some implementations
}

std::unique_ptr<CommRequest> MpiCommunicator::all_reduce_async(Tensor& t, ReduceOp op) {
  check_reducible(t, name_, "all_reduce_async");
  auto request =
      std::make_unique<MpiRequest>("all_reduce_async", name_, std::vector<Tensor>{t}, t.bytes());
  const MPI_Datatype type = mpi_type(t.dtype());
  for_each_chunk(t, [&](char* p, int64_t, int count) {
    MPI_Request r;
    CHECK_MPI(MPI_Iallreduce(MPI_IN_PLACE, p, count, type, mpi_op(op), comm_, &r));
    request->add(r);
  });
  return request;
}

std::unique_ptr<CommRequest> MpiCommunicator::all_gather_async(Tensor& out, const Tensor& in) {
  const void* source = all_gather_source(out, in, rank_, size_, name_);
  auto request = std::make_unique<MpiRequest>("all_gather_async", name_,
                                              std::vector<Tensor>{out, in}, out.bytes());
  const MPI_Datatype type = mpi_type(in.dtype());
  const int count = static_cast<int>(in.numel());
  MPI_Request r;
  CHECK_MPI(MPI_Iallgather(source, count, type, out.raw(), count, type, comm_, &r));
  request->add(r);
  return request;
}

std::unique_ptr<CommRequest> MpiCommunicator::reduce_scatter_async(Tensor& out, const Tensor& in,
                                                                   ReduceOp op) {
  check_reduce_scatter(out, in, size_, name_);
  auto request = std::make_unique<MpiRequest>("reduce_scatter_async", name_,
                                              std::vector<Tensor>{out, in}, in.bytes());
  const int count = static_cast<int>(out.numel());
  MPI_Request r;
  CHECK_MPI(MPI_Ireduce_scatter_block(in.raw(), out.raw(), count, mpi_type(in.dtype()), mpi_op(op),
                                      comm_, &r));
  request->add(r);
  return request;
}

std::unique_ptr<CommRequest> MpiCommunicator::isend(const Tensor& t, int peer) {
  check_operand(t, name_, "isend");
  check_group_member(peer, size_, where(name_, "isend"), "peer");
  auto request = std::make_unique<MpiRequest>("isend", name_, std::vector<Tensor>{t}, t.bytes());
  const MPI_Datatype type = mpi_type(t.dtype());
  for_each_chunk(t, [&](char* p, int64_t, int count) {
    MPI_Request r;
    CHECK_MPI(MPI_Isend(p, count, type, peer, kTag, comm_, &r));
    request->add(r);
  });
  return request;
}

std::unique_ptr<CommRequest> MpiCommunicator::irecv(Tensor& t, int peer) {
  check_operand(t, name_, "irecv");
  check_group_member(peer, size_, where(name_, "irecv"), "peer");
  auto request = std::make_unique<MpiRequest>("irecv", name_, std::vector<Tensor>{t}, t.bytes());
  const MPI_Datatype type = mpi_type(t.dtype());
  for_each_chunk(t, [&](char* p, int64_t first, int count) {
    MPI_Request r;
    CHECK_MPI(MPI_Irecv(p, count, type, peer, kTag, comm_, &r));
    request->add_receive(r, count, first, t.numel(), type, peer);
  });
  return request;
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key, const std::string& name) {
  MPI_Comm sub = MPI_COMM_NULL;
  const WatchedRequest watched("split", name_, 0);
  CHECK_MPI(MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &sub));
  if (sub == MPI_COMM_NULL) return nullptr;
  return std::make_unique<MpiCommunicator>(sub, name, true);
}

NodeLocalPlace node_local_place(MPI_Comm comm) {
  const std::string group = "node-local (MPI_COMM_TYPE_SHARED)";
  MPI_Comm local = MPI_COMM_NULL;
  CHECK_MPI_IN(group, MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local));
  NodeLocalPlace place;
  CHECK_MPI_IN(group, MPI_Comm_rank(local, &place.rank));
  CHECK_MPI_IN(group, MPI_Comm_size(local, &place.size));
  CHECK_MPI_IN(group, MPI_Comm_free(&local));
  return place;
}

}  // namespace tessera
