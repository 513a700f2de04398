// MpiRuntime: MPI's lifetime in a process (MPI_Init at construction unless already running,
// MPI_Finalize at destruction) and what the launcher needs to know of its placement. A program
// started without mpirun is a world of one rank.
#pragma once

#include <memory>

#include "core/communicator.h"

namespace tessera {

class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  Communicator& world() { return *world_; }
  int ranks_on_this_node() const { return local_size_; }
  int rank_on_this_node() const { return local_rank_; }

 private:
  bool owns_ = false;
  std::unique_ptr<Communicator> world_;
  int local_size_ = 1, local_rank_ = 0;
};

}  // namespace tessera
