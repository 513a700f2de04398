// A checkpoint directory's MANIFEST and the `latest` pointer (docs/CHECKPOINTS.md), with the
// filesystem steps of the commit protocol (io/durable_file.h, included). Plain byte reads, no
// HDF5: these functions judge a checkpoint without trusting its files. io/checkpoint_io.h
// includes this header, so its callers see every declaration here. Stateless functions; safe on
// any thread.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/crc32c.h"
#include "io/durable_file.h"

namespace tessera {

// A checkpoint that could not be read (an I/O error, a node's file system or mount): not a
// damaged checkpoint, so never skipped for an older one, whose saves would then replace it.
struct CheckpointUnreadable : InputError {
  using InputError::InputError;
};

// The format tag written as the MANIFEST's first line and as model.h5's /meta/format text.
inline constexpr const char* kCheckpointFormat = "tessera checkpoint 1";

// DIR/MANIFEST: first line kCheckpointFormat, then "<crc32c, 8 hex digits> <size bytes> <path>"
// for model.h5 and each shards/*.h5 (paths relative to DIR, sorted). Written to MANIFEST.tmp,
// fsynced, renamed, and DIR fsynced.
// The shards are those a listing of DIR/shards shows, their CRCs read.
void write_manifest(const std::string& dir);

// The same for a save, which knows what it wrote: model.h5 and exactly the shards of
// `shard_crcs` (paths relative to DIR), whose CRCs are taken as given (each rank computes its own
// shard's right after writing it, in parallel, so that rank 0 does not read every file again),
// not what a listing of DIR/shards shows, which on a shared file system may lag another node.
void write_manifest(const std::string& dir, const std::map<std::string, uint32_t>& shard_crcs);

// What verify_manifest checks: kFull reads every file for its CRC; kSizes stops at presence and
// sizes (catches missing, truncated and unlisted files without reading them; for every rank of a
// resume after one rank has checked kFull, and for quick looks); kNone checks nothing, for a
// caller that has checked already (CheckpointReader::open after the shared CRC pass).
enum class ManifestCheck { kFull, kSizes, kNone };

// InputError naming DIR unless it is a directory ("no such directory", or a file where a step_N
// directory was expected: model.h5 given for its checkpoint).
void require_checkpoint_directory(const std::string& dir);

// Throws InputError naming the file and what is wrong: DIR not a directory, MANIFEST missing or
// malformed, a listed file missing, a size or CRC that differs, a shard file present but not
// listed. Reads files as bytes, never through HDF5.
void verify_manifest(const std::string& dir, ManifestCheck check = ManifestCheck::kFull);
// The same on DIR's MANIFEST as read_manifest_text gave it (the caller has checked that DIR is a
// checkpoint directory: require_checkpoint_directory), so that a caller that also needs the text
// reads it once.
void verify_manifest(const std::string& dir, const std::string& manifest_text, ManifestCheck check);

// One line of a MANIFEST: a file's CRC-32C, size and path relative to the step directory.
struct ManifestEntry {
  uint32_t crc = 0;
  uintmax_t size = 0;
  std::string path;
};
// DIR/MANIFEST as text, and the entries of such a text, checked for form (InputError naming
// DIR/MANIFEST when it is missing or malformed): what rank 0 reads once and the ranks that share
// the CRC pass over a checkpoint parse (launcher/checkpoint_choice.h, choose_checkpoint_together).
std::string read_manifest_text(const std::string& dir);
std::vector<ManifestEntry> parse_manifest(const std::string& text, const std::string& dir);

// InputError naming DIR/ENTRY's file unless `crc`, its CRC-32C as read, is the listed one.
void check_crc(const std::string& dir, const ManifestEntry& entry, uint32_t crc);
// check_crc of every entry's file, read whole in order: verify_manifest's CRC pass. `read` is told
// the bytes it reads, for a progress line.
void check_crcs(const std::string& dir, const std::vector<ManifestEntry>& entries,
                const ReadProgress& read = {});

// The files a MANIFEST covers, as a listing of DIR shows them, relative to DIR: model.h5 (if
// present), then shards/*.h5, sorted; what a verification compares the MANIFEST with, and what
// write_model_h5(dir, meta) and write_manifest(dir) build from (a save names its shards
// instead). CheckpointUnreadable when shards/ is there but cannot be listed.
std::vector<std::string> checkpoint_files(const std::string& dir);

// Replaces CHECKPOINTS_DIR/latest by a file holding "STEP_DIR_NAME\n": writes latest.tmp, fsyncs
// it, renames it over latest, fsyncs CHECKPOINTS_DIR.
void write_latest(const std::string& checkpoints_dir, const std::string& step_dir_name);
// The step directory name that `latest` holds; "" when there is no `latest`. InputError when it
// is empty, malformed, not a file or names no directory of CHECKPOINTS_DIR; CheckpointUnreadable
// when it cannot be read.
std::string read_latest(const std::string& checkpoints_dir);

}  // namespace tessera
