// Megatron indexed dataset reader and writer, byte for byte as Megatron-LM's
// megatron/core/datasets/indexed_dataset.py (_IndexWriter / _IndexReader) lays out the .idx:
// magic "MMIDIDX\0\0", <Q version 1, <B dtype code, <Q sequence count S, <Q document count D,
// int32 sizes[S], int64 byte pointers[S], int64 document indices[D] (0 .. S).
#include "io/indexed_dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/error.h"

namespace tessera {

static_assert(std::endian::native == std::endian::little,
              "the .idx/.bin formats are little-endian and read here without byte swapping");

namespace {

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr uint64_t kVersion = 1;
constexpr int64_t kHeaderBytes = 9 + 8 + 1 + 8 + 8;
constexpr uint8_t kCodeI32 = 4, kCodeU16 = 8;

[[noreturn]] void corpus_error(const std::string& file, const std::string& what) {
  throw InputError("corpus " + file + ": " + what);
}

std::string errno_text() {
  return std::strerror(errno);
}

// Megatron's dtype codes, for messages about codes tessera does not read.
const char* megatron_dtype_name(uint64_t code) {
  static const char* names[] = {"",      "uint8",   "int8",    "int16", "int32",
                                "int64", "float64", "float32", "uint16"};
  return code >= 1 && code <= 8 ? names[code] : nullptr;
}

// Bytes as printable ASCII, anything else (and a backslash) as \xhh: a header's magic shown byte
// for byte.
std::string escaped_bytes(const char* bytes, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(bytes[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      s += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      s += buf;
    }
  }
  return s;
}

void write_all(std::FILE* f, const void* data, size_t bytes, const std::string& path) {
  if (bytes > 0 && std::fwrite(data, 1, bytes, f) != bytes)
    corpus_error(path, "write failed (" + errno_text() + ")");
}

// Flushes to the disk and closes, so that a rename afterwards exposes only complete data.
void sync_close(std::FILE* f, const std::string& path) {
  bool ok = std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  std::string err = ok ? "" : errno_text();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) corpus_error(path, "cannot flush to disk (" + (err.empty() ? errno_text() : err) + ")");
}

}  // namespace

DType token_dtype_for_vocab(int64_t vocab) {
  return vocab < 65500 ? DType::U16 : DType::I32;
}

// ---------------------------------------------------------------------------------------------
// Writer

IndexedDatasetWriter::IndexedDatasetWriter(std::string prefix, DType token_dtype)
    : prefix_(std::move(prefix)), dtype_(token_dtype) {
  TESSERA_CHECK(dtype_ == DType::U16 || dtype_ == DType::I32,
                "corpus tokens are uint16 or int32, not " + dtype_name(dtype_));
  std::string tmp = prefix_ + ".bin.tmp";
  bin_ = std::fopen(tmp.c_str(), "wb");
  if (!bin_) corpus_error(tmp, "cannot create (" + errno_text() + ")");
}

IndexedDatasetWriter::~IndexedDatasetWriter() {
  if (finished_) return;
  if (bin_) std::fclose(bin_);
  std::error_code ec;
  std::filesystem::remove(prefix_ + ".bin.tmp", ec);
  std::filesystem::remove(prefix_ + ".idx.tmp", ec);
}

void IndexedDatasetWriter::add_document(std::span<const int32_t> tokens) {
  TESSERA_CHECK(!finished_, "add_document after finish on " + prefix_);
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    corpus_error(prefix_ + ".bin", "a document of " + std::to_string(tokens.size()) +
                                       " tokens does not fit the int32 size field");
  const int64_t max_id = dtype_ == DType::U16 ? 65535 : std::numeric_limits<int32_t>::max();
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] > max_id)
      corpus_error(prefix_ + ".bin", "token id " + std::to_string(tokens[i]) + " (document " +
                                         std::to_string(sizes_.size()) + ", position " +
                                         std::to_string(i) + ") does not fit " +
                                         dtype_name(dtype_) + " tokens");
  }
  const std::string path = prefix_ + ".bin.tmp";
  if (dtype_ == DType::I32) {
    write_all(bin_, tokens.data(), tokens.size_bytes(), path);
  } else {
    std::vector<uint16_t> narrow(tokens.begin(), tokens.end());
    write_all(bin_, narrow.data(), narrow.size() * sizeof(uint16_t), path);
  }
  sizes_.push_back(static_cast<int32_t>(tokens.size()));
  num_tokens_ += static_cast<int64_t>(tokens.size());
}

