// Specifications of the tensor-parallel conjugate pairs (core/model/tensor_parallel.h) and of
// the vocab-parallel cross-entropy (core/ops/cross_entropy.h), one pair at a time. Each runs on
// TP = 2 and TP = 4 ranks (threads, tests/thread_communicator.h) and is compared with the same
// layer on one rank with the full weight, in F64, to a norm-wise relative error of 1e-12 per
// tensor (tests/gradcheck.h). For each pair one more test runs every rank with a communicator
// whose all-reduce does nothing and requires a clearly wrong result: the communication is
// needed, so the tests would fail if a layer dropped its all-reduce.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/model/param.h"
#include "core/model/tensor_parallel.h"
#include "core/ops/cross_entropy.h"
#include "core/ops/embedding.h"
#include "core/ops/matmul.h"
#include "parallel/local_communicator.h"
#include "tests/gradcheck.h"
#include "tests/refusing_communicator.h"
#include "tests/thread_communicator.h"

namespace tessera {
namespace {

using testing::random_tensor;
using testing::relative_error;

constexpr double kTolerance = 1e-12;  // F64, norm-wise relative
constexpr double kWrong = 1e-3;       // a skipped collective is off by far more than this
constexpr uint64_t kSeed = 41;

// Shard `rank` of `tp` of a parameter whose N(0, 1) values depend only on (seed, name, global
// index) (core/model/param.h), so shard r is exactly a slice of the one-rank tensor.
Param shard(const std::string& name, Shape shape, int split_dim, int rank, int tp) {
  ModelShard s;
  s.tp_rank = rank;
  s.tp_size = tp;
  Param p = make_param(name, ParamKind::Weight, ParamInit::Normal, 1.0, std::move(shape), split_dim,
                       1, s);
  p.materialize(kSeed, DType::F64);
  return p;
}

Param whole(const std::string& name, Shape shape) {
  return shard(name, std::move(shape), -1, 0, 1);
}

// Columns [begin, end) of t seen as [rows, t.size(-1)], as a new [rows, end - begin] tensor.
Tensor columns(const Tensor& t, int64_t begin, int64_t end) {
  const int64_t width = t.size(-1), rows = t.numel() / width;
  Tensor out({rows, end - begin}, DType::F64);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = begin; c < end; ++c)
      out.data<double>()[r * (end - begin) + c - begin] = t.data<double>()[r * width + c];
  return out;
}

Tensor rows(const Tensor& t, int64_t begin, int64_t end) {
  return t.slice0(begin, end).clone();
}

Tensor times(const Tensor& t, double k) {
  Tensor out = t.clone();
  for (int64_t i = 0; i < out.numel(); ++i) out.data<double>()[i] *= k;
  return out;
}

// fn(rank, communicator) on `tp` ranks as threads, with a real all-reduce between them.
template <typename Result>
std::vector<Result> on_ranks(int tp, const std::function<Result(int, Communicator&)>& fn) {
  std::vector<Result> out(static_cast<size_t>(tp));
  test_support::run_ranks(tp, [&](Communicator& comm) {
    out[static_cast<size_t>(comm.rank())] = fn(comm.rank(), comm);
  });
  return out;
}

// Rank `rank` of a group of `size` whose every collective is skipped: all_reduce returns the
// rank's own tensor unchanged, as if a layer had left its collective out. Anything else throws.
class SkippedCollectives final : public test_support::RefusingCommunicator {
 public:
  SkippedCollectives(int rank, int size) : RefusingCommunicator(rank, size, "tp", "all_reduce") {}
  void all_reduce(Tensor&, ReduceOp) override {}
};

// fn(rank, communicator) for each of `tp` ranks, one after the other, with the all-reduces
// skipped: what every rank would compute if the layer had no collective.
template <typename Result>
std::vector<Result> without_communication(int tp,
                                          const std::function<Result(int, Communicator&)>& fn) {
  std::vector<Result> out;
  for (int r = 0; r < tp; ++r) {
    SkippedCollectives alone(r, tp);
    out.push_back(fn(r, alone));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Linear layers: inp [2, 3, K], weight [N, K], bias [N], dout [2, 3, N].

constexpr int64_t K = 8, N = 12;

struct LinearCase {
  Tensor inp, dout;
  LinearCase() {
    std::mt19937_64 rng(7);
    inp = random_tensor({2, 3, K}, rng);
    dout = random_tensor({2, 3, N}, rng);
  }
};

struct LinearResult {
  int64_t begin = 0, end = 0;  // this rank's piece of the split dimension
  Tensor out, dinp, dw, db;
};

// The layer on one rank with the full weight, through the plain ops.
LinearResult reference_linear(const LinearCase& c, const std::string& prefix) {
  Param w = whole(prefix + "/weight", {N, K}), b = whole(prefix + "/bias", {N});
  LinearResult r;
  r.out = Tensor({2, 3, N}, DType::F64);
  ops::matmul_forward(r.out, c.inp, w.value, &b.value);
  r.dinp = Tensor(c.inp.shape(), DType::F64);
  ops::matmul_backward(&r.dinp, &w.grad, &b.grad, c.dout, c.inp, w.value);
  r.dw = w.grad;
  r.db = b.grad;
  return r;
}

// ColumnParallelLinear on rank `rank` of `tp`: weight and bias split by rows (output features);
// dout is this rank's slice of the output gradient. dinp starts as garbage: it is written.
LinearResult column_rank(const LinearCase& c, int rank, int tp, Communicator& comm,
                         int backward_passes = 1) {
  Param w = shard("column/weight", {N, K}, 0, rank, tp);
  Param b = shard("column/bias", {N}, 0, rank, tp);
  const ColumnParallelLinear layer{w, &b};
  LinearResult r;
  r.begin = w.piece_begin();
  r.end = w.piece_end();
  r.out = Tensor({2, 3, r.end - r.begin}, DType::F64);
  layer.forward(r.out, c.inp);
  const Tensor dout = columns(c.dout, r.begin, r.end);
  r.dinp = Tensor(c.inp.shape(), DType::F64);
  for (int pass = 0; pass < backward_passes; ++pass) {
    r.dinp.fill(1e3);
    layer.backward(&r.dinp, dout, c.inp, comm);
  }
  r.dw = w.grad;
  r.db = b.grad;
  return r;
}

std::function<LinearResult(int, Communicator&)> column_layer(const LinearCase& c, int tp,
                                                             int backward_passes = 1) {
  return [&c, tp, backward_passes](int rank, Communicator& comm) {
    return column_rank(c, rank, tp, comm, backward_passes);
  };
}

void expect_column_forward_slices(int tp) {
  const LinearCase c;
  const LinearResult ref = reference_linear(c, "column");
  for (const LinearResult& r : on_ranks(tp, column_layer(c, tp)))
    EXPECT_LE(relative_error(r.out, columns(ref.out, r.begin, r.end)), kTolerance)
        << "rank piece [" << r.begin << ", " << r.end << ")";
}

TEST(ColumnParallelLinear, ForwardGivesEachRankItsSliceOfTheOutputTP2) {
  expect_column_forward_slices(2);
}

TEST(ColumnParallelLinear, ForwardGivesEachRankItsSliceOfTheOutputTP4) {
  expect_column_forward_slices(4);
}

void expect_column_backward(int tp) {
  const LinearCase c;
  const LinearResult ref = reference_linear(c, "column");
  for (const LinearResult& r : on_ranks(tp, column_layer(c, tp))) {
    EXPECT_LE(relative_error(r.dinp, ref.dinp), kTolerance) << "rank from " << r.begin;
    EXPECT_LE(relative_error(r.dw, rows(ref.dw, r.begin, r.end)), kTolerance);
    EXPECT_LE(relative_error(r.db, rows(ref.db, r.begin, r.end)), kTolerance);
  }
}

TEST(ColumnParallelLinear, BackwardAllReducesInputGradientTP2) {
  expect_column_backward(2);
}

TEST(ColumnParallelLinear, BackwardAllReducesInputGradientTP4) {
  expect_column_backward(4);
}

TEST(ColumnParallelLinear, BackwardWithoutTheAllReduceGivesOnlyAPartialInputGradient) {
  const LinearCase c;
  const LinearResult ref = reference_linear(c, "column");
  for (int tp : {2, 4})
    for (const LinearResult& r : without_communication(tp, column_layer(c, tp)))
      EXPECT_GT(relative_error(r.dinp, ref.dinp), kWrong) << "TP " << tp;
}

TEST(ColumnParallelLinear, BackwardAccumulatesWeightAndBiasGradientsTP2) {
  const LinearCase c;
  const LinearResult ref = reference_linear(c, "column");
  for (const LinearResult& r : on_ranks(2, column_layer(c, 2, /*backward_passes=*/2))) {
    EXPECT_LE(relative_error(r.dinp, ref.dinp), kTolerance);  // written, not accumulated
    EXPECT_LE(relative_error(r.dw, times(rows(ref.dw, r.begin, r.end), 2)), kTolerance);
    EXPECT_LE(relative_error(r.db, times(rows(ref.db, r.begin, r.end), 2)), kTolerance);
  }
}

// RowParallelLinear on rank `rank` of `tp`: weight split by columns (input features), bias
// replicated; inp and dinp are this rank's slice of the input features.
LinearResult row_rank(const LinearCase& c, int rank, int tp, Communicator& comm,
                      int backward_passes = 1) {
  Param w = shard("row/weight", {N, K}, 1, rank, tp);
  Param b = shard("row/bias", {N}, -1, rank, tp);
  const RowParallelLinear layer{w, &b};
  LinearResult r;
  r.begin = w.piece_begin();
  r.end = w.piece_end();
  const Tensor inp = columns(c.inp, r.begin, r.end);
  r.out = Tensor({2, 3, N}, DType::F64);
  layer.forward(r.out, inp, comm);
  r.dinp = Tensor(inp.shape(), DType::F64);
  for (int pass = 0; pass < backward_passes; ++pass) {
    r.dinp.fill(1e3);
    layer.backward(&r.dinp, c.dout, inp);
  }
  r.dw = w.grad;
  r.db = b.grad;
  return r;
}

std::function<LinearResult(int, Communicator&)> row_layer(const LinearCase& c, int tp,
                                                          int backward_passes = 1) {
  return [&c, tp, backward_passes](int rank, Communicator& comm) {
    return row_rank(c, rank, tp, comm, backward_passes);
  };
}

void expect_row_forward(int tp) {
  const LinearCase c;
  const LinearResult ref = reference_linear(c, "row");
  for (const LinearResult& r : on_ranks(tp, row_layer(c, tp)))
    EXPECT_LE(relative_error(r.out, ref.out), kTolerance) << "rank from " << r.begin;
}

TEST(RowParallelLinear, ForwardAllReducesOutputAndAddsTheBiasOnceTP2) {
  expect_row_forward(2);
}

TEST(RowParallelLinear, ForwardAllReducesOutputAndAddsTheBiasOnceTP4) {
  expect_row_forward(4);
}

void expect_row_backward(int tp) {
  const LinearCase c;
  const LinearResult ref = reference_linear(c, "row");
  for (const LinearResult& r : on_ranks(tp, row_layer(c, tp))) {
    EXPECT_LE(relative_error(r.dinp, columns(ref.dinp, r.begin, r.end)), kTolerance);
    EXPECT_LE(relative_error(r.dw, columns(ref.dw, r.begin, r.end)), kTolerance);
    EXPECT_LE(relative_error(r.db, ref.db), kTolerance) << "rank from " << r.begin;
  }
}

TEST(RowParallelLinear, BackwardGivesEachRankItsSliceOfTheInputGradientTP2) {
  expect_row_backward(2);
}

TEST(RowParallelLinear, BackwardGivesEachRankItsSliceOfTheInputGradientTP4) {
  expect_row_backward(4);
}

TEST(RowParallelLinear, ForwardWithoutTheAllReduceGivesOnlyAPartialOutput) {
  const LinearCase c;
  const LinearResult ref = reference_linear(c, "row");
  for (int tp : {2, 4})
    for (const LinearResult& r : without_communication(tp, row_layer(c, tp)))
      EXPECT_GT(relative_error(r.out, ref.out), kWrong) << "TP " << tp;
}

TEST(RowParallelLinear, BackwardAccumulatesWeightAndBiasGradientsTP2) {
  const LinearCase c;
  const LinearResult ref = reference_linear(c, "row");
  for (const LinearResult& r : on_ranks(2, row_layer(c, 2, /*backward_passes=*/2))) {
    EXPECT_LE(relative_error(r.dinp, columns(ref.dinp, r.begin, r.end)), kTolerance);
    EXPECT_LE(relative_error(r.dw, times(columns(ref.dw, r.begin, r.end), 2)), kTolerance);
    EXPECT_LE(relative_error(r.db, times(ref.db, 2)), kTolerance);
  }
}

// ---------------------------------------------------------------------------------------------
// Vocabulary-parallel layers: V = 11 rows or columns, uneven over 2 (5, 6) and 4 (2, 3, 3, 3).

constexpr int64_t V = 11, C = 4, B = 2, T = 7;

// Tokens (7 i + 3) mod 11: every vocabulary entry, so every shard, and some twice.
Tensor every_token() {
  Tensor ids({B, T}, DType::I32);
  for (int64_t i = 0; i < B * T; ++i)
    ids.data<int32_t>()[i] = static_cast<int32_t>((7 * i + 3) % V);
  return ids;
}

struct EmbeddingResult {
  int64_t begin = 0, end = 0;
  Tensor out, dtable;
};

struct EmbeddingCase {
  Tensor ids = every_token(), dout;
  EmbeddingCase() {
    std::mt19937_64 rng(9);
    dout = random_tensor({B, T, C}, rng);
  }
};

EmbeddingResult reference_embedding(const EmbeddingCase& c) {
  Param wte = whole("embedding/weight", {V, C});
  EmbeddingResult r;
  r.end = V;
  r.out = Tensor({B, T, C}, DType::F64);
  ops::embedding_forward(r.out, c.ids, wte.value, 0);
  ops::embedding_backward(wte.grad, c.dout, c.ids, 0);
  r.dtable = wte.grad;
  return r;
}

std::function<EmbeddingResult(int, Communicator&)> embedding_layer(const EmbeddingCase& c, int tp) {
  return [&c, tp](int rank, Communicator& comm) {
    Param wte = shard("embedding/weight", {V, C}, 0, rank, tp);
    EmbeddingResult r;
    r.begin = wte.piece_begin();
    r.end = wte.piece_end();
    r.out = Tensor({B, T, C}, DType::F64);
    vocab_parallel_embedding_forward(r.out, c.ids, wte, r.begin, comm);
    vocab_parallel_embedding_backward(wte, c.dout, c.ids, r.begin);
    r.dtable = wte.grad;
    return r;
  };
}

void expect_embedding_forward(int tp) {
  const EmbeddingCase c;
  const EmbeddingResult ref = reference_embedding(c);
  for (const EmbeddingResult& r : on_ranks(tp, embedding_layer(c, tp)))
    EXPECT_LE(relative_error(r.out, ref.out), kTolerance) << "rank from " << r.begin;
}

TEST(VocabParallelEmbedding, ForwardAllReducesTheRowsOfEveryShardTP2) {
  expect_embedding_forward(2);
}

TEST(VocabParallelEmbedding, ForwardAllReducesTheRowsOfEveryShardTP4) {
  expect_embedding_forward(4);
}

void expect_embedding_backward(int tp) {
  const EmbeddingCase c;
  const EmbeddingResult ref = reference_embedding(c);
  for (const EmbeddingResult& r : on_ranks(tp, embedding_layer(c, tp)))
    EXPECT_LE(relative_error(r.dtable, rows(ref.dtable, r.begin, r.end)), kTolerance)
        << "rank from " << r.begin;
}

TEST(VocabParallelEmbedding, BackwardAccumulatesIntoEachRanksOwnRowsTP2) {
  expect_embedding_backward(2);
}

TEST(VocabParallelEmbedding, BackwardAccumulatesIntoEachRanksOwnRowsTP4) {
  expect_embedding_backward(4);
}

TEST(VocabParallelEmbedding, ForwardWithoutTheAllReduceMissesOtherShardsRows) {
  const EmbeddingCase c;
  const EmbeddingResult ref = reference_embedding(c);
  for (int tp : {2, 4})
    for (const EmbeddingResult& r : without_communication(tp, embedding_layer(c, tp)))
      EXPECT_GT(relative_error(r.out, ref.out), kWrong) << "TP " << tp;
}

// Cross-entropy over logits [M, V], this rank holding columns [begin, end) of the vocabulary.
constexpr int64_t M = 6;

struct LossCase {
  Tensor logits, targets, dlosses;
  LossCase() {
    std::mt19937_64 rng(11);
    logits = random_tensor({M, V}, rng, DType::F64, -3.0, 3.0);
    targets = testing::random_tokens({M}, rng, 0, static_cast<int32_t>(V));
    dlosses = random_tensor({M}, rng, DType::F64, 0.5, 1.5);
  }
};

struct LossResult {
  int64_t begin = 0, end = 0;
  Tensor losses, lse, dlogits;
};

std::function<LossResult(int, Communicator&)> loss_layer(const LossCase& c, int tp) {
  return [&c, tp](int rank, Communicator& comm) {
    LossResult r;
    r.begin = V * rank / tp;  // Param's piece of an uneven split
    r.end = V * (rank + 1) / tp;
    const Tensor logits = columns(c.logits, r.begin, r.end);
    r.losses = Tensor({M}, DType::F64);
    r.lse = Tensor({M}, DType::F64);
    ops::cross_entropy_forward(r.losses, r.lse, logits, c.targets, r.begin, comm);
    r.dlogits = Tensor(logits.shape(), DType::F64);
    ops::cross_entropy_backward(r.dlogits, c.dlosses, logits, r.lse, c.targets, r.begin);
    return r;
  };
}

LossResult reference_loss(const LossCase& c) {
  LocalCommunicator alone("tp");
  return loss_layer(c, 1)(0, alone);
}

void expect_loss_forward(int tp) {
  const LossCase c;
  const LossResult ref = reference_loss(c);
  for (const LossResult& r : on_ranks(tp, loss_layer(c, tp))) {
    EXPECT_LE(relative_error(r.losses, ref.losses), kTolerance) << "rank from " << r.begin;
    EXPECT_LE(relative_error(r.lse, ref.lse), kTolerance) << "rank from " << r.begin;
  }
}

TEST(VocabParallelCrossEntropy, ForwardGivesTheFullVocabularyLossOnUnevenShardsTP2) {
  expect_loss_forward(2);
}

TEST(VocabParallelCrossEntropy, ForwardGivesTheFullVocabularyLossOnUnevenShardsTP4) {
  expect_loss_forward(4);
}

void expect_loss_backward(int tp) {
  const LossCase c;
  const LossResult ref = reference_loss(c);
  for (const LossResult& r : on_ranks(tp, loss_layer(c, tp)))
    EXPECT_LE(relative_error(r.dlogits, columns(ref.dlogits, r.begin, r.end)), kTolerance)
        << "rank from " << r.begin;
}

TEST(VocabParallelCrossEntropy, BackwardGivesEachRankItsSliceOfTheLogitGradientTP2) {
  expect_loss_backward(2);
}

TEST(VocabParallelCrossEntropy, BackwardGivesEachRankItsSliceOfTheLogitGradientTP4) {
  expect_loss_backward(4);
}

TEST(VocabParallelCrossEntropy, ForwardWithoutTheAllReducesGivesAWrongLoss) {
  const LossCase c;
  const LossResult ref = reference_loss(c);
  for (int tp : {2, 4})
    for (const LossResult& r : without_communication(tp, loss_layer(c, tp)))
      EXPECT_GT(relative_error(r.losses, ref.losses), kWrong) << "TP " << tp;
}

}  // namespace
}  // namespace tessera
