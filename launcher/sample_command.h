// `tessera sample`: text from the model of a checkpoint (README, "Running").
// The model, its tokenizer and the sampling options come from the config saved in the
// checkpoint; every `tessera train` option given overrides that config, except the model's shape,
// which is the checkpoint's. The ranks sample on a layout of their own: one rank, or under
// mpirun --parallel.tp x --parallel.pp (any layout loads any checkpoint).
//   tessera sample --checkpoint DIR [--prompt TEXT] [--sample.tokens N] [--train.device cuda] ...
#pragma once

namespace tessera {

int sample_command(int argc, char** argv);

}  // namespace tessera