void IndexedDatasetWriter::finish() {
  TESSERA_CHECK(!finished_, "finish called twice on " + prefix_);
  const std::string bin_tmp = prefix_ + ".bin.tmp", idx_tmp = prefix_ + ".idx.tmp";
  sync_close(bin_, bin_tmp);
  bin_ = nullptr;

  std::FILE* idx = std::fopen(idx_tmp.c_str(), "wb");
  if (!idx) corpus_error(idx_tmp, "cannot create (" + errno_text() + ")");
  const uint64_t seqs = sizes_.size(), docs = sizes_.size() + 1;
  const uint8_t code = dtype_ == DType::U16 ? kCodeU16 : kCodeI32;
  std::vector<int64_t> pointers(seqs), doc_idx(docs);
  int64_t offset = 0;
  for (size_t i = 0; i < seqs; ++i) {
    pointers[i] = offset;
    offset += int64_t{sizes_[i]} * static_cast<int64_t>(dtype_size(dtype_));
  }
  for (size_t i = 0; i < docs; ++i) doc_idx[i] = static_cast<int64_t>(i);
  try {
    write_all(idx, kMagic, sizeof kMagic, idx_tmp);
    write_all(idx, &kVersion, 8, idx_tmp);
    write_all(idx, &code, 1, idx_tmp);
    write_all(idx, &seqs, 8, idx_tmp);
    write_all(idx, &docs, 8, idx_tmp);
    write_all(idx, sizes_.data(), seqs * sizeof(int32_t), idx_tmp);
    write_all(idx, pointers.data(), seqs * sizeof(int64_t), idx_tmp);
    write_all(idx, doc_idx.data(), docs * sizeof(int64_t), idx_tmp);
  } catch (...) {
    std::fclose(idx);
    throw;
  }
  sync_close(idx, idx_tmp);

  // .bin before .idx: readers look for the .idx, which must never precede its .bin.
  for (const char* ext : {".bin", ".idx"}) {
    std::string tmp = prefix_ + ext + ".tmp", real = prefix_ + ext;
    if (std::rename(tmp.c_str(), real.c_str()) != 0)
      corpus_error(real, "cannot rename " + tmp + " into place (" + errno_text() + ")");
  }
  finished_ = true;
}

// ---------------------------------------------------------------------------------------------
// Reader

struct IndexedDataset::Mapping {
  const void* data = nullptr;
  size_t bytes = 0;
  ~Mapping() {
    if (data) ::munmap(const_cast<void*>(data), bytes);
  }
};

namespace {

std::string missing_file_hint(const std::string& prefix) {
  for (const char* ext : {".idx", ".bin"}) {
    if (prefix.ends_with(ext) && std::filesystem::exists(prefix))
      return " (give the prefix without " + std::string(ext) + ": " +
             prefix.substr(0, prefix.size() - 4) + ")";
  }
  return " (make one with `tessera tokenize encode`)";
}

template <typename T>
std::vector<T> read_array(std::ifstream& in, uint64_t n, const std::string& path) {
  std::vector<T> v(n);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * sizeof(T)));
  if (!in) corpus_error(path, "read failed");
  return v;
}

struct Header {
  DType dtype;
  uint64_t seqs, docs;
};

