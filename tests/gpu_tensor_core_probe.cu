// The kernels behind tests/gpu_tensor_core_probe.h: one warp, each lane loading its registers
// (or addresses) from global memory, running the instruction of core/ops/tensor_core.cuh that
// the kernels use, and storing what it got.
#include "tests/gpu_tensor_core_probe.h"

#include <cstddef>

#include "core/cuda_common.cuh"
#include "core/ops/tensor_core.cuh"

namespace tessera::gpu_test {
namespace {

constexpr int kLanes = 32;
constexpr int kTile = 16;
constexpr int kTileLd = kTile + 8;  // padded rows, 48 bytes: each row 16-byte aligned

__global__ void mma_kernel(float* d, const uint32_t* a, const uint32_t* b, const float* c) {
  const int lane = static_cast<int>(threadIdx.x);
  uint32_t ra[4];
  float rd[4];
  for (int i = 0; i < 4; ++i) {
    ra[i] = a[4 * lane + i];
    rd[i] = c[4 * lane + i];
  }
  ops::cuda::mma_m16n8k16_bf16(rd, ra, b[2 * lane], b[2 * lane + 1]);
  for (int i = 0; i < 4; ++i) d[4 * lane + i] = rd[i];
}

__global__ void ldmatrix_kernel(uint32_t* r, const uint16_t* tile, const int* row_of_lane,
                                const int* col_of_lane) {
  __shared__ __align__(16) uint16_t s[kTile * kTileLd];
  const int lane = static_cast<int>(threadIdx.x);
  for (int i = lane; i < kTile * kTile; i += kLanes) s[i / kTile * kTileLd + i % kTile] = tile[i];
  __syncwarp();
  uint32_t rr[4];
  ops::cuda::ldmatrix_x4_trans(rr, s + row_of_lane[lane] * kTileLd + col_of_lane[lane]);
  for (int i = 0; i < 4; ++i) r[4 * lane + i] = rr[i];
}

__global__ void cp_async_kernel(uint8_t* dst, const uint8_t* src, const int* valid) {
  __shared__ __align__(16) uint8_t s[kLanes * 16];
  const int lane = static_cast<int>(threadIdx.x);
  for (int i = 0; i < 16; ++i) s[16 * lane + i] = 0xab;
  __syncwarp();
  ops::cuda::cp_async_16(s + 16 * lane, src + 16 * lane, valid[lane] != 0);
  ops::cuda::cp_async_commit();
  ops::cuda::cp_async_wait_all();
  __syncwarp();
  for (int i = 0; i < 16; ++i) dst[16 * lane + i] = s[16 * lane + i];
}

// Device copies of host arrays, freed at the end of the scope.
template <typename T>
struct DeviceArray {
  T* p = nullptr;
  size_t n;
  DeviceArray(const T* host, size_t count) : n(count) {
    CHECK_CUDA(cudaMalloc(&p, n * sizeof(T)));
    if (host != nullptr) CHECK_CUDA(cudaMemcpy(p, host, n * sizeof(T), cudaMemcpyHostToDevice));
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(p); }
  void to_host(T* host) const {
    CHECK_CUDA(cudaDeviceSynchronize());
    CHECK_CUDA(cudaMemcpy(host, p, n * sizeof(T), cudaMemcpyDeviceToHost));
  }
};

}  // namespace

void run_mma(float* d, const uint32_t* a, const uint32_t* b, const float* c) {
  DeviceArray<uint32_t> da(a, 4 * kLanes), db(b, 2 * kLanes);
  DeviceArray<float> dc(c, 4 * kLanes), dd(nullptr, 4 * kLanes);
  mma_kernel<<<1, kLanes>>>(dd.p, da.p, db.p, dc.p);
  CHECK_LAUNCH();
  dd.to_host(d);
}

void run_ldmatrix_x4_trans(uint32_t* r, const uint16_t* tile, const int* row_of_lane,
                           const int* col_of_lane) {
  DeviceArray<uint16_t> dtile(tile, kTile * kTile);
  DeviceArray<int> drow(row_of_lane, kLanes), dcol(col_of_lane, kLanes);
  DeviceArray<uint32_t> dr(nullptr, 4 * kLanes);
  ldmatrix_kernel<<<1, kLanes>>>(dr.p, dtile.p, drow.p, dcol.p);
  CHECK_LAUNCH();
  dr.to_host(r);
}

void run_cp_async(uint8_t* dst, const uint8_t* src, const int* valid) {
  DeviceArray<uint8_t> dsrc(src, 16 * kLanes), ddst(nullptr, 16 * kLanes);
  DeviceArray<int> dvalid(valid, kLanes);
  cp_async_kernel<<<1, kLanes>>>(ddst.p, dsrc.p, dvalid.p);
  CHECK_LAUNCH();
  ddst.to_host(dst);
}

}  // namespace tessera::gpu_test
