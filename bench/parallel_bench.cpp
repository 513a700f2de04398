// A training step on a TP x DP x PP layout, run under mpirun: ms/step, and the bytes each rank
// sends per step by kind (TP all-reduce, PP send, DP reduction, tied-embedding all-reduce) as
// counted by the group communicators, next to the volume the Megatron formulas predict from
// the model's shape alone (docs/PARALLELISM.md). They agree when the code sends exactly what
// the math needs; the benchmark reports the worst ratio over ranks. Also the peak RSS of the
// largest rank, for the memory-per-layout figures of docs/PERFORMANCE.md.
//   mpirun -n 4 bench_parallel --tp 2 --pp 2   (`bench_parallel --help` lists the options)
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "bench/command_line.h"
#include "core/threads.h"
#include "io/synthetic_corpus.h"
#include "launcher/train_report.h"
#include "launcher/trainer.h"
#include "parallel/mpi_runtime.h"

using namespace tessera;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  int tp = 1, pp = 1, zero = 0, sp = 0, vp = 1, steps = 5, warmup = 2, threads = 1;
  int64_t global = 16, micro = 2;
  std::string shape = "small";
};

// Before MPI starts: --help and bad input end the process on every rank alike.
Options parse(int argc, char** argv) {
  Options o;
  bench::CommandLine cl("bench_parallel",
                        "A training step on a TP x DP x PP layout, under mpirun: ms/step and the "
                        "bytes each rank\nsends per step by kind, against the Megatron formulas.");
  cl.add("tp", o.tp, "tensor-parallel ranks", 1)
      .add("pp", o.pp, "pipeline stages", 1)
      .add("zero", o.zero, "1: ZeRO-1 (optimizer state sharded over DP)", 0, 1)
      .add("sp", o.sp, "1: sequence parallelism", 0, 1)
      .add("vp", o.vp, "model chunks per stage (interleaved 1F1B)", 1)
      .add("shape", o.shape, {"small", "24x1024"}, "the model's shape")
      .add("global", o.global, "global batch (samples per step)", int64_t{1})
      .add("micro", o.micro, "micro-batch", int64_t{1})
      .add("steps", o.steps, "timed steps", 1)
      .add("warmup", o.warmup, "untimed steps first", 0)
      .add("threads", o.threads, "host threads per rank", 1);
  cl.parse(argc, argv);
  return o;
}

ModelConfig shape_of(const std::string& s) {
  ModelConfig c;
  c.vocab_size = 512;
  if (s == "small") {
    c.d_model = 256, c.layers = 8, c.heads = 8, c.d_ff = 1024, c.seq_len = 128;
  } else {  // 24x1024: a model too large to fit comfortably on one small machine
    c.d_model = 1024, c.layers = 24, c.heads = 16, c.d_ff = 4096, c.seq_len = 64;
  }
  return c;
}

// Layers of all this rank's model chunks.
double layers_of(const ModelShard& shard) {
  double n = 0;
  for (const LayerRange& r : shard.chunks) n += static_cast<double>(r.end - r.begin);
  return n;
}

