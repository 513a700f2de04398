// The data path from corpus files to batches: both corpus formats behind TokenCorpus, id checks
// before training, samples tiling the token stream, per-epoch shuffles, disjoint and covering
// data-parallel shares, blend proportions at every prefix, the validation split, the shuffle
// computed per position, prefetching that changes nothing, and resuming at the exact next batch.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <set>
#include <utility>

#include "core/error.h"
#include "io/data_loader.h"
#include "io/indexed_dataset.h"
#include "io/llmc_shard.h"
#include "io/sample_permutation.h"
#include "io/token_corpus.h"
#include "tests/expect_error.h"
#include "tests/temp_dir.h"

namespace fs = std::filesystem;

namespace tessera {
namespace {

class Loader : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = test_support::fresh_test_dir("tessera_loader"); }
  void TearDown() override { fs::remove_all(dir_); }

  // A Megatron corpus whose token at stream position i is (i * 7 + offset) % 1000, so a read
  // tells where it came from.
  std::string megatron(const std::string& name, int64_t tokens, int offset = 0) {
    const std::string prefix = (dir_ / name).string();
    IndexedDatasetWriter w(prefix, DType::U16);
    std::vector<int32_t> doc;
    for (int64_t i = 0; i < tokens; ++i) {
      doc.push_back(static_cast<int32_t>((i * 7 + offset) % 1000));
      if (doc.size() == 37 || i + 1 == tokens) {
        w.add_document(doc);
        doc.clear();
      }
    }
    w.finish();
    return prefix;
  }

  SampleStream stream(const std::vector<std::string>& paths, std::vector<double> weights,
                      SampleOptions o) {
    std::vector<TokenCorpus> corpora;
    for (const auto& p : paths) corpora.push_back(TokenCorpus::open(p));
    return SampleStream(corpora, std::move(weights), o);
  }

  fs::path dir_;
};

SampleOptions options(int64_t seq_len, uint64_t seed = 5) {
  SampleOptions o;
  o.seq_len = seq_len;
  o.seed = seed;
  return o;
}

std::vector<int32_t> rows_of(DataLoader& l, int batches) {
  std::vector<int32_t> out;
  Tensor t;
  for (int i = 0; i < batches; ++i) {
    l.next_batch(t);
    out.insert(out.end(), t.data<int32_t>(), t.data<int32_t>() + t.numel());
  }
  return out;
}

TEST(CorpusBlend, ParsesOnePathOrWeightedPairsAndNormalises) {
  EXPECT_EQ(parse_corpus_blend("data/a", "--data.path").size(), 1u);
  const auto b = parse_corpus_blend("0.7 a  0.7 b", "--data.path");
  ASSERT_EQ(b.size(), 2u);
  EXPECT_DOUBLE_EQ(b[0].weight, 0.5);
  EXPECT_EQ(b[1].path, "b");
  const auto spaced = parse_corpus_blend("1 \"my data/a\" 3 b", "--data.path");
  ASSERT_EQ(spaced.size(), 2u);
  EXPECT_EQ(spaced[0].path, "my data/a");
  EXPECT_DOUBLE_EQ(spaced[1].weight, 0.75);
  EXPECT_EQ(parse_corpus_blend("\"my data\\a\"", "--data.path").at(0).path, "my data\\a");
  // Weights whose sum overflows a double keep their proportions (they were all 0).
  const auto huge = parse_corpus_blend("1e308 a 1.5e308 b", "--data.path");
  EXPECT_DOUBLE_EQ(huge.at(0).weight, 0.4);
  EXPECT_DOUBLE_EQ(huge.at(1).weight, 0.6);
  // The smallest share a blend can draw from, and exponents, are accepted.
  EXPECT_NO_THROW(parse_corpus_blend("1e-15 a 1 b 2E+0 c", "--data.path"));
}

