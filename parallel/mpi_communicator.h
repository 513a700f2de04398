// MpiCommunicator: a Communicator over an MPI communicator, for contiguous host (CPU) tensors.
// It reads and writes the caller's tensors in place and owns only its MPI_Comm (when `owns`).
// Callers may rely on: every MPI failure becomes an InternalError naming the call and the group;
// send/recv between a pair arrive in the order posted; reductions give every rank the same bits;
// send, recv, all_reduce and broadcast go in chunks of at most 1 GiB, so their tensors are limited
// only by memory, while all_gather and reduce_scatter take at most INT_MAX elements per rank (and
// say so). bf16 moves as raw bits; the blocking all_reduce and reduce_scatter sum it in float32 and
// round once (MPI has no bf16 type), the asynchronous reductions refuse it.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/communicator.h"

namespace tessera {

class MpiCommunicator final : public Communicator {
 public:
  // Puts MPI_ERRORS_RETURN on comm so that failures come back as codes, then caches rank and
  // size. With owns, the destructor frees comm.
  MpiCommunicator(MPI_Comm comm, std::string name, bool owns);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  // MPI_COMM_WORLD, named "world", not owned. MPI must be initialised.
  static std::unique_ptr<MpiCommunicator> world();

  MPI_Comm comm() const { return comm_; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return name_; }

  void all_reduce(Tensor& t, ReduceOp op) override;
  void all_gather(Tensor& out, const Tensor& in) override;
  void reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op) override;
  void broadcast(Tensor& t, int root) override;
  // One fixed tag: messages between a pair match in the order posted (MPI's non-overtaking rule).
  void send(const Tensor& t, int peer) override;
  // Throws InternalError when the message holds another number of elements than t.
  void recv(Tensor& t, int peer) override;
  void barrier() override;
  [[noreturn]] void abort(int exit_code) override;

  // The handles keep the tensors' buffers alive until complete; test() is what drives MPI's
  // progress on the CPU, so callers poll it between pieces of compute.
  std::unique_ptr<CommRequest> all_reduce_async(Tensor& t, ReduceOp op) override;
  std::unique_ptr<CommRequest> all_gather_async(Tensor& out, const Tensor& in) override;
  std::unique_ptr<CommRequest> reduce_scatter_async(Tensor& out, const Tensor& in,
                                                    ReduceOp op) override;
  std::unique_ptr<CommRequest> isend(const Tensor& t, int peer) override;
  std::unique_ptr<CommRequest> irecv(Tensor& t, int peer) override;

  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;

  // Largest element count of one MPI call in the chunked operations (default 2^30; a call also
  // moves at most 1 GiB). Tests lower it to reach the chunked path without allocating 2^31
  // elements; every rank must agree on it.
  static void set_max_chunk_elements_for_testing(int64_t n);
  static int64_t max_chunk_elements();

 private:
  MPI_Comm comm_;
  std::string name_;
  bool owns_;
  int rank_ = 0;
  int size_ = 1;
};

// The ranks of comm that share this node's memory (MPI_COMM_TYPE_SHARED), and this rank's place
// among them: how many threads a rank may use is the node's cores over `size`. Collective over
// comm (one split).
struct NodeLocalPlace {
  int rank = 0;
  int size = 1;
};
NodeLocalPlace node_local_place(MPI_Comm comm);

}  // namespace tessera
