// The tensor-core instructions of core/ops/tensor_core.cuh on the GPU against the fragment
// layouts of tests/ptx_fragments.h, which the CPU emulation (tests/simt_emulation.h) also uses:
// if these pass, the emulated kernel tests (test_attention_emulated) hold for the hardware's
// layouts, and a failing tensor-core attention test with passing tests here points at the
// kernels, not at the layouts they were written for.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>

#include "core/dtype.h"
#include "tests/gpu_tensor_core_probe.h"
#include "tests/ptx_fragments.h"

namespace tessera {
namespace {

constexpr int kLanes = 32;

uint16_t bf16_bits(float x) {
  return to_bf16(x).bits;
}

TEST(TensorCoreInstructions, MmaFragmentsAreTheDocumentedOnes) {
  std::mt19937_64 rng(5);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  // Values bf16 holds exactly, so that the products are exact in fp32.
  float A[16][16], B[16][8], C[16][8];
  for (auto& row : A)
    for (float& x : row) x = to_float(to_bf16(dist(rng)));
  for (auto& row : B)
    for (float& x : row) x = to_float(to_bf16(dist(rng)));
  for (auto& row : C)
    for (float& x : row) x = dist(rng);
  uint32_t a[kLanes * 4] = {}, b[kLanes * 2] = {};
  float c[kLanes * 4], d[kLanes * 4];
  for (int lane = 0; lane < kLanes; ++lane) {
    for (int r = 0; r < 4; ++r)
      for (int h = 0; h < 2; ++h) {
        const ptx::Element e = ptx::a_element(lane, r, h);
        a[4 * lane + r] |= static_cast<uint32_t>(bf16_bits(A[e.row][e.col])) << (16 * h);
      }
    for (int r = 0; r < 2; ++r)
      for (int h = 0; h < 2; ++h) {
        const ptx::Element e = ptx::b_element(lane, r, h);
        b[2 * lane + r] |= static_cast<uint32_t>(bf16_bits(B[e.row][e.col])) << (16 * h);
      }
    for (int i = 0; i < 4; ++i) {
      const ptx::Element e = ptx::c_element(lane, i);
      c[4 * lane + i] = C[e.row][e.col];
    }
  }
  gpu_test::run_mma(d, a, b, c);
  for (int lane = 0; lane < kLanes; ++lane) {
    for (int i = 0; i < 4; ++i) {
      const ptx::Element e = ptx::c_element(lane, i);
      double want = C[e.row][e.col], scale = std::abs(want);
      for (int k = 0; k < 16; ++k) {
        want += static_cast<double>(A[e.row][k]) * B[k][e.col];
        scale += std::abs(static_cast<double>(A[e.row][k]) * B[k][e.col]);
      }
      // fp32 sums of 17 exact terms, in the hardware's order: a few roundings of the scale.
      EXPECT_NEAR(d[4 * lane + i], want, 1e-5 * scale)
          << "lane " << lane << ", value " << i << ": D(" << e.row << ", " << e.col << ")";
    }
  }
}

TEST(TensorCoreInstructions, LdmatrixTransGivesTheDocumentedElements) {
  // Every element distinct: 1 + its index, as raw 16-bit values.
  uint16_t tile[16 * 16];
  for (int i = 0; i < 16 * 16; ++i) tile[i] = static_cast<uint16_t>(i + 1);
  // The kernels' addressing (attention_bf16_kernels.cuh, load_b_pair): matrix m of lanes 8 m..
  // is rows 8 (m % 2).. and columns 8 (m / 2).. of the tile.
  int row_of_lane[kLanes], col_of_lane[kLanes];
  for (int lane = 0; lane < kLanes; ++lane) {
    row_of_lane[lane] = (lane & 7) + ((lane >> 3) & 1) * 8;
    col_of_lane[lane] = (lane >> 4) * 8;
  }
  uint32_t r[kLanes * 4];
  gpu_test::run_ldmatrix_x4_trans(r, tile, row_of_lane, col_of_lane);
  for (int lane = 0; lane < kLanes; ++lane) {
    for (int m = 0; m < 4; ++m) {
      for (int h = 0; h < 2; ++h) {
        const ptx::RowElement e = ptx::ldmatrix_trans_element(lane, m, h);
        const int row = row_of_lane[e.address_lane], col = col_of_lane[e.address_lane] + e.col;
        const uint16_t got = static_cast<uint16_t>(r[4 * lane + m] >> (16 * h));
        EXPECT_EQ(got, tile[row * 16 + col])
            << "lane " << lane << ", register " << m << ", half " << h << ": expected tile(" << row
            << ", " << col << ")";
      }
    }
  }
}

TEST(TensorCoreInstructions, CpAsyncCopiesSixteenBytesOrZeroFills) {
  uint8_t src[kLanes * 16], dst[kLanes * 16];
  for (int i = 0; i < kLanes * 16; ++i) src[i] = static_cast<uint8_t>(i * 7 + 1);
  int valid[kLanes];
  for (int lane = 0; lane < kLanes; ++lane) valid[lane] = lane % 3 != 2;
  gpu_test::run_cp_async(dst, src, valid);
  for (int i = 0; i < kLanes * 16; ++i)
    EXPECT_EQ(dst[i], valid[i / 16] ? src[i] : 0) << "byte " << i << " (lane " << i / 16 << ")";
}

}  // namespace
}  // namespace tessera
