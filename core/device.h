// What accelerators this process can use. Without the CUDA backend, or without a GPU and its
// driver, cuda_device_count() is 0 and GPU code paths and tests are skipped.
#pragma once

#include <cstddef>
#include <string>

#include "core/dtype.h"

namespace tessera {

bool cuda_backend_built();
// Number of usable GPUs; 0 when none or no driver ("CUDA driver version is insufficient").
int cuda_device_count();
// One line: "cuda: 1 device(s), NVIDIA H100 ..." or why there is none.
std::string cuda_summary();

// The name of the GPU this process uses, as CUDA reports it ("NVIDIA H100 80GB HBM3"); empty
// without one.
std::string cuda_device_name();
// The PCI bus id of the GPU this process uses ("0000:1B:00.0"), the same whatever
// CUDA_VISIBLE_DEVICES numbers it; empty without one.
std::string cuda_device_bus_id();
// The dense peak FLOP/s of the GPU named `name` computing in `dtype`: bf16 on tensor cores,
// float32 on CUDA cores (tessera's float32 is strict fp32, no TF32); 0 for a GPU or dtype not
// in its table (A100, H100 SXM / PCIe / NVL, H200, and their export variants). What MFU divides by.
double gpu_peak_flops(const std::string& name, DType dtype);
// What MFU divides by for this process's GPU computing in `dtype`: `given_tflops` (an option's
// value, TFLOP/s) when positive, else gpu_peak_flops of cuda_device_name(); FLOP/s, 0 unknown.
double this_gpu_peak_flops(DType dtype, double given_tflops);

// The GPU this process uses from now on (launcher's gpu_for: its index on its node, or the only
// one it sees).
void select_cuda_device(int index);
// Copies `bytes` between host and device memory, either way or within one side. Device work
// goes on the compute stream, in order with the kernels; returns once the copy is done when the
// host is an end of it (a device-to-device copy is only queued, like a kernel).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
// Zeroes device memory on the compute stream.
void device_zero(void* p, size_t bytes);
// Waits until the compute stream has finished its work.
void device_synchronize();
// Device memory held by live Buffers now, and the most held at once since the last reset.
size_t device_bytes_in_use();
size_t device_peak_bytes();
void reset_device_peak();
// Memory of the GPU this process uses (0 without one).
size_t device_memory_bytes();

}  // namespace tessera
