// Tests of the tokenizers and of `tessera tokenize train|encode|decode`: SentencePiece training
// (BPE and unigram) on text made here, exact round trips, streaming documents (plain, fortune,
// JSON lines), corpora identical for every thread count, end-of-document ids where documents
// end, and one clear InputError for each kind of bad input. Each test works in its own
// temporary directory; one BPE model is trained once for the whole suite.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "io/indexed_dataset.h"
#include "io/sentencepiece_tokenizer.h"
#include "io/text_files.h"
#include "launcher/sampling.h"
#include "launcher/tokenize_command.h"
#include "tests/expect_error.h"

namespace fs = std::filesystem;
using namespace tessera;

namespace {

constexpr int64_t kBpeVocab = 400;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// `count` paragraphs of pseudo-English from a fixed seed: words built from syllables, commas,
// digits, several lines, double spaces and indentation; each ends with '\n' and none holds a
// line "%", so they can be written as one fortune file.
std::vector<std::string> make_documents(int count, uint32_t seed) {
  static const char* const syllables[] = {"the", "an", "pre", "tion", "ing", "er",  "so", "ca",
                                          "lo",  "mi", "ver", "ed",   "al",  "ous", "re", "con",
                                          "de",  "is", "un",  "ly",   "ta",  "ble", "per"};
  std::mt19937 rng(seed);
  auto pick = [&](uint32_t n) { return static_cast<uint32_t>(rng() % n); };
  std::vector<std::string> docs;
  for (int d = 0; d < count; ++d) {
    std::string doc = pick(4) == 0 ? "  " : "";
    const uint32_t words = 8 + pick(60);
    for (uint32_t w = 0; w < words; ++w) {
      if (w > 0) doc += pick(12) == 0 ? "\n" : pick(15) == 0 ? "  " : " ";
      for (uint32_t s = 0, n = 1 + pick(3); s < n; ++s)
        doc += syllables[pick(std::size(syllables))];
      if (pick(9) == 0) doc += ",";
      if (pick(20) == 0) doc.append(" ").append(std::to_string(pick(2000)));
    }
    doc += ".\n";
    docs.push_back(std::move(doc));
  }
  return docs;
}

// `text` compressed as gzip members or zstd frames, one per piece: the text cut at `cuts` (byte
// offsets, anywhere, inside a line too), as pigz and bgzip write several members.
std::string gzip_members(const std::string& text, const std::vector<size_t>& cuts = {}) {
  std::string out;
  size_t begin = 0;
  for (size_t k = 0; k <= cuts.size(); ++k) {
    const size_t end = k < cuts.size() ? cuts[k] : text.size();
    z_stream z{};
    EXPECT_EQ(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    std::string member(deflateBound(&z, end - begin) + 32, '\0');
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data() + begin));
    z.avail_in = static_cast<uInt>(end - begin);
    z.next_out = reinterpret_cast<Bytef*>(member.data());
    z.avail_out = static_cast<uInt>(member.size());
    EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
    member.resize(member.size() - z.avail_out);
    deflateEnd(&z);
    out += member;
    begin = end;
  }
  return out;
}

// (With a checksum of the content, as the zstd command writes.)
std::string zstd_frames(const std::string& text, const std::vector<size_t>& cuts = {}) {
  std::string out;
  size_t begin = 0;
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 3);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  for (size_t k = 0; k <= cuts.size(); ++k) {
    const size_t end = k < cuts.size() ? cuts[k] : text.size();
    std::string frame(ZSTD_compressBound(end - begin), '\0');
    const size_t n =
        ZSTD_compress2(cctx, frame.data(), frame.size(), text.data() + begin, end - begin);
    EXPECT_FALSE(ZSTD_isError(n));
    out += frame.substr(0, n);
    begin = end;
  }
  ZSTD_freeCCtx(cctx);
  return out;
}

std::string as_fortune_file(const std::vector<std::string>& docs) {
  std::string text;
  for (const std::string& d : docs) text += d + "%\n";
  return text;
}

// Runs `tessera tokenize ARGS...` in-process; returns its standard output.
std::string run_tokenize(std::vector<std::string> args) {
  args.insert(args.begin(), "tokenize");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  ::testing::internal::CaptureStdout();
  try {
    EXPECT_EQ(tokenize_command(static_cast<int>(argv.size()), argv.data()), 0);
  } catch (...) {
    ::testing::internal::GetCapturedStdout();
    throw;
  }
  return ::testing::internal::GetCapturedStdout();
}

using test_support::expect_input_error;

class TokenizerTest : public ::testing::Test {
 protected:
  // One BPE model for the suite, trained on a fortune file of generated paragraphs.
  static void SetUpTestSuite() {
    suite_dir_ =
        fs::temp_directory_path() / ("tessera_test_tokenizer_" + std::to_string(::getpid()));
    fs::remove_all(suite_dir_);
    fs::create_directories(suite_dir_);
    write_file(suite_dir_ / "train.txt", as_fortune_file(make_documents(3000, 1)));
    SentencePieceTrainOptions o;
    o.inputs = {(suite_dir_ / "train.txt").string()};
    o.output_prefix = (suite_dir_ / "bpe").string();
    o.vocab_size = kBpeVocab;
    train_sentencepiece(o);
  }
  static void TearDownTestSuite() { fs::remove_all(suite_dir_); }

  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = suite_dir_ / info->name();
    fs::create_directories(dir_);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  static std::string bpe_model() { return (suite_dir_ / "bpe.model").string(); }

  static fs::path suite_dir_;
  fs::path dir_;
};

fs::path TokenizerTest::suite_dir_;

