// Thread count for this rank's CPU work: OpenMP loops and OpenBLAS GEMMs use the same number.
// Default: cores on the node divided by the ranks on the node (docs/DESIGN.md, "Precision and
// speed").
#pragma once

namespace tessera {

void set_cpu_threads(int n);
int cpu_threads();

}  // namespace tessera
