// Tests of the io layer: byte tokenizer, Megatron indexed dataset (byte layout and rejection of
// bad corpora), llm.c token shards (round trip and rejection of bad shards), text readers, the
// metrics sink and the `tokenize` command (the loader has tests/test_loader.cpp). Every test
// works in its own temporary directory.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/program_options/errors.hpp>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <numeric>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/byte_tokenizer.h"
#include "io/cache_file.h"
#include "io/indexed_dataset.h"
#include "io/llmc_shard.h"
#include "io/metrics.h"
#include "io/text_files.h"
#include "io/token_corpus.h"
#include "launcher/plot_command.h"
#include "launcher/progress.h"
#include "launcher/tokenize_command.h"
#include "tests/expect_error.h"

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

// Corpus PREFIX of two documents (ids 1 to 5), its ids checked against a vocabulary of 10 with
// records in CACHE (made): the one record's path, or an empty path when there is not one.
fs::path checked_corpus_record(const std::string& prefix, const std::string& cache) {
  fs::create_directories(cache);
  make_corpus(prefix, {{1, 2, 3}, {4, 5}});
  TokenCorpus::open(prefix).check_token_ids(10, cache);
  std::vector<fs::path> records;
  for (const auto& e : fs::directory_iterator(cache)) records.push_back(e.path());
  return records.size() == 1 ? records[0] : fs::path();
}

using test_support::expect_input_error;

