// The NCCL communicator on one GPU, as a world of one rank: NCCL refuses two ranks of one group
// on one GPU, so the multi-rank semantics are tested with the MPI backend (tests/test_comm.cpp).
// Every call still goes through NCCL on the communicator's own stream. To show that results are
// ordered by stream dependencies and not by luck, tests keep the NCCL stream or the compute
// stream busy with a kernel (hold_*_for_testing) before the operation: a missing dependency then
// reads a stale buffer or returns too early. Values of a one-rank group come back bitwise equal.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/error.h"
#include "core/tensor.h"
#include "parallel/local_communicator.h"
#include "parallel/nccl_communicator.h"
#include "tests/expect_error.h"
#include "tests/gpu_support.h"

namespace tessera {
namespace {

using test_support::expect_internal_error;

using gpu_test::dtype_test_name;

constexpr double kTimeoutS = 60;
// Long next to launching an operation (microseconds), short for a test run.
constexpr double kHoldS = 1.0;
constexpr int64_t kElements = 1 << 20;

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// `n` values of `dtype` from `seed`, none zero, so that a buffer left zeroed shows.
Tensor host_values(DType dtype, int64_t n, uint64_t seed) {
  Tensor t({n}, dtype);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> real(1.0f, 100.0f);
  for (int64_t i = 0; i < n; ++i) {
    const float sign = (rng() & 1) ? 1.0f : -1.0f;
    switch (dtype) {
      case DType::F32:
        t.data<float>()[i] = sign * real(rng);
        break;
      case DType::F64:
        t.data<double>()[i] = sign * (static_cast<double>(real(rng)) + 1e-9);
        break;
      case DType::BF16:
        t.data<bf16>()[i] = to_bf16(sign * real(rng));
        break;
      case DType::I32:
        t.data<int32_t>()[i] = static_cast<int32_t>(sign * real(rng) * 1e6f);
        break;
      case DType::U16:
        t.data<uint16_t>()[i] = static_cast<uint16_t>(1 + rng() % 65535);
        break;
    }
  }
  return t;
}

// Bitwise equality; reports the first differing element.
void expect_same_bytes(const Tensor& actual, const Tensor& expected, const std::string& what) {
  ASSERT_EQ(actual.device(), Device::CPU) << what;
  ASSERT_EQ(actual.bytes(), expected.bytes()) << what;
  const size_t element = dtype_size(expected.dtype());
  const auto* a = static_cast<const unsigned char*>(actual.raw());
  const auto* e = static_cast<const unsigned char*>(expected.raw());
  for (size_t i = 0; i < expected.bytes(); i += element) {
    if (std::memcmp(a + i, e + i, element) != 0) {
      ADD_FAILURE() << what << ": element " << i / element << " differs from the input";
      return;
    }
  }
}

std::unique_ptr<NcclCommunicator> make_world(const std::string& name, double timeout_s) {
  LocalCommunicator bootstrap("bootstrap");
  return NcclCommunicator::create(bootstrap, 0, timeout_s, name);
}

// One world per suite (creating one takes a while); tests that break theirs make their own.
std::unique_ptr<NcclCommunicator>& shared_world() {
  static std::unique_ptr<NcclCommunicator> world;
  return world;
}

class NcclWorldTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    try {
      shared_world() = make_world("world", kTimeoutS);
      // NCCL connects and loads its kernels at the first operation; later timings exclude it.
      Tensor warm({1}, DType::F32, Device::CUDA);
      shared_world()->all_reduce(warm, ReduceOp::Sum);
    } catch (const std::exception& e) {
      shared_world().reset();
      ADD_FAILURE() << "creating the NCCL world: " << e.what();
    }
  }
  static void TearDownTestSuite() { shared_world().reset(); }
  void SetUp() override { ASSERT_NE(shared_world(), nullptr) << "no NCCL world (see above)"; }
  NcclCommunicator& world() { return *shared_world(); }
};

class NcclReductionTest : public NcclWorldTest, public ::testing::WithParamInterface<DType> {};
class NcclMovementTest : public NcclWorldTest, public ::testing::WithParamInterface<DType> {};

