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
#include <fstream>
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
  const fs::path p(e.path);
  return p.is_relative() && std::find(p.begin(), p.end(), "..") == p.end();
}

}  // namespace

std::string read_manifest_text(const std::string& dir) {
  const std::string path = (fs::path(dir) / "MANIFEST").string();
  std::error_code ec;
  if (!fs::exists(path, ec) && !ec)
    throw InputError(path + ": missing (an incomplete checkpoint, or not a checkpoint directory)");
  if (const std::string kind = non_regular_kind(path); !kind.empty())
    throw InputError(path + ": expected the checkpoint's list of files, found " + kind);
  std::ifstream in(path, std::ios::binary);
  if (ec || !in)
    throw CheckpointUnreadable(path + ": cannot be read (" +
                               (ec ? ec.message() : std::string(std::strerror(errno))) + ")");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
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
      throw InputError(path + " line " + std::to_string(n) + ": expected " +
                       "\"<crc32c, 8 hex digits> <size> <relative path>\" listed once, found \"" +
                       line + "\"");
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
  std::sort(shards.begin(), shards.end());
  files.insert(files.end(), shards.begin(), shards.end());
  return files;
}

void write_manifest(const std::string& dir, const std::map<std::string, uint32_t>& known_crcs) {
  const std::vector<std::string> files = checkpoint_files(dir);
  TESSERA_CHECK(!files.empty() && files.front() == "model.h5",
                "write_manifest(" + dir + "): write_model_h5 first (no model.h5)");
  std::string text = std::string(kCheckpointFormat) + "\n";
  for (const std::string& f : files) {
    const std::string p = (fs::path(dir) / f).string();
    const auto known = known_crcs.find(f);
    const uint32_t crc = known != known_crcs.end() ? known->second : crc32c_file(p);
    text += hex8(crc) + " " + std::to_string(fs::file_size(p)) + " " + f + "\n";
  }
  write_file_atomically((fs::path(dir) / "MANIFEST").string(), text);
}

void require_checkpoint_directory(const std::string& dir) {
  if (fs::is_directory(dir)) return;
  throw InputError("checkpoint " + dir + ": " +
                   (fs::exists(dir) ? "expected a directory (step_N), found a file; give the "
                                      "directory that holds it"
                                    : "no such directory"));
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
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::string name = text.str();
  if (!name.empty() && name.back() == '\n') name.pop_back();
  if (name.empty() || name == "." || name == ".." || name.find_first_of("/\n") != name.npos)
    throw InputError(path.string() + ": expected one line naming a step directory, found \"" +
                     text.str() + "\"");
  if (!fs::is_directory(fs::path(checkpoints_dir) / name))
    throw InputError(path.string() + ": names " + name + ", but " +
                     (fs::path(checkpoints_dir) / name).string() + " is not a directory");
  return name;
}

}  // namespace tessera