int run_tokenize(std::vector<std::string> args) {
  args.insert(args.begin(), "tokenize");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return tokenize_command(static_cast<int>(argv.size()), argv.data());
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

// A corpus file rewritten in place (shorter) while it is mapped: a read of its lost pages ends
// the process with exit code 2 and one line naming the file, not a bus error. A bus error of
// anything else is left as it was.
TEST_F(IoTest, ACorpusThatShrinksWhileMappedIsNamed) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::string prefix = path("shrinks");
  make_corpus(prefix, {std::vector<int32_t>(100000, 7)}, DType::I32);  // 400 KB: many pages
  EXPECT_EXIT(
      {
        const TokenCorpus c = TokenCorpus::open(prefix);
        if (::truncate((prefix + ".bin").c_str(), 0) != 0) std::_Exit(1);
        int32_t out[1];
        c.read_tokens(99999, 1, out);
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(2),
      // The child runs the test again (threadsafe style), in a directory of its own process id.
      "^tessera: error: /.*/shrinks\\.bin: the file became shorter while tessera read it");
  EXPECT_EXIT(
      {
        const TokenCorpus c = TokenCorpus::open(prefix);
        std::raise(SIGBUS);
        std::_Exit(0);
      },
      ::testing::KilledBySignal(SIGBUS), "");
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
  EXPECT_THROW(ds.read_tokens(1, std::numeric_limits<int64_t>::max(), out), InternalError);
  EXPECT_EQ(ds.document_of_token(2), 0);
  EXPECT_EQ(ds.document_of_token(3), 2);  // document 1 is empty
  EXPECT_EQ(ds.document_of_token(5), 3);
}

// The id that ends a corpus's documents, when every document read ends with the same one: empty
// documents are passed over, and the documents read are spread evenly, the first and the last
// among them.
TEST_F(IoTest, DocumentEndIdIsTheOneEveryDocumentEndsWith) {
  const auto end_of = [&](const std::vector<std::vector<int32_t>>& docs, int64_t max = 256) {
    fs::remove(path("e.idx"));
    fs::remove(path("e.bin"));
    make_corpus(path("e"), docs);
    return TokenCorpus::open(path("e")).document_end_id(max);
  };
  const IndexedDataset ds = [&] {
    make_corpus(path("d"), {{10, 256}, {}, {13, 256}, {256}});
    return IndexedDataset::open(path("d"));
  }();
  EXPECT_EQ(ds.document_last_token(0), 1);
  EXPECT_EQ(ds.document_last_token(1), -1);
  EXPECT_EQ(ds.document_last_token(2), 3);
  EXPECT_EQ(ds.document_last_token(3), 4);
  EXPECT_EQ(TokenCorpus::open(path("d")).document_end_id(), 256);
  EXPECT_EQ(end_of({{10, 256}, {13, 2}}), std::nullopt);
  EXPECT_EQ(end_of({{1, 2, 256}}), std::nullopt);  // one document tells nothing
  EXPECT_EQ(end_of({{1, 256}, {}, {}}), std::nullopt);
  // Of 10 documents, 3 read: 0, 4 and 9.
  std::vector<std::vector<int32_t>> docs(10, std::vector<int32_t>{5, 7});
  docs[1] = {5, 8};
  EXPECT_EQ(end_of(docs, 3), 7);
  EXPECT_EQ(end_of(docs, 10), std::nullopt);
  docs[1] = {5, 7};
  docs[9] = {5, 8};
  EXPECT_EQ(end_of(docs, 3), std::nullopt);
  // An llm.c shard has no documents.
  write_llmc_shard(path("shard.bin"), std::vector<uint16_t>{1, 50256, 2, 50256});
  EXPECT_EQ(TokenCorpus::open(path("shard.bin")).document_end_id(), std::nullopt);
}

// A second writer of a prefix being written (two encodes into one output) is refused, naming the
// part file, and takes nothing from the first, which finishes its corpus whole.
TEST_F(IoTest, SecondWriterOfAPrefixIsRefusedAndTheFirstFinishes) {
  const std::string prefix = path("shared");
  {
    IndexedDatasetWriter first(prefix, DType::U16);
    first.add_document(std::vector<int32_t>{1, 2, 3});
    expect_input_error([&] { IndexedDatasetWriter second(prefix, DType::U16); },
                       {"corpus " + prefix + ".bin.tmp: exists already", "another"});
    first.add_document(std::vector<int32_t>{4});
    first.finish();
  }
  EXPECT_EQ(IndexedDataset::open(prefix).num_tokens(), 4);
  // The index's part file too: another writer's is neither overwritten nor removed.
  {
    IndexedDatasetWriter late(prefix, DType::U16);
    late.add_document(std::vector<int32_t>{5});
    std::ofstream(prefix + ".idx.tmp") << "another writer's";
    expect_input_error([&] { late.finish(); }, {"corpus " + prefix + ".idx.tmp: exists already"});
  }
  EXPECT_FALSE(fs::exists(prefix + ".bin.tmp"));
  EXPECT_TRUE(fs::exists(prefix + ".idx.tmp"));
  EXPECT_EQ(IndexedDataset::open(prefix).num_tokens(), 4);
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
  // Right ends, wrong order: the message says what is wrong with them.
  store<int64_t>(idx_, 74, 2);
  store<int64_t>(idx_, 66, 5);
  write_bytes(prefix_ + ".idx", idx_);
  expect_rejected(prefix_ + ".idx", {"found 0 .. 2, not rising"});
}

TEST_F(CorruptCorpus, TruncatedOrOverlongBin) {
  fs::resize_file(prefix_ + ".bin", 9);
  expect_rejected(prefix_ + ".bin", {"expected 10 bytes", "found 9 bytes", "truncated"});
  fs::resize_file(prefix_ + ".bin", 12);
  expect_rejected(prefix_ + ".bin", {"found 12 bytes", "longer"});
  fs::remove(prefix_ + ".bin");
  expect_rejected(prefix_ + ".bin", {"no such file"});
}

// The ranks of a run share the walk over an index, each checking its part of the entries
// against the ones before: together they refuse exactly what one walk refuses (a part that finds
// the fault says which entries it read), and when none refuses each counts the corpus' tokens.
TEST_F(CorruptCorpus, RanksSharingTheWalkRefuseWhatOneWalkRefuses) {
  // The fixture's corpus ({1, 2, 3}, {4, 5}) with a wrong pointer: the part holding sequence 1
  // names it.
  store<int64_t>(idx_, 50, 8);
  write_bytes(prefix_ + ".idx", idx_);
  // A SharedInputError: a data error, whose message does not name a machine.
  test_support::expect_error<SharedInputError>(
      [&] { IndexedDataset::open(prefix_, 1, 2); },
      {prefix_ + ".idx", "pointer of sequence 1 is 8, expected 6",
       "; the ranks share this check, this one read sequences [1, 2) of 2"},
      "SharedInputError");
  // Eight sequences (two of them empty), one per document; each of 400 damaged copies
  // (an entry of the sizes, pointers or document indices set to another value) is judged by 1,
  // 2, 3, 5 and 16 parts (more parts than entries: some have none).
  const std::string prefix = path("many");
  make_corpus(prefix, {{1, 2, 3}, {}, {4}, {5, 6}, {7, 8, 9, 10}, {11}, {}, {12, 13}});
  const std::vector<uint8_t> good = read_bytes(prefix + ".idx");
  const int64_t seqs = load<int64_t>(good, 18), docs = load<int64_t>(good, 26);
  ASSERT_EQ(seqs, 8);
  const int64_t whole = IndexedDataset::open(prefix).num_tokens();
  ASSERT_EQ(whole, 13);
  std::mt19937_64 rng(7);
  int refused = 0;
  for (int trial = 0; trial <= 400; ++trial) {
    std::vector<uint8_t> bytes = good;
    if (trial > 0) {  // trial 0: the good index
      const int64_t entry = static_cast<int64_t>(rng() % static_cast<uint64_t>(2 * seqs + docs));
      const int64_t value = static_cast<int64_t>(rng() % 40) - 4;
      if (entry < seqs)
        store<int32_t>(bytes, static_cast<size_t>(34 + 4 * entry), static_cast<int32_t>(value));
      else if (entry < 2 * seqs)  // a pointer in bytes: mostly even, as real ones are
        store<int64_t>(bytes, static_cast<size_t>(34 + 4 * seqs + 8 * (entry - seqs)),
                       value % 3 == 0 ? value + 1 : 2 * value);
      else
        store<int64_t>(bytes, static_cast<size_t>(34 + 12 * seqs + 8 * (entry - 2 * seqs)),
                       value / 3);
    }
    write_bytes(prefix + ".idx", bytes);
    bool one_refuses = false;
    try {
      ASSERT_EQ(IndexedDataset::open(prefix).num_tokens(), whole);  // the .bin's size holds it
    } catch (const InputError&) {
      one_refuses = true;
    }
    refused += one_refuses ? 1 : 0;
    for (int parts : {2, 3, 5, 16}) {
      bool some_refuses = false;
      for (int part = 0; part < parts; ++part) {
        try {
          EXPECT_EQ(IndexedDataset::open(prefix, part, parts).num_tokens(), whole)
              << "trial " << trial << ", part " << part << " of " << parts;
        } catch (const InputError&) {
          some_refuses = true;
        }
      }
      EXPECT_EQ(some_refuses, one_refuses) << "trial " << trial << ", " << parts << " parts";
    }
  }
  EXPECT_GT(refused, 300);  // most changes break the index; some leave it valid
}

// The id check's progress, for the progress line of a corpus too large to check at once: before
// the pass, then after each block of kIdCheckBlock tokens, up to the bytes of the part read; a
// recorded check reads nothing and says nothing; an id past the first block is still found.
TEST_F(IoTest, TokenIdCheckReportsItsProgressBlockByBlock) {
  const int64_t block = TokenCorpus::kIdCheckBlock;
  std::vector<uint16_t> ids(static_cast<size_t>(2 * block + block / 2), 7);
  write_llmc_shard(path("big.bin"), ids);
  const TokenCorpus big = TokenCorpus::open(path("big.bin"));
  using Heard = std::vector<std::pair<int64_t, int64_t>>;
  Heard heard;
  const auto hear = [&](int64_t done, int64_t total) { heard.emplace_back(done, total); };
  const std::string cache = path("cache");
  fs::create_directories(cache);
  const int64_t bytes = 2 * static_cast<int64_t>(ids.size());
  big.check_token_ids(8, cache, 0, 1, true, hear);
  EXPECT_EQ(heard, (Heard{{0, bytes}, {2 * block, bytes}, {4 * block, bytes}, {bytes, bytes}}));
  // The second of two ranks reads its half: a block and a quarter.
  heard.clear();
  big.check_token_ids(8, "", 1, 2, true, hear);
  EXPECT_EQ(heard, (Heard{{0, bytes / 2}, {2 * block, bytes / 2}, {bytes / 2, bytes / 2}}));
  heard.clear();
  big.check_token_ids(8, cache, 0, 1, true, hear);
  EXPECT_TRUE(heard.empty()) << "a recorded check read " << heard.size() << " blocks";
  ids.back() = 9;
  write_llmc_shard(path("bad.bin"), ids);
  expect_input_error(
      [&] { TokenCorpus::open(path("bad.bin")).check_token_ids(8, "", 0, 1, true, hear); },
      {"token " + std::to_string(ids.size() - 1), "has id 9"});
}

TEST_F(IoTest, MissingCorpusNamesTheIdxAndTheFix) {
  const std::string prefix = path("nothing");
  expect_input_error([&] { IndexedDataset::open(prefix); },
                     {prefix + ".idx", "no such file", "tessera tokenize encode"});
  make_corpus(path("real"), {{1, 2}});
  expect_input_error([&] { IndexedDataset::open(path("real.bin")); },
                     {"real.bin.idx", "give the prefix without .bin: " + path("real")});
  // A Megatron-LM .bin whose .idx is missing: no prefix to suggest, as that one fails too.
  fs::remove(path("real.idx"));
  expect_input_error([&] { IndexedDataset::open(path("real.bin")); },
                     {"real.bin.idx", path("real.bin") + " is not an llm.c shard, and no " +
                                          path("real") + ".idx lies beside it"});
  // An llm.c shard named as a prefix is told to be given by its file name; a Megatron .bin
  // without its .idx is not taken for one.
  expect_input_error([&] { IndexedDataset::open(path("real")); },
                     {path("real.idx") + ": no such file (make one with"});
  write_llmc_shard(path("shard.bin"), std::vector<uint16_t>{1, 2, 3});
  expect_input_error([&] { IndexedDataset::open(path("shard")); },
                     {path("shard") +
                      ".bin is there without an .idx: an llm.c shard is given by "
                      "its file name, " +
                      path("shard") + ".bin"});
  // Something that is there but is not a file is not called missing.
  fs::create_directories(path("folder.idx"));
  expect_input_error([&] { IndexedDataset::open(path("folder")); },
                     {path("folder.idx"), "expected a file, found a directory"});
  ASSERT_EQ(::mkfifo(path("pipe.idx").c_str(), 0600), 0);
  expect_input_error([&] { IndexedDataset::open(path("pipe")); },
                     {path("pipe.idx"), "expected a file, found a FIFO"});
}

TEST_F(IoTest, EmptyCorpusIsRejected) {
  make_corpus(path("none"), {});
  expect_input_error([&] { IndexedDataset::open(path("none")); },
                     {path("none.idx"), "empty corpus"});
  make_corpus(path("blank"), {{}, {}});
  expect_input_error([&] { IndexedDataset::open(path("blank")); },
                     {path("blank.idx"), "empty corpus", "2 sequences"});
}

// The id check of a corpus is recorded in the cache for this version of its token file: a
// second check reads no token (here: an id changed in place behind a restored modification
// time goes unseen, which is what a record trusts), and a file changed again is checked again.
TEST_F(IoTest, TokenIdCheckIsRecordedForEachVersionOfTheFile) {
  const std::string cache = path("cache");
  const fs::path recorded = checked_corpus_record(path("c"), cache);
  ASSERT_FALSE(recorded.empty()) << "expected one record in " << cache;
  std::ifstream in(recorded);
  std::string key, range;
  std::getline(in, key);
  std::getline(in, range);
  EXPECT_NE(key.find(fs::absolute(path("c.bin")).string() + " size 10 inode "), std::string::npos)
      << key;
  EXPECT_EQ(range, "ids 1 .. 5");
  // The record's range is outside this vocabulary: the full check names the position.
  expect_input_error([&] { TokenCorpus::open(path("c")).check_token_ids(5, cache); },
                     {path("c.bin"), "token 4", "has id 5"});

  struct stat before {};
  ASSERT_EQ(::stat(path("c.bin").c_str(), &before), 0);
  {
    std::fstream bin(path("c.bin"), std::ios::in | std::ios::out | std::ios::binary);
    const uint16_t nine = 9;
    bin.seekp(2);
    bin.write(reinterpret_cast<const char*>(&nine), 2);
  }
  const timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, path("c.bin").c_str(), times, 0), 0);
  TokenCorpus::open(path("c")).check_token_ids(6, cache);  // trusted: not read
  const timespec later[2] = {before.st_atim, {before.st_mtim.tv_sec + 1, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path("c.bin").c_str(), later, 0), 0);
  expect_input_error([&] { TokenCorpus::open(path("c")).check_token_ids(6, cache); },
                     {path("c.bin"), "token 1", "has id 9"});
  // Ranks without a record share the pass: part p of 3 reads only its third (6 tokens: two
  // each), and records nothing.
  const std::string shared = path("shared");
  fs::create_directories(shared);
  make_corpus(path("thirds"), {{1, 2, 3, 4, 9, 5}});
  const TokenCorpus thirds = TokenCorpus::open(path("thirds"));
  thirds.check_token_ids(6, shared, 0, 3);
  thirds.check_token_ids(6, shared, 1, 3);  // not token 4
  expect_input_error([&] { thirds.check_token_ids(6, shared, 2, 3); },
                     {"token 4", "has id 9", "this one read tokens [4, 6) of 6"});
  EXPECT_TRUE(fs::is_empty(shared));
  // Without a cache directory, every token is read each time.
  expect_input_error([&] { TokenCorpus::open(path("c")).check_token_ids(6, ""); },
                     {"token 1", "has id 9"});
  // A record spares every part the pass.
  TokenCorpus::open(path("thirds")).check_token_ids(10, shared);
  EXPECT_FALSE(fs::is_empty(shared));
  expect_input_error([&] { TokenCorpus::open(path("thirds")).check_token_ids(6, shared, 0, 3); },
                     {"token 4", "has id 9"});
  // A path of any length keeps the whole key (it was cut at 511 bytes, size and time first).
  const std::string deep =
      path(std::string(200, 'd') + "/" + std::string(200, 'e') + "/" + std::string(200, 'f'));
  fs::create_directories(fs::path(deep).parent_path());
  make_corpus(deep, {{1, 2}});
  const std::string long_cache = path("long_cache");
  fs::create_directories(long_cache);
  TokenCorpus::open(deep).check_token_ids(10, long_cache);
  std::vector<fs::path> long_records;
  for (const auto& e : fs::directory_iterator(long_cache)) long_records.push_back(e.path());
  ASSERT_EQ(long_records.size(), 1u) << "no record of a corpus at a long path";
  std::ifstream record(long_records[0]);
  std::getline(record, key);
  EXPECT_EQ(key.rfind(fs::absolute(deep + ".bin").string() + " size 4 inode ", 0), 0u) << key;
  EXPECT_NE(key.find(" mtime "), std::string::npos) << key;
}

