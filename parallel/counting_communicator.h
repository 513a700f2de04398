// CountingCommunicator: a Communicator that forwards every call to another and counts the
// bytes this rank sends. "Sent" is what each rank sends under the bandwidth-optimal
// (ring) algorithm for the call as issued: all-reduce 2(n-1)/n x S, all-gather and
// reduce-scatter (n-1)/n x S of the full buffer, send S (Thakur et al. 2005). It is the volume
// the Megatron formulas predict (bench/parallel_bench.cpp), not the bytes of whatever algorithm
// the MPI library picked.
#pragma once

#include <memory>

#include "core/communicator.h"

namespace tessera {

class CountingCommunicator final : public Communicator {
 public:
  explicit CountingCommunicator(std::unique_ptr<Communicator> inner) : inner_(std::move(inner)) {}

  double sent_bytes() const { return sent_; }  // since the last reset, over all operations
  void reset_counters() { sent_ = 0; }

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string name() const override { return inner_->name(); }
  void all_reduce(Tensor& t, ReduceOp op) override;
  void all_gather(Tensor& out, const Tensor& in) override;
  void reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op) override;
  void broadcast(Tensor& t, int root) override;
  void send(const Tensor& t, int peer) override;
  void recv(Tensor& t, int peer) override;
  void barrier() override { inner_->barrier(); }
  [[noreturn]] void abort(int exit_code) override;
  std::unique_ptr<CommRequest> all_reduce_async(Tensor& t, ReduceOp op) override;
  std::unique_ptr<CommRequest> all_gather_async(Tensor& out, const Tensor& in) override;
  std::unique_ptr<CommRequest> reduce_scatter_async(Tensor& out, const Tensor& in,
                                                    ReduceOp op) override;
  std::unique_ptr<CommRequest> isend(const Tensor& t, int peer) override;
  std::unique_ptr<CommRequest> irecv(Tensor& t, int peer) override;
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
    return inner_->split(color, key, name);
  }

 private:
  double ring(double bytes) const;
  std::unique_ptr<Communicator> inner_;
  double sent_ = 0;
};

}  // namespace tessera
