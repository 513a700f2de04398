// The CRC pass that the ranks of a resume share (launcher/checkpointing.h, verify_crcs_together),
// under mpiexec with 3 ranks: files cut into pieces that the ranks read in turn, damage named on
// every rank, and a rank that cannot read its piece told apart from damage.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "core/error.h"
#include "io/checkpoint_io.h"
#include "launcher/checkpointing.h"
#include "parallel/mpi_communicator.h"

namespace fs = std::filesystem;

namespace tessera {
namespace {

void write_random(const fs::path& path, size_t bytes, unsigned seed) {
  std::mt19937 rng(seed);
  std::string data(bytes, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  std::ofstream(path, std::ios::binary) << data;
}

// What every rank threw, as "" (nothing), "input: MESSAGE" or "unreadable: MESSAGE".
std::string outcome(Communicator& world, const std::string& dir) {
  try {
    verify_crcs_together(world, dir, read_manifest_text(dir), 1000);
    return "";
  } catch (const CheckpointUnreadable& e) {
    return std::string("unreadable: ") + e.what();
  } catch (const InputError& e) {
    return std::string("input: ") + e.what();
  }
}

TEST(SharedCrcPass, PiecesOfEveryFileAreReadByTurnsAndDamageIsNamedOnEveryRank) {
  auto world = MpiCommunicator::world();
  ASSERT_EQ(world->size(), 3);
  const bool root = world->rank() == 0;
  // model.h5: 10000 bytes, pieces 0-9 (ranks 0 1 2 0 1 2 0 1 2 0); the shard: 2000 bytes,
  // pieces 10 and 11 (ranks 1 and 2).
  const std::string dir = broadcast_string(
      *world,
      root ? (fs::temp_directory_path() / ("tessera_choice_" + std::to_string(::getpid()))).string()
           : "",
      0);
  if (root) {
    fs::create_directories(fs::path(dir) / "shards");
    write_random(fs::path(dir) / "model.h5", 10000, 1);
    write_random(fs::path(dir) / "shards" / "rank_00000.h5", 2000, 2);
    write_manifest(dir);
  }
  world->barrier();
  EXPECT_EQ(outcome(*world, dir), "");

  // A byte changed in piece 5 of model.h5, which rank 2 reads: every rank names the file.
  world->barrier();
  if (root) {
    std::fstream f(fs::path(dir) / "model.h5", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(5500);
    f.put('\x5a');
  }
  world->barrier();
  const std::string damaged = outcome(*world, dir);
  EXPECT_EQ(damaged.rfind("input: " + dir + "/model.h5: CRC-32C ", 0), 0u) << damaged;
  EXPECT_NE(damaged.find("(the file is damaged)"), std::string::npos) << damaged;

  // The shard cut short after rank 0 checked its size (a node's stale view of the file): rank 2
  // cannot read its piece (bytes 1000-1999), which is not damage, and every rank says whose it is.
  world->barrier();
  if (root) {
    write_random(fs::path(dir) / "model.h5", 10000, 1);
    write_manifest(dir);
    fs::resize_file(fs::path(dir) / "shards" / "rank_00000.h5", 1500);
  }
  world->barrier();
  const std::string manifest_listing_2000 = outcome(*world, dir);
  EXPECT_EQ(manifest_listing_2000.rfind("unreadable: checkpoint " + dir + ": rank 2 (host ", 0), 0u)
      << manifest_listing_2000;
  EXPECT_NE(manifest_listing_2000.find("the file ends before it"), std::string::npos)
      << manifest_listing_2000;
  world->barrier();
  if (root) fs::remove_all(dir);
}

}  // namespace
}  // namespace tessera
