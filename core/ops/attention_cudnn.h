// cuDNN's fused flash attention behind attention.h's AttentionKernels::Cudnn: its SDPA graph,
// built with the cuDNN frontend's headers, for causal bf16 attention read in place from the
// packed qkv. cuDNN itself is loaded with dlopen on first use, like cuBLASLt: a binary built
// with it starts, and runs every other kernel, on a machine without cuDNN. Internal to core/ops;
// the dispatcher (attention.cpp) has checked shapes, dtypes, devices and the head dim.
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.h"

namespace tessera::ops::cuda {

// Whether this build has the cuDNN attention: the cuDNN frontend's headers were found when it
// was configured (scripts/setup.sh installs them; CMake's CUDNN_FRONTEND_INCLUDE_DIR names them).
bool cudnn_attention_built();

// Loads cuDNN if it is not loaded yet and returns its version, as "9.19.0". InputError naming
// --gpu.attention when this build has no cuDNN attention or the library cannot be loaded.
std::string cudnn_attention_version();

// Makes the forward and both backward graphs (deterministic or not) for this shape and runs the
// frontend's validate() on them for GPUs of compute capability sm (90: H100, H200): dimensions,
// strides, data types, the mask, what that GPU supports in principle. Needs cuDNN's library,
// not a GPU, so the host tests run it; cuDNN's own operation graphs, engines and plans are
// built only on a GPU, at the first call. InputError with the frontend's message.
void validate_cudnn_attention(int64_t B, int64_t S, int64_t H, int64_t hd, int sm);

// Whether the backward asks for cuDNN's deterministic algorithm: true (the default) keeps runs
// bitwise repeatable, as tessera's own kernels are; false lets cuDNN pick its other backward,
// which sums dQ with atomics (results vary in the last bits between runs) and needs no
// T x T workspace. For measuring the difference (bench_gpu_ops); no option sets it yet.
void set_cudnn_deterministic(bool deterministic);

// qkv[B, S, 3 H hd] bf16 -> out[B, S, H hd] bf16 and lse[B, H, S] F32 (natural log, as
// attention.h defines it), on the compute stream. hd is 64 or 128, S >= 2; every pointer 16-byte
// aligned (cuDNN moves 16-byte vectors: attention_cuda.cu hands it nothing less).
void attention_forward_cudnn(bf16* out, float* lse, const bf16* qkv, int64_t B, int64_t S,
                             int64_t H, int64_t hd);
// dqkv[B, S, 3 H hd] = the gradient of the forward, from dout and the forward's out and lse.
void attention_backward_cudnn(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out,
                              const float* lse, int64_t B, int64_t S, int64_t H, int64_t hd);

}  // namespace tessera::ops::cuda
