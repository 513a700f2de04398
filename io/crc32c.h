// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of iSCSI (RFC 3720), ext4
// and checkpoint MANIFESTs. The SSE4.2 crc32 instruction is used where the CPU has it (checked at
// run time), else a slicing-by-8 table; both give the same value. Pure functions, thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace tessera {

// CRC-32C of n bytes. Continuable: crc32c(b, nb, crc32c(a, na)) == crc32c of a followed by b.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

// Told the bytes of each chunk read, for a progress line.
using ReadProgress = std::function<void(uint64_t bytes)>;

// CRC-32C of a whole file, read in large chunks (never mapped into memory at once). InputError
// naming the file when it cannot be opened or read.
uint32_t crc32c_file(const std::string& path, const ReadProgress& read = {});

// CRC-32C of bytes [offset, offset + length) of a file, read in large chunks. InputError naming
// the file when it cannot be opened or read, or ends before offset + length.
uint32_t crc32c_file_range(const std::string& path, uint64_t offset, uint64_t length,
                           const ReadProgress& read = {});

// The CRC-32C of A followed by B from crc32c(A), crc32c(B) and B's length (zlib's method: the
// effect of len2 zero bytes on crc1 as powers of a 32 x 32 matrix over GF(2)), so that the
// pieces of one file checked apart give the file's CRC.
uint32_t crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t len2);

// The two implementations behind crc32c(), for tests and benchmarks. crc32c_hardware() may be
// called only where crc32c_hardware_available().
uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc = 0);
bool crc32c_hardware_available();
uint32_t crc32c_hardware(const void* data, size_t n, uint32_t crc = 0);

}  // namespace tessera