// A record whose range is empty (lo > hi) is damage, not a result: the file is checked again and
// the record rewritten (it was kept, and every run checked every token again).
TEST_F(IoTest, AnIdRecordWithAnEmptyRangeIsReplaced) {
  const std::string cache = path("cache");
  const fs::path record = checked_corpus_record(path("c"), cache);
  ASSERT_FALSE(record.empty()) << "expected one record in " << cache;
  std::string key;
  std::getline(std::ifstream(record), key);
  std::ofstream(record) << key << "\nids 5 .. 3\n";
  TokenCorpus::open(path("c")).check_token_ids(10, cache);
  std::ifstream in(record);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, key);
  std::getline(in, line);
  EXPECT_EQ(line, "ids 1 .. 5");
}

// A cache file is published whole under its name: beside another process's, which it keeps
// (that one may be mapped), or over a damaged one when asked to replace; no temporary remains.
TEST_F(IoTest, CacheFilesArePublishedWholeAndKeepAnotherProcesssFile) {
  const std::string file = path("order.bin");
  const mode_t umask_before = ::umask(022);
  EXPECT_TRUE(publish_cache_file(file, "first", 5, false));
  ::umask(umask_before);
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u) << "others sharing the cache could not read it";
  EXPECT_TRUE(publish_cache_file(file, "other", 5, false));
  std::ifstream in(file);
  std::string text;
  std::getline(in, text);
  EXPECT_EQ(text, "first");
  EXPECT_TRUE(publish_cache_file(file, "fixed", 5, true));
  std::ifstream again(file);
  std::getline(again, text);
  EXPECT_EQ(text, "fixed");
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(path(""))) ++entries;
  EXPECT_EQ(entries, 1);
  EXPECT_FALSE(publish_cache_file(path("no/such/dir/x"), "x", 1, false));
}

