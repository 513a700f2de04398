// MpiCommunicator on 4 ranks. Each rank builds its reference from a formula of (rank, index), so
// results are compared exactly; collectives run on every rank unconditionally, so that a failing
// expectation on one rank cannot leave the others waiting.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <numeric>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "core/out_of_memory.h"
#include "launcher/cluster.h"
#include "launcher/exit_codes.h"
#include "parallel/mpi_communicator.h"

namespace tessera {
namespace {

// Large enough (16 MiB of f32) that Open MPI uses its rendezvous protocol, where a blocking
// send waits for the matching receive: an eager send would hide an ordering deadlock.
constexpr int64_t kLarge = int64_t{4} << 20;
constexpr int64_t kSmall = 1001;

// Exact in f32 for every index below 2^22 and rank below 8, and so are sums over 4 ranks.
template <typename T>
T input(int rank, int64_t i) {
  if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(rank * 1000) + static_cast<T>(i) * static_cast<T>(0.5);
  } else {
    return static_cast<T>(rank * 1000 + i);
  }
}

// Peaks on a different rank for each index.
template <typename T>
T max_input(int rank, int64_t i, int size) {
  return static_cast<T>(((rank + i) % size) * 100) - static_cast<T>(i % 50);
}

template <typename T, typename F>
Tensor tensor_of(int64_t n, F value) {
  Tensor t({n}, dtype_of<T>());
  T* p = t.data<T>();
  for (int64_t i = 0; i < n; ++i) p[i] = value(i);
  return t;
}

// -1 when every element equals expected(i); else the first index that does not.
template <typename T, typename F>
int64_t first_mismatch(const Tensor& t, F expected) {
  const T* p = t.data<T>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (p[i] != expected(i)) return i;
  }
  return -1;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Lowers the chunk size for one test, so the chunked path runs without 2^31-element tensors.
class ChunkSizeForTest {
 public:
  explicit ChunkSizeForTest(int64_t n) : saved_(MpiCommunicator::max_chunk_elements()) {
    MpiCommunicator::set_max_chunk_elements_for_testing(n);
  }
  ~ChunkSizeForTest() { MpiCommunicator::set_max_chunk_elements_for_testing(saved_); }