const std::vector<std::string> kHardTexts = {
    "Hello, world.",
    "  leading spaces, two  inner   spaces and a trailing one ",
    "lines\nwith\n\nnewlines\tand\ttabs\r\n",
    "unseen characters: caf\xc3\xa9, \xe6\x97\xa5\xe6\x9c\xac, \xe2\x98\x83, \xf0\x9f\x98\x80",
    "digits 1234567890 and symbols {}[]<>~^|\\",
    "",
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Tokenizers

TEST_F(TokenizerTest, BpeModelRoundTripsTextExactly) {
  const SentencePieceTokenizer bpe = SentencePieceTokenizer::load(bpe_model());
  EXPECT_EQ(bpe.vocab_size(), kBpeVocab);
  EXPECT_EQ(bpe.end_of_document(), 2);
  for (const std::string& text : kHardTexts) EXPECT_EQ(bpe.decode(bpe.encode(text)), text);
  // Pieces merge: the text the model learnt from takes far fewer tokens than bytes.
  const std::string doc = make_documents(1, 99)[0];
  EXPECT_LT(bpe.encode(doc).size() * 2, doc.size());
}

// A sample's continuation is decoded with its prompt: alone, SentencePiece would drop the space
// that begins its first piece, printing "Hello, world.Hello again".
TEST_F(TokenizerTest, SampleTextKeepsTheSpaceBetweenPromptAndContinuation) {
  const SentencePieceTokenizer bpe = SentencePieceTokenizer::load(bpe_model());
  const std::vector<int32_t> prompt = bpe.encode("Hello, world.");
  const std::vector<int32_t> whole = bpe.encode("Hello, world. Hello again");
  ASSERT_TRUE(std::equal(prompt.begin(), prompt.end(), whole.begin()));
  const std::vector<int32_t> continuation(
      whole.begin() + static_cast<std::ptrdiff_t>(prompt.size()), whole.end());
  EXPECT_EQ(prompt_and_continuation_text(bpe, prompt, continuation), "Hello, world. Hello again");
  EXPECT_EQ(prompt_and_continuation_text(bpe, {}, continuation), "Hello again");
  const ByteLevelTokenizer bytes;
  EXPECT_EQ(prompt_and_continuation_text(bytes, bytes.encode("ab"), bytes.encode(" c")), "ab c");
}

TEST_F(TokenizerTest, UnigramModelRoundTripsTextExactly) {
  write_file(path("train.txt"), as_fortune_file(make_documents(1500, 2)));
  const std::string out =
      run_tokenize({"train", "--input", path("train.txt"), "--output", path("uni"), "--vocab_size",
                    "350", "--model_type", "unigram", "--threads", "2"});
  EXPECT_NE(out.find("1500 documents"), std::string::npos) << out;
  EXPECT_NE(out.find("vocab 350, unigram"), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(path("uni.vocab")));
  const SentencePieceTokenizer unigram = SentencePieceTokenizer::load(path("uni.model"));
  EXPECT_EQ(unigram.vocab_size(), 350);
  for (const std::string& text : kHardTexts) EXPECT_EQ(unigram.decode(unigram.encode(text)), text);
}

TEST_F(TokenizerTest, TrainsOnCommonLicensesWhenPresent) {
  const std::string dir = "/usr/share/common-licenses";
  if (!fs::is_directory(dir)) GTEST_SKIP() << dir << " not present";
  SentencePieceTrainOptions o;
  o.inputs = {dir};
  o.output_prefix = path("lic");
  o.vocab_size = 1000;
  const SentencePieceTrainStats stats = train_sentencepiece(o);
  EXPECT_GT(stats.documents, 5);
  EXPECT_GT(stats.text_bytes, 100000);
  EXPECT_EQ(stats.vocab_size, 1000);
  const SentencePieceTokenizer lic = SentencePieceTokenizer::load(path("lic.model"));
  const std::string gpl = read_file(fs::path(dir) / "GPL-3");
  ASSERT_FALSE(gpl.empty()) << dir << "/GPL-3 is missing or empty";
  const std::vector<int32_t> ids = lic.encode(gpl);
  EXPECT_EQ(lic.decode(ids), gpl);
  EXPECT_LT(ids.size() * 5, gpl.size() * 2);  // over 2.5 bytes a token (2.9 measured)
}

TEST_F(TokenizerTest, ByteLevelTokenizerRoundTripsThroughTheInterface) {
  const std::unique_ptr<Tokenizer> bytes = open_tokenizer("");
  EXPECT_EQ(bytes->vocab_size(), 257);
  EXPECT_EQ(bytes->end_of_document(), 256);
  for (const std::string& text : kHardTexts) EXPECT_EQ(bytes->decode(bytes->encode(text)), text);
  std::vector<int32_t> two = bytes->encode("a");
  two.push_back(256);
  EXPECT_EQ(bytes->decode(two), "a\n<|endoftext|>\n");
}

TEST_F(TokenizerTest, DecodeShowsEndOfDocumentAndNamesIdsOutsideTheModel) {
  const SentencePieceTokenizer bpe = SentencePieceTokenizer::load(bpe_model());
  std::vector<int32_t> ids = bpe.encode(" first");
  ids.push_back(bpe.end_of_document());
  const std::vector<int32_t> second = bpe.encode(" second");
  ids.insert(ids.end(), second.begin(), second.end());
  EXPECT_EQ(bpe.decode(ids), " first\n<|endoftext|>\n second");
  EXPECT_EQ(bpe.decode(ids, "|"), " first| second");
  const std::vector<int32_t> bad{5, static_cast<int32_t>(kBpeVocab), 6};
  expect_input_error([&] { bpe.decode(bad); }, {bpe_model(), "token 1", "400"});
  const std::vector<int32_t> negative{-1};
  expect_input_error([&] { bpe.decode(negative); }, {"token 0", "-1"});
}

TEST_F(TokenizerTest, TrainingCutsLinesLongerThanSentencePieceAccepts) {
  std::string line;  // one 40 kB line: SentencePiece would skip it whole
  for (const std::string& doc : make_documents(400, 8)) {
    for (char c : doc) line += c == '\n' ? ' ' : c;
  }
  ASSERT_GT(line.size(), 40000u);
  write_file(path("long.jsonl"), "{\"text\": \"" + line + "\"}\n");
  SentencePieceTrainOptions o;
  o.inputs = {path("long.jsonl")};
  o.output_prefix = path("m");
  o.vocab_size = 120;
  o.byte_fallback = false;
  const SentencePieceTrainStats stats = train_sentencepiece(o);
  EXPECT_EQ(stats.documents, 1);
  EXPECT_GE(stats.sentences, static_cast<int64_t>(line.size() / 4096));
  const SentencePieceTokenizer model = SentencePieceTokenizer::load(path("m.model"));
  EXPECT_EQ(model.decode(model.encode(line)), line);
  EXPECT_LT(model.encode(line).size() * 2, line.size());
}

// The trainer reads lines without their line breaks, so no piece it learns holds one: without
// byte pieces to fall back on, every newline of every document was <unk> (id 0), and decoded
// as " \xe2\x81\x87 ". A newline is a piece of its own.
TEST_F(TokenizerTest, NewlinesRoundTripWithoutByteFallback) {
  const std::vector<std::string> docs = make_documents(300, 3);
  write_file(path("train.txt"), as_fortune_file(docs));
  SentencePieceTrainOptions o;
  o.inputs = {path("train.txt")};
  o.output_prefix = path("m");
  o.vocab_size = 150;
  o.byte_fallback = false;
  train_sentencepiece(o);
  const SentencePieceTokenizer model = SentencePieceTokenizer::load(path("m.model"));
  const std::string text = docs[0] + "\n\n" + docs[1] + "\n";
  const std::vector<int32_t> ids = model.encode(text);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 0), 0) << "<unk> in the encoding";
  EXPECT_EQ(model.decode(ids), text);
  // Characters it has no piece for are <unk>: encode counts them.
  const std::string clean = run_tokenize({"encode", "--input", path("train.txt"), "--output",
                                          path("clean"), "--tokenizer.model", path("m.model")});
  EXPECT_EQ(clean.find("unknown piece"), std::string::npos) << clean;
  write_file(path("new.txt"), "caf\xc3\xa9 \xe2\x98\x83 and \xe2\x82\xac\n");
  const std::string out = run_tokenize({"encode", "--input", path("new.txt"), "--output",
                                        path("new"), "--tokenizer.model", path("m.model")});
  EXPECT_NE(out.find("note: 3 tokens are the unknown piece (id 0) of SentencePiece model " +
                     path("m.model") + ": text it has no piece for"),
            std::string::npos)
      << out;
}