// The progress line of the long commands (tokenize encode, ckpt verify, diff, export): done and
// total, rate, the caller's counts and an ETA, one line each time it is due (here at once; in a
// log every 5 s, on a terminal every 0.5 s, rewritten in place); nothing when disabled; the last
// line at the end, when there were lines.
TEST(ProgressLine, SaysDoneTotalRateCountsAndEta) {
  std::fflush(stderr);
  const int saved = ::dup(STDERR_FILENO);
  std::FILE* capture = std::tmpfile();
  ASSERT_TRUE(saved >= 0 && capture != nullptr);
  ::dup2(::fileno(capture), STDERR_FILENO);
  bool due = false, off_due = true;
  {
    ProgressLine line(true, "ckpt verify: CRC-32C", 4000000, std::chrono::milliseconds(0));
    due = line.due();
    line.print(1000000, "3 files");
    line.finish(4000000, "4 files");  // after a line: the last one, at the end
    const ProgressLine off(false, "x", 1, std::chrono::milliseconds(0));
    off_due = off.due();
    ProgressLine quiet(true, "y", 1, std::chrono::hours(1));
    quiet.finish(1, "none printed");  // no line before: none now
    ProgressLine done(true, "z", 2000000, std::chrono::milliseconds(0));
    done.print(2000000, "all");
    done.finish(2000000, "all");  // the last line was at the end already: not again
  }
  std::fflush(stderr);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::rewind(capture);
  std::string text;
  for (int c; (c = std::fgetc(capture)) != EOF;) text += static_cast<char>(c);
  std::fclose(capture);
  EXPECT_TRUE(due);
  EXPECT_FALSE(off_due);
  EXPECT_TRUE(std::regex_match(
      text, std::regex("ckpt verify: CRC-32C: 1\\.0 / 4\\.0 MB, [0-9.]+ MB/s, 3 files, ETA "
                       "[0-9]+ (s|min [0-9]+ s|h [0-9]+ min)\n"
                       "ckpt verify: CRC-32C: 4\\.0 / 4\\.0 MB, [0-9.]+ MB/s, 4 files, ETA 0 s\n"
                       "z: 2\\.0 / 2\\.0 MB, [0-9.]+ MB/s, all, ETA 0 s\n")))
      << text;
}

TEST_F(IoTest, UnigramEntropyInNats) {
  make_corpus(path("h"), {{0, 0, 1}, {1}});
  const TokenCorpus ds = TokenCorpus::open(path("h"));
  EXPECT_NEAR(unigram_entropy({ds}, {1.0}, 2), std::log(2.0), 1e-12);
  expect_input_error([&] { unigram_entropy({ds}, {1.0}, 1); },
                     {path("h.bin"), "token 2", "has id 1"});
  // A corpus larger than max_tokens is counted over that many tokens, in 1024 evenly spread
  // runs (here of 2 tokens, every 4th pair), and reads nothing else: the id 7 at its end, which
  // check_token_ids finds, is never read.
  std::vector<int32_t> alternating(4096);
  for (size_t i = 0; i < alternating.size(); ++i) alternating[i] = static_cast<int32_t>(i % 2);
  alternating.back() = 7;
  make_corpus(path("big"), {alternating});
  const TokenCorpus big = TokenCorpus::open(path("big"));
  EXPECT_NEAR(unigram_entropy({big}, {1.0}, 2, 2048), std::log(2.0), 1e-12);
  const std::vector<int64_t> counts = big.token_counts(2, 2048);
  EXPECT_EQ(counts, (std::vector<int64_t>{1024, 1024}));
  expect_input_error([&] { big.check_token_ids(2); }, {path("big.bin"), "token 4095", "has id 7"});
  // A blend shares the budget by weight: 2048 tokens of each of two such corpora, the 7s unread
  // (each corpus alone would read all its 4096 tokens, and stop at the 7).
  make_corpus(path("big2"), {alternating});
  bool sampled = false;
  EXPECT_NEAR(
      unigram_entropy({big, TokenCorpus::open(path("big2"))}, {1.0, 1.0}, 2, 4096, &sampled),
      std::log(2.0), 1e-12);
  EXPECT_TRUE(sampled);
  unigram_entropy({ds}, {1.0}, 3, 4096, &sampled);
  EXPECT_FALSE(sampled);
}

