// Where each lane's registers sit in the matrices of the tensor-core instructions that
// core/ops/tensor_core.cuh wraps, as the PTX ISA documents them ("Matrix Fragments for
// mma.m16n8k16", bf16 with fp32 accumulation; "ldmatrix"), for lane = 4 g + t. One definition
// for the CPU emulation of those instructions (tests/simt_emulation.h) and for the GPU test that
// holds the hardware to it (tests/gpu_tensor_core_test.cpp): when the second passes, what the
// emulation checks of the kernels holds on the GPU too.
#pragma once

namespace tessera::ptx {

struct Element {
  int row, col;
};

// A (16 x 16, row-major), register r of 4 (r = 0..3), half h of its two bf16 (low = 0).
constexpr Element a_element(int lane, int r, int h) {
  return {lane / 4 + 8 * (r % 2), 2 * (lane % 4) + 8 * (r / 2) + h};
}

// B (16 x 8, k x n), register r of 2, half h: row k, column n.
constexpr Element b_element(int lane, int r, int h) {
  return {2 * (lane % 4) + 8 * r + h, lane / 4};
}

// C and D (16 x 8, fp32), value i of 4.
constexpr Element c_element(int lane, int i) {
  return {lane / 4 + 8 * (i / 2), 2 * (lane % 4) + i % 2};
}

// ldmatrix .x4 .trans: lanes 8 m .. 8 m + 7 give the addresses of rows 0..7 of 8 x 8 matrix m;
// register m of lane 4 g + t receives, transposed, the elements at row 2t + h and column g of
// matrix m, for halves h = 0, 1. Returned: the addressing lane, and the element in its row.
struct RowElement {
  int address_lane, col;
};
constexpr RowElement ldmatrix_trans_element(int lane, int m, int h) {
  return {8 * m + 2 * (lane % 4) + h, lane / 4};
}

}  // namespace tessera::ptx
