// The blocking defaults of the asynchronous collectives, the completed handle they return, and
// the argument checks every implementation shares.
#include "core/communicator.h"

#include "core/error.h"

namespace tessera {

namespace {
class CompletedRequest final : public CommRequest {
 public:
  void wait() override {}
  bool test() override { return true; }
};
}  // namespace

std::unique_ptr<CommRequest> completed_request() {
  return std::make_unique<CompletedRequest>();
}

std::unique_ptr<CommRequest> Communicator::all_reduce_async(Tensor& t, ReduceOp op) {
  all_reduce(t, op);
  return completed_request();
}

std::unique_ptr<CommRequest> Communicator::all_gather_async(Tensor& out, const Tensor& in) {
  all_gather(out, in);
  return completed_request();
}

std::unique_ptr<CommRequest> Communicator::reduce_scatter_async(Tensor& out, const Tensor& in,
                                                                ReduceOp op) {
  reduce_scatter(out, in, op);
  return completed_request();
}

bool check_all_gather_args(const Tensor& out, const Tensor& in, int rank, int size,
                           const std::string& where) {
  TESSERA_CHECK(out.dtype() == in.dtype(), where + "out holds " + dtype_name(out.dtype()) +
                                               ", in holds " + dtype_name(in.dtype()));
  TESSERA_CHECK(out.numel() == size * in.numel(),
                where + "out holds " + std::to_string(out.numel()) + " elements, expected " +
                    std::to_string(size) + " x " + std::to_string(in.numel()));
  const char* own_block = static_cast<const char*>(out.raw()) + rank * in.bytes();
  if (in.raw() == own_block) return true;
  TESSERA_CHECK(!overlaps(out, in), where + "in overlaps out other than as this rank's block");
  return false;
}

void check_reduce_scatter_args(const Tensor& out, const Tensor& in, int size,
                               const std::string& where) {
  TESSERA_CHECK(out.dtype() == in.dtype(), where + "out holds " + dtype_name(out.dtype()) +
                                               ", in holds " + dtype_name(in.dtype()));
  TESSERA_CHECK(in.numel() == size * out.numel(),
                where + "in holds " + std::to_string(in.numel()) + " elements, expected " +
                    std::to_string(size) + " x " + std::to_string(out.numel()));
  TESSERA_CHECK(!overlaps(out, in), where + "in and out overlap");
}

void check_group_member(int r, int size, const std::string& where, const char* role) {
  TESSERA_CHECK(r >= 0 && r < size, where + role + " " + std::to_string(r) + " outside [0, " +
                                        std::to_string(size) + ")");
}

}  // namespace tessera
