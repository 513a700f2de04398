// Tokenizers behind one small interface: the byte-level tokenizer (no model) and SentencePiece
// models (BPE or unigram) read from a `.model` file, plus SentencePiece training on text inputs.
// encode() never appends the end-of-document id; corpus builders append end_of_document() after
// each document. A tokenizer is immutable once built: encode() and decode() may run on several
// threads at once. SentencePiece headers stay out of this file (the model is held by pointer).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/byte_tokenizer.h"
#include "io/text_files.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace tessera {

class TokenCorpus;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t end_of_document() const = 0;
  // The id of text the tokenizer has no piece for (SentencePiece's <unk>); -1: it has none.
  virtual int32_t unknown() const = 0;
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Ids back to text; each end_of_document() id shows as `end_of_document_text`. Throws
  // InputError naming the position of an id outside [0, vocab_size()).
  virtual std::string decode(std::span<const int32_t> ids,
                             std::string_view end_of_document_text = kEndOfDocumentText) const = 0;
  // For messages: "the byte-level tokenizer", "SentencePiece model PATH".
  virtual std::string description() const = 0;
  // Whether any bytes decode back from their ids exactly. SentencePiece's only do where they are
  // UTF-8: it encodes each other byte as U+FFFD.
  virtual bool keeps_any_bytes() const = 0;
  // The longest document encode() takes in bounded memory: what `tokenize encode` refuses beyond.
  virtual size_t max_document_bytes() const = 0;
};

// SentencePiece holds about 80-180 bytes of memory per byte of the text it encodes at once (its
// symbols and their merge queue or lattice): a 16 MiB document needs 1.4-3 GB, one of 1 GiB over
// 100 GB, where the byte-level tokenizer needs about 7 bytes per byte.
inline constexpr size_t kMaxSentencePieceDocumentBytes = size_t{16} << 20;

// ByteTokenizer (io/byte_tokenizer.h) behind the Tokenizer interface: 257 ids, 256 ends a document.
class ByteLevelTokenizer final : public Tokenizer {
 public:
  int64_t vocab_size() const override { return kByteVocab; }
  int32_t end_of_document() const override { return kEndOfDocument; }
  int32_t unknown() const override { return -1; }
  std::vector<int32_t> encode(std::string_view text) const override {
    return ByteTokenizer::encode(text);
  }
  std::string decode(std::span<const int32_t> ids,
                     std::string_view end_of_document_text = kEndOfDocumentText) const override {
    return ByteTokenizer::decode(ids, end_of_document_text);
  }
  std::string description() const override { return "the byte-level tokenizer"; }
  bool keeps_any_bytes() const override { return true; }
  size_t max_document_bytes() const override { return kMaxDocumentBytes; }
};

// A SentencePiece model; its eos piece is the end-of-document id. Copies share the model.
class SentencePieceTokenizer final : public Tokenizer {
 public:
  // Throws InputError naming the file when it is missing, is not a SentencePiece model, or the
  // model has no eos piece to end documents with.
  static SentencePieceTokenizer load(const std::string& path);

  int64_t vocab_size() const override;
  int32_t end_of_document() const override;
  int32_t unknown() const override;
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(std::span<const int32_t> ids,
                     std::string_view end_of_document_text = kEndOfDocumentText) const override;
  std::string description() const override { return "SentencePiece model " + path_; }
  bool keeps_any_bytes() const override { return false; }
  size_t max_document_bytes() const override { return kMaxSentencePieceDocumentBytes; }
  const std::string& path() const { return path_; }

 private:
  SentencePieceTokenizer() = default;
  std::string path_;
  std::shared_ptr<const sentencepiece::SentencePieceProcessor> model_;
};

// The tokenizer a corpus command uses: SentencePiece when `model_path` is given, else byte-level.
std::unique_ptr<Tokenizer> open_tokenizer(const std::string& model_path);

// Why `corpus` was likely encoded with another tokenizer, "" when nothing says so: "P holds id I
// at token T (document D of N, ...), beyond the V ids of TOKENIZER" for an id found among up to 64
// Ki tokens in 1024 evenly spread runs; else "the documents of P end with id I, not with E, the end
// of document of TOKENIZER" when they all end with one id (TokenCorpus::document_end_id) and it is
// not the tokenizer's.
std::string tokenizer_mismatch(const TokenCorpus& corpus, const Tokenizer& tokenizer);

// How far train_sentencepiece has read its text: given after each document, and once with
// `done` when all is read and SentencePiece's own training begins.
struct SentencePieceReadProgress {
  int64_t documents = 0;
  int64_t sentences = 0;
  int64_t bytes_read = 0;  // of the input files
  int64_t total_bytes = 0;
  bool done = false;
};

struct SentencePieceTrainOptions {
  std::vector<std::string> inputs;  // files or directories, read as DocumentReader reads them
  std::string output_prefix;        // writes PREFIX.model and PREFIX.vocab
  int64_t vocab_size = 0;
  std::string model_type = "bpe";  // "bpe" or "unigram"
  double character_coverage = 0.9995;
  int64_t max_sentences = 0;  // lines sampled for training; 0: all
  int threads = 0;            // 0: all cores, at most 128 (SentencePiece's limit)
  std::string jsonl_key = "text";
  TextFormat format = TextFormat::Auto;
  bool byte_fallback = true;  // unknown characters as UTF-8 byte pieces instead of <unk>
  bool verbose = false;       // SentencePiece's own log on stderr
  std::function<void(const SentencePieceReadProgress&)> progress;  // none when empty
};

struct SentencePieceTrainStats {
  int64_t documents = 0;
  int64_t sentences = 0;   // lines given to the trainer
  int64_t text_bytes = 0;  // bytes of the documents read
  int64_t vocab_size = 0;  // of the written model
  double seconds = 0;
};

// Trains on the documents of options.inputs, each cut into lines (lines longer than SentencePiece
// accepts are cut at a space), streamed to the trainer without a temporary file. Ids: unk 0,
// bos 1, eos 2 (the end of document), no pad. Normalization is the identity and whitespace is
// kept as it is, so decode(encode(text)) == text for valid UTF-8 (with byte fallback, for any
// character). Throws InputError naming the option at fault (--vocab_size, --model_type, ...).
SentencePieceTrainStats train_sentencepiece(const SentencePieceTrainOptions& options);

}  // namespace tessera
