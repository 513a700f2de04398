// PipelineEngine: runs one training step's forward and backward passes of a GPT stage over M
// microbatches in 1F1B order (parallel/pipeline_schedule.h), or with several model chunks on
// the stage in interleaved 1F1B order. Activations go to the next stage and activation gradients
// to the previous one through the PP group (round the ring from the last stage to the first, from
// one chunk to the next, when interleaved): sends are posted without blocking and receives
// block, so neighbouring stages never deadlock whatever the message size. The engine keeps the
// layers' activations of as many microbatches as are in flight at once (min(p - s, M) on stage s
// without interleaving), shared among chunks of as many layers, and each chunk's ends (token
// ids, the head's tensors) for the microbatches in flight on it.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "core/communicator.h"
#include "core/model/gpt.h"
#include "parallel/pipeline_schedule.h"

namespace tessera {

// The stages before and after this one in the PP group `pp`, round the ring: with model chunks
// the last stage's output goes on to the first stage's next chunk, and the first stage's input
// gradient back to the last stage's previous chunk.
int previous_stage(const Communicator& pp);
int next_stage(const Communicator& pp);

class PipelineEngine {
 public:
  // pp: the pipeline group, rank = stage. micro_batch sequences per microbatch. With
  // model.chunks() > 1 the interleaved schedule, which the layout must allow
  // (interleaved_schedule_problem).
  PipelineEngine(GPT& model, Communicator& pp, int64_t micro_batch, int microbatches);

  // Forward and backward of every microbatch: inputs[i] and targets[i] are I32 [micro, T]
  // (only the first stage reads inputs, only the last targets). The loss of microbatch i is
  // scaled by loss_scale in the backward. on_ready goes to the backward of each chunk's last
  // microbatch, when the chunk's gradients become final; after_backward, when given, runs with
  // the chunk after each of its backwards but the last microbatch's (GradBuckets::
  // end_microbatch). Returns the sum of the
  // microbatch losses on the last stage, 0 on the others.
  double run(const std::vector<Tensor>& inputs, const std::vector<Tensor>& targets,
             double loss_scale, const GradReadyFn* on_ready = nullptr,
             const std::function<void(int chunk)>& after_backward = {});

  // Forward only, the microbatches in order (validation; interleaved: interleaved_forwards): the
  // sum of their losses on the last stage, 0 on the others. Gradients are untouched.
  double evaluate(const std::vector<Tensor>& inputs, const std::vector<Tensor>& targets);

 private:
  // One set of a chunk's layers' activations (ActivationParts::Layers), and the send of the
  // output of the last forward that ran in it.
  struct LayerSet {
    GPTActivations acts;
    std::unique_ptr<CommRequest> output_sent;
  };
  // The sets of the chunks of one number of layers; a forward takes the one freed longest ago.
  struct LayerSets {
    std::vector<LayerSet> sets;
    std::deque<LayerSet*> free;
  };
  // What this stage keeps for one model chunk. Microbatch i uses slot i % acts.size(): its ends
  // (ActivationParts::Ends) with the layer set its forward took, received input, input gradient.
  struct Chunk {
    bool first = false, last = false;  // the model's first chunk (embedding), its last (loss)
    int64_t layers = 0;
    std::vector<GPTActivations> acts;
    std::vector<LayerSet*> held;
    std::vector<Tensor> stage_input, input_grad;
    std::vector<std::unique_ptr<CommRequest>> input_grad_sent;
  };
  struct Batches {
    const std::vector<Tensor>& inputs;
    const std::vector<Tensor>& targets;
    bool backward_follows;  // false: a forward frees its layer set at once (evaluate)
  };
  struct Backward {
    double loss_scale;
    const GradReadyFn* on_ready;
    const std::function<void(int)>& after_backward;
  };

  // Where a forward's or a backward's input comes from: received here (plain 1F1B), or already
  // received by post_receives (the interleaved schedule's steps).
  enum class Input { ReceiveHere, Posted };
  // When a forward's output starts on its way: at once (1F1B's warm-up, see forward in
  // pipeline.cpp), or with the next receive, as NCCL groups them.
  enum class Send { Now, WithNextReceive };
  // Each returns the send it posted, if any.
  CommRequest* forward(const PipeAction& action, const Batches& batches, double& loss_sum,
                       Input input, Send send);
  CommRequest* backward(const PipeAction& action, const Backward& how, Input input);
  // Interleaved: runs the schedule's steps; the sends of each step start together with the
  // receives of the next (pipeline_schedule.h).
  void run_steps(const std::vector<PipeAction>& actions, const Batches& batches, double& loss_sum,
                 const Backward* how);
  // The receive an action needs before it runs, posted, or nullptr: a forward of any chunk but
  // the model's first takes its input from the previous stage, a backward of any chunk but the
  // model's last its output's gradient from the next.
  std::unique_ptr<CommRequest> receive_for(const PipeAction& action);
  // Posts the receives of a step's actions (plain 1F1B: of one action), waits for them, and
  // returns whether there were any.
  bool post_receives(const std::vector<PipeAction>& step);
  void wait_for_sends();
  size_t slot(const PipeAction& action) const;
  // take_layers gives the action's slot the set of its chunk's layer count freed longest ago,
  // once that set's last send is done; free_layers hands it back.
  LayerSet& take_layers(const PipeAction& action);
  void free_layers(const PipeAction& action);

  GPT& model_;
  Communicator& pp_;
  int microbatches_;
  std::vector<PipeAction> schedule_;
  std::vector<Chunk> chunks_;
  std::map<int64_t, LayerSets> layer_sets_;  // by number of layers
  Tensor output_grad_;
};

// The activation sets a stage keeps under `schedule`, its chunks having `chunk_layers` layers:
// each chunk's ends for the microbatches in flight on it, and the layers' of L layers for the
// most microbatches in flight at once on the chunks of L layers (in_flight_per_key).
ActivationSets pipeline_activation_sets(const std::vector<PipeAction>& schedule,
                                        const std::vector<int64_t>& chunk_layers);

// Bytes of activations on stage `stage` of `stages` with the model part `shard`, as a
// PipelineEngine of `microbatches` microbatches of micro_batch sequences allocates them: the
// shard's (gpt_shard_activation_bytes) with pipeline_activation_sets, and the engine's buffers
// between stages: the received input and its gradient of each slot on every chunk but the
// model's first, and one received output gradient for the stage when any of its chunks is not
// the model's last.
int64_t pipeline_activation_bytes(const ModelConfig& cfg, const ModelShard& shard, int stages,
                                  int stage, int64_t micro_batch, int microbatches);

}  // namespace tessera