TEST_F(NcclWorldTest, CreateGivesOneRankGroupWithTheGivenNameDeviceAndTimeout) {
  EXPECT_EQ(world().rank(), 0);
  EXPECT_EQ(world().size(), 1);
  EXPECT_EQ(world().name(), "world");
  EXPECT_EQ(world().device(), 0);
  EXPECT_EQ(world().timeout_s(), kTimeoutS);
}

TEST_P(NcclReductionTest, AllReduceSumAndMaxLeaveOneRanksValuesBitwiseUnchanged) {
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Max}) {
    const Tensor host = host_values(GetParam(), 4099, 1);
    Tensor t = host.to(Device::CUDA);
    world().all_reduce(t, op);
    expect_same_bytes(t.to(Device::CPU), host, op == ReduceOp::Sum ? "sum" : "max");
  }
}

TEST_P(NcclReductionTest, AllReduceAsyncThenWaitLeavesValuesBitwiseUnchanged) {
  const Tensor host = host_values(GetParam(), 4099, 2);
  Tensor t = host.to(Device::CUDA);
  auto request = world().all_reduce_async(t, ReduceOp::Sum);
  request->wait();
  expect_same_bytes(t.to(Device::CPU), host, "all_reduce_async");
}

TEST_P(NcclReductionTest, ReduceScatterOutOfPlaceWritesTheOnlyBlock) {
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Max}) {
    const Tensor host = host_values(GetParam(), 4099, 3);
    const Tensor in = host.to(Device::CUDA);
    Tensor out({4099}, GetParam(), Device::CUDA);
    world().reduce_scatter(out, in, op);
    expect_same_bytes(out.to(Device::CPU), host, op == ReduceOp::Sum ? "sum" : "max");
  }
}

INSTANTIATE_TEST_SUITE_P(ReducibleTypes, NcclReductionTest,
                         ::testing::Values(DType::F32, DType::F64, DType::BF16, DType::I32),
                         dtype_test_name);

TEST_P(NcclMovementTest, AllGatherOutOfPlaceWritesTheOnlyBlock) {
  const Tensor host = host_values(GetParam(), 4099, 4);
  const Tensor in = host.to(Device::CUDA);
  Tensor out({4099}, GetParam(), Device::CUDA);
  world().all_gather(out, in);
  expect_same_bytes(out.to(Device::CPU), host, "all_gather");
}

TEST_P(NcclMovementTest, AllGatherInPlaceKeepsThisRanksBlock) {
  const Tensor host = host_values(GetParam(), 4099, 5);
  Tensor out = host.to(Device::CUDA);
  const Tensor own_block = out.slice0(0, 4099);  // the same memory: in place
  world().all_gather(out, own_block);
  expect_same_bytes(out.to(Device::CPU), host, "all_gather in place");
}

TEST_P(NcclMovementTest, BroadcastFromRankZeroKeepsValues) {
  const Tensor host = host_values(GetParam(), 4099, 6);
  Tensor t = host.to(Device::CUDA);
  world().broadcast(t, 0);
  expect_same_bytes(t.to(Device::CPU), host, "broadcast");
}

// NCCL sends to its own rank when the send and the receive are in one group, which is what
// isend/irecv do until the first wait. (A blocking send to self could never be matched.)
TEST_P(NcclMovementTest, IsendAndIrecvToSelfDeliverTheTensor) {
  const Tensor host = host_values(GetParam(), 4099, 7);
  const Tensor sent = host.to(Device::CUDA);
  Tensor received({4099}, GetParam(), Device::CUDA);
  auto send = world().isend(sent, 0);
  auto recv = world().irecv(received, 0);
  recv->wait();
  send->wait();
  expect_same_bytes(received.to(Device::CPU), host, "irecv from self");
}

TEST_P(NcclMovementTest, DroppedPointToPointHandlesStillComplete) {
  const Tensor host = host_values(GetParam(), 4099, 8);
  const Tensor sent = host.to(Device::CUDA);
  Tensor received({4099}, GetParam(), Device::CUDA);
  {
    auto send = world().isend(sent, 0);
    auto recv = world().irecv(received, 0);
  }  // handles destroyed unwaited: their destructors wait
  expect_same_bytes(received.to(Device::CPU), host, "irecv from self, handle dropped");
}

