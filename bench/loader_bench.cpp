// The data path's speed (docs/PERFORMANCE.md, "Data"): the time to open a corpus and build its
// sample index (the token-id check over every token, then one epoch's shuffled order, then the
// same order read back from the cache), and the loader's throughput in tokens per second from
// the page cache, reading on the caller's thread and through the prefetch thread.
//   bench_loader [--tokens 1e9] [--seq_len 1024] [--micro 8] [--dir /tmp/tessera_bench_data]
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "io/data_loader.h"
#include "io/indexed_dataset.h"
#include "io/token_corpus.h"

using namespace tessera;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// A corpus of `tokens` uint16 ids in documents of 1000 tokens, written once and reused.
std::string corpus_of(const std::string& dir, int64_t tokens) {
  const std::string prefix = dir + "/bench_" + std::to_string(tokens);
  if (std::filesystem::exists(prefix + ".idx")) return prefix;
  std::filesystem::create_directories(dir);
  IndexedDatasetWriter w(prefix, DType::U16);
  std::vector<int32_t> doc(1000);
  uint64_t x = 1;
  for (int64_t done = 0; done < tokens; done += static_cast<int64_t>(doc.size())) {
    doc.resize(static_cast<size_t>(std::min<int64_t>(1000, tokens - done)));
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
  int64_t seq_len = 1024, micro = 8;
  std::string dir = "/tmp/tessera_bench_data";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--tokens")
      tokens = std::stod(v);
    else if (k == "--seq_len")
      seq_len = std::stoll(v);
    else if (k == "--micro")
      micro = std::stoll(v);
    else if (k == "--dir")
      dir = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  auto t0 = Clock::now();
  const std::string prefix = corpus_of(dir, static_cast<int64_t>(tokens));
  std::printf("corpus %s: %.3g tokens, ready in %.1f s\n", prefix.c_str(), tokens, since(t0));

  const std::string cache = dir + "/cache";
  std::filesystem::remove_all(cache);
  std::filesystem::create_directories(cache);
  SampleOptions o;
  o.seq_len = seq_len;
  o.seed = 1;
  o.cache_dir = cache;
  t0 = Clock::now();
  TokenCorpus corpus = TokenCorpus::open(prefix);
  const double open_s = since(t0);
  t0 = Clock::now();
  corpus.check_token_ids(65536);
  const double check_s = since(t0);
  std::vector<int32_t> row(static_cast<size_t>(seq_len + 1));
  t0 = Clock::now();
  SampleStream built({corpus}, {1.0}, o);
  built.read(0, 0, row.data());  // builds and caches epoch 0's order
  const double build_s = since(t0);
  t0 = Clock::now();
  SampleStream cached({corpus}, {1.0}, o);
  cached.read(0, 0, row.data());  // reads it back
  const double cached_s = since(t0);
  std::printf("| open | id check (all tokens) | order build (%lld samples) | order from cache |\n",
              static_cast<long long>(built.samples_of(0)));
  std::printf("| --- | --- | --- | --- |\n| %.3f s | %.3f s | %.3f s | %.3f s |\n", open_s, check_s,
              build_s, cached_s);

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
  return 0;
}
