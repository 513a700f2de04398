// SentencePiece models behind the Tokenizer interface, and their training (see
// io/sentencepiece_tokenizer.h). SentencePiece reports failures as util::Status values whose text
// starts with its source location; they become InputErrors that name the option or file at fault.
#include "io/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <exception>
#include <filesystem>
#include <thread>
#include <unordered_map>

#include "core/error.h"
#include "core/number_text.h"
#include "io/file_kind.h"
#include "io/text_files.h"
#include "io/token_corpus.h"

namespace tessera {

namespace {

namespace spm = sentencepiece;

// SentencePiece rejects training sentences longer than this many bytes; longer lines are cut.
constexpr size_t kMaxSentenceBytes = 4192;
constexpr size_t kCutSentenceBytes = 4096;

// "./src/trainer_interface.cc(580) [check] Reason." -> "Reason."; "" when only the check is left.
std::string reason(const spm::util::Status& status) {
  std::string msg = status.message();
  const size_t close = msg.find("] ");
  if (msg.starts_with("./")) msg = close == std::string::npos ? "" : msg.substr(close + 2);
  return msg;
}

bool blank(std::string_view s) {
  return s.find_first_not_of(" \t\r\n\f\v") == std::string_view::npos;
}

// Feeds the trainer the non-blank lines of every document, reading documents as it goes. An
// InputError from the reader ends the iteration; train_sentencepiece() rethrows it afterwards,
// so it never unwinds through SentencePiece's frames.
class DocumentLines final : public spm::SentenceIterator {
 public:
  DocumentLines(DocumentReader& reader, SentencePieceTrainStats& stats,
                const std::function<void(const SentencePieceReadProgress&)>& progress)
      : reader_(reader), stats_(stats), progress_(progress) {
    advance();
  }
  bool done() const override { return done_; }
  void Next() override { advance(); }
  const std::string& value() const override { return line_; }
  spm::util::Status status() const override {
    if (!error_) return {};
    return {spm::util::StatusCode::kDataLoss, "reading the training text failed"};
  }
  std::exception_ptr error() const { return error_; }

 private:
  void advance() {
    try {
      while (!next_line()) {
        std::optional<std::string> doc = reader_.next();
        if (!doc) {
          done_ = true;
          report();
          return;
        }
        doc_ = std::move(*doc);
        pos_ = 0;
        ++stats_.documents;
        stats_.text_bytes += static_cast<int64_t>(doc_.size());
        report();
      }
      ++stats_.sentences;
    } catch (const std::exception&) {
      error_ = std::current_exception();
      done_ = true;
    }
  }

  // The next non-blank line of doc_ from pos_ into line_; false when the document is used up.
  bool next_line() {
    while (pos_ < doc_.size()) {
      size_t end = doc_.find('\n', pos_);
      if (end == std::string::npos) end = doc_.size();
      size_t next = end + 1;
      if (end - pos_ > kCutSentenceBytes) {
        end = doc_.rfind(' ', pos_ + kCutSentenceBytes);
        if (end == std::string::npos || end <= pos_) {  // no space: cut before a UTF-8 lead byte
          end = pos_ + kCutSentenceBytes;
          while (end > pos_ + 1 && (static_cast<unsigned char>(doc_[end]) & 0xC0) == 0x80) --end;
        }
        next = end;
      }
      line_.assign(doc_, pos_, end - pos_);
      pos_ = next;
      if (!blank(line_)) return true;
    }
    return false;
  }

  void report() const {
    if (progress_)
      progress_(
          {stats_.documents, stats_.sentences, reader_.bytes_read(), reader_.total_bytes(), done_});
  }