 private:
  int64_t saved_;
};

template <typename T>
class MpiAllReduceTyped : public ::testing::Test {};
using ReducibleTypes = ::testing::Types<float, double, int32_t>;
TYPED_TEST_SUITE(MpiAllReduceTyped, ReducibleTypes);

TYPED_TEST(MpiAllReduceTyped, SumEqualsTheSumOfEveryRanksInput) {
  using T = TypeParam;
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  Tensor t = tensor_of<T>(kSmall, [&](int64_t i) { return input<T>(rank, i); });
  comm->all_reduce(t, ReduceOp::Sum);
  EXPECT_EQ(first_mismatch<T>(t,
                              [&](int64_t i) {
                                T sum = 0;
                                for (int r = 0; r < size; ++r) sum += input<T>(r, i);
                                return sum;
                              }),
            -1);
}

TYPED_TEST(MpiAllReduceTyped, MaxEqualsTheLargestInputOfAnyRank) {
  using T = TypeParam;
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  Tensor t = tensor_of<T>(kSmall, [&](int64_t i) { return max_input<T>(rank, i, size); });
  comm->all_reduce(t, ReduceOp::Max);
  EXPECT_EQ(
      first_mismatch<T>(t, [&](int64_t i) { return max_input<T>(size - 1 - i % size, i, size); }),
      -1);
}

TEST(MpiAllReduce, EveryRankGetsIdenticalBitsOfARoundedSum) {
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  // Reciprocals round, so a rank that summed in another order would see other bits.
  auto value = [](int r, int64_t i) {
    return (r % 2 ? -1.0 : 1.0) / static_cast<double>(3 + r + 7 * i);
  };
  Tensor t =
      tensor_of<float>(kSmall, [&](int64_t i) { return static_cast<float>(value(rank, i)); });
  comm->all_reduce(t, ReduceOp::Sum);

  Tensor everyone({size * kSmall}, DType::F32);
  comm->all_gather(everyone, t);
  for (int r = 0; r < size; ++r) {
    EXPECT_EQ(std::memcmp(everyone.slice0(r * kSmall, (r + 1) * kSmall).raw(), t.raw(), t.bytes()),
              0)
        << "rank " << r << " holds other bits than rank " << rank;
  }
  const float* p = t.data<float>();
  for (int64_t i = 0; i < kSmall; ++i) {
    double exact = 0;
    for (int r = 0; r < size; ++r) exact += static_cast<float>(value(r, i));
    ASSERT_NEAR(p[i], exact, 1e-6 * std::abs(exact)) << "index " << i;
  }
}

TEST(MpiAllGather, BlockRHoldsRankRsInput) {
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  Tensor in = tensor_of<float>(kSmall, [&](int64_t i) { return input<float>(rank, i); });
  Tensor out({size * kSmall}, DType::F32);
  comm->all_gather(out, in);
  EXPECT_EQ(first_mismatch<float>(
                out, [&](int64_t k) { return input<float>(int(k / kSmall), k % kSmall); }),
            -1);
}

TEST(MpiAllGather, InputThatIsThisRanksBlockOfTheOutputGathersInPlace) {
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  Tensor out({size * kSmall}, DType::I32);
  Tensor own = out.slice0(rank * kSmall, (rank + 1) * kSmall);
  for (int64_t i = 0; i < kSmall; ++i) own.data<int32_t>()[i] = input<int32_t>(rank, i);
  comm->all_gather(out, own);
  EXPECT_EQ(first_mismatch<int32_t>(
                out, [&](int64_t k) { return input<int32_t>(int(k / kSmall), k % kSmall); }),
            -1);
}

TEST(MpiReduceScatter, RankRGetsTheSumOfBlockRFromEveryRank) {
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  Tensor in = tensor_of<float>(size * kSmall, [&](int64_t k) { return input<float>(rank, k); });
  Tensor out({kSmall}, DType::F32);
  comm->reduce_scatter(out, in, ReduceOp::Sum);
  EXPECT_EQ(first_mismatch<float>(out,
                                  [&](int64_t j) {
                                    float sum = 0;
                                    for (int q = 0; q < size; ++q)
                                      sum += input<float>(q, rank * kSmall + j);
                                    return sum;
                                  }),
            -1);
}

// Rank r's text: r * 3 bytes, NUL and bytes above 127 among them; rank 0's is empty.
std::string text_of(int r) {
  std::string t;
  for (int i = 0; i < 3 * r; ++i) t += static_cast<char>((i * 97 + r) % 256);
  return t;
}

TEST(MpiStrings, BroadcastAndAllGatherCarryEveryByteAndLength) {
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  for (int root = 0; root < size; ++root)
    EXPECT_EQ(broadcast_string(*comm, rank == root ? text_of(root) : "ignored", root),
              text_of(root))
        << "root " << root;
  const std::vector<std::string> all = all_gather_strings(*comm, text_of(rank));
  ASSERT_EQ(all.size(), static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) EXPECT_EQ(all[static_cast<size_t>(r)], text_of(r)) << "rank " << r;
}

TEST(MpiBroadcast, EveryRankGetsTheRootsTensorWhateverTheRoot) {
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  for (int root = 0; root < size; ++root) {
    Tensor f = tensor_of<float>(
        kSmall, [&](int64_t i) { return rank == root ? input<float>(root, i) : -1.0f; });
    Tensor u = tensor_of<uint16_t>(kSmall, [&](int64_t i) {
      return static_cast<uint16_t>(rank == root ? 60000 + root * 1000 + i : 0);
    });
    comm->broadcast(f, root);
    comm->broadcast(u, root);
    EXPECT_EQ(first_mismatch<float>(f, [&](int64_t i) { return input<float>(root, i); }), -1)
        << "root " << root;
    EXPECT_EQ(first_mismatch<uint16_t>(
                  u, [&](int64_t i) { return static_cast<uint16_t>(60000 + root * 1000 + i); }),
              -1)
        << "root " << root;
  }
}

TEST(MpiPointToPoint, BlockingSendRecvAroundARingDeliversTheLeftNeighboursTensor) {
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  const int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  Tensor mine = tensor_of<float>(kLarge, [&](int64_t i) { return input<float>(rank, i); });
  Tensor got({kLarge}, DType::F32);
  // Alternating order gives every send a posted receive in turn, so the ring cannot deadlock.
  if (rank % 2 == 0) {
    comm->send(mine, next);
    comm->recv(got, prev);
  } else {
    comm->recv(got, prev);
    comm->send(mine, next);
  }
  EXPECT_EQ(first_mismatch<float>(got, [&](int64_t i) { return input<float>(prev, i); }), -1);
}

TEST(MpiPointToPoint, IsendAndIrecvPostedTogetherInBothDirectionsComplete) {
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  const int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  // The pipeline pattern: activations go forward, gradients back, all posted before any wait.
  Tensor activation = tensor_of<float>(kLarge, [&](int64_t i) { return input<float>(rank, i); });
  Tensor gradient = tensor_of<float>(kLarge, [&](int64_t i) { return -input<float>(rank, i); });
  Tensor activation_in({kLarge}, DType::F32), gradient_in({kLarge}, DType::F32);
  auto send_forward = comm->isend(activation, next);
  auto send_backward = comm->isend(gradient, prev);
  auto recv_forward = comm->irecv(activation_in, prev);
  auto recv_backward = comm->irecv(gradient_in, next);
  recv_backward->wait();
  recv_forward->wait();
  send_backward->wait();
  send_forward->wait();
  EXPECT_EQ(first_mismatch<float>(activation_in, [&](int64_t i) { return input<float>(prev, i); }),
            -1);
  EXPECT_EQ(first_mismatch<float>(gradient_in, [&](int64_t i) { return -input<float>(next, i); }),
            -1);
}

TEST(MpiPointToPoint, MessagesBetweenAPairMatchInTheOrderPosted) {
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  const int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  // A small (eager) message behind a large (rendezvous) one must not overtake it.
  const std::vector<int64_t> lengths = {kLarge, 16, kLarge / 2};
  std::vector<Tensor> out, in;
  std::vector<std::unique_ptr<CommRequest>> requests;
  for (size_t m = 0; m < lengths.size(); ++m) {
    out.push_back(tensor_of<float>(
        lengths[m], [&](int64_t i) { return input<float>(rank, i) + static_cast<float>(m); }));
    in.emplace_back(Shape{lengths[m]}, DType::F32);
  }
  for (size_t m = 0; m < lengths.size(); ++m) requests.push_back(comm->irecv(in[m], prev));
  for (size_t m = 0; m < lengths.size(); ++m) requests.push_back(comm->isend(out[m], next));
  for (auto& r : requests) r->wait();
  for (size_t m = 0; m < lengths.size(); ++m) {
    EXPECT_EQ(first_mismatch<float>(
                  in[m], [&](int64_t i) { return input<float>(prev, i) + static_cast<float>(m); }),
              -1)
        << "message " << m;
  }
}

TEST(MpiPointToPoint, DroppingAHandleWaitsForItsTransfer) {
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  const int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  Tensor got({kLarge}, DType::F32);
  {
    auto recv = comm->irecv(got, prev);
    // The tensor handed to isend goes out of scope first: the handle keeps its buffer alive.
    auto send = comm->isend(
        tensor_of<float>(kLarge, [&](int64_t i) { return input<float>(rank, i); }), next);
  }
  EXPECT_EQ(first_mismatch<float>(got, [&](int64_t i) { return input<float>(prev, i); }), -1);
}

TEST(MpiRecv, AShorterMessageThanTheTensorIsAnInternalErrorNamingPeerAndCounts) {
  auto comm = MpiCommunicator::world();
  if (comm->rank() == 0) comm->send(tensor_of<float>(10, [](int64_t i) { return float(i); }), 1);
  if (comm->rank() == 1) {
    Tensor t({12}, DType::F32);
    try {
      comm->recv(t, 0);
      ADD_FAILURE() << "recv of 10 elements into 12 did not throw";
    } catch (const InternalError& e) {
      EXPECT_TRUE(contains(e.what(), "rank 0")) << e.what();
      EXPECT_TRUE(contains(e.what(), "group world")) << e.what();
      EXPECT_TRUE(contains(e.what(), "expected 12")) << e.what();
      EXPECT_TRUE(contains(e.what(), "found 10")) << e.what();
    }
  }
}

TEST(MpiRecv, ALongerMessageThanTheTensorIsAnInternalErrorFromMpi) {
  auto comm = MpiCommunicator::world();
  if (comm->rank() == 0) comm->send(tensor_of<float>(12, [](int64_t i) { return float(i); }), 1);
  if (comm->rank() == 1) {
    Tensor t({10}, DType::F32);
    try {
      comm->recv(t, 0);
      ADD_FAILURE() << "recv of 12 elements into 10 did not throw";
    } catch (const InternalError& e) {
      EXPECT_TRUE(contains(e.what(), "MPI_Recv")) << e.what();
      EXPECT_TRUE(contains(e.what(), "group world")) << e.what();
    }
  }
}

TEST(MpiBarrier, NoRankLeavesBeforeTheLastOneEnters) {
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  // steady_clock is CLOCK_MONOTONIC, one clock for every process on the machine.
  auto now_ns = [] {
    return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
  };
  std::this_thread::sleep_for(std::chrono::milliseconds(30 * rank));
  Tensor entered({1}, DType::F64);
  entered.data<double>()[0] = now_ns();
  comm->barrier();
  const double left = now_ns();
  Tensor all_entered({size}, DType::F64);
  comm->all_gather(all_entered, entered);
  const double* e = all_entered.data<double>();
  EXPECT_GE(left, *std::max_element(e, e + size));
}

TEST(MpiAsync, AllReduceCompletesWhileTheCallerPollsTestBetweenPiecesOfCompute) {
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  const int64_t n = int64_t{1} << 20;
  Tensor t = tensor_of<float>(n, [&](int64_t i) { return input<float>(rank, i); });
  auto request = comm->all_reduce_async(t, ReduceOp::Sum);
  std::vector<double> work(1 << 14, 1.0);
  double computed = 0;
  int64_t pieces = 0;
  bool done = false;
  // test() must drive the reduction to its end: bounded, so that one that never completes fails
  // here rather than at the test's time limit.
  const auto start = std::chrono::steady_clock::now();
  while (!done && std::chrono::steady_clock::now() - start < std::chrono::seconds(60)) {
    computed += std::accumulate(work.begin(), work.end(), 0.0);
    ++pieces;
    done = request->test();
  }
  ASSERT_TRUE(done) << "the all-reduce did not complete in 60 s of polling test() (" << pieces
                    << " pieces of compute, " << computed << " in all)";
  EXPECT_TRUE(request->test()) << "a completed handle stays complete";
  request->wait();
  EXPECT_EQ(first_mismatch<float>(t,
                                  [&](int64_t i) {
                                    float sum = 0;
                                    for (int r = 0; r < size; ++r) sum += input<float>(r, i);
                                    return sum;
                                  }),
            -1);
}

TEST(MpiAsync, AllGatherAsyncMatchesTheFormulaAfterWait) {
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  Tensor in = tensor_of<double>(kSmall, [&](int64_t i) { return input<double>(rank, i); });
  Tensor out({size * kSmall}, DType::F64);
  auto request = comm->all_gather_async(out, in);
  request->wait();
  EXPECT_EQ(first_mismatch<double>(
                out, [&](int64_t k) { return input<double>(int(k / kSmall), k % kSmall); }),
            -1);
}

TEST(MpiAsync, ReduceScatterAsyncGivesRankRTheMaxOfBlockR) {
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  Tensor in = tensor_of<int32_t>(size * kSmall,
                                 [&](int64_t k) { return max_input<int32_t>(rank, k, size); });
  Tensor out({kSmall}, DType::I32);
  auto request = comm->reduce_scatter_async(out, in, ReduceOp::Max);
  while (!request->test()) {
  }
  EXPECT_EQ(first_mismatch<int32_t>(out,
                                    [&](int64_t j) {
                                      int32_t best = INT32_MIN;
                                      for (int q = 0; q < size; ++q)
                                        best = std::max(
                                            best, max_input<int32_t>(q, rank * kSmall + j, size));
                                      return best;
                                    }),
            -1);
}

TEST(MpiSplit, ParityGroupsWithReversedKeysOrderTheirRanksBackwards) {
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  const int color = rank % 2;
  auto sub = comm->split(color, size - rank, color ? "odd" : "even");
  EXPECT_NE(sub, nullptr);
  if (!sub) return;
  const int members = (size - color + 1) / 2;
  EXPECT_EQ(sub->size(), members);
  EXPECT_EQ(sub->rank(), members - 1 - rank / 2);
  EXPECT_EQ(sub->name(), color ? "odd" : "even");
  Tensor t = tensor_of<int32_t>(3, [&](int64_t i) { return int32_t(rank + 1 + i); });
  sub->all_reduce(t, ReduceOp::Sum);
  EXPECT_EQ(first_mismatch<int32_t>(t,
                                    [&](int64_t i) {
                                      int32_t sum = 0;
                                      for (int r = color; r < size; r += 2)
                                        sum += int32_t(r + 1 + i);
                                      return sum;
                                    }),
            -1);
}

TEST(MpiSplit, NegativeColorGivesNullptrAndTheOthersAGroupWithoutIt) {
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  auto sub = comm->split(rank == 0 ? -1 : 0, rank, "without-0");
  if (rank == 0) {
    EXPECT_EQ(sub, nullptr);
    return;
  }
  EXPECT_NE(sub, nullptr);
  if (!sub) return;
  EXPECT_EQ(sub->size(), size - 1);
  EXPECT_EQ(sub->rank(), rank - 1);
  Tensor t = tensor_of<int32_t>(1, [](int64_t) { return 1; });
  sub->all_reduce(t, ReduceOp::Sum);
  EXPECT_EQ(t.data<int32_t>()[0], size - 1);
}

TEST(MpiChunking, AllReduceInChunksMatchesTheFormulaBlockingAndAsync) {
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  ChunkSizeForTest chunks(7);  // 100 elements: 14 full chunks and one of 2
  auto sum = [&](int64_t i) {
    float s = 0;
    for (int r = 0; r < size; ++r) s += input<float>(r, i);
    return s;
  };
  Tensor blocking = tensor_of<float>(100, [&](int64_t i) { return input<float>(rank, i); });
  comm->all_reduce(blocking, ReduceOp::Sum);
  EXPECT_EQ(first_mismatch<float>(blocking, sum), -1);

  Tensor async = tensor_of<float>(100, [&](int64_t i) { return input<float>(rank, i); });
  auto request = comm->all_reduce_async(async, ReduceOp::Sum);
  while (!request->test()) {
  }
  EXPECT_EQ(first_mismatch<float>(async, sum), -1);
}

TEST(MpiChunking, BroadcastSendRecvAndIsendIrecvInChunksDeliverEveryElement) {
  auto comm = MpiCommunicator::world();
  const int rank = comm->rank(), size = comm->size();
  const int next = (rank + 1) % size, prev = (rank + size - 1) % size;
  ChunkSizeForTest chunks(7);
  const int root = size - 1;
  Tensor b =
      tensor_of<float>(100, [&](int64_t i) { return rank == root ? input<float>(root, i) : 0.0f; });
  comm->broadcast(b, root);
  EXPECT_EQ(first_mismatch<float>(b, [&](int64_t i) { return input<float>(root, i); }), -1);

  Tensor mine = tensor_of<float>(100, [&](int64_t i) { return input<float>(rank, i); });
  Tensor got({100}, DType::F32);
  if (rank % 2 == 0) {
    comm->send(mine, next);
    comm->recv(got, prev);
  } else {
    comm->recv(got, prev);
    comm->send(mine, next);
  }
  EXPECT_EQ(first_mismatch<float>(got, [&](int64_t i) { return input<float>(prev, i); }), -1);

  Tensor got_async({100}, DType::F32);
  auto recv = comm->irecv(got_async, prev);
  auto send = comm->isend(mine, next);
  recv->wait();
  send->wait();
  EXPECT_EQ(first_mismatch<float>(got_async, [&](int64_t i) { return input<float>(prev, i); }), -1);
}

// A blocking bf16 all-reduce or reduce-scatter sums in float32 and rounds once: 1 + 2^-8 from
// every other rank is exact in float32 but would round away in a running bf16 sum. The
// asynchronous reductions refuse bf16, naming the group.
TEST(MpiChecks, Bf16AllReduceAndReduceScatterSumInFloat32AndTheAsyncFormsRefuseIt) {
  auto comm = MpiCommunicator::world();
  Tensor t({4}, DType::BF16);
  for (int64_t i = 0; i < 4; ++i)
    t.data<bf16>()[i] = to_bf16(comm->rank() == 0 ? 1.0f : std::ldexp(1.0f, -8));
  comm->all_reduce(t, ReduceOp::Sum);
  // The float32 sum, rounded once: with 4 ranks 1 + 3 * 2^-8 rounds to 1 + 2^-6.
  const float expected = to_float(to_bf16(1.0f + (comm->size() - 1) * std::ldexp(1.0f, -8)));
  ASSERT_GT(comm->size(), 2);
  ASSERT_NE(expected, 1.0f);
  for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(to_float(t.data<bf16>()[i]), expected) << i;
  Tensor out({1}, DType::BF16), in({comm->size()}, DType::BF16);
  for (int64_t i = 0; i < comm->size(); ++i)
    in.data<bf16>()[i] = to_bf16(comm->rank() == 0 ? 1.0f : std::ldexp(1.0f, -8));
  comm->reduce_scatter(out, in, ReduceOp::Sum);
  EXPECT_EQ(to_float(out.data<bf16>()[0]), expected);
  const auto expect_refused = [](const std::function<void()>& reduce, const char* what) {
    try {
      reduce();
      ADD_FAILURE() << what << " of bf16 did not throw";
    } catch (const InternalError& e) {
      EXPECT_TRUE(contains(e.what(), "bf16")) << e.what();
      EXPECT_TRUE(contains(e.what(), "group world")) << e.what();
    }
  };
  expect_refused([&] { comm->reduce_scatter_async(out, in, ReduceOp::Sum)->wait(); },
                 "reduce_scatter_async");
  expect_refused([&] { comm->all_reduce_async(t, ReduceOp::Sum)->wait(); }, "all_reduce_async");
}

TEST(MpiChecks, AllGatherIntoAWronglySizedOutputIsRefused) {
  auto comm = MpiCommunicator::world();
  Tensor in({kSmall}, DType::F32);
  Tensor out({comm->size() * kSmall + 1}, DType::F32);
  EXPECT_THROW(comm->all_gather(out, in), InternalError);
  Tensor scattered({kSmall + 1}, DType::F32);
  Tensor whole({comm->size() * kSmall}, DType::F32);
  EXPECT_THROW(comm->reduce_scatter(scattered, whole, ReduceOp::Sum), InternalError);
}

// Failures of different kinds on different ranks: every rank, failing or not, exits with the
// code of the one message printed (the lowest failing rank's, a shared failure's first), where
// each failing rank kept its own code.
TEST(AgreeOnInputs, EveryRankExitsWithTheCodeOfTheMessagePrinted) {
  auto comm = MpiCommunicator::world();
  ASSERT_EQ(comm->size(), 4);
  const auto failure = [&](int code, bool machine_specific) {
    ErrorReport r;
    r.code = code;
    r.message = "tessera: error: rank " + std::to_string(comm->rank()) + "'s failure";
    r.machine_specific = machine_specific;
    return r;
  };
  // Rank 1: an internal error (1); rank 3: a bad input (2); the lowest, rank 1, is printed.
  const ErrorReport machine = comm->rank() == 1   ? failure(kExitInternalError, true)
                              : comm->rank() == 3 ? failure(kExitBadInput, true)
                                                  : ErrorReport{};
  EXPECT_EQ(agree_on_inputs(*comm, machine), kExitInternalError) << "rank " << comm->rank();
  // Rank 2's shared failure (2) comes before rank 0's internal error (1).
  const ErrorReport shared = comm->rank() == 0   ? failure(kExitInternalError, true)
                             : comm->rank() == 2 ? failure(kExitBadInput, false)
                                                 : ErrorReport{};
  EXPECT_EQ(agree_on_inputs(*comm, shared), kExitBadInput) << "rank " << comm->rank();
  EXPECT_EQ(agree_on_inputs(*comm, ErrorReport{}), kExitOk);
}

// report_error turns what a rank caught into the ErrorReport it agrees on, in catch blocks:
// whatever was thrown, it returns a code and a message.
// A collective that failed outside this rank (NCCL: a peer gone, the network) is the watchdog's
// exit 5, not a bug's 1.
TEST(AgreeOnInputs, ACommunicationFailureExits5) {
  const ErrorReport r =
      report_error(std::make_exception_ptr(CommunicationError("all_reduce in group tp: NCCL "
                                                              "reported remote process exited")),
                   "train");
  EXPECT_EQ(r.code, kExitHang);
  EXPECT_EQ(r.message,
            "tessera: error: all_reduce in group tp: NCCL reported remote process exited");
}

// Running out of memory is exit 2; the training options are suggested only to the commands that
// run a model (`tokenize encode` was told to shrink --train.micro_batch).
TEST(AgreeOnInputs, OutOfMemorySuggestsTrainingOptionsOnlyWhereAModelRuns) {
  const auto report = [](const char* command) {
    return report_error(std::make_exception_ptr(std::bad_alloc()), command);
  };
  EXPECT_EQ(report("train").code, kExitBadInput);
  EXPECT_NE(report("train").message.find("--train.micro_batch"), std::string::npos);
  EXPECT_NE(report("eval").message.find("--train.micro_batch"), std::string::npos);
  EXPECT_EQ(report("tokenize").code, kExitBadInput);
  EXPECT_EQ(report("tokenize").message, "tessera: error: out of memory in tessera tokenize");
  // An allocation that says what it could not allocate (OutOfMemory) is quoted; only `train`
  // is told of --train.recompute.
  const auto known = [](const char* command) {
    return report_error(
        std::make_exception_ptr(OutOfMemory("cannot allocate 9.4 MB of GPU memory")), command);
  };
  EXPECT_EQ(known("train").code, kExitBadInput);
  EXPECT_EQ(known("train").message,
            "tessera: error: out of memory: cannot allocate 9.4 MB of GPU memory (try a smaller "
            "--train.micro_batch or model, more --parallel.tp / --parallel.pp, or "
            "--train.recompute)");
  EXPECT_EQ(known("sample").message,
            "tessera: error: out of memory: cannot allocate 9.4 MB of GPU memory (try a smaller "
            "--train.micro_batch or model, or more --parallel.tp / --parallel.pp)");
  EXPECT_EQ(
      known("tokenize").message,
      "tessera: error: out of memory in tessera tokenize: cannot allocate 9.4 MB of GPU memory");
}

TEST(AgreeOnInputs, AnExceptionThatIsNotAStdExceptionIsReportedAsAnInternalError) {
  const ErrorReport r = report_error(std::make_exception_ptr(42), "train");
  EXPECT_EQ(r.code, kExitInternalError);
  EXPECT_EQ(r.message, "tessera: internal error: an exception that is not a std::exception");
}

// ctest runs every rank on this one machine, so all of them share its memory.
TEST(NodeLocal, EveryRankOfASingleMachineRunIsNodeLocal) {
  auto comm = MpiCommunicator::world();
  const NodeLocalPlace place = node_local_place(comm->comm());
  EXPECT_EQ(place.size, comm->size());
  EXPECT_EQ(place.rank, comm->rank());
}

}  // namespace
}  // namespace tessera
