// PipelineEngine: runs one training step's forward and backward passes of a GPT stage over M
// microbatches in 1F1B order (parallel/pipeline_schedule.h). Activations go to the next stage
// and activation gradients to the previous one through the PP group: sends are posted without
// blocking and receives block, so neighbouring stages never deadlock whatever the message size.
// The engine keeps one activation set per microbatch in flight (min(p - s, M) on stage s).
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "core/communicator.h"
#include "core/model/gpt.h"
#include "parallel/pipeline_schedule.h"

namespace tessera {

class PipelineEngine {
 public:
  // pp: the pipeline group, rank = stage. micro_batch sequences per microbatch.
  PipelineEngine(GPT& model, Communicator& pp, int64_t micro_batch, int microbatches);

  // Forward and backward of every microbatch: inputs[i] and targets[i] are I32 [micro, T]
  // (only the first stage reads inputs, only the last targets). The loss of microbatch i is
  // scaled by loss_scale in the backward. on_ready goes to the backward of the last microbatch,
  // when the gradients become final; after_backward, when given, runs after the backward of
  // every other microbatch (GradBuckets::end_microbatch). Returns the sum of the microbatch
  // losses on the last stage, 0 on the others.
  double run(const std::vector<Tensor>& inputs, const std::vector<Tensor>& targets,
             double loss_scale, const GradReadyFn* on_ready = nullptr,
             const std::function<void()>& after_backward = {});

  // Forward only, the microbatches in order (validation): the sum of their losses on the last
  // stage, 0 on the others. Gradients are untouched.
  double evaluate(const std::vector<Tensor>& inputs, const std::vector<Tensor>& targets);

 private:
  // warmup: no backward has run yet in this step (or none will: evaluate), so the output's send
  // starts at once; later, NCCL holds it back until the stage's next receive (see isend).
  void forward(int mb, const std::vector<Tensor>& inputs, const std::vector<Tensor>& targets,
               double& loss_sum, bool warmup);
  void backward(int mb, double loss_scale, const GradReadyFn* on_ready,
                const std::function<void()>& after_backward);
  void wait(std::unique_ptr<CommRequest>& request);

  GPT& model_;
  Communicator& pp_;
  int microbatches_;
  bool first_, last_;
  std::vector<PipeAction> schedule_;
  // One entry per microbatch in flight; microbatch i uses slot i % slots.
  std::vector<GPTActivations> acts_;
  std::vector<Tensor> stage_input_, input_grad_;
  std::vector<std::unique_ptr<CommRequest>> output_sent_, input_grad_sent_;
  Tensor output_grad_;
};

}  // namespace tessera
