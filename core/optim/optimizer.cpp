// Global gradient norm, clipping, and AdamW over all Params with per-kind weight decay.
#include "core/optim/optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/ops/cast.h"

namespace tessera {

double grad_sum_of_squares(const std::vector<Param*>& params) {
  std::vector<Tensor> grads;
  for (const Param* p : params)
    if (p->counted_here()) grads.push_back(p->grad);
  return ops::sum_of_squares(grads);  // one wait for the GPU, not one per Param
}

double global_grad_norm(const std::vector<Param*>& params, Communicator& model_parallel) {
  Tensor ss({1}, DType::F64);
  ss.data<double>()[0] = grad_sum_of_squares(params);
  model_parallel.all_reduce(ss, ReduceOp::Sum);
  return std::sqrt(ss.data<double>()[0]);
}

double clip_scale(double norm, double max_norm) {
  if (max_norm <= 0 || !std::isfinite(norm)) return 1;
  return std::min(1.0, max_norm / (norm + 1e-6));
}

AdamW::AdamW(std::vector<Param*> params, const AdamWConfig& cfg)
    : params_(std::move(params)), cfg_(cfg) {
  for (const Param* p : params_) {
    const bool mixed = p->value.dtype() == DType::BF16;
    const DType dtype = mixed ? DType::F32 : p->value.dtype();
    const Device device = p->value.device();
    m_.emplace_back(p->value.shape(), dtype, device);
    v_.emplace_back(p->value.shape(), dtype, device);
    master_.emplace_back();
    if (mixed) {
      master_.back() = Tensor(p->value.shape(), DType::F32, device);
      ops::cast(master_.back(), p->value);
    }
  }
}

double adamw_weight_decay(const Param& p, const AdamWConfig& cfg) {
  switch (p.kind) {
    case ParamKind::Weight:
      return cfg.weight_decay;
    case ParamKind::Embedding:
      return cfg.decay_embeddings ? cfg.weight_decay : 0.0;
    case ParamKind::Bias:
    case ParamKind::Norm:
      return cfg.decay_biases_norms ? cfg.weight_decay : 0.0;
  }
  return 0.0;
}

void AdamW::use_gradients(const std::vector<Tensor>& fp32_grads) {
  TESSERA_CHECK(fp32_grads.size() == params_.size(), "AdamW::use_gradients: one per Param");
  grad32_.assign(params_.size(), Tensor());
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!master_[i].defined()) continue;
    TESSERA_CHECK(
        fp32_grads[i].dtype() == DType::F32 && fp32_grads[i].shape() == params_[i]->value.shape(),
        "AdamW::use_gradients: " + params_[i]->name + " needs an fp32 gradient of its shape");
    grad32_[i] = fp32_grads[i];
  }
}

void AdamW::refresh_values() {
  for (size_t i = 0; i < params_.size(); ++i)
    if (master_[i].defined()) ops::cast(params_[i]->value, master_[i]);
}

ops::AdamWStep adamw_step(const AdamWConfig& cfg, double lr, double weight_decay, int64_t t,
                          double grad_scale) {
  return ops::AdamWStep{.lr = lr,
                        .beta1 = cfg.beta1,
                        .beta2 = cfg.beta2,
                        .eps = cfg.eps,
                        .weight_decay = weight_decay,
                        .t = t,
                        .grad_scale = grad_scale};
}

void AdamW::step(double lr, double grad_scale) {
  ++t_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Param& p = *params_[i];
    const ops::AdamWStep s = adamw_step(cfg_, lr, adamw_weight_decay(p, cfg_), t_, grad_scale);
    if (master_[i].defined()) {  // the bf16 value is written in the same pass
      const Tensor& grad = grad32_.empty() ? p.grad : grad32_[i];
      ops::adamw_update_mixed(master_[i], p.value, grad, m_[i], v_[i], s);
    } else {
      ops::adamw_update(p.value, p.grad, m_[i], v_[i], s);
    }
  }
}

}  // namespace tessera
