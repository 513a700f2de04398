// NcclCommunicator: a Communicator over an NCCL communicator, for contiguous device (CUDA)
// tensors of F32, F64, BF16 or I32 (U16 may be moved but not reduced). It owns its ncclComm_t
// and a CUDA stream of its own, and reads and writes the caller's tensors in place.
// Callers may rely on: every operation starts after the work already queued on the compute stream
// (cuda::compute_stream()); blocking forms return once the result is in place; asynchronous forms
// return at once and their handle's wait() makes the compute stream wait for them without blocking
// the host; a failed or silent peer becomes an InternalError, after at most timeout_s, at the next
// blocking call or test() of this communicator, which then aborts the NCCL communicator so that
// its kernels stop instead of hanging (a host wait on the compute stream elsewhere, such as
// Tensor::to, is not watched here; the armed Watchdog sees every operation until the GPU has
// completed it, parallel/watchdog.h). Plain C++ header: host code may include it; it is built
// only with the CUDA backend (TESSERA_WITH_CUDA).
#pragma once

#include <memory>
#include <string>

#include "core/communicator.h"

namespace tessera {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap` (the host world, e.g. MpiCommunicator): rank 0 creates NCCL's
  // unique id, bootstrap.broadcast hands it to every rank, each rank selects GPU `device`
  // (launcher's gpu_for) and joins. Ranks and size are those of bootstrap. timeout_s bounds every
  // wait of this communicator (initialisation included); past it the communicator is aborted and an
  // InternalError names the group, the rank and what timed out.
  static std::unique_ptr<NcclCommunicator> create(Communicator& bootstrap, int device,
                                                  double timeout_s, const std::string& name);
  // Finalizes and destroys the NCCL communicator (aborts it instead when it failed or when
  // finalizing outlasts timeout_s); never throws.
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override;
  int size() const override;
  std::string name() const override;
  int device() const;
  double timeout_s() const;
  // Bounds every later wait of this communicator (create's timeout_s until then).
  void set_timeout_s(double timeout_s);

  void all_reduce(Tensor& t, ReduceOp op) override;
  void all_gather(Tensor& out, const Tensor& in) override;
  void reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op) override;
  void broadcast(Tensor& t, int root) override;
  // A blocking send or receive to this rank itself waits for a partner that cannot come: post
  // isend and irecv and then wait for both instead.
  void send(const Tensor& t, int peer) override;
  void recv(Tensor& t, int peer) override;
  void barrier() override;
  // ncclCommAbort, then ends the process with exit_code (std::_Exit, as MpiCommunicator does after
  // MPI_Abort). Other ranks learn of it from their own deadlines or from the launcher's MPI abort.
  [[noreturn]] void abort(int exit_code) override;

  // Stream-ordered: the call returns once the operation is queued; wait() makes the compute stream
  // wait for it (the host does not block), test() says whether it has completed. The handles keep
  // the tensors' buffers alive.
  std::unique_ptr<CommRequest> all_reduce_async(Tensor& t, ReduceOp op) override;
  std::unique_ptr<CommRequest> all_gather_async(Tensor& out, const Tensor& in) override;
  std::unique_ptr<CommRequest> reduce_scatter_async(Tensor& out, const Tensor& in,
                                                    ReduceOp op) override;
  // Point-to-point operations are held back until the next wait() or test() of one of their
  // handles, or the next other operation of this communicator; then all held-back ones start
  // together in one NCCL group, after the compute stream's work up to that moment. A send and a
  // receive posted before waiting thus progress together, as MPI's would: started one by one on
  // one stream, a send could wait forever for a receive queued behind the peer's own send. A
  // caller that wants a send under way at once calls test() on its handle.
  std::unique_ptr<CommRequest> isend(const Tensor& t, int peer) override;
  std::unique_ptr<CommRequest> irecv(Tensor& t, int peer) override;

  // ncclCommSplit; color < 0 joins no group (NCCL_SPLIT_NOCOLOR) and gets nullptr. The new
  // communicator has its own stream and this one's device and timeout.
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;

  // Tests only: queue a kernel that keeps this communicator's stream, or the compute stream, busy
  // for `seconds`, so that a missing stream dependency shows as a wrong result or a timeout.
  void hold_stream_for_testing(double seconds);
  static void hold_compute_stream_for_testing(double seconds);

  struct State;  // the NCCL handle, stream and pending point-to-point operations (.cu only)

 private:
  explicit NcclCommunicator(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

}  // namespace tessera
