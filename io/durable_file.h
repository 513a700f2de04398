// Files and directories that survive a crash (POSIX): a rename that is atomic, then fsyncs that
// make it stick. The checkpoints' commit protocol (io/checkpoint_manifest.h) and the run
// directory's files (config.ini, metrics) are made of these.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace tessera {

// Writes `text` to PATH.tmp, fsyncs it, renames it to PATH and fsyncs PATH's directory: a reader
// never sees half a file, and a failed write leaves the previous one. InputError naming the file
// on failure. The MANIFEST and `latest`, and the run directory's config.ini and metrics files.
void write_file_atomically(const std::string& path, const std::string& text);

// Writes a new PATH through `write(put)`, each put appending bytes: into TMP, created (never
// truncated: an existing TMP is another writer's under way, or someone's file, and is refused),
// fsynced, renamed to PATH, and PATH's directory fsynced. So PATH is the old file or the whole new
// one, also after a failure or a crash. On failure TMP is removed (while it is still the file
// created) and InputError says why, beginning with `what` (the option that names PATH).
using PutBytes = std::function<void(const void* data, size_t bytes)>;
void write_file_through(const std::string& tmp, const std::string& path, const std::string& what,
                        const std::function<void(const PutBytes& put)>& write);

// Each throws InputError naming the path and the system's reason on failure.
void fsync_path(const std::string& path);      // a file's data and size reach the disk
void fsync_directory(const std::string& dir);  // its entries (creations, renames) reach the disk
// Renames directory `from` to `to` (`to` must not exist), then fsyncs the parent of each.
void rename_directory(const std::string& from, const std::string& to);

}  // namespace tessera