INSTANTIATE_TEST_SUITE_P(AllTypes, NcclMovementTest,
                         ::testing::Values(DType::F32, DType::F64, DType::BF16, DType::I32,
                                           DType::U16),
                         dtype_test_name);

// compute (copy in) -> comm -> compute (copy out), no kernel of our own on the compute path:
// wait() must make the compute stream's copy wait for the NCCL stream, held busy meanwhile.
TEST_F(NcclWorldTest, CopiesOnTheComputeStreamAroundAsyncAllGatherSeeItsResult) {
  const Tensor host = host_values(DType::F32, kElements, 9);
  const Tensor in = host.to(Device::CUDA);
  Tensor out({kElements}, DType::F32, Device::CUDA);
  Tensor copy({kElements}, DType::F32, Device::CUDA);
  const Clock::time_point start = Clock::now();
  world().hold_stream_for_testing(kHoldS);
  auto request = world().all_gather_async(out, in);
  EXPECT_FALSE(request->test()) << "complete while its stream is still held";
  request->wait();
  copy_into(copy, out);  // device-to-device on the compute stream
  const Tensor back = copy.to(Device::CPU);
  EXPECT_GE(seconds_since(start), 0.9 * kHoldS) << "the copy did not wait for the NCCL stream";
  expect_same_bytes(back, host, "copy of the all_gather's output");
  EXPECT_TRUE(request->test());
}

TEST_F(NcclWorldTest, CopiesOnTheComputeStreamAroundAsyncReduceScatterSeeItsResult) {
  const Tensor host = host_values(DType::F32, kElements, 10);
  const Tensor in = host.to(Device::CUDA);
  Tensor out({kElements}, DType::F32, Device::CUDA);
  world().hold_stream_for_testing(kHoldS);
  auto request = world().reduce_scatter_async(out, in, ReduceOp::Sum);
  request->wait();
  expect_same_bytes(out.to(Device::CPU), host, "reduce_scatter_async's output");
}

TEST_F(NcclWorldTest, AsyncAllReduceCompletesOnlyAfterEarlierWorkOnItsStream) {
  Tensor t = host_values(DType::F32, kElements, 11).to(Device::CUDA);
  const Clock::time_point start = Clock::now();
  world().hold_stream_for_testing(kHoldS);
  auto request = world().all_reduce_async(t, ReduceOp::Sum);
  EXPECT_LT(seconds_since(start), 0.5 * kHoldS) << "all_reduce_async blocked the host";
  EXPECT_FALSE(request->test());
  request->wait();
  device_synchronize();  // the compute stream, which now waits for the all-reduce
  EXPECT_GE(seconds_since(start), 0.9 * kHoldS) << "wait() did not order the compute stream";
  EXPECT_TRUE(request->test());
}

// comm after compute: the compute stream zeroes `in` only after a held second; a collective that
// did not wait for the compute stream would gather the old values.
TEST_F(NcclWorldTest, BlockingAllGatherWaitsForEarlierComputeStreamWork) {
  Tensor in = host_values(DType::F32, kElements, 12).to(Device::CUDA);
  Tensor out = host_values(DType::F32, kElements, 13).to(Device::CUDA);
  const Clock::time_point start = Clock::now();
  NcclCommunicator::hold_compute_stream_for_testing(kHoldS);
  in.zero();  // queued on the compute stream behind the hold; the host goes on at once
  world().all_gather(out, in);
  EXPECT_GE(seconds_since(start), 0.9 * kHoldS) << "all_gather returned before it could run";
  expect_same_bytes(out.to(Device::CPU), Tensor({kElements}, DType::F32), "gather of zeroed in");
}

TEST_F(NcclWorldTest, BarrierReturns) {
  world().barrier();
  world().barrier();
}

