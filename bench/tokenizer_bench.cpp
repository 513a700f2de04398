// Encode throughput of `tessera tokenize encode` (encode_corpus: read, encode on N threads,
// write .bin/.idx) for the byte-level tokenizer and a SentencePiece BPE model, 1 and 2 threads.
//
//   build/bin/bench_tokenizer [MB]     (default 16 MB of text; --help lists the options)
//
// Text: the fortune package (/usr/share/games/fortunes) when installed, else
// /usr/share/common-licenses. The BPE model (vocab 4000) is trained on that text first; the
// encode input repeats it to the requested size. Prints one Markdown table row per case; the
// first row reads the documents without encoding (the ceiling set by reading alone).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bench/command_line.h"
#include "io/sentencepiece_tokenizer.h"
#include "io/text_files.h"
#include "launcher/tokenize_command.h"

namespace fs = std::filesystem;
using namespace tessera;

namespace {

using Clock = std::chrono::steady_clock;

std::string source_text_dir() {
  for (const char* dir : {"/usr/share/games/fortunes", "/usr/share/common-licenses"})
    if (fs::is_directory(dir)) return dir;
  return "";
}

// Writes the documents of `source` as one fortune file, repeated until it holds `bytes`.
int64_t write_repeated(const std::string& source, const fs::path& file, int64_t bytes) {
  std::string text;
  for (std::string& doc : read_documents({source})) {
    if (!doc.ends_with('\n')) doc += '\n';
    text += doc;
    text += "%\n";
  }
  std::ofstream out(file, std::ios::binary);
  int64_t written = 0;
  while (written < bytes) {
    out << text;
    written += static_cast<int64_t>(text.size());
  }
  return written;
}

void print_row(const std::string& name, int threads, const EncodeStats& s) {
  const double mb = s.text_bytes / 1e6;
  std::printf("| %s | %d | %.1f | %lld | %lld | %.2f | %.2f | %.1f |\n", name.c_str(), threads, mb,
              static_cast<long long>(s.documents), static_cast<long long>(s.tokens),
              s.tokens > 0 ? static_cast<double>(s.text_bytes) / s.tokens : 0.0, s.seconds,
              mb / s.seconds);
  std::fflush(stdout);
}

EncodeStats read_only(const fs::path& input) {
  const Clock::time_point start = Clock::now();
  DocumentReader reader({input.string()});
  EncodeStats s;
  std::vector<std::string> chunk;
  while (reader.next_chunk(chunk, size_t{4} << 20)) {
    s.documents += static_cast<int64_t>(chunk.size());
    for (const std::string& d : chunk) s.text_bytes += static_cast<int64_t>(d.size());
  }
  s.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return s;
}

int run(int64_t megabytes) {
  const std::string source = source_text_dir();
  if (source.empty()) {
    std::fprintf(stderr, "no text found (apt-get install fortunes)\n");
    return 1;
  }
  const fs::path dir =
      fs::temp_directory_path() / ("tessera_bench_tokenizer_" + std::to_string(::getpid()));
  fs::create_directories(dir);

  SentencePieceTrainOptions o;
  o.inputs = {source};
  o.output_prefix = (dir / "bpe").string();
  o.vocab_size = 4000;
  const SentencePieceTrainStats trained = train_sentencepiece(o);
  std::printf("BPE model: vocab %lld trained on %.2f MB of %s (%lld documents) in %.1f s\n\n",
              static_cast<long long>(trained.vocab_size), trained.text_bytes / 1e6, source.c_str(),
              static_cast<long long>(trained.documents), trained.seconds);

  const fs::path input = dir / "input.txt";
  write_repeated(source, input, megabytes * 1000000);
  std::printf(
      "| tokenizer | threads | MB of text | documents | tokens | bytes/token | s | MB/s |\n"
      "| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  print_row("read only (no encoding)", 1, read_only(input));
  const ByteLevelTokenizer bytes;
  const SentencePieceTokenizer bpe = SentencePieceTokenizer::load(o.output_prefix + ".model");
  const std::pair<std::string, const Tokenizer*> cases[] = {{"byte-level", &bytes},
                                                            {"SentencePiece BPE 4000", &bpe}};
  for (const auto& [name, tokenizer] : cases) {
    for (int threads : {1, 2}) {
      DocumentReader reader({input.string()});
      print_row(name, threads,
                encode_corpus(reader, *tokenizer, (dir / "corpus").string(), threads, false));
    }
  }
  fs::remove_all(dir);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t megabytes = 16;
  bench::CommandLine cl("bench_tokenizer",
                        "Encode throughput of `tessera tokenize encode`, byte-level and "
                        "BPE, on 1 and 2 threads.");
  cl.add("megabytes", megabytes, "megabytes of text to encode (also the first word)", int64_t{1})
      .positional("megabytes");
  cl.parse(argc, argv);
  try {
    return run(megabytes);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
}
