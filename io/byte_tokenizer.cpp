// Byte-level tokenizer (see io/byte_tokenizer.h).
#include "io/byte_tokenizer.h"

#include "core/error.h"

namespace tessera {

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode(std::span<const int32_t> ids, std::string_view end_of_document) {
  std::string text;
  text.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id >= 0 && id < 256) {
      text += static_cast<char>(static_cast<unsigned char>(id));
    } else if (id == kEndOfDocument) {
      text += end_of_document;
    } else {
      throw InputError("byte tokenizer: token " + std::to_string(i) + " has id " +
                       std::to_string(id) + ", expected an id in [0, " +
                       std::to_string(kByteVocab) +
                       ") (was the corpus made with another tokenizer?)");
    }
  }
  return text;
}

}  // namespace tessera
