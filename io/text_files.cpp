// Reading plain-text and JSON-lines inputs into documents (see io/text_files.h). Files are read
// in blocks of kBlockBytes and cut into lines; a document is built line by line, so memory holds
// one document and one block, whatever the size of the corpus.
#include "io/text_files.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "core/error.h"
#include "io/compressed_input.h"
#include "io/file_kind.h"

namespace tessera {

namespace fs = std::filesystem;

namespace {

constexpr size_t kBlockBytes = size_t{1} << 20;

bool blank(std::string_view s) {
  return s.find_first_not_of(" \t\r\n\f\v") == std::string_view::npos;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// JSON lines by name, under a compression's extension too (data.jsonl.zst).
bool is_json_lines(const fs::path& file) {
  std::string ext = lower(file.extension().string());
  if (ext == ".gz" || ext == ".zst" || ext == ".zstd")
    ext = lower(file.stem().extension().string());
  return ext == ".jsonl" || ext == ".ndjson" || ext == ".json";
}

// Whether a file read as text (by its name) begins as JSON lines do: its first line a JSON
// object.
bool looks_like_json_lines(std::string_view first_line) {
  const size_t start = first_line.find_first_not_of(" \t\r");
  return start != std::string_view::npos && first_line[start] == '{' &&
         nlohmann::json::accept(first_line);
}

// Files a directory holds that are not text: the fortunes package's companions, corpora (an
// encode's own output, in the directory it reads, or an llm.c shard) and part files.
bool skipped_in_directory(const fs::path& file) {
  const std::string ext = lower(file.extension().string());
  return ext == ".dat" || ext == ".u8" || ext == ".bin" || ext == ".idx" || ext == ".tmp";
}

std::vector<fs::path> files_of(const std::string& input) {
  std::error_code ec;
  const fs::file_status st = fs::status(input, ec);
  if (!fs::exists(st))
    throw InputError("text input " + input + ": " +
                     (ec && ec != std::errc::no_such_file_or_directory
                          ? "cannot be looked at (" + ec.message() + ")"
                          : std::string("no such file or directory")));
  if (!fs::is_directory(st)) {
    // Named as well, as a shell's `data/*` names them: a corpus is not text.
    const std::string ext = lower(fs::path(input).extension().string());
    if (ext == ".bin" || ext == ".idx" || ext == ".tmp")
      throw InputError("text input " + input + ": expected text or JSON lines, found a " + ext +
                       " file, a corpus or an encode's part file (a directory's are skipped)");
    return {fs::path(input)};
  }
  // Regular files, also through symlinks (a Hugging Face snapshot is all links to its blobs; a
  // link that leads nowhere or in a loop is passed over). A file the directory holds under two
  // names (a symlink or a hard link to another entry) is that file again: kept once, under the
  // first name in byte order that is not a symlink.
  std::vector<fs::path> entries;
  for (const fs::directory_entry& e : fs::directory_iterator(input)) {
    std::error_code entry_ec;
    if (!e.is_regular_file(entry_ec) || skipped_in_directory(e.path())) continue;
    entries.push_back(e.path());
  }
  std::sort(entries.begin(), entries.end());
  std::stable_partition(entries.begin(), entries.end(), [](const fs::path& p) {
    std::error_code link_ec;
    return !fs::is_symlink(p, link_ec);
  });
  std::set<std::pair<uint64_t, uint64_t>> held;
  std::vector<fs::path> files;
  for (fs::path& entry : entries) {
    const auto id = file_identity(entry.string());
    if (!id || held.insert(*id).second) files.push_back(std::move(entry));
  }
  if (files.empty())
    throw InputError("text input " + input +
                     ": expected text files in this directory, found none (subdirectories are "
                     "not read; .dat, .u8, .bin, .idx and .tmp files are skipped)");
  std::sort(files.begin(), files.end());
  return files;
}

// Cuts a file's text (decompressed, if it is gzip or zstd) into lines without holding more than
// one block (or one line, if longer, up to `max_line` bytes: a longer one is an InputError,
// raised before more of it is held).
class LineReader {
 public:
  LineReader(const fs::path& path, size_t max_line)
      : path_(path), source_(path), max_line_(max_line) {
    refill();  // the first block tells an archive: POSIX or GNU tar's magic at byte 257
    const std::string_view magic =
        buf_.size() > 257 ? std::string_view(buf_).substr(257, 8) : std::string_view();
    if (magic.starts_with(std::string_view("ustar\0", 6)) ||
        magic == std::string_view("ustar  \0", 8))
      throw InputError("text input " + path.string() + ": expected text or JSON lines, found a " +
                       (source_.compression()[0]
                            ? std::string(source_.compression()) + "-compressed "
                            : std::string()) +
                       "tar archive; unpack it (tar -xf) and give the files or their directory");
  }

  // The next line without its '\n' (valid until the next call); `newline` says whether a '\n'
  // ended it. False at the end of the file.
  bool next(std::string_view& line, bool& newline) {
    for (;;) {
      const void* nl = std::memchr(buf_.data() + scan_, '\n', buf_.size() - scan_);
      if (nl != nullptr || (eof_ && pos_ < buf_.size())) {
        const size_t end =
            nl ? static_cast<size_t>(static_cast<const char*>(nl) - buf_.data()) : buf_.size();
        line = std::string_view(buf_).substr(pos_, end - pos_);
        newline = nl != nullptr;
        pos_ = scan_ = end + (newline ? 1 : 0);
        ++lines_;
        return true;
      }
      if (eof_) return false;
      if (buf_.size() - pos_ > max_line_)
        throw InputError("text input " + path_.string() + ": expected lines of at most " +
                         std::to_string(max_line_) + " bytes (a document's limit), found a " +
                         "longer one at line " + std::to_string(lines_ + 1));
      refill();
    }
  }

  // Bytes of the file taken in so far (compressed ones, of a compressed file).
  int64_t file_bytes_read() const { return source_.file_bytes_read(); }
  // The number of the line next() gave last (1-based; 0 before the first).
  int64_t lines() const { return lines_; }
  const fs::path& path() const { return path_; }

 private:
  void refill() {
    buf_.erase(0, pos_);
    scan_ = buf_.size();
    pos_ = 0;
    buf_.resize(scan_ + kBlockBytes);
    size_t got = 0;
    while (got < kBlockBytes && !eof_) {
      const size_t k = source_.read(buf_.data() + scan_ + got, kBlockBytes - got);
      got += k;
      eof_ = k == 0;
    }
    buf_.resize(scan_ + got);
  }

  fs::path path_;
  InputBytes source_;
  std::string buf_;
  size_t pos_ = 0;   // start of the next line in buf_
  size_t scan_ = 0;  // buf_ before this holds no '\n' after pos_
  bool eof_ = false;
  size_t max_line_;
  int64_t lines_ = 0;
};

// Shortens a JSON value for an error message.
std::string excerpt(const nlohmann::json& value) {
  std::string s = value.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

}  // namespace

size_t utf8_sequence_length(const unsigned char* s, size_t left) {
  const auto in = [&](size_t k, unsigned lo, unsigned hi) {
    return k < left && s[k] >= lo && s[k] <= hi;
  };
  const unsigned c = left > 0 ? s[0] : 0xFF;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return in(1, 0x80, 0xBF) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {  // no overlong forms, no surrogates
    const unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    return in(1, lo, hi) && in(2, 0x80, 0xBF) ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {  // up to U+10FFFF
    const unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    return in(1, lo, hi) && in(2, 0x80, 0xBF) && in(3, 0x80, 0xBF) ? 4 : 0;
  }
  return 0;
}

bool is_valid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = 0; i < text.size();) {
    if (s[i] < 0x80) {  // ASCII runs, the common case
      ++i;
      continue;
    }
    const size_t n = utf8_sequence_length(s + i, text.size() - i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

struct DocumentReader::State {
  std::vector<fs::path> files;
  std::string jsonl_key;
  int64_t total_bytes = 0;
  int64_t done_bytes = 0;  // bytes of the files finished before `current`
  size_t next_file = 0;
  std::unique_ptr<LineReader> current;
  TextFormat format = TextFormat::Auto;
  bool json_lines = false;
  bool first_line_unseen = false;  // a file read as text by its name: its first line is judged
  size_t max_document_bytes = kMaxDocumentBytes;

  bool open_next_file();
  void close_file();
  std::optional<std::string> next_json_document();
  std::optional<std::string> next_text_document();
  std::string json_text(std::string_view line) const;
};

bool DocumentReader::State::open_next_file() {
  if (next_file == files.size()) return false;
  const fs::path& path = files[next_file++];
  current = std::make_unique<LineReader>(path, max_document_bytes);
  json_lines =
      format == TextFormat::JsonLines || (format == TextFormat::Auto && is_json_lines(path));
  first_line_unseen = format == TextFormat::Auto && !json_lines;
  return true;
}

void DocumentReader::State::close_file() {
  done_bytes += current->file_bytes_read();
  current.reset();
}

std::string DocumentReader::State::json_text(std::string_view line) const {
  const std::string where =
      "text input " + current->path().string() + ":" + std::to_string(current->lines()) + ": ";
  nlohmann::json value;
  try {
    value = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(where + "expected one JSON object per line, found invalid JSON (" + e.what() +
                     ")");
  }
  if (!value.is_object())
    throw InputError(where + "expected a JSON object, found " + excerpt(value));
  const auto field = value.find(jsonl_key);
  if (field == value.end() || !field->is_string())
    throw InputError(where + "expected a string field \"" + jsonl_key + "\" (--jsonl_key), found " +
                     (field == value.end() ? "no such field" : excerpt(*field)));
  return field->get<std::string>();
}

// One document per line of a JSON-lines file; blank lines are skipped.
std::optional<std::string> DocumentReader::State::next_json_document() {
  std::string_view line;
  bool newline = false;
  while (current->next(line, newline)) {
    if (blank(line)) continue;
    std::string text = json_text(line);
    if (!blank(text)) return text;
  }
  return std::nullopt;
}

// Lines up to a fortune separator ("%" alone on a line) or the end of the file. Overstriking is
// removed line by line, which is what remove_overstrike() does to the whole text.
std::optional<std::string> DocumentReader::State::next_text_document() {
  std::string doc;
  std::string_view line;
  bool newline = false;
  bool any = false;
  int64_t first_line = 0;
  while (current->next(line, newline)) {
    if (doc.empty()) first_line = current->lines();
    any = true;
    if (first_line_unseen && !blank(line)) {
      first_line_unseen = false;
      if (looks_like_json_lines(line))
        throw InputError("text input " + current->path().string() + ":" +
                         std::to_string(current->lines()) +
                         ": a JSON object, in a file read as text by its name (JSON lines end in "
                         ".jsonl, .ndjson or .json, also under .gz, .zst or .zstd): name it so, "
                         "or give "
                         "--format jsonl to read every input as JSON lines, or --format text to "
                         "read every input as text");
    }
    std::string cleaned;
    if (line.find('\b') != std::string_view::npos) {
      cleaned = remove_overstrike(line);
      line = cleaned;
    }
    if (line == "%" || line == "%\r") return doc;  // "%\r": a file with CRLF line ends
    if (doc.size() + line.size() + (newline ? 1 : 0) > max_document_bytes)
      throw InputError("text input " + current->path().string() +
                       ": expected documents of at most " + std::to_string(max_document_bytes) +
                       " bytes, found a longer one from line " + std::to_string(first_line) +
                       " (a plain file is one document where no line holding only % separates "
                       "documents): separate them so, or give the text as JSON lines");
    doc += line;
    if (newline) doc += '\n';
  }
  if (!any) return std::nullopt;
  return doc;
}

DocumentReader::DocumentReader(const std::vector<std::string>& inputs, std::string jsonl_key,
                               size_t max_document_bytes, TextFormat format)
    : state_(std::make_unique<State>()) {
  state_->jsonl_key = std::move(jsonl_key);
  state_->max_document_bytes = max_document_bytes;
  state_->format = format;
  // A file reached twice (named twice, by two paths, or named and in a directory given too)
  // would be encoded twice: its documents twice in the corpus, on both sides of a validation
  // split.
  std::map<std::pair<uint64_t, uint64_t>, std::string> seen;  // and how each was reached
  for (const std::string& input : inputs) {
    for (fs::path& file : files_of(input)) {
      const std::string reached =
          file.string() + (file == fs::path(input) ? "" : " in directory " + input);
      if (const auto id = file_identity(file.string())) {
        const auto [earlier, added] = seen.emplace(*id, reached);
        if (!added)
          throw InputError("text input " + reached + ": the same file as " + earlier->second +
                           ", read already; give each input once");
      }
      std::error_code ec;
      const uintmax_t size = fs::file_size(file, ec);
      if (!ec) state_->total_bytes += static_cast<int64_t>(size);
      state_->files.push_back(std::move(file));
    }
  }
}

DocumentReader::~DocumentReader() = default;
DocumentReader::DocumentReader(DocumentReader&&) noexcept = default;
DocumentReader& DocumentReader::operator=(DocumentReader&&) noexcept = default;

std::optional<std::string> DocumentReader::next() {
  State& s = *state_;
  for (;;) {
    if (!s.current && !s.open_next_file()) return std::nullopt;
    std::optional<std::string> doc = s.json_lines ? s.next_json_document() : s.next_text_document();
    if (!doc) {
      s.close_file();
    } else if (!blank(*doc)) {
      return doc;
    }
  }
}

bool DocumentReader::next_chunk(std::vector<std::string>& documents, size_t max_bytes) {
  documents.clear();
  size_t bytes = 0;
  while (bytes < max_bytes) {
    std::optional<std::string> doc = next();
    if (!doc) break;
    bytes += doc->size();
    documents.push_back(std::move(*doc));
  }
  return !documents.empty();
}

int64_t DocumentReader::total_bytes() const {
  return state_->total_bytes;
}

int64_t DocumentReader::bytes_read() const {
  return state_->done_bytes + (state_->current ? state_->current->file_bytes_read() : 0);
}

std::vector<std::string> read_documents(const std::vector<std::string>& inputs) {
  DocumentReader reader(inputs);
  std::vector<std::string> documents;
  while (std::optional<std::string> doc = reader.next()) documents.push_back(std::move(*doc));
  return documents;
}

std::string remove_overstrike(std::string_view text) {
  if (text.find('\b') == std::string_view::npos) return std::string(text);
  std::string out;
  out.reserve(text.size());
  size_t line_start = 0, cursor = 0;  // cursor indexes `out`; backspace stops at the line start
  for (char c : text) {
    if (c == '\b') {
      if (cursor > line_start) --cursor;
    } else if (c == '\n') {
      out += '\n';
      line_start = cursor = out.size();
    } else if (cursor < out.size()) {
      if (c != '_') out[cursor] = c;
      ++cursor;
    } else {
      out += c;
      cursor = out.size();
    }
  }
  return out;
}

}  // namespace tessera
