// `tessera tokenize encode|decode` (see launcher/tokenize_command.h). encode appends the
// end-of-document id after every document, as GPT-2 style pretraining corpora do: training
// samples cross document boundaries, and the marker tells the model where one text ends.
#include "launcher/tokenize_command.h"

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/byte_tokenizer.h"
#include "io/indexed_dataset.h"
#include "io/text_files.h"

namespace tessera {

namespace po = boost::program_options;

namespace {

constexpr const char* kUsage =
    "usage: tessera tokenize VERB [options]\n"
    "  encode --input PATH... --output PREFIX   text files/directories -> PREFIX.bin/.idx\n"
    "  decode --input PREFIX [--output FILE]    corpus -> text\n"
    "`tessera tokenize VERB --help` lists a verb's options.\n";

// Parses the options after the verb; returns false when --help was given (and printed).
bool parse(const po::options_description& desc, int argc, char** argv, po::variables_map& vm) {
  std::vector<std::string> args(argv + 2, argv + argc);
  po::store(po::command_line_parser(args).options(desc).run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: tessera tokenize " << argv[1] << " [options]\n" << desc;
    return false;
  }
  po::notify(vm);
  return true;
}

int encode(int argc, char** argv) {
  po::options_description desc("tokenize encode options");
  desc.add_options()("help,h", "print this help")(
      "input", po::value<std::vector<std::string>>()->multitoken()->required(),
      "text files or directories (fortune files split at lines holding only %)")(
      "output", po::value<std::string>()->required(), "corpus prefix: writes PREFIX.bin/.idx")(
      "tokenizer.model", po::value<std::string>(),
      "SentencePiece model (not supported yet; omit it for the byte-level tokenizer)");
  po::variables_map vm;
  if (!parse(desc, argc, argv, vm)) return 0;
  if (vm.count("tokenizer.model"))
    throw InputError(
        "--tokenizer.model: SentencePiece models are not supported yet; omit it for the "
        "byte-level tokenizer");
  const auto inputs = vm["input"].as<std::vector<std::string>>();
  const auto prefix = vm["output"].as<std::string>();

  const auto start = std::chrono::steady_clock::now();
  const std::vector<std::string> documents = read_documents(inputs);
  if (documents.empty())
    throw InputError("--input: expected some text, found only empty or blank files");
  const std::filesystem::path parent = std::filesystem::path(prefix).parent_path();
  std::error_code ec;
  if (!parent.empty() && !std::filesystem::create_directories(parent, ec) && ec)
    throw InputError("--output " + prefix + ": cannot create directory " + parent.string() + " (" +
                     ec.message() + ")");

  IndexedDatasetWriter writer(prefix, token_dtype_for_vocab(kByteVocab));
  int64_t text_bytes = 0;
  for (const std::string& doc : documents) {
    std::vector<int32_t> ids = ByteTokenizer::encode(doc);
    ids.push_back(kEndOfDocument);
    writer.add_document(ids);
    text_bytes += static_cast<int64_t>(doc.size());
  }
  writer.finish();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const IndexedDataset corpus = IndexedDataset::open(prefix);
  std::printf(
      "tokenize encode: %lld documents, %lld tokens, %.2f MB of text -> %s.bin/.idx "
      "in %.2f s (%.1f MB/s)\n",
      static_cast<long long>(corpus.num_documents()), static_cast<long long>(corpus.num_tokens()),
      text_bytes / 1e6, prefix.c_str(), seconds, text_bytes / 1e6 / std::max(seconds, 1e-9));
  std::printf("unigram entropy: %.4f nats/token (a model that ignores context cannot beat it)\n",
              unigram_entropy(corpus, kByteVocab));
  std::fflush(stdout);
  return 0;
}

int decode(int argc, char** argv) {
  po::options_description desc("tokenize decode options");
  desc.add_options()("help,h", "print this help")("input", po::value<std::string>()->required(),
                                                  "corpus prefix (PREFIX.bin/.idx)")(
      "output", po::value<std::string>(), "text file to write (default: standard output)")(
      "max_tokens", po::value<int64_t>()->default_value(-1, "all"),
      "decode at most this many tokens from the start");
  po::variables_map vm;
  if (!parse(desc, argc, argv, vm)) return 0;
  const IndexedDataset corpus = IndexedDataset::open(vm["input"].as<std::string>());
  const int64_t max_tokens = vm["max_tokens"].as<int64_t>();
  const int64_t total =
      max_tokens < 0 ? corpus.num_tokens() : std::min(max_tokens, corpus.num_tokens());

  std::ofstream file;
  if (vm.count("output")) {
    const std::string path = vm["output"].as<std::string>();
    file.open(path, std::ios::binary);
    if (!file) throw InputError("--output " + path + ": cannot open for writing");
  }
  std::ostream& out = file.is_open() ? file : std::cout;
  std::vector<int32_t> chunk(1 << 20);
  for (int64_t start = 0; start < total; start += static_cast<int64_t>(chunk.size())) {
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(chunk.size()), total - start);
    corpus.read_tokens(start, n, chunk.data());
    for (int64_t i = 0; i < n; ++i) {
      if (chunk[i] < 0 || chunk[i] >= kByteVocab)
        throw InputError("corpus " + corpus.bin_path() + ": token " + std::to_string(start + i) +
                         " has id " + std::to_string(chunk[i]) + ", expected a byte-level id " +
                         "below " + std::to_string(kByteVocab) +
                         " (was it made with a SentencePiece model?)");
    }
    const std::string text = ByteTokenizer::decode({chunk.data(), static_cast<size_t>(n)});
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
  }
  out.flush();
  if (!out) throw InputError("tokenize decode: writing the text failed");
  return 0;
}

}  // namespace

int tokenize_command(int argc, char** argv) {
  if (argc < 2)
    throw InputError(std::string("tokenize: expected a verb (encode, decode)\n") + kUsage);
  const std::string verb = argv[1];
  if (verb == "encode") return encode(argc, argv);
  if (verb == "decode") return decode(argc, argv);
  if (verb == "--help" || verb == "-h" || verb == "help") {
    std::cout << kUsage;
    return 0;
  }
  if (verb == "train")
    throw InputError(
        "tokenize train: SentencePiece training is not supported yet; "
        "`tokenize encode` without --tokenizer.model is byte-level");
  throw InputError("tokenize: expected a verb (encode, decode), found \"" + verb + "\"");
}

}  // namespace tessera