// Bytes this rank sends per step by kind, predicted: [tp, pp, dp, embedding].
std::vector<double> predicted_bytes(const ModelConfig& c, const GridLayout& l, const GridCoord& at,
                                    int64_t micro, int microbatches, bool zero, bool sp, int vp) {
  const double e = 4, b = static_cast<double>(micro), s = static_cast<double>(c.seq_len);
  const double h = static_cast<double>(c.d_model), m = microbatches;
  const bool first = at.pp == 0, last = at.pp == l.pp - 1;
  const ModelShard shard = model_shard(c, l, at, vp);
  const double ring = [](int n) { return n > 1 ? 2.0 * (n - 1) / n : 0.0; }(l.tp);
  // Per layer and microbatch: two all-reduces of b s h forward, two backward (Megatron). With
  // sequence parallelism each is a reduce-scatter and an all-gather (half a ring all-reduce
  // each), and the backward gathers the two LayerNorm outputs again: 10 halves; the LayerNorms'
  // gradients (4 h) are all-reduced.
  const double layers = layers_of(shard);
  double tp = (sp ? 5 : 4) * layers * b * s * h * e + (sp ? layers * 4 * h * e : 0);
  if (first) tp += b * s * h * e;                             // vocab-parallel embedding
  if (last) tp += b * s * h * e + b * s * e + 2 * b * s * 8;  // LM head; cross-entropy max, sums
  if (last && sp) tp += 2 * h * e;                            // the final LayerNorm's gradients
  double tp_broadcast = 0;  // with DP: TP rank 0's replicated values after each update
  if (l.tp > 1 && l.dp > 1) {
    double replicated = 6 * h * layers;  // 2 LayerNorms, 2 biases
    if (first && c.pos == PositionKind::Learned) replicated += s * h;
    if (last) replicated += 2 * h;  // the final LayerNorm
    tp_broadcast = (l.tp - 1.0) / l.tp * replicated * e;
  }
  // Each chunk sends its output on but from the model's last, its input's gradient back but from
  // its first.
  double pp = 0;
  for (int k = 0; k < vp; ++k) {
    const bool embeds = shard.has_embedding && k == 0, heads = shard.has_head && k == vp - 1;
    pp += ((heads ? 0 : 1) + (embeds ? 0 : 1)) * b * s * h * e / (sp ? l.tp : 1);
  }
  const double dp_ring = l.dp > 1 ? 2.0 * (l.dp - 1) / l.dp : 0.0;
  const double dp = dp_ring * static_cast<double>(gpt_shard_params(c, model_shard(c, l, at, vp))) *
                    e;  // all-reduce = reduce-scatter + gather
  // The tied embedding's sum over its two stages (2(2-1)/2 x the buffer), after the DP
  // reduction: with ZeRO-1 of this rank's piece of its bucket. The math's volume: the buffers'
  // padding (to 256-byte boundaries, and to DP x 256 bytes with ZeRO-1) and the larger piece of
  // an uneven vocabulary are not counted in it.
  double emb = 0;
  if (l.pp > 1 && (first || last)) {
    const double shard = static_cast<double>(c.vocab_size) / l.tp * h;
    emb = (zero ? std::ceil(shard / l.dp) : shard) * e;
  }
  return {m * ring * tp + tp_broadcast, m * pp, dp, emb};
}

std::vector<double> measured_bytes(ProcessGrid& g) {
  const double emb = g.embedding() ? g.embedding()->sent_bytes() : 0.0;
  return {g.tp().sent_bytes(), g.pp().sent_bytes(), g.dp().sent_bytes(), emb};
}