TEST_F(IoTest, ReadsAnIdxBuiltFromTheSpecification) {
  // Built byte by byte as NOTES.md "Formats" gives Megatron's layout, not by our writer: int32
  // tokens (code 4), three sequences (the middle one empty) in two documents.
  std::vector<uint8_t> idx(34 + 3 * 4 + 3 * 8 + 3 * 8);
  std::memcpy(idx.data(), "MMIDIDX\0\0", 9);
  store<uint64_t>(idx, 9, 1);
  idx[17] = 4;
  store<uint64_t>(idx, 18, 3);
  store<uint64_t>(idx, 26, 3);
  const int32_t sizes[] = {2, 0, 3};
  const int64_t pointers[] = {0, 8, 8}, doc_idx[] = {0, 2, 3};
  for (int i = 0; i < 3; ++i) {
    store<int32_t>(idx, 34 + 4 * i, sizes[i]);
    store<int64_t>(idx, 46 + 8 * i, pointers[i]);
    store<int64_t>(idx, 70 + 8 * i, doc_idx[i]);
  }
  write_bytes(path("spec.idx"), idx);
  std::vector<uint8_t> bin(20);
  const int32_t tokens[] = {70000, 1, 65535, 2, 3};
  for (int i = 0; i < 5; ++i) store<int32_t>(bin, 4 * i, tokens[i]);
  write_bytes(path("spec.bin"), bin);

  const IndexedDataset ds = IndexedDataset::open(path("spec"));
  EXPECT_EQ(ds.dtype(), DType::I32);
  EXPECT_EQ(ds.num_sequences(), 3);
  EXPECT_EQ(ds.num_documents(), 2);
  EXPECT_EQ(ds.num_tokens(), 5);
  EXPECT_EQ(ds.sequence_start(2), 2);
  EXPECT_EQ(ds.document_of_token(1), 0);
  EXPECT_EQ(ds.document_of_token(2), 1);  // sequence 2 opens document 1
  int32_t out[5];
  ds.read_tokens(0, 5, out);
  EXPECT_EQ(std::vector<int32_t>(out, out + 5), std::vector<int32_t>(tokens, tokens + 5));
  EXPECT_EQ(std::memcmp(ds.token_data(), bin.data(), bin.size()), 0);
}

// ---------------------------------------------------------------------------------------------
// llm.c token shards

namespace {

// A shard's bytes as llm.c's write_datafile lays them out, built here independently of
// write_llmc_shard.
std::vector<uint8_t> llmc_bytes(const std::vector<uint16_t>& tokens, int32_t magic = 20240520,
                                int32_t version = 1) {
  std::vector<uint8_t> bytes(1024 + 2 * tokens.size(), 0);
  store<int32_t>(bytes, 0, magic);
  store<int32_t>(bytes, 4, version);
  store<int32_t>(bytes, 8, static_cast<int32_t>(tokens.size()));
  for (size_t i = 0; i < tokens.size(); ++i) store<uint16_t>(bytes, 1024 + 2 * i, tokens[i]);
  return bytes;
}

}  // namespace

TEST_F(IoTest, LlmcShardRoundTrips) {
  const std::vector<uint16_t> tokens{50256, 15496, 11, 995, 0, 65535};
  const std::string file = path("shard_000000.bin");
  write_llmc_shard(file, tokens);
  EXPECT_FALSE(fs::exists(file + ".tmp"));
  EXPECT_EQ(read_bytes(file), llmc_bytes(tokens));  // byte for byte llm.c's layout

  const LlmcShard shard = LlmcShard::open(file);
  EXPECT_EQ(shard.path(), file);
  ASSERT_EQ(shard.num_tokens(), 6);
  EXPECT_EQ(std::vector<uint16_t>(shard.tokens(), shard.tokens() + 6), tokens);
  int32_t out[3];
  shard.read_tokens(3, 3, out);
  EXPECT_EQ(std::vector<int32_t>(out, out + 3), (std::vector<int32_t>{995, 0, 65535}));
  EXPECT_THROW(shard.read_tokens(4, 3, out), InternalError);
  EXPECT_THROW(shard.read_tokens(1, std::numeric_limits<int64_t>::max(), out), InternalError);

  // Copies share the mapping, which lives as long as any of them.
  const LlmcShard copy = shard;
  EXPECT_EQ(copy.tokens(), shard.tokens());
  const LlmcShard kept = [&] {
    const LlmcShard first = LlmcShard::open(file);
    return LlmcShard(first);
  }();
  EXPECT_EQ(kept.tokens()[5], 65535);
}

