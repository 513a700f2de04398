// One warp running each tensor-core instruction of core/ops/tensor_core.cuh once, for
// tests/gpu_tensor_core_test.cpp (defined in tests/gpu_tensor_core_probe.cu). Host arrays in,
// host arrays out; registers are lane-major (lane 0's first, then lane 1's, ...).
#pragma once

#include <cstdint>

namespace tessera::gpu_test {

// d = a b + c with mma.m16n8k16 (bf16 in, fp32 accumulate): a 4, b 2, c and d 4 registers per
// lane.
void run_mma(float* d, const uint32_t* a, const uint32_t* b, const float* c);

// A 16 x 16 tile of 16-bit values in shared memory; lane l gives the address of the element
// (row_of_lane[l], col_of_lane[l]) to ldmatrix.x4.trans, and r receives its 4 registers per lane.
void run_ldmatrix_x4_trans(uint32_t* r, const uint16_t* tile, const int* row_of_lane,
                           const int* col_of_lane);

// Lane l copies src[16 l, 16 l + 16) with cp.async into shared memory that held 0xab bytes (zero
// bytes where !valid[l]); dst gets the shared memory after the wait.
void run_cp_async(uint8_t* dst, const uint8_t* src, const int* valid);

}  // namespace tessera::gpu_test
