// OpenBLAS is its OpenMP build (CMakeLists.txt), so one setting sizes both thread pools.
#include "core/threads.h"

#include <omp.h>

extern "C" void openblas_set_num_threads(int);

namespace tessera {

void set_cpu_threads(int n) {
  if (n < 1) n = 1;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int cpu_threads() {
  return omp_get_max_threads();
}

}  // namespace tessera