TEST(CorpusBlend, MalformedTextNamesTheOption) {
  for (const char* bad :
       {"", "0.5 a b", "x a 0.5 b", "a 2", "0x10 a", "inf a", "-1 a 1 b", "0 a 1 b", "\"my data/a",
        "\"\"", "1 \"\"", "0x10 a 1 b", "inf a 1 b", "nan a 1 b", "1e-300 a 1 b"}) {
    try {
      parse_corpus_blend(bad, "--data.path");
      ADD_FAILURE() << "accepted \"" << bad << "\"";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("--data.path"), std::string::npos) << e.what();
    }
  }
  // Each says what to do about it: a weight of 0 is no path with spaces.
  test_support::expect_input_error(
      [] { parse_corpus_blend("0 a 1 b", "--data.path"); },
      {"found \"0\" (a corpus of weight 0 draws no samples: leave it out)"});
  test_support::expect_input_error([] { parse_corpus_blend("1 a x b", "--data.path"); },
                                   {"found \"x\" (a path with spaces goes in double quotes)"});
  // Weights beyond a double's range are weights still, not paths (std::stod throws on them).
  test_support::expect_input_error([] { parse_corpus_blend("1e400 a 1 b", "--data.path"); },
                                   {"expected a positive weight before a, found \"1e400\""});
  test_support::expect_input_error([] { parse_corpus_blend("1e-400 a 1 b", "--data.path"); },
                                   {"found \"1e-400\" (a corpus of weight 0 draws no samples"});
  try {
    parse_corpus_blend("-1 a 1 b", "--data.path");
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()).find("("), std::string::npos) << e.what();
  }
}

// A glob stands for the corpora it matches, sorted by name (a Megatron corpus once, by its .bin
// or .idx), which share its weight by their tokens; paths without weights are all weighted by
// their tokens, as Megatron-LM does.
TEST_F(Loader, GlobsAndPathsWithoutWeightsWeighTheirCorporaByTokens) {
  const std::string a2 = megatron("a_2", 100), a1 = megatron("a_1", 300);
  std::vector<uint16_t> ids(200, 5);
  const std::string shard = (dir_ / "s_1.bin").string();
  write_llmc_shard(shard, ids);
  const auto weights = [](const std::vector<CorpusWeight>& blend) {
    std::vector<TokenCorpus> corpora;
    for (const CorpusWeight& c : blend) corpora.push_back(TokenCorpus::open(c.path));
    return blend_weights(blend, corpora, "--data.path");
  };
  const std::vector<CorpusWeight> glob = parse_corpus_blend((dir_ / "a_*").string(), "--data.path");
  ASSERT_EQ(glob.size(), 2u);
  EXPECT_EQ(glob[0].path, a1);
  EXPECT_EQ(glob[1].path, a2);
  EXPECT_EQ(weights(glob), (std::vector<double>{0.75, 0.25}));
  // A weighted glob beside a weighted corpus: 1 : 1, the glob's half shared 3 : 1.
  const auto mixed =
      parse_corpus_blend("1 " + (dir_ / "a_*.bin").string() + " 1 " + shard, "--data.path");
  ASSERT_EQ(mixed.size(), 3u);
  EXPECT_EQ(weights(mixed), (std::vector<double>{0.375, 0.125, 0.5}));
  // No weights: 300 and 200 tokens.
  const auto listed = parse_corpus_blend(a1 + " " + shard, "--data.path");
  EXPECT_EQ(weights(listed), (std::vector<double>{0.6, 0.4}));
  test_support::expect_input_error(
      [&] { parse_corpus_blend((dir_ / "none_*").string(), "--data.path"); },
      {"--data.path: ", "none_*", "matches no file"});
  // An encode's part files beside the corpora (one under way, or killed) are no corpora.
  std::ofstream(dir_ / "a_3.bin.tmp") << "part";
  std::ofstream(dir_ / "a_3.idx.tmp") << "part";
  EXPECT_EQ(parse_corpus_blend((dir_ / "a_*").string(), "--data.path").size(), 2u);
  test_support::expect_input_error(
      [&] { parse_corpus_blend((dir_ / "a_3*").string(), "--data.path"); },
      {"--data.path: ", "a_3*", "matches only part files (.tmp), no corpus"});
  test_support::expect_input_error([&] { parse_corpus_blend(a1 + " 0.5 " + a2, "--data.path"); },
                                   {"--data.path: ", "found the number 0.5 among paths"});
  // A name that holds glob characters but names a corpus as written is that corpus; so is a
  // single path that reads as a number.
  const std::string bracketed = megatron("b[1]", 100);
  const auto literal = parse_corpus_blend(bracketed, "--data.path");
  ASSERT_EQ(literal.size(), 1u);
  EXPECT_EQ(literal[0].path, bracketed);
  EXPECT_EQ(literal[0].group, -1);
  EXPECT_EQ(parse_corpus_blend("2024", "--data.path").at(0).path, "2024");
  // Two corpora named like numbers, "2023 2024", read as a weight and a path: refused, since
  // 2023 would be left out. Not when the weight names no corpus.
  const fs::path cwd = fs::current_path();
  fs::current_path(dir_);
  megatron("2023", 100), megatron("2024", 100);
  test_support::expect_input_error(
      [&] { parse_corpus_blend("2023 2024", "--data.path"); },
      {"--data.path: \"2023\" reads as the weight of 2024, but it is also a corpus' name",
       "(./2023)"});
  EXPECT_EQ(parse_corpus_blend("2023.5 2024", "--data.path").at(0).path, "2024");
  EXPECT_EQ(parse_corpus_blend("./2023 ./2024", "--data.path").size(), 2u);
  fs::current_path(cwd);
  // A glob's corpus whose share of the blend, by its tokens, is below 2^-53 is refused by name.
  const auto tiny =
      parse_corpus_blend("1e-15 " + (dir_ / "a_*").string() + " 1 " + shard, "--data.path");
  ASSERT_EQ(tiny.size(), 3u);
  EXPECT_NO_THROW(weights(tiny));
  const auto tinier =
      parse_corpus_blend("3e-16 " + (dir_ / "a_*").string() + " 1 " + shard, "--data.path");
  std::vector<TokenCorpus> corpora;
  for (const CorpusWeight& c : tinier) corpora.push_back(TokenCorpus::open(c.path));
  test_support::expect_input_error(
      [&] { blend_weights(tinier, corpora, "--data.path"); },
      {"--data.path: ", a2 + " (matched by " + (dir_ / "a_*").string() + ") gets less than 2^-53"});
}

