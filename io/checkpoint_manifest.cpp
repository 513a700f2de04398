// MANIFEST and `latest` (see io/checkpoint_manifest.h), on the durable files of
// io/durable_file.h. Everything here reads and writes plain bytes through <filesystem> and
// streams; a failing call becomes an InputError naming the path and the reason.
#include "io/checkpoint_manifest.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <sstream>
#include <utility>

#include "core/error.h"
#include "io/crc32c.h"
#include "io/file_kind.h"

namespace fs = std::filesystem;

namespace tessera {

namespace {

bool parse_manifest_line(const std::string& line, ManifestEntry& e) {
  const size_t a = line.find(' '), b = a == line.npos ? a : line.find(' ', a + 1);
  if (a != 8 || b == line.npos || b == a + 1 || b + 1 >= line.size()) return false;
  const std::string hex = line.substr(0, 8), size = line.substr(a + 1, b - a - 1);
  if (hex.find_first_not_of("0123456789abcdef") != hex.npos ||
      size.find_first_not_of("0123456789") != size.npos || size.size() > 19)
    return false;
  e.crc = static_cast<uint32_t>(std::stoul(hex, nullptr, 16));
  e.size = std::stoull(size);
  e.path = line.substr(b + 1);
  // What write_manifest lists: model.h5 and shards/NAME.h5, nothing else (no "./model.h5").
  const std::string_view shard =
      std::string_view(e.path).substr(std::min(e.path.size(), size_t{7}));
  return e.path == "model.h5" ||
         (e.path.starts_with("shards/") && shard.size() > 3 && shard.ends_with(".h5") &&
          !shard.starts_with('.') && shard.find('/') == shard.npos);
}

// PATH's bytes, or CheckpointUnreadable naming it: an I/O error is the machine's fault, which
// must not read as an empty (malformed) file and be skipped for an older checkpoint.
std::string read_whole(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw CheckpointUnreadable(path + ": cannot be read (" + std::strerror(errno) + ")");
  std::string text;
  char buf[1 << 16];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) text.append(buf, n);
  const int error = std::ferror(f) ? (errno ? errno : EIO) : 0;
  std::fclose(f);
  if (error) throw CheckpointUnreadable(path + ": cannot be read (" + std::strerror(error) + ")");
  return text;
}

}  // namespace

std::string read_manifest_text(const std::string& dir) {
  const std::string path = (fs::path(dir) / "MANIFEST").string();
  std::error_code ec;
  if (!fs::exists(path, ec) && !ec)
    throw InputError(path + ": missing (an incomplete checkpoint, or not a checkpoint directory)");
  if (ec) throw CheckpointUnreadable(path + ": cannot be read (" + ec.message() + ")");
  if (const std::string kind = non_regular_kind(path); !kind.empty())
    throw InputError(path + ": expected the checkpoint's list of files, found " + kind);
  return read_whole(path);
}

std::vector<ManifestEntry> parse_manifest(const std::string& text, const std::string& dir) {
  const std::string path = (fs::path(dir) / "MANIFEST").string();
  std::istringstream in(text);
  std::string line;
  if (!std::getline(in, line) || line != kCheckpointFormat)
    throw InputError(path + ": expected the first line \"" + kCheckpointFormat + "\", found \"" +
                     line + "\"");
  std::vector<ManifestEntry> entries;
  std::set<std::string> seen;
  for (int n = 2; std::getline(in, line); ++n) {
    ManifestEntry e;
    if (!parse_manifest_line(line, e) || !seen.insert(e.path).second)
      throw InputError(
          path + " line " + std::to_string(n) + ": expected " +
          "\"<crc32c, 8 hex digits> <size> model.h5|shards/NAME.h5\" listed once, found \"" + line +
          "\"");
    entries.push_back(std::move(e));
  }
  if (!seen.count("model.h5")) throw InputError(path + ": model.h5 is not listed");
  return entries;
}