  DocumentReader& reader_;
  SentencePieceTrainStats& stats_;
  const std::function<void(const SentencePieceReadProgress&)>& progress_;
  std::string doc_;
  size_t pos_ = 0;
  std::string line_;
  bool done_ = false;
  std::exception_ptr error_;
};

// SentencePiece's trainer refuses more threads (a DGX H100 has 224 cores).
constexpr int kMaxTrainThreads = 128;

void check_train_options(const SentencePieceTrainOptions& o) {
  if (o.vocab_size < 4 || o.vocab_size > INT32_MAX)
    throw InputError("--vocab_size " + std::to_string(o.vocab_size) +
                     ": expected an integer in [4, 2147483647] (ids are int32)");
  if (o.model_type != "bpe" && o.model_type != "unigram")
    throw InputError("--model_type: expected bpe or unigram, found \"" + o.model_type + "\"");
  if (!(o.character_coverage >= 0.98 && o.character_coverage <= 1))  // SentencePiece's range
    throw InputError("--character_coverage: expected a fraction in [0.98, 1], found " +
                     shortest_text(o.character_coverage));
  if (o.max_sentences < 0)
    throw InputError("--max_sentences: expected 0 (all) or a positive count, found " +
                     std::to_string(o.max_sentences));
  if (o.threads < 0 || o.threads > kMaxTrainThreads)
    throw InputError("--threads: expected 0 (all cores, at most " +
                     std::to_string(kMaxTrainThreads) + ") or a count up to " +
                     std::to_string(kMaxTrainThreads) + ", found " + std::to_string(o.threads));
  if (o.output_prefix.empty()) throw InputError("--output: expected a model prefix, found \"\"");
}

std::unordered_map<std::string, std::string> trainer_arguments(const SentencePieceTrainOptions& o) {
  const unsigned cores =
      std::clamp(std::thread::hardware_concurrency(), 1u, unsigned{kMaxTrainThreads});
  return {{"model_prefix", o.output_prefix},
          {"vocab_size", std::to_string(o.vocab_size)},
          {"model_type", o.model_type},
          {"character_coverage", shortest_text(o.character_coverage)},
          {"input_sentence_size", std::to_string(o.max_sentences)},
          {"shuffle_input_sentence", "true"},
          {"num_threads", std::to_string(o.threads > 0 ? unsigned(o.threads) : cores)},
          {"max_sentence_length", std::to_string(kMaxSentenceBytes)},
          {"unk_id", "0"},
          {"bos_id", "1"},
          {"eos_id", "2"},
          {"pad_id", "-1"},
          {"normalization_rule_name", "identity"},
          {"remove_extra_whitespaces", "false"},
          {"allow_whitespace_only_pieces", "true"},
          // The trainer reads lines without their line breaks, so no piece it learns holds one:
          // a newline is a piece of its own, or, without byte pieces, it would be <unk>.
          {"user_defined_symbols", "\n"},
          {"byte_fallback", o.byte_fallback ? "true" : "false"},
          {"minloglevel", o.verbose ? "0" : "2"}};
}

}  // namespace

SentencePieceTokenizer SentencePieceTokenizer::load(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    const std::string expected = "a .model file written by `tessera tokenize train`";
    throw InputError("SentencePiece model " + path +
                     (std::filesystem::exists(path, ec)
                          ? ": expected " + expected + ", found " + non_regular_kind(path)
                          : ": no such file; expected " + expected));
  }
  if (std::filesystem::file_size(path, ec) == 0 && !ec)  // SentencePiece: "unk is not defined"
    throw InputError("SentencePiece model " + path + ": expected " +
                     "a SentencePiece model file, found an empty file");
  auto model = std::make_shared<spm::SentencePieceProcessor>();
  const spm::util::Status status = model->Load(path);
  if (!status.ok()) {
    const std::string why = reason(status);
    throw InputError("SentencePiece model " + path +
                     ": expected a SentencePiece model file, found " +
                     (why.empty() ? "bytes that do not parse as one" : "one it rejects: " + why));
  }
  if (model->eos_id() < 0 || model->eos_id() >= model->GetPieceSize())
    throw InputError("SentencePiece model " + path +
                     ": expected an eos piece to end documents with, found none (train the "
                     "model with `tessera tokenize train`, which sets eos_id 2)");
  SentencePieceTokenizer tokenizer;
  tokenizer.path_ = path;
  tokenizer.model_ = std::move(model);
  return tokenizer;
}

int64_t SentencePieceTokenizer::vocab_size() const {
  return model_->GetPieceSize();
}

int32_t SentencePieceTokenizer::end_of_document() const {
  return model_->eos_id();
}

int32_t SentencePieceTokenizer::unknown() const {
  return model_->unk_id();
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  const spm::util::Status status = model_->Encode(text, &ids);
  if (!status.ok()) throw InputError(description() + ": encoding failed (" + reason(status) + ")");
  return {ids.begin(), ids.end()};
}