void reset(ProcessGrid& g) {
  g.tp().reset_counters(), g.pp().reset_counters(), g.dp().reset_counters();
  if (g.embedding()) g.embedding()->reset_counters();
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  MpiRuntime mpi(&argc, &argv);
  Communicator& world = mpi.world();
  set_cpu_threads(o.threads);

  TrainConfig cfg;
  cfg.model = shape_of(o.shape);
  cfg.parallel.tp = o.tp, cfg.parallel.pp = o.pp, cfg.parallel.zero = o.zero;
  cfg.parallel.sequence_parallel = o.sp == 1;
  cfg.parallel.virtual_stages = o.vp;
  cfg.global_batch = o.global, cfg.micro_batch = o.micro;
  cfg.steps = o.steps + o.warmup, cfg.schedule.total_steps = cfg.steps;
  const std::string prefix = (std::filesystem::temp_directory_path() /
                              ("tessera_bench_corpus_" + std::to_string(cfg.model.vocab_size)))
                                 .string();
  if (world.rank() == 0) write_synthetic_corpus(prefix, cfg.model.vocab_size, 256, 4096, 1);
  world.barrier();
  cfg.data_path = prefix;

  Trainer tr(cfg, world.rank(), world.size());
  tr.start(world);
  std::vector<double> times;
  const int kinds = 4;
  std::vector<double> sent(kinds, 0.0);
  for (int s = 0; s < cfg.steps; ++s) {
    reset(tr.grid());
    world.barrier();
    const auto t0 = Clock::now();
    tr.step();
    world.barrier();
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    sent = measured_bytes(tr.grid());
  }
  std::sort(times.begin() + o.warmup, times.end());
  const double step_ms = 1e3 * times[static_cast<size_t>(o.warmup + o.steps / 2)];
  const std::vector<double> predicted =
      predicted_bytes(cfg.model, tr.layout(), tr.grid().coord(), cfg.micro_batch, tr.microbatches(),
                      cfg.parallel.zero == 1, tr.model().shard().sequence_parallel, o.vp);

  // Every rank's [measured, predicted] per kind, and its peak RSS, gathered on rank 0.
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  Tensor mine({2 * kinds + 1}, DType::F64), all({world.size() * (2 * kinds + 1)}, DType::F64);
  for (int k = 0; k < kinds; ++k) {
    mine.data<double>()[k] = sent[static_cast<size_t>(k)];
    mine.data<double>()[kinds + k] = predicted[static_cast<size_t>(k)];
  }
  mine.data<double>()[2 * kinds] = static_cast<double>(ru.ru_maxrss) * 1024.0;
  world.all_gather(all, mine);
  if (world.rank() != 0) return 0;

  const GridLayout& l = tr.layout();
  std::printf(
      "shape %s (%lld parameters), %s%s%s, %d microbatch%s of %lld, ZeRO %d, %d thread%s\n",
      o.shape.c_str(), static_cast<long long>(gpt_num_params(cfg.model)), l.describe().c_str(),
      tr.model().shard().sequence_parallel ? ", sequence parallel" : "",
      o.vp > 1
          ? std::string(", ").append(std::to_string(o.vp)).append(" model chunks per stage").c_str()
          : "",
      tr.microbatches(), tr.microbatches() == 1 ? "" : "es", static_cast<long long>(o.micro),
      o.zero, o.threads, o.threads == 1 ? "" : "s");
  const char* names[] = {"TP all-reduce (and broadcast)", "PP send", "DP reduction",
                         "embedding all-reduce"};
  std::printf(
      "| kind | max MB sent per rank per step | predicted MB | worst measured/predicted |\n");
  std::printf("| --- | --- | --- | --- |\n");
  const double* a = all.data<double>();
  const int stride = 2 * kinds + 1;
  double peak_rss = 0;
  for (int r = 0; r < world.size(); ++r) peak_rss = std::max(peak_rss, a[r * stride + 2 * kinds]);
  for (int k = 0; k < kinds; ++k) {
    double max_sent = 0, max_pred = 0, worst = 1;
    for (int r = 0; r < world.size(); ++r) {
      const double got = a[r * stride + k], want = a[r * stride + kinds + k];
      max_sent = std::max(max_sent, got), max_pred = std::max(max_pred, want);
      if (want > 0 && std::abs(got / want - 1) > std::abs(worst - 1)) worst = got / want;
      if (want == 0 && got > 0) worst = 1e9;
    }
    if (max_pred == 0 && max_sent == 0)
      std::printf("| %s | 0 | 0 | - |\n", names[k]);
    else
      std::printf("| %s | %.3f | %.3f | %.4f |\n", names[k], max_sent / 1e6, max_pred / 1e6, worst);
  }
  const RankMemory estimate = largest_rank_memory(cfg, l);
  std::printf(
      "step %.1f ms (median of %d); peak RSS of the largest rank %.0f MB; estimate of the largest "
      "rank's tensors %.0f MB (docs/PARALLELISM.md, \"Memory per rank\")\n",
      step_ms, o.steps, peak_rss / 1e6,
      static_cast<double>(estimate.state + estimate.activations) / 1e6);
  return 0;
}
