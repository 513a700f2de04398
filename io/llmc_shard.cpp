// llm.c token shard reader and writer (format and ownership: io/llmc_shard.h).
#include "io/llmc_shard.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "core/error.h"

namespace tessera {

static_assert(std::endian::native == std::endian::little,
              "llm.c shards are little-endian and read here without byte swapping");

namespace {

// llm.c's other shard format (dev/data/data_common.py, "llama-3"): uint32 tokens.
constexpr int32_t kLlama3Magic = 20240801;

[[noreturn]] void shard_error(const std::string& file, const std::string& what) {
  throw InputError("corpus " + file + ": " + what);
}

std::string errno_text() {
  return std::strerror(errno);
}

// Reads exactly `bytes` at `offset`, retrying short reads; false on an error or end of file.
bool pread_all(int fd, void* buf, size_t bytes, off_t offset) {
  auto* p = static_cast<char*>(buf);
  while (bytes > 0) {
    const ssize_t n = ::pread(fd, p, bytes, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<size_t>(n);
    offset += n;
  }
  return true;
}

// What a wrong magic looks like, so the message can say which file was given instead.
std::string magic_hint(const int32_t* header) {
  if (header[0] == kLlama3Magic)
    return " (an llm.c llama-3 shard of uint32 tokens, which tessera does not read)";
  if (std::memcmp(header, "MMIDIDX", 7) == 0)
    return " (a Megatron .idx: give its prefix, without .idx, as the corpus)";
  return "";
}

// Closes fd when the scope ends.
struct FdCloser {
  int fd;
  ~FdCloser() { ::close(fd); }
};

}  // namespace

LlmcShard LlmcShard::open(const std::string& path) {
  // O_NONBLOCK: a FIFO given by mistake must not hang the open; no effect on regular files.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) shard_error(path, "no such file (expected an llm.c token shard)");
    shard_error(path, "cannot open (" + errno_text() + ")");
  }
  FdCloser closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) shard_error(path, "cannot stat (" + errno_text() + ")");
  if (!S_ISREG(st.st_mode))
    shard_error(path, "expected an llm.c token shard (a regular file), found " +
                          std::string(S_ISDIR(st.st_mode) ? "a directory" : "a special file"));
  const auto file_bytes = static_cast<uint64_t>(st.st_size);

  // The magic is checked before the header's length, so that a short file of another kind (a
  // Megatron .idx, text) is named as what it is rather than as a truncated shard.
  int32_t header[kHeaderInts] = {};
  const size_t head = static_cast<size_t>(std::min<uint64_t>(file_bytes, sizeof header));
  if (!pread_all(fd, header, head, 0))
    shard_error(path, "cannot read the header (" + errno_text() + ")");
  if (head >= sizeof(int32_t) && header[0] != kMagic)
    shard_error(path, "expected magic " + std::to_string(kMagic) +
                          " (an llm.c GPT-2 token shard) in the first int32, found " +
                          std::to_string(header[0]) + magic_hint(header));
  if (head < sizeof header)
    shard_error(path, "expected at least the " + std::to_string(kHeaderBytes) +
                          "-byte llm.c shard header (256 int32), found a file of " +
                          std::to_string(file_bytes) + " bytes");
  if (header[1] != kVersion)
    shard_error(path, "expected version " + std::to_string(kVersion) + " in header[1], found " +
                          std::to_string(header[1]));
  const int64_t count = header[2];
  if (count < 0)
    shard_error(path, "expected a token count >= 0 in header[2], found " + std::to_string(count));
  // count < 2^31, so the expected size cannot overflow.
  const uint64_t expected = static_cast<uint64_t>(kHeaderBytes + 2 * count);
  if (file_bytes != expected) {
    const std::string what =
        file_bytes < expected
            ? "truncated: " + std::to_string(expected - file_bytes) + " bytes missing"
            : std::to_string(file_bytes - expected) + " trailing bytes after the tokens";
    shard_error(path, "expected " + std::to_string(expected) + " bytes (1024-byte header + " +
                          std::to_string(count) + " tokens x 2, as header[2] says), found " +
                          std::to_string(file_bytes) + " bytes (" + what + ")");
  }
  if (count == 0)
    shard_error(path, "empty corpus: expected at least one token, found a header with count 0");

  auto mapping = map_read_only(fd, expected, path);
  if (!mapping) shard_error(path, "cannot memory-map (" + errno_text() + ")");

  LlmcShard shard;
  shard.path_ = path;
  shard.num_tokens_ = count;
  shard.file_ = std::move(mapping);
  return shard;
}

const uint16_t* LlmcShard::tokens() const {
  return reinterpret_cast<const uint16_t*>(static_cast<const char*>(file_->data) + kHeaderBytes);
}

void LlmcShard::read_tokens(int64_t start, int64_t count, int32_t* out) const {
  // Written so that no sum can overflow, whatever the arguments.
  TESSERA_CHECK(start >= 0 && count >= 0 && start <= num_tokens_ && count <= num_tokens_ - start,
                std::to_string(count) + " tokens from position " + std::to_string(start) +
                    " reach outside the " + std::to_string(num_tokens_) + " tokens of " + path_);
  const uint16_t* src = tokens() + start;
  for (int64_t i = 0; i < count; ++i) out[i] = src[i];
}

void write_llmc_shard(const std::string& path, std::span<const uint16_t> tokens) {
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    shard_error(path, "expected fewer than 2^31 tokens (the header's int32 count), found " +
                          std::to_string(tokens.size()));
  int32_t header[LlmcShard::kHeaderInts] = {};
  header[0] = LlmcShard::kMagic;
  header[1] = LlmcShard::kVersion;
  header[2] = static_cast<int32_t>(tokens.size());

  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) shard_error(tmp, "cannot create (" + errno_text() + ")");
  bool ok = std::fwrite(header, sizeof header, 1, f) == 1 &&
            (tokens.empty() || std::fwrite(tokens.data(), tokens.size_bytes(), 1, f) == 1) &&
            std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  const std::string err = ok ? "" : errno_text();
  ok = std::fclose(f) == 0 && ok;
  if (!ok) {
    const std::string why = err.empty() ? errno_text() : err;
    std::remove(tmp.c_str());
    shard_error(tmp, "write failed (" + why + ")");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = errno_text();
    std::remove(tmp.c_str());
    shard_error(path, "cannot rename " + tmp + " into place (" + why + ")");
  }
}

bool is_llmc_shard(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return false;
  FdCloser closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return false;
  int32_t magic = 0;
  // llm.c's llama-3 shards too, so that open() refuses them by name instead of the file being
  // taken for a Megatron prefix with a missing .idx.
  return pread_all(fd, &magic, sizeof magic, 0) &&
         (magic == LlmcShard::kMagic || magic == kLlama3Magic);
}

}  // namespace tessera
