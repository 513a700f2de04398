// Which checkpoint a run resumes, and whether a checkpoint is usable: see checkpoint_choice.h.
#include "launcher/checkpoint_choice.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <vector>

#include "core/error.h"
#include "io/checkpoint_io.h"
#include "io/crc32c.h"
#include "io/durable_file.h"
#include "io/file_kind.h"
#include "launcher/cluster.h"
#include "launcher/progress.h"

namespace fs = std::filesystem;

namespace tessera {

void add_note(std::string& note, const std::string& part) {
  if (part.empty()) return;
  if (!note.empty()) note += "; ";
  note += part;
}

namespace {

// A piece of a checkpoint file for the shared CRC pass.
struct CrcPiece {
  size_t file;
  uint64_t offset, length;
};

std::vector<CrcPiece> crc_pieces(const std::vector<ManifestEntry>& entries, uint64_t piece_bytes) {
  std::vector<CrcPiece> pieces;
  for (size_t f = 0; f < entries.size(); ++f)
    for (uint64_t at = 0; at < entries[f].size; at += piece_bytes)
      pieces.push_back({f, at, std::min<uint64_t>(piece_bytes, entries[f].size - at)});
  return pieces;
}

}  // namespace

std::string restore_replaced_checkpoints(const std::string& root, bool dry_run) {
  std::string note;
  if (!fs::is_directory(root)) return note;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || !name.ends_with(kReplacedSuffix)) continue;
    const fs::path step = fs::path(root) / name.substr(0, name.size() - kReplacedSuffix.size());
    if (fs::exists(step)) {  // the new one was in place: the old one was being deleted
      std::error_code ec;
      if (!dry_run) fs::remove_all(e.path(), ec);
      if (ec) add_note(note, "cannot delete " + e.path().string() + " (" + ec.message() + ")");
      continue;
    }
    if (!dry_run) {
      fs::rename(e.path(), step);
      fsync_directory(root);
    }
    add_note(note,
             step.string() + " was being replaced by a save when a run stopped: the old one " +
                 (dry_run ? "will be restored (this check chose without it)" : "is restored"));
  }
  return note;
}

namespace {

// The checks that make checkpoint `dir` usable, in this order: its MANIFEST's sizes, the bytes of
// every file it lists (`crc_pass`, given the MANIFEST's text), and model.h5's map of the shards,
// which reads the shards' metadata. The reader it opened.
CheckpointReader verify_in_order(const std::string& dir,
                                 const std::function<void(const std::string&)>& crc_pass) {
  require_checkpoint_directory(dir);
  const std::string manifest = read_manifest_text(dir);
  verify_manifest(dir, manifest, ManifestCheck::kSizes);
  crc_pass(manifest);
  CheckpointReader reader = CheckpointReader::open(dir, ManifestCheck::kNone);
  reader.check_shards();
  return reader;
}

}  // namespace

CheckpointReader verify_checkpoint(const std::string& dir, const std::string& what) {
  return verify_in_order(dir, [&](const std::string& manifest) {
    const std::vector<ManifestEntry> entries = parse_manifest(manifest, dir);
    uintmax_t total = 0;
    for (const ManifestEntry& e : entries) total += e.size;
    ProgressLine line(true, what + ": CRC-32C", static_cast<int64_t>(total));
    int64_t done = 0;
    check_crcs(dir, entries, [&](uint64_t bytes) {  // the sizes passed above
      done += static_cast<int64_t>(bytes);
      if (line.due()) line.print(done, std::to_string(entries.size()) + " files");
    });
    line.finish(done, std::to_string(entries.size()) + " files");
  });
}

std::string newest_checkpoint(const std::string& root, std::string& note,
                              const CheckpointVerifier& verify) {
  if (!fs::is_directory(root)) return "";
  // What was passed over, in order; the directory `latest` names is judged once.
  std::string skipped, latest_dir;
  try {
    const std::string latest = read_latest(root);
    if (!latest.empty()) {
      latest_dir = (fs::path(root) / latest).string();
      verify(latest_dir);
      return latest_dir;
    }
  } catch (const CheckpointUnreadable&) {
    throw;  // nothing skipped before it
  } catch (const InputError& e) {
    skipped = "latest checkpoint is not usable (" + std::string(e.what()) + ")";
  }
  for (const std::string& s : step_directories(root)) {
    const std::string dir = (fs::path(root) / s).string();
    if (dir == latest_dir) continue;
    try {
      verify(dir);
      if (!skipped.empty()) add_note(note, skipped + "; taking " + dir + " instead");
      return dir;
    } catch (const CheckpointUnreadable& e) {  // with what was skipped on the way to it
      throw CheckpointUnreadable(std::string(e.what()) +
                                 (skipped.empty() ? "" : "; passed over before it: " + skipped));
    } catch (const InputError& e) {
      add_note(skipped, "skipping " + dir + " (" + e.what() + ")");
    }
  }
  add_note(note, skipped);
  return "";
}

