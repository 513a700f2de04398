// The checkpoint of a trainer: which blocks each rank writes and reads, the train state, and the
// commit protocol around io/checkpoint_io.h.
#include "launcher/checkpointing.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/number_text.h"
#include "core/ops/cast.h"
#include "core/profile.h"
#include "io/checkpoint_io.h"
#include "io/crc32c.h"
#include "io/durable_file.h"
#include "launcher/checkpoint_choice.h"
#include "launcher/progress.h"

namespace fs = std::filesystem;

namespace tessera {

namespace {

// Appends the blocks of the global tensor `name` that rows [begin, end) of a local tensor shaped
// like p's value cover, from column `col` on (0, or where a ZeRO-1 piece cuts a row), `data`
// holding them shaped [end - begin, ...]: one block for a replicated tensor, else one per group
// of the split dimension (q, k and v of a fused QKV).
void append_row_blocks(std::vector<TensorBlock>& out, const Param& p, const std::string& name,
                       int64_t begin, int64_t end, int64_t col, const Tensor& data) {
  Shape offset(p.global_shape.size(), 0);
  if (col != 0) offset.at(1) = col;
  const int d = p.tp_replicated() ? -1 : p.split_dim;
  if (d != 0) {  // local rows are the global ones (columns split, or nothing)
    if (d == 1)
      offset[1] += p.piece_begin();
    else
      TESSERA_CHECK(d == -1, "checkpoint: a split along dimension 0 or 1 only");
    TESSERA_CHECK(d == -1 || p.groups == 1, "checkpoint: groups are split along dimension 0 only");
    offset[0] = begin;
    out.push_back(TensorBlock{name, p.global_shape, offset, data});
    return;
  }
  const int64_t extent = p.global_shape[0] / p.groups;
  const int64_t count = p.piece_end() - p.piece_begin();
  for (int g = 0; g < p.groups; ++g) {
    const int64_t first = std::max(begin, g * count), last = std::min(end, (g + 1) * count);
    if (first >= last) continue;
    offset[0] = g * extent + p.piece_begin() + (first - g * count);
    out.push_back(
        TensorBlock{name, p.global_shape, offset, data.slice0(first - begin, last - begin)});
  }
}

// The blocks of the global tensor `name` that elements [first, first + part.numel()) of a local
// tensor shaped like p's value cover, in row-major order (`part`, 1-D, holds them: the whole
// tensor, or the part of it in a ZeRO-1 piece): its whole rows (dimension 0) together, and a row
// that either end cuts as a block of its own, [1, columns].
std::vector<TensorBlock> blocks_of(const Param& p, const Tensor& part, const std::string& name,
                                   int64_t first) {
  const Shape& shape = p.value.shape();
  const int64_t n = shape_numel(shape), last = first + part.numel();
  TESSERA_CHECK(!shape.empty() && part.dim() == 1 && first >= 0 && last <= n,
                "checkpoint: elements [" + std::to_string(first) + ", " + std::to_string(last) +
                    ") of " + name + " " + shape_str(shape));
  const int64_t row = shape[0] == 0 ? 1 : n / shape[0];  // elements of a row
  std::vector<TensorBlock> out;
  const auto add = [&](int64_t a, int64_t b) {  // elements [a, b): whole rows, or within one
    if (a >= b) return;
    const Tensor data = part.slice0(a - first, b - first);
    if (a % row == 0 && b % row == 0) {
      Shape rows = shape;
      rows[0] = (b - a) / row;
      append_row_blocks(out, p, name, a / row, b / row, 0, data.view(rows));
      return;
    }
    TESSERA_CHECK(shape.size() == 2, "checkpoint: " + name + " " + shape_str(shape) +
                                         ": only a two-dimensional tensor's rows may be cut");
    append_row_blocks(out, p, name, a / row, a / row + 1, a % row, data.view({1, b - a}));
  };
  const int64_t rows_from = std::min(last, (first + row - 1) / row * row);
  const int64_t rows_to = std::max(rows_from, last / row * row);
  add(first, rows_from);
  add(rows_from, rows_to);
  add(rows_to, last);
  return out;
}

// A whole tensor as blocks_of's part (undefined stays undefined).
Tensor whole(const Tensor& t) {
  return t.defined() ? t.view({t.numel()}) : Tensor();
}

// Appends p's blocks of elements [first, first + weights.numel()) (1-D parts, as for blocks_of):
// of its weights ("model/"; a bfloat16 model's are its fp32 masters, so checkpoints hold float32
// weights) and of those of its moments that are defined.
void append_param_blocks(std::vector<TensorBlock>& blocks, const Param& p, const Tensor& weights,
                         const Tensor& exp_avg, const Tensor& exp_avg_sq, int64_t first = 0) {
  const auto append = [&](const Tensor& t, const std::string& name) {
    if (!t.defined()) return;
    for (TensorBlock& b : blocks_of(p, t, name, first)) blocks.push_back(std::move(b));
  };
  append(weights, "model/" + p.name);
  append(exp_avg, "optimizer/exp_avg/" + p.name);
  append(exp_avg_sq, "optimizer/exp_avg_sq/" + p.name);
}

// The weights a checkpoint holds of AdamW's i-th parameter p: its fp32 masters with bf16, else
// its values.
Tensor saved_weights(AdamW& a, size_t i, const Param& p) {
  return a.master()[i].defined() ? a.master()[i] : p.value;
}

// AdamW's i-th parameter p, whole: the blocks of its weights and, with `moments`, its moments.
void append_adamw_blocks(std::vector<TensorBlock>& blocks, AdamW& a, size_t i, const Param& p,
                         bool moments = true) {
  append_param_blocks(blocks, p, whole(saved_weights(a, i, p)),
                      moments ? whole(a.exp_avg()[i]) : Tensor(),
                      moments ? whole(a.exp_avg_sq()[i]) : Tensor());
}

// ZeRO-1: the blocks of the part of a piece's state (1-D tensors laid out like the piece) that
// `span` covers.
void append_span_blocks(std::vector<TensorBlock>& blocks, const GradBuckets::PieceSpan& span,
                        const Tensor& weights, const Tensor& exp_avg, const Tensor& exp_avg_sq) {
  const auto part = [&](const Tensor& t) {
    return t.defined() ? t.slice0(span.at, span.at + span.count) : Tensor();
  };
  append_param_blocks(blocks, *span.param, part(weights), part(exp_avg), part(exp_avg_sq),
                      span.first);
}

// The blocks of the weights and moments this rank writes, of the parameters it counts
// (TP-replicated ones on TP rank 0, the tied copy not at all). Without ZeRO-1 the DP replicas
// hold the same state: DP rank 0 writes all of it. With ZeRO-1 every DP rank writes the elements
// in its own pieces, so that nothing is gathered and the DP ranks write in parallel.
std::vector<TensorBlock> state_blocks(Trainer& tr) {
  std::vector<TensorBlock> blocks;
  if (AdamW* a = tr.adamw()) {
    if (tr.grid().coord().dp != 0) return blocks;
    const std::vector<Param*>& ps = tr.params();
    for (size_t i = 0; i < ps.size(); ++i)
      if (ps[i]->counted_here()) append_adamw_blocks(blocks, *a, i, *ps[i]);
    return blocks;
  }
  GradBuckets& gb = tr.buckets();
  for (size_t i = 0; i < gb.buckets().size(); ++i) {
    const GradBuckets::Bucket& b = gb.buckets()[i];
    const ZeroAdamW::Piece piece = tr.zero()->piece(i);
    const Tensor weights = piece.master.defined() ? piece.master : gb.piece_values(b);
    for (const GradBuckets::PieceSpan& span : gb.piece_spans(b))
      if (span.param->counted_here())
        append_span_blocks(blocks, span, weights, piece.exp_avg, piece.exp_avg_sq);
  }
  return blocks;
}

CheckpointMeta meta_of(Trainer& tr) {
  const TrainConfig& c = tr.config();
  CheckpointMeta meta;
  meta.ints["step"] = tr.steps_done();
  meta.ints["tp"] = tr.layout().tp;
  meta.ints["pp"] = tr.layout().pp;
  meta.ints["dp"] = tr.layout().dp;
  meta.ints["zero"] = c.parallel.zero;
  meta.ints["seed"] = static_cast<int64_t>(c.seed);
  const LoaderState loader = tr.loader().state();  // walks the blend on to the position, once
  meta.ints["consumed_samples"] = loader.consumed;
  meta.ints["consumed_tokens"] = tr.consumed_tokens(loader.consumed);
  meta.ints["adamw_step"] = tr.adamw() ? tr.adamw()->steps_taken() : tr.zero()->steps_taken();
  meta.ints["skipped_in_a_row"] = tr.skipped_in_a_row();
  meta.ints["skipped_total"] = tr.skipped_total();
  meta.ints["global_batch"] = c.global_batch;
  meta.ints["heads"] = c.model.heads;  // shapes do not show the head count
  meta.texts["pos"] = position_kind_name(c.model.pos);
  meta.reals["lr_at_step"] = c.schedule.at(std::max<int64_t>(tr.steps_done() - 1, 0));
  meta.texts["config"] = c.resolved_ini;
  meta.texts["data"] = tr.samples().sequence_key();
  // The blend's cursor at consumed_samples, so that a resume need not walk to it from position 0.
  std::string taken;
  for (int64_t n : loader.taken) taken.append(taken.empty() ? "" : " ").append(std::to_string(n));
  meta.texts["data_taken"] = taken;
  return meta;  // write_model_h5 adds the format
}

// Test-only (--debug.kill_during_save RANK:POINT): the named rank dies without a trace at that
// point of the run's second save (the first leaves a checkpoint to fall back to), as a crash or
// a kill -9 would leave it.
void crash_point(const TrainConfig& c, int rank, const std::string& point) {
  TESSERA_CHECK(is_save_crash_point(point), "crash_point " + point +
                                                " is not in kSaveCrashPoints, which "
                                                "--debug.kill_during_save is checked against");
  static int saves = 0;
  if (point == "start") ++saves;
  if (saves == 2 && c.debug_kill_during_save == std::to_string(rank) + ":" + point)
    std::raise(SIGKILL);
}

// Test-only (--debug.slow_save RANK:SECONDS): the named rank writes its shard that many seconds
// late.
void slow_save(const TrainConfig& c, int rank) {
  for (const RankStep& slow : rank_steps("--debug.slow_save", c.debug_slow_save, "SECONDS")) {
    if (slow.rank != rank) continue;
    const int64_t seconds = slow.step;  // RANK:SECONDS, read as RANK:STEP
    std::fprintf(stderr, "rank %d: --debug.slow_save: writing the shard %lld s late\n", rank,
                 static_cast<long long>(seconds));
    std::this_thread::sleep_for(std::chrono::seconds(seconds));
  }
}

// Deletes all but the `keep` newest committed step directories up to `just_saved`, which stays.
// Higher steps are a run this one rolled back from (--checkpoint.resume PATH of an earlier step):
// neither counted nor deleted, so that the run keeps its own newest, and each goes when a save
// of this run replaces it.
void keep_newest(const std::string& root, int64_t keep, const std::string& just_saved) {
  if (keep <= 0) return;
  const std::string saved = fs::path(just_saved).filename().string();
  const int64_t saved_step = step_of_directory(saved);
  std::vector<std::string> steps = step_directories(root);  // newest first
  std::erase_if(steps, [&](const std::string& name) {
    return name == saved || step_of_directory(name) > saved_step;
  });
  for (size_t i = static_cast<size_t>(keep - 1); i < steps.size(); ++i) {
    // Housekeeping: a directory that cannot be deleted is reported, and training goes on.
    std::error_code ec;
    fs::remove_all(fs::path(root) / steps[i], ec);
    if (ec)
      std::fprintf(stderr, "checkpoint: cannot delete %s (--checkpoint.keep): %s\n",
                   (fs::path(root) / steps[i]).c_str(), ec.message().c_str());
  }
}

}  // namespace

void point_latest_at_resumed_step(const std::string& root, const std::string& resumed) {
  const std::string name = name_in_root(root, resumed);
  if (name.empty()) return;
  std::string was;
  try {
    was = read_latest(root);
  } catch (const InputError&) {  // malformed: replaced now, as by every save
  }
  if (name == was) return;
  write_latest(root, name);
  std::printf("checkpoint: %s/latest now names %s, the step this run resumed%s\n", root.c_str(),
              name.c_str(), was.empty() ? "" : (" (it named " + was + ")").c_str());
}

void remove_unfinished_checkpoints(Communicator& world, const std::string& root) {
  if (world.rank() == 0 && fs::is_directory(root))
    for (const auto& e : fs::directory_iterator(root))
      if (e.path().extension() == ".tmp") fs::remove_all(e.path());
  world.barrier();
}

CheckpointSaver::CheckpointSaver(Trainer& tr, std::string root, bool async)
    : tr_(tr), root_(std::move(root)), async_(async) {}

CheckpointSaver::~CheckpointSaver() {
  // Only reached without finish() when the run failed: let the threads end, commit nothing.
  if (writer_.joinable()) writer_.join();
  if (committer_.joinable()) committer_.join();
}

double CheckpointSaver::save() {
  const auto t0 = std::chrono::steady_clock::now();
  finish();
  const ProfileRange range("checkpoint save", tr_.steps_done());
  started_ = std::chrono::steady_clock::now();
  Communicator& world = tr_.host_world();
  const TrainConfig& c = tr_.config();
  const int rank = world.rank();
  dir_ = (fs::path(root_) / step_directory_name(tr_.steps_done())).string();
  const std::string tmp = dir_ + ".tmp";
  // Every rank makes the directory itself (create_directories tolerates the others), so a save
  // starts without a barrier. A step_N.tmp left by a crash was removed when the run started.
  fs::create_directories(fs::path(tmp) / "shards");
  crash_point(c, rank, "start");
  // The state as it is now (no communication: each rank writes what it holds); with an
  // asynchronous save every block is copied, so training may change the originals.
  std::vector<TensorBlock> blocks = state_blocks(tr_);
  if (!async_) {  // HDF5 writes host memory: GPU blocks are copied first
    for (TensorBlock& b : blocks)
      if (b.data.device() != Device::CPU) b.data = b.data.to(Device::CPU);
  } else {
    // Host copies that the next save reuses: after the first, a save only copies.
    if (snapshot_.size() != blocks.size()) snapshot_.assign(blocks.size(), Tensor());
    for (size_t i = 0; i < blocks.size(); ++i) {
      if (snapshot_[i].shape() != blocks[i].data.shape() ||
          snapshot_[i].dtype() != blocks[i].data.dtype())
        snapshot_[i] = Tensor(blocks[i].data.shape(), blocks[i].data.dtype());
      copy_into(snapshot_[i], blocks[i].data);
      blocks[i].data = snapshot_[i];
    }
  }
  meta_ = meta_of(tr_);
  const std::string shard = (fs::path(tmp) / "shards" / shard_file_name(rank)).string();
  written_ = false;
  error_ = nullptr;
  auto write = [this, blocks = std::move(blocks), shard, &c, rank]() {
    try {
      crash_point(c, rank, "shard");
      slow_save(c, rank);
      const ProfileRange range("checkpoint write");
      const auto w0 = std::chrono::steady_clock::now();
      has_shard_ = !blocks.empty();
      if (has_shard_) {
        write_shard(shard, blocks);
        shard_crc_ = crc32c_file(shard);  // from the page cache, on every rank at once
      }
      write_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
      crash_point(c, rank, "written");
    } catch (...) {
      error_ = std::current_exception();
    }
    written_ = true;
  };
  pending_ = true;
  if (!async_) {
    write();
    finish();
  } else {
    writer_ = std::thread(std::move(write));
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

bool CheckpointSaver::poll() {
  if (!pending_) return false;
  // Every rank's shard must be on disk before rank 0 may commit: one small all-reduce a step.
  Tensor done({1}, DType::I32);
  done.data<int32_t>()[0] = written_ ? 1 : 0;
  tr_.host_world().all_reduce(done, ReduceOp::Sum);
  if (done.data<int32_t>()[0] < tr_.host_world().size()) return false;
  writer_.join();
  if (error_) std::rethrow_exception(error_);
  note_written();
  gather_crcs();
  announced_ = dir_;
  if (tr_.host_world().rank() == 0) {
    // Flushed: an operator reading the log after a hang or an abort (_Exit) needs this line.
    std::printf("checkpoint: %s written in the background\n", dir_.c_str());
    std::fflush(stdout);
    committer_ = std::thread([this] {
      try {
        commit();
      } catch (...) {
        error_ = std::current_exception();
      }
    });
  }
  return true;
}

void CheckpointSaver::finish() {
  // A save is in flight while its shards are being written, while rank 0 commits, and, on the
  // other ranks once poll() handed it to rank 0, until the barrier below says it is committed.
  const bool saving = pending_ || committer_.joinable() || dir_ != committed_;
  if (pending_) {
    if (writer_.joinable()) writer_.join();
    if (error_) std::rethrow_exception(error_);
    gather_crcs();  // also the barrier: every shard is written, fsynced and closed
    note_written();
    if (tr_.host_world().rank() == 0) commit();
  }
  if (committer_.joinable()) committer_.join();
  if (error_) std::rethrow_exception(error_);
  if (!saving) return;
  tr_.host_world().barrier();  // every rank knows the save is committed
  committed_ = dir_;
  if (async_ && announced_ != dir_ && tr_.host_world().rank() == 0) {
    std::printf("checkpoint: %s written (waited for it)\n", dir_.c_str());
    std::fflush(stdout);
  }
}

void CheckpointSaver::note_written() {
  pending_ = false;
  longest_s_ = std::max(longest_s_, seconds_since_save_start());
}

double CheckpointSaver::seconds_since_save_start() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
}

void CheckpointSaver::gather_crcs() {
  Communicator& world = tr_.host_world();
  Tensor mine({2}, DType::I32), all({2 * world.size()}, DType::I32);
  mine.data<int32_t>()[0] = has_shard_ ? 1 : 0;
  std::memcpy(&mine.data<int32_t>()[1], &shard_crc_, sizeof shard_crc_);
  world.all_gather(all, mine);
  crcs_.clear();
  for (int r = 0; r < world.size(); ++r) {
    if (!all.data<int32_t>()[2 * r]) continue;
    uint32_t crc = 0;
    std::memcpy(&crc, &all.data<int32_t>()[2 * r + 1], sizeof crc);
    crcs_["shards/" + shard_file_name(r)] = crc;
  }
}

// Rank 0: model.h5, the MANIFEST, the rename that makes the checkpoint visible, then `latest`.
void CheckpointSaver::commit() {
  const ProfileRange range("checkpoint commit");
  const TrainConfig& c = tr_.config();
  const std::string tmp = dir_ + ".tmp";
  fsync_directory(tmp + "/shards");  // the shards' directory entries, before anything names them
  // The shards every rank reported writing, by name: a listing of shards/ on a shared file
  // system may not yet show another node's file, whose tensors would then be left out.
  std::vector<std::string> shard_files;
  for (const auto& [file, crc] : crcs_) shard_files.push_back(file);
  write_model_h5(tmp, meta_, shard_files);
  crash_point(c, 0, "master");  // after model.h5
  write_manifest(tmp, crcs_);
  // A step saved again (by a run resumed from an earlier step) replaces its old directory, which
  // is first set aside as step_N.replaced: a crash between the two renames leaves it for the
  // next run to restore (restore_replaced_checkpoints), not a gap where step_N was.
  const std::string aside = dir_ + kReplacedSuffix;
  if (fs::exists(dir_)) {
    fs::remove_all(aside);
    fs::rename(dir_, aside);
    crash_point(c, 0, "set_aside");
  }
  rename_directory(tmp, dir_);
  // Housekeeping, after the commit: what cannot go now (an NFS .nfsXXXX of a reader) goes at the
  // next start, by restore_replaced_checkpoints.
  std::error_code ec;
  fs::remove_all(aside, ec);
  if (ec)
    std::fprintf(stderr, "checkpoint: cannot delete %s, the step this save replaced: %s\n",
                 aside.c_str(), ec.message().c_str());
  crash_point(c, 0, "renamed");
  write_latest(root_, fs::path(dir_).filename().string());
  keep_newest(root_, c.checkpoint_keep, dir_);
}

void check_resume_meta(const CheckpointMeta& meta, const std::string& dir) {
  for (const char* key : {"step", "adamw_step", "consumed_samples", "seed"}) {
    const auto it = meta.ints.find(key);
    if (it == meta.ints.end())
      throw InputError("checkpoint " + dir + ": model.h5 has no integer attribute " + key +
                       ", which a resume reads (not a tessera training checkpoint, or one "
                       "rewritten by hand)");
    if (it->second < 0 && std::string(key) != "seed")  // the seed is unsigned, stored as is
      throw InputError("checkpoint " + dir + ": model.h5's attribute " + key + " is " +
                       std::to_string(it->second) +
                       ", expected 0 or more (a checkpoint rewritten by hand?)");
  }
}

namespace {

// The samples each corpus had supplied at consumed_samples (/meta/data_taken), checked against
// this run's blend; empty when the saved sequence is another (a resume with --data.allow_change)
// or the checkpoint predates the key: the loader then walks the blend to the position.
std::vector<int64_t> saved_blend_cursor(const CheckpointMeta& meta, const SampleStream& samples,
                                        const std::string& dir) {
  const auto data = meta.texts.find("data"), text = meta.texts.find("data_taken");
  if (data == meta.texts.end() || data->second != samples.sequence_key() ||
      text == meta.texts.end())
    return {};
  std::vector<int64_t> taken;
  const char* at = text->second.data();
  const char* end = at + text->second.size();
  while (at < end) {
    int64_t n = 0;
    const auto [next, ec] = std::from_chars(at, end, n);
    if (ec != std::errc() || (next < end && *next != ' '))
      throw InputError("checkpoint " + dir + ": /meta/data_taken: expected counts separated by " +
                       "spaces, found \"" + text->second + "\"");
    taken.push_back(n);
    at = next < end ? next + 1 : next;
  }
  samples.cursor_from(meta.ints.at("consumed_samples"), taken,
                      "checkpoint " + dir + ": /meta/data_taken");
  return taken;
}

// The model's sizes, before any rank builds its part of it: widths from the shapes of the
// tensors that show them (each rank would otherwise find another width only when loading, and
// say so on its own). What the shapes do not show: a checkpoint of another head count or position
// kind would load without complaint and compute something else. Nor does a checkpoint of more
// layers: its first ones would load, and the rest be dropped.
void check_saved_model(const CheckpointReader& reader, const ModelConfig& m,
                       const std::string& dir) {
  const auto same = [&](const char* option, int64_t now, const std::string& tensor, size_t dim) {
    if (!reader.has(tensor)) return;
    const Shape& shape = reader.tensor(tensor).shape;
    if (shape.size() > dim && shape[dim] != now)
      throw InputError("checkpoint " + dir + ": saved with " + option + " " +
                       std::to_string(shape[dim]) + " (" + tensor + " is " + shape_str(shape) +
                       "), this run has " + std::to_string(now));
  };
  same("--model.vocab_size", m.vocab_size, "model/embedding/token/weight", 0);
  same("--model.d_model", m.d_model, "model/embedding/token/weight", 1);
  same("--model.d_ff", m.d_ff, "model/layers/00/mlp/up/weight", 0);
  if (m.pos == PositionKind::Learned)
    same("--model.seq_len", m.seq_len, "model/embedding/position/weight", 0);
  int64_t layers = 0;
  const std::string prefix = "model/layers/";
  for (const CheckpointReader::TensorInfo& t : reader.tensors()) {
    if (t.name.rfind(prefix, 0) != 0) continue;
    int64_t index = -1;
    const char* first = t.name.data() + prefix.size();
    std::from_chars(first, t.name.data() + t.name.size(), index);
    layers = std::max(layers, index + 1);
  }
  if (layers > 0 && layers != m.layers)
    throw InputError("checkpoint " + dir + ": saved with " + std::to_string(layers) +
                     " layers (model/layers/...), this run has --model.layers " +
                     std::to_string(m.layers));
  const CheckpointMeta& meta = reader.meta();
  if (meta.ints.count("heads") && meta.ints.at("heads") != m.heads)
    throw InputError("checkpoint " + dir + ": saved with --model.heads " +
                     std::to_string(meta.ints.at("heads")) + ", this run has " +
                     std::to_string(m.heads));
  if (meta.texts.count("pos") && meta.texts.at("pos") != position_kind_name(m.pos))
    throw InputError("checkpoint " + dir + ": saved with --model.pos " + meta.texts.at("pos") +
                     ", this run has " + position_kind_name(m.pos));
}

// Reads every block from the checkpoint in `dir` into its tensor, on the host or the GPU. A
// NaN or infinity read is refused, naming the tensor: a model of them samples noise and gives a
// loss of nan, and a resume from them trains nothing.
void read_blocks(const CheckpointReader& reader, const std::vector<TensorBlock>& blocks,
                 const std::string& dir) {
  for (const TensorBlock& b : blocks) {
    if (!reader.has(b.name))
      throw InputError("checkpoint " + dir + ": no tensor " + b.name +
                       " (was it saved from another model?)");
    Tensor data = b.data;
    // HDF5 reads into host memory; a block of a GPU tensor goes on from there.
    Tensor host = data.device() == Device::CPU ? data : Tensor(data.shape(), data.dtype());
    reader.read(b.name, b.global_shape, b.offset, host);
    if (const int64_t bad = count_non_finite(host); bad > 0)
      throw InputError("checkpoint " + dir + ": " + b.name + " holds " +
                       count_of(bad, "NaN or infinite value") +
                       " (in the part this rank reads): a damaged or hand-edited checkpoint, or "
                       "one of a run that diverged; `tessera ckpt verify " +
                       dir + "` lists every such tensor");
    if (data.device() != Device::CPU) copy_into(data, host);
  }
}

// Without ZeRO-1 the DP replicas hold the same state: DP rank 0 of each replica group reads it,
// and its group receives it by broadcast, so that the file system serves one read of each shard,
// not DP of them. One parameter at a time: the others wait for one read, not the whole. Without
// `moments`, the weights alone (--checkpoint.init), the moments left as a fresh start's.
void load_adamw_state(Trainer& tr, AdamW& a, const CheckpointReader& reader, const std::string& dir,
                      bool moments) {
  Communicator& dp = tr.grid().dp();
  for (size_t i = 0; i < tr.params().size(); ++i) {
    const Param& p = *tr.params()[i];
    if (dp.rank() == 0) {
      std::vector<TensorBlock> blocks;
      append_adamw_blocks(blocks, a, i, p, moments);
      read_blocks(reader, blocks, dir);
    }
    if (dp.size() > 1)
      for (Tensor t : {saved_weights(a, i, p), moments ? a.exp_avg()[i] : Tensor(),
                       moments ? a.exp_avg_sq()[i] : Tensor()})
        if (t.defined()) dp.broadcast(t, 0);
  }
  a.refresh_values();
}

// ZeRO-1, one bucket at a time through host buffers of the piece's length: the elements in this
// rank's piece of the weights (with bf16 the fp32 masters, which become the bf16 values) and the
// moments, the only part of them it keeps; then an all-gather of the values over DP (the one each
// step ends with) brings the other ranks' pieces, before any step. Into the layout that saved
// the checkpoint, each rank reads the blocks it wrote. Without `moments`, zero moments.
void load_zero_state(Trainer& tr, ZeroAdamW& z, const CheckpointReader& reader,
                     const std::string& dir, bool moments) {
  GradBuckets& gb = tr.buckets();
  for (size_t i = 0; i < gb.buckets().size(); ++i) {
    const GradBuckets::Bucket& b = gb.buckets()[i];
    const int64_t length = gb.piece_length(b);
    Tensor weights({length}, z.state_dtype()), m({length}, z.state_dtype()),
        v({length}, z.state_dtype());
    if (!moments) {  // a fresh optimizer's
      m.zero();
      v.zero();
    }
    std::vector<TensorBlock> blocks;
    for (const GradBuckets::PieceSpan& span : gb.piece_spans(b))
      append_span_blocks(blocks, span, weights, moments ? m : Tensor(), moments ? v : Tensor());
    read_blocks(reader, blocks, dir);
    z.load_piece(i, m, v, weights);
  }
  z.finish_load();
}

// InputError naming `dir` when the checkpoint's seed is not this run's, or its position (samples
// consumed) is not a whole number of this layout's micro-batch x data-parallel ranks.
void check_seed_and_position(const CheckpointMeta& meta, Trainer& tr, const std::string& dir) {
  const TrainConfig& cfg = tr.config();
  const auto seed = static_cast<uint64_t>(meta.ints.at("seed"));
  if (seed != cfg.seed)
    throw InputError("checkpoint " + dir + ": saved by a run of --train.seed " +
                     std::to_string(seed) + ", found --train.seed " + std::to_string(cfg.seed) +
                     " (the seed decides the initial weights and the sample order; resume with " +
                     std::to_string(seed) + ")");
  const int64_t consumed = meta.ints.at("consumed_samples");
  const int64_t batch = cfg.micro_batch * tr.layout().dp;
  if (consumed % batch != 0) {
    // The saving run's global batch as an example, when it divides the position: a run that
    // changed its global batch on an earlier resume may have left one that does not.
    const int64_t saved_batch = meta.int_or("global_batch", 0);
    const bool saved_divides = saved_batch > 0 && consumed % saved_batch == 0;
    throw InputError("checkpoint " + dir + ": its run consumed " + std::to_string(consumed) +
                     " samples, which --train.micro_batch " + std::to_string(cfg.micro_batch) +
                     " x " + std::to_string(tr.layout().dp) + " data-parallel rank" +
                     (tr.layout().dp == 1 ? "" : "s") + " = " + std::to_string(batch) +
                     " does not divide; resume with a micro-batch and data-parallel size whose "
                     "product divides it" +
                     (saved_divides ? " (the saved run's --train.global_batch " +
                                          std::to_string(saved_batch) + " does)"
                                    : std::string()));
  }
}

// Options a resume gives anew as a matter of course (where and how this run runs: the layout,
// threads, device and batch split; its own limits and deadlines), or that other notes and
// checks cover (the data, the global batch; not the tokenizer, which no check compares). The
// others are named when they change.
bool given_anew_on_resume(const std::string& key) {
  if (key == "data.tokenizer") return false;
  for (const char* prefix : {"parallel.", "data.", "gpu.", "debug."})
    if (key.starts_with(prefix)) return true;
  for (const char* k :
       {"run.dir", "checkpoint.resume", "checkpoint.init", "train.threads", "train.device",
        "train.exit_after", "train.time_limit", "train.collective_timeout", "train.startup_timeout",
        "train.global_batch", "train.micro_batch"})
    if (key == k) return true;
  return false;
}

// What this run changes of the checkpoint's options, schedule and batch, said, not refused
// (Megatron-LM refuses a changed schedule unless told to override it; extending --train.steps
// is the common case, and options are not taken from the checkpoint, so that one left out, as
// --checkpoint.interval, would otherwise go unsaid): "" when nothing changed.
std::string schedule_and_batch_note(const CheckpointMeta& meta, const TrainConfig& cfg) {
  std::string note;
  // Each option that the saving run resolved otherwise.
  if (const auto saved = meta.texts.find("config");
      saved != meta.texts.end() && !cfg.resolved_ini.empty()) {
    const std::map<std::string, std::string> was = ini_values(saved->second);
    std::string changed;
    const auto shown = [](const std::string& value) { return value.empty() ? "\"\"" : value; };
    for (const auto& [key, value] : ini_values(cfg.resolved_ini)) {
      const auto old = was.find(key);
      if (given_anew_on_resume(key) || old == was.end() || old->second == value) continue;
      // This run's precision as it resolved, which `auto` leaves unsaid.
      const std::string now = key == "train.precision" && value == "auto"
                                  ? "auto (" + dtype_name(cfg.model.dtype) + " here)"
                                  : shown(value);
      changed.append(changed.empty() ? "" : ", ")
          .append("--")
          .append(key)
          .append(" ")
          .append(shown(old->second))
          .append(" -> ")
          .append(now);
    }
    if (!changed.empty()) add_note(note, "this run changes the saving run's " + changed);
  }
  const int64_t step = meta.ints.at("step");
  const auto saved_lr = meta.reals.find("lr_at_step");
  if (saved_lr != meta.reals.end() && step > 0) {
    const double was = saved_lr->second, is = cfg.schedule.at(step - 1);
    if (std::abs(is - was) > 1e-9 * std::max(std::abs(is), std::abs(was))) {
      char text[320];
      std::snprintf(text, sizeof text,
                    "this run's learning-rate schedule differs from the saving run's: step %lld "
                    "ran at %.4g, this schedule gives it %.4g; step %lld runs at %.4g",
                    static_cast<long long>(step), was, is, static_cast<long long>(step + 1),
                    cfg.schedule.at(step));
      add_note(note, text);
    }
  }
  const int64_t saved_batch = meta.int_or("global_batch", 0);  // 0: an older checkpoint's
  if (saved_batch > 0 && saved_batch != cfg.global_batch)
    add_note(note, "the saving run's --train.global_batch was " + std::to_string(saved_batch) +
                       ", this run's is " + std::to_string(cfg.global_batch) + ": after step " +
                       std::to_string(step) + ", each step takes " +
                       std::to_string(cfg.global_batch) + " samples (the schedule counts steps)");
  return note;
}

// The parts ("; "-separated) of two sample-sequence keys that differ, as `saved "A", this run's
// "B"` (the whole keys when their parts do not pair up: another number of corpora, or none
// recorded), each weight in its shortest form (the keys hold 17 digits: 0.69999999999999996).
std::string sequence_difference(const std::string& saved, const std::string& now) {
  const auto parts = [](const std::string& key) {
    std::vector<std::string> out;
    for (size_t at = 0; at <= key.size();) {
      const size_t end = std::min(key.find("; ", at), key.size());
      std::string part = key.substr(at, end - at);
      if (const size_t w = part.find("weight "); w != std::string::npos) {
        // The shortest text that reads back as the same double (%g's 6 digits could show two
        // weights that differ as one).
        part = part.substr(0, w + 7) + shortest_text(std::strtod(part.c_str() + w + 7, nullptr));
      }
      out.push_back(part);
      at = end + 2;
    }
    return out;
  };
  std::vector<std::string> a = parts(saved), b = parts(now);
  const auto join = [](const std::vector<std::string>& p) {
    std::string s;
    for (const std::string& part : p) s.append(s.empty() ? "" : "; ").append(part);
    return std::vector<std::string>{s};
  };
  if (a.size() != b.size()) a = join(a), b = join(b);
  std::string out;
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string &x = a[i], &y = b[i];
    if (x == y) continue;
    out.append(out.empty() ? "" : "; ")
        .append("saved \"")
        .append(x)
        .append("\", this run's \"")
        .append(y)
        .append("\"");
  }
  return out;
}

// The checkpoint's sample sequence against this run's: "" when they are the same (and its saved
// blend cursor fits this run's blend), a note when they differ under --data.allow_change, else
// InputError naming `dir`. A checkpoint without the key was saved by a tessera that shuffled
// otherwise (and did not record the sequence either).
std::string sample_sequence_note(const CheckpointMeta& meta, Trainer& tr, const std::string& dir) {
  const auto found = meta.texts.find("data");
  const std::string saved = found == meta.texts.end() ? "(not recorded)" : found->second;
  const std::string now = tr.samples().sequence_key();
  if (saved == now) {
    saved_blend_cursor(meta, tr.samples(), dir);  // refused here, before any rank starts
    return "";
  }
  const std::string what = "read another sample sequence: " + sequence_difference(saved, now);
  const int64_t consumed = meta.ints.at("consumed_samples");
  if (tr.config().data_allow_change)
    return "the run that saved " + dir + " " + what + "; continuing at sample " +
           std::to_string(consumed) + " of this run's sequence (--data.allow_change)";
  throw InputError("checkpoint " + dir + ": its run " + what +
                   " (--data.path, --data.valid_path, --data.valid_fraction, --model.seq_len, "
                   "whether --train.eval_interval is 0, the corpora's files and the shuffle of "
                   "the tessera that ran decide it); "
                   "resume with the saved run's, or give --data.allow_change true to continue "
                   "at sample " +
                   std::to_string(consumed) + " of this run's sequence");
}

}  // namespace

std::string check_checkpoint_fits(const std::string& dir, Trainer& tr) {
  const CheckpointReader reader = CheckpointReader::open(dir, ManifestCheck::kSizes);
  const CheckpointMeta& meta = reader.meta();
  check_resume_meta(meta, dir);
  check_saved_model(reader, tr.config().model, dir);
  check_seed_and_position(meta, tr, dir);
  std::string note = schedule_and_batch_note(meta, tr.config());
  add_note(note, sample_sequence_note(meta, tr, dir));
  return note;
}

void load_weights(GPT& model, const std::string& dir, int rank) {
  CheckpointReader reader = CheckpointReader::open(dir, ManifestCheck::kSizes);
  check_saved_model(reader, model.config(), dir);
  reader.prefer_shard(rank);
  for (Param* p : model.params()) {
    // Checkpoints hold float32 weights (a bf16 run's masters): read, then round to the model's.
    const DType stored = p->value.dtype() == DType::BF16 ? DType::F32 : p->value.dtype();
    Tensor weights(p->value.shape(), stored);
    read_blocks(reader, blocks_of(*p, whole(weights), "model/" + p->name, 0), dir);
    copy_into(p->value, ops::cast_to(weights, p->value.dtype()));
  }
}

std::string check_initial_weights_fit(const std::string& dir, const ModelConfig& model) {
  const CheckpointReader reader = CheckpointReader::open(dir, ManifestCheck::kSizes);
  check_saved_model(reader, model, dir);
  const int64_t step = reader.meta().int_or("step", -1);
  return "weights from " + dir +
         (step >= 0 ? " (step " + std::to_string(step) + " of its run)" : "") +
         "; the optimizer, schedule and sample order start afresh at step 0 (--checkpoint.init)";
}

void load_initial_weights(Trainer& tr, const std::string& dir) {
  CheckpointReader reader =
      CheckpointReader::open(dir, ManifestCheck::kNone);  // as load_checkpoint
  reader.prefer_shard(tr.host_world().rank());
  if (AdamW* a = tr.adamw())
    load_adamw_state(tr, *a, reader, dir, false);
  else
    load_zero_state(tr, *tr.zero(), reader, dir, false);
}

void load_checkpoint(Trainer& tr, const std::string& dir) {
  // The ranks read every byte for the checksums, and rank 0 checked the sizes and
  // check_checkpoint_fits, when they chose the checkpoint moments ago: no rank stats each file
  // again (ranks x files metadata calls on a shared file system).
  CheckpointReader reader = CheckpointReader::open(dir, ManifestCheck::kNone);
  const CheckpointMeta& meta = reader.meta();
  reader.prefer_shard(tr.host_world().rank());  // in the saving layout, its own file
  const int64_t t = meta.ints.at("adamw_step");
  if (AdamW* a = tr.adamw()) {
    load_adamw_state(tr, *a, reader, dir, true);
    a->set_steps_taken(t);
  } else {
    load_zero_state(tr, *tr.zero(), reader, dir, true);
    tr.zero()->set_steps_taken(t);
  }
  tr.set_steps_done(meta.ints.at("step"));
  // Absent from checkpoints saved before tessera kept them: none counted.
  tr.set_skipped(meta.int_or("skipped_in_a_row", 0), meta.int_or("skipped_total", 0));
  const int64_t consumed = meta.ints.at("consumed_samples");
  tr.set_resumed_at(consumed, meta.int_or("consumed_tokens", consumed * tr.config().model.seq_len));
  tr.loader().set_state(LoaderState{consumed, static_cast<uint64_t>(meta.ints.at("seed")),
                                    saved_blend_cursor(meta, tr.samples(), dir)});
  if (const auto config = meta.texts.find("config"); config != meta.texts.end()) {
    const std::map<std::string, std::string> saved = ini_values(config->second);
    const auto init = saved.find("checkpoint.init");
    tr.set_initial_weights(init == saved.end() ? "" : init->second);
  }
}

}  // namespace tessera