// SentencePiece holds 80-180 bytes per byte of a document it encodes: a plain file of 1 GiB
// without separators (one document) passed the byte-level limit and ran out of memory; its
// own limit stops it as soon as that much is read, naming the file.
TEST_F(TokenizerTest, EncodeRefusesADocumentLongerThanSentencePieceTakes) {
  std::string text;
  const std::string line = "the quick brown fox jumps over the lazy dog\n";
  while (text.size() <= kMaxSentencePieceDocumentBytes) text += line;
  write_file(path("one.txt"), text);
  expect_input_error(
      [&] {
        run_tokenize({"encode", "--input", path("one.txt"), "--output", path("c"),
                      "--tokenizer.model", bpe_model()});
      },
      {"text input " + path("one.txt"),
       "at most " + std::to_string(kMaxSentencePieceDocumentBytes) + " bytes"});
  EXPECT_FALSE(fs::exists(path("c.bin")));
  // The byte-level tokenizer takes it.
  run_tokenize({"encode", "--input", path("one.txt"), "--output", path("b")});
  EXPECT_TRUE(fs::exists(path("b.bin")));
}

// ---------------------------------------------------------------------------------------------
// Streaming documents

TEST_F(TokenizerTest, DocumentReaderStreamsChunksInInputOrder) {
  const std::vector<std::string> docs = make_documents(200, 3);
  write_file(path("a.txt"), as_fortune_file({docs.begin(), docs.begin() + 120}));
  write_file(path("b.txt"), as_fortune_file({docs.begin() + 120, docs.end()}));
  DocumentReader reader({path("a.txt"), path("b.txt")});
  EXPECT_EQ(reader.total_bytes(),
            static_cast<int64_t>(fs::file_size(path("a.txt")) + fs::file_size(path("b.txt"))));
  std::vector<std::string> all, chunk;
  int chunks = 0;
  while (reader.next_chunk(chunk, 1000)) {
    ++chunks;
    size_t bytes = 0;
    for (size_t i = 0; i + 1 < chunk.size(); ++i) bytes += chunk[i].size();
    EXPECT_LT(bytes, 1000u);  // the chunk stops at the first document that reaches the limit
    all.insert(all.end(), chunk.begin(), chunk.end());
  }
  EXPECT_EQ(all, docs);
  EXPECT_GT(chunks, 10);
  EXPECT_EQ(reader.bytes_read(), reader.total_bytes());
  EXPECT_EQ(read_documents({path("a.txt"), path("b.txt")}), docs);
}

// A plain-text document longer than the limit (1 GiB by default; 100 bytes here) stops the
// reader as soon as it is read that far, naming the file and the document's first line, before
// the whole of it is held in memory.
TEST_F(TokenizerTest, DocumentLongerThanTheLimitIsRefusedNamingFileAndLine) {
  std::string text = "first\n%\n";
  for (int i = 0; i < 30; ++i) text += "line " + std::to_string(i) + "\n";
  write_file(path("long.txt"), text);
  DocumentReader reader({path("long.txt")}, "text", 100);
  EXPECT_EQ(reader.next(), std::optional<std::string>("first\n"));
  expect_input_error([&] { reader.next(); }, {"text input " + path("long.txt"), "at most 100 bytes",
                                              "a longer one from line 3", "JSON lines"});
  // One line longer than the limit is refused before the reader holds more of it than a block
  // past the limit (2 MB here, blocks are 1 MB).
  write_file(path("line.jsonl"),
             "{\"text\": \"short\"}\n{\"text\": \"" + std::string(size_t{3} << 20, 'x') + "\"}\n");
  DocumentReader lines({path("line.jsonl")}, "text", size_t{2} << 20);
  EXPECT_EQ(lines.next(), std::optional<std::string>("short"));
  expect_input_error([&] { lines.next(); },
                     {"text input " + path("line.jsonl"), "lines of at most 2097152 bytes",
                      "longer one at line 2"});
  // The limit counts the document's bytes, its last line break included, and not the separator.
  write_file(path("exact.txt"), std::string(99, 'a') + "\n%\nb\n");
  DocumentReader exact({path("exact.txt")}, "text", 100);
  EXPECT_EQ(exact.next()->size(), 100u);
  EXPECT_EQ(exact.next(), std::optional<std::string>("b\n"));
  DocumentReader one_short({path("exact.txt")}, "text", 99);
  expect_input_error([&] { one_short.next(); }, {"at most 99 bytes", "from line 1"});
  DocumentReader roomy({path("long.txt")}, "text", 1000);
  EXPECT_EQ(roomy.next(), std::optional<std::string>("first\n"));
  EXPECT_EQ(roomy.next()->size(), text.size() - 8);
}

TEST_F(TokenizerTest, JsonLinesTextFieldRoundTrips) {
  write_file(path("d.jsonl"),
             "{\"text\": \"line one\\nline two\\ttabbed \\\"quoted\\\"\", \"id\": 1}\n"
             "\n"
             "{\"id\": 2, \"text\": \"caf\\u00e9 \\ud83d\\ude00 \xe6\x97\xa5\\\\\"}\r\n"
             "{\"text\": \"   \"}\n"
             "{\"text\": \"last, no newline\"}");
  EXPECT_EQ(read_documents({path("d.jsonl")}),
            (std::vector<std::string>{"line one\nline two\ttabbed \"quoted\"",
                                      "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe6\x97\xa5\\",
                                      "last, no newline"}));
  run_tokenize({"encode", "--input", path("d.jsonl"), "--output", path("j")});
  run_tokenize({"decode", "--input", path("j"), "--output", path("j.txt")});
  EXPECT_EQ(read_file(path("j.txt")),
            "line one\nline two\ttabbed \"quoted\"\n<|endoftext|>\n"
            "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe6\x97\xa5\\\n<|endoftext|>\n"
            "last, no newline\n<|endoftext|>\n");
  // An output that is a file decode reads is refused, the corpus left whole; so is an encode
  // output with no file name (it wrote hidden .bin/.idx files).
  const auto bytes_of = [&](const std::string& p) { return read_file(p); };
  const std::string bin = bytes_of(path("j.bin")), idx = bytes_of(path("j.idx"));
  for (const char* file : {"j.bin", "j.idx"})
    expect_input_error(
        [&] {
          run_tokenize({"decode", "--input", path("j"), "--output", path(file)});
        },
        {"--output " + path(file), "which decode reads"});
  EXPECT_EQ(bytes_of(path("j.bin")), bin);
  EXPECT_EQ(bytes_of(path("j.idx")), idx);
  expect_input_error(
      [&] {
        run_tokenize({"encode", "--input", path("d.jsonl"), "--output", path("sub/")});
      },
      {"--output",
       "expected a prefix naming the corpus PREFIX.bin and PREFIX.idx, found no "
       "file name"});
  expect_input_error(
      [&] {
        run_tokenize(
            {"train", "--input", path("d.jsonl"), "--output", path("sub/"), "--vocab_size", "300"});
      },
      {"--output",
       "expected a prefix naming the model PREFIX.model and PREFIX.vocab, found no "
       "file name"});
  EXPECT_FALSE(fs::exists(path("sub/.model")));
  write_file(path("k.json"), "{\"body\": \"other key\"}\n");
  run_tokenize({"encode", "--input", path("k.json"), "--output", path("k"), "--jsonl_key", "body"});
  EXPECT_EQ(IndexedDataset::open(path("k")).num_tokens(), 10);  // 9 bytes + end of document
}

// What a directory of text meets: CRLF line ends (a "%\r\n" line separates documents, each
// keeping its bytes), an encode's own output and part files (skipped, as the fortunes package's
// .dat files are: the second encode into the directory it reads gives the first's corpus),
// JSON lines under an upper-case extension, and xz, bzip2 and zip files (refused, naming file and
// format, instead of being encoded as text).
// Text from a FIFO (a decompressor's output, `<(zcat ...)`): every byte reaches the documents.
// The check for a compressed file reads the first block the reader reads anyway; a check that
// opened the input once more took the pipe's first bytes.
TEST_F(TokenizerTest, TextFromAFifoKeepsItsFirstBytes) {
  const std::string fifo = path("text.fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::thread writer([&] { std::ofstream(fifo) << "first document\n%\nsecond\n"; });
  const std::vector<std::string> docs = read_documents({fifo});
  writer.join();
  EXPECT_EQ(docs, (std::vector<std::string>{"first document\n", "second\n"}));
}

// gzip and zstd inputs are read as their text, whatever their names say: several members or frames
// (cut inside a line, too), JSON lines under .jsonl.gz and .jsonl.zst, and a FIFO; the progress
// counts the compressed bytes. A file cut short, bytes after the last member and damaged data are
// refused naming the file; a file that is not gzip or zstd at all is read as it is.
TEST_F(TokenizerTest, GzipAndZstdInputsAreReadAsTheirText) {
  const std::vector<std::string> docs = make_documents(300, 11);
  const std::string fortunes = as_fortune_file(docs);
  const std::vector<size_t> cuts = {fortunes.size() / 3, fortunes.size() / 3 + 1,
                                    2 * fortunes.size() / 3};
  // As JSON lines: each paragraph without its last ".\n", and its newlines (which would break a
  // line) as spaces.
  std::vector<std::string> json_docs;
  std::string jsonl;
  for (const std::string& d : docs) {
    std::string text = d.substr(0, d.size() - 2);
    std::replace(text.begin(), text.end(), '\n', ' ');
    jsonl += "{\"text\": \"" + text + "\"}\n";
    json_docs.push_back(std::move(text));
  }

  write_file(path("f.txt.gz"), gzip_members(fortunes, cuts));
  write_file(path("f.zst"), zstd_frames(fortunes, cuts));
  write_file(path("j.jsonl.gz"), gzip_members(jsonl, {jsonl.size() / 2}));
  write_file(path("j.JSONL.zst"), zstd_frames(jsonl, {jsonl.size() / 2}));
  write_file(path("j.jsonl"), jsonl);
  for (const char* name : {"f.txt.gz", "f.zst"}) {
    DocumentReader reader({path(name)});
    std::vector<std::string> read;
    while (std::optional<std::string> doc = reader.next()) read.push_back(std::move(*doc));
    EXPECT_EQ(read, docs) << name;
    EXPECT_EQ(reader.bytes_read(), static_cast<int64_t>(fs::file_size(path(name)))) << name;
    EXPECT_EQ(reader.total_bytes(), reader.bytes_read()) << name;
  }
  EXPECT_EQ(read_documents({path("j.jsonl.gz")}), json_docs);
  EXPECT_EQ(read_documents({path("j.JSONL.zst")}), json_docs);
  // A FIFO (`<(cat f.txt.gz)`): the first block tells the format; nothing is read twice.
  const std::string fifo = path("f.fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::thread writer([&] { std::ofstream(fifo, std::ios::binary) << read_file(path("f.txt.gz")); });
  const std::vector<std::string> from_fifo = read_documents({fifo});
  writer.join();
  EXPECT_EQ(from_fifo, docs);
  // `tokenize encode` makes the corpus of the text itself, byte for byte.
  run_tokenize({"encode", "--input", path("j.jsonl"), "--output", path("plain")});
  run_tokenize({"encode", "--input", path("j.jsonl.gz"), "--output", path("gz")});
  run_tokenize({"encode", "--input", path("j.JSONL.zst"), "--output", path("zst")});
  for (const char* name : {"gz", "zst"})
    for (const char* ext : {".bin", ".idx"})
      EXPECT_EQ(read_file(path(std::string(name) + ext)),
                read_file(path(std::string("plain") + ext)))
          << name << ext;

  const std::string gz = read_file(path("f.txt.gz")), zst = read_file(path("f.zst"));
  write_file(path("cut.gz"), gz.substr(0, gz.size() - 100));
  expect_input_error(
      [&] { read_documents({path("cut.gz")}); },
      {"text input " + path("cut.gz") + ": expected the rest of a gzip member",
       "found the end of the file after " + std::to_string(gz.size() - 100) + " bytes"});
  write_file(path("cut.zst"), zst.substr(0, zst.size() - 100));
  expect_input_error([&] { read_documents({path("cut.zst")}); },
                     {"text input " + path("cut.zst") + ": expected the rest of a zstd frame"});
  write_file(path("trailing.gz"), gz + "trailing bytes");
  expect_input_error([&] { read_documents({path("trailing.gz")}); },
                     {"text input " + path("trailing.gz") +
                      ": damaged gzip data in the member that begins at byte " +
                      std::to_string(gz.size()) + " of the file (zlib: incorrect header check)"});
  // A skippable frame first, as pzstd writes one: zstd too.
  std::string skippable(
      "\x50\x2a\x4d\x18\x04\x00\x00\x00"
      "wxyz",
      12);
  write_file(path("skippable.zst"), skippable + zst);
  EXPECT_EQ(read_documents({path("skippable.zst")}), docs);
  // Zero bytes after the last member (a block's padding) end it, as gzip takes them.
  write_file(path("padded.gz"), gz + std::string(512, '\0'));
  EXPECT_EQ(read_documents({path("padded.gz")}), docs);
  std::string flipped = zst;
  flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x55);
  write_file(path("flipped.zst"), flipped);
  expect_input_error([&] { read_documents({path("flipped.zst")}); },
                     {"text input " + path("flipped.zst") + ": damaged zstd data"});
  flipped = gz;
  flipped[flipped.size() - 3] = static_cast<char>(flipped[flipped.size() - 3] ^ 0x55);  // length
  write_file(path("flipped.gz"), flipped);
  expect_input_error([&] { read_documents({path("flipped.gz")}); },
                     {"text input " + path("flipped.gz") + ": damaged gzip data"});
  // Any byte after the magic changed: the text itself, or an InputError naming the file (the
  // checksums of both formats see a change of the text). Any length cut after the magic: the
  // documents of a prefix of the text (a cut between members), or that InputError. Never a
  // crash, a hang or another error.
  std::mt19937 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    const std::string& whole = trial % 2 ? zst : gz;
    std::string changed = whole;
    const bool cut = trial % 4 >= 2;
    if (!cut) {
      const size_t at = 4 + rng() % (changed.size() - 4);
      changed[at] = static_cast<char>(changed[at] ^ (1 + rng() % 255));
    } else {
      changed.resize(4 + rng() % (changed.size() - 4));
    }
    write_file(path("trial"), changed);
    std::vector<std::string> read;
    try {
      read = read_documents({path("trial")});
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("text input " + path("trial")), std::string::npos)
          << e.what();
      continue;
    }
    if (!cut) {
      EXPECT_EQ(read, docs) << "trial " << trial;
      continue;
    }
    ASSERT_LE(read.size(), docs.size()) << "trial " << trial;
    for (size_t i = 0; i < read.size(); ++i)
      EXPECT_EQ(read[i], i + 1 < read.size() ? docs[i] : docs[i].substr(0, read[i].size()))
          << "trial " << trial << ", document " << i;
  }
  // Only the first bytes tell: a text that starts as gzip does not, and one gzip byte is text.
  write_file(path("one.txt"), "\x1f");
  EXPECT_EQ(read_documents({path("one.txt")}), std::vector<std::string>{"\x1f"});
}