namespace {

// This run removes its unfinished saves (ROOT/step_N.tmp) before it starts, and would load a
// directory gone: `option`'s PATH naming one is refused.
void refuse_unfinished_save(const std::string& option, const std::string& root,
                            const std::string& path) {
  if (name_in_root(root, path).ends_with(".tmp"))
    throw InputError(option + " " + path +
                     ": expected a step directory, found an unfinished save (.tmp) of this run, "
                     "which it removes before it starts; if `tessera ckpt verify` passes it, "
                     "rename it to its step_N name and give that");
}

}  // namespace

std::string choose_checkpoint(const std::string& root, const std::string& resume, std::string& note,
                              const CheckpointVerifier& verify) {
  if (fs::exists(root) && !fs::is_directory(root))
    throw InputError(root +
                     ": expected the run's checkpoint directory, found something that is "
                     "not a directory");
  // Each save replaces `latest`: one that is not a file would fail the first save, after its
  // training.
  const std::string latest = (fs::path(root) / "latest").string();
  if (const std::string kind = root.empty() ? "" : non_regular_kind(latest); !kind.empty())
    throw InputError(latest + ": expected one line naming a step directory, found " + kind +
                     ", which a save could not replace; remove it, then rerun");
  // A run that does not continue ROOT's newest checkpoint would save over the same step numbers,
  // and --checkpoint.keep would delete the others: another run's checkpoints are not its to
  // replace. (Resuming an earlier step of ROOT itself, a rollback, is the person's choice.)
  const std::vector<std::string> steps = step_directories(root);
  const auto refuse_over = [&](const std::string& option) {
    throw InputError("--checkpoint.resume " + option + ": " + root + " already holds " +
                     std::to_string(steps.size()) + " checkpoint(s) (newest " + steps.front() +
                     ") that this run's saves would overwrite or --checkpoint.keep delete; "
                     "give another --run.dir, move them away, or resume them (auto)");
  };
  if (resume == "none") {
    if (!steps.empty()) refuse_over("none");
    return "";
  }
  if (resume == "auto") {
    const std::string dir = newest_checkpoint(root, note, verify);
    if (!dir.empty() || steps.empty()) return dir;  // none at all, or a stale `latest` only
    throw InputError("--checkpoint.resume auto: " + root + " holds " +
                     std::to_string(steps.size()) +
                     " checkpoint(s), none usable, which a fresh start would overwrite or "
                     "--checkpoint.keep delete: " +
                     note +
                     "; repair them (tessera ckpt verify), move them away, or give "
                     "--checkpoint.resume PATH");
  }
  const std::string own = name_in_root(root, resume);
  refuse_unfinished_save("--checkpoint.resume", root, resume);
  refuse_directory_of_checkpoints("--checkpoint.resume", resume);
  verify(resume);
  if (own.empty() && !steps.empty()) refuse_over(resume);
  return resume;
}

std::string run_directory_checkpoints(const std::string& dir) {
  const fs::path root = fs::path(dir) / "checkpoints";
  std::error_code ec;
  return fs::is_directory(root, ec) && !step_directories(root.string()).empty() ? root.string()
                                                                                : "";
}

void refuse_directory_of_checkpoints(const std::string& what, const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec) || fs::exists(fs::path(dir) / "MANIFEST", ec) ||
      fs::exists(fs::path(dir) / "model.h5", ec))
    return;
  // A run directory: its checkpoints/ holds them.
  const std::string of_run = run_directory_checkpoints(dir);
  const fs::path root = of_run.empty() ? fs::path(dir) : fs::path(of_run);
  const std::vector<std::string> steps = step_directories(root.string());
  std::string latest;
  try {
    latest = read_latest(root.string());
  } catch (const InputError&) {  // a damaged `latest`: the newest step is named instead
  }
  if (steps.empty() && latest.empty()) return;
  throw InputError(what + " " + dir + ": expected a checkpoint (a step directory), found " +
                   (of_run.empty() ? "a directory of them" : "a run directory") +
                   "; give one, e.g. " +
                   (root / (latest.empty() ? steps.front() : latest)).string() +
                   (latest.empty() ? " (the newest)" : " (the one its `latest` names)"));
}

std::string name_in_root(const std::string& root, const std::string& path) {
  fs::path dir = fs::absolute(path).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();  // "DIR/"
  std::error_code ec;
  return fs::equivalent(dir.parent_path(), root, ec) ? dir.filename().string() : "";
}

