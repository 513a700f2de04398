// `tessera tokenize train|encode|decode` (see launcher/tokenize_command.h). encode appends the
// end-of-document id after every document, as GPT-2 style pretraining corpora do: training
// samples cross document boundaries, and the marker tells the model where one text ends.
// encode is a three-stage pipeline: while worker threads encode chunk k, the calling thread
// writes chunk k-1 and reads chunk k+1; chunks are written whole and in order.
#include "launcher/tokenize_command.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/program_options.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "io/durable_file.h"
#include "io/indexed_dataset.h"
#include "io/llmc_shard.h"
#include "io/token_corpus.h"
#include "launcher/option_text.h"
#include "launcher/progress.h"

namespace tessera {

namespace po = boost::program_options;

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kUsage =
    "usage: tessera tokenize VERB [options]\n"
    "  train  --input PATH... --output MODEL_PREFIX --vocab_size N   SentencePiece model\n"
    "  encode --input PATH... --output PREFIX [--tokenizer.model M]  text -> PREFIX.bin/.idx\n"
    "  decode --input PREFIX [--tokenizer.model M] [--output FILE]   corpus -> text\n"
    "`tessera tokenize VERB --help` lists a verb's options.\n";

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Parses the options after the verb; returns false when --help was given (and printed). An
// option boost refuses points to the verb's help, which lists the options.
bool parse(const po::options_description& desc, int argc, char** argv, po::variables_map& vm) {
  const auto no_words = [&](const std::vector<std::string>& words) {
    if (!words.empty())  // a word without an option before it
      throw InputError("tokenize " + std::string(argv[1]) + ": unexpected argument \"" +
                       words.front() +
                       "\" (give several inputs as --input A B, options as --name VALUE)");
  };
  if (parse_command_words(std::vector<std::string>(argv + 2, argv + argc), desc, vm,
                          " (see tessera tokenize " + std::string(argv[1]) + " --help)", no_words))
    return true;
  std::cout << "usage: tessera tokenize " << argv[1] << " [options]\n" << desc;
  return false;
}

constexpr const char* kFormatHelp =
    "auto: JSON lines by the name (.jsonl, .ndjson, .json, also .gz, .zst or .zstd), else text; "
    "text or "
    "jsonl: every input so";

TextFormat text_format(const std::string& name) {
  if (name == "auto") return TextFormat::Auto;
  if (name == "text") return TextFormat::Text;
  if (name == "jsonl") return TextFormat::JsonLines;
  throw InputError("--format: expected auto, text or jsonl, found \"" + name + "\"");
}

// More would be a typo: each thread takes a share of a 4 MB chunk of documents.
constexpr int kMaxEncodeThreads = 1024;

int thread_count(int threads) {
  if (threads < 0 || threads > kMaxEncodeThreads)
    throw InputError("--threads: expected 0 (all cores) or a count up to " +
                     std::to_string(kMaxEncodeThreads) + ", found " + std::to_string(threads));
  if (threads > 0) return threads;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

std::unique_ptr<Tokenizer> tokenizer_option(const po::variables_map& vm) {
  if (!vm.count("tokenizer.model")) return open_tokenizer("");
  try {
    return open_tokenizer(vm["tokenizer.model"].as<std::string>());
  } catch (const InputError& e) {
    throw InputError(std::string("--tokenizer.model: ") + e.what());
  }
}

// --output PREFIX must end in a file name: "dir/" would write the hidden dir/.bin (.model).
void require_file_name(const std::string& prefix, const char* writes) {
  if (std::filesystem::path(prefix).filename().empty())
    throw InputError("--output \"" + prefix + "\": expected a prefix naming " + writes +
                     ", found no file name");
}

void create_parent_directory(const std::string& option, const std::string& prefix) {
  const std::filesystem::path parent = std::filesystem::path(prefix).parent_path();
  std::error_code ec;
  if (!parent.empty() && !std::filesystem::create_directories(parent, ec) && ec)
    throw InputError(option + " " + prefix + ": cannot create directory " + parent.string() + " (" +
                     ec.message() + ")");
}

// Encodes one chunk of documents on worker threads; each worker claims the next unclaimed
// document, and results are stored by index, so they do not depend on the scheduling.
class ChunkEncoder {
 public:
  ChunkEncoder(const Tokenizer& tokenizer, int threads)
      : tokenizer_(tokenizer), threads_(threads) {}
  ~ChunkEncoder() { join(); }

  void start(std::vector<std::string>&& documents) {
    documents_ = std::move(documents);
    tokens_.assign(documents_.size(), {});
    next_ = 0;
    not_utf8_ = 0;
    error_ = nullptr;
    const int n = std::min<int>(threads_, static_cast<int>(documents_.size()));
    for (int t = 0; t < n; ++t) workers_.emplace_back([this] { work(); });
  }

  // Waits for the chunk; rethrows the first worker's error. Returns the documents' ids, each
  // ending with the end-of-document id.
  std::vector<std::vector<int32_t>> finish() {
    join();
    if (error_) std::rethrow_exception(error_);
    documents_.clear();
    return std::move(tokens_);
  }
  // Of the chunk finish() returned: documents that are not UTF-8 (counted only for a tokenizer
  // that does not keep any bytes).
  int64_t not_utf8_documents() const { return not_utf8_; }

 private:
  void work() {
    const int32_t end_of_document = tokenizer_.end_of_document();
    const bool check_utf8 = !tokenizer_.keeps_any_bytes();
    try {
      for (size_t i = next_++; i < documents_.size(); i = next_++) {
        if (check_utf8 && !is_valid_utf8(documents_[i])) ++not_utf8_;
        tokens_[i] = tokenizer_.encode(documents_[i]);
        tokens_[i].push_back(end_of_document);
      }
    } catch (...) {
      const std::lock_guard<std::mutex> lock(error_mutex_);
      if (!error_) error_ = std::current_exception();
      next_ = documents_.size();  // the others stop at their next claim
    }
  }

  void join() {
    for (std::thread& w : workers_) w.join();
    workers_.clear();
  }

  const Tokenizer& tokenizer_;
  int threads_;
  std::vector<std::string> documents_;
  std::vector<std::vector<int32_t>> tokens_;
  std::atomic<size_t> next_{0};
  std::atomic<int64_t> not_utf8_{0};
  std::vector<std::thread> workers_;
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

int64_t text_bytes_of(const std::vector<std::string>& documents) {
  int64_t bytes = 0;
  for (const std::string& d : documents) bytes += static_cast<int64_t>(d.size());
  return bytes;
}

}  // namespace

EncodeStats encode_corpus(DocumentReader& reader, const Tokenizer& tokenizer,
                          const std::string& prefix, int threads, bool progress,
                          size_t chunk_bytes) {
  const Clock::time_point start = Clock::now();
  const int workers = thread_count(threads);
  IndexedDatasetWriter writer(prefix, token_dtype_for_vocab(tokenizer.vocab_size()));
  ProgressLine line(progress, "tokenize encode", reader.total_bytes());
  ChunkEncoder encoders[2] = {{tokenizer, workers}, {tokenizer, workers}};
  EncodeStats stats;
  std::vector<std::string> chunk;
  bool more = reader.next_chunk(chunk, chunk_bytes);
  int64_t chunk_end = reader.bytes_read();  // input bytes consumed up to the end of `chunk`
  if (more) {
    stats.text_bytes += text_bytes_of(chunk);
    encoders[0].start(std::move(chunk));
  }
  for (int k = 0; more; ++k) {  // encoders[k % 2] is encoding chunk k
    const int64_t done_bytes = chunk_end;
    more = reader.next_chunk(chunk, chunk_bytes);
    chunk_end = reader.bytes_read();
    const std::vector<std::vector<int32_t>> tokens = encoders[k % 2].finish();
    stats.not_utf8_documents += encoders[k % 2].not_utf8_documents();
    if (more) {
      stats.text_bytes += text_bytes_of(chunk);
      encoders[(k + 1) % 2].start(std::move(chunk));
    }
    for (const std::vector<int32_t>& ids : tokens) {
      writer.add_document(ids);
      stats.tokens += static_cast<int64_t>(ids.size());
      stats.unknown_tokens += std::count(ids.begin(), ids.end(), tokenizer.unknown());
    }
    stats.documents += static_cast<int64_t>(tokens.size());
    if (line.due())
      line.print(done_bytes,
                 count_of(stats.documents, "document") + ", " + count_of(stats.tokens, "token"));
  }
  line.finish(reader.bytes_read(),
              count_of(stats.documents, "document") + ", " + count_of(stats.tokens, "token"));
  if (stats.documents == 0)
    throw InputError("--input: expected some text, found only empty or blank files");
  writer.finish();
  stats.seconds = seconds_since(start);
  return stats;
}

namespace {

int train(int argc, char** argv) {
  po::options_description desc("tokenize train options");
  SentencePieceTrainOptions o;
  desc.add_options()("help,h", "print this help")(
      "input", po::value(&o.inputs)->multitoken()->required(),
      "text files or directories, as for encode (fortune files, JSON lines)")(
      "output", po::value(&o.output_prefix)->required(),
      "model prefix: writes PREFIX.model and PREFIX.vocab")(
      "vocab_size", po::value(&o.vocab_size)->required(), "pieces in the model")(
      "model_type", po::value(&o.model_type)->default_value("bpe"), "bpe or unigram")(
      "character_coverage", po::value(&o.character_coverage)->default_value(0.9995, "0.9995"),
      "fraction of characters the pieces must cover; the rest are bytes (or <unk>)")(
      "max_sentences", po::value(&o.max_sentences)->default_value(0, "0 (all)"),
      "lines sampled from the documents for training")(
      "threads", po::value(&o.threads)->default_value(0, "0 (all cores, at most 128)"),
      "trainer threads")("jsonl_key", po::value(&o.jsonl_key)->default_value("text"),
                         "field holding the document in JSON lines")(
      "format", po::value<std::string>()->default_value("auto"), kFormatHelp)(
      "byte_fallback", po::value(&o.byte_fallback)->default_value(true, "true"),
      "characters outside the pieces as UTF-8 byte pieces (needs vocab_size above 260 + the "
      "text's distinct characters: about 350 for English)")("verbose", po::bool_switch(&o.verbose),
                                                            "show SentencePiece's own log");
  po::variables_map vm;
  if (!parse(desc, argc, argv, vm)) return 0;
  require_file_name(o.output_prefix, "the model PREFIX.model and PREFIX.vocab");
  o.format = text_format(vm["format"].as<std::string>());
  std::optional<ProgressLine> line;  // made when the total is known
  o.progress = [&](const SentencePieceReadProgress& p) {
    if (!line) line.emplace(true, "tokenize train: reading", p.total_bytes);
    if (!p.done && !line->due()) return;
    const std::string counts =
        count_of(p.documents, "document") + " (" + count_of(p.sentences, "line") + ")";
    if (!p.done) {
      line->print(p.bytes_read, counts);
      return;
    }
    line->end();
    std::fprintf(stderr,
                 "tokenize train: read %s, %.1f MB of input; SentencePiece trains now "
                 "(--verbose shows its progress)\n",
                 counts.c_str(), p.bytes_read / 1e6);
    std::fflush(stderr);
  };
  const SentencePieceTrainStats stats = train_sentencepiece(o);
  std::printf(
      "tokenize train: %s (%s), %.2f MB of text -> %s.model/.vocab: vocab %lld, %s, in %.2f s\n",
      count_of(stats.documents, "document").c_str(), count_of(stats.sentences, "line").c_str(),
      stats.text_bytes / 1e6, o.output_prefix.c_str(), static_cast<long long>(stats.vocab_size),
      o.model_type.c_str(), stats.seconds);
  std::fflush(stdout);
  return 0;
}

// The files encode and decode write before they rename them into place. While they exist,
// SIGINT, SIGTERM or SIGHUP (Ctrl-C, scancel, a closed terminal) removes them and then ends the
// process as the signal would have; a corpus-sized PREFIX.bin.tmp would otherwise stay behind, and
// an OUTPUT.tmp make the next decode refuse to start. Fixed arrays, not strings: the handler may
// run while the program exits.
char g_part_files[2][4096];

extern "C" void remove_part_files(int signo) {
  for (const char* path : g_part_files) ::unlink(path);  // async-signal-safe
  std::signal(signo, SIG_DFL);
  std::raise(signo);  // delivered as the handler returns
}

// Installs remove_part_files for the signals not ignored at start (a background job's SIGINT,
// nohup's SIGHUP stay ignored), and puts the earlier handlers back when it goes.
class PartFilesRemovedOnSignals {
 public:
  // Up to two paths.
  explicit PartFilesRemovedOnSignals(const std::vector<std::string>& paths) {
    for (size_t k = 0; k < std::size(g_part_files); ++k) {
      const std::string path = k < paths.size() ? paths[k] : "";
      if (path.size() >= sizeof g_part_files[k]) return;  // too long to keep: left to chance
      std::memcpy(g_part_files[k], path.c_str(), path.size() + 1);
    }
    struct sigaction sa {};
    sa.sa_handler = remove_part_files;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < std::size(kSignals); ++i)
      installed_[i] = sigaction(kSignals[i], nullptr, &old_[i]) == 0 &&
                      old_[i].sa_handler != SIG_IGN && sigaction(kSignals[i], &sa, nullptr) == 0;
  }
  ~PartFilesRemovedOnSignals() {
    for (size_t i = 0; i < std::size(kSignals); ++i)
      if (installed_[i]) sigaction(kSignals[i], &old_[i], nullptr);
  }
  PartFilesRemovedOnSignals(const PartFilesRemovedOnSignals&) = delete;
  PartFilesRemovedOnSignals& operator=(const PartFilesRemovedOnSignals&) = delete;

 private:
  static constexpr int kSignals[3] = {SIGINT, SIGTERM, SIGHUP};
  struct sigaction old_[3] = {};
  bool installed_[3] = {};
};

int encode(int argc, char** argv) {
  po::options_description desc("tokenize encode options");
  desc.add_options()("help,h", "print this help")(
      "input", po::value<std::vector<std::string>>()->multitoken()->required(),
      "text files or directories (fortune files split at lines holding only %; .jsonl/.json "
      "files hold one JSON object per line)")("output", po::value<std::string>()->required(),
                                              "corpus prefix: writes PREFIX.bin/.idx")(
      "tokenizer.model", po::value<std::string>(),
      "SentencePiece model (from `tokenize train`); omit it for the byte-level tokenizer")(
      "threads", po::value<int>()->default_value(0, "0 (all cores)"),
      "encoding threads (at most 1024)")("jsonl_key",
                                         po::value<std::string>()->default_value("text"),
                                         "field holding the document in JSON lines")(
      "format", po::value<std::string>()->default_value("auto"), kFormatHelp);
  po::variables_map vm;
  if (!parse(desc, argc, argv, vm)) return 0;
  const std::unique_ptr<Tokenizer> tokenizer = tokenizer_option(vm);
  const auto prefix = vm["output"].as<std::string>();
  require_file_name(prefix, "the corpus PREFIX.bin and PREFIX.idx");
  const int threads = thread_count(vm["threads"].as<int>());
  DocumentReader reader(vm["input"].as<std::vector<std::string>>(),
                        vm["jsonl_key"].as<std::string>(), tokenizer->max_document_bytes(),
                        text_format(vm["format"].as<std::string>()));
  create_parent_directory("--output", prefix);
  const PartFilesRemovedOnSignals removed_on_signals({prefix + ".bin.tmp", prefix + ".idx.tmp"});
  const EncodeStats stats = encode_corpus(reader, *tokenizer, prefix, threads, true);

  const TokenCorpus corpus = TokenCorpus::open(prefix);
  bool sampled = false;
  const double entropy =
      unigram_entropy({corpus}, {1.0}, tokenizer->vocab_size(), kEntropyTokens, &sampled);
  std::printf(
      "tokenize encode: %s, %lld tokens, %.2f MB of text -> %s.bin/.idx in %.2f s "
      "(%.1f MB/s, %s)\n",
      count_of(corpus.num_documents(), "document").c_str(),
      static_cast<long long>(corpus.num_tokens()), stats.text_bytes / 1e6, prefix.c_str(),
      stats.seconds, stats.text_bytes / 1e6 / std::max(stats.seconds, 1e-9),
      count_of(threads, "thread").c_str());
  if (stats.not_utf8_documents > 0)
    std::printf(
        "note: %s %s bytes that are not UTF-8; %s encodes each such byte as U+FFFD, so they do "
        "not decode to their text (the byte-level tokenizer keeps every byte)\n",
        count_of(stats.not_utf8_documents, "document").c_str(),
        stats.not_utf8_documents == 1 ? "holds" : "hold", tokenizer->description().c_str());
  if (stats.unknown_tokens > 0)
    std::printf(
        "note: %s %s the unknown piece (id %d) of %s: text it has no piece for, which decodes "
        "as \xe2\x81\x87 (a model trained with --byte_fallback true keeps such text as bytes)\n",
        count_of(stats.unknown_tokens, "token").c_str(), stats.unknown_tokens == 1 ? "is" : "are",
        tokenizer->unknown(), tokenizer->description().c_str());
  std::printf("unigram entropy: %.4f nats/token%s (a model that ignores context cannot beat it)\n",
              entropy, sampled ? (", from " + entropy_sample() + " of the corpus").c_str() : "");
  std::fflush(stdout);
  return 0;
}

// Ids outside the tokenizer's vocabulary, named by their position in the corpus.
void check_ids(const TokenCorpus& corpus, const Tokenizer& tokenizer, bool byte_level,
               int64_t start, std::span<const int32_t> ids) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] >= 0 && ids[i] < tokenizer.vocab_size()) continue;
    const std::string expected =
        byte_level ? "a byte-level id below " + std::to_string(kByteVocab) +
                         " (was it made with a SentencePiece model?)"
                   : "an id below " + std::to_string(tokenizer.vocab_size()) + " of " +
                         tokenizer.description() + " (was it made with another tokenizer?)";
    throw InputError("corpus " + corpus.token_file() + ": " +
                     corpus.token_place(start + static_cast<int64_t>(i)) + " has id " +
                     std::to_string(ids[i]) + ", expected " + expected);
  }
}

