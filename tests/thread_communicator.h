// Test-only: the ranks of a group as threads of one process. Every all_reduce, all_gather and
// reduce_scatter meets at a barrier and reduces in rank order (so results are deterministic);
// other collectives are not needed by the tests that use it and fail loudly. run_ranks() runs one
// function per rank and rethrows the first exception any rank raised.
#pragma once

#include <algorithm>
#include <barrier>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/communicator.h"

namespace tessera::test_support {

class ThreadGroup {
 public:
  explicit ThreadGroup(int size) : slots_(static_cast<size_t>(size)), barrier_(size) {}
  int size() const { return static_cast<int>(slots_.size()); }

  void all_reduce(int rank, Tensor& t, ReduceOp op) {
    slots_[static_cast<size_t>(rank)] = &t;
    barrier_.arrive_and_wait();
    check_dtype(t);
    Tensor result = slots_[0]->clone();
    for (size_t r = 1; r < slots_.size(); ++r) {
      if (t.dtype() == DType::F32)
        combine(result.data<float>(), slots_[r]->data<float>(), t.numel(), op);
      else
        combine(result.data<double>(), slots_[r]->data<double>(), t.numel(), op);
    }
    barrier_.arrive_and_wait();  // every rank has read every slot before any is overwritten
    copy_into(t, result);
  }

  // out = every rank's `in`, in rank order.
  void all_gather(int rank, Tensor& out, const Tensor& in) {
    inputs_[static_cast<size_t>(rank)] = &in;
    barrier_.arrive_and_wait();
    const int64_t n = in.numel();
    Tensor flat = out.view({out.numel()});
    for (size_t r = 0; r < inputs_.size(); ++r) {
      Tensor block = flat.slice0(static_cast<int64_t>(r) * n, static_cast<int64_t>(r + 1) * n);
      copy_into(block, inputs_[r]->view({n}));
    }
    barrier_.arrive_and_wait();
  }

  // out = this rank's block of the sum of every rank's `in`, summed in rank order.
  void reduce_scatter(int rank, Tensor& out, const Tensor& in) {
    inputs_[static_cast<size_t>(rank)] = &in;
    barrier_.arrive_and_wait();
    const int64_t n = out.numel(), at = rank * n;
    check_dtype(in);
    const auto block = [&](size_t r) { return inputs_[r]->view({in.numel()}).slice0(at, at + n); };
    Tensor result = block(0).clone();
    for (size_t r = 1; r < inputs_.size(); ++r) {
      if (in.dtype() == DType::F32)
        combine(result.data<float>(), block(r).data<float>(), n, ReduceOp::Sum);
      else
        combine(result.data<double>(), block(r).data<double>(), n, ReduceOp::Sum);
    }
    barrier_.arrive_and_wait();
    copy_into(out, result.view(out.shape()));
  }

 private:
  static void check_dtype(const Tensor& t) {
    if (t.dtype() != DType::F32 && t.dtype() != DType::F64)
      throw std::logic_error("ThreadGroup: reduces float32 and float64 only, found " +
                             dtype_name(t.dtype()));
  }
  template <typename T>
  static void combine(T* acc, const T* x, int64_t n, ReduceOp op) {
    for (int64_t i = 0; i < n; ++i)
      acc[i] = op == ReduceOp::Sum ? acc[i] + x[i] : std::max(acc[i], x[i]);
  }
  std::vector<Tensor*> slots_;
  std::vector<const Tensor*> inputs_ = std::vector<const Tensor*>(slots_.size());
  std::barrier<> barrier_;
};

class ThreadCommunicator final : public Communicator {
 public:
  ThreadCommunicator(ThreadGroup& group, int rank) : group_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return group_.size(); }
  std::string name() const override { return "tp"; }
  void all_reduce(Tensor& t, ReduceOp op) override { group_.all_reduce(rank_, t, op); }
  void all_gather(Tensor& out, const Tensor& in) override { group_.all_gather(rank_, out, in); }
  void reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op) override {
    if (op != ReduceOp::Sum) unused("reduce_scatter of another op than Sum");
    group_.reduce_scatter(rank_, out, in);
  }
  void broadcast(Tensor&, int) override { unused("broadcast"); }
  void send(const Tensor&, int) override { unused("send"); }
  void recv(Tensor&, int) override { unused("recv"); }
  void barrier() override { unused("barrier"); }
  [[noreturn]] void abort(int) override { std::abort(); }
  std::unique_ptr<CommRequest> isend(const Tensor&, int) override { unused("isend"); }
  std::unique_ptr<CommRequest> irecv(Tensor&, int) override { unused("irecv"); }
  std::unique_ptr<Communicator> split(int, int, const std::string&) override { unused("split"); }

 private:
  [[noreturn]] static void unused(const char* what) {
    throw std::logic_error(std::string("ThreadCommunicator: ") + what + " is not implemented");
  }
  ThreadGroup& group_;
  int rank_;
};

// Runs body(comm) on `size` threads, one per rank of a fresh group.
inline void run_ranks(int size, const std::function<void(Communicator&)>& body) {
  ThreadGroup group(size);
  std::vector<std::exception_ptr> errors(static_cast<size_t>(size));
  std::vector<std::thread> ranks;
  for (int r = 0; r < size; ++r) {
    ranks.emplace_back([&, r] {
      try {
        ThreadCommunicator comm(group, r);
        body(comm);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  }
  for (std::thread& t : ranks) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace tessera::test_support
