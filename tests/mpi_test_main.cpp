// The main of multi-rank test binaries: MPI around GoogleTest. Every rank runs every test; only
// rank 0 prints, and the binary fails when any rank fails, since mpiexec returns the first
// non-zero exit code of its ranks.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  ::testing::InitGoogleTest(&argc, argv);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int failed = RUN_ALL_TESTS();
  if (failed) std::fprintf(stderr, "rank %d: some tests failed\n", rank);
  MPI_Finalize();
  return failed ? 1 : 0;
}
