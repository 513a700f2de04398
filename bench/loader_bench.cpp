// The data path's speed (docs/PERFORMANCE.md, "Data"): the time to open a corpus, check its
// token ids (every token) and read the first sample of a shuffled epoch; the time of one lookup
// in the epoch's shuffle; and the loader's throughput in tokens per second from the page cache,
// reading on the caller's thread and through the prefetch thread; and what a resume pays to find
// the blend's place: walking a blend of K corpora to a position, or starting from the saved one;
// and the open's walk over the index, alone and as one of 8 ranks sharing it.
// `bench_loader --help` lists the options.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "bench/command_line.h"
#include "io/data_loader.h"
#include "io/indexed_dataset.h"
#include "io/sample_permutation.h"
#include "io/token_corpus.h"

using namespace tessera;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A corpus of `tokens` uint16 ids in documents of `doc_tokens` tokens, written once and reused.
std::string corpus_of(const std::string& dir, int64_t tokens, int64_t doc_tokens) {
  std::string prefix = dir + "/bench_" + std::to_string(tokens);
  if (doc_tokens != 1000) prefix += "_docs_of_" + std::to_string(doc_tokens);
  if (std::filesystem::exists(prefix + ".idx")) return prefix;
  std::filesystem::create_directories(dir);
  IndexedDatasetWriter w(prefix, DType::U16);
  std::vector<int32_t> doc(static_cast<size_t>(doc_tokens));
  uint64_t x = 1;
  for (int64_t done = 0; done < tokens; done += static_cast<int64_t>(doc.size())) {
    doc.resize(static_cast<size_t>(std::min<int64_t>(doc_tokens, tokens - done)));
    for (auto& t : doc) t = static_cast<int32_t>((x = x * 6364136223846793005ULL + 1) >> 49);
    w.add_document(doc);
  }
  w.finish();
  return prefix;
}

// Anonymous resident memory of this process in MB (/proc/self/status RssAnon): what the loader
// holds itself, leaving out the mapped corpus pages, which belong to the page cache.
double anon_rss_mb() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  double kb = -1;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "RssAnon: %lf kB", &kb) == 1) break;
  std::fclose(f);
  return kb / 1024.0;
}

// Tokens per second that next_batch hands out over `seconds`.
double throughput(DataLoader& loader, int64_t tokens_per_batch, double seconds) {
  Tensor batch;
  loader.next_batch(batch);  // warm up: thread started, first order built
  int64_t tokens = 0;
  const auto t0 = Clock::now();
  while (since(t0) < seconds) {
    for (int i = 0; i < 64; ++i) loader.next_batch(batch);
    tokens += 64 * tokens_per_batch;
  }
  return static_cast<double>(tokens) / since(t0);
}

}  // namespace

