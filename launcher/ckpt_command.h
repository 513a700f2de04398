// `tessera ckpt VERB ...`: look into HDF5 checkpoints (io/checkpoint_io.h). `info` prints the
// step, layout, config and tensors; `verify` checks the MANIFEST (sizes and CRC-32C), model.h5's
// map of the shards and the metadata a resume reads, and reads every tensor, which must hold no
// NaN (a missing shard reads as NaN); `diff` prints the largest
// absolute and relative difference of each tensor two checkpoints share; `export` writes the
// model's tensors as a safetensors file. The return value is the exit code: 0, or 1 when
// `verify` finds the checkpoint damaged. Bad options and checkpoints the other verbs cannot read
// propagate as InputError or boost::program_options::error (exit 2 through run_guarded).
#pragma once

namespace tessera {

// argv[0] is "ckpt", argv[1] the verb.
int ckpt_command(int argc, char** argv);

}  // namespace tessera