void verify_crcs_together(Communicator& world, const std::string& dir,
                          const std::string& manifest_text, uint64_t piece_bytes) {
  const std::vector<ManifestEntry> entries = parse_manifest(manifest_text, dir);
  const std::vector<CrcPiece> pieces = crc_pieces(entries, piece_bytes);
  Tensor crcs({static_cast<int64_t>(pieces.size()) + 1}, DType::F64);  // exact below 2^53
  double* c = crcs.data<double>();
  std::string trouble;  // why this rank could not read its pieces
  for (size_t j = static_cast<size_t>(world.rank()); j < pieces.size() && trouble.empty();
       j += static_cast<size_t>(world.size())) {
    const CrcPiece& p = pieces[j];
    try {
      c[j] = crc32c_file_range((fs::path(dir) / entries[p.file].path).string(), p.offset, p.length);
    } catch (const std::exception& e) {
      trouble = e.what();
    }
  }
  world.all_reduce(crcs, ReduceOp::Sum);  // one rank's value per piece, zeros elsewhere
  Tensor first({1}, DType::I32);          // the lowest rank in trouble, as the highest N - rank
  first.data<int32_t>()[0] = trouble.empty() ? 0 : world.size() - world.rank();
  world.all_reduce(first, ReduceOp::Max);
  if (first.data<int32_t>()[0] != 0) {
    const int speaker = world.size() - first.data<int32_t>()[0];
    const std::string said = broadcast_string(
        world, "rank " + std::to_string(world.rank()) + " (host " + host_name() + "): " + trouble,
        speaker);
    throw CheckpointUnreadable(
        "checkpoint " + dir + ": " + said +
        "; a rank that cannot read a checkpoint does not make it damaged, and it is not skipped "
        "(a fallback to an older one would have its saves replace this one): mend the machine "
        "or its file system, then rerun");
  }
  size_t next = 0;
  for (size_t f = 0; f < entries.size(); ++f) {
    uint32_t crc = 0;
    for (; next < pieces.size() && pieces[next].file == f; ++next)
      crc = crc32c_combine(crc, static_cast<uint32_t>(c[next]), pieces[next].length);
    check_crc(dir, entries[f], crc);
  }
}

namespace {

// `choose` on rank 0, with a verifier whose CRC pass every rank of `world` shares; the others
// follow. Rank 0 drives, one command at a time: "crc DIR" and then the MANIFEST's text (every
// rank checks its pieces of DIR), or "done DIR" (the choice, "" for none or a failure on rank 0).
std::string choose_together(Communicator& world,
                            const std::function<std::string(const CheckpointVerifier&)>& choose) {
  if (world.rank() != 0) {
    for (;;) {
      const std::string command = broadcast_string(world, "", 0);
      if (command.rfind("done ", 0) == 0) return command.substr(5);
      const std::string manifest = broadcast_string(world, "", 0);
      try {
        verify_crcs_together(world, command.substr(4), manifest);
      } catch (const std::exception&) {  // rank 0 says what, and decides what follows
      }
    }
  }
  std::string chosen;
  try {
    chosen = choose([&](const std::string& dir) {
      // verify_checkpoint's checks, the bytes' by every rank together.
      verify_in_order(dir, [&](const std::string& manifest) {
        broadcast_string(world, "crc " + dir, 0);
        broadcast_string(world, manifest, 0);
        verify_crcs_together(world, dir, manifest);
      });
    });
  } catch (...) {
    broadcast_string(world, "done ", 0);
    throw;
  }
  broadcast_string(world, "done " + chosen, 0);
  return chosen;
}

}  // namespace

std::string choose_checkpoint_together(Communicator& world, const std::string& root,
                                       const std::string& resume, std::string& note) {
  return choose_together(world, [&](const CheckpointVerifier& verify) {
    return choose_checkpoint_restoring(root, resume, note, verify);
  });
}

std::string choose_checkpoint_restoring(const std::string& root, const std::string& resume,
                                        std::string& note, const CheckpointVerifier& verify,
                                        bool dry_run) {
  note = restore_replaced_checkpoints(root, dry_run);
  std::string choice_note;
  const std::string chosen = choose_checkpoint(root, resume, choice_note, verify);
  add_note(note, choice_note);
  return chosen;
}

std::string choose_initial_weights_together(Communicator& world, const std::string& root,
                                            const std::string& path) {
  return choose_together(world, [&](const CheckpointVerifier& verify) {
    return choose_initial_weights(root, path, verify);
  });
}

std::string choose_initial_weights(const std::string& root, const std::string& path,
                                   const CheckpointVerifier& verify) {
  refuse_unfinished_save("--checkpoint.init", root, path);
  refuse_directory_of_checkpoints("--checkpoint.init", path);
  verify(path);
  return path;
}

}  // namespace tessera
