// Shape checks of the model config; each message names the --model.* option at fault.
#include "core/model/config.h"

#include <cmath>
#include <sstream>

#include "core/error.h"
#include "core/ops/attention_cuda.h"

namespace tessera {

int64_t ModelShard::stream_rows(int64_t B, int64_t T) const {
  if (!sequence_parallel) return B * T;
  TESSERA_CHECK(B * T % tp_size == 0, "sequence parallelism: " + std::to_string(B * T) +
                                          " tokens over " + std::to_string(tp_size) +
                                          " TP ranks do not split evenly");
  return B * T / tp_size;
}

Shape ModelShard::stream_shape(int64_t B, int64_t T, int64_t C) const {
  if (sequence_parallel) return {stream_rows(B, T), C};
  return {B, T, C};
}

// Bounds far above any model that fits a machine, which keep the parameters' element counts
// (vocab x width, width x MLP width, summed over layers) well inside int64; token ids are int32.
// (Activations also grow with --train.micro_batch: an allocation too large fails as out of
// memory, exit 2.)
constexpr int64_t kMaxVocab = (int64_t{1} << 31) - 1, kMaxWidth = int64_t{1} << 20,
                  kMaxLayers = int64_t{1} << 16, kMaxSeqLen = int64_t{1} << 24;

void ModelConfig::validate(int tp_size) const {
  require(vocab_size >= 2 && vocab_size <= kMaxVocab, "--model.vocab_size",
          "2 to 2^31 - 1 (token ids are int32)", vocab_size);
  require(d_model >= 1 && d_model <= kMaxWidth, "--model.d_model", "a width of 1 to 2^20", d_model);
  require(layers >= 1 && layers <= kMaxLayers, "--model.layers", "1 to 2^16 layers", layers);
  require(heads >= 1, "--model.heads", "at least 1 head", heads);
  require(d_model % heads == 0, "--model.heads",
          "a head count that divides --model.d_model = " + std::to_string(d_model), heads);
  require(d_ff >= 1 && d_ff <= kMaxWidth, "--model.d_ff", "a width of 1 to 2^20", d_ff);
  require(seq_len >= 1 && seq_len <= kMaxSeqLen, "--model.seq_len", "a length of 1 to 2^24",
          seq_len);
  require(std::isfinite(init_std) && init_std > 0, "--model.init_std",
          "a positive, finite standard deviation", init_std);
  require(heads % tp_size == 0, "--model.heads",
          "a multiple of --parallel.tp = " + std::to_string(tp_size), heads);
  require(d_ff % tp_size == 0, "--model.d_ff",
          "a multiple of --parallel.tp = " + std::to_string(tp_size), d_ff);
  require(vocab_size >= tp_size, "--model.vocab_size",
          "at least --parallel.tp = " + std::to_string(tp_size) + " entries", vocab_size);
  const bool host_ok =
      device == Device::CPU && (dtype == DType::F32 || dtype == DType::F64 || dtype == DType::BF16);
  const bool cuda_ok = device == Device::CUDA && (dtype == DType::F32 || dtype == DType::BF16);
  if (!host_ok && !cuda_ok)
    throw InputError("--train.precision: " + dtype_name(dtype) + " is not a compute type on " +
                     device_name(device) +
                     " (cpu: float32, float64, bfloat16; cuda: float32, bfloat16)");
  if (device == Device::CUDA) {
    // The head counts that would do for this width, if any.
    std::string would_do;
    if (d_model % 64 == 0) would_do += "; " + std::to_string(d_model / 64) + " for 64";
    if (d_model % 128 == 0) would_do += ", " + std::to_string(d_model / 128) + " for 128";
    require(ops::cuda::attention_head_dim_supported(d_model / heads), "--model.heads",
            "with --train.device cuda a head count whose head dimension (--model.d_model / "
            "heads) the GPU's attention kernels take, " +
                std::string(ops::cuda::kAttentionHeadDims) + would_do,
            heads);
  }
  if (pos == PositionKind::Sinusoidal)
    require(d_model % 2 == 0, "--model.d_model", "an even width for sinusoidal positions", d_model);
}

std::string recompute_name(Recompute r) {
  return r == Recompute::None ? "none" : r == Recompute::Selective ? "selective" : "full";
}

std::string position_kind_name(PositionKind k) {
  return k == PositionKind::Learned ? "learned" : "sinusoidal";
}

}  // namespace tessera
