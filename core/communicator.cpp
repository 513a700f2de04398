// The default asynchronous all-reduce: blocking, with a handle that is already complete.
#include "core/communicator.h"

namespace tessera {

namespace {
class CompletedRequest final : public CommRequest {
 public:
  void wait() override {}
};
}  // namespace

std::unique_ptr<CommRequest> Communicator::all_reduce_async(Tensor& t, ReduceOp op) {
  all_reduce(t, op);
  return std::make_unique<CompletedRequest>();
}

}  // namespace tessera