namespace {

std::string hex8(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

}  // namespace

std::vector<std::string> checkpoint_files(const std::string& dir_name) {
  const fs::path dir(dir_name);
  std::vector<std::string> files;
  if (fs::exists(dir / "model.h5")) files.push_back("model.h5");
  std::error_code ec;
  std::vector<std::string> shards;
  for (const fs::directory_entry& e : fs::directory_iterator(dir / "shards", ec))
    if (e.path().extension() == ".h5") shards.push_back("shards/" + e.path().filename().string());
  // No shards/ (or a file there) lists no shards; what else stops the listing is the machine's.
  if (ec && ec != std::errc::no_such_file_or_directory && ec != std::errc::not_a_directory)
    throw CheckpointUnreadable((dir / "shards").string() + ": cannot be listed (" + ec.message() +
                               ")");
  std::sort(shards.begin(), shards.end());
  files.insert(files.end(), shards.begin(), shards.end());
  return files;
}

namespace {

// DIR/MANIFEST for model.h5 and `shards` (sorted paths relative to DIR): the CRCs of `known` as
// given, the others read.
void write_manifest_of(const std::string& dir, const std::vector<std::string>& shards,
                       const std::map<std::string, uint32_t>& known) {
  TESSERA_CHECK(fs::exists(fs::path(dir) / "model.h5"),
                "write_manifest(" + dir + "): write_model_h5 first (no model.h5)");
  std::string text = std::string(kCheckpointFormat) + "\n";
  std::vector<std::string> files{"model.h5"};
  files.insert(files.end(), shards.begin(), shards.end());
  for (const std::string& f : files) {
    const std::string p = (fs::path(dir) / f).string();
    const auto it = known.find(f);
    const uint32_t crc = it != known.end() ? it->second : crc32c_file(p);
    text += hex8(crc) + " " + std::to_string(fs::file_size(p)) + " " + f + "\n";
  }
  write_file_atomically((fs::path(dir) / "MANIFEST").string(), text);
}

}  // namespace

void write_manifest(const std::string& dir) {
  std::vector<std::string> shards = checkpoint_files(dir);
  std::erase(shards, "model.h5");
  write_manifest_of(dir, shards, {});
}

void write_manifest(const std::string& dir, const std::map<std::string, uint32_t>& shard_crcs) {
  std::vector<std::string> shards;
  for (const auto& [file, crc] : shard_crcs) shards.push_back(file);  // a map: sorted
  write_manifest_of(dir, shards, shard_crcs);
}

void require_checkpoint_directory(const std::string& dir) {
  if (fs::is_directory(dir)) return;
  if (!fs::exists(dir)) throw InputError("checkpoint " + dir + ": no such directory");
  // A run's checkpoints/latest names the step to give; the directory that holds it is not one.
  const fs::path file(dir);
  std::string named;
  if (file.filename() == "latest") {
    try {
      named = read_latest(file.parent_path().string());
    } catch (const InputError&) {  // a damaged `latest`: the generic hint
    }
  }
  throw InputError("checkpoint " + dir + ": expected a directory (step_N), found a file; " +
                   (named.empty()
                        ? std::string("give the directory that holds it")
                        : "it names " + named + ": give " + (file.parent_path() / named).string()));
}

void verify_manifest(const std::string& dir, ManifestCheck check) {
  if (check == ManifestCheck::kNone) return;
  require_checkpoint_directory(dir);
  verify_manifest(dir, read_manifest_text(dir), check);
}

void verify_manifest(const std::string& dir, const std::string& manifest_text,
                     ManifestCheck check) {
  if (check == ManifestCheck::kNone) return;
  const std::vector<ManifestEntry> entries = parse_manifest(manifest_text, dir);
  std::set<std::string> listed;
  for (const ManifestEntry& e : entries) listed.insert(e.path);
  for (const std::string& f : checkpoint_files(dir))
    if (!listed.count(f))
      throw InputError((fs::path(dir) / f).string() +
                       ": present but not listed in MANIFEST (left over from another save?)");
  for (const ManifestEntry& e : entries) {
    const std::string p = (fs::path(dir) / e.path).string();
    if (const std::string kind = non_regular_kind(p); !kind.empty())
      throw InputError(p + ": listed in MANIFEST as a file of " + std::to_string(e.size) +
                       " bytes, found " + kind);
    std::error_code ec;
    const uintmax_t size = fs::file_size(p, ec);
    if (ec == std::errc::no_such_file_or_directory)
      throw InputError(p + ": listed in MANIFEST but missing (" + ec.message() + ")");
    if (ec) throw CheckpointUnreadable(p + ": cannot be examined (" + ec.message() + ")");
    if (size != e.size)
      throw InputError(p + ": " + std::to_string(size) + " bytes, MANIFEST says " +
                       std::to_string(e.size) + " (truncated or rewritten)");
  }
  if (check == ManifestCheck::kFull) check_crcs(dir, entries);
}

void check_crcs(const std::string& dir, const std::vector<ManifestEntry>& entries,
                const ReadProgress& read) {
  for (const ManifestEntry& e : entries)
    check_crc(dir, e, crc32c_file((fs::path(dir) / e.path).string(), read));
}

void check_crc(const std::string& dir, const ManifestEntry& entry, uint32_t crc) {
  if (crc != entry.crc)
    throw InputError((fs::path(dir) / entry.path).string() + ": CRC-32C " + hex8(crc) +
                     ", MANIFEST says " + hex8(entry.crc) + " (the file is damaged)");
}

void write_latest(const std::string& checkpoints_dir, const std::string& step_dir_name) {
  TESSERA_CHECK(!step_dir_name.empty() && step_dir_name.find_first_of("/\n") == std::string::npos,
                "write_latest: \"" + step_dir_name + "\" is not a directory name");
  write_file_atomically((fs::path(checkpoints_dir) / "latest").string(), step_dir_name + "\n");
}

std::string read_latest(const std::string& checkpoints_dir) {
  const fs::path path = fs::path(checkpoints_dir) / "latest";
  if (!fs::exists(path)) return "";
  if (const std::string kind = non_regular_kind(path); !kind.empty())
    throw InputError(path.string() + ": expected one line naming a step directory, found " + kind +
                     " (remove it: each save replaces it)");
  const std::string text = read_whole(path.string());
  std::string name = text;
  if (!name.empty() && name.back() == '\n') name.pop_back();
  if (name.empty() || name == "." || name == ".." || name.find_first_of("/\n") != name.npos)
    throw InputError(path.string() + ": expected one line naming a step directory, found \"" +
                     text + "\"");
  if (!fs::is_directory(fs::path(checkpoints_dir) / name))
    throw InputError(path.string() + ": names " + name + ", but " +
                     (fs::path(checkpoints_dir) / name).string() + " is not a directory");
  return name;
}

}  // namespace tessera
