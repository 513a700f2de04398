// LocalCommunicator: the group of one rank. Every collective is the identity (all_reduce,
// broadcast, barrier) or a copy (all_gather, reduce_scatter); send and recv have no peer and
// fail; split gives another one-rank group. For a model on one rank without MPI: the tests and
// bench_train_step. (`tessera`'s groups, also those of one rank, are splits of its MPI or NCCL
// world.)
#pragma once

#include <string>

#include "core/communicator.h"

namespace tessera {

class LocalCommunicator final : public Communicator {
 public:
  explicit LocalCommunicator(std::string name = "local") : name_(std::move(name)) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return name_; }

  void all_reduce(Tensor&, ReduceOp) override {}
  void all_gather(Tensor& out, const Tensor& in) override;
  void reduce_scatter(Tensor& out, const Tensor& in, ReduceOp) override;
  void broadcast(Tensor&, int) override {}
  void send(const Tensor&, int peer) override;
  void recv(Tensor&, int peer) override;
  void barrier() override {}
  [[noreturn]] void abort(int exit_code) override;
  std::unique_ptr<CommRequest> isend(const Tensor& t, int peer) override;
  std::unique_ptr<CommRequest> irecv(Tensor& t, int peer) override;
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;

 private:
  std::string name_;
};

}  // namespace tessera