TEST_F(IoTest, LlmcShardRejectsBadFiles) {
  const std::vector<uint16_t> tokens{1, 2, 3, 4};
  const std::string file = path("bad_shard.bin");
  auto expect_rejected = [&](const std::vector<uint8_t>& bytes,
                             const std::vector<std::string>& parts) {
    write_bytes(file, bytes);
    std::vector<std::string> all{file};
    all.insert(all.end(), parts.begin(), parts.end());
    expect_input_error([&] { LlmcShard::open(file); }, all);
  };

  expect_input_error([&] { LlmcShard::open(path("absent.bin")); },
                     {path("absent.bin"), "no such file"});
  expect_input_error([&] { LlmcShard::open(dir_.string()); }, {dir_.string(), "a directory"});
  auto short_header = llmc_bytes(tokens);
  short_header.resize(1000);
  expect_rejected(short_header, {"expected at least the 1024-byte", "found a file of 1000 bytes"});
  expect_rejected({0x88, 0xd8}, {"expected at least the 1024-byte", "found a file of 2 bytes"});
  expect_rejected(llmc_bytes(tokens, 12345), {"expected magic 20240520", "found 12345"});
  expect_rejected(llmc_bytes(tokens, 20240801, 7), {"found 20240801", "llama-3", "uint32"});
  expect_rejected(llmc_bytes(tokens, 20240520, 2), {"expected version 1", "found 2"});

  auto negative = llmc_bytes(tokens);
  store<int32_t>(negative, 8, -5);
  expect_rejected(negative, {"expected a token count >= 0", "found -5"});
  auto absurd = llmc_bytes(tokens);
  store<int32_t>(absurd, 8, std::numeric_limits<int32_t>::max());
  expect_rejected(absurd, {"expected 4294968318 bytes", "found 1032 bytes", "truncated"});

  auto truncated = llmc_bytes(tokens);
  truncated.pop_back();
  expect_rejected(truncated,
                  {"expected 1032 bytes", "4 tokens x 2", "found 1031 bytes", "truncated"});
  auto trailing = llmc_bytes(tokens);
  trailing.insert(trailing.end(), {9, 9, 9});
  expect_rejected(trailing, {"expected 1032 bytes", "found 1035 bytes", "3 trailing bytes"});
  expect_rejected(llmc_bytes({}), {"empty corpus", "count 0"});

  // A Megatron .idx given where a shard is expected.
  make_corpus(path("mega"), {{1, 2}});
  expect_input_error([&] { LlmcShard::open(path("mega.idx")); },
                     {path("mega.idx"), "expected magic 20240520", "Megatron .idx"});
}

TEST_F(IoTest, IsLlmcShardTellsAShardFromAMegatronCorpus) {
  write_llmc_shard(path("s.bin"), std::vector<uint16_t>{5, 6, 7});
  make_corpus(path("m"), {{5, 6, 7}, {8}});
  EXPECT_TRUE(is_llmc_shard(path("s.bin")));
  EXPECT_FALSE(is_llmc_shard(path("m.bin")));
  EXPECT_FALSE(is_llmc_shard(path("m.idx")));
  EXPECT_FALSE(is_llmc_shard(path("m")));  // a prefix, no file
  EXPECT_FALSE(is_llmc_shard(path("absent.bin")));
  EXPECT_FALSE(is_llmc_shard(dir_.string()));
  write_bytes(path("tiny"), {0x88, 0xd8});  // half a magic
  EXPECT_FALSE(is_llmc_shard(path("tiny")));
  // The magic alone decides: a shard with a broken size is still told apart, and open() says
  // what is wrong with it.
  auto broken = read_bytes(path("s.bin"));
  broken.pop_back();
  write_bytes(path("broken.bin"), broken);
  EXPECT_TRUE(is_llmc_shard(path("broken.bin")));
  // llm.c's llama-3 shard is told apart too, so that open() refuses it by name.
  write_bytes(path("llama.bin"), llmc_bytes({1, 2, 3}, 20240801, 7));
  EXPECT_TRUE(is_llmc_shard(path("llama.bin")));
}

// ---------------------------------------------------------------------------------------------
// Text files

// A text file's documents: entries between lines that hold only "%", each keeping its own line
// endings; a "%" inside a line or "%%" does not separate.
TEST(TextFiles, SplitsFortuneEntriesAtPercentLines) {
  const std::string dir = ::testing::TempDir() + "tessera_fortunes_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  write_text(dir + "/f", "one\nline\n%\ntwo 100%\n%\nthree");
  write_text(dir + "/g", "no separator\n%%\n");
  EXPECT_EQ(read_documents({dir + "/f"}),
            (std::vector<std::string>{"one\nline\n", "two 100%\n", "three"}));
  EXPECT_EQ(read_documents({dir + "/g"}), std::vector<std::string>{"no separator\n%%\n"});
  std::filesystem::remove_all(dir);
}

TEST(TextFiles, RemovesBackspaceOverstriking) {
  EXPECT_EQ(remove_overstrike("_\bI and B\bBold and x\b_"), "I and Bold and x");
  EXPECT_EQ(remove_overstrike("this is ____\b\b\b\bLAST time\nnext"), "this is LAST time\nnext");
  EXPECT_EQ(remove_overstrike("*_\b_\b_\bhad*"), "*had*");
  EXPECT_EQ(remove_overstrike("\bstart\n\bline"), "start\nline");  // never crosses a line start
  EXPECT_EQ(remove_overstrike("plain"), "plain");
}

