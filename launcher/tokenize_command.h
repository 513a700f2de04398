// `tessera tokenize VERB ...`: SentencePiece training (`train`), text to corpus (`encode`) and
// back (`decode`); without --tokenizer.model, encode and decode are byte-level. Bad options and
// inputs propagate as tessera::InputError or boost::program_options::error for main to report;
// the return value is the exit code. encode_corpus() is the streaming encoder behind `encode`,
// callable on its own (tests, benchmarks).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "io/sentencepiece_tokenizer.h"
#include "io/text_files.h"

namespace tessera {

// argv[0] is "tokenize", argv[1] the verb.
int tokenize_command(int argc, char** argv);

struct EncodeStats {
  int64_t documents = 0;
  int64_t tokens = 0;      // end-of-document ids included
  int64_t text_bytes = 0;  // bytes of the documents' text
  // Documents holding bytes that are not UTF-8, with a tokenizer that does not keep them
  // (Tokenizer::keeps_any_bytes): they will not decode to their text.
  int64_t not_utf8_documents = 0;
  // Tokens of text the tokenizer has no piece for (Tokenizer::unknown: SentencePiece's <unk>,
  // from a model trained with --byte_fallback false); they decode as U+2047.
  int64_t unknown_tokens = 0;
  double seconds = 0;
};

// Encodes every document of `reader` with `tokenizer`, appends end_of_document() to each and
// writes PREFIX.bin/.idx with token_dtype_for_vocab(tokenizer.vocab_size()). Reads a few MB of
// documents at a time and encodes them on `threads` threads (0: all cores) while the next chunk
// is read and the previous one written, so memory stays bounded. Documents are written in input
// order: the corpus is byte-identical for every thread count. With `progress`, a progress line
// goes to stderr. Throws InputError (and writes nothing) when the inputs hold no documents.
// `chunk_bytes` is the text per chunk (small values let tests cross many chunk boundaries).
EncodeStats encode_corpus(DocumentReader& reader, const Tokenizer& tokenizer,
                          const std::string& prefix, int threads, bool progress,
                          size_t chunk_bytes = size_t{4} << 20);

}  // namespace tessera
