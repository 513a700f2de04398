// Communicator: the only way core talks to other ranks. Implementations live in parallel/:
// MPI (host buffers), NCCL (device buffers, stream-ordered) and a size-1 one for a single
// process. Collectives are called by every rank of the group in the same order; buffers are
// contiguous tensors. Reductions sum in rank order so that results are deterministic.
#pragma once

#include <memory>
#include <string>

#include "core/tensor.h"

namespace tessera {

enum class ReduceOp { Sum, Max };

// Handle of an asynchronous operation; wait() returns once the buffers may be reused.
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // "tp", "dp", ... for messages

  virtual void all_reduce(Tensor& t, ReduceOp op) = 0;
  // out holds size() blocks of in.numel() elements, block r from rank r.
  virtual void all_gather(Tensor& out, const Tensor& in) = 0;
  // in holds size() blocks of out.numel() elements; rank r gets the reduction of block r.
  virtual void reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op) = 0;
  virtual void broadcast(Tensor& t, int root) = 0;
  virtual void send(const Tensor& t, int peer) = 0;
  virtual void recv(Tensor& t, int peer) = 0;
  virtual void barrier() = 0;
  [[noreturn]] virtual void abort(int exit_code) = 0;

  // Asynchronous all-reduce; the default runs it at once and returns a completed handle.
  virtual std::unique_ptr<CommRequest> all_reduce_async(Tensor& t, ReduceOp op);
};

}  // namespace tessera
