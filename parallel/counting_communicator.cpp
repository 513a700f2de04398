// Byte accounting around any Communicator; see the header for what "sent" means.
#include "parallel/counting_communicator.h"

#include <cstdlib>

namespace tessera {

namespace {
double bytes_of(const Tensor& t) {
  return static_cast<double>(t.bytes());
}
}  // namespace

void CountingCommunicator::count(CommOp op, double payload, double sent) {
  CommCounter& c = counters_[static_cast<int>(op)];
  ++c.calls;
  c.payload_bytes += payload;
  c.sent_bytes += sent;
}

double CountingCommunicator::sent_bytes() const {
  double s = 0;
  for (const CommCounter& c : counters_) s += c.sent_bytes;
  return s;
}

void CountingCommunicator::abort(int exit_code) {
  inner_->abort(exit_code);
  std::abort();  // abort() of every Communicator ends the process; this is never reached
}

void CountingCommunicator::reset_counters() {
  for (CommCounter& c : counters_) c = CommCounter{};
}

// Ring volumes: all-reduce 2(n-1)/n, all-gather and reduce-scatter (n-1)/n of the full buffer.
double CountingCommunicator::ring(double bytes) const {
  return static_cast<double>(size() - 1) / size() * bytes;
}

void CountingCommunicator::all_reduce(Tensor& t, ReduceOp op) {
  count(CommOp::AllReduce, bytes_of(t), ring(2 * bytes_of(t)));
  inner_->all_reduce(t, op);
}

void CountingCommunicator::all_gather(Tensor& out, const Tensor& in) {
  count(CommOp::AllGather, bytes_of(out), ring(bytes_of(out)));
  inner_->all_gather(out, in);
}

void CountingCommunicator::reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op) {
  count(CommOp::ReduceScatter, bytes_of(in), ring(bytes_of(in)));
  inner_->reduce_scatter(out, in, op);
}

void CountingCommunicator::broadcast(Tensor& t, int root) {
  count(CommOp::Broadcast, bytes_of(t), ring(bytes_of(t)));
  inner_->broadcast(t, root);
}

void CountingCommunicator::send(const Tensor& t, int peer) {
  count(CommOp::Send, bytes_of(t), bytes_of(t));
  inner_->send(t, peer);
}

void CountingCommunicator::recv(Tensor& t, int peer) {
  count(CommOp::Recv, bytes_of(t), 0);
  inner_->recv(t, peer);
}

std::unique_ptr<CommRequest> CountingCommunicator::all_reduce_async(Tensor& t, ReduceOp op) {
  count(CommOp::AllReduce, bytes_of(t), ring(2 * bytes_of(t)));
  return inner_->all_reduce_async(t, op);
}

std::unique_ptr<CommRequest> CountingCommunicator::all_gather_async(Tensor& out, const Tensor& in) {
  count(CommOp::AllGather, bytes_of(out), ring(bytes_of(out)));
  return inner_->all_gather_async(out, in);
}

std::unique_ptr<CommRequest> CountingCommunicator::reduce_scatter_async(Tensor& out,
                                                                        const Tensor& in,
                                                                        ReduceOp op) {
  count(CommOp::ReduceScatter, bytes_of(in), ring(bytes_of(in)));
  return inner_->reduce_scatter_async(out, in, op);
}

std::unique_ptr<CommRequest> CountingCommunicator::isend(const Tensor& t, int peer) {
  count(CommOp::Send, bytes_of(t), bytes_of(t));
  return inner_->isend(t, peer);
}

std::unique_ptr<CommRequest> CountingCommunicator::irecv(Tensor& t, int peer) {
  count(CommOp::Recv, bytes_of(t), 0);
  return inner_->irecv(t, peer);
}

}  // namespace tessera