// Stops, naming `destination`, once the stream has failed (a full disk).
void check_written(const std::ostream& out, const std::string& destination) {
  if (!out)
    throw InputError(destination + ": writing the text failed" +
                     (errno ? " (" + std::string(std::strerror(errno)) + ")" : ""));
}

void write_text(std::ostream& out, const std::string& destination, const std::string& text) {
  errno = 0;  // what a failed write sets, not an older value
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  check_written(out, destination);
}

int decode(int argc, char** argv) {
  po::options_description desc("tokenize decode options");
  desc.add_options()("help,h", "print this help")("input", po::value<std::string>()->required(),
                                                  "corpus prefix (PREFIX.bin/.idx)")(
      "output", po::value<std::string>(), "text file to write (default: standard output)")(
      "tokenizer.model", po::value<std::string>(),
      "SentencePiece model the corpus was encoded with; omit it for byte-level corpora")(
      "max_tokens", po::value<int64_t>(),
      "decode at most this many tokens from the start (default: all)");
  po::variables_map vm;
  if (!parse(desc, argc, argv, vm)) return 0;
  const std::string input = vm["input"].as<std::string>();
  if (is_llmc_shard(input))
    throw InputError("--input " + input +
                     ": expected a Megatron corpus prefix (PREFIX.bin/.idx), found an llm.c "
                     "shard, which decode does not read");
  const TokenCorpus corpus = TokenCorpus::open(input);
  const std::unique_ptr<Tokenizer> tokenizer = tokenizer_option(vm);
  const bool byte_level = !vm.count("tokenizer.model");
  // Said once the text is out: a decode that fails says only why.
  const auto decoded = [mismatch = tokenizer_mismatch(corpus, *tokenizer)] {
    if (!mismatch.empty())
      std::fprintf(stderr, "tokenize decode: note: %s: was it encoded with another tokenizer?\n",
                   mismatch.c_str());
    return 0;
  };
  int64_t total = corpus.num_tokens();
  if (vm.count("max_tokens")) {
    const int64_t max_tokens = vm["max_tokens"].as<int64_t>();
    if (max_tokens < 0)
      throw InputError("--max_tokens: expected 0 or more tokens (leave it out for all), found " +
                       std::to_string(max_tokens));
    total = std::min(max_tokens, total);
  }

  const std::string destination =
      vm.count("output") ? "--output " + vm["output"].as<std::string>() : "standard output";
  // SentencePiece text is decoded a whole document at a time (a piece sequence cut in the
  // middle loses a leading space), so ids after the last end of document wait in `pending`.
  const auto decode_all = [&](const std::function<void(const std::string&)>& emit) {
    std::vector<int32_t> chunk(1 << 20), pending;
    for (int64_t start = 0; start < total; start += static_cast<int64_t>(chunk.size())) {
      const int64_t n = std::min<int64_t>(static_cast<int64_t>(chunk.size()), total - start);
      corpus.read_tokens(start, n, chunk.data());
      check_ids(corpus, *tokenizer, byte_level, start, {chunk.data(), static_cast<size_t>(n)});
      pending.insert(pending.end(), chunk.begin(), chunk.begin() + n);
      const auto last_end =
          std::find(pending.rbegin(), pending.rend(), tokenizer->end_of_document());
      const size_t whole = byte_level ? pending.size() : pending.rend() - last_end;
      emit(tokenizer->decode({pending.data(), whole}));
      pending.erase(pending.begin(), pending.begin() + static_cast<std::ptrdiff_t>(whole));
    }
    emit(tokenizer->decode(pending));
  };
  std::ofstream file;  // a device or FIFO given as --output
  if (vm.count("output")) {
    // Never one of the files being read (the corpus is mapped: a bus error, or a corpus
    // overwritten with its own text).
    const std::string output = vm["output"].as<std::string>();
    std::vector<std::string> read = {input + ".bin", input + ".idx"};
    if (vm.count("tokenizer.model")) read.push_back(vm["tokenizer.model"].as<std::string>());
    for (const std::string& path : read) {
      std::error_code ec;
      if (std::filesystem::equivalent(output, path, ec))
        throw InputError(destination + ": is " + path +
                         ", which decode reads; give another file to write");
    }
    // A file is written whole or not at all: a bad id found late, or a full disk, leaves the
    // one there before. A device or a FIFO is written as it goes.
    std::error_code ec;
    const std::filesystem::file_status status = std::filesystem::status(output, ec);
    if (!std::filesystem::exists(status) || std::filesystem::is_regular_file(status)) {
      const std::string tmp = output + ".tmp";
      // Not over an OUTPUT.tmp that is there already, which write_file_through refuses.
      std::optional<PartFilesRemovedOnSignals> removed_on_signals;
      if (!std::filesystem::exists(tmp, ec))
        removed_on_signals.emplace(std::vector<std::string>{tmp});
      write_file_through(tmp, output, destination, [&](const PutBytes& put) {
        decode_all([&](const std::string& text) { put(text.data(), text.size()); });
      });
      return decoded();
    }
    file.open(output, std::ios::binary);
    if (!file)
      throw InputError(destination + ": cannot open for writing (" + std::strerror(errno) + ")");
  }
  std::ostream& out = file.is_open() ? file : std::cout;
  decode_all([&](const std::string& text) { write_text(out, destination, text); });
  errno = 0;
  out.flush();
  check_written(out, destination);
  return decoded();
}

}  // namespace

int tokenize_command(int argc, char** argv) {
  if (argc < 2)
    throw InputError(std::string("tokenize: expected a verb (train, encode, decode)\n") + kUsage);
  const std::string verb = argv[1];
  if (verb == "train") return train(argc, argv);
  if (verb == "encode") return encode(argc, argv);
  if (verb == "decode") return decode(argc, argv);
  if (verb == "--help" || verb == "-h" || verb == "help") {
    std::cout << kUsage;
    return 0;
  }
  throw InputError("tokenize: expected a verb (train, encode, decode), found \"" + verb + "\"");
}

}  // namespace tessera
