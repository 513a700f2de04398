// llm.c's token shards (the `.bin` files its dev/data scripts write, e.g.
// fineweb_train_000001.bin).
//
// Format, as llm.c's dev/data/data_common.py write_datafile lays it out for GPT-2 tokens:
//   bytes [0, 1024)        header: 256 little-endian int32; [0] magic 20240520, [1] version 1,
//                          [2] token count N, the rest zero (ignored here)
//   bytes [1024, 1024+2N)  N little-endian uint16 token ids
// and nothing after them: the file is exactly 1024 + 2 N bytes. (llm.c's llama-3 shards, magic
// 20240801 and version 7 with uint32 tokens, are a different format and are rejected.)
//
// Memory: open() memory-maps the whole file read-only. The mapping is owned by a shared_ptr,
// so a LlmcShard is cheap to copy and its tokens() pointer stays valid while any copy lives.
// A file truncated while it is mapped ends the process naming it (map_read_only). Every
// malformed input is an InputError
// whose message names the file, what was expected and what was found.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "io/mapped_file.h"

namespace tessera {

class LlmcShard {
 public:
  static constexpr int32_t kMagic = 20240520;
  static constexpr int32_t kVersion = 1;
  static constexpr int64_t kHeaderInts = 256;
  static constexpr int64_t kHeaderBytes = kHeaderInts * 4;

  // Validates the header against the file's size and maps the tokens; throws InputError.
  static LlmcShard open(const std::string& path);

  const std::string& path() const { return path_; }
  int64_t num_tokens() const { return num_tokens_; }  // > 0
  // The num_tokens() uint16 ids, in the mapped file.
  const uint16_t* tokens() const;
  // Tokens [start, start + count), widened to int32.
  void read_tokens(int64_t start, int64_t count, int32_t* out) const;

 private:
  LlmcShard() = default;
  std::string path_;
  int64_t num_tokens_ = 0;
  std::shared_ptr<const MappedFile> file_;  // shared by copies
};

// Writes a shard llm.c reads (header, then the tokens). The file appears under `path` only when
// complete: written to path + ".tmp", fsynced, renamed. Throws InputError when there are 2^31 or
// more tokens (llm.c's limit: the count is an int32) or on an I/O failure.
void write_llmc_shard(const std::string& path, std::span<const uint16_t> tokens);

// True when `path` is a regular file that starts with an llm.c shard magic (GPT-2's, or llama-3's,
// which open() refuses by name); never throws. Tells
// a shard from a Megatron prefix (whose .bin starts with raw tokens and whose .idx with
// "MMIDIDX"). Says nothing about whether the rest of the file is valid: open() does.
bool is_llmc_shard(const std::string& path);

}  // namespace tessera
