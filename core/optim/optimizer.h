// AdamW over a model's Params, and global-norm clipping: its factor (clip_scale), which the
// Trainer (launcher/trainer.cpp) and bench_train_step hand to the update (AdamW::step's
// grad_scale); tests that train a model alone scale the gradients in place
// (tests/clip_grad_norm.h). AdamW owns the two moment tensors of every Param, of the Param's dtype
// and device; for a bfloat16 Param (mixed precision on the GPU) also its fp32 master weights:
// moments and masters are fp32, the update runs on the masters, and the bf16 values are rounded
// from them in the same pass (ops::adamw_update_mixed, from the bf16 gradient or the fp32 ones of
// use_gradients; no fp32 gradient copy). Weight decay goes to matmul weights only, unless
// configured for embeddings (Megatron-LM decays them by default) and for biases and norms too
// (docs/DECISIONS.md).
#pragma once

#include <vector>

#include "core/communicator.h"
#include "core/model/param.h"
#include "core/ops/adamw.h"

namespace tessera {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  bool decay_embeddings = false;
  bool decay_biases_norms = false;
  double clip = 1.0;  // max global gradient norm; <= 0 disables clipping
};

// Sum of squares of the gradients this rank counts (Param::counted_here), in a fixed order. One
// batched ops::sum_of_squares: a single wait for the GPU. (The Trainer sums runs of its flat
// gradient buffer instead: GradBuckets::counted_grads.)
double grad_sum_of_squares(const std::vector<Param*>& params);

// The L2 norm of all gradients of the model, counting each global element once: the sums of
// squares of every rank of `model_parallel` (the TP and PP ranks of one replica) are added.
double global_grad_norm(const std::vector<Param*>& params, Communicator& model_parallel);

// torch.nn.utils.clip_grad_norm_'s factor: max_norm / (norm + 1e-6) where that is below 1, else
// 1; also 1 when max_norm <= 0 (clipping off) or the norm is not finite.
double clip_scale(double norm, double max_norm);

// The weight decay AdamW applies to p under cfg (by ParamKind).
double adamw_weight_decay(const Param& p, const AdamWConfig& cfg);

// The scalars of update t (1-based) at rate lr of a tensor with this weight decay, its gradients
// times grad_scale: what AdamW and ZeroAdamW hand to ops::adamw_update(_mixed).
ops::AdamWStep adamw_step(const AdamWConfig& cfg, double lr, double weight_decay, int64_t t,
                          double grad_scale);

class AdamW {
 public:
  AdamW(std::vector<Param*> params, const AdamWConfig& cfg);
  // One update at learning rate lr from the gradients times grad_scale (clip_scale's factor);
  // increments the step count first (t starts at 1).
  void step(double lr, double grad_scale = 1);
  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }  // when resuming
  std::vector<Tensor>& exp_avg() { return m_; }
  std::vector<Tensor>& exp_avg_sq() { return v_; }
  // The fp32 master weights of bfloat16 Params, by Param index (undefined for the others): what
  // a checkpoint saves and loads as the weights.
  std::vector<Tensor>& master() { return master_; }
  // Casts each bfloat16 Param's value from its master weights (after loading them).
  void refresh_values();
  // The fp32 gradients of the bfloat16 Params (by Param index, shaped like them) to step from,
  // instead of their bf16 grad: the sums GradBuckets accumulates.
  void use_gradients(const std::vector<Tensor>& fp32_grads);

 private:
  std::vector<Param*> params_;
  AdamWConfig cfg_;
  std::vector<Tensor> m_, v_;
  // For bfloat16 Params (else undefined): fp32 master weights.
  std::vector<Tensor> master_;
  // use_gradients' fp32 gradients (views, by Param index; undefined for the others). Empty until
  // then: the update reads each bf16 Param's grad directly.
  std::vector<Tensor> grad32_;
  int64_t t_ = 0;
};

}  // namespace tessera
