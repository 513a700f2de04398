// cuDNN's fused attention (core/ops/attention_cudnn.h) as far as a machine without a GPU can
// take it: cuDNN loads with dlopen and reports its version, and the forward and backward SDPA
// graphs that tessera builds for its shapes pass the cuDNN frontend's own checks for the GPUs
// tessera targets (sm 8.0 and 9.0): dimensions, the strided views into qkv, data types, the
// causal mask. Running them needs a GPU: tests/gpu_attention_test.cpp.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "core/error.h"
#include "core/ops/attention.h"
#include "core/ops/attention_cudnn.h"

namespace tessera {
namespace {

class CudnnAttention : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!ops::cudnn_attention_built())
      GTEST_SKIP() << "this build has no cuDNN attention: the cuDNN frontend's headers were not "
                      "found when it was configured (scripts/setup.sh installs them)";
  }
};

TEST_F(CudnnAttention, LoadsCudnn9AndIsChosenByName) {
  const std::string version = ops::cudnn_attention_version();
  EXPECT_EQ(version.rfind("9.", 0), 0u) << version;
  ops::AttentionKernels kernels{};
  ASSERT_TRUE(ops::attention_kernels_named("cudnn", &kernels));
  EXPECT_EQ(kernels, ops::AttentionKernels::Cudnn);
  EXPECT_STREQ(ops::attention_kernels_name(kernels), "cudnn");
}

TEST_F(CudnnAttention, GraphsForTesserasShapesPassTheFrontendChecks) {
  for (const int sm : {80, 90}) {
    for (const int64_t hd : {64, 128}) {
      // T = 1 is refused by cuDNN's backward; tessera's own kernels take it (attention_cuda.cu).
      for (const int64_t T : {2, 37, 1024}) {
        SCOPED_TRACE("sm " + std::to_string(sm) + ", head_dim " + std::to_string(hd) + ", T " +
                     std::to_string(T));
        EXPECT_NO_THROW(ops::cuda::validate_cudnn_attention(2, T, 3, hd, sm));
        EXPECT_NO_THROW(ops::cuda::validate_cudnn_attention(8, T, 16, hd, sm));
      }
    }
  }
}

// The checks above are not vacuous: a head dim cuDNN cannot take is refused, with a message
// that names the option, the shape and cuDNN's reason.
TEST_F(CudnnAttention, AShapeCudnnCannotTakeIsRefusedNamingTheOption) {
  try {
    ops::cuda::validate_cudnn_attention(2, 37, 3, 60, 90);
    FAIL() << "head_dim 60 passed the frontend's checks";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("--gpu.attention cudnn"), std::string::npos) << what;
    EXPECT_NE(what.find("head_dim 60"), std::string::npos) << what;
    EXPECT_NE(what.find("multiple of 8"), std::string::npos) << what;
    EXPECT_NE(what.find("tensor_cores or cuda_cores"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace tessera
