// Real text into documents for the tokenizer. An input is a file or a directory (its regular
// files, also through symlinks, not recursively, in byte order of their names, leaving out the
// fortune package's `.dat`/`.u8` companions, corpora (`.bin`, `.idx`) and `.tmp` files). gzip
// and zstd files are decompressed as they are read (io/compressed_input.h); xz, bzip2 and zip
// files and tar archives are refused. JSON lines (see TextFormat) hold one JSON object per line, whose string field (default "text") is one document. Other files
// are plain text: fortune files split into one document per entry; other files are one document
// each, with overstriking removed and all other bytes unchanged. DocumentReader streams documents,
// so a corpus never needs to fit in memory; read_documents() collects them all.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

// The length of the valid UTF-8 sequence at `s` (1 to 4 bytes; no overlong forms, surrogates or
// code points past U+10FFFF), 0 where none starts; `left` bytes are readable.
size_t utf8_sequence_length(const unsigned char* s, size_t left);
// Whether `text` is valid UTF-8 throughout.
bool is_valid_utf8(std::string_view text);

// Yields the documents of a list of inputs in order, reading each file in blocks. Documents that
// are empty or only whitespace are dropped. Not thread-safe; one reader per thread.
// The largest plain-text document (1 GiB): a file without fortune separators is one document, held
// whole in memory with its token ids (about 7 bytes per byte of text), and a corpus sequence
// holds fewer than 2^31 tokens.
inline constexpr size_t kMaxDocumentBytes = size_t{1} << 30;

// How a file's lines are read: JSON lines by the name (`.jsonl`, `.ndjson`, `.json`, also under
// `.gz`, `.zst`, `.zstd`) and text otherwise, where a first line that is a JSON object is refused
// (Auto); or every file alike.
enum class TextFormat { Auto, Text, JsonLines };

class DocumentReader {
 public:
  // Resolves every input at once: throws InputError naming an input that does not exist, a
  // directory with no files in it, or a file reached twice (by two paths, or named and in a
  // directory given too), before anything is read. A plain-text document longer than
  // `max_document_bytes` is an InputError naming the file and its first line, raised as soon
  // as it is read that far.
  explicit DocumentReader(const std::vector<std::string>& inputs, std::string jsonl_key = "text",
                          size_t max_document_bytes = kMaxDocumentBytes,
                          TextFormat format = TextFormat::Auto);
  ~DocumentReader();
  DocumentReader(DocumentReader&&) noexcept;
  DocumentReader& operator=(DocumentReader&&) noexcept;

  // The next document, or nullopt after the last. Throws InputError naming the file (and the
  // line, for JSON lines) on unreadable files, invalid JSON or a missing/non-string field.
  std::optional<std::string> next();
  // Replaces `documents` with the next documents, stopping once their text reaches `max_bytes`
  // (always at least one document unless the inputs are exhausted). False at the end.
  bool next_chunk(std::vector<std::string>& documents, size_t max_bytes);

  // Sum of the input files' sizes, and how many of those bytes were taken in so far (compressed
  // ones, of a compressed file): their ratio is the reader's progress.
  int64_t total_bytes() const;
  int64_t bytes_read() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Every document of the inputs, in order (see DocumentReader).
std::vector<std::string> read_documents(const std::vector<std::string>& inputs);

// Undoes terminal overstriking as a line printer would show it: a backspace moves back one
// column and the next character overwrites it; an underscore never wins over a letter
// ("_\bX", "X\b_" and "X\bX" all give "X"; "___\b\b\babc" gives "abc").
std::string remove_overstrike(std::string_view text);

}  // namespace tessera
