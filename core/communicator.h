// Communicator: the only way core talks to other ranks. Implementations live in parallel/:
// MPI (host buffers), NCCL (device buffers, stream-ordered) and a size-1 one for a single
// process. Collectives are called by every rank of the group in the same order; buffers are
// contiguous tensors. Every rank of a group receives bitwise the same result of a reduction,
// and a given group reduces in a fixed order, so runs are deterministic.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tessera {

enum class ReduceOp { Sum, Max };

// Handle of an asynchronous operation. wait() returns once the buffers may be reused: on the
// host at once, on a GPU in the order of the compute stream (the stream waits for the operation;
// the host goes on). test() makes progress and says whether the operation has completed.
// Destroying a handle that was not waited for waits. An implementation may hold an operation back
// until one of these calls (NCCL's point-to-point operations wait to start as one group,
// parallel/nccl_communicator.h): so test() also starts it, and the pipeline calls it for that.
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  virtual void wait() = 0;
  virtual bool test() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // "tp", "dp", ... for messages

  virtual void all_reduce(Tensor& t, ReduceOp op) = 0;
  // out holds size() blocks of in.numel() elements, block r from rank r. `in` may be this
  // rank's own block of `out` (in place); no other overlap is allowed.
  virtual void all_gather(Tensor& out, const Tensor& in) = 0;
  // in holds size() blocks of out.numel() elements; rank r gets the reduction of block r.
  virtual void reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op) = 0;
  virtual void broadcast(Tensor& t, int root) = 0;
  virtual void send(const Tensor& t, int peer) = 0;
  virtual void recv(Tensor& t, int peer) = 0;
  virtual void barrier() = 0;
  [[noreturn]] virtual void abort(int exit_code) = 0;

  // Asynchronous forms: the buffers must stay alive and untouched until the handle's wait().
  // The defaults run the blocking form at once and return a completed handle.
  virtual std::unique_ptr<CommRequest> all_reduce_async(Tensor& t, ReduceOp op);
  virtual std::unique_ptr<CommRequest> all_gather_async(Tensor& out, const Tensor& in);
  virtual std::unique_ptr<CommRequest> reduce_scatter_async(Tensor& out, const Tensor& in,
                                                            ReduceOp op);
  // Point-to-point without blocking, so that neighbouring pipeline stages can post a send and
  // a receive together and never deadlock. No default: a blocking send could.
  virtual std::unique_ptr<CommRequest> isend(const Tensor& t, int peer) = 0;
  virtual std::unique_ptr<CommRequest> irecv(Tensor& t, int peer) = 0;

  // The ranks that pass the same color >= 0 form a new group, ordered by key (then by rank);
  // a rank passing color < 0 gets nullptr. Collective over this group.
  virtual std::unique_ptr<Communicator> split(int color, int key, const std::string& name) = 0;
};

// A handle that is already complete.
std::unique_ptr<CommRequest> completed_request();

// An all-reduce in the order of the device's work, for the model's tensor-parallel reductions:
// a GPU tensor's is queued (all_reduce_async, then wait: the compute stream waits for it, the
// host goes on queueing kernels, as it does between them); a host tensor's blocks (all_reduce).
// Nothing in a group of one.
void all_reduce_stream_ordered(Communicator& comm, Tensor& t, ReduceOp op);
// The same for the sequence-parallel layers' collectives: out = every rank's `in`, in rank order
// along dimension 0; out = this rank's block (along dimension 0) of the sum of every rank's `in`.
void all_gather_stream_ordered(Communicator& comm, Tensor& out, const Tensor& in);
void reduce_scatter_stream_ordered(Communicator& comm, Tensor& out, const Tensor& in);

// Strings between the ranks of a host group (their bytes carried as int32 elements): root's
// text on every rank; every rank's text, in rank order, on every rank.
std::string broadcast_string(Communicator& comm, const std::string& text, int root);
std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& text);

// Argument checks every implementation makes, with messages that start with `where` ("all_gather
// in group dp: "). InternalError when they fail.
// all_gather: one dtype, out = size() blocks of in.numel(), and `in` either exactly this rank's
// block of `out` (returns true: in place) or not overlapping it (returns false).
bool check_all_gather_args(const Tensor& out, const Tensor& in, int rank, int size,
                           const std::string& where);
// reduce_scatter: one dtype, in = size() blocks of out.numel(), no overlap.
void check_reduce_scatter_args(const Tensor& out, const Tensor& in, int size,
                               const std::string& where);
// A root or peer rank r of a group of `size`; role names the argument ("root", "peer").
void check_group_member(int r, int size, const std::string& where, const char* role);

}  // namespace tessera
