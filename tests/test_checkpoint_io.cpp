// Tests of the checkpoint file layer: CRC-32C against RFC 3720, shards + model.h5 of virtual
// datasets round trips (whole tensors and hyperslabs across shard boundaries, exact), what h5dump
// and h5ls show, every kind of damage the MANIFEST catches, the tiling check, `latest`, and the
// `ckpt` command in-process. Each test works in its own temporary directory.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "io/checkpoint_io.h"
#include "io/crc32c.h"
#include "launcher/checkpoint_choice.h"
#include "launcher/ckpt_command.h"
#include "launcher/exit_codes.h"
#include "tests/expect_error.h"
#include "tests/temp_dir.h"

namespace fs = std::filesystem;
using namespace tessera;
using test_support::expect_input_error;

namespace {

// Element i (row-major) of a test tensor holds base + i: exact in F32, F64 and (small) BF16.
Tensor numbered(const Shape& shape, DType dtype, double base) {
  Tensor t(shape, DType::F64);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<double>()[i] = base + static_cast<double>(i);
  if (dtype == DType::F64) return t;
  Tensor r(shape, dtype);
  copy_into(r, t);
  return r;
}

// The block [offset, offset + extent) of a contiguous F32/F64 tensor, as F64.
Tensor block_of(const Tensor& full, const Shape& offset, const Shape& extent) {
  Tensor f64(full.shape(), DType::F64);
  copy_into(f64, full);
  Tensor out(extent, DType::F64);
  Shape idx(extent.size(), 0);
  for (int64_t i = 0; i < out.numel(); ++i) {
    int64_t src = 0;
    for (size_t d = 0; d < extent.size(); ++d) src = src * full.shape()[d] + offset[d] + idx[d];
    out.data<double>()[i] = f64.data<double>()[src];
    for (size_t d = extent.size(); d-- > 0 && ++idx[d] == extent[d];) idx[d] = 0;
  }
  return out;
}

std::vector<double> values(const Tensor& t) {
  Tensor f64(t.shape(), DType::F64);
  copy_into(f64, t);
  return {f64.data<double>(), f64.data<double>() + f64.numel()};
}

// A tensor of the test checkpoint and how two ranks split it.
struct Split {
  std::string name;
  Shape shape;
  DType dtype;
  double base;
  std::vector<std::pair<Shape, Shape>> rank0, rank1;  // (offset, extent) blocks
};

const std::vector<Split>& test_tensors() {
  static const std::vector<Split> tensors = {
      {"model/wte", {8, 6}, DType::F32, 0, {{{0, 0}, {4, 6}}}, {{{4, 0}, {4, 6}}}},
      // Split by columns (a row-parallel weight).
      {"model/layers/00/attn/proj/weight",
       {6, 4},
       DType::F32,
       0,
       {{{0, 0}, {6, 2}}},
       {{{0, 2}, {6, 2}}}},
      // q, k and v rows, each split over two TP ranks: three blocks per shard.
      {"model/layers/00/attn/qkv/weight",
       {12, 6},
       DType::F32,
       100,
       {{{0, 0}, {2, 6}}, {{4, 0}, {2, 6}}, {{8, 0}, {2, 6}}},
       {{{2, 0}, {2, 6}}, {{6, 0}, {2, 6}}, {{10, 0}, {2, 6}}}},
      {"model/layers/00/mlp/up/bias", {5}, DType::F32, 7, {{{0}, {3}}}, {{{3}, {2}}}},
      // Replicated: written once, by rank 0.
      {"model/ln_f/weight", {6}, DType::F32, 50, {{{0}, {6}}}, {}},
      {"optimizer/exp_avg/wte", {8, 6}, DType::F64, 0.25, {{{0, 0}, {4, 6}}}, {{{4, 0}, {4, 6}}}},
  };
  return tensors;
}

std::vector<TensorBlock> rank_blocks(int rank) {
  std::vector<TensorBlock> blocks;
  for (const Split& s : test_tensors()) {
    const Tensor full = numbered(s.shape, s.dtype, s.base);
    for (const auto& [offset, extent] : rank ? s.rank1 : s.rank0) {
      Tensor data(extent, s.dtype);
      copy_into(data, block_of(full, offset, extent));
      blocks.push_back({s.name, s.shape, offset, data});
    }
  }
  return blocks;
}

CheckpointMeta test_meta() {
  CheckpointMeta m;
  m.ints = {{"step", 100},       {"tp", 2},     {"pp", 1}, {"dp", 1}, {"consumed_samples", 3200},
            {"adamw_step", 100}, {"seed", 1337}};
  m.reals = {{"lr", 3e-4}};
  m.texts["config"] = "[model]\nlayers = 1\n" + std::string(100000, '#') + "\n";  // > 64 KB
  return m;
}

void make_checkpoint(const fs::path& dir) {
  fs::create_directories(dir / "shards");
  for (int rank = 0; rank < 2; ++rank)
    write_shard((dir / "shards" / shard_file_name(rank)).string(), rank_blocks(rank));
  write_model_h5(dir.string(), test_meta());
  write_manifest(dir.string());
}

// Runs fn and returns the InputError's message ("" and a failure when none is thrown).
std::string input_error(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an InputError";
  return "";
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = test_support::fresh_test_dir("tessera_test_ckpt");
    dir_ = root_ / step_directory_name(100);
    make_checkpoint(dir_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // A copy of the good checkpoint to damage.
  fs::path copy(const std::string& name) {
    fs::copy(dir_, root_ / name, fs::copy_options::recursive);
    return root_ / name;
  }

  // A copy whose model.h5 `edit` changes by hand (as with h5py), with a MANIFEST to match.
  fs::path edit_model_h5(const std::string& name, const std::function<void(hid_t file)>& edit) {
    const fs::path dir = copy(name);
    const hid_t f = H5Fopen((dir / "model.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    EXPECT_GE(f, 0) << name;
    edit(f);
    H5Fclose(f);
    write_manifest(dir.string());
    return dir;
  }

  // `tessera ckpt ARGS...` in-process: exit code, stdout.
  std::pair<int, std::string> ckpt(std::vector<std::string> args) {
    args.insert(args.begin(), "ckpt");
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    ::testing::internal::CaptureStdout();
    const int code = run_guarded(ckpt_command, static_cast<int>(argv.size()), argv.data());
    return {code, ::testing::internal::GetCapturedStdout()};
  }

  fs::path root_, dir_;
};

TEST(Crc32c, MatchesRfc3720Vectors) {
  std::vector<uint8_t> zeros(32, 0x00), ones(32, 0xFF), ascending(32);
  for (int i = 0; i < 32; ++i) ascending[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(crc32c(ascending.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c_portable("123456789", 9), 0xE3069283u);
}

TEST(Crc32c, HardwareAndTablePathsAgreeAndContinue) {
  std::mt19937 rng(7);
  std::vector<uint8_t> data(4096);
  for (uint8_t& b : data) b = static_cast<uint8_t>(rng());
  for (size_t start : {0, 1, 3, 7}) {
    for (size_t n : {0, 1, 7, 8, 9, 63, 1000, 4089}) {
      const uint32_t table = crc32c_portable(data.data() + start, n);
      if (crc32c_hardware_available()) {
        EXPECT_EQ(crc32c_hardware(data.data() + start, n), table) << start << " " << n;
      }
      const size_t half = n / 3;
      EXPECT_EQ(crc32c(data.data() + start + half, n - half, crc32c(data.data() + start, half)),
                table);
    }
  }
  // Seen as skipped, not passed: crc32c() here is the table path the test compared against.
  if (!crc32c_hardware_available())
    GTEST_SKIP() << "no SSE4.2 on this CPU: the hardware path was not checked";
}

// The pieces of a buffer checked apart combine to its CRC, at every split, also of lengths that
// cross the matrix powers' bits.
TEST(Crc32c, PiecesCombineToTheWholesCrc) {
  std::mt19937 rng(11);
  std::vector<uint8_t> data(70000);
  for (uint8_t& b : data) b = static_cast<uint8_t>(rng());
  for (size_t cut : {size_t{0}, size_t{1}, size_t{7}, size_t{4096}, size_t{65535}, size_t{69999},
                     size_t{70000}}) {
    const uint32_t a = crc32c(data.data(), cut), b = crc32c(data.data() + cut, data.size() - cut);
    EXPECT_EQ(crc32c_combine(a, b, data.size() - cut), crc32c(data.data(), data.size())) << cut;
  }
}

// Step directories are ordered by their number, also past eight digits, where an order of the
// names put step_99999999 first; a name that is not step_ and digits is none.
TEST_F(CheckpointTest, StepDirectoriesAreNewestFirstByNumber) {
  const fs::path root = root_ / "order";
  for (const char* name : {"step_99999999", "step_100000000", "step_00000007", "step_00000007.tmp",
                           "step_", "step_99999999999999999999"})
    fs::create_directories(root / name);
  EXPECT_EQ(step_directories(root.string()),
            (std::vector<std::string>{"step_100000000", "step_99999999", "step_00000007"}));
  EXPECT_EQ(step_of_directory("step_00000007"), 7);
  EXPECT_EQ(step_of_directory("step_7.tmp"), -1);
  EXPECT_EQ(step_of_directory(step_directory_name(123456789)), 123456789);
}

TEST_F(CheckpointTest, Crc32cOfAFileMatchesItsBytes) {
  const std::string bytes = read_text(dir_ / "model.h5");
  EXPECT_EQ(crc32c_file((dir_ / "model.h5").string()), crc32c(bytes.data(), bytes.size()));
  const std::string path = (dir_ / "model.h5").string();
  const size_t mid = bytes.size() / 3;
  EXPECT_EQ(crc32c_file_range(path, mid, bytes.size() - mid),
            crc32c(bytes.data() + mid, bytes.size() - mid));
  EXPECT_NE(input_error([&] {
              crc32c_file_range(path, mid, bytes.size());
            }).find("the file ends before it"),
            std::string::npos);
  EXPECT_NE(input_error([&] { crc32c_file((root_ / "absent").string()); }).find("absent"),
            std::string::npos);
}

// The CRC pass tells a progress line every byte it reads, file by file (ckpt verify, export).
TEST_F(CheckpointTest, CrcPassTellsTheBytesItReads) {
  uint64_t told = 0;
  const std::string path = (dir_ / "model.h5").string();
  crc32c_file(path, [&](uint64_t n) { told += n; });
  EXPECT_EQ(told, fs::file_size(path));
  uintmax_t listed = 0;
  const std::string manifest = read_manifest_text(dir_.string());
  const std::vector<ManifestEntry> entries = parse_manifest(manifest, dir_.string());
  for (const ManifestEntry& e : entries) listed += e.size;
  told = 0;
  check_crcs(dir_.string(), entries, [&](uint64_t n) { told += n; });
  EXPECT_GT(listed, fs::file_size(path));  // the shards too
  EXPECT_EQ(told, listed);
}

TEST_F(CheckpointTest, WholeTensorsReadBackExactly) {
  const CheckpointReader r = CheckpointReader::open(dir_.string());
  ASSERT_EQ(r.tensors().size(), test_tensors().size());
  for (const Split& s : test_tensors()) {
    ASSERT_TRUE(r.has(s.name)) << s.name;
    EXPECT_EQ(r.tensor(s.name).shape, s.shape);
    EXPECT_EQ(r.tensor(s.name).dtype, s.dtype);
    for (DType as : {DType::F32, DType::F64}) {
      Tensor out(s.shape, as);
      r.read(s.name, s.shape, Shape(s.shape.size(), 0), out);
      EXPECT_EQ(values(out), values(numbered(s.shape, DType::F64, s.base))) << s.name;
    }
  }
  EXPECT_FALSE(r.has("model/absent"));
}

// A save names the shards its ranks wrote, and model.h5 and the MANIFEST are built from those:
// a listing of shards/ on a shared file system may not yet show another node's file (whose
// tensors would be left out), and here shows one that no rank of the save wrote.
TEST_F(CheckpointTest, ASaveBuildsModelH5AndItsManifestFromTheShardsItNames) {
  const fs::path dir = root_ / "named";
  fs::create_directories(dir / "shards");
  std::map<std::string, uint32_t> crcs;
  for (int rank = 0; rank < 2; ++rank) {
    const std::string file = "shards/" + shard_file_name(rank);
    write_shard((dir / file).string(), rank_blocks(rank));
    crcs[file] = crc32c_file((dir / file).string());
  }
  write_shard((dir / "shards" / shard_file_name(2)).string(),
              {{"stray", {2}, {0}, numbered({2}, DType::F32, 0)}});
  write_model_h5(dir.string(), test_meta(), {"shards/rank_00000.h5", "shards/rank_00001.h5"});
  write_manifest(dir.string(), crcs);

  std::ifstream manifest(dir / "MANIFEST");
  const std::string text((std::istreambuf_iterator<char>(manifest)), {});
  EXPECT_NE(text.find(" shards/rank_00001.h5\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("rank_00002"), std::string::npos) << text;
  const CheckpointReader r = CheckpointReader::open(dir.string(), ManifestCheck::kNone);
  EXPECT_EQ(r.tensors().size(), test_tensors().size());
  EXPECT_FALSE(r.has("stray"));
  // What the listing shows and the save did not name is what a resume refuses.
  EXPECT_NE(input_error([&] {
              verify_manifest(dir.string(), ManifestCheck::kSizes);
            }).find("rank_00002.h5: present but not listed in MANIFEST"),
            std::string::npos);
  // A shard named that is not there is said by name.
  EXPECT_NE(
      input_error([&] {
        write_model_h5(dir.string(), test_meta(), {"shards/rank_00000.h5", "shards/rank_00005.h5"});
      }).find("rank_00005.h5"),
      std::string::npos);
}

TEST_F(CheckpointTest, HyperslabsAcrossShardBoundariesReadExactly) {
  const CheckpointReader r = CheckpointReader::open(dir_.string());
  std::mt19937 rng(3);
  for (const Split& s : test_tensors()) {
    const Tensor full = numbered(s.shape, DType::F64, s.base);
    for (int trial = 0; trial < 40; ++trial) {
      Shape offset, extent;
      for (int64_t n : s.shape) {
        const int64_t a = rng() % n, b = rng() % n;
        offset.push_back(std::min(a, b));
        extent.push_back(std::max(a, b) - std::min(a, b) + 1);
      }
      Tensor out(extent, DType::F32);
      r.read(s.name, s.shape, offset, out);
      EXPECT_EQ(values(out), values(block_of(full, offset, extent)))
          << s.name << " at " << shape_str(offset) << " extent " << shape_str(extent);
    }
  }
}

// prefer_shard(1) reads rank 1's blocks from its file handle, not through model.h5: with the
// file moved away after the call, its exact blocks still read, while any other selection (which
// goes through the virtual dataset, whose source is now missing) reads NaN fill.
TEST_F(CheckpointTest, PreferredShardServesItsOwnBlocksDirectly) {
  CheckpointReader r = CheckpointReader::open(dir_.string());
  r.prefer_shard(1);
  r.prefer_shard(7);  // no such file: nothing changes
  fs::rename(dir_ / "shards" / shard_file_name(1), root_ / "moved_away.h5");
  for (const Split& s : test_tensors()) {
    const Tensor full = numbered(s.shape, DType::F64, s.base);
    for (const auto& [offset, extent] : s.rank1) {
      Tensor out(extent, DType::F32);
      r.read(s.name, s.shape, offset, out);
      EXPECT_EQ(values(out), values(block_of(full, offset, extent))) << s.name;
    }
  }
  Tensor part({2, 6}, DType::F32);  // the first two rows of rank 1's four: not a block it holds
  r.read("model/wte", {8, 6}, {4, 0}, part);
  for (double v : values(part)) EXPECT_TRUE(std::isnan(v));
  Tensor rank0({4, 6}, DType::F32);  // rank 0's block still comes through model.h5
  r.read("model/wte", {8, 6}, {0, 0}, rank0);
  EXPECT_EQ(values(rank0), values(block_of(numbered({8, 6}, DType::F64, 0), {0, 0}, {4, 6})));
}

TEST_F(CheckpointTest, MetaRoundTripsWithAConfigOver64KB) {
  const CheckpointReader r = CheckpointReader::open(dir_.string());
  const CheckpointMeta expected = test_meta();
  EXPECT_EQ(r.meta().ints, expected.ints);
  EXPECT_EQ(r.meta().reals, expected.reals);
  EXPECT_EQ(r.meta().texts.at("config"), expected.texts.at("config"));
  EXPECT_EQ(r.meta().texts.at("format"), kCheckpointFormat);
}

TEST_F(CheckpointTest, MovedDirectoryStillReadsAcrossShards) {
  const fs::path moved = root_ / "elsewhere" / "moved";
  fs::create_directories(moved.parent_path());
  rename_directory(dir_.string(), moved.string());
  const CheckpointReader r = CheckpointReader::open(moved.string());
  Tensor out({8, 2}, DType::F32);
  r.read("model/wte", {8, 6}, {0, 1}, out);
  EXPECT_EQ(values(out), values(block_of(numbered({8, 6}, DType::F64, 0), {0, 1}, {8, 2})));
}

TEST_F(CheckpointTest, H5dumpAndH5lsShowTheGlobalTensors) {
  if (std::system("h5dump --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "no h5dump";
  const fs::path out = root_ / "h5dump.txt";
  const std::string model = (dir_ / "model.h5").string();
  const std::string dump_command =
      "h5dump -d /model/layers/00/attn/proj/weight " + model + " >" + out.string();
  ASSERT_EQ(std::system(dump_command.c_str()), 0);
  const std::string dump = read_text(out);  // row 1 spans both shards' column blocks
  EXPECT_NE(dump.find("DATASPACE  SIMPLE { ( 6, 4 ) / ( 6, 4 ) }"), std::string::npos) << dump;
  EXPECT_NE(dump.find("(1,0): 4, 5, 6, 7"), std::string::npos) << dump;
  ASSERT_EQ(std::system(("h5ls -r " + model + " >" + out.string()).c_str()), 0);
  const std::string listing = read_text(out);
  for (const Split& s : test_tensors())
    EXPECT_NE(listing.find("/" + s.name + " "), std::string::npos) << listing;
}

// A file system that is full or fails a write: one message naming the file and the system's
// reason (an InputError, exit 2), and no crash when the process ends with that file's handle
// still open in HDF5 (it crashed in HDF5's exit handler). /dev/full fails every write.
TEST_F(CheckpointTest, FailedWriteNamesTheFileAndTheReason) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full on this system to fail a write";
  Tensor w({256}, DType::F32);
  w.fill(1.0f);
  expect_input_error(
      [&] {
        write_shard("/dev/full", {{"model/w", {256}, {0}, w}});
      },
      {"/dev/full", "writing failed", std::strerror(ENOSPC)});
  const fs::path dir = root_ / "room";
  fs::create_directories(dir);
  EXPECT_NO_THROW(check_free_space((dir / "a.h5").string(), 1000));
  expect_input_error([&] { check_free_space((dir / "a.h5").string(), int64_t{1} << 60); },
                     {(dir / "a.h5").string(), "needs about", "MB free"});
}

TEST_F(CheckpointTest, Bfloat16IsStoredAsRawBitsAndReadAsFloat) {
  const fs::path dir = root_ / "bf16";
  fs::create_directories(dir / "shards");
  Tensor bits({4}, DType::BF16);
  const uint16_t raw[4] = {0x3F80, 0xC020, 0x3E20, 0x0000};  // 1, -2.5, 0.15625, 0
  std::memcpy(bits.raw(), raw, sizeof raw);
  write_shard((dir / "shards/rank_00000.h5").string(), {{"model/w", {4}, {0}, bits}});
  write_model_h5(dir.string(), {});
  write_manifest(dir.string());
  const CheckpointReader r = CheckpointReader::open(dir.string());
  EXPECT_EQ(r.tensor("model/w").dtype, DType::BF16);
  Tensor f32({4}, DType::F32), back({4}, DType::BF16);
  r.read("model/w", {4}, {0}, f32);
  EXPECT_EQ(values(f32), (std::vector<double>{1, -2.5, 0.15625, 0}));
  r.read("model/w", {4}, {0}, back);
  EXPECT_EQ(std::memcmp(back.raw(), raw, sizeof raw), 0);
  if (std::system("h5dump --version >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "no h5dump (Debian's hdf5-tools): what it shows of bfloat16 is not checked";
  const fs::path out = root_ / "h5dump.txt";
  ASSERT_EQ(
      std::system(
          ("h5dump -d /model/w " + (dir / "model.h5").string() + " >" + out.string()).c_str()),
      0);
  EXPECT_NE(read_text(out).find("1, -2.5, 0.15625, 0"), std::string::npos) << read_text(out);
}

TEST_F(CheckpointTest, ManifestCatchesEveryKindOfDamageAndNamesTheFile) {
  const fs::path missing = copy("missing");
  fs::remove(missing / "shards/rank_00001.h5");
  EXPECT_NE(input_error([&] { verify_manifest(missing.string()); }).find("rank_00001.h5: listed"),
            std::string::npos);

  const fs::path truncated = copy("truncated");
  const fs::path shard = truncated / "shards/rank_00001.h5";
  fs::resize_file(shard, fs::file_size(shard) / 2);
  EXPECT_NE(input_error([&] { verify_manifest(truncated.string()); }).find("rank_00001.h5: "),
            std::string::npos);

  const fs::path flipped = copy("flipped");
  test_support::flip_bits(flipped / "shards/rank_00000.h5", 3000, std::ios::beg, 0x01);
  const std::string crc = input_error([&] { verify_manifest(flipped.string()); });
  EXPECT_NE(crc.find("rank_00000.h5: CRC-32C"), std::string::npos) << crc;
  EXPECT_NO_THROW(verify_manifest(flipped.string(), ManifestCheck::kSizes));

  const fs::path lying = copy("lying");
  std::string manifest = read_text(lying / "MANIFEST");
  const size_t line = manifest.find(" shards/rank_00001.h5"), size = manifest.rfind(' ', line - 1);
  manifest.replace(size + 1, line - size - 1, "12");
  std::ofstream(lying / "MANIFEST", std::ios::trunc) << manifest;
  const std::string sized = input_error([&] { verify_manifest(lying.string()); });
  EXPECT_NE(sized.find("rank_00001.h5: "), std::string::npos) << sized;
  EXPECT_NE(sized.find("MANIFEST says 12"), std::string::npos) << sized;

  const fs::path extra = copy("extra");
  fs::copy_file(extra / "shards/rank_00000.h5", extra / "shards/rank_00002.h5");
  EXPECT_NE(input_error([&] { verify_manifest(extra.string()); }).find("rank_00002.h5: present"),
            std::string::npos);

  // A directory where a listed shard was is damage, for which `auto` takes an older step, not
  // the machine failing to read it (CheckpointUnreadable), which stops the run.
  const fs::path hollow = copy("hollow_shard");
  fs::remove(hollow / "shards/rank_00001.h5");
  fs::create_directory(hollow / "shards/rank_00001.h5");
  try {
    verify_manifest(hollow.string(), ManifestCheck::kSizes);
    ADD_FAILURE() << "a directory as a listed shard passed";
  } catch (const CheckpointUnreadable& e) {
    ADD_FAILURE() << "damage taken for an unreadable machine: " << e.what();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("rank_00001.h5: listed in MANIFEST as a file of "),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("found a directory"), std::string::npos) << e.what();
  }
}

TEST_F(CheckpointTest, MalformedOrAbsentManifestIsAnInputError) {
  const fs::path malformed = copy("malformed");
  std::ofstream(malformed / "MANIFEST", std::ios::app) << "zz 1 x\n";
  EXPECT_NE(input_error([&] { CheckpointReader::open(malformed.string()); }).find("MANIFEST line"),
            std::string::npos);
  // Paths other than those a save lists: a directory, another name for model.h5, a file
  // outside shards/.
  for (const std::string path : {"shards", "./model.h5", "rank_00000.h5", "shards/x/y.h5"}) {
    const fs::path odd = copy("odd");
    std::ofstream(odd / "MANIFEST", std::ios::app) << "00000000 0 " << path << "\n";
    EXPECT_NE(input_error([&] {
                verify_manifest(odd.string(), ManifestCheck::kSizes);
              }).find("MANIFEST line"),
              std::string::npos)
        << path;
    fs::remove_all(odd);
  }
  const fs::path absent = copy("absent");
  fs::remove(absent / "MANIFEST");
  EXPECT_NE(input_error([&] { verify_manifest(absent.string()); }).find("MANIFEST: missing"),
            std::string::npos);
  EXPECT_NE(input_error([&] { verify_manifest((root_ / "nowhere").string()); }).find("nowhere"),
            std::string::npos);
}

// A model.h5 edited by hand: a hard link from a group to itself is refused by name (it was
// followed until the stack ran out), and a soft link to a tensor is not a second tensor.
TEST_F(CheckpointTest, LinksInAnEditedModelH5AreNotFollowedInCircles) {
  const fs::path cycle = edit_model_h5("cycle", [](hid_t f) {
    const hid_t g = H5Gcreate2(f, "/extra", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    EXPECT_GE(H5Lcreate_hard(g, ".", g, "again", H5P_DEFAULT, H5P_DEFAULT), 0);
    H5Gclose(g);
  });
  const std::string e = input_error([&] { CheckpointReader::open(cycle.string()); });
  EXPECT_NE(e.find("/extra/again/again"), std::string::npos) << e;
  EXPECT_NE(e.find("nested deeper than"), std::string::npos) << e;

  const fs::path soft = edit_model_h5("soft", [](hid_t f) {
    EXPECT_GE(H5Lcreate_soft("/model/wte", f, "/model/alias", H5P_DEFAULT, H5P_DEFAULT), 0);
  });
  const CheckpointReader r = CheckpointReader::open(soft.string());
  EXPECT_EQ(r.tensors().size(), test_tensors().size());
  EXPECT_FALSE(r.has("model/alias"));
}

TEST_F(CheckpointTest, WrongGlobalShapeNamesTheTensorAndBothShapes) {
  const CheckpointReader r = CheckpointReader::open(dir_.string());
  Tensor out({2, 6}, DType::F32);
  const std::string e = input_error([&] { r.read("model/wte", {16, 6}, {0, 0}, out); });
  EXPECT_NE(e.find("model/wte"), std::string::npos) << e;
  EXPECT_NE(e.find("[8, 6]"), std::string::npos) << e;
  EXPECT_NE(e.find("[16, 6]"), std::string::npos) << e;
  EXPECT_NE(e.find(dir_.string()), std::string::npos) << e;
}

TEST_F(CheckpointTest, BlocksThatLeaveAGapOrOverlapFailAtWriteModelH5) {
  const fs::path gap = root_ / "gap";
  fs::create_directories(gap / "shards");
  const Tensor half = numbered({4, 6}, DType::F32, 0);
  write_shard((gap / "shards/rank_00000.h5").string(), {{"model/wte", {8, 6}, {0, 0}, half}});
  try {
    write_model_h5(gap.string(), {});
    FAIL() << "expected an InternalError";
  } catch (const InternalError& e) {
    EXPECT_NE(std::string(e.what()).find("model/wte"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("gap"), std::string::npos) << e.what();
  }
  write_shard((gap / "shards/rank_00001.h5").string(), {{"model/wte", {8, 6}, {3, 0}, half}});
  try {
    write_model_h5(gap.string(), {});
    FAIL() << "expected an InternalError";
  } catch (const InternalError& e) {
    EXPECT_NE(std::string(e.what()).find("overlap"), std::string::npos) << e.what();
  }
  // The overlap check compares the blocks whose rows meet, not only neighbours in row order: a
  // block of rows 0-7 in columns 0-2, blocks in columns 3-5 (rows meet, columns do not), and one
  // of row 4 in columns 0-5, which overlaps only the first, by as many elements as row 3 of
  // columns 3-5 lacks: the elements add up to the tensor's, so only the overlap check can tell.
  const fs::path skew = root_ / "skew";
  fs::create_directories(skew / "shards");
  write_shard((skew / "shards/rank_00000.h5").string(),
              {{"model/wte", {8, 6}, {0, 0}, numbered({8, 3}, DType::F32, 0)},
               {"model/wte", {8, 6}, {0, 3}, numbered({1, 3}, DType::F32, 0)},
               {"model/wte", {8, 6}, {1, 3}, numbered({2, 3}, DType::F32, 0)},
               {"model/wte", {8, 6}, {4, 0}, numbered({1, 6}, DType::F32, 0)},
               {"model/wte", {8, 6}, {5, 3}, numbered({3, 3}, DType::F32, 0)}});
  try {
    write_model_h5(skew.string(), {});
    FAIL() << "expected an InternalError";
  } catch (const InternalError& e) {
    EXPECT_NE(std::string(e.what()).find("overlap"), std::string::npos) << e.what();
  }
}

TEST_F(CheckpointTest, LatestNamesTheCommittedStep) {
  EXPECT_EQ(read_latest(root_.string()), "");
  write_latest(root_.string(), dir_.filename().string());
  EXPECT_EQ(read_latest(root_.string()), "step_00000100");
  EXPECT_FALSE(fs::exists(root_ / "latest.tmp"));
  write_latest(root_.string(), "step_00000200");
  const std::string e = input_error([&] { read_latest(root_.string()); });
  EXPECT_NE(e.find("step_00000200"), std::string::npos) << e;
}

TEST_F(CheckpointTest, ShardsWrittenOnAnotherThreadWhileReading) {
  std::thread writer([&] { make_checkpoint(root_ / "background"); });
  const CheckpointReader r = CheckpointReader::open(dir_.string());
  for (int i = 0; i < 50; ++i) {
    Tensor out({12, 6}, DType::F32);
    r.read("model/layers/00/attn/qkv/weight", {12, 6}, {0, 0}, out);
    EXPECT_EQ(values(out), values(numbered({12, 6}, DType::F64, 100)));
  }
  writer.join();
  EXPECT_NO_THROW(CheckpointReader::open((root_ / "background").string()));
}

TEST_F(CheckpointTest, CkptInfoListsStepLayoutAndTensors) {
  const auto [code, out] = ckpt({"info", dir_.string()});
  EXPECT_EQ(code, 0);
  EXPECT_NE(out.find("step 100, layout tp 2 pp 1 dp 1"), std::string::npos) << out;
  EXPECT_NE(out.find("[model]\nlayers = 1"), std::string::npos);
  for (const Split& s : test_tensors()) EXPECT_NE(out.find(s.name), std::string::npos) << out;
  EXPECT_NE(out.find("total: 6 tensors, 1004 bytes"), std::string::npos) << out;
  EXPECT_EQ(ckpt({"info", (root_ / "nowhere").string()}).first, kExitBadInput);
}

// A run's checkpoints/ given where one checkpoint is expected: `ckpt verify` said "FAILED:
// .../MANIFEST: missing" (exit 1, a damaged checkpoint), and --checkpoint.resume the same; each
// now names the step directory to give (exit 2).
TEST_F(CheckpointTest, ADirectoryOfCheckpointsIsRefusedNamingAStepToGive) {
  ::testing::internal::CaptureStderr();
  const int code = ckpt({"verify", root_.string()}).first;
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(code, kExitBadInput);
  EXPECT_NE(err.find("ckpt verify " + root_.string() +
                     ": expected a checkpoint (a step directory), found a directory of them; give "
                     "one, e.g. " +
                     dir_.string() + " (the newest)"),
            std::string::npos)
      << err;
  const fs::path older = copy(step_directory_name(50));
  write_latest(root_.string(), older.filename().string());
  EXPECT_NE(input_error([&] {
              refuse_directory_of_checkpoints("--checkpoint.resume", root_.string());
            }).find("e.g. " + older.string() + " (the one its `latest` names)"),
            std::string::npos);
  EXPECT_NO_THROW(refuse_directory_of_checkpoints("--checkpoint.resume", dir_.string()));
  // Its `latest` file: the step it names is the one to give.
  EXPECT_NE(input_error([&] { require_checkpoint_directory((root_ / "latest").string()); })
                .find("expected a directory (step_N), found a file; it names " +
                      older.filename().string() + ": give " + older.string()),
            std::string::npos);
  // A run directory, whose checkpoints/ holds them: named the same way.
  const fs::path run = root_ / "run";
  fs::create_directories(run / "checkpoints");
  fs::copy(dir_, run / "checkpoints" / dir_.filename(), fs::copy_options::recursive);
  EXPECT_NE(input_error([&] { refuse_directory_of_checkpoints("ckpt info", run.string()); })
                .find("ckpt info " + run.string() +
                      ": expected a checkpoint (a step directory), found a run directory; give "
                      "one, e.g. " +
                      (run / "checkpoints" / dir_.filename()).string() + " (the newest)"),
            std::string::npos);
}

TEST_F(CheckpointTest, CkptVerifyPassesGoodAndFailsDamagedCheckpoints) {
  const auto [code, out] = ckpt({"verify", dir_.string()});
  EXPECT_EQ(code, 0);
  EXPECT_NE(out.find("ok: 3 files, 6 tensors, 1004 bytes"), std::string::npos) << out;

  const fs::path damaged = copy("damaged");
  fs::resize_file(damaged / "shards/rank_00001.h5", 100);
  EXPECT_EQ(ckpt({"verify", damaged.string()}).first, 1);

  // Files the checksums cannot fault, each with a MANIFEST written to match: a shard gone, one
  // HDF5 cannot open, one of another rank. Unchecked, they read as NaN or as wrong values.
  const fs::path hollow = copy("hollow");
  fs::remove(hollow / "shards/rank_00001.h5");
  write_manifest(hollow.string());
  const auto [hollow_code, hollow_out] = ckpt({"verify", hollow.string()});
  EXPECT_EQ(hollow_code, 1);
  EXPECT_NE(hollow_out.find("lies partly in shards/rank_00001.h5, which is missing"),
            std::string::npos)
      << hollow_out;
  const fs::path garbage = copy("garbage");
  std::ofstream(garbage / "shards/rank_00001.h5", std::ios::trunc) << std::string(4096, 'x');
  write_manifest(garbage.string());
  const auto [garbage_code, garbage_out] = ckpt({"verify", garbage.string()});
  EXPECT_EQ(garbage_code, 1);
  EXPECT_NE(garbage_out.find("rank_00001.h5: cannot open as HDF5"), std::string::npos)
      << garbage_out;
  const fs::path swapped = copy("swapped");
  fs::copy_file(swapped / "shards/rank_00000.h5", swapped / "shards/rank_00001.h5",
                fs::copy_options::overwrite_existing);
  write_manifest(swapped.string());
  const auto [swapped_code, swapped_out] = ckpt({"verify", swapped.string()});
  EXPECT_EQ(swapped_code, 1);
  EXPECT_NE(swapped_out.find("rank_00001.h5: holds no dataset"), std::string::npos) << swapped_out;
  EXPECT_NE(swapped_out.find("(a shard of another rank, model or layout?)"), std::string::npos)
      << swapped_out;
  EXPECT_EQ(ckpt({"diff", dir_.string(), swapped.string()}).first, kExitBadInput);
  for (const fs::path& bad : {hollow, garbage, swapped})  // export refuses them too
    EXPECT_EQ(ckpt({"export", bad.string(), "--to", "safetensors", "--output",
                    (root_ / "x.safetensors").string()})
                  .first,
              kExitBadInput)
        << bad;
  EXPECT_EQ(ckpt({"verify", (root_ / "nowhere").string()}).first, kExitBadInput);

  // Weights that are NaN or infinite, with checksums to match (a diverged save, a hand edit):
  // verify names the tensor, and export refuses to write them, leaving nothing behind.
  const fs::path nonfinite = copy("nonfinite");
  std::vector<TensorBlock> blocks = rank_blocks(1);
  ASSERT_EQ(blocks[0].name, "model/wte");
  blocks[0].data.data<float>()[5] = std::numeric_limits<float>::infinity();
  write_shard((nonfinite / "shards" / shard_file_name(1)).string(), blocks);
  write_manifest(nonfinite.string());
  const auto [nonfinite_code, nonfinite_out] = ckpt({"verify", nonfinite.string()});
  EXPECT_EQ(nonfinite_code, 1);
  EXPECT_NE(nonfinite_out.find("tensor model/wte: 1 of 48 values are NaN or infinite"),
            std::string::npos)
      << nonfinite_out;
  const fs::path nonfinite_export = root_ / "nonfinite.safetensors";
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(ckpt({"export", nonfinite.string(), "--to", "safetensors", "--output",
                  nonfinite_export.string()})
                .first,
            kExitBadInput);
  const std::string refused = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(refused.find("model/wte holds NaN or infinite values: not exported"), std::string::npos)
      << refused;
  EXPECT_FALSE(fs::exists(nonfinite_export));
  EXPECT_FALSE(fs::exists(nonfinite_export.string() + ".tmp"));

  // A model.h5 rewritten without a key a resume reads (and a MANIFEST to match it).
  const fs::path stripped = copy("stripped");
  CheckpointMeta meta = test_meta();
  meta.ints.erase("adamw_step");
  write_model_h5(stripped.string(), meta);
  write_manifest(stripped.string());
  const auto [stripped_code, stripped_out] = ckpt({"verify", stripped.string()});
  EXPECT_EQ(stripped_code, 1);
  EXPECT_NE(stripped_out.find("model.h5 has no integer attribute adamw_step"), std::string::npos)
      << stripped_out;
  meta.ints["adamw_step"] = -5;  // a step a resume would count on from
  write_model_h5(stripped.string(), meta);
  write_manifest(stripped.string());
  const auto [negative_code, negative_out] = ckpt({"verify", stripped.string()});
  EXPECT_EQ(negative_code, 1);
  EXPECT_NE(negative_out.find("attribute adamw_step is -5, expected 0 or more"), std::string::npos)
      << negative_out;
  // The directory is an argument: its absence is said so, not as an option "--dir".
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(ckpt({"verify"}).first, kExitBadInput);
  const std::string missing = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(missing.find("ckpt verify: expected a checkpoint directory, found none"),
            std::string::npos)
      << missing;
  // One too many is named with the words given; help names the arguments as the usage does.
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(ckpt({"info", dir_.string(), "extra"}).first, kExitBadInput);
  const std::string extra = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(extra.find("ckpt info: expected a checkpoint directory, found 2: \"" + dir_.string() +
                       "\" \"extra\" (see tessera ckpt info --help)"),
            std::string::npos)
      << extra;
  const auto [help_code, help] = ckpt({"diff", "--help"});
  EXPECT_EQ(help_code, 0);
  EXPECT_NE(help.find("usage: tessera ckpt diff DIR_A DIR_B [options]"), std::string::npos) << help;
  EXPECT_EQ(help.find("--dirs"), std::string::npos) << help;
}

TEST_F(CheckpointTest, CkptDiffOfIdenticalCheckpointsFindsNoDifference) {
  const fs::path twin = copy("twin");
  const auto [code, out] = ckpt({"diff", dir_.string(), twin.string()});
  EXPECT_EQ(code, 0);
  // Each side's step and layout head the table, whose last column is the norm-relative one.
  EXPECT_NE(out.find("A: " + dir_.string() + " (step 100, layout tp 2 pp 1 dp 1)\nB: " +
                     twin.string() + " (step 100, layout tp 2 pp 1 dp 1)\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("max_abs       max_rel      norm_rel\n"), std::string::npos) << out;
  EXPECT_NE(out.find("6 tensors compared, 0 differ, 0 of another shape, 0 in one checkpoint only"),
            std::string::npos)
      << out;

  const fs::path other = root_ / "other";
  fs::create_directories(other / "shards");
  write_shard((other / "shards/rank_00000.h5").string(),
              {{"model/wte", {8, 6}, {0, 0}, numbered({8, 6}, DType::F32, 1)}});
  write_model_h5(other.string(), {});
  write_manifest(other.string());
  const auto [code2, out2] = ckpt({"diff", dir_.string(), other.string()});
  EXPECT_EQ(code2, 0);
  EXPECT_NE(out2.find("1 tensors compared, 1 differ, 0 of another shape, 5 in one checkpoint only"),
            std::string::npos)
      << out2;
  // Every element 1 apart: max_abs 1, and norm_rel sqrt(48) / ||b||, ||b|| the larger norm.
  const size_t row = out2.find("\nmodel/wte ");
  ASSERT_NE(row, std::string::npos) << out2;
  double max_abs = 0, max_rel = 0, norm_rel = 0;
  ASSERT_EQ(std::sscanf(out2.c_str() + out2.find(']', row) + 1, "%lf %lf %lf", &max_abs, &max_rel,
                        &norm_rel),
            3)
      << out2;
  EXPECT_EQ(max_abs, 1);
  const std::vector<double> b = values(numbered({8, 6}, DType::F32, 1));
  double b_sq = 0;
  for (const double v : b) b_sq += v * v;
  EXPECT_NEAR(norm_rel, std::sqrt(48.0 / b_sq), 1e-5 * norm_rel);
  // A tensor of another shape is named with both shapes and not counted as compared.
  const fs::path narrow = root_ / "narrow";
  fs::create_directories(narrow / "shards");
  write_shard((narrow / "shards/rank_00000.h5").string(),
              {{"model/wte", {8, 5}, {0, 0}, numbered({8, 5}, DType::F32, 1)}});
  write_model_h5(narrow.string(), {});
  write_manifest(narrow.string());
  const auto [code3, out3] = ckpt({"diff", dir_.string(), narrow.string()});
  EXPECT_EQ(code3, 0);
  EXPECT_NE(out3.find("shape [8, 6] vs [8, 5]"), std::string::npos) << out3;
  EXPECT_NE(out3.find("0 tensors compared, 0 differ, 1 of another shape, 5 in one checkpoint only"),
            std::string::npos)
      << out3;
}

TEST_F(CheckpointTest, CkptExportWritesAValidSafetensorsFile) {
  const fs::path file = root_ / "model.safetensors";
  const auto [code, out] =
      ckpt({"export", dir_.string(), "--to", "safetensors", "--output", file.string()});
  ASSERT_EQ(code, 0) << out;
  const std::string bytes = read_text(file);
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);
  ASSERT_EQ(header_size % 8, 0u);
  const nlohmann::json header = nlohmann::json::parse(bytes.substr(8, header_size));
  EXPECT_EQ(header["__metadata__"]["step"], "100");
  EXPECT_EQ(header.size(), 6u);  // 5 model tensors + metadata, no optimizer state
  uint64_t end = 0;
  for (const Split& s : test_tensors()) {
    if (s.name.rfind("model/", 0) != 0) continue;
    std::string name = s.name.substr(6);
    std::replace(name.begin(), name.end(), '/', '.');
    const nlohmann::json& t = header.at(name);
    EXPECT_EQ(t["dtype"], "F32");
    EXPECT_EQ(t["shape"].get<Shape>(), s.shape);
    const uint64_t begin = t["data_offsets"][0], stop = t["data_offsets"][1];
    ASSERT_EQ(stop - begin, static_cast<uint64_t>(shape_numel(s.shape)) * 4) << name;
    const Tensor expected = numbered(s.shape, DType::F32, s.base);
    EXPECT_EQ(std::memcmp(bytes.data() + 8 + header_size + begin, expected.raw(), stop - begin), 0)
        << name;
    end = std::max(end, stop);
  }
  EXPECT_EQ(8 + header_size + end, bytes.size());
  EXPECT_EQ(ckpt({"export", dir_.string(), "--to", "onnx", "--output", "x"}).first, kExitBadInput);

  // A changed byte (the MANIFEST's checksum catches it) exports nothing; nor does a directory
  // given as the output, which stays as it was.
  const fs::path damaged = copy("damaged_export");
  test_support::flip_bits(damaged / "shards/rank_00001.h5", -20, std::ios::end, 0x20);
  const fs::path out_file = root_ / "damaged.safetensors";
  EXPECT_EQ(ckpt({"export", damaged.string(), "--to", "safetensors", "--output", out_file.string()})
                .first,
            kExitBadInput);
  EXPECT_FALSE(fs::exists(out_file));
  fs::create_directories(root_ / "a_directory");
  EXPECT_EQ(ckpt({"export", dir_.string(), "--to", "safetensors", "--output",
                  (root_ / "a_directory").string()})
                .first,
            kExitBadInput);
  EXPECT_TRUE(fs::is_directory(root_ / "a_directory"));

  // What `export --output OUTPUT` prints on stderr, refused with exit code 2.
  const auto refusal = [&](const fs::path& output) {
    ::testing::internal::CaptureStderr();
    EXPECT_EQ(
        ckpt({"export", dir_.string(), "--to", "safetensors", "--output", output.string()}).first,
        kExitBadInput)
        << output;
    return ::testing::internal::GetCapturedStderr();
  };
  // Nor into the checkpoint it reads (over its model.h5, a shard or the `latest` beside it), nor
  // to an empty name; the checkpoint stays whole.
  write_latest(root_.string(), dir_.filename().string());
  for (const fs::path& inside : {dir_ / "model.h5", dir_ / "shards" / "rank_00000.h5",
                                 dir_ / "new.safetensors", root_ / "latest"}) {
    const std::string error = refusal(inside);
    EXPECT_NE(error.find("expected a file outside the checkpoint"), std::string::npos) << error;
    const std::string why = inside.filename() == "new.safetensors" ? "not written to"
                            : inside.filename() == "latest" ? "names the checkpoint to resume"
                                                            : "it would be overwritten";
    EXPECT_NE(error.find(why), std::string::npos) << error;
  }
  EXPECT_EQ(read_latest(root_.string()), dir_.filename().string());
  EXPECT_EQ(ckpt({"export", dir_.string(), "--to", "safetensors", "--output", ""}).first,
            kExitBadInput);
  EXPECT_EQ(ckpt({"verify", dir_.string()}).first, 0);

  // An earlier export is replaced; any other file (another checkpoint's model.h5, a corpus, a
  // text) is not, and stays as it was.
  EXPECT_EQ(ckpt({"export", dir_.string(), "--to", "safetensors", "--output", file.string()}).first,
            0);
  const fs::path other = copy("other_checkpoint") / "model.h5", text = root_ / "notes.txt",
                 wrapped = root_ / "wrapped.bin", empty = root_ / "empty.safetensors";
  std::ofstream(text) << "{not an export}\n";
  // A header length that wraps to 0 when 8 is added, then '{'.
  std::ofstream(wrapped, std::ios::binary) << std::string("\xF8\xFF\xFF\xFF\xFF\xFF\xFF\xFF{}", 10);
  std::ofstream{empty};
  EXPECT_EQ(
      ckpt({"export", dir_.string(), "--to", "safetensors", "--output", empty.string()}).first, 0);
  for (const fs::path& kept : {other, text, wrapped}) {
    const std::string before = read_text(kept);
    const std::string error = refusal(kept);
    EXPECT_NE(error.find("found a file that is not safetensors"), std::string::npos) << error;
    EXPECT_EQ(read_text(kept), before) << kept;
  }
  // Nor is a FILE.tmp someone has (another export's under way, or a file of their own): it was
  // truncated and renamed over FILE.
  const fs::path fresh = root_ / "fresh.safetensors", fresh_tmp = root_ / "fresh.safetensors.tmp";
  std::ofstream(fresh_tmp) << "precious\n";
  const std::string busy = refusal(fresh);
  EXPECT_NE(busy.find("cannot create " + fresh_tmp.string() + " (File exists"), std::string::npos)
      << busy;
  EXPECT_EQ(read_text(fresh_tmp), "precious\n");
  EXPECT_FALSE(fs::exists(fresh));
}

// A model.h5 whose meta holds a list where tessera writes one value (h5py's attrs["step"] = [1,
// 2], a string dataset of two): refused by name, where each list was read into one value's
// memory and ran past it.
TEST_F(CheckpointTest, MetaListsInModelH5AreRefusedNamingThem) {
  const auto with_list = [&](const std::string& copy_name, bool attribute) {
    return edit_model_h5(copy_name, [&](hid_t f) {
      const hsize_t two = 2;
      const hid_t space = H5Screate_simple(1, &two, nullptr);
      herr_t written = -1;
      if (attribute) {
        const int64_t values[2] = {1, 2};
        const hid_t a = H5Acreate2(f, "listed", H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
        written = H5Awrite(a, H5T_NATIVE_INT64, values);
        H5Aclose(a);
      } else {
        const hid_t type = H5Tcopy(H5T_C_S1);
        H5Tset_size(type, 4);
        const char values[8] = {'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'};
        const hid_t d =
            H5Dcreate2(f, "/meta/listed", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        written = H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values);
        H5Dclose(d);
        H5Tclose(type);
      }
      EXPECT_GE(written, 0) << copy_name;
      H5Sclose(space);
    });
  };
  expect_input_error([&] { CheckpointReader::open(with_list("attribute", true).string()); },
                     {"model.h5: attribute listed: holds 2 values, expected one"});
  expect_input_error([&] { CheckpointReader::open(with_list("dataset", false).string()); },
                     {"/meta/listed: holds 2 values, expected one"});
}

// A model.h5 edited by hand (as with h5py) with a tensor tessera never writes: a scalar, or a
// shape whose size overflows 64 bits. Each is refused by name (the scalar segfaulted verify and
// export, the overflow counted as 0 bytes).
TEST_F(CheckpointTest, HandEditedModelH5IsRefusedNamingTheTensor) {
  // Adds float32 dataset `name` of shape `dims` (none: a scalar, written 1) to a copy's model.h5,
  // chunked so that a huge one takes no space, and a MANIFEST to match.
  const auto edited = [&](const std::string& copy_name, const char* name,
                          std::vector<hsize_t> dims) {
    return edit_model_h5(copy_name, [&](hid_t f) {
      const hid_t space =
          dims.empty() ? H5Screate(H5S_SCALAR)
                       : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
      const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
      const std::vector<hsize_t> chunk(dims.size(), 1);
      if (!dims.empty()) H5Pset_chunk(dcpl, static_cast<int>(dims.size()), chunk.data());
      const hid_t d = H5Dcreate2(f, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
      const float one = 1;
      EXPECT_TRUE(f >= 0 && d >= 0 &&
                  (!dims.empty() ||
                   H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, &one) >= 0))
          << name;
      H5Dclose(d);
      H5Pclose(dcpl);
      H5Sclose(space);
    });
  };
  // The message of `tessera ckpt ARGS`, which must be exit 2.
  const auto refusal = [&](std::vector<std::string> args) {
    ::testing::internal::CaptureStderr();
    EXPECT_EQ(ckpt(std::move(args)).first, kExitBadInput);
    return ::testing::internal::GetCapturedStderr();
  };

  const fs::path scalar = edited("scalar", "/model/extra", {});
  const fs::path exported = root_ / "scalar.safetensors";
  const std::string error =
      refusal({"export", scalar.string(), "--to", "safetensors", "--output", exported.string()});
  EXPECT_NE(error.find("tensor model/extra is a scalar"), std::string::npos) << error;
  EXPECT_FALSE(fs::exists(exported.string() + ".tmp"));  // removed when export fails
  EXPECT_EQ(ckpt({"verify", scalar.string()}).first, 1);
  EXPECT_NE(refusal({"diff", scalar.string(), scalar.string()}).find("is a scalar"),
            std::string::npos);

  // A name that is not UTF-8 cannot be a key of safetensors' JSON header: refused by name (it
  // was an internal error from the JSON library, exit 1).
  const fs::path latin1 = edited("latin1", "/model/caf\xe9", {2, 2});
  const std::string named =
      refusal({"export", latin1.string(), "--to", "safetensors", "--output", exported.string()});
  EXPECT_NE(named.find("tensor model/caf\\xE9 has a name that is not UTF-8"), std::string::npos)
      << named;

  const fs::path huge = edited("huge", "/model/huge", {hsize_t{1} << 35, hsize_t{1} << 35});
  const std::string overflow = refusal({"info", huge.string()});
  EXPECT_NE(overflow.find("tensor model/huge of shape [34359738368, 34359738368] has more"),
            std::string::npos)
      << overflow;
}

}  // namespace
