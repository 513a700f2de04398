// A Communicator for tests that use few of its operations: rank, size and name as given, and
// every other operation refused with a logic_error naming it. A test derives from it and
// overrides the operations it expects.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include "core/communicator.h"

namespace tessera::test_support {

class RefusingCommunicator : public Communicator {
 public:
  // `expected`: what the test uses the group for, for the message ("only all_reduce").
  RefusingCommunicator(int rank, int size, std::string name, std::string expected)
      : rank_(rank), size_(size), name_(std::move(name)), expected_(std::move(expected)) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return name_; }
  void all_reduce(Tensor&, ReduceOp) override { refuse("all_reduce"); }
  void all_gather(Tensor&, const Tensor&) override { refuse("all_gather"); }
  void reduce_scatter(Tensor&, const Tensor&, ReduceOp) override { refuse("reduce_scatter"); }
  void broadcast(Tensor&, int) override { refuse("broadcast"); }
  void send(const Tensor&, int) override { refuse("send"); }
  void recv(Tensor&, int) override { refuse("recv"); }
  void barrier() override { refuse("barrier"); }
  [[noreturn]] void abort(int) override { refuse("abort"); }
  std::unique_ptr<CommRequest> isend(const Tensor&, int) override { refuse("isend"); }
  std::unique_ptr<CommRequest> irecv(Tensor&, int) override { refuse("irecv"); }
  std::unique_ptr<Communicator> split(int, int, const std::string&) override { refuse("split"); }

 private:
  [[noreturn]] void refuse(const char* op) const {
    throw std::logic_error("the test's " + name_ + " group was asked for " + op + "; " + expected_ +
                           " is expected here");
  }
  int rank_, size_;
  std::string name_, expected_;
};

}  // namespace tessera::test_support
