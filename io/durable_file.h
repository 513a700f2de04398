// Files and directories that survive a crash (POSIX): a rename that is atomic, then fsyncs that
// make it stick. The checkpoints' commit protocol (io/checkpoint_manifest.h) and the run
// directory's files (config.ini, metrics) are made of these.
#pragma once

#include <string>

namespace tessera {

// Writes `text` to PATH.tmp, fsyncs it, renames it to PATH and fsyncs PATH's directory: a reader
// never sees half a file, and a failed write leaves the previous one. InputError naming the file
// on failure. The MANIFEST and `latest`, and the run directory's config.ini and metrics files.
void write_file_atomically(const std::string& path, const std::string& text);

// Each throws InputError naming the path and the system's reason on failure.
void fsync_path(const std::string& path);      // a file's data and size reach the disk
void fsync_directory(const std::string& dir);  // its entries (creations, renames) reach the disk
// Renames directory `from` to `to` (`to` must not exist), then fsyncs the parent of each.
void rename_directory(const std::string& from, const std::string& to);

}  // namespace tessera