// A directory's files in byte order of their names, without the fortune package's companions,
// its subdirectories, links that lead nowhere, and second names of one file (a symlink or a hard
// link to another entry); a symlink to a file elsewhere is read.
TEST_F(IoTest, ReadsDirectoriesSkippingIndexFilesAndAliases) {
  fs::create_directories(path("f"));
  write_text(path("f/b"), "second file, one document\n");
  write_text(path("f/a"), "first\n%\n_\bbold\n%\n  \n%\nthird\n");
  write_text(path("f/a.dat"), "binary index");
  write_text(path("f/a.u8"), "u8 link");
  fs::create_symlink(path("f/b"), path("f/link"));
  fs::create_hard_link(path("f/a"), path("f/c"));
  fs::create_symlink("loop", path("f/loop"));
  fs::create_symlink("nowhere", path("f/dangling"));
  write_text(path("elsewhere"), "through a link\n");
  fs::create_symlink(path("elsewhere"), path("f/outside"));
  fs::create_directories(path("f/sub"));
  write_text(path("single"), "a plain file");
  const auto docs = read_documents({path("f"), path("single")});
  const std::vector<std::string> expected{"first\n",          "bold\n",
                                          "third\n",          "second file, one document\n",
                                          "through a link\n", "a plain file"};
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

// The file stays whole lines: a line an earlier run left unfinished is cut when the file is
// opened again, and a write that fails partway (here at RLIMIT_FSIZE, as at a full disk) takes
// back the part of its line that reached the file.
TEST_F(IoTest, MetricsStayWholeLinesAfterAWriteCutShort) {
  const std::string cut = path("cut.jsonl");
  write_text(cut, "{\"step\": 1, \"loss\": 2}\n{\"step\": 2, \"lo" + std::string(100000, '\0'));
  {
    MetricsWriter reopened(cut);  // a line cut short, then zeros (as a lost node may leave it)
    EXPECT_EQ(reopened.cut_bytes(), 100000 + 15);
    reopened.write(3, {{"loss", 0.5}});
  }
  const auto bytes = read_bytes(cut);
  EXPECT_EQ(std::string(bytes.begin(), bytes.end()),
            "{\"step\": 1, \"loss\": 2}\n{\"step\": 3, \"loss\": 0.5}\n");

  const std::string full = path("full.jsonl");
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // 26-byte lines: the fourth line crosses the 100-byte limit
    const rlimit limit{100, 100};
    std::signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &limit) != 0) _exit(10);
    MetricsWriter m(full);
    try {
      for (int step = 1; step <= 9; ++step) m.write(step, {{"loss", 0.25}});
    } catch (const InputError& e) {
      _exit(std::string(e.what()) == "metrics file " + full + ": write failed (File too large)"
                ? 0
                : 11);
    }
    _exit(12);
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: setrlimit failed, 11: another message, 12: no error";
  const auto written = read_bytes(full);
  EXPECT_EQ(written.size(), 3u * 26) << std::string(written.begin(), written.end());

  const std::string unbroken = path("unbroken.jsonl");  // not metrics: left whole
  write_text(unbroken, std::string(100000, 'x'));
  expect_input_error([&] { MetricsWriter{unbroken}; }, {unbroken, "without a line break"});
  EXPECT_EQ(fs::file_size(unbroken), 100000u);
  const std::string zeros = path("zeros.jsonl");  // a first line cut short, then zeros
  write_text(zeros, "{\"step\": 1, \"lo" + std::string(200000, '\0'));
  EXPECT_EQ(MetricsWriter(zeros).cut_bytes(), 200000 + 15);
  EXPECT_EQ(fs::file_size(zeros), 0u);
}

// The text chart puts each column's mean training loss at its row: the highest loss on the top
// row, the lowest on the bottom one, the first step in the first column and the last in the last;
// a validation point is an `o` at its own place.
TEST(PlotChart, PointsLandInTheirRowAndColumn) {
  MetricsSeries s;
  s.steps = {0, 5, 10};
  s.loss = {4.0, 3.0, 2.0};
  s.valid_steps = {10};
  s.valid_loss = {1.0};
  const std::string chart = text_chart(s, 11, 4);  // losses 4 .. 1 over 4 rows: 1 per row
  std::vector<std::string> rows;
  std::istringstream in(chart);
  for (std::string line; std::getline(in, line);) rows.push_back(line);
  ASSERT_EQ(rows.size(), 6u) << chart;  // 4 rows, the axis, the steps
  const auto plot = [&](size_t k) { return rows[k].substr(rows[k].find('|') + 1); };
  EXPECT_EQ(plot(0), "*          ") << chart;
  EXPECT_EQ(plot(1), "     *     ") << chart;
  EXPECT_EQ(plot(2), "          *") << chart;
  EXPECT_EQ(plot(3), "          o") << chart;
  EXPECT_NE(rows[0].find("4 "), std::string::npos) << chart;
  EXPECT_NE(rows[5].find("step 0"), std::string::npos) << chart;
  EXPECT_EQ(rows[5].back(), '0') << chart;  // "10", right-aligned
}