// Reads and checks the fixed header, and that the counts it gives match the file's size.
Header read_header(std::ifstream& in, const std::string& path, uint64_t file_bytes) {
  char h[kHeaderBytes];
  if (file_bytes < static_cast<uint64_t>(kHeaderBytes) || !in.read(h, kHeaderBytes))
    corpus_error(path, "expected at least the " + std::to_string(kHeaderBytes) +
                           "-byte header, found a file of " + std::to_string(file_bytes) +
                           " bytes");
  if (std::memcmp(h, kMagic, sizeof kMagic) != 0)
    corpus_error(path,
                 "expected magic \"MMIDIDX\\x00\\x00\" (a Megatron indexed dataset), "
                 "found \"" +
                     escaped_bytes(h, sizeof kMagic) + "\"");
  uint64_t version;
  uint8_t code;
  Header header{DType::U16, 0, 0};
  std::memcpy(&version, h + 9, 8);
  std::memcpy(&code, h + 17, 1);
  std::memcpy(&header.seqs, h + 18, 8);
  std::memcpy(&header.docs, h + 26, 8);
  if (version != kVersion)
    corpus_error(path, "expected version 1, found version " + std::to_string(version));
  const char* name = megatron_dtype_name(code);
  if (!name)
    corpus_error(path, "expected a dtype code in 1..8, found unknown code " + std::to_string(code));
  if (code != kCodeU16 && code != kCodeI32)
    corpus_error(path, "expected token dtype code 8 (uint16) or 4 (int32), found code " +
                           std::to_string(code) + " (" + name + "), which tessera does not read");
  header.dtype = code == kCodeU16 ? DType::U16 : DType::I32;
  // Bound the counts by the file size before multiplying, so a corrupt count cannot overflow.
  const auto [seqs, docs] = std::pair(header.seqs, header.docs);
  const bool bounded = seqs <= file_bytes && docs <= file_bytes;
  if (!bounded || kHeaderBytes + 12 * seqs + 8 * docs != file_bytes)
    corpus_error(path, "the header's counts (" + std::to_string(seqs) + " sequences, " +
                           std::to_string(docs) + " document indices) need " +
                           (bounded ? std::to_string(kHeaderBytes + 12 * seqs + 8 * docs) + " bytes"
                                    : std::string("more bytes than the file has")) +
                           ", found a file of " + std::to_string(file_bytes) + " bytes");
  return header;
}

// Maps the .bin read-only after checking that its size is what the index describes.
void* map_bin(const std::string& path, int64_t tokens, int64_t item) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) corpus_error(path, "cannot open (" + errno_text() + ")");
  struct stat st {};
  const bool stat_ok = ::fstat(fd, &st) == 0;
  const std::string stat_err = stat_ok ? "" : errno_text();
  const uint64_t expected = static_cast<uint64_t>(tokens * item);
  const uint64_t found = static_cast<uint64_t>(st.st_size);
  if (!stat_ok || found != expected) {
    ::close(fd);
    if (!stat_ok) corpus_error(path, "cannot stat (" + stat_err + ")");
    corpus_error(path, "expected " + std::to_string(expected) + " bytes (" +
                           std::to_string(tokens) + " tokens x " + std::to_string(item) +
                           " as the index says), found " + std::to_string(found) + " bytes (" +
                           (found < expected ? "truncated" : "longer than its index") + ")");
  }
  void* p = ::mmap(nullptr, expected, PROT_READ, MAP_SHARED, fd, 0);
  const std::string err = errno_text();
  ::close(fd);
  if (p == MAP_FAILED) corpus_error(path, "cannot memory-map (" + err + ")");
  return p;
}

}  // namespace

