// Byte-level tokenizer: ids 0..255 are the bytes of the text, id 256 marks the end of a document.
// Any byte string round-trips exactly (encode never appends the end-of-document id; callers that
// build a corpus append it after each document). Stateless; safe to share between threads.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

inline constexpr int64_t kByteVocab = 257;
inline constexpr int32_t kEndOfDocument = 256;
// How decode() shows the end-of-document id by default: on a line of its own, GPT-2's spelling.
inline constexpr std::string_view kEndOfDocumentText = "\n<|endoftext|>\n";

class ByteTokenizer {
 public:
  static std::vector<int32_t> encode(std::string_view text);
  // Throws InputError naming the position of an id outside [0, 257).
  static std::string decode(std::span<const int32_t> ids,
                            std::string_view end_of_document = kEndOfDocumentText);
};

}  // namespace tessera
