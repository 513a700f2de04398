// The blocking defaults of the asynchronous collectives, the completed handle they return, the
// string collectives, and the argument checks every implementation shares.
#include "core/communicator.h"

#include <algorithm>
#include <cstdint>

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

namespace {

void put_chars(int32_t* to, const std::string& text) {
  for (size_t i = 0; i < text.size(); ++i) to[i] = static_cast<unsigned char>(text[i]);
}

std::string get_chars(const int32_t* from, int64_t n) {
  std::string text;
  for (int64_t i = 0; i < n; ++i) text += static_cast<char>(from[i]);
  return text;
}

}  // namespace

std::string broadcast_string(Communicator& comm, const std::string& text, int root) {
  Tensor n({1}, DType::I32);
  n.data<int32_t>()[0] = static_cast<int32_t>(text.size());
  comm.broadcast(n, root);
  const int64_t length = n.data<int32_t>()[0];
  Tensor chars({std::max<int64_t>(length, 1)}, DType::I32);
  if (comm.rank() == root) put_chars(chars.data<int32_t>(), text);
  comm.broadcast(chars, root);
  return get_chars(chars.data<int32_t>(), length);
}

std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& text) {
  const int64_t ranks = comm.size();
  Tensor length({1}, DType::I32), lengths({ranks}, DType::I32);
  length.data<int32_t>()[0] = static_cast<int32_t>(text.size());
  comm.all_gather(lengths, length);
  const int32_t* n = lengths.data<int32_t>();
  const int64_t longest = std::max<int64_t>(*std::max_element(n, n + ranks), 1);
  Tensor mine({longest}, DType::I32), all({ranks * longest}, DType::I32);
  put_chars(mine.data<int32_t>(), text);
  comm.all_gather(all, mine);
  std::vector<std::string> texts;
  for (int64_t r = 0; r < ranks; ++r)
    texts.push_back(get_chars(all.data<int32_t>() + r * longest, n[r]));
  return texts;
}

void all_reduce_stream_ordered(Communicator& comm, Tensor& t, ReduceOp op) {
  if (comm.size() == 1) return;  // one rank's values are the result
  if (t.device() == Device::CPU)
    comm.all_reduce(t, op);
  else
    comm.all_reduce_async(t, op)->wait();
}

void all_gather_stream_ordered(Communicator& comm, Tensor& out, const Tensor& in) {
  if (out.device() == Device::CPU)
    comm.all_gather(out, in);
  else
    comm.all_gather_async(out, in)->wait();
}

void reduce_scatter_stream_ordered(Communicator& comm, Tensor& out, const Tensor& in) {
  if (out.device() == Device::CPU)
    comm.reduce_scatter(out, in, ReduceOp::Sum);
  else
    comm.reduce_scatter_async(out, in, ReduceOp::Sum)->wait();
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
