// The bytes of a text input, decompressed as they are read when the file is gzip or zstd. Corpora
// are commonly shipped so (C4 and Dolma as .json.gz, the Pile and SlimPajama as .jsonl.zst), and
// reading them as they are saves a decompressed copy on disk. The format is told by the file's
// first bytes, whatever its name; the file is opened once and read in order, so a FIFO (a
// process substitution, `<(curl ...)`) works too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

namespace tessera {

class InputBytes {
 public:
  // Opens `path`. Throws InputError naming it when it cannot be opened, or when it is compressed
  // in a format not read here (xz, bzip2, zip).
  explicit InputBytes(const std::filesystem::path& path);
  ~InputBytes();
  InputBytes(const InputBytes&) = delete;
  InputBytes& operator=(const InputBytes&) = delete;

  // Up to `n` bytes of text into `out`, at least one unless the text has ended (then 0). Throws
  // InputError naming the file on a read error, damaged compressed data, or a file that ends
  // inside a gzip member or zstd frame (truncated).
  size_t read(char* out, size_t n);

  // Bytes of the file itself taken in so far: the compressed bytes of a compressed file. At the
  // end, the file's size; the reader's progress against the sum of the inputs' sizes.
  int64_t file_bytes_read() const;
  // "gzip", "zstd", or "" for a file read as it is.
  const char* compression() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera
