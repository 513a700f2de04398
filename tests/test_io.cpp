// Tests of the io layer: byte tokenizer, Megatron indexed dataset (byte layout and rejection of
// bad corpora), text readers, the batch loader's sharding and determinism, the metrics sink and
// the `tokenize` command. Every test works in its own temporary directory.
#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/program_options/errors.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/batch_loader.h"
#include "io/byte_tokenizer.h"
#include "io/indexed_dataset.h"
#include "io/metrics.h"
#include "io/text_files.h"
#include "launcher/tokenize_command.h"

namespace fs = std::filesystem;
using namespace tessera;

namespace {

class IoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("tessera_test_io_" + std::to_string(::getpid()) + "_" +
                                        info->test_suite_name() + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

template <typename T>
T load(const std::vector<uint8_t>& bytes, size_t offset) {
  T v;
  std::memcpy(&v, bytes.data() + offset, sizeof v);
  return v;
}

template <typename T>
void store(std::vector<uint8_t>& bytes, size_t offset, T v) {
  std::memcpy(bytes.data() + offset, &v, sizeof v);
}

void make_corpus(const std::string& prefix, const std::vector<std::vector<int32_t>>& docs,
                 DType dtype = DType::U16) {
  IndexedDatasetWriter writer(prefix, dtype);
  for (const auto& d : docs) writer.add_document(d);
  writer.finish();
}

// A corpus whose token at stream position i is i (so a sample's first token names it).
void make_counting_corpus(const std::string& prefix, int64_t tokens) {
  std::vector<int32_t> ids(static_cast<size_t>(tokens));
  std::iota(ids.begin(), ids.end(), 0);
  const size_t half = ids.size() / 2;
  make_corpus(prefix, {std::vector<int32_t>(ids.begin(), ids.begin() + half),
                       std::vector<int32_t>(ids.begin() + half, ids.end())});
}

// Runs fn, expects an InputError whose message contains every one of `parts`.
void expect_input_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected an InputError";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << msg << "\nlacks: " << p;
  }
}

int run_tokenize(std::vector<std::string> args) {
  args.insert(args.begin(), "tokenize");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return tokenize_command(static_cast<int>(argv.size()), argv.data());
}

std::vector<std::vector<int32_t>> take_batches(BatchLoader& loader, int n, int64_t batch) {
  std::vector<std::vector<int32_t>> out;
  Tensor t;
  for (int i = 0; i < n; ++i) {
    loader.next_batch(batch, t);
    out.emplace_back(t.data<int32_t>(), t.data<int32_t>() + t.numel());
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Byte tokenizer

TEST(ByteTokenizer, RoundTripsEveryByteString) {
  std::string text = "Hello, wörld!\n";
  for (int b = 0; b < 256; ++b) text += static_cast<char>(b);
  const auto ids = ByteTokenizer::encode(text);
  ASSERT_EQ(ids.size(), text.size());
  EXPECT_EQ(ids[0], 'H');
  EXPECT_EQ(ids.back(), 255);
  EXPECT_EQ(ByteTokenizer::decode(ids), text);
  EXPECT_EQ(kByteVocab, 257);
}

TEST(ByteTokenizer, DecodeShowsEndOfDocumentAndRejectsOtherIds) {
  const std::vector<int32_t> ids{'a', kEndOfDocument, 'b'};
  EXPECT_EQ(ByteTokenizer::decode(ids), "a\n<|endoftext|>\nb");
  EXPECT_EQ(ByteTokenizer::decode(ids, ""), "ab");
  const std::vector<int32_t> bad{'a', 257};
  expect_input_error([&] { ByteTokenizer::decode(bad); }, {"token 1", "257"});
}

// ---------------------------------------------------------------------------------------------
// Indexed dataset: byte layout

TEST_F(IoTest, IdxLayoutMatchesMegatronByteForByte) {
  const std::string prefix = path("tiny");
  make_corpus(prefix, {{1, 2, 3}, {4, 5}}, token_dtype_for_vocab(kByteVocab));
  const auto idx = read_bytes(prefix + ".idx");
  ASSERT_EQ(idx.size(), 34u + 2 * 4 + 2 * 8 + 3 * 8);
  EXPECT_EQ(std::memcmp(idx.data(), "MMIDIDX\0\0", 9), 0);
  EXPECT_EQ(load<uint64_t>(idx, 9), 1u);   // version
  EXPECT_EQ(idx[17], 8);                   // uint16
  EXPECT_EQ(load<uint64_t>(idx, 18), 2u);  // sequences
  EXPECT_EQ(load<uint64_t>(idx, 26), 3u);  // document indices
  EXPECT_EQ(load<int32_t>(idx, 34), 3);    // sizes
  EXPECT_EQ(load<int32_t>(idx, 38), 2);
  EXPECT_EQ(load<int64_t>(idx, 42), 0);  // byte pointers
  EXPECT_EQ(load<int64_t>(idx, 50), 6);
  EXPECT_EQ(load<int64_t>(idx, 58), 0);  // document indices
  EXPECT_EQ(load<int64_t>(idx, 66), 1);
  EXPECT_EQ(load<int64_t>(idx, 74), 2);
  const std::vector<uint8_t> bin_expected{1, 0, 2, 0, 3, 0, 4, 0, 5, 0};
  EXPECT_EQ(read_bytes(prefix + ".bin"), bin_expected);
}

TEST_F(IoTest, Int32TokensWhenVocabularyReaches65500) {
  EXPECT_EQ(token_dtype_for_vocab(257), DType::U16);
  EXPECT_EQ(token_dtype_for_vocab(65499), DType::U16);
  EXPECT_EQ(token_dtype_for_vocab(65500), DType::I32);
  const std::string prefix = path("wide");
  make_corpus(prefix, {{70000, 1}, {65535}}, token_dtype_for_vocab(100000));
  const auto idx = read_bytes(prefix + ".idx");
  EXPECT_EQ(idx[17], 4);                 // int32
  EXPECT_EQ(load<int64_t>(idx, 42), 0);  // byte pointers
  EXPECT_EQ(load<int64_t>(idx, 50), 8);
  EXPECT_EQ(read_bytes(prefix + ".bin").size(), 12u);
  const IndexedDataset ds = IndexedDataset::open(prefix);
  EXPECT_EQ(ds.dtype(), DType::I32);
  EXPECT_EQ(ds.token(0), 70000);
  EXPECT_EQ(ds.token(2), 65535);
}

TEST_F(IoTest, ReaderReturnsTheConcatenatedStream) {
  const std::string prefix = path("c");
  make_corpus(prefix, {{10, 11, 12}, {}, {13, 14}, {15}});
  const IndexedDataset ds = IndexedDataset::open(prefix);
  EXPECT_EQ(ds.num_sequences(), 4);
  EXPECT_EQ(ds.num_documents(), 4);
  EXPECT_EQ(ds.num_tokens(), 6);
  EXPECT_EQ(ds.dtype(), DType::U16);
  EXPECT_EQ(ds.sequence_length(2), 2);
  EXPECT_EQ(ds.sequence_start(3), 5);
  int32_t out[4];
  ds.read_tokens(2, 4, out);
  EXPECT_EQ(std::vector<int32_t>(out, out + 4), (std::vector<int32_t>{12, 13, 14, 15}));
  EXPECT_EQ(ds.document_of_token(2), 0);
  EXPECT_EQ(ds.document_of_token(3), 2);  // document 1 is empty
  EXPECT_EQ(ds.document_of_token(5), 3);
}

TEST_F(IoTest, WriterExposesFilesOnlyWhenFinished) {
  const std::string prefix = path("atomic");
  {
    IndexedDatasetWriter writer(prefix, DType::U16);
    writer.add_document(std::vector<int32_t>{1, 2});
    EXPECT_TRUE(fs::exists(prefix + ".bin.tmp"));
    EXPECT_FALSE(fs::exists(prefix + ".bin"));
    EXPECT_FALSE(fs::exists(prefix + ".idx"));
  }  // abandoned without finish()
  EXPECT_FALSE(fs::exists(prefix + ".bin.tmp"));
  EXPECT_FALSE(fs::exists(prefix + ".bin"));
  IndexedDatasetWriter writer(prefix, DType::U16);
  expect_input_error([&] { writer.add_document(std::vector<int32_t>{65536}); },
                     {prefix + ".bin", "65536", "uint16"});
}

// ---------------------------------------------------------------------------------------------
// Indexed dataset: bad inputs

class CorruptCorpus : public IoTest {
 protected:
  void SetUp() override {
    IoTest::SetUp();
    prefix_ = path("bad");
    make_corpus(prefix_, {{1, 2, 3}, {4, 5}});
    idx_ = read_bytes(prefix_ + ".idx");
  }
  void expect_rejected(const std::string& file, const std::vector<std::string>& parts) {
    std::vector<std::string> all{file};
    all.insert(all.end(), parts.begin(), parts.end());
    expect_input_error([&] { IndexedDataset::open(prefix_); }, all);
  }
  std::string prefix_;
  std::vector<uint8_t> idx_;
};

TEST_F(CorruptCorpus, WrongMagic) {
  idx_[0] = 'X';
  write_bytes(prefix_ + ".idx", idx_);
  expect_rejected(prefix_ + ".idx", {"magic", "XMIDIDX"});
}

TEST_F(CorruptCorpus, UnknownVersion) {
  store<uint64_t>(idx_, 9, 2);
  write_bytes(prefix_ + ".idx", idx_);
  expect_rejected(prefix_ + ".idx", {"expected version 1", "found version 2"});
}

TEST_F(CorruptCorpus, UnknownDtypeCode) {
  idx_[17] = 9;
  write_bytes(prefix_ + ".idx", idx_);
  expect_rejected(prefix_ + ".idx", {"unknown code 9"});
  idx_[17] = 5;
  write_bytes(prefix_ + ".idx", idx_);
  expect_rejected(prefix_ + ".idx", {"code 5 (int64)"});
}

TEST_F(CorruptCorpus, CountsThatDoNotFitTheFile) {
  store<uint64_t>(idx_, 18, uint64_t{1} << 62);
  write_bytes(prefix_ + ".idx", idx_);
  expect_rejected(prefix_ + ".idx", {"sequences", "found a file of 82 bytes"});
  idx_.resize(40);
  write_bytes(prefix_ + ".idx", idx_);
  expect_rejected(prefix_ + ".idx", {"found a file of 40 bytes"});
}

TEST_F(CorruptCorpus, PointersInconsistentWithSizes) {
  store<int64_t>(idx_, 50, 8);
  write_bytes(prefix_ + ".idx", idx_);
  expect_rejected(prefix_ + ".idx", {"pointer of sequence 1 is 8, expected 6"});
}

TEST_F(CorruptCorpus, BadDocumentIndices) {
  store<int64_t>(idx_, 74, 1);
  write_bytes(prefix_ + ".idx", idx_);
  expect_rejected(prefix_ + ".idx", {"document indices"});
}

TEST_F(CorruptCorpus, TruncatedOrOverlongBin) {
  fs::resize_file(prefix_ + ".bin", 9);
  expect_rejected(prefix_ + ".bin", {"expected 10 bytes", "found 9 bytes", "truncated"});
  fs::resize_file(prefix_ + ".bin", 12);
  expect_rejected(prefix_ + ".bin", {"found 12 bytes", "longer"});
  fs::remove(prefix_ + ".bin");
  expect_rejected(prefix_ + ".bin", {"no such file"});
}

TEST_F(IoTest, MissingCorpusNamesTheIdxAndTheFix) {
  const std::string prefix = path("nothing");
  expect_input_error([&] { IndexedDataset::open(prefix); },
                     {prefix + ".idx", "no such file", "tessera tokenize encode"});
  make_corpus(path("real"), {{1, 2}});
  expect_input_error([&] { IndexedDataset::open(path("real.bin")); },
                     {"real.bin.idx", "without .bin"});
}

TEST_F(IoTest, EmptyCorpusIsRejected) {
  make_corpus(path("none"), {});
  expect_input_error([&] { IndexedDataset::open(path("none")); },
                     {path("none.idx"), "empty corpus"});
  make_corpus(path("blank"), {{}, {}});
  expect_input_error([&] { IndexedDataset::open(path("blank")); },
                     {path("blank.idx"), "empty corpus", "2 sequences"});
}

TEST_F(IoTest, UnigramEntropyInNats) {
  make_corpus(path("h"), {{0, 0, 1}, {1}});
  const IndexedDataset ds = IndexedDataset::open(path("h"));
  EXPECT_NEAR(unigram_entropy(ds, 2), std::log(2.0), 1e-12);
  expect_input_error([&] { unigram_entropy(ds, 1); }, {path("h.bin"), "token 2", "has id 1"});
}

// ---------------------------------------------------------------------------------------------
// Text files

TEST(TextFiles, SplitsFortuneEntriesAtPercentLines) {
  const auto entries = split_fortunes("one\nline\n%\ntwo 100%\n%\n%\nthree");
  ASSERT_EQ(entries.size(), 4u);
  EXPECT_EQ(entries[0], "one\nline\n");
  EXPECT_EQ(entries[1], "two 100%\n");
  EXPECT_EQ(entries[2], "");
  EXPECT_EQ(entries[3], "three");
  EXPECT_EQ(split_fortunes("no separator\n%%\n"), std::vector<std::string>{"no separator\n%%\n"});
}

TEST(TextFiles, RemovesBackspaceOverstriking) {
  EXPECT_EQ(remove_overstrike("_\bI and B\bBold and x\b_"), "I and Bold and x");
  EXPECT_EQ(remove_overstrike("this is ____\b\b\b\bLAST time\nnext"), "this is LAST time\nnext");
  EXPECT_EQ(remove_overstrike("*_\b_\b_\bhad*"), "*had*");
  EXPECT_EQ(remove_overstrike("\bstart\n\bline"), "start\nline");  // never crosses a line start
  EXPECT_EQ(remove_overstrike("plain"), "plain");
}

TEST_F(IoTest, ReadsDirectoriesSkippingIndexFilesAndSymlinks) {
  fs::create_directories(path("f"));
  write_text(path("f/b"), "second file, one document\n");
  write_text(path("f/a"), "first\n%\n_\bbold\n%\n  \n%\nthird\n");
  write_text(path("f/a.dat"), "binary index");
  write_text(path("f/a.u8"), "u8 link");
  fs::create_symlink(path("f/b"), path("f/link"));
  fs::create_directories(path("f/sub"));
  write_text(path("single"), "a plain file");
  const auto docs = read_documents({path("f"), path("single")});
  const std::vector<std::string> expected{"first\n", "bold\n", "third\n",
                                          "second file, one document\n", "a plain file"};
  EXPECT_EQ(docs, expected);
  expect_input_error(
      [&] {
        read_documents({path("f"), path("missing")});
      },
      {path("missing"), "no such file"});
  fs::create_directories(path("empty"));
  expect_input_error([&] { read_documents({path("empty")}); }, {path("empty"), "found none"});
}

TEST(TextFiles, ReadsTheFortunePackageWhenInstalled) {
  const std::string dir = "/usr/share/games/fortunes";
  if (!fs::is_directory(dir)) GTEST_SKIP() << dir << " not installed (apt-get install fortunes)";
  const auto docs = read_documents({dir});
  EXPECT_GT(docs.size(), 1000u);
  for (const auto& d : docs) {
    ASSERT_EQ(d.find('\b'), std::string::npos) << d;
    ASSERT_EQ(d.find("\n%\n"), std::string::npos) << d;
  }
}

// ---------------------------------------------------------------------------------------------
// Batch loader

TEST_F(IoTest, SamplesAreOverlappingWindowsOfTheStream) {
  make_counting_corpus(path("n"), 4 * 50 + 3);  // 50 samples of seq_len 4, 2 spare tokens
  const IndexedDataset ds = IndexedDataset::open(path("n"));
  BatchLoader loader(ds, 4, 1000, 7);
  EXPECT_EQ(loader.num_samples(), 50);
  Tensor t;
  loader.next_batch(3, t);
  ASSERT_EQ(t.shape(), (Shape{3, 5}));
  ASSERT_EQ(t.dtype(), DType::I32);
  const int32_t* p = t.data<int32_t>();
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(p[r * 5] % 4, 0);
    for (int k = 0; k < 5; ++k) EXPECT_EQ(p[r * 5 + k], p[r * 5] + k);
  }
}

TEST_F(IoTest, DataParallelSharesAreDisjointAndCoverTheEpoch) {
  make_counting_corpus(path("n"), 4 * 48 + 1);  // 48 samples
  const IndexedDataset ds = IndexedDataset::open(path("n"));
  for (int dp : {1, 2, 4}) {
    std::multiset<int32_t> seen;
    for (int rank = 0; rank < dp; ++rank) {
      BatchLoader loader(ds, 4, 1000, 3, rank, dp);
      for (const auto& b : take_batches(loader, 48 / dp / 4, 4))
        for (size_t r = 0; r < b.size(); r += 5) seen.insert(b[r] / 4);
      EXPECT_EQ(loader.epoch(), 0);
      EXPECT_EQ(loader.position(), 48);
    }
    EXPECT_EQ(seen.size(), 48u) << "dp " << dp;
    EXPECT_EQ(std::set<int32_t>(seen.begin(), seen.end()).size(), 48u) << "dp " << dp;
  }
  // 48 samples over 5 ranks: 45 per epoch, the same 45 positions of the shuffle on all ranks.
  BatchLoader uneven(ds, 4, 1000, 3, 0, 5);
  EXPECT_EQ(uneven.samples_per_epoch(), 45);
}

TEST_F(IoTest, LoaderIsDeterministicPerSeedAndReshufflesEachEpoch) {
  make_counting_corpus(path("n"), 4 * 40 + 1);
  const IndexedDataset ds = IndexedDataset::open(path("n"));
  BatchLoader a(ds, 4, 1000, 11), b(ds, 4, 1000, 11), c(ds, 4, 1000, 12);
  const auto ba = take_batches(a, 20, 4);  // two epochs of 40 samples
  EXPECT_EQ(ba, take_batches(b, 20, 4));
  EXPECT_NE(ba, take_batches(c, 20, 4));
  EXPECT_EQ(a.epoch(), 1);
  std::vector<int64_t> epoch0, epoch1;
  for (int64_t g = 0; g < 40; ++g) epoch0.push_back(a.sample_at(0, g));
  for (int64_t g = 0; g < 40; ++g) epoch1.push_back(a.sample_at(1, g));
  EXPECT_NE(epoch0, epoch1);
  std::sort(epoch1.begin(), epoch1.end());
  std::vector<int64_t> all(40);
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(epoch1, all);
}

TEST_F(IoTest, LoaderResumesFromItsState) {
  make_counting_corpus(path("n"), 4 * 30 + 1);
  const IndexedDataset ds = IndexedDataset::open(path("n"));
  BatchLoader straight(ds, 4, 1000, 5, 1, 2);
  take_batches(straight, 4, 4);  // 32 global samples: into epoch 1
  BatchLoader resumed(ds, 4, 1000, 5, 1, 2);
  resumed.set_state(straight.epoch(), straight.position());
  EXPECT_EQ(take_batches(resumed, 3, 4), take_batches(straight, 3, 4));
  expect_input_error([&] { resumed.set_state(0, 3); }, {"multiple of 2", "position 3"});
}

TEST_F(IoTest, LoaderRejectsOutOfVocabularyTokensAndTinyCorpora) {
  make_corpus(path("v"), {{1, 2, 3, 4}, {5, 300, 7, 8}});
  const IndexedDataset ds = IndexedDataset::open(path("v"));
  BatchLoader loader(ds, 2, 257, 1);
  Tensor t;
  expect_input_error([&] { loader.next_batch(3, t); },
                     {path("v.bin"), "token 5", "document 1", "has id 300", "257"});
  expect_input_error([&] { BatchLoader(ds, 8, 257, 1); },
                     {path("v"), "8 tokens", "expected at least seq_len + 1 = 9"});
}

// ---------------------------------------------------------------------------------------------
// Metrics

TEST_F(IoTest, MetricsAreJsonLinesThatRoundTrip) {
  const std::string file = path("metrics.jsonl");
  {
    MetricsWriter m(file);
    m.write(12, {{"loss", 5.123456789}, {"lr", 3e-4}, {"grad_norm", NAN}, {"x", -INFINITY}});
  }
  MetricsWriter again(file);  // appends
  again.write(13, {{"loss", 0.1 + 0.2}, {"tokens_per_s", 1e20}});
  const auto bytes = read_bytes(file);
  EXPECT_EQ(std::string(bytes.begin(), bytes.end()),
            "{\"step\": 12, \"loss\": 5.123456789, \"lr\": 0.0003, \"grad_norm\": null, "
            "\"x\": null}\n"
            "{\"step\": 13, \"loss\": 0.30000000000000004, \"tokens_per_s\": 1e+20}\n");
  EXPECT_EQ(metrics_json(1, {{"a\"b", 1.0}}), "{\"step\": 1, \"a\\\"b\": 1}");
  expect_input_error([&] { MetricsWriter(path("no/such/dir/metrics.jsonl")); },
                     {path("no/such/dir/metrics.jsonl"), "cannot open"});
}

// ---------------------------------------------------------------------------------------------
// tokenize command

TEST_F(IoTest, TokenizeEncodeDecodeRoundTrip) {
  write_text(path("t.txt"), "first entry\n%\nsecond \xff entry\n");
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(run_tokenize({"encode", "--input", path("t.txt"), "--output", path("out/c")}), 0);
  const std::string summary = ::testing::internal::GetCapturedStdout();
  EXPECT_NE(summary.find("2 documents, 29 tokens"), std::string::npos) << summary;
  EXPECT_NE(summary.find("nats/token"), std::string::npos) << summary;
  const IndexedDataset ds = IndexedDataset::open(path("out/c"));
  EXPECT_EQ(ds.token(12), kEndOfDocument);
  EXPECT_EQ(run_tokenize({"decode", "--input", path("out/c"), "--output", path("back.txt")}), 0);
  const auto back = read_bytes(path("back.txt"));
  EXPECT_EQ(std::string(back.begin(), back.end()),
            "first entry\n\n<|endoftext|>\nsecond \xff entry\n\n<|endoftext|>\n");
  EXPECT_EQ(run_tokenize({"decode", "--input", path("out/c"), "--output", path("head.txt"),
                          "--max_tokens", "5"}),
            0);
  const auto head = read_bytes(path("head.txt"));
  EXPECT_EQ(std::string(head.begin(), head.end()), "first");
}

TEST_F(IoTest, TokenizeRejectsBadOptions) {
  write_text(path("t.txt"), "text");
  expect_input_error(
      [&] {
        run_tokenize({"encode", "--input", path("t.txt"), "--output", path("c"),
                      "--tokenizer.model", "m.model"});
      },
      {"--tokenizer.model", "not supported yet"});
  EXPECT_THROW(run_tokenize({"encode", "--input", path("t.txt"), "--bogus", "1"}),
               boost::program_options::error);
  EXPECT_THROW(run_tokenize({"encode", "--input", path("t.txt")}), boost::program_options::error);
  expect_input_error([&] { run_tokenize({"frobnicate"}); }, {"frobnicate"});
  expect_input_error(
      [&] {
        run_tokenize({"encode", "--input", path("absent"), "--output", "x"});
      },
      {path("absent")});
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(run_tokenize({"encode", "--help"}), 0);
  EXPECT_NE(::testing::internal::GetCapturedStdout().find("--input"), std::string::npos);
}
