// The Trainer on the GPU (one rank, NCCL groups of one): its losses against the same run on the
// CPU, in float32 and bfloat16, and a checkpoint saved on the GPU that resumes bitwise on the GPU
// and within the layout tolerance on the CPU; ZeRO-1 of a bfloat16 model. Runs only where a GPU is
// present (tests/test_gpu.cpp).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "io/synthetic_corpus.h"
#include "launcher/checkpointing.h"
#include "launcher/trainer.h"
#include "parallel/local_communicator.h"
#include "tests/temp_dir.h"

namespace fs = std::filesystem;

namespace tessera {
namespace {

TrainConfig gpu_config(const fs::path& dir, Device device, DType dtype) {
  TrainConfig c;
  c.model.vocab_size = 512;
  c.model.d_model = 128;
  c.model.layers = 2;
  c.model.heads = 2;  // head dim 64, which the CUDA attention supports
  c.model.d_ff = 512;
  c.model.seq_len = 64;
  c.model.device = device;
  c.model.dtype = dtype;
  c.steps = 20;
  c.global_batch = 8;
  c.micro_batch = 4;  // two microbatches: gradient accumulation on the device
  c.schedule.lr = 3e-3;
  c.schedule.min_lr = 3e-4;
  c.schedule.warmup = 3;
  c.schedule.total_steps = c.steps;
  c.eval_interval = 0;
  c.run_dir = (dir / "run").string();
  c.data_path = (dir / "corpus").string();
  c.cache_dir = (dir / "cache").string();
  return c;
}

std::vector<double> train(const TrainConfig& cfg, int steps, const std::string& save_root = "",
                          const std::string& resume = "") {
  LocalCommunicator world("world");
  Trainer tr(cfg, 0, 1);
  tr.start(world);
  if (!resume.empty()) load_checkpoint(tr, resume);
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) losses.push_back(tr.step().loss);
  if (!save_root.empty()) {
    CheckpointSaver saver(tr, save_root, false);
    saver.save();
    saver.finish();
  }
  return losses;
}

class GpuTrainer : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test_support::fresh_test_dir("tessera_gpu_trainer");
    write_synthetic_corpus((dir_ / "corpus").string(), 512, 64, 200, 3);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

// The model-level tolerances of tests/gpu_model_test.cpp, for the same reasons.
constexpr double kF32LossRtol = 1e-3;
constexpr double kBf16LossRtol = 5e-2;

TEST_F(GpuTrainer, Float32StepsFollowTheCpu) {
  const std::vector<double> cpu = train(gpu_config(dir_, Device::CPU, DType::F32), 20);
  const std::vector<double> gpu = train(gpu_config(dir_, Device::CUDA, DType::F32), 20);
  for (size_t i = 0; i < cpu.size(); ++i)
    EXPECT_NEAR(gpu[i], cpu[i], kF32LossRtol * cpu[i]) << "step " << i + 1;
}

TEST_F(GpuTrainer, Bfloat16StepsFollowTheFloat32Cpu) {
  const std::vector<double> cpu = train(gpu_config(dir_, Device::CPU, DType::F32), 20);
  const std::vector<double> gpu = train(gpu_config(dir_, Device::CUDA, DType::BF16), 20);
  for (size_t i = 0; i < cpu.size(); ++i)
    EXPECT_NEAR(gpu[i], cpu[i], kBf16LossRtol * cpu[i]) << "step " << i + 1;
  EXPECT_LT(gpu.back(), gpu.front());
}

TEST_F(GpuTrainer, CheckpointOfAGpuRunResumesBitwiseOnTheGpuAndOnTheCpu) {
  for (DType dtype : {DType::F32, DType::BF16}) {
    const TrainConfig cfg = gpu_config(dir_, Device::CUDA, dtype);
    const std::string root = (dir_ / ("ckpt_" + dtype_name(dtype))).string();
    const std::vector<double> straight = train(cfg, 20);
    train(cfg, 10, root);
    const std::string step10 = root + "/step_00000010";
    ASSERT_TRUE(fs::exists(step10)) << step10;
    const std::vector<double> resumed = train(cfg, 10, "", step10);
    for (size_t i = 0; i < resumed.size(); ++i)
      EXPECT_EQ(resumed[i], straight[10 + i]) << dtype_name(dtype) << " step " << 11 + i;
    // The checkpoint holds float32 weights (the masters of a bf16 run): the CPU resumes it.
    const std::vector<double> on_cpu =
        train(gpu_config(dir_, Device::CPU, DType::F32), 10, "", step10);
    const double rtol = dtype == DType::F32 ? kF32LossRtol : kBf16LossRtol;
    for (size_t i = 0; i < on_cpu.size(); ++i)
      EXPECT_NEAR(on_cpu[i], straight[10 + i], rtol * straight[10 + i])
          << dtype_name(dtype) << " step " << 11 + i;
  }
}

// ZeRO-1 of a bfloat16 model on one GPU (DP 1: the sharded path, with every piece here). It
// trains as mixed AdamW does (only the gradient norm sums in another order), and its checkpoint,
// whose weights are the fp32 masters, resumes bitwise with ZeRO-1 and closely without. The bits of
// the sharded update against mixed AdamW on 1, 3 and 8 ranks: test_parallel and test_layouts, on
// the host.
TEST_F(GpuTrainer, ZeroOneWithBfloat16FollowsAdamWAndItsCheckpointResumesBitwise) {
  constexpr double kSameMathRtol = 1e-2;
  const TrainConfig plain = gpu_config(dir_, Device::CUDA, DType::BF16);
  TrainConfig zero = plain;
  zero.parallel.zero = 1;
  const std::vector<double> straight_plain = train(plain, 20);
  const std::vector<double> straight = train(zero, 20);
  for (size_t i = 0; i < straight.size(); ++i)
    EXPECT_NEAR(straight[i], straight_plain[i], kSameMathRtol * straight_plain[i])
        << "step " << i + 1;
  const std::string root = (dir_ / "ckpt_zero_bf16").string();
  train(zero, 10, root);
  const std::string step10 = root + "/step_00000010";
  ASSERT_TRUE(fs::exists(step10)) << step10;
  const std::vector<double> resumed = train(zero, 10, "", step10);
  const std::vector<double> without = train(plain, 10, "", step10);
  for (size_t i = 0; i < resumed.size(); ++i) {
    EXPECT_EQ(resumed[i], straight[10 + i]) << "step " << 11 + i;
    EXPECT_NEAR(without[i], straight[10 + i], kSameMathRtol * straight[10 + i])
        << "without ZeRO-1, step " << 11 + i;
  }
}

}  // namespace
}  // namespace tessera
