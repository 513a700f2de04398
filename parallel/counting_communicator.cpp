// Byte accounting around any Communicator; see the header for what "sent" means.
#include "parallel/counting_communicator.h"

#include <cstdlib>

namespace tessera {

namespace {
double bytes_of(const Tensor& t) {
  return static_cast<double>(t.bytes());
}
}  // namespace

void CountingCommunicator::abort(int exit_code) {
  inner_->abort(exit_code);
  std::abort();  // abort() of every Communicator ends the process; this is never reached
}

// Ring volumes: all-reduce 2(n-1)/n, all-gather and reduce-scatter (n-1)/n of the full buffer.
double CountingCommunicator::ring(double bytes) const {
  return static_cast<double>(size() - 1) / size() * bytes;
}

void CountingCommunicator::all_reduce(Tensor& t, ReduceOp op) {
  sent_ += ring(2 * bytes_of(t));
  inner_->all_reduce(t, op);
}

void CountingCommunicator::all_gather(Tensor& out, const Tensor& in) {
  sent_ += ring(bytes_of(out));
  inner_->all_gather(out, in);
}

void CountingCommunicator::reduce_scatter(Tensor& out, const Tensor& in, ReduceOp op) {
  sent_ += ring(bytes_of(in));
  inner_->reduce_scatter(out, in, op);
}

void CountingCommunicator::broadcast(Tensor& t, int root) {
  sent_ += ring(bytes_of(t));
  inner_->broadcast(t, root);
}

void CountingCommunicator::send(const Tensor& t, int peer) {
  sent_ += bytes_of(t);
  inner_->send(t, peer);
}

void CountingCommunicator::recv(Tensor& t, int peer) {
  inner_->recv(t, peer);
}

std::unique_ptr<CommRequest> CountingCommunicator::all_reduce_async(Tensor& t, ReduceOp op) {
  sent_ += ring(2 * bytes_of(t));
  return inner_->all_reduce_async(t, op);
}

std::unique_ptr<CommRequest> CountingCommunicator::all_gather_async(Tensor& out, const Tensor& in) {
  sent_ += ring(bytes_of(out));
  return inner_->all_gather_async(out, in);
}

std::unique_ptr<CommRequest> CountingCommunicator::reduce_scatter_async(Tensor& out,
                                                                        const Tensor& in,
                                                                        ReduceOp op) {
  sent_ += ring(bytes_of(in));
  return inner_->reduce_scatter_async(out, in, op);
}

std::unique_ptr<CommRequest> CountingCommunicator::isend(const Tensor& t, int peer) {
  sent_ += bytes_of(t);
  return inner_->isend(t, peer);
}

std::unique_ptr<CommRequest> CountingCommunicator::irecv(Tensor& t, int peer) {
  return inner_->irecv(t, peer);
}

}  // namespace tessera
