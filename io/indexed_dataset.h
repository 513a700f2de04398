// Megatron-LM's indexed dataset: PREFIX.idx (header, per-sequence sizes and byte pointers,
// document indices) and PREFIX.bin (raw little-endian tokens). Corpora written by Megatron's
// preprocessing load unchanged, and ours load in Megatron. The reader memory-maps both files and
// copies nothing of them into memory of its own: a corpus of 10^9 documents costs page cache,
// which the ranks of a node share and the kernel may evict, not 16 GB per rank. Every malformed
// input is an InputError naming the file.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "io/mapped_file.h"

namespace tessera {

// Megatron's rule: uint16 tokens when the vocabulary has fewer than 65500 ids, else int32.
DType token_dtype_for_vocab(int64_t vocab);

// Writes one sequence per document. Files appear under their real names only in finish(), .bin
// first and .idx last, so an .idx on disk always describes a complete .bin; a writer destroyed
// before finish() removes its temporary files.
class IndexedDatasetWriter {
 public:
  IndexedDatasetWriter(std::string prefix, DType token_dtype);  // token_dtype: U16 or I32
  ~IndexedDatasetWriter();
  IndexedDatasetWriter(const IndexedDatasetWriter&) = delete;
  IndexedDatasetWriter& operator=(const IndexedDatasetWriter&) = delete;

  // Throws InputError when a token does not fit the token dtype.
  void add_document(std::span<const int32_t> tokens);
  // Writes the index, fsyncs both files and renames them into place.
  void finish();

  int64_t num_documents() const { return static_cast<int64_t>(sizes_.size()); }
  int64_t num_tokens() const { return num_tokens_; }

 private:
  std::string prefix_;
  DType dtype_;
  std::FILE* bin_ = nullptr;
  std::vector<int32_t> sizes_;
  int64_t num_tokens_ = 0;
  bool finished_ = false;
  bool idx_created_ = false;  // the .idx.tmp is this writer's (finish() has created it)
};

// Part `part` of `parts` near-equal consecutive pieces of [0, n): [begin, end).
std::pair<int64_t, int64_t> part_of(int64_t n, int part, int parts);
// What a rank adds to a fault it found in its part of a check the ranks share: "; the ranks share
// this check, this one read WHAT [begin, end) of n", [begin, end) being part_of(n, part, parts);
// "" for one part (nothing is shared).
std::string shared_part_note(const char* what, int64_t n, int part, int parts);

// A read-only view of a corpus. Cheap to copy (copies share the mapping); the tokens stay mapped
// while any copy lives. Sequences are contiguous in the .bin (open() checks it), so the
// concatenated token stream is simply the .bin read as an array.
class IndexedDataset {
 public:
  // Validates the .idx against the format and the .bin's size; throws InputError otherwise. The
  // walk over the sequences and documents (each entry checked against the one before) covers
  // only part `part` of `parts` (part_of) when the ranks of a run share it; a failure there is a
  // SharedInputError that names the part read.
  static IndexedDataset open(const std::string& prefix, int part = 0, int parts = 1);

  std::string idx_path() const { return prefix_ + ".idx"; }
  std::string bin_path() const { return prefix_ + ".bin"; }
  DType dtype() const { return dtype_; }  // U16 or I32
  int64_t num_sequences() const { return sequences_; }
  int64_t num_documents() const { return documents_ - 1; }
  int64_t num_tokens() const { return num_tokens_; }

  int64_t sequence_length(int64_t seq) const;
  // Position of a sequence's first token in the concatenated stream.
  int64_t sequence_start(int64_t seq) const;
  // The document holding stream position `pos` (O(log S)), and for messages "token P (document
  // D of N, counted from 0)".
  int64_t document_of_token(int64_t pos) const;
  std::string token_place(int64_t pos) const;
  // The stream position of document d's last token; -1 for an empty document, and for one whose
  // entries are out of order (in a part of the index another rank walks: see open()).
  int64_t document_last_token(int64_t d) const;

  // The mapped .bin: num_tokens() values of dtype(), the concatenated stream (valid while this
  // dataset or a copy lives).
  const void* token_data() const;

  int32_t token(int64_t pos) const;
  // Tokens [start, start + count) of the concatenated stream, widened to int32.
  void read_tokens(int64_t start, int64_t count, int32_t* out) const;

 private:
  IndexedDataset() = default;
  // Maps `path` read-only; with `expected` >= 0 after checking that it has that many bytes (the
  // .bin against its index; `what` says where the figure comes from).
  static std::shared_ptr<const MappedFile> map_file(const std::string& path, int64_t expected,
                                                    const std::string& what);
  // Entry i of the .idx's sizes (int32), pointers (int64, bytes) and document indices (int64).
  // The arrays start at unaligned offsets (the header is 34 bytes): read by memcpy.
  int64_t size_at(int64_t i) const;
  int64_t pointer_at(int64_t i) const;
  int64_t doc_at(int64_t i) const;
  std::string prefix_;
  DType dtype_ = DType::U16;
  int64_t sequences_ = 0, documents_ = 0, num_tokens_ = 0;  // documents_: D entries, D - 1 docs
  std::shared_ptr<const MappedFile> idx_, bin_;             // shared by copies
};

}  // namespace tessera
