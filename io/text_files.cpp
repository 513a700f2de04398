// Reading plain-text inputs into documents (see io/text_files.h).
#include "io/text_files.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.h"

namespace tessera {

namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("text input " + path.string() + ": cannot open for reading");
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool blank(std::string_view s) {
  return s.find_first_not_of(" \t\r\n\f\v") == std::string_view::npos;
}

std::vector<fs::path> files_of(const std::string& input) {
  std::error_code ec;
  const fs::file_status st = fs::status(input, ec);
  if (!fs::exists(st)) throw InputError("text input " + input + ": no such file or directory");
  if (!fs::is_directory(st)) return {fs::path(input)};
  std::vector<fs::path> files;
  for (const fs::directory_entry& e : fs::directory_iterator(input)) {
    const std::string name = e.path().filename().string();
    if (e.is_symlink() || !e.is_regular_file() || name.ends_with(".dat") || name.ends_with(".u8"))
      continue;
    files.push_back(e.path());
  }
  if (files.empty())
    throw InputError("text input " + input +
                     ": expected text files in this directory, found none (symlinks and "
                     ".dat/.u8 files are skipped)");
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

std::vector<std::string> split_fortunes(std::string_view text) {
  std::vector<std::string> entries;
  size_t entry_start = 0, line_start = 0;
  while (line_start < text.size()) {
    size_t line_end = text.find('\n', line_start);
    const size_t next = line_end == std::string_view::npos ? text.size() : line_end + 1;
    if (line_end == std::string_view::npos) line_end = text.size();
    if (text.substr(line_start, line_end - line_start) == "%") {
      entries.emplace_back(text.substr(entry_start, line_start - entry_start));
      entry_start = next;
    }
    line_start = next;
  }
  entries.emplace_back(text.substr(entry_start));
  return entries;
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

std::vector<std::string> read_documents(const std::vector<std::string>& inputs) {
  std::vector<std::string> documents;
  for (const std::string& input : inputs) {
    for (const fs::path& file : files_of(input)) {
      for (std::string& entry : split_fortunes(remove_overstrike(read_file(file)))) {
        if (!blank(entry)) documents.push_back(std::move(entry));
      }
    }
  }
  return documents;
}

}  // namespace tessera