IndexedDataset IndexedDataset::open(const std::string& prefix) {
  namespace fs = std::filesystem;
  IndexedDataset ds;
  ds.prefix_ = prefix;
  const std::string idx_path = ds.idx_path(), bin_path = ds.bin_path();
  std::error_code ec;
  if (!fs::is_regular_file(idx_path, ec))
    corpus_error(idx_path, fs::exists(idx_path, ec)
                               ? "expected a file, found " + found_instead_of_file(idx_path)
                               : "no such file" + missing_file_hint(prefix));
  const uint64_t idx_bytes = fs::file_size(idx_path, ec);
  std::ifstream in(idx_path, std::ios::binary);
  if (ec || !in) corpus_error(idx_path, "cannot open for reading");
  const Header header = read_header(in, idx_path, idx_bytes);
  ds.dtype_ = header.dtype;
  const auto sizes = read_array<int32_t>(in, header.seqs, idx_path);
  const auto pointers = read_array<int64_t>(in, header.seqs, idx_path);
  ds.doc_idx_ = read_array<int64_t>(in, header.docs, idx_path);

  const int64_t item = static_cast<int64_t>(dtype_size(ds.dtype_));
  ds.seq_start_.assign(header.seqs + 1, 0);
  for (uint64_t i = 0; i < header.seqs; ++i) {
    if (sizes[i] < 0)
      corpus_error(idx_path, "expected sequence sizes >= 0, found " + std::to_string(sizes[i]) +
                                 " for sequence " + std::to_string(i));
    const int64_t expected = ds.seq_start_[i] * item;
    if (pointers[i] != expected)
      corpus_error(idx_path, "pointer of sequence " + std::to_string(i) + " is " +
                                 std::to_string(pointers[i]) + ", expected " +
                                 std::to_string(expected) +
                                 " (the previous pointer plus its size x " + std::to_string(item) +
                                 " bytes)");
    ds.seq_start_[i + 1] = ds.seq_start_[i] + sizes[i];
  }
  const auto& d = ds.doc_idx_;
  const auto seqs = static_cast<int64_t>(header.seqs);
  if (d.empty() || d.front() != 0 || d.back() != seqs || !std::is_sorted(d.begin(), d.end()))
    corpus_error(idx_path,
                 "expected document indices rising from 0 to the sequence count " +
                     std::to_string(seqs) + ", found " +
                     (d.empty() ? std::string("none")
                                : std::to_string(d.front()) + " .. " + std::to_string(d.back()) +
                                      (std::is_sorted(d.begin(), d.end()) ? "" : ", not rising")));
  if (ds.num_tokens() == 0)
    corpus_error(idx_path, "empty corpus: expected at least one token, found " +
                               std::to_string(seqs) + " sequences holding 0 tokens");

  if (!fs::is_regular_file(bin_path, ec))
    corpus_error(bin_path, fs::exists(bin_path, ec)
                               ? "expected a file, found " + found_instead_of_file(bin_path)
                               : "no such file (its index " + idx_path + " exists)");
  auto mapping = std::make_shared<Mapping>();
  mapping->data = map_bin(bin_path, ds.num_tokens(), item);
  mapping->bytes = static_cast<size_t>(ds.num_tokens() * item);
  ds.bin_ = std::move(mapping);
  return ds;
}

int64_t IndexedDataset::document_of_token(int64_t pos) const {
  TESSERA_CHECK(pos >= 0 && pos < num_tokens(),
                "token position " + std::to_string(pos) + " outside the corpus " + prefix_);
  const int64_t seq =
      std::upper_bound(seq_start_.begin(), seq_start_.end(), pos) - seq_start_.begin() - 1;
  return std::upper_bound(doc_idx_.begin(), doc_idx_.end(), seq) - doc_idx_.begin() - 1;
}

const void* IndexedDataset::token_data() const {
  return bin_->data;
}

int32_t IndexedDataset::token(int64_t pos) const {
  int32_t t;
  read_tokens(pos, 1, &t);
  return t;
}

void IndexedDataset::read_tokens(int64_t start, int64_t count, int32_t* out) const {
  // Written so that no sum can overflow, whatever the arguments.
  TESSERA_CHECK(start >= 0 && count >= 0 && start <= num_tokens() && count <= num_tokens() - start,
                std::to_string(count) + " tokens from position " + std::to_string(start) +
                    " reach outside the " + std::to_string(num_tokens()) + " tokens of " + prefix_);
  if (dtype_ == DType::I32) {
    std::memcpy(out, static_cast<const int32_t*>(bin_->data) + start,
                static_cast<size_t>(count) * sizeof(int32_t));
  } else {
    const uint16_t* src = static_cast<const uint16_t*>(bin_->data) + start;
    for (int64_t i = 0; i < count; ++i) out[i] = src[i];
  }
}

}  // namespace tessera
