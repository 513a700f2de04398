// Checkpoint speed (docs/PERFORMANCE.md, "Checkpoints"), under mpirun: per rank, the bytes of its
// shard saved and the bytes it loads per second, next to a raw sequential write (+ fsync) and
// read of its shard's size on the same disk in the same run (medians of five alternating
// runs), and the same for all ranks together; and the time training is held by a save,
// synchronous and with --checkpoint.async; and CRC-32C's rate on one core.
//   mpirun -n 4 bench_checkpoint --tp 2 --pp 2
//   bench_checkpoint --blocks 100000   (model.h5's cost per block of a tensor, 10^3 .. 10^5)
// `bench_checkpoint --help` lists the options.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "bench/command_line.h"
#include "core/threads.h"
#include "io/crc32c.h"
#include "io/synthetic_corpus.h"
#include "launcher/checkpointing.h"
#include "launcher/trainer.h"
#include "parallel/mpi_runtime.h"

using namespace tessera;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Writes `bytes` to `path` in 8 MB writes and fsyncs; seconds.
double raw_write(const std::string& path, int64_t bytes) {
  std::vector<char> buf(8 << 20);  // random bytes, like a model's: a disk may compress repeats
  uint64_t x = 0x9E3779B97F4A7C15ull ^ static_cast<uint64_t>(bytes);
  for (char& c : buf) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    c = static_cast<char>(x);
  }
  const auto t0 = Clock::now();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  for (int64_t done = 0; done < bytes;) {
    const auto n =
        static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(buf.size()), bytes - done));
    const ssize_t w = ::write(fd, buf.data(), n);
    if (w <= 0) break;
    done += w;
  }
  ::fsync(fd);
  ::close(fd);
  return since(t0);
}

// Reads `path` sequentially in 8 MB reads; seconds.
double raw_read(const std::string& path) {
  std::vector<char> buf(8 << 20);
  const auto t0 = Clock::now();
  const int fd = ::open(path.c_str(), O_RDONLY);
  while (::read(fd, buf.data(), buf.size()) > 0) {
  }
  ::close(fd);
  return since(t0);
}

// Reads from disk, not memory: rank 0 empties the page cache (needs root), every rank waits.
bool drop_page_cache(Communicator& world) {
  Tensor ok({1}, DType::I32);
  if (world.rank() == 0) {
    ::sync();
    FILE* f = std::fopen("/proc/sys/vm/drop_caches", "w");
    ok.data<int32_t>()[0] = f && std::fputs("3", f) >= 0 && std::fclose(f) == 0;
  }
  world.broadcast(ok, 0);
  return ok.data<int32_t>()[0] != 0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// --blocks N: what model.h5 costs per block of a tensor. One [4N, 64] float32 tensor cut into N
// blocks of 4 rows over 8 shard files: write_model_h5's time and model.h5's size, then one read of
// the whole tensor through its virtual dataset. (With ZeRO-1 each DP rank writes its pieces, so
// a tensor has a block per piece that reaches into it.)
void time_blocks(const std::string& dir, int64_t blocks) {
  fs::remove_all(dir);
  fs::create_directories(fs::path(dir) / "shards");
  const int64_t rows = 4, cols = 64, files = 8;
  const Shape global = {blocks * rows, cols};
  for (int64_t f = 0; f < files; ++f) {
    std::vector<TensorBlock> bl;
    for (int64_t b = f; b < blocks; b += files)
      bl.push_back(TensorBlock{"model/t", global, {b * rows, 0}, Tensor({rows, cols}, DType::F32)});
    char name[32];
    std::snprintf(name, sizeof name, "rank_%05lld.h5", static_cast<long long>(f));
    write_shard((fs::path(dir) / "shards" / name).string(), bl);
  }
  const auto t0 = Clock::now();
  write_model_h5(dir, {});
  const double write_s = since(t0);
  const auto t1 = Clock::now();
  const CheckpointReader reader = CheckpointReader::open(dir, ManifestCheck::kNone);
  Tensor whole(global, DType::F32);
  reader.read("model/t", global, {0, 0}, whole);
  std::printf("| %lld | %.2f | %.1f | %.2f |\n", static_cast<long long>(blocks), write_s,
              static_cast<double>(fs::file_size(fs::path(dir) / "model.h5")) / 1e6, since(t1));
  fs::remove_all(dir);
}

int64_t shard_bytes(const std::string& dir, int rank) {
  char name[32];
  std::snprintf(name, sizeof name, "rank_%05d.h5", rank);
  const fs::path p = fs::path(dir) / "shards" / name;
  return fs::exists(p) ? static_cast<int64_t>(fs::file_size(p)) : 0;
}

}  // namespace

