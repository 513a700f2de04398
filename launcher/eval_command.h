// `tessera eval`: the mean loss per token of a checkpoint's model over a corpus's samples, read
// in order as training's validation reads them (launcher/saved_model.h says where the model and
// its options come from).
//   tessera eval --checkpoint DIR [--data.path CORPUS] [--eval.samples N] [--train.device cuda]
#pragma once

namespace tessera {

int eval_command(int argc, char** argv);

}  // namespace tessera
