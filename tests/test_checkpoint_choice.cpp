// The CRC pass that the ranks of a resume share (launcher/checkpoint_choice.h,
// verify_crcs_together), under mpiexec with 3 ranks: files cut into pieces that the ranks read in
// turn, damage named on every rank, and a rank that cannot read its piece told apart from damage.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>

#include "core/error.h"
#include "io/checkpoint_io.h"
#include "launcher/checkpoint_choice.h"
#include "parallel/mpi_communicator.h"
#include "tests/temp_dir.h"

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
  // model.h5: 10500 bytes, pieces 0-10 (ranks 0 1 2 0 1 2 0 1 2 0 1; the last of 500 bytes);
  // rank_00000.h5: 2300 bytes, pieces 11-13 (ranks 2 0 1; the last of 300); rank_00001.h5:
  // empty, no piece.
  const std::string dir = broadcast_string(
      *world,
      root ? (fs::temp_directory_path() / ("tessera_choice_" + std::to_string(::getpid()))).string()
           : "",
      0);
  if (root) {
    fs::create_directories(fs::path(dir) / "shards");
    write_random(fs::path(dir) / "model.h5", 10500, 1);
    write_random(fs::path(dir) / "shards" / "rank_00000.h5", 2300, 2);
    write_random(fs::path(dir) / "shards" / "rank_00001.h5", 0, 3);
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

  // The shard cut short after rank 0 checked its size (a node's stale view of the file): rank 1
  // cannot read its piece (bytes 2000-2299), which is not damage, and every rank says whose it is.
  world->barrier();
  if (root) {
    write_random(fs::path(dir) / "model.h5", 10500, 1);
    write_manifest(dir);
    fs::resize_file(fs::path(dir) / "shards" / "rank_00000.h5", 2100);
  }
  world->barrier();
  const std::string cut_short = outcome(*world, dir);
  EXPECT_EQ(cut_short.rfind("unreadable: checkpoint " + dir + ": rank 1 (host ", 0), 0u)
      << cut_short;
  EXPECT_NE(cut_short.find("the file ends before it"), std::string::npos) << cut_short;
  world->barrier();
  if (root) fs::remove_all(dir);
}

// A checkpoint that cannot be read is never skipped for an older one (whose saves would replace
// it): newest_checkpoint passes CheckpointUnreadable on, with what it skipped before.
TEST(SharedCrcPass, AnUnreadableCheckpointIsNotSkipped) {
  auto world = MpiCommunicator::world();
  if (world->rank() != 0) return;  // a question of one process
  const fs::path root =
      fs::temp_directory_path() / ("tessera_unreadable_" + std::to_string(::getpid()));
  for (const char* step : {"step_00000001", "step_00000002", "step_00000003"})
    fs::create_directories(root / step);
  std::ofstream(root / "latest") << "step_00000003\n";
  const auto verifier = [](const std::string& unreadable) {
    return [unreadable](const std::string& dir) {
      if (dir.ends_with("step_00000003")) throw InputError("step 3 is damaged");
      if (dir.ends_with(unreadable)) throw CheckpointUnreadable(dir + ": cannot be read (EIO)");
    };
  };
  std::string note;
  EXPECT_EQ(newest_checkpoint(root.string(), note, verifier("none")),
            (root / "step_00000002").string());
  note.clear();
  try {
    newest_checkpoint(root.string(), note, verifier("step_00000002"));
    ADD_FAILURE() << "fell back past an unreadable checkpoint";
  } catch (const CheckpointUnreadable& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("step_00000002: cannot be read (EIO)"), std::string::npos) << what;
    EXPECT_NE(what.find("passed over before it: latest checkpoint is not usable (step 3 is "
                        "damaged)"),
              std::string::npos)
        << what;
  }
  fs::remove_all(root);
}

// Falling back past damaged checkpoints: the one `latest` names is verified once (each
// verification reads the whole checkpoint), and the note names everything skipped, in order.
TEST(NewestCheckpoint, JudgesLatestOnceAndNamesEverySkip) {
  auto world = MpiCommunicator::world();
  if (world->rank() != 0) return;  // a question of one process
  const fs::path root = test_support::fresh_test_dir("tessera_newest");
  for (const char* step : {"step_00000001", "step_00000002", "step_00000003", "step_00000004"})
    fs::create_directories(root / step);
  std::ofstream(root / "latest") << "step_00000003\n";
  std::map<std::string, int> verified;
  const auto verify = [&](const std::string& dir) {
    const std::string name = fs::path(dir).filename().string();
    ++verified[name];
    if (name != "step_00000001") throw InputError(name + " is damaged");
  };
  std::string note;
  EXPECT_EQ(newest_checkpoint(root.string(), note, verify), (root / "step_00000001").string());
  EXPECT_EQ(
      verified,
      (std::map<std::string, int>{
          {"step_00000001", 1}, {"step_00000002", 1}, {"step_00000003", 1}, {"step_00000004", 1}}));
  EXPECT_EQ(note, "latest checkpoint is not usable (step_00000003 is damaged); skipping " +
                      (root / "step_00000004").string() + " (step_00000004 is damaged); skipping " +
                      (root / "step_00000002").string() + " (step_00000002 is damaged); taking " +
                      (root / "step_00000001").string() + " instead");
  // None usable: the same list, and no choice.
  fs::remove_all(root / "step_00000001");
  note.clear();
  verified.clear();
  EXPECT_EQ(newest_checkpoint(root.string(), note, verify), "");
  EXPECT_EQ(verified["step_00000003"], 1);
  EXPECT_EQ(note, "latest checkpoint is not usable (step_00000003 is damaged); skipping " +
                      (root / "step_00000004").string() + " (step_00000004 is damaged); skipping " +
                      (root / "step_00000002").string() + " (step_00000002 is damaged)");
  fs::remove_all(root);
}

}  // namespace
}  // namespace tessera