TEST_F(Loader, BothFormatsReadTheSameTokens) {
  const std::string prefix = megatron("m", 500);
  std::vector<uint16_t> ids(500);
  for (int i = 0; i < 500; ++i) ids[static_cast<size_t>(i)] = static_cast<uint16_t>((i * 7) % 1000);
  const std::string shard = (dir_ / "s.bin").string();
  write_llmc_shard(shard, ids);
  const TokenCorpus a = TokenCorpus::open(prefix), b = TokenCorpus::open(shard);
  EXPECT_EQ(a.format(), "Megatron indexed dataset");
  EXPECT_EQ(b.format(), "llm.c shard");
  EXPECT_EQ(b.num_documents(), -1);
  std::vector<int32_t> x(500), y(500);
  a.read_tokens(0, 500, x.data());
  b.read_tokens(0, 500, y.data());
  EXPECT_EQ(x, y);
}

TEST_F(Loader, TokenIdsOutsideTheVocabularyAreRejectedNamingFileAndPosition) {
  const TokenCorpus c = TokenCorpus::open(megatron("m", 300));
  EXPECT_NO_THROW(c.check_token_ids(1000));
  try {
    c.check_token_ids(500);  // first id >= 500: position 72 holds 504
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(c.path()), std::string::npos) << m;
    // Documents of 37 tokens: 72 is in the second.
    EXPECT_NE(m.find("token 72 (document 1 of 9, counted from 0) has id 504"), std::string::npos)
        << m;
  }
  const std::string prefix = (dir_ / "neg").string();
  {
    IndexedDatasetWriter w(prefix, DType::I32);
    const std::vector<int32_t> doc{1, 2, 3, 4};
    w.add_document(doc);
    w.finish();
  }
  {  // the writer refuses negative ids; another tool's corpus might hold one
    std::fstream bin(prefix + ".bin", std::ios::in | std::ios::out | std::ios::binary);
    const int32_t negative = -3;
    bin.seekp(2 * sizeof(int32_t));
    bin.write(reinterpret_cast<const char*>(&negative), sizeof negative);
  }
  try {
    TokenCorpus::open(prefix).check_token_ids(100);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("token 2 (document 0 of 1, counted from 0) has id -3"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(Loader, SamplesTileTheStreamWithStrideSeqLen) {
  SampleOptions o = options(10);
  o.shuffle = false;
  SampleStream s = stream({megatron("m", 101)}, {1.0}, o);
  EXPECT_EQ(s.samples_of(0), 10);
  std::vector<int32_t> row(11);
  s.read(0, 3, row.data());
  for (int i = 0; i <= 10; ++i) EXPECT_EQ(row[static_cast<size_t>(i)], ((30 + i) * 7) % 1000);
}

TEST_F(Loader, SequenceLongerThanTheCorpusIsRejectedNamingIt) {
  const std::string prefix = megatron("m", 20);
  try {
    stream({prefix}, {1.0}, options(32));
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(prefix), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("33 tokens"), std::string::npos) << e.what();
  }
}

// Each epoch visits every sample once, in an order fixed by the seed and new each epoch.
TEST_F(Loader, EveryEpochIsAPermutationFixedBySeedAndEpoch) {
  const std::string prefix = megatron("m", 1001);
  SampleStream a = stream({prefix}, {1.0}, options(10, 1)),
               b = stream({prefix}, {1.0}, options(10, 1));
  SampleStream c = stream({prefix}, {1.0}, options(10, 2));
  std::vector<int32_t> row(11);
  std::vector<int32_t> e0, e1, seed2;
  for (int64_t j = 0; j < 200; ++j) {
    a.read(0, j, row.data());
    (j < 100 ? e0 : e1).push_back(row[0]);
    b.read(0, j, row.data());
    EXPECT_EQ(row[0], (j < 100 ? e0 : e1).back());
    if (j < 100) {
      c.read(0, j, row.data());
      seed2.push_back(row[0]);
    }
  }
  EXPECT_NE(e0, e1);
  EXPECT_NE(e0, seed2);
  std::set<int32_t> firsts(e0.begin(), e0.end());
  EXPECT_EQ(firsts.size(), 100u);
  EXPECT_EQ(std::set<int32_t>(e1.begin(), e1.end()), firsts);
}

// DP rank r of R reads rows r, r + R, ... of what one rank reads: disjoint, and together all.
TEST_F(Loader, DataParallelSharesAreDisjointAndCoverWhatOneRankReads) {
  const std::string prefix = megatron("m", 5000);
  SampleStream one_s = stream({prefix}, {1.0}, options(16));
  DataLoader one(one_s, 0, 1, 4, 0);
  const std::vector<int32_t> all = rows_of(one, 6);  // 24 rows
  for (int R : {2, 4}) {
    std::vector<std::vector<int32_t>> mine;
    std::vector<std::unique_ptr<SampleStream>> streams;
    for (int r = 0; r < R; ++r) {
      streams.push_back(std::make_unique<SampleStream>(stream({prefix}, {1.0}, options(16))));
      DataLoader l(*streams.back(), r, R, 4 / R, 0);
      mine.push_back(rows_of(l, 6));
    }
    const size_t row = 17;
    for (size_t g = 0; g < 24; ++g) {
      const auto& src = mine[g % static_cast<size_t>(R)];
      const size_t i = g / static_cast<size_t>(R);
      EXPECT_TRUE(std::equal(all.begin() + static_cast<std::ptrdiff_t>(g * row),
                             all.begin() + static_cast<std::ptrdiff_t>((g + 1) * row),
                             src.begin() + static_cast<std::ptrdiff_t>(i * row)))
          << "R " << R << " row " << g;
    }
  }
}

// After every prefix of n positions, corpus k of K has supplied fewer than n w_k + 1 samples and
// more than n w_k - (K - 1) (the bounds a saved cursor is checked against). Within 1 of n w_k is
// not a bound: the six-corpus blend falls 1.05 behind a share at n = 137.
TEST_F(Loader, BlendTracksItsWeightsAtEveryPrefix) {
  for (const std::vector<double>& weights :
       {std::vector<double>{0.7, 0.3}, std::vector<double>{0.5, 0.3, 0.2},
        std::vector<double>{0.01, 0.99}, std::vector<double>{1, 15, 1, 10, 1, 10}}) {
    const size_t K = weights.size();
    std::vector<std::string> paths;
    for (size_t k = 0; k < K; ++k)
      paths.push_back(
          megatron(std::string(1, static_cast<char>('a' + k)), 2000, static_cast<int>(k)));
    SampleStream s = stream(paths, weights, options(8));
    SampleStream::Cursor c;
    double ahead = -1e9, behind = -1e9;
    for (int64_t n = 1; n <= 20000; ++n) {
      s.next_corpus(c);
      for (size_t k = 0; k < K; ++k) {
        const double d = static_cast<double>(c.taken[k]) - s.weight(static_cast<int>(k)) * n;
        ahead = std::max(ahead, d);
        behind = std::max(behind, -d);
      }
    }
    EXPECT_LT(ahead, 1.0) << K << " corpora";
    EXPECT_LT(behind, std::max(1.0, static_cast<double>(K - 1))) << K << " corpora";
    if (K < 6)
      EXPECT_LE(behind, 1.0) << K << " corpora";
    else
      EXPECT_GT(behind, 1.0) << K << " corpora";
    const SampleStream::Cursor at = s.cursor_at(20000);
    EXPECT_EQ(at.taken, c.taken);
  }
}

// The blend's order is part of what a checkpoint resumes into, on any machine: the corpora of the
// first positions, and a digest (FNV-1a) of 20000, must not change with the compiler or the CPU.
// A fused multiply-add in the lag w_k (n + 1) - taken_k (GCC contracts it where the target has
// FMA: aarch64, -march=native) breaks ties the other way; io/CMakeLists.txt turns it off.
TEST_F(Loader, BlendOrderIsTheSameOnEveryMachine) {
  struct Case {
    std::vector<double> weights;
    std::string first;
    uint64_t digest;
  };
  for (const Case& want :
       {Case{{0.7, 0.3}, "0100010010010001001001000100100100010010", 16245576205366870873ull},
        Case{
            {0.1, 0.2, 0.7}, "2122022122212202212221220221222122022122", 8014951396171894615ull}}) {
    std::vector<std::string> paths;
    for (size_t k = 0; k < want.weights.size(); ++k)
      paths.push_back(
          megatron(std::string(1, static_cast<char>('a' + k)), 200, static_cast<int>(k)));
    SampleStream s = stream(paths, want.weights, options(8));
    SampleStream::Cursor c;
    std::string first;
    uint64_t digest = 14695981039346656037ull;
    for (int n = 0; n < 20000; ++n) {
      const int k = s.next_corpus(c);
      if (n < 40) first += static_cast<char>('0' + k);
      digest = (digest ^ static_cast<uint64_t>(k)) * 1099511628211ull;
    }
    EXPECT_EQ(first, want.first) << "weights " << want.weights[0] << " ...";
    EXPECT_EQ(digest, want.digest) << "weights " << want.weights[0] << " ...";
  }
}

TEST_F(Loader, ValidationSplitHoldsOutTheLastSamplesOfEachCorpus) {
  const std::string prefix = megatron("m", 1001);
  SampleOptions o = options(10);
  o.valid_fraction = 0.05;
  SampleStream train = stream({prefix}, {1.0}, o);
  o.valid_split = true;
  o.shuffle = false;
  SampleStream valid = stream({prefix}, {1.0}, o);
  EXPECT_EQ(train.samples_of(0), 95);
  EXPECT_EQ(valid.samples_of(0), 5);
  std::vector<int32_t> row(11);
  std::set<int32_t> train_firsts;
  for (int64_t j = 0; j < 95; ++j) {
    train.read(0, j, row.data());
    train_firsts.insert(row[0]);
  }
  for (int64_t j = 0; j < 5; ++j) {
    valid.read(0, j, row.data());
    EXPECT_EQ(row[0], ((95 + j) * 10 * 7) % 1000);  // sample 95 + j, in order
    EXPECT_EQ(train_firsts.count(row[0]), 0u);
  }
}

// Without weights each corpus weighs its samples in the split (tessera eval's blend): reading as
// many samples as the corpora hold takes each corpus' samples once, none twice.
TEST_F(Loader, WithoutWeightsEachCorpusWeighsItsSamplesAndIsReadOnce) {
  SampleOptions o = options(10);
  o.valid_fraction = 0.1;
  o.valid_split = true;
  o.shuffle = false;
  SampleStream s = stream({megatron("a", 1001), megatron("b", 3001, 3)}, {}, o);
  ASSERT_EQ(s.samples_of(0), 10);
  ASSERT_EQ(s.samples_of(1), 30);
  EXPECT_DOUBLE_EQ(s.weight(0), 0.25);
  EXPECT_DOUBLE_EQ(s.weight(1), 0.75);
  SampleStream::Cursor c;
  std::vector<int64_t> taken(2, 0);
  for (int i = 0; i < 40; ++i) ++taken[static_cast<size_t>(s.next_corpus(c))];
  EXPECT_EQ(taken, (std::vector<int64_t>{10, 30}));
}

// A resumed loader reads exactly what the uninterrupted one reads next, across an epoch
// boundary, with and without prefetching, on every DP rank.
TEST_F(Loader, ResumeReadsTheNextBatchOfAnUninterruptedRun) {
  const std::vector<std::string> paths{megatron("a", 700), megatron("b", 900, 3)};
  for (int prefetch : {0, 3})
    for (int r = 0; r < 2; ++r) {
      SampleStream s1 = stream(paths, {0.6, 0.4}, options(12));
      DataLoader straight(s1, r, 2, 3, prefetch);
      rows_of(straight, 9);
      const LoaderState saved = straight.state();
      EXPECT_EQ(saved.consumed, 9 * 3 * 2);
      EXPECT_EQ(saved.taken, s1.cursor_at(saved.consumed).taken);
      const std::vector<int32_t> next = rows_of(straight, 20);  // crosses both corpora's epochs

      // From the saved cursor, and walking the blend to the position without one.
      for (bool walk : {false, true}) {
        SampleStream s2 = stream(paths, {0.6, 0.4}, options(12));
        DataLoader resumed(s2, r, 2, 3, prefetch);
        resumed.set_state(walk ? LoaderState{saved.consumed, saved.seed, {}} : saved);
        EXPECT_EQ(rows_of(resumed, 20), next) << "prefetch " << prefetch << " rank " << r;
      }
    }
}

// A saved cursor is what a resume reads from (not walked again), and one the blend cannot reach
// at its position is refused.
TEST_F(Loader, ResumeStartsFromTheSavedBlendCursorAndChecksIt) {
  const std::vector<std::string> paths{megatron("a", 700), megatron("b", 900, 3),
                                       megatron("c", 800, 5)};
  const std::vector<double> w{0.5, 0.3, 0.2};
  SampleStream s = stream(paths, w, options(12));
  DataLoader l(s, 0, 1, 3, 0);
  rows_of(l, 11);
  const LoaderState saved = l.state();  // at 33: shares 16.5, 9.9 and 6.6
  ASSERT_EQ(saved.taken, s.cursor_at(33).taken);
  const std::vector<int32_t> next = rows_of(l, 1);
  // One sample moved from the corpus furthest ahead of its share to the one furthest behind:
  // within the blend's bounds, and it changes which samples come next, so a loader that walked
  // would not see it.
  LoaderState moved = saved;
  std::vector<double> behind(3);
  for (size_t k = 0; k < 3; ++k) behind[k] = w[k] * 33 - static_cast<double>(saved.taken[k]);
  --moved.taken[static_cast<size_t>(std::min_element(behind.begin(), behind.end()) -
                                    behind.begin())];
  ++moved.taken[static_cast<size_t>(std::max_element(behind.begin(), behind.end()) -
                                    behind.begin())];
  l.set_state(moved);
  EXPECT_NE(rows_of(l, 1), next);
  l.set_state(saved);
  EXPECT_EQ(rows_of(l, 1), next);
  l.set_state(saved);
  // Another count of corpora, another sum, 2.5 ahead of a share, a negative count.
  for (const std::vector<int64_t>& bad :
       std::vector<std::vector<int64_t>>{{17, 16}, {17, 10, 7}, {19, 8, 6}, {-1, 17, 17}}) {
    try {
      l.set_state(LoaderState{33, saved.seed, bad});
      ADD_FAILURE() << "accepted counts " << ::testing::PrintToString(bad);
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("by position 33"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(rows_of(l, 1), next);  // a refused state changes nothing
}

TEST_F(Loader, PrefetchingChangesNothing) {
  const std::string prefix = megatron("m", 3000);
  SampleStream a = stream({prefix}, {1.0}, options(16)), b = stream({prefix}, {1.0}, options(16));
  DataLoader plain(a, 1, 2, 2, 0), ahead(b, 1, 2, 2, 4);
  EXPECT_EQ(rows_of(plain, 50), rows_of(ahead, 50));
}

// The model's view of a batch: inputs and their next tokens, into tensors of that shape whatever
// the caller held before (a tensor of another shape was written past its end).
TEST_F(Loader, InputsAndTargetsAreTheBatchShiftedByOneToken) {
  const std::string prefix = megatron("m", 3000);
  SampleStream a = stream({prefix}, {1.0}, options(16)), b = stream({prefix}, {1.0}, options(16));
  DataLoader rows(a, 0, 1, 2, 0), cut(b, 0, 1, 2, 0);
  Tensor batch;
  rows.next_batch(batch);
  Tensor inputs({1, 3}, DType::I32), targets({7}, DType::F32);  // neither the right shape nor type
  cut.next_inputs_and_targets(inputs, targets);
  ASSERT_EQ(inputs.shape(), (Shape{2, 16}));
  ASSERT_EQ(targets.shape(), (Shape{2, 16}));
  ASSERT_EQ(targets.dtype(), DType::I32);
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t t = 0; t < 16; ++t) {
      EXPECT_EQ(inputs.data<int32_t>()[r * 16 + t], batch.data<int32_t>()[r * 17 + t]);
      EXPECT_EQ(targets.data<int32_t>()[r * 16 + t], batch.data<int32_t>()[r * 17 + t + 1]);
    }
}

TEST_F(Loader, RestoringAnotherSeedOrAPositionBetweenBatchesIsRejected) {
  SampleStream s = stream({megatron("m", 3000)}, {1.0}, options(16, 9));
  DataLoader l(s, 0, 2, 2, 0);
  EXPECT_THROW(l.set_state(LoaderState{8, 10, {}}), InputError);
  EXPECT_THROW(l.set_state(LoaderState{6, 9, {}}), InputError);
  EXPECT_NO_THROW(l.set_state(LoaderState{8, 9, {}}));
}

// Behind the whole-corpus check before training, each sample read is checked: a corpus changed
// since, or a wrong record of that check, stops the run naming the file and the token.
TEST_F(Loader, SampleWithAnIdBeyondTheVocabularyIsRefusedAsItIsRead) {
  const std::string prefix = megatron("m", 1001);  // ids (7 i) % 1000
  SampleOptions o = options(10);
  o.shuffle = false;
  o.vocab_size = 500;
  SampleStream s = stream({prefix}, {1.0}, o);
  std::vector<int32_t> row(11);
  s.read(0, 0, row.data());  // tokens 0..10: ids 0, 7, ..., 70
  EXPECT_EQ(row[10], 70);
  test_support::expect_input_error(
      [&] { s.read(0, 7, row.data()); },
      {"corpus " + prefix + ".bin: token 72 (document 1 of 28, counted from 0) has id 504",
       "expected ids in [0, --model.vocab_size 500)"});
}

// A stream reads sample first + SamplePermutation(n, seed, epoch_stream(k, epoch))(j % n): the
// order is computed per position, in any order of positions.
TEST_F(Loader, EpochOrdersAreComputedPerPosition) {
  const std::string prefix = megatron("m", 3000);
  const SampleOptions o = options(16);
  SampleStream s = stream({prefix}, {1.0}, o);
  const int64_t n = s.samples_of(0);
  ASSERT_EQ(n, 187);
  const TokenCorpus corpus = TokenCorpus::open(prefix);
  std::vector<int32_t> got(17), want(17);
  for (const int64_t j : {int64_t{3 * 187 + 11}, int64_t{5}, int64_t{186}, int64_t{187}}) {
    const SamplePermutation order(n, o.seed, SampleStream::epoch_stream(0, j / n));
    s.read(0, j, got.data());
    corpus.read_tokens(order(j % n) * 16, 17, want.data());
    EXPECT_EQ(got, want) << "position " << j;
  }
}

// A permutation of [0, n) for sizes at and around powers of 2 (where the domain grows, and its
// halves change widths) and others.
TEST(SamplePermutation, IsAPermutationOfEverySize) {
  for (const int64_t n : {1, 2, 3, 4, 5, 15, 16, 17, 63, 64, 65, 1000, 4095, 4097, 65537, 300007}) {
    const SamplePermutation p(n, 11, 22);
    std::vector<bool> seen(static_cast<size_t>(n), false);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t v = p(j);
      ASSERT_TRUE(v >= 0 && v < n && !seen[static_cast<size_t>(v)]) << "n " << n << " at " << j;
      seen[static_cast<size_t>(v)] = true;
    }
  }
}

// Over 20000 seeds, each position holds each sample, and the first two positions each pair of
// samples, as often as a uniformly random order would: the chi-square sum over the n^2 cells
// (mean n (n - 1) for random orders, each cell a binomial) and over the n (n - 1) pairs stays
// within 4 standard deviations of its mean. Fewer rounds fail it: with 6, n = 5 is 24 of them
// away; with 4, n = 12 and n = 17 are 23 away. Random orders (std::shuffle) are 0.2 to 0.6 away
// on average.
TEST(SamplePermutation, EveryPositionAndPairOfPositionsIsUniformOverSeeds) {
  constexpr int kSeeds = 20000;
  for (const int n : {5, 12, 17, 40, 129}) {
    std::vector<double> at(static_cast<size_t>(n * n), 0), pair(static_cast<size_t>(n * n), 0);
    for (int seed = 0; seed < kSeeds; ++seed) {
      const SamplePermutation p(n, static_cast<uint64_t>(seed), 7);
      for (int j = 0; j < n; ++j) ++at[static_cast<size_t>(j * n + p(j))];
      ++pair[static_cast<size_t>(p(0) * n + p(1))];
    }
    const auto chi2 = [](const std::vector<double>& counts, double expected, bool skip_diagonal,
                         int n) {
      double sum = 0;
      for (size_t i = 0; i < counts.size(); ++i)
        if (!skip_diagonal || i / static_cast<size_t>(n) != i % static_cast<size_t>(n))
          sum += (counts[i] - expected) * (counts[i] - expected) / expected;
      return sum;
    };
    const double dof_at = n * (n - 1.0), dof_pair = n * (n - 1.0) - 1;
    EXPECT_LT(chi2(at, double(kSeeds) / n, false, n), dof_at + 4 * std::sqrt(2 * dof_at)) << n;
    EXPECT_LT(chi2(pair, double(kSeeds) / (n * (n - 1.0)), true, n),
              dof_pair + 4 * std::sqrt(2 * dof_pair))
        << n;
  }
}

// docs/FORMATS.md's "Sample order", written out again from its text alone.
uint64_t doc_mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
uint64_t doc_order(uint64_t n, uint64_t seed, uint64_t stream, uint64_t p) {
  uint64_t key[12];
  for (uint64_t r = 0; r < 12; ++r) key[r] = doc_mix64(seed ^ doc_mix64(stream ^ doc_mix64(r)));
  int b = 2;
  while (b < 63 && (uint64_t{1} << b) < n) ++b;
  const int hi = b / 2, lo = b - hi;
  const auto encrypt = [&](uint64_t x) {
    uint64_t a = x >> lo, low = x & ((uint64_t{1} << lo) - 1);
    int wa = hi, wb = lo;
    for (const uint64_t k : key) {
      const uint64_t next = a ^ (doc_mix64(low ^ k) & ((uint64_t{1} << wa) - 1));
      a = low;
      low = next;
      std::swap(wa, wb);
    }
    return (a << wb) | low;
  };
  uint64_t x = encrypt(p);
  while (x >= n) x = encrypt(x);
  return x;
}

// The code computes the documented order, also where the halves are widest (2^32 + 1 samples:
// 17 and 16 bits; 2^63 - 1: 31 and 32), at positions spread over the epoch.
TEST(SamplePermutation, IsTheDocumentedOrderForEverySizeUpTo2To63) {
  const uint64_t stream = SampleStream::epoch_stream(2, 7);
  for (const int64_t n : {int64_t{3}, int64_t{5000}, int64_t{1000003}, (int64_t{1} << 32) + 1,
                          std::numeric_limits<int64_t>::max()}) {
    const SamplePermutation p(n, 99, stream);
    for (int64_t i = 0; i < 200; ++i) {
      const auto at = static_cast<int64_t>(static_cast<uint64_t>(n) / 200 * i + i % 3) % n;
      const int64_t got = p(at);
      ASSERT_TRUE(got >= 0 && got < n) << n << " at " << at;
      ASSERT_EQ(static_cast<uint64_t>(got),
                doc_order(static_cast<uint64_t>(n), 99, stream, static_cast<uint64_t>(at)))
          << n << " at " << at;
    }
  }
}

// The order is part of what a checkpoint resumes (its /meta/data key names the shuffle): integer
// arithmetic only, the same on every machine, and pinned here for a domain of 20 bits (halves of
// 10 and 10) and one of 13 (6 and 7), against docs/FORMATS.md's first values.
TEST(SamplePermutation, IsTheSameOnEveryMachine) {
  struct Case {
    int64_t n;
    std::vector<int64_t> first;
    uint64_t digest;
  };
  for (const Case& want :
       {Case{1000003,
             {8936, 833445, 701674, 987972, 545773, 857884, 139139, 262394},
             17886605378912412745u},
        Case{5000, {3673, 732, 1374, 355, 1967, 2644, 1549, 2420}, 15614358106496367056u}}) {
    const SamplePermutation p(want.n, 1337, SampleStream::epoch_stream(0, 0));
    std::vector<int64_t> first;
    uint64_t digest = 0;
    for (int64_t j = 0; j < want.n; ++j) {
      if (j < 8) first.push_back(p(j));
      digest = digest * 1000003u + static_cast<uint64_t>(p(j));
    }
    EXPECT_EQ(first, want.first) << want.n;
    EXPECT_EQ(digest, want.digest) << want.n;
    EXPECT_NE(SamplePermutation(want.n, 1338, SampleStream::epoch_stream(0, 0))(0), first[0]);
    EXPECT_NE(SamplePermutation(want.n, 1337, SampleStream::epoch_stream(0, 1))(0), first[0]);
    EXPECT_NE(SamplePermutation(want.n, 1337, SampleStream::epoch_stream(1, 0))(0), first[0]);
  }
}

}  // namespace
}  // namespace tessera
