// libFuzzer target over the two corpus readers: Megatron's indexed dataset (io/indexed_dataset.h)
// and llm.c's token shards (io/llmc_shard.h). Built and run by scripts/fuzz.sh.
//
// Input layout (fuzz/make_seeds.py writes valid examples into fuzz/seeds/):
//   byte 0, bit 0 = 0: Megatron. Bytes 1-2: little-endian length L of the .idx; the next L bytes
//                      (fewer if the input ends) are PREFIX.idx, the rest PREFIX.bin. Bit 1 set:
//                      no PREFIX.bin at all.
//   byte 0, bit 0 = 1: llm.c. Bytes 1.. are the shard file.
// The files live in one temporary directory per process and are rewritten on every run.
//
// Bad input must end in an InputError. Anything else fails the run: another exception (an
// InternalError from a reader's own checks included), a crash, a sanitizer report, a hang, and
// also a reader that opens a file and then returns tokens other than the file's bytes or
// offsets that do not add up, or a walk over the index shared by ranks that judges otherwise
// than one walk (checked below, reported with abort()).
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/indexed_dataset.h"
#include "io/llmc_shard.h"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "corpus_readers_fuzz: %s\n", what);
  std::abort();
}

#define FUZZ_EXPECT(cond)                            \
  do {                                               \
    if (!(cond)) fail("expectation failed: " #cond); \
  } while (0)

// A private directory under $TMPDIR (scripts/fuzz.sh points it into its build directory), else
// on tmpfs when there is one; removed when the process exits normally, left behind by a crash.
const std::string& work_dir() {
  static const std::string dir = [] {
    std::string base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    if (const char* t = std::getenv("TMPDIR"); t && *t) base = t;
    std::string templ = base + "/tessera_corpus_fuzz.XXXXXX";
    if (!::mkdtemp(templ.data())) fail("cannot create a temporary directory");
    static std::string removed_at_exit;
    removed_at_exit = templ;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(removed_at_exit, ec);
    });
    return templ;
  }();
  return dir;
}

void write_file(const std::string& path, const uint8_t* data, size_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) fail("cannot write a temporary file");
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n <= 0) fail("cannot write a temporary file");
    data += n;
    size -= static_cast<size_t>(n);
  }
  ::close(fd);
}

// The walk over the index shared by `parts` ranks (IndexedDataset::open's parts): whether some
// part refuses the corpus, and the token count of the parts that do not (the same in each).
struct PartsVerdict {
  bool refused = false;
  int64_t tokens = -1;
};
PartsVerdict open_in_parts(const std::string& prefix, int parts) {
  PartsVerdict v;
  for (int part = 0; part < parts; ++part) {
    try {
      const int64_t n = tessera::IndexedDataset::open(prefix, part, parts).num_tokens();
      FUZZ_EXPECT(v.tokens < 0 || v.tokens == n);
      v.tokens = n;
    } catch (const tessera::InputError&) {
      v.refused = true;
    }
  }
  return v;
}