int main(int argc, char** argv) {
  double tokens = 1e9;
  int64_t seq_len = 1024, micro = 8, doc_tokens = 1000;
  std::string dir = "/tmp/tessera_bench_data";
  bench::CommandLine cl("bench_loader",
                        "The data path's speed: opening a corpus, the shuffle, the loader's "
                        "throughput, a resume's\nwalk through a blend, the index walk.");
  cl.add("tokens", tokens, "tokens of the corpus written (once) under --dir", 1.0)
      .add("seq_len", seq_len, "tokens per sample", int64_t{1})
      .add("micro", micro, "samples per micro-batch", int64_t{1})
      .add("doc_tokens", doc_tokens, "tokens per document", int64_t{1})
      .add("dir", dir, "where the corpus is kept");
  cl.parse(argc, argv);
  auto t0 = Clock::now();
  const std::string prefix = corpus_of(dir, static_cast<int64_t>(tokens), doc_tokens);
  std::printf("corpus %s: %.3g tokens, ready in %.1f s\n", prefix.c_str(), tokens, since(t0));

  SampleOptions o;
  o.seq_len = seq_len;
  o.seed = 1;
  o.vocab_size = 65536;  // each sample's ids checked, as in training
  t0 = Clock::now();
  TokenCorpus corpus = TokenCorpus::open(prefix);
  const double open_s = since(t0);
  t0 = Clock::now();
  corpus.check_token_ids(65536);
  const double check_s = since(t0);
  std::vector<int32_t> row(static_cast<size_t>(seq_len + 1));
  t0 = Clock::now();
  SampleStream cached({corpus}, {1.0}, o);
  cached.read(0, 0, row.data());  // the first sample of epoch 0: nothing is built before it
  const double first_s = since(t0);
  // The shuffle alone: positions of an epoch of this many samples, looked up one by one.
  const int64_t n = cached.samples_of(0), lookups = std::min<int64_t>(n, 10000000);
  const SamplePermutation order(n, o.seed, SampleStream::epoch_stream(0, 0));
  t0 = Clock::now();
  volatile int64_t sink = 0;  // keeps the lookups
  for (int64_t j = 0; j < lookups; ++j) sink = sink + order(j);
  const double lookup_s = since(t0);
  std::printf(
      "| open | id check (all tokens) | first sample (%lld in the epoch) | shuffle lookup |\n",
      static_cast<long long>(n));
  std::printf("| --- | --- | --- | --- |\n| %.3f s | %.3f s | %.6f s | %.0f ns |\n", open_s,
              check_s, first_s, 1e9 * lookup_s / static_cast<double>(lookups));

  // The walk over the index alone (no token read): by one rank, and by the slowest of 8 ranks
  // sharing it (each opens with its part; here one after the other, each timed alone). Best of 5.
  int64_t sequences = 0;
  const auto best_open = [&](int part, int parts) {
    double best = 1e30;
    for (int i = 0; i < 5; ++i) {
      const auto t = Clock::now();
      const IndexedDataset ds = IndexedDataset::open(prefix, part, parts);
      best = std::min(best, since(t));
      sequences = ds.num_sequences();
    }
    return best;
  };
  double slowest_part = 0;
  for (int part = 0; part < 8; ++part) slowest_part = std::max(slowest_part, best_open(part, 8));
  const double alone = best_open(0, 1);
  std::printf("| index walk (%lld sequences) | alone | shared by 8 ranks (slowest part) |\n",
              static_cast<long long>(sequences));
  std::printf("| --- | --- | --- |\n| | %.4f s | %.4f s |\n", alone, slowest_part);

  const int64_t per_batch = micro * (seq_len + 1);
  DataLoader direct(cached, 0, 1, micro, 0);
  const double direct_tps = throughput(direct, per_batch, 3.0);
  SampleStream s2({corpus}, {1.0}, o);
  DataLoader ahead(s2, 0, 1, micro, 8);
  const double ahead_tps = throughput(ahead, per_batch, 3.0);
  std::printf("| loader | tokens/s (batches of %lld x %lld) |\n| --- | --- |\n",
              static_cast<long long>(micro), static_cast<long long>(seq_len + 1));
  std::printf(
      "| caller's thread | %.0f M |\n| prefetch thread (as next_batch sees it) | %.0f M |\n",
      direct_tps / 1e6, ahead_tps / 1e6);
  std::printf("anonymous resident memory after all of it: %.0f MB (the corpus: %.0f MB mapped)\n",
              anon_rss_mb(), static_cast<double>(corpus.num_tokens()) * 2 / 1e6);

  // The blend's place at a position: K corpora (the one corpus K times, weights 1..K).
  std::printf(
      "| blend of K corpora | walk to position P (cursor_at) | per position and corpus | "
      "from the saved place (cursor_from) |\n| --- | --- | --- | --- |\n");
  for (const int K : {2, 100, 1000}) {
    std::vector<TokenCorpus> copies(static_cast<size_t>(K), corpus);
    std::vector<double> weights;
    for (int k = 1; k <= K; ++k) weights.push_back(k);
    const SampleStream blend(copies, weights, o);
    const int64_t P = 200000000 / K;
    t0 = Clock::now();
    const SampleStream::Cursor at = blend.cursor_at(P);
    const double walk_s = since(t0);
    t0 = Clock::now();
    const SampleStream::Cursor again = blend.cursor_from(P, at.taken, "bench");
    const double from_s = since(t0);
    std::printf("| %d | %.3f s (P = %lld) | %.2f ns | %.1f us%s |\n", K, walk_s,
                static_cast<long long>(P), 1e9 * walk_s / (static_cast<double>(P) * K),
                1e6 * from_s, again.taken == at.taken ? "" : " (DIFFERS)");
  }
  return 0;
}
