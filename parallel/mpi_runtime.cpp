// MPI_Init / MPI_Finalize around a run, and the node-local placement of this rank.
#include "parallel/mpi_runtime.h"

#include <mpi.h>

#include "parallel/mpi_communicator.h"

namespace tessera {

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    MPI_Init(argc, argv);
    owns_ = true;
  }
  world_ = MpiCommunicator::world();
  const NodeLocalPlace place = node_local_place(MPI_COMM_WORLD);
  local_size_ = place.size;
  local_rank_ = place.rank;
}

MpiRuntime::~MpiRuntime() {
  world_.reset();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_ && !finalized) MPI_Finalize();
}

}  // namespace tessera
