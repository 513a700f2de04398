// The one-rank group: copies for gathers and scatters, errors for point-to-point.
#include "parallel/local_communicator.h"

#include <cstdlib>

#include "core/error.h"

namespace tessera {

void LocalCommunicator::all_gather(Tensor& out, const Tensor& in) {
  if (out.raw() != in.raw()) copy_into(out, in);
}

void LocalCommunicator::reduce_scatter(Tensor& out, const Tensor& in, ReduceOp) {
  copy_into(out, in);
}

void LocalCommunicator::send(const Tensor&, int peer) {
  TESSERA_CHECK(false, "send to rank " + std::to_string(peer) + " in the one-rank group " + name_);
}

void LocalCommunicator::recv(Tensor&, int peer) {
  TESSERA_CHECK(false,
                "recv from rank " + std::to_string(peer) + " in the one-rank group " + name_);
}

std::unique_ptr<CommRequest> LocalCommunicator::isend(const Tensor& t, int peer) {
  send(t, peer);
  return nullptr;
}

std::unique_ptr<CommRequest> LocalCommunicator::irecv(Tensor& t, int peer) {
  recv(t, peer);
  return nullptr;
}

std::unique_ptr<Communicator> LocalCommunicator::split(int color, int, const std::string& name) {
  if (color < 0) return nullptr;
  return std::make_unique<LocalCommunicator>(name);
}

void LocalCommunicator::abort(int exit_code) {
  std::_Exit(exit_code);
}

}  // namespace tessera
