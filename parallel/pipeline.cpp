// The pipeline executor: one GPT stage (one or more model chunks), activations and their
// gradients by send/recv, in 1F1B or interleaved 1F1B order.
#include "parallel/pipeline.h"

#include "core/bytes.h"
#include "core/error.h"
#include "core/profile.h"

namespace tessera {

namespace {
void wait(std::unique_ptr<CommRequest>& request) {
  if (request) request->wait();
  request.reset();
}

// This stage's schedule, once the layout is known to have one: interleaved_one_f_one_b's own
// check would name no expected and found values.
std::vector<PipeAction> checked_schedule(const Communicator& pp, int microbatches, int chunks) {
  const std::string problem = interleaved_schedule_problem(pp.size(), microbatches, chunks);
  TESSERA_CHECK(problem.empty(), "PipelineEngine: " + problem);
  return interleaved_one_f_one_b(pp.size(), pp.rank(), microbatches, chunks);
}
}  // namespace

PipelineEngine::PipelineEngine(GPT& model, Communicator& pp, int64_t micro_batch, int microbatches)
    : model_(model),
      pp_(pp),
      microbatches_(microbatches),
      schedule_(checked_schedule(pp, microbatches, model.chunks())) {
  TESSERA_CHECK((pp.rank() == 0) == model.shard().has_embedding &&
                    (pp.rank() == pp.size() - 1) == model.shard().has_head,
                "PipelineEngine: the PP group's ranks do not match the model's stages");
  const ModelConfig& cfg = model.config();
  const Shape boundary = model.stage_shape(micro_batch);
  const std::vector<int64_t> layers = gpt_chunk_layers(cfg, model.shard());
  const ActivationSets sets = pipeline_activation_sets(schedule_, layers);
  bool receives_gradients = false;
  for (int c = 0; c < model.chunks(); ++c) {
    Chunk& chunk = chunks_.emplace_back();
    chunk.first = model.has_embedding(c);
    chunk.last = model.has_head(c);
    chunk.layers = layers[static_cast<size_t>(c)];
    receives_gradients |= !chunk.last;
    for (int i = 0; i < sets.ends[static_cast<size_t>(c)]; ++i) {
      chunk.acts.push_back(model.make_activations(micro_batch, c, ActivationParts::Ends));
      if (!chunk.first) {
        chunk.stage_input.emplace_back(boundary, cfg.dtype, cfg.device);
        chunk.input_grad.emplace_back(boundary, cfg.dtype, cfg.device);
      }
    }
    chunk.held.resize(chunk.acts.size());
    chunk.input_grad_sent.resize(chunk.acts.size());
    LayerSets& shared = layer_sets_[chunk.layers];
    if (!shared.sets.empty()) continue;  // made for an earlier chunk of as many layers
    shared.sets.resize(static_cast<size_t>(sets.layers.at(chunk.layers)));
    for (LayerSet& set : shared.sets) {
      set.acts = model.make_activations(micro_batch, c, ActivationParts::Layers);
      shared.free.push_back(&set);
    }
  }
  if (receives_gradients) output_grad_ = Tensor(boundary, cfg.dtype, cfg.device);
}

size_t PipelineEngine::slot(const PipeAction& action) const {
  return static_cast<size_t>(action.microbatch) %
         chunks_[static_cast<size_t>(action.chunk)].acts.size();
}

PipelineEngine::LayerSet& PipelineEngine::take_layers(const PipeAction& action) {
  Chunk& chunk = chunks_[static_cast<size_t>(action.chunk)];
  std::deque<LayerSet*>& free = layer_sets_.at(chunk.layers).free;
  TESSERA_CHECK(!free.empty(), "PipelineEngine: more microbatches in flight than layer sets");
  LayerSet* set = free.front();
  free.pop_front();
  // The set's last microbatch sent its output from these activations; let it finish.
  wait(set->output_sent);
  const size_t s = slot(action);
  chunk.held[s] = set;
  chunk.acts[s].residual = set->acts.residual;  // tensors share their storage
  chunk.acts[s].blocks = set->acts.blocks;
  return *set;
}

void PipelineEngine::free_layers(const PipeAction& action) {
  Chunk& chunk = chunks_[static_cast<size_t>(action.chunk)];
  LayerSet*& set = chunk.held[slot(action)];
  TESSERA_CHECK(set != nullptr, "PipelineEngine: a layer set freed twice");
  layer_sets_.at(chunk.layers).free.push_back(set);
  set = nullptr;
}

int previous_stage(const Communicator& pp) {
  return (pp.rank() + pp.size() - 1) % pp.size();
}
int next_stage(const Communicator& pp) {
  return (pp.rank() + 1) % pp.size();
}

CommRequest* PipelineEngine::forward(const PipeAction& action, const Batches& batches,
                                     double& loss_sum, Input input, Send send) {
  const ProfileRange range("microbatch forward", action.microbatch);
  Chunk& chunk = chunks_[static_cast<size_t>(action.chunk)];
  const size_t s = slot(action), mb = static_cast<size_t>(action.microbatch);
  GPTActivations& a = chunk.acts[s];
  LayerSet& layers = take_layers(action);
  if (input == Input::ReceiveHere) post_receives({action});
  const Tensor* stage_input = chunk.first ? nullptr : &chunk.stage_input[s];
  const double loss = model_.forward(a, chunk.first ? &batches.inputs[mb] : nullptr,
                                     chunk.last ? &batches.targets[mb] : nullptr, stage_input);
  if (!batches.backward_follows) free_layers(action);
  if (chunk.last) {
    loss_sum += loss;
    return nullptr;
  }
  layers.output_sent = pp_.isend(a.residual.back(), next_stage(pp_));
  // Before the stage's first backward no gradient comes back that this send could cross, so it
  // may start alone. Held back, stage 0's warm-up sends would wait for its first backward's
  // receive, and the pipeline would fill PP - 2 forwards late.
  if (send == Send::Now) layers.output_sent->test();
  return layers.output_sent.get();
}

CommRequest* PipelineEngine::backward(const PipeAction& action, const Backward& how, Input input) {
  const ProfileRange range("microbatch backward", action.microbatch);
  Chunk& chunk = chunks_[static_cast<size_t>(action.chunk)];
  const size_t s = slot(action);
  if (input == Input::ReceiveHere) post_receives({action});
  const Tensor* output_grad = chunk.last ? nullptr : &output_grad_;
  Tensor* input_grad = nullptr;
  if (!chunk.first) {
    wait(chunk.input_grad_sent[s]);
    input_grad = &chunk.input_grad[s];
  }
  const bool last_microbatch = action.microbatch == microbatches_ - 1;
  model_.backward(chunk.acts[s], how.loss_scale, output_grad, input_grad,
                  last_microbatch ? how.on_ready : nullptr);
  free_layers(action);
  // The gradient goes back before the chunk's own work on its weights' gradients (the bf16
  // fold), which the previous stage would otherwise wait out.
  if (!chunk.first) chunk.input_grad_sent[s] = pp_.isend(chunk.input_grad[s], previous_stage(pp_));
  if (!last_microbatch && how.after_backward) how.after_backward(action.chunk);
  return chunk.first ? nullptr : chunk.input_grad_sent[s].get();
}

std::unique_ptr<CommRequest> PipelineEngine::receive_for(const PipeAction& action) {
  Chunk& chunk = chunks_[static_cast<size_t>(action.chunk)];
  if (action.kind == PipeAction::Forward)
    return chunk.first ? nullptr : pp_.irecv(chunk.stage_input[slot(action)], previous_stage(pp_));
  return chunk.last ? nullptr : pp_.irecv(output_grad_, next_stage(pp_));
}

bool PipelineEngine::post_receives(const std::vector<PipeAction>& step) {
  std::vector<std::unique_ptr<CommRequest>> received;
  for (const PipeAction& action : step)
    if (std::unique_ptr<CommRequest> r = receive_for(action)) received.push_back(std::move(r));
  if (received.empty()) return false;
  const ProfileRange range("pipeline receive");
  for (auto& r : received) r->wait();
  return true;
}

void PipelineEngine::run_steps(const std::vector<PipeAction>& actions, const Batches& batches,
                               double& loss_sum, const Backward* how) {
  const std::vector<std::vector<PipeAction>> steps = pipeline_steps(actions);
  post_receives(steps.front());
  for (size_t i = 0; i < steps.size(); ++i) {
    CommRequest* sent = nullptr;
    for (const PipeAction& action : steps[i]) {
      CommRequest* posted =
          action.kind == PipeAction::Forward
              ? forward(action, batches, loss_sum, Input::Posted, Send::WithNextReceive)
              : backward(action, *how, Input::Posted);
      if (posted) sent = posted;
    }
    const bool received = i + 1 < steps.size() && post_receives(steps[i + 1]);
    // No receive to start them with (NCCL holds sends back until then): start them alone.
    if (!received && sent) sent->test();
  }
}

void PipelineEngine::wait_for_sends() {
  for (auto& [layers, shared] : layer_sets_)
    for (LayerSet& set : shared.sets) wait(set.output_sent);
  for (Chunk& chunk : chunks_)
    for (auto& r : chunk.input_grad_sent) wait(r);
}

double PipelineEngine::evaluate(const std::vector<Tensor>& inputs,
                                const std::vector<Tensor>& targets) {
  TESSERA_CHECK(inputs.size() == targets.size() && !inputs.empty(),
                "PipelineEngine::evaluate: expected one input and target tensor per microbatch");
  const Batches batches{inputs, targets, false};
  double loss_sum = 0;
  const int n = static_cast<int>(inputs.size());
  if (chunks_.size() > 1)
    run_steps(interleaved_forwards(pp_.size(), n, model_.chunks()), batches, loss_sum, nullptr);
  else
    for (int mb = 0; mb < n; ++mb)
      forward({PipeAction::Forward, mb}, batches, loss_sum, Input::ReceiveHere, Send::Now);
  wait_for_sends();
  return loss_sum;
}

double PipelineEngine::run(const std::vector<Tensor>& inputs, const std::vector<Tensor>& targets,
                           double loss_scale, const GradReadyFn* on_ready,
                           const std::function<void(int)>& after_backward) {
  TESSERA_CHECK(static_cast<int>(inputs.size()) == microbatches_ &&
                    static_cast<int>(targets.size()) == microbatches_,
                "PipelineEngine::run: expected one input and target tensor per microbatch");
  const Batches batches{inputs, targets, true};
  const Backward how{loss_scale, on_ready, after_backward};
  double loss_sum = 0;
  if (chunks_.size() > 1) {
    run_steps(schedule_, batches, loss_sum, &how);
  } else {
    bool warmup = true;
    for (const PipeAction& action : schedule_) {
      if (action.kind == PipeAction::Forward) {
        forward(action, batches, loss_sum, Input::ReceiveHere,
                warmup ? Send::Now : Send::WithNextReceive);
      } else {
        warmup = false;
        backward(action, how, Input::ReceiveHere);
      }
    }
  }
  wait_for_sends();
  return loss_sum;
}

ActivationSets pipeline_activation_sets(const std::vector<PipeAction>& schedule,
                                        const std::vector<int64_t>& chunk_layers) {
  const int chunks = static_cast<int>(chunk_layers.size());
  return ActivationSets{in_flight_per_chunk(schedule, chunks),
                        in_flight_per_key(schedule, chunk_layers)};
}

int64_t pipeline_activation_bytes(const ModelConfig& cfg, const ModelShard& shard, int stages,
                                  int stage, int64_t micro_batch, int microbatches) {
  const std::vector<int64_t> layers = gpt_chunk_layers(cfg, shard);
  const int chunks = static_cast<int>(layers.size());
  const ActivationSets sets = pipeline_activation_sets(
      interleaved_one_f_one_b(stages, stage, microbatches, chunks), layers);
  const WideBytes boundary =
      WideBytes{dtype_size(cfg.dtype)} * cfg.d_model * shard.stream_rows(micro_batch, cfg.seq_len);
  WideBytes bytes = gpt_shard_activation_bytes(cfg, shard, micro_batch, sets);  // saturated
  for (int c = 0; c < chunks; ++c)
    if (!(shard.has_embedding && c == 0)) bytes += 2 * boundary * sets.ends[static_cast<size_t>(c)];
  // One output gradient received for the stage, whichever of its chunks it is for.
  if (!(shard.has_head && chunks == 1)) bytes += boundary;
  return saturated_bytes(bytes);
}

}  // namespace tessera