void fuzz_megatron(const uint8_t* data, size_t size, bool with_bin) {
  if (size < 2) return;
  const size_t idx_len = std::min<size_t>(data[0] | (size_t{data[1]} << 8), size - 2);
  const uint8_t* idx = data + 2;
  const uint8_t* bin = idx + idx_len;
  const size_t bin_len = size - 2 - idx_len;
  const std::string prefix = work_dir() + "/corpus";
  write_file(prefix + ".idx", idx, idx_len);
  if (with_bin) {
    write_file(prefix + ".bin", bin, bin_len);
  } else {
    ::unlink((prefix + ".bin").c_str());
  }

  // Parts of the walk refuse together exactly what one walk refuses.
  const PartsVerdict two = open_in_parts(prefix, 2), three = open_in_parts(prefix, 3);
  tessera::IndexedDataset ds = [&] {
    try {
      return tessera::IndexedDataset::open(prefix);
    } catch (const tessera::InputError&) {
      FUZZ_EXPECT(two.refused && three.refused);
      throw;
    }
  }();
  FUZZ_EXPECT(!two.refused && !three.refused);
  FUZZ_EXPECT(with_bin);
  FUZZ_EXPECT(two.tokens == ds.num_tokens() && three.tokens == ds.num_tokens());
  const int64_t n = ds.num_tokens();
  const size_t item = tessera::dtype_size(ds.dtype());
  FUZZ_EXPECT(ds.dtype() == tessera::DType::U16 || ds.dtype() == tessera::DType::I32);
  FUZZ_EXPECT(n > 0 && static_cast<uint64_t>(n) * item == bin_len);
  FUZZ_EXPECT(std::memcmp(ds.token_data(), bin, bin_len) == 0);

  // Sequences tile the stream: each starts where the previous one ends.
  FUZZ_EXPECT(ds.num_sequences() >= 1 && ds.num_documents() >= 1);
  int64_t at = 0;
  for (int64_t s = 0; s < ds.num_sequences(); ++s) {
    FUZZ_EXPECT(ds.sequence_start(s) == at && ds.sequence_length(s) >= 0);
    at += ds.sequence_length(s);
  }
  FUZZ_EXPECT(at == n);

  // Every token, widened, equals the .bin's bytes.
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  ds.read_tokens(0, n, tokens.data());
  for (int64_t i = 0; i < n; ++i) {
    int32_t expected;
    if (item == 2) {
      uint16_t t;
      std::memcpy(&t, bin + 2 * i, 2);
      expected = t;
    } else {
      std::memcpy(&expected, bin + 4 * i, 4);
    }
    FUZZ_EXPECT(tokens[static_cast<size_t>(i)] == expected);
  }
  ds.read_tokens(n, 0, tokens.data());

  // Documents are runs of the stream: document_of_token never falls as the position rises.
  int64_t last_doc = 0;
  for (int64_t pos = 0; pos < n; ++pos) {
    const int64_t doc = ds.document_of_token(pos);
    FUZZ_EXPECT(doc >= last_doc && doc < ds.num_documents());
    last_doc = doc;
  }
  FUZZ_EXPECT(ds.token(n - 1) == tokens.back());
  // A copy shares the mapping, which outlives the original.
  tessera::IndexedDataset copy = ds;
  ds = tessera::IndexedDataset::open(prefix);
  FUZZ_EXPECT(copy.token(n - 1) == tokens.back());
  // A Megatron .bin is not a shard unless its first two tokens happen to spell the magic.
  (void)tessera::is_llmc_shard(prefix + ".bin");
}

void fuzz_llmc(const uint8_t* data, size_t size) {
  const std::string path = work_dir() + "/shard.bin";
  write_file(path, data, size);
  const bool looks_like_shard = tessera::is_llmc_shard(path);
  const tessera::LlmcShard shard = tessera::LlmcShard::open(path);
  FUZZ_EXPECT(looks_like_shard);
  const int64_t n = shard.num_tokens();
  FUZZ_EXPECT(n > 0 && static_cast<uint64_t>(tessera::LlmcShard::kHeaderBytes + 2 * n) == size);
  FUZZ_EXPECT(std::memcmp(shard.tokens(), data + tessera::LlmcShard::kHeaderBytes, 2 * n) == 0);
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  shard.read_tokens(0, n, tokens.data());
  for (int64_t i = 0; i < n; ++i) {
    uint16_t t;
    std::memcpy(&t, data + tessera::LlmcShard::kHeaderBytes + 2 * i, 2);
    FUZZ_EXPECT(tokens[static_cast<size_t>(i)] == t);
  }
  shard.read_tokens(n / 2, n - n / 2, tokens.data());
  FUZZ_EXPECT(tokens[static_cast<size_t>(n - n / 2 - 1)] == shard.tokens()[n - 1]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  try {
    if (data[0] & 1) {
      fuzz_llmc(data + 1, size - 1);
    } else {
      fuzz_megatron(data + 1, size - 1, (data[0] & 2) == 0);
    }
  } catch (const tessera::InputError&) {
    // The expected outcome of bad input.
  }
  return 0;
}
