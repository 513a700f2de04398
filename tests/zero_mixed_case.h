// ZeRO-1 with bfloat16 parameters against mixed-precision AdamW on one rank, over any DP group:
// the same bf16 values, fp32 master weights and moments, bit for bit, after three steps of two
// microbatches with a clipping scale. Every DP rank's gradients differ, and all are multiples of
// 1/64 small enough that every sum (over microbatches, over ranks, in bf16 or fp32) is exact, so
// the reference may take the summed gradient as its own. The buckets are small, so pieces cut
// Params apart and, when DP does not divide a bucket, end in padding. Then the checkpoint path:
// every rank's pieces, loaded back bucket by bucket over zeroed values and moments, restore them
// exactly.
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "core/ops/adamw.h"
#include "parallel/grad_buckets.h"
#include "parallel/local_communicator.h"
#include "parallel/zero_optimizer.h"
#include "tests/bitwise.h"

namespace tessera::test_support {

// Params of every kind (so every weight-decay rule), bfloat16 on the host.
inline std::vector<Param> mixed_zero_params() {
  const ModelShard shard;
  std::vector<Param> ps;
  ps.push_back(make_param("w", ParamKind::Weight, ParamInit::Normal, 0.5, {5, 7}, -1, 1, shard));
  ps.push_back(make_param("b", ParamKind::Bias, ParamInit::Normal, 0.5, {9}, -1, 1, shard));
  ps.push_back(make_param("n", ParamKind::Norm, ParamInit::Ones, 0, {4}, -1, 1, shard));
  ps.push_back(
      make_param("e", ParamKind::Embedding, ParamInit::Normal, 0.5, {13, 3}, -1, 1, shard));
  ps.push_back(make_param("s", ParamKind::Weight, ParamInit::Normal, 0.5, {1}, -1, 1, shard));
  for (Param& p : ps) p.materialize(11, DType::BF16);
  return ps;
}

// DP rank q's gradient of element j of Param i, in microbatch mb of step `step`: k / 64, |k| <= 3.
inline float mixed_zero_grad(int q, int step, int mb, size_t i, int64_t j) {
  const int64_t k = ((q + 1) * (j + 3 * static_cast<int64_t>(i) + 5 * step + mb)) % 7 - 3;
  return static_cast<float>(k) / 64.0f;
}

inline void expect_sharded_mixed_adamw_is_adamw(Communicator& dp) {
  const int D = dp.size(), r = dp.rank();
  std::vector<Param> ref_params = mixed_zero_params(), zero_params = mixed_zero_params();
  std::vector<Param*> ref_order, zero_order;  // backward order: last first
  for (size_t i = ref_params.size(); i-- > 0;) {
    ref_order.push_back(&ref_params[i]);
    zero_order.push_back(&zero_params[i]);
  }
  const int64_t bucket_elements = 16;
  LocalCommunicator alone("dp");
  GradBuckets ref_buckets({ref_order}, alone, bucket_elements, false);
  GradBuckets zero_buckets({zero_order}, dp, bucket_elements, true);
  ASSERT_TRUE(zero_buckets.mixed_precision());
  AdamWConfig cfg;
  std::vector<Param*> ref_ptrs;
  std::vector<Tensor> sums;
  for (Param& p : ref_params) {
    ref_ptrs.push_back(&p);
    sums.push_back(ref_buckets.grad_of(p));
  }
  AdamW ref(ref_ptrs, cfg);
  ref.use_gradients(sums);
  ZeroAdamW zero(zero_buckets, cfg);
  ASSERT_TRUE(zero.mixed_precision());
  ASSERT_EQ(zero.state_dtype(), DType::F32);

  for (int step = 1; step <= 3; ++step) {
    ref_buckets.zero_grad();
    zero_buckets.zero_grad();
    for (int mb = 0; mb < 2; ++mb) {
      for (size_t i = 0; i < ref_params.size(); ++i)
        for (int64_t j = 0; j < ref_params[i].grad.numel(); ++j) {
          float all = 0;
          for (int q = 0; q < D; ++q) all += mixed_zero_grad(q, step, mb, i, j);
          ref_params[i].grad.data<bf16>()[j] = to_bf16(all);
          zero_params[i].grad.data<bf16>()[j] = to_bf16(mixed_zero_grad(r, step, mb, i, j));
        }
      if (mb == 0) {
        ref_buckets.end_microbatch(0);
        zero_buckets.end_microbatch(0);
      }
    }
    for (size_t i = 0; i < ref_order.size(); ++i) {
      ref_buckets.mark_ready(*ref_order[i]);
      zero_buckets.mark_ready(*zero_order[i]);
    }
    ref_buckets.finish();
    zero_buckets.finish();  // the DP average of the fp32 sums
    ops::scale(ref_buckets.flat_grads(), 1.0 / D);
    // A clipping factor: scaled first for the reference, in the update's pass for ZeRO-1.
    ops::scale(ref_buckets.flat_grads(), 0.75);
    ref.step(1e-2);
    zero.step(1e-2, 0.75);
  }

  // The whole of a piece's state, laid out like flat_values(), from every rank's pieces.
  const std::vector<GradBuckets::Bucket>& bs = zero_buckets.buckets();
  const auto gathered = [&](Tensor ZeroAdamW::Piece::*state) {
    Tensor whole(zero_buckets.flat_values().shape(), DType::F32);
    for (size_t i = 0; i < bs.size(); ++i) {
      Tensor block = whole.slice0(bs[i].offset, bs[i].offset + bs[i].size);
      zero_buckets.dp().all_gather(block, zero.piece(i).*state);
    }
    return whole;
  };
  const Tensor m = gathered(&ZeroAdamW::Piece::exp_avg),
               v = gathered(&ZeroAdamW::Piece::exp_avg_sq),
               masters = gathered(&ZeroAdamW::Piece::master);
  const auto piece = [&](const Tensor& flat, const Param& p) {
    const int64_t at = zero_buckets.offset_of(p);
    return flat.slice0(at, at + p.value.numel()).view(p.value.shape());
  };
  for (size_t i = 0; i < ref_params.size(); ++i) {
    const Param& p = zero_params[i];
    EXPECT_TRUE(bitwise_equal(p.value, ref_params[i].value)) << p.name << ", DP " << D;
    EXPECT_TRUE(bitwise_equal(piece(masters, p), ref.master()[i])) << p.name << ", DP " << D;
    EXPECT_TRUE(bitwise_equal(piece(m, p), ref.exp_avg()[i])) << p.name << ", DP " << D;
    EXPECT_TRUE(bitwise_equal(piece(v, p), ref.exp_avg_sq()[i])) << p.name << ", DP " << D;
  }

  // What a resume does: each rank's pieces back, bucket by bucket, into zeroed values, moments
  // and masters, each rank rounding its piece of the values, then their all-gather.
  const auto load = [&](const Tensor& m_, const Tensor& v_, const Tensor& masters_) {
    for (size_t i = 0; i < bs.size(); ++i) {
      const int64_t begin = zero_buckets.piece_begin(bs[i]);
      const auto part = [&](const Tensor& t) {
        return t.slice0(begin, begin + zero_buckets.piece_length(bs[i]));
      };
      zero.load_piece(i, part(m_), part(v_), part(masters_));
    }
    zero.finish_load();  // every rank's piece of the values to every rank
  };
  zero_buckets.flat_values().zero();
  Tensor blank(m.shape(), DType::F32);
  load(blank, blank, blank);
  ASSERT_TRUE(bitwise_equal(gathered(&ZeroAdamW::Piece::master), blank));
  load(m, v, masters);
  EXPECT_TRUE(bitwise_equal(gathered(&ZeroAdamW::Piece::exp_avg), m)) << "DP " << D;
  EXPECT_TRUE(bitwise_equal(gathered(&ZeroAdamW::Piece::exp_avg_sq), v)) << "DP " << D;
  EXPECT_TRUE(bitwise_equal(gathered(&ZeroAdamW::Piece::master), masters)) << "DP " << D;
  for (size_t i = 0; i < ref_params.size(); ++i)
    EXPECT_TRUE(bitwise_equal(zero_params[i].value, ref_params[i].value))
        << zero_params[i].name << " after load_piece, DP " << D;
}

}  // namespace tessera::test_support