// How a file's lines are read: JSON lines by the name (.ndjson too), where a file read as text
// that begins with a JSON object is refused (a FIFO of JSON lines, named /dev/fd/N) unless
// --format says; a tar archive, compressed or not, is refused; a file reached twice, by another
// path or through its directory, is refused; a directory's symlinks to files are followed, and
// one to a file the directory holds is that file again.
TEST_F(TokenizerTest, FormatsArchivesAndFilesReachedTwice) {
  const std::string jsonl = "{\"text\": \"one\"}\n{\"text\": \"two\"}\n";
  write_file(path("d.ndjson"), jsonl);
  EXPECT_EQ(read_documents({path("d.ndjson")}), (std::vector<std::string>{"one", "two"}));
  write_file(path("d.txt"), "\n" + jsonl);
  expect_input_error([&] { read_documents({path("d.txt")}); },
                     {"text input " + path("d.txt") + ":2: a JSON object, in a file read as text",
                      "give --format jsonl"});
  const auto read_as = [&](TextFormat format) {
    DocumentReader reader({path("d.txt")}, "text", kMaxDocumentBytes, format);
    std::vector<std::string> docs;
    while (std::optional<std::string> d = reader.next()) docs.push_back(*d);
    return docs;
  };
  EXPECT_EQ(read_as(TextFormat::JsonLines), (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(read_as(TextFormat::Text), std::vector<std::string>{"\n" + jsonl});
  run_tokenize({"encode", "--input", path("d.txt"), "--output", path("j"), "--format", "jsonl"});
  EXPECT_EQ(TokenCorpus::open(path("j")).num_documents(), 2);
  expect_input_error(
      [&] {
        run_tokenize(
            {"encode", "--input", path("d.txt"), "--output", path("j"), "--format", "xml"});
      },
      {"--format: expected auto, text or jsonl, found \"xml\""});

  // A tar archive: a header's "ustar" at byte 257.
  std::string tar(1024, '\0');
  tar.replace(0, 5, "a.txt");
  tar.replace(257, 6, std::string("ustar\0", 6));
  write_file(path("a.tar"), tar);
  expect_input_error([&] { read_documents({path("a.tar")}); },
                     {"text input " + path("a.tar") +
                      ": expected text or JSON lines, found a tar "
                      "archive; unpack it"});
  write_file(path("a.tar.gz"), gzip_members(tar));
  expect_input_error([&] { read_documents({path("a.tar.gz")}); },
                     {"found a gzip-compressed tar archive"});
  // Text with "ustar" at byte 257 ("mustard") is text: the magic ends in a NUL or spaces.
  const std::string mustard = std::string(256, 'x') + "mustard\n";
  write_file(path("mustard.txt"), mustard);
  EXPECT_EQ(read_documents({path("mustard.txt")}), std::vector<std::string>{mustard});

  fs::create_directories(path("texts/sub"));
  write_file(path("texts/a.txt"), "alpha\n");
  write_file(path("texts/b.txt"), "beta\n");
  fs::create_symlink("a.txt", path("texts/c.txt"));           // the directory's own a.txt again
  fs::create_symlink("../d.ndjson", path("texts/d.ndjson"));  // a file outside: read
  EXPECT_EQ(read_documents({path("texts")}),
            (std::vector<std::string>{"alpha\n", "beta\n", "one", "two"}));
  expect_input_error(
      [&] {
        read_documents({path("texts/a.txt"), path("texts/./a.txt")});
      },
      {"text input " + path("texts/./a.txt") + ": the same file as " + path("texts/a.txt") +
       ", read already; give each input once"});
  expect_input_error(
      [&] {
        read_documents({path("texts"), path("texts/b.txt")});
      },
      {"text input " + path("texts/b.txt") + ": the same file as " + path("texts/b.txt") +
       " in directory " + path("texts")});
  expect_input_error([&] { read_documents({path("texts/sub")}); },
                     {"found none (subdirectories are not read"});
}

TEST_F(TokenizerTest, DirectoryInputsSkipCorporaAndRefuseCompressedFiles) {
  fs::create_directories(path("texts"));
  write_file(path("texts/a.txt"), "first\r\n%\r\nsecond\r\nline\r\n%\r\n");
  write_file(path("texts/b.JSONL"), "{\"text\": \"third\"}\n");
  const std::vector<std::string> docs = {"first\r\n", "second\r\nline\r\n", "third"};
  EXPECT_EQ(read_documents({path("texts")}), docs);
  run_tokenize({"encode", "--input", path("texts"), "--output", path("texts/c")});
  const std::string bin = read_file(path("texts/c.bin"));
  write_file(path("texts/d.bin.tmp"), "part");
  EXPECT_EQ(read_documents({path("texts")}), docs);
  run_tokenize({"encode", "--input", path("texts"), "--output", path("texts/c")});
  EXPECT_EQ(read_file(path("texts/c.bin")), bin);
  // Named one by one (as a shell's texts/* names them), a corpus or part file is refused, not
  // read as text.
  for (const char* named : {"texts/c.bin", "texts/c.idx", "texts/d.bin.tmp"})
    expect_input_error(
        [&] {
          read_documents({path("texts/a.txt"), path(named)});
        },
        {"text input " + path(named) + ": expected text or JSON lines, found a ."});
  // An input that cannot be looked at (here a path through a file: ENOTDIR; a directory without
  // search permission alike) is not called missing.
  expect_input_error([&] { read_documents({path("texts/a.txt/x")}); },
                     {"text input " + path("texts/a.txt/x") + ": cannot be looked at (Not a"});
  expect_input_error([&] { read_documents({path("texts/none.txt")}); },
                     {"text input " + path("texts/none.txt") + ": no such file or directory"});

  for (const auto& [format, magic] :
       std::vector<std::pair<std::string, std::string>>{{"an xz", std::string("\xfd"
                                                                              "7zXZ\0",
                                                                              6)},
                                                        {"a bzip2", "BZh9"},
                                                        {"a zip", "PK\x03\x04"}}) {
    write_file(path("texts/e.jsonl.zz"), magic + "compressed bytes");
    expect_input_error([&] { read_documents({path("texts")}); },
                       {"text input " + path("texts/e.jsonl.zz"),
                        "found " + format + "-compressed file; decompress it first"});
  }
  // gzip and zstd are read as they are (GzipAndZstdInputsAreReadAsTheirText): these bytes are not
  // what they begin as.
  for (const auto& [format, magic] : std::vector<std::pair<std::string, std::string>>{
           {"gzip", "\x1f\x8b\x08"}, {"zstd", "\x28\xb5\x2f\xfd"}}) {
    write_file(path("texts/e.jsonl.zz"), magic + "compressed bytes");
    expect_input_error(
        [&] { read_documents({path("texts")}); },
        {"text input " + path("texts/e.jsonl.zz") + ": damaged " + format + " data"});
  }
}

TEST_F(TokenizerTest, BadJsonLineNamesFileAndLine) {
  write_file(path("bad.jsonl"), "{\"text\": \"fine\"}\n{\"text\": \"fine\"}\n{\"text\": oops}\n");
  expect_input_error([&] { read_documents({path("bad.jsonl")}); },
                     {path("bad.jsonl") + ":3:", "invalid JSON"});
  write_file(path("nofield.jsonl"), "{\"text\": \"fine\"}\n{\"content\": \"x\"}\n");
  expect_input_error(
      [&] {
        run_tokenize({"encode", "--input", path("nofield.jsonl"), "--output", path("c")});
      },
      {path("nofield.jsonl") + ":2:", "\"text\"", "no such field"});
  write_file(path("number.jsonl"), "{\"text\": 7}\n");
  expect_input_error([&] { read_documents({path("number.jsonl")}); },
                     {path("number.jsonl") + ":1:", "found 7"});
  write_file(path("array.jsonl"), "[\"text\"]\n");
  expect_input_error([&] { read_documents({path("array.jsonl")}); },
                     {path("array.jsonl") + ":1:", "expected a JSON object"});
  EXPECT_FALSE(fs::exists(path("c.bin")));
  EXPECT_FALSE(fs::exists(path("c.idx")));
}

// ---------------------------------------------------------------------------------------------
// Corpora

TEST_F(TokenizerTest, EncodedCorpusIsIdenticalForAnyThreadCount) {
  write_file(path("t.txt"), as_fortune_file(make_documents(1500, 4)));
  const SentencePieceTokenizer bpe = SentencePieceTokenizer::load(bpe_model());
  const ByteLevelTokenizer bytes;
  for (const Tokenizer* tokenizer :
       {static_cast<const Tokenizer*>(&bpe), static_cast<const Tokenizer*>(&bytes)}) {
    std::vector<std::string> bins, idxs;
    for (int threads : {1, 2, 3}) {
      DocumentReader reader({path("t.txt")});
      const std::string prefix = path("c") + std::to_string(threads);
      // 20 kB chunks: the pipeline crosses ~20 chunk boundaries.
      const EncodeStats stats = encode_corpus(reader, *tokenizer, prefix, threads, false, 20000);
      EXPECT_EQ(stats.documents, 1500);
      bins.push_back(read_file(prefix + ".bin"));
      idxs.push_back(read_file(prefix + ".idx"));
    }
    EXPECT_FALSE(bins[0].empty());
    for (size_t i = 1; i < bins.size(); ++i) {
      EXPECT_TRUE(bins[i] == bins[0]) << tokenizer->description() << ", run " << i;
      EXPECT_TRUE(idxs[i] == idxs[0]) << tokenizer->description() << ", run " << i;
    }
  }
  run_tokenize({"encode", "--input", path("t.txt"), "--output", path("cli"), "--threads", "2"});
  EXPECT_TRUE(read_file(path("cli.bin")) == read_file(path("c1.bin")));
}

// SentencePiece encodes a byte that is not UTF-8 as U+FFFD: encode counts such documents (and
// says so), so that a corpus that will not decode to its text is known; the byte-level
// tokenizer keeps every byte and counts none. The validator itself, on the edges of UTF-8.
TEST_F(TokenizerTest, DocumentsThatAreNotUtf8AreCountedForSentencePiece) {
  write_file(path("t.txt"), "caf\xc3\xa9 fine\n%\nlatin-1 caf\xe9\n%\ncut \xe6\x97\n%\nplain\n");
  const SentencePieceTokenizer bpe = SentencePieceTokenizer::load(bpe_model());
  const ByteLevelTokenizer bytes;
  DocumentReader for_bpe({path("t.txt")}), for_bytes({path("t.txt")});
  EXPECT_EQ(encode_corpus(for_bpe, bpe, path("s"), 2, false).not_utf8_documents, 2);
  EXPECT_EQ(encode_corpus(for_bytes, bytes, path("b"), 2, false).not_utf8_documents, 0);
  EXPECT_NE(bpe.decode(bpe.encode("caf\xe9")), "caf\xe9");  // what the count warns of

  for (const char* valid : {"", "ascii", "\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xed\x9f\xbf",
                            "\xef\xbf\xbd", "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf"})
    EXPECT_TRUE(is_valid_utf8(valid)) << valid;
  for (const char* invalid :
       {"\x80", "\xc0\xaf", "\xc1\xbf", "\xe0\x9f\xbf", "\xed\xa0\x80", "\xf0\x8f\xbf\xbf",
        "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xe6\x97", "\xff"})
    EXPECT_FALSE(is_valid_utf8(invalid)) << invalid;
}

TEST_F(TokenizerTest, EndOfDocumentIdsAreWhereDocumentsEnd) {
  const std::vector<std::string> docs = make_documents(300, 5);
  write_file(path("t.txt"), as_fortune_file(docs));
  run_tokenize({"encode", "--input", path("t.txt"), "--output", path("c"), "--tokenizer.model",
                bpe_model(), "--threads", "2"});
  const SentencePieceTokenizer bpe = SentencePieceTokenizer::load(bpe_model());
  const IndexedDataset corpus = IndexedDataset::open(path("c"));
  EXPECT_EQ(corpus.dtype(), DType::U16);
  ASSERT_EQ(corpus.num_documents(), 300);
  ASSERT_EQ(corpus.num_sequences(), 300);
  for (int64_t d = 0; d < 300; ++d) {
    std::vector<int32_t> ids(static_cast<size_t>(corpus.sequence_length(d)));
    corpus.read_tokens(corpus.sequence_start(d), static_cast<int64_t>(ids.size()), ids.data());
    ASSERT_EQ(ids.back(), 2) << "document " << d;
    ids.pop_back();
    ASSERT_EQ(std::count(ids.begin(), ids.end(), 2), 0) << "document " << d;
    ASSERT_EQ(bpe.decode(ids), docs[static_cast<size_t>(d)]) << "document " << d;
  }
}

TEST_F(TokenizerTest, CorpusEncodedWithAModelDecodesWithIt) {
  const std::vector<std::string> docs = make_documents(100, 6);
  write_file(path("t.txt"), as_fortune_file(docs));
  write_file(path("u.txt"), as_fortune_file(docs));
  ::testing::internal::CaptureStderr();
  run_tokenize({"train", "--input", path("t.txt"), path("u.txt"), "--output", path("m/bpe"),
                "--vocab_size", "320"});
  // Reading is reported before SentencePiece's own training, which shows nothing by itself.
  const std::string progress = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(progress.find("tokenize train: read 200 documents ("), std::string::npos) << progress;
  EXPECT_NE(progress.find("SentencePiece trains now"), std::string::npos) << progress;
  const std::string out = run_tokenize({"encode", "--input", path("t.txt"), "--output", path("c"),
                                        "--tokenizer.model", path("m/bpe.model")});
  EXPECT_NE(out.find("100 documents"), std::string::npos) << out;
  EXPECT_NE(out.find("nats/token"), std::string::npos) << out;
  run_tokenize({"decode", "--input", path("c"), "--tokenizer.model", path("m/bpe.model"),
                "--output", path("back.txt")});
  std::string expected;
  for (const std::string& d : docs) expected += d + "\n<|endoftext|>\n";
  EXPECT_EQ(read_file(path("back.txt")), expected);
  // A byte-level corpus decoded with the model: its documents end with 256, not with </s> (2).
  run_tokenize({"encode", "--input", path("t.txt"), "--output", path("b")});
  ::testing::internal::CaptureStderr();
  run_tokenize({"decode", "--input", path("b"), "--tokenizer.model", path("m/bpe.model"),
                "--output", path("b.txt")});
  const std::string note = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(note.find("tokenize decode: note: the documents of " + path("b") +
                      " end with id 256, not with 2, the end of document of SentencePiece model " +
                      path("m/bpe.model") + ": was it encoded with another tokenizer?\n"),
            std::string::npos)
      << note;
  ::testing::internal::CaptureStderr();
  run_tokenize({"decode", "--input", path("c"), "--tokenizer.model", path("m/bpe.model"),
                "--output", path("back.txt")});
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  // Without the model the ids above 256 are not bytes.
  expect_input_error(
      [&] {
        run_tokenize({"decode", "--input", path("c")});
      },
      {path("c.bin"), " of 100, counted from 0) has id ", "expected a byte-level id below 257"});
}

// ---------------------------------------------------------------------------------------------
// Bad input

TEST_F(TokenizerTest, MissingOrInvalidModelFileIsAnInputError) {
  write_file(path("t.txt"), "some text");
  expect_input_error(
      [&] {
        run_tokenize({"encode", "--input", path("t.txt"), "--output", path("c"),
                      "--tokenizer.model", path("absent.model")});
      },
      {"--tokenizer.model", path("absent.model"), "no such file"});
  write_file(path("text.model"), "this is not a model\n");
  // SentencePiece's own words for the failure differ between versions (0.1.97, 0.2.0): only ours
  // are checked.
  expect_input_error([&] { SentencePieceTokenizer::load(path("text.model")); },
                     {path("text.model"), "expected a SentencePiece model file, found"});
  write_file(path("empty.model"), "");
  expect_input_error([&] { SentencePieceTokenizer::load(path("empty.model")); },
                     {path("empty.model"), "found an empty file"});
  expect_input_error(
      [&] {
        run_tokenize({"decode", "--input", path("c"), "--tokenizer.model", path("text.model")});
      },
      {"c.idx"});  // the corpus is checked first: none was written
}

TEST_F(TokenizerTest, TrainRejectsBadOptions) {
  write_file(path("t.txt"), as_fortune_file(make_documents(200, 7)));
  auto train = [&](std::vector<std::string> extra) {
    std::vector<std::string> args{"train", "--input", path("t.txt"), "--output", path("m")};
    args.insert(args.end(), extra.begin(), extra.end());
    run_tokenize(args);
  };
  // A misspelt option points to the verb's help, which lists its options (`tessera tokenize
  // --help` lists only the verbs).
  expect_input_error(
      [&] {
        train({"--vocab_sise", "100"});
      },
      {"'--vocab_sise'", "(see tessera tokenize train --help)"});
  expect_input_error(
      [&] {
        train({"--vocab_size", "100"});
      },
      {"--vocab_size 100", "smaller than required_chars"});
  expect_input_error(
      [&] {
        train({"--vocab_size", "100000"});
      },
      {"--vocab_size 100000", "too high"});
  expect_input_error(
      [&] {
        train({"--vocab_size", "3000000000"});
      },
      {"--vocab_size", "2147483647"});
  expect_input_error(
      [&] {
        train({"--vocab_size", "400", "--model_type", "word2vec"});
      },
      {"--model_type", "bpe or unigram", "word2vec"});
  expect_input_error(
      [&] {
        train({"--vocab_size", "400", "--character_coverage", "1.5"});
      },
      {"--character_coverage"});
  // SentencePiece's own ranges, named by option instead of by its trainer's source line.
  try {
    train({"--vocab_size", "400", "--character_coverage", "0.9"});
    ADD_FAILURE() << "--character_coverage 0.9 accepted";
  } catch (const InputError& e) {  // 0.9 as given, not 0.900000
    EXPECT_TRUE(
        std::string(e.what()).ends_with("--character_coverage: expected a fraction in "
                                        "[0.98, 1], found 0.9"))
        << e.what();
  }
  expect_input_error(
      [&] {
        train({"--vocab_size", "400", "--threads", "200"});
      },
      {"--threads", "up to 128", "200"});
  fs::create_directories(path("blank"));
  write_file(path("blank/a"), "  \n\n");
  expect_input_error(
      [&] {
        run_tokenize(
            {"train", "--input", path("blank"), "--output", path("m"), "--vocab_size", "400"});
      },
      {"--input", "empty or blank"});
  EXPECT_FALSE(fs::exists(path("m.model")));
  expect_input_error(
      [&] {
        run_tokenize(
            {"encode", "--input", path("t.txt"), "--output", path("c"), "--threads", "-1"});
      },
      {"--threads"});
}