TEST_F(NcclWorldTest, SplitWithAColorGivesAWorkingOneRankGroup) {
  std::unique_ptr<Communicator> tp = world().split(0, 0, "tp");
  ASSERT_NE(tp, nullptr);
  EXPECT_EQ(tp->rank(), 0);
  EXPECT_EQ(tp->size(), 1);
  EXPECT_EQ(tp->name(), "tp");
  const Tensor host = host_values(DType::BF16, 4099, 14);
  const Tensor in = host.to(Device::CUDA);
  Tensor out({4099}, DType::BF16, Device::CUDA);
  tp->all_gather(out, in);
  expect_same_bytes(out.to(Device::CPU), host, "all_gather over the split group");
}

TEST_F(NcclWorldTest, SplitWithNegativeColorGivesNullptr) {
  EXPECT_EQ(world().split(-1, 0, "none"), nullptr);
  world().barrier();  // the parent still works
}

TEST_F(NcclWorldTest, HostTensorsAreRefusedWithAMessageNamingTheCall) {
  Tensor host({16}, DType::F32);
  Tensor device({16}, DType::F32, Device::CUDA);
  expect_internal_error([&] { world().all_reduce(host, ReduceOp::Sum); },
                        {"all_reduce", "group world", "cpu tensor"});
  expect_internal_error([&] { world().all_gather(host, device); }, {"all_gather", "cpu tensor"});
  expect_internal_error([&] { world().reduce_scatter_async(device, host, ReduceOp::Max); },
                        {"reduce_scatter_async", "cpu tensor"});
  expect_internal_error([&] { world().broadcast(host, 0); }, {"broadcast", "cpu tensor"});
  expect_internal_error([&] { world().isend(host, 0); }, {"isend", "cpu tensor"});
  world().barrier();  // a refused call leaves the communicator usable
}

TEST_F(NcclWorldTest, BadArgumentsAreRefusedBeforeReachingNccl) {
  Tensor ids({16}, DType::U16, Device::CUDA);
  Tensor t({16}, DType::F32, Device::CUDA);
  Tensor wider({32}, DType::F32, Device::CUDA);
  expect_internal_error([&] { world().all_reduce(ids, ReduceOp::Sum); },
                        {"all_reduce", "uint16 cannot be reduced"});
  expect_internal_error([&] { world().broadcast(t, 1); }, {"broadcast", "root 1 outside [0, 1)"});
  expect_internal_error([&] { world().irecv(t, -1); }, {"irecv", "peer -1 outside [0, 1)"});
  expect_internal_error([&] { world().all_gather(wider, t); },
                        {"all_gather", "out holds 32 elements, expected 1 x 16"});
  expect_internal_error([&] { world().reduce_scatter(t, t, ReduceOp::Sum); },
                        {"reduce_scatter", "in and out overlap"});
}

TEST(NcclTimeoutTest, OperationPastTheDeadlineThrowsTimedOutAndAbortsTheCommunicator) {
  std::unique_ptr<NcclCommunicator> slow = make_world("slow", kTimeoutS);
  Tensor t({16}, DType::F32, Device::CUDA);
  slow->all_reduce(t, ReduceOp::Sum);  // NCCL's lazy setup, under the long deadline
  slow->set_timeout_s(0.25);
  slow->hold_stream_for_testing(2.0);  // stands in for a peer that never arrives
  // A peer that never arrives is a fault outside this rank (exit 5), not a bug.
  test_support::expect_communication_error(
      [&] { slow->all_reduce(t, ReduceOp::Sum); },
      {"all_reduce in group slow (rank 0 of 1)", "timed out after 0.25 s",
       "waiting for the operation to complete", "aborted", "NCCL_DEBUG=INFO"});
  expect_internal_error([&] { slow->barrier(); }, {"barrier", "aborted earlier", "timed out"});
  const Clock::time_point start = Clock::now();
  slow.reset();
  EXPECT_LT(seconds_since(start), 30.0) << "destroying an aborted communicator";
}

TEST(NcclCommunicatorDeathTest, AbortEndsTheProcessWithTheExitCode) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // re-executes: no fork of a CUDA process
  EXPECT_EXIT(
      {
        std::unique_ptr<NcclCommunicator> doomed = make_world("doomed", kTimeoutS);
        doomed->abort(3);
      },
      ::testing::ExitedWithCode(3), "");
}

}  // namespace
}  // namespace tessera