// What a run leaves, and series at the edges: an unfinished last line (a run stopped mid-write)
// is left out and named, a bad line before it is an error naming its line; two losses one ulp
// apart, steps near 2^63 and a narrow chart give a finite chart of a few ticks (these looped,
// or computed NaN coordinates, or threw); the step axis has whole, distinct steps.
TEST_F(IoTest, PlotReadsWhatARunLeftAndDrawsOddSeriesSafely) {
  write_text(path("m.jsonl"),
             "{\"step\": 1, \"loss\": 3}\n{\"step\": 2, \"loss\": 2}\n{\"step\": 3, \"lo" +
                 std::string(50, '\0'));
  const MetricsSeries s = read_metrics(path("m.jsonl"));
  EXPECT_EQ(s.steps, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(s.unfinished_line, 3);
  write_text(path("bad.jsonl"),
             "{\"step\": 1, \"loss\": 3}\n{\"step\": 2, \"lo\n{\"step\": 3, \"loss\": 1}\n");
  expect_input_error([&] { read_metrics(path("bad.jsonl")); },
                     {path("bad.jsonl") + ":2", "expected a JSON object"});
  // Losses near the largest double (a file edited by hand) are not drawn: their range and sums
  // overflowed to inf, and a row index of 2^63 was written, out of the chart.
  std::string huge;
  for (int k = 1; k <= 200; ++k)
    huge +=
        "{\"step\": " + std::to_string(k) + ", \"loss\": " + (k % 2 ? "1e308" : "-1e308") + "}\n";
  write_text(path("huge.jsonl"), huge + "{\"step\": 201, \"loss\": 2}\n");
  const MetricsSeries drawn = read_metrics(path("huge.jsonl"));
  EXPECT_EQ(drawn.steps, (std::vector<int64_t>{201}));
  EXPECT_NE(text_chart(drawn, 20, 5).find('*'), std::string::npos);

  const auto x_labels = [](const std::string& svg) {  // the step axis' labels, at y 418
    std::vector<std::string> labels;
    for (size_t k = svg.find("y=\"418.0\" text-anchor=\"middle\">"); k != std::string::npos;
         k = svg.find("y=\"418.0\" text-anchor=\"middle\">", k + 1)) {
      const size_t from = svg.find('>', k) + 1;
      labels.push_back(svg.substr(from, svg.find('<', from) - from));
    }
    return labels;
  };
  MetricsSeries flat;
  flat.steps = {0, 1, 2, 3, 4, 5};
  flat.loss = {2.5, 2.5000000000000004, 2.5, 2.5, 2.5, 2.5};
  const std::string svg = svg_chart(flat, "flat");
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  const std::regex nan_number("[^a-z]-?nan[^a-z]");  // not the "nan" of "dominant-baseline"
  EXPECT_FALSE(std::regex_search(svg, nan_number)) << svg;
  EXPECT_LT(std::count(svg.begin(), svg.end(), '\n'), 100) << svg;
  EXPECT_EQ(x_labels(svg), (std::vector<std::string>{"0", "1", "2", "3", "4", "5"})) << svg;
  EXPECT_NE(text_chart(flat, 20, 5).find('*'), std::string::npos);

  MetricsSeries far;
  far.steps = {INT64_MAX - 2, INT64_MAX};
  far.loss = {3, 2};
  const std::string far_svg = svg_chart(far, "far");
  EXPECT_FALSE(std::regex_search(far_svg, nan_number)) << far_svg;
  const std::vector<std::string> far_labels = x_labels(far_svg);
  ASSERT_FALSE(far_labels.empty()) << far_svg;
  EXPECT_EQ(far_labels.back(), std::to_string(INT64_MAX)) << far_svg;
  EXPECT_NE(text_chart(far, 10, 3).find(std::to_string(INT64_MAX)), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// tokenize command

TEST_F(IoTest, TokenizeEncodeDecodeRoundTrip) {
  write_text(path("t.txt"), "first entry\n%\nsecond \xff entry\n");
  const int signals[3] = {SIGINT, SIGTERM, SIGHUP};
  struct sigaction before[3] = {}, after[3] = {};
  for (int i = 0; i < 3; ++i) sigaction(signals[i], nullptr, &before[i]);
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(run_tokenize({"encode", "--input", path("t.txt"), "--output", path("out/c")}), 0);
  for (int i = 0; i < 3; ++i) {  // the handler that removes part files is gone again
    sigaction(signals[i], nullptr, &after[i]);
    EXPECT_EQ(after[i].sa_handler, before[i].sa_handler) << signals[i];
  }
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
  expect_input_error(
      [&] {
        run_tokenize({"decode", "--input", path("out/c"), "--max_tokens", "-7"});
      },
      {"--max_tokens", "leave it out for all", "found -7"});
  expect_input_error(
      [&] {
        run_tokenize({"decode", "--input", path("out/c"), "--output", "/dev/full"});
      },
      {"--output /dev/full: writing the text failed (No space left on device)"});
  // An llm.c shard is named as such (the hint used to be a prefix that did not exist either).
  const std::vector<uint16_t> ids = {1, 2, 3};
  write_llmc_shard(path("shard.bin"), ids);
  expect_input_error(
      [&] {
        run_tokenize({"decode", "--input", path("shard.bin")});
      },
      {"--input " + path("shard.bin"), "found an llm.c shard"});
}

// decode --output writes a file whole or not at all: an id beyond the tokenizer found after a
// million good ones (the text of the first chunk already decoded) leaves the file there before,
// and no OUTPUT.tmp.
TEST_F(IoTest, DecodeThatFailsLateKeepsTheOutputThatWasThere) {
  std::vector<int32_t> doc((1 << 20) + 100, 'a');
  doc.back() = 300;  // beyond the byte-level tokenizer's 257 ids
  make_corpus(path("late"), {doc});
  write_text(path("text.txt"), "the text decoded before\n");
  expect_input_error(
      [&] {
        run_tokenize({"decode", "--input", path("late"), "--output", path("text.txt")});
      },
      {"300"});
  const auto kept = read_bytes(path("text.txt"));
  EXPECT_TRUE(std::string(kept.begin(), kept.end()) == "the text decoded before\n")
      << "text.txt was replaced: " << kept.size() << " bytes";
  EXPECT_FALSE(fs::exists(path("text.txt.tmp")));
  // An OUTPUT.tmp there already (another decode's under way, or someone's file) is not taken.
  make_corpus(path("good"), {{'o', 'k'}});
  write_text(path("text.txt.tmp"), "someone's\n");
  expect_input_error(
      [&] {
        run_tokenize({"decode", "--input", path("good"), "--output", path("text.txt")});
      },
      {"--output " + path("text.txt") + ": cannot create " + path("text.txt.tmp") +
       " (File exists"});
  const auto theirs = read_bytes(path("text.txt.tmp"));
  EXPECT_EQ(std::string(theirs.begin(), theirs.end()), "someone's\n");
  fs::remove(path("text.txt.tmp"));
  EXPECT_EQ(run_tokenize({"decode", "--input", path("good"), "--output", path("text.txt")}), 0);
  const auto written = read_bytes(path("text.txt"));
  EXPECT_EQ(std::string(written.begin(), written.end()), "ok");
}

TEST_F(IoTest, TokenizeRejectsBadOptions) {
  write_text(path("t.txt"), "text");
  expect_input_error(
      [&] {
        run_tokenize({"encode", "--input", path("t.txt"), "--output", path("c"),
                      "--tokenizer.model", "m.model"});
      },
      {"--tokenizer.model", "m.model", "no such file"});
  expect_input_error(
      [&] {
        run_tokenize({"encode", "--input", path("t.txt"), "--bogus", "1"});
      },
      {"unrecognised option '--bogus'", "(see tessera tokenize encode --help)"});
  expect_input_error(
      [&] {
        run_tokenize({"encode", "--input", path("t.txt")});
      },
      {"'--output' is required", "(see tessera tokenize encode --help)"});
  expect_input_error([&] { run_tokenize({"frobnicate"}); }, {"frobnicate"});
  expect_input_error(
      [&] {
        run_tokenize({"encode", "--input", path("absent"), "--output", "x"});
      },
      {path("absent")});
  // A thread count no machine has is a typo, not tens of thousands of threads.
  expect_input_error(
      [&] {
        run_tokenize(
            {"encode", "--input", path("t.txt"), "--output", path("c"), "--threads", "50000"});
      },
      {"--threads: expected 0 (all cores) or a count up to 1024, found 50000"});
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(run_tokenize({"encode", "--help"}), 0);
  EXPECT_NE(::testing::internal::GetCapturedStdout().find("--input"), std::string::npos);
}