int main(int argc, char** argv) {
  TrainConfig cfg;
  std::string shape = "124m", dir = "/tmp/tessera_ckpt_bench";
  int64_t blocks = 0;
  // Before MPI starts: --help and bad input end the process on every rank alike.
  bench::CommandLine cl("bench_checkpoint",
                        "Checkpoint speed under mpirun: each rank's save and load against raw "
                        "file I/O of the\nsame size, training held by a save, CRC-32C's rate.");
  cl.add("tp", cfg.parallel.tp, "tensor-parallel ranks", 1)
      .add("pp", cfg.parallel.pp, "pipeline stages", 1)
      .add("zero", cfg.parallel.zero, "1: ZeRO-1 (each DP rank saves its piece)", 0, 1)
      .add("shape", shape, {"124m", "small"}, "the model's shape")
      .add("dir", dir, "where the checkpoints go (emptied first)")
      .add("blocks", blocks,
           "N > 0: instead, model.h5's cost per block of one tensor, 10^3 blocks up to N", 0);
  cl.parse(argc, argv);
  MpiRuntime mpi(&argc, &argv);
  Communicator& world = mpi.world();
  if (blocks > 0) {
    if (world.rank() == 0) {
      std::printf(
          "| blocks of one tensor | write_model_h5 s | model.h5 MB | read whole s |\n"
          "| --- | --- | --- | --- |\n");
      for (int64_t n = 1000; n <= blocks; n *= 10) time_blocks(dir, n);
    }
    return 0;
  }
  set_cpu_threads(1);
  cfg.model.vocab_size = 50304;
  cfg.model.seq_len = 64;
  if (shape == "124m") {
    cfg.model.d_model = 768, cfg.model.layers = 12, cfg.model.heads = 12, cfg.model.d_ff = 3072;
  } else {  // small
    cfg.model.d_model = 256, cfg.model.layers = 4, cfg.model.heads = 4, cfg.model.d_ff = 1024;
  }
  cfg.global_batch = cfg.micro_batch = 1 * (world.size() / (cfg.parallel.tp * cfg.parallel.pp));
  cfg.micro_batch = 1;
  cfg.run_dir = dir;
  cfg.eval_interval = 0;
  if (world.rank() == 0) {
    fs::remove_all(dir);
    fs::create_directories(dir);
    write_synthetic_corpus(dir + "/corpus", cfg.model.vocab_size, 64, 2000, 1);
  }
  world.barrier();
  cfg.data_path = dir + "/corpus";
  Trainer tr(cfg, world.rank(), world.size());
  tr.start(world);
  tr.step();  // moments hold values
  const std::string root = dir + "/checkpoints";

  // The disk's rate drifts within a run (write-back, a virtual disk's host), so saves and raw
  // writes alternate, as do loads and raw reads, five times each; the medians are compared.
  // Each starts with the page cache emptied: on a virtual machine, a write that grows the page
  // cache into memory the guest has not touched yet ran 3-5x slower than one reusing it.
  CheckpointSaver sync_saver(tr, root, false);
  constexpr int kRepeats = 5;
  std::vector<double> save_t, raw_w_t, load_t, raw_r_t;
  double held_sync = 0;
  int64_t bytes = 0;
  std::string saved;
  const std::string raw = dir + "/raw_" + std::to_string(world.rank());
  bool cold = true;
  for (int k = 0; k < kRepeats; ++k) {
    if (k > 0) tr.step();    // each save a new step, as in training
    drop_page_cache(world);  // both start from the same page cache
    auto t0 = Clock::now();
    held_sync = sync_saver.save();
    save_t.push_back(since(t0));
    saved = sync_saver.committed();
    bytes = shard_bytes(saved, world.rank());
    drop_page_cache(world);
    raw_w_t.push_back(raw_write(raw, bytes));
  }
  for (int k = 0; k < kRepeats; ++k) {
    cold = drop_page_cache(world) && cold;
    raw_r_t.push_back(raw_read(raw));
    drop_page_cache(world);
    auto t0 = Clock::now();
    load_checkpoint(tr, saved);
    load_t.push_back(since(t0));  // this rank's own load, before waiting for the others
    world.barrier();
  }
  fs::remove(raw);
  const double save_s = median(save_t), raw_w = median(raw_w_t), load_s = median(load_t),
               raw_r = median(raw_r_t);
  // What a rank reads from the files. Without ZeRO-1, DP rank 0 reads every tensor it holds, its
  // shard's and those written by another rank (a TP-replicated bias, the last stage's copy of
  // the tied embedding), values and two moments, and broadcasts them to the other DP ranks,
  // which read nothing; with ZeRO-1 every rank reads the elements of its pieces.
  int64_t load_bytes = 0;
  if (const ZeroAdamW* z = tr.zero())
    load_bytes = 3 * z->moment_elements() * 4;
  else if (tr.grid().coord().dp == 0)
    for (const Param* p : tr.params()) load_bytes += 3 * p->value.numel() * 4;

  // Asynchronous: the first save allocates its host copies, the next ones only copy.
  CheckpointSaver async_saver(tr, root, true);
  double held_async = 0, async_rest = 0;
  for (int i = 0; i < 2; ++i) {
    tr.step();
    drop_page_cache(world);
    held_async = async_saver.save();
    const auto t0 = Clock::now();
    async_saver.finish();
    async_rest = since(t0);
  }
  // The floor: copying the shard's bytes from memory to memory once.
  std::vector<char> from(static_cast<size_t>(bytes), 1), to(static_cast<size_t>(bytes));
  const auto t0 = Clock::now();
  std::memcpy(to.data(), from.data(), from.size());
  const double copy_s = since(t0);

  constexpr int kFields = 10;
  Tensor all({world.size() * kFields}, DType::F64), mine({kFields}, DType::F64);
  const double v[kFields] = {static_cast<double>(bytes),
                             save_s,
                             load_s,
                             raw_w,
                             raw_r,
                             held_sync,
                             held_async,
                             copy_s,
                             sync_saver.write_seconds(),
                             static_cast<double>(load_bytes)};
  for (int i = 0; i < kFields; ++i) mine.data<double>()[i] = v[i];
  world.all_gather(all, mine);
  if (world.rank() == 0) {
    std::printf("shape %s, %s, ZeRO %d; save = every rank's shard + barrier + rank 0's commit\n",
                shape.c_str(), tr.layout().describe().c_str(), cfg.parallel.zero);
    std::printf("reads %s\n", cold ? "from disk (page cache dropped before each)"
                                   : "possibly from the page cache (could not drop it)");
    std::printf(
        "| rank | shard MB | shard write MB/s | save MB/s | raw write MB/s | write/raw | save/raw "
        "| load MB | load MB/s | raw read MB/s | load/raw | held, sync s | held, async s | memcpy "
        "s "
        "|\n");
    std::printf(
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
        "|\n");
    for (int r = 0; r < world.size(); ++r) {
      const double* x = all.data<double>() + kFields * r;
      if (x[0] == 0) continue;
      const double mb = x[0] / 1e6;
      std::printf(
          "| %d | %.1f | %.0f | %.0f | %.0f | %.2f | %.2f | %.1f | %.0f | %.0f | %.2f | %.3f | "
          "%.3f | %.3f |\n",
          r, mb, mb / x[8], mb / x[1], mb / x[3], x[3] / x[8], x[3] / x[1], x[9] / 1e6,
          x[9] / 1e6 / x[2], mb / x[4], (x[9] / 1e6 / x[2]) / (mb / x[4]), x[5], x[6], x[7]);
    }
    // All ranks together: every shard's bytes over the slowest rank's time, for the save (a
    // collective: it ends when the last rank's shard is committed), the load (bytes two ranks
    // both load come from the disk once) and the raw I/O.
    double total = 0, save_max = 0, load_max = 0, raw_w_max = 0, raw_r_max = 0;
    for (int r = 0; r < world.size(); ++r) {
      const double* x = all.data<double>() + kFields * r;
      total += x[0] / 1e6;
      save_max = std::max(save_max, x[1]);
      load_max = std::max(load_max, x[2]);
      raw_w_max = std::max(raw_w_max, x[3]);
      raw_r_max = std::max(raw_r_max, x[4]);
    }
    std::printf(
        "all ranks: %.1f MB; save %.0f MB/s, raw write %.0f MB/s, save/raw %.2f; load %.0f MB/s, "
        "raw read %.0f MB/s, load/raw %.2f\n",
        total, total / save_max, total / raw_w_max, raw_w_max / save_max, total / load_max,
        total / raw_r_max, raw_r_max / load_max);
    std::printf(
        "async: the rest of the second save (write, commit) took %.3f s while training "
        "could go on\n",
        async_rest);
    // The checksum every save and verify computes, and --train.check_replicas on each check.
    std::vector<char> bytes(size_t{256} << 20, 1);
    double best = 1e30;
    uint32_t crc = 0;
    for (int i = 0; i < 3; ++i) {
      const auto t0 = Clock::now();
      crc ^= crc32c(bytes.data(), bytes.size());
      best = std::min(best, since(t0));
    }
    std::printf("CRC-32C: %.1f GB/s on one core (%s; best of 3 over 256 MB, crc %08x)\n",
                static_cast<double>(bytes.size()) / best / 1e9,
                crc32c_hardware_available() ? "SSE4.2/ARMv8 instructions" : "table", crc);
  }
  world.barrier();
  if (world.rank() == 0) fs::remove_all(dir);
  return 0;
}