std::string SentencePieceTokenizer::decode(std::span<const int32_t> ids,
                                           std::string_view end_of_document_text) const {
  const int64_t vocab = vocab_size();
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab)
      throw InputError(description() + ": token " + std::to_string(i) + " has id " +
                       std::to_string(ids[i]) + ", expected an id in [0, " + std::to_string(vocab) +
                       ") (was the corpus made with another tokenizer?)");
  }
  // Documents decode one at a time: SentencePiece drops the leading space of each piece
  // sequence it decodes, which is right only at a document's start.
  std::string text, piece;
  size_t start = 0;
  const int32_t eos = end_of_document();
  for (size_t i = 0; i <= ids.size(); ++i) {
    if (i < ids.size() && ids[i] != eos) continue;
    const std::vector<int> doc(ids.begin() + static_cast<std::ptrdiff_t>(start),
                               ids.begin() + static_cast<std::ptrdiff_t>(i));
    const spm::util::Status status = model_->Decode(doc, &piece);
    if (!status.ok())
      throw InputError(description() + ": decoding failed (" + reason(status) + ")");
    text += piece;
    if (i < ids.size()) text += end_of_document_text;
    start = i + 1;
  }
  return text;
}

std::unique_ptr<Tokenizer> open_tokenizer(const std::string& model_path) {
  if (model_path.empty()) return std::make_unique<ByteLevelTokenizer>();
  return std::make_unique<SentencePieceTokenizer>(SentencePieceTokenizer::load(model_path));
}

SentencePieceTrainStats train_sentencepiece(const SentencePieceTrainOptions& options) {
  check_train_options(options);
  const auto start = std::chrono::steady_clock::now();
  DocumentReader reader(options.inputs, options.jsonl_key, kMaxDocumentBytes, options.format);
  const std::filesystem::path parent = std::filesystem::path(options.output_prefix).parent_path();
  std::error_code ec;
  if (!parent.empty() && !std::filesystem::create_directories(parent, ec) && ec)
    throw InputError("--output " + options.output_prefix + ": cannot create directory " +
                     parent.string() + " (" + ec.message() + ")");

  SentencePieceTrainStats stats;
  DocumentLines lines(reader, stats, options.progress);
  spm::SetRandomGeneratorSeed(1);  // the same sample of lines run to run (--max_sentences)
  const spm::util::Status status =
      spm::SentencePieceTrainer::Train(trainer_arguments(options), &lines);
  if (lines.error()) std::rethrow_exception(lines.error());
  if (stats.sentences == 0)
    throw InputError("--input: expected some text, found only empty or blank files");
  if (!status.ok()) {
    const std::string why = reason(status).empty() ? status.ToString() : reason(status);
    const std::string vocab = "--vocab_size " + std::to_string(options.vocab_size);
    if (why.find("ocabulary size is smaller") != std::string::npos)
      throw InputError(vocab + ": too small for the characters of this text" +
                       (options.byte_fallback ? " plus 256 byte pieces" : "") + " (" + why + ")");
    if (why.find("ocabulary size too high") != std::string::npos)
      throw InputError(vocab + ": too large for this training text (" + why + ")");
    throw InputError("tokenize train --output " + options.output_prefix +
                     ": SentencePiece training failed: " + why);
  }
  stats.vocab_size = SentencePieceTokenizer::load(options.output_prefix + ".model").vocab_size();
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

std::string tokenizer_mismatch(const TokenCorpus& corpus, const Tokenizer& tokenizer) {
  const int64_t vocab = tokenizer.vocab_size();
  if (const int64_t at = corpus.first_bad_token_among(vocab, int64_t{1} << 16); at >= 0) {
    int32_t id;
    corpus.read_tokens(at, 1, &id);
    return corpus.path() + " holds id " + std::to_string(id) + " at " + corpus.token_place(at) +
           ", beyond the " + std::to_string(vocab) + " ids of " + tokenizer.description();
  }
  const int32_t end = tokenizer.end_of_document();
  const std::optional<int32_t> found = corpus.document_end_id();
  if (!found || *found == end) return "";
  return "the documents of " + corpus.path() + " end with id " + std::to_string(*found) +
         ", not with " + std::to_string(end) + ", the end of document of " +
         tokenizer.description();
}

}  // namespace tessera
