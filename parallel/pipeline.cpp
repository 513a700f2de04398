// The 1F1B executor: one GPT stage, activations and their gradients by send/recv.
#include "parallel/pipeline.h"

#include "core/error.h"

namespace tessera {

PipelineEngine::PipelineEngine(GPT& model, Communicator& pp, int64_t micro_batch, int microbatches)
    : model_(model),
      pp_(pp),
      microbatches_(microbatches),
      first_(pp.rank() == 0),
      last_(pp.rank() == pp.size() - 1),
      schedule_(one_f_one_b(pp.size(), pp.rank(), microbatches)) {
  TESSERA_CHECK(first_ == model.shard().has_embedding && last_ == model.shard().has_head,
                "PipelineEngine: the PP group's ranks do not match the model's stages");
  const ModelConfig& cfg = model.config();
  const Shape boundary = model.stage_shape(micro_batch);
  const int slots = in_flight_microbatches(pp.size(), pp.rank(), microbatches);
  for (int i = 0; i < slots; ++i) {
    acts_.push_back(model.make_activations(micro_batch));
    if (!first_) {
      stage_input_.emplace_back(boundary, cfg.dtype, cfg.device);
      input_grad_.emplace_back(boundary, cfg.dtype, cfg.device);
    }
  }
  output_sent_.resize(static_cast<size_t>(slots));
  input_grad_sent_.resize(static_cast<size_t>(slots));
  if (!last_) output_grad_ = Tensor(boundary, cfg.dtype, cfg.device);
}

void PipelineEngine::wait(std::unique_ptr<CommRequest>& request) {
  if (request) request->wait();
  request.reset();
}

void PipelineEngine::forward(int mb, const std::vector<Tensor>& inputs,
                             const std::vector<Tensor>& targets, double& loss_sum, bool warmup) {
  const size_t slot = static_cast<size_t>(mb) % acts_.size();
  GPTActivations& a = acts_[slot];
  // The slot's previous microbatch sent its output from these activations; let it finish.
  wait(output_sent_[slot]);
  const Tensor* stage_input = nullptr;
  if (!first_) {
    pp_.irecv(stage_input_[slot], pp_.rank() - 1)->wait();
    stage_input = &stage_input_[slot];
  }
  const double loss =
      model_.forward(a, first_ ? &inputs[static_cast<size_t>(mb)] : nullptr,
                     last_ ? &targets[static_cast<size_t>(mb)] : nullptr, stage_input);
  if (last_) loss_sum += loss;
  if (last_) return;
  output_sent_[slot] = pp_.isend(a.residual.back(), pp_.rank() + 1);
  // Before the stage's first backward no gradient comes back that this send could cross, so it
  // may start alone. Held back, stage 0's warm-up sends would wait for its first backward's
  // receive, and the pipeline would fill PP - 2 forwards late.
  if (warmup) output_sent_[slot]->test();
}

void PipelineEngine::backward(int mb, double loss_scale, const GradReadyFn* on_ready,
                              const std::function<void()>& after_backward) {
  const size_t slot = static_cast<size_t>(mb) % acts_.size();
  const Tensor* output_grad = nullptr;
  if (!last_) {
    pp_.irecv(output_grad_, pp_.rank() + 1)->wait();
    output_grad = &output_grad_;
  }
  Tensor* input_grad = nullptr;
  if (!first_) {
    wait(input_grad_sent_[slot]);
    input_grad = &input_grad_[slot];
  }
  const bool last_microbatch = mb == microbatches_ - 1;
  model_.backward(acts_[slot], loss_scale, output_grad, input_grad,
                  last_microbatch ? on_ready : nullptr);
  if (!last_microbatch && after_backward) after_backward();
  if (!first_) input_grad_sent_[slot] = pp_.isend(input_grad_[slot], pp_.rank() - 1);
}

double PipelineEngine::evaluate(const std::vector<Tensor>& inputs,
                                const std::vector<Tensor>& targets) {
  TESSERA_CHECK(inputs.size() == targets.size() && !inputs.empty(),
                "PipelineEngine::evaluate: expected one input and target tensor per microbatch");
  double loss_sum = 0;
  for (size_t mb = 0; mb < inputs.size(); ++mb)
    forward(static_cast<int>(mb), inputs, targets, loss_sum, true);
  for (auto& r : output_sent_) wait(r);
  return loss_sum;
}

double PipelineEngine::run(const std::vector<Tensor>& inputs, const std::vector<Tensor>& targets,
                           double loss_scale, const GradReadyFn* on_ready,
                           const std::function<void()>& after_backward) {
  TESSERA_CHECK(static_cast<int>(inputs.size()) == microbatches_ &&
                    static_cast<int>(targets.size()) == microbatches_,
                "PipelineEngine::run: expected one input and target tensor per microbatch");
  double loss_sum = 0;
  bool warmup = true;
  for (const PipeAction& action : schedule_) {
    if (action.kind == PipeAction::Forward) {
      forward(action.microbatch, inputs, targets, loss_sum, warmup);
    } else {
      warmup = false;
      backward(action.microbatch, loss_scale, on_ready, after_backward);
    }
  }
  for (auto& r : output_sent_) wait(r);
  for (auto& r : input_grad_sent_) wait(r);
  return loss_sum;
}

}  // namespace tessera
