// CRC-32C two ways. The table path is slicing-by-8 (Intel's "Slicing-by-8", Kounavis & Berry
// 2005): eight 256-entry tables let one step consume 8 bytes. The hardware path feeds the SSE4.2
// crc32 instruction 8 bytes at a time, which computes the same reflected CRC-32C. Both keep the
// CRC inverted while running (initial value and final xor 0xFFFFFFFF, as RFC 3720 specifies).
#include "io/crc32c.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <nmmintrin.h>
#define TESSERA_CRC32C_X86 1
#endif

namespace tessera {

static_assert(std::endian::native == std::endian::little,
              "the table path reads 8 bytes at a time as a little-endian word");

namespace {

constexpr uint32_t kPolynomial = 0x82F63B78u;  // 0x1EDC6F41 bit-reversed

using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables make_tables() {
  Tables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1u) ? kPolynomial : 0u);
    t[0][i] = c;
  }
  for (size_t s = 1; s < 8; ++s)
    for (size_t i = 0; i < 256; ++i) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFFu];
  return t;
}

constexpr Tables kTables = make_tables();

uint64_t load_le64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace

uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = ~crc;
  for (; n >= 8; n -= 8, p += 8) {
    const uint64_t v = load_le64(p) ^ c;
    c = kTables[7][v & 0xFF] ^ kTables[6][(v >> 8) & 0xFF] ^ kTables[5][(v >> 16) & 0xFF] ^
        kTables[4][(v >> 24) & 0xFF] ^ kTables[3][(v >> 32) & 0xFF] ^ kTables[2][(v >> 40) & 0xFF] ^
        kTables[1][(v >> 48) & 0xFF] ^ kTables[0][v >> 56];
  }
  for (; n > 0; --n, ++p) c = (c >> 8) ^ kTables[0][(c ^ *p) & 0xFF];
  return ~c;
}

#ifdef TESSERA_CRC32C_X86

bool crc32c_hardware_available() {
  static const bool available = __builtin_cpu_supports("sse4.2");
  return available;
}

__attribute__((target("sse4.2"))) uint32_t crc32c_hardware(const void* data, size_t n,
                                                           uint32_t crc) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t c = ~crc;
  for (; n >= 8; n -= 8, p += 8) c = _mm_crc32_u64(c, load_le64(p));
  uint32_t c32 = static_cast<uint32_t>(c);
  for (; n > 0; --n, ++p) c32 = _mm_crc32_u8(c32, *p);
  return ~c32;
}

#else

bool crc32c_hardware_available() {
  return false;
}

uint32_t crc32c_hardware(const void* data, size_t n, uint32_t crc) {
  return crc32c_portable(data, n, crc);
}

#endif

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
  return crc32c_hardware_available() ? crc32c_hardware(data, n, crc)
                                     : crc32c_portable(data, n, crc);
}

namespace {

// As a range's length: all from `offset` to the end of the file (crc32c_file).
constexpr uint64_t kToTheEnd = ~uint64_t{0};

}  // namespace

uint32_t crc32c_file_range(const std::string& path, uint64_t offset, uint64_t length,
                           const ReadProgress& read) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(path + ": cannot open for reading (" + std::strerror(errno) + ")");
  // Closed however the loop ends: a failed read, or `read` throwing (a stop on a signal).
  const std::unique_ptr<const int, void (*)(const int*)> closer(&fd,
                                                                [](const int* f) { ::close(*f); });
  std::vector<unsigned char> buffer(static_cast<size_t>(std::min<uint64_t>(length, 4u << 20)));
  uint32_t crc = 0;
  while (length > 0) {
    const ssize_t got = ::pread(fd, buffer.data(), std::min<uint64_t>(length, buffer.size()),
                                static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got == 0 && length == kToTheEnd) break;
    if (got <= 0) {
      const std::string why = got < 0 ? std::strerror(errno) : "the file ends before it";
      throw InputError(path + ": read failed at byte " + std::to_string(offset) + " (" + why + ")");
    }
    crc = crc32c(buffer.data(), static_cast<size_t>(got), crc);
    if (read) read(static_cast<uint64_t>(got));
    offset += static_cast<uint64_t>(got);
    if (length != kToTheEnd) length -= static_cast<uint64_t>(got);
  }
  return crc;
}

namespace {

uint32_t gf2_times(const uint32_t* matrix, uint32_t vector) {
  uint32_t sum = 0;
  for (; vector != 0; vector >>= 1, ++matrix)
    if (vector & 1) sum ^= *matrix;
  return sum;
}

void gf2_square(uint32_t* square, const uint32_t* matrix) {
  for (int n = 0; n < 32; ++n) square[n] = gf2_times(matrix, matrix[n]);
}

}  // namespace

uint32_t crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t len2) {
  if (len2 == 0) return crc1;
  uint32_t even[32], odd[32];  // the operators of 2^k and 2^(k+1) zero bits
  odd[0] = 0x82F63B78u;        // one zero bit
  for (int n = 1; n < 32; ++n) odd[n] = uint32_t{1} << (n - 1);
  gf2_square(even, odd);  // two zero bits
  gf2_square(odd, even);  // four: one zero byte is next
  do {
    gf2_square(even, odd);
    if (len2 & 1) crc1 = gf2_times(even, crc1);
    len2 >>= 1;
    if (len2 == 0) break;
    gf2_square(odd, even);
    if (len2 & 1) crc1 = gf2_times(odd, crc1);
    len2 >>= 1;
  } while (len2 != 0);
  return crc1 ^ crc2;
}

uint32_t crc32c_file(const std::string& path, const ReadProgress& read) {
  return crc32c_file_range(path, 0, kToTheEnd, read);
}

}  // namespace tessera
