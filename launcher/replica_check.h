// --train.check_replicas: whether the copies of a parameter that several ranks hold are still
// bitwise equal. Copies that differ mean a fault (a GPU's memory, a link) or a bug, and training
// on would only spread it; the run halts before it saves the diverged state (docs/CLUSTER.md).
#pragma once

#include <string>

namespace tessera {

class Trainer;

// Compares, by CRC-32C of their bytes, the values of
//   - every TP-replicated parameter over each TP group (with TP rank 0's),
//   - every parameter over each DP group (with DP rank 0's),
//   - the token embedding on the last pipeline stage (the LM head's tied copy) with the first's.
// Returns "" when they agree, else one message, the same on every rank, naming a tensor that
// differs, the two world ranks and their hosts, and which copies they are. Collective over
// tr.host_world(): one all-gather of three checksums per rank, and a second, of every rank's
// per-tensor checksums, only when some differ.
std::string replica_mismatch(Trainer& tr);

}  // namespace tessera
