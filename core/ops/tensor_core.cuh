// The PTX instructions the tensor-core kernels use (sm_80 and later), one function each, so that
// the kernels hold no inline assembly and tests can run them on the CPU with emulated
// instructions of the same signatures (tests/simt_emulation.h).
#pragma once

#include <cstdint>

namespace tessera::ops::cuda {

// d += a b: a 16 x 16 bf16 (4 registers of 2), b 16 x 8 bf16 (2), d 16 x 8 fp32, one warp.
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4],
                                                  uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8 x 8 b16 matrices from shared memory, transposed: lane 8 i + j gives the address of row
// j of matrix i; r[i] receives, for lane 4 g + t, elements (2t, g) and (2t + 1, g) of matrix i.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* shared_row) {
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(shared_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// 16 bytes from global to shared memory without the registers, or 16 zero bytes when !valid;
// complete after cp_async_commit() and cp_async_wait_all().
__device__ __forceinline__ void cp_async_16(void* shared_dst, const void* global_src, bool valid) {
  const uint32_t to = static_cast<uint32_t>(__cvta_generic_to_shared(shared_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(to), "l"(global_src),
               "r"(valid ? 16 : 0));
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}

__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_all;\n" ::);
}

}  // namespace tessera::ops::cuda
