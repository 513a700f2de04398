// Megatron indexed dataset reader and writer, byte for byte as Megatron-LM's
// megatron/core/datasets/indexed_dataset.py (_IndexWriter / _IndexReader) lays out the .idx:
// magic "MMIDIDX\0\0", <Q version 1, <B dtype code, <Q sequence count S, <Q document count D,
// int32 sizes[S], int64 byte pointers[S], int64 document indices[D] (0 .. S).
#include "io/indexed_dataset.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <limits>
#include <utility>

#include "core/error.h"
#include "io/file_kind.h"
#include "io/llmc_shard.h"

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

// Creates a part file of the writer, never over one there already: that is another encode's into
// the same prefix under way (which "wb" would truncate under it, each then writing into the
// other's file), or one killed before it could remove its part files.
std::FILE* create_part_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "wbx");
  if (f) return f;
  if (errno == EEXIST)
    corpus_error(path,
                 "exists already: another `tessera tokenize encode` into this prefix is "
                 "under way, or one was killed before it removed its part files; remove it "
                 "once no encode writes it");
  corpus_error(path, "cannot create (" + errno_text() + ")");
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
  bin_ = create_part_file(prefix_ + ".bin.tmp");
}

IndexedDatasetWriter::~IndexedDatasetWriter() {
  if (finished_) return;
  if (bin_) std::fclose(bin_);
  std::error_code ec;
  std::filesystem::remove(prefix_ + ".bin.tmp", ec);
  if (idx_created_) std::filesystem::remove(prefix_ + ".idx.tmp", ec);
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
  sync_close(std::exchange(bin_, nullptr), bin_tmp);  // closed even when it throws

  std::FILE* idx = create_part_file(idx_tmp);
  idx_created_ = true;
  const uint64_t seqs = sizes_.size(), docs = sizes_.size() + 1;
  const uint8_t code = dtype_ == DType::U16 ? kCodeU16 : kCodeI32;
  // The pointers and document indices are written as computed, a block at a time: the index
  // holds 4 bytes a document while encoding (its size), not 20 at the end (8 GB more per 10^9
  // documents).
  std::vector<int64_t> block;
  block.reserve(size_t{1} << 16);
  const auto write_int64s = [&](uint64_t count, const auto& value_at) {
    for (uint64_t i = 0; i < count; i += block.capacity()) {
      block.clear();
      for (uint64_t j = i; j < std::min<uint64_t>(count, i + block.capacity()); ++j)
        block.push_back(value_at(j));
      write_all(idx, block.data(), block.size() * sizeof(int64_t), idx_tmp);
    }
  };
  try {
    write_all(idx, kMagic, sizeof kMagic, idx_tmp);
    write_all(idx, &kVersion, 8, idx_tmp);
    write_all(idx, &code, 1, idx_tmp);
    write_all(idx, &seqs, 8, idx_tmp);
    write_all(idx, &docs, 8, idx_tmp);
    write_all(idx, sizes_.data(), seqs * sizeof(int32_t), idx_tmp);
    int64_t offset = 0;  // each sequence's byte offset in the .bin: the sizes before it
    write_int64s(seqs, [&](uint64_t i) {
      const int64_t at = offset;
      offset += int64_t{sizes_[i]} * static_cast<int64_t>(dtype_size(dtype_));
      return at;
    });
    write_int64s(docs, [](uint64_t i) { return static_cast<int64_t>(i); });
  } catch (...) {
    std::fclose(idx);
    throw;
  }
  sync_close(idx, idx_tmp);

  // .bin before .idx: readers look for the .idx, which must never precede its .bin. A stop
  // signal between the two renames would leave the new .bin beside an old .idx (or none): the
  // signals that end an encode (tokenize_command.cpp) are held until both are in place. Held in
  // this thread: the caller has no other thread that takes them (encode joins its workers
  // before it finishes the writer).
  struct HeldStopSignals {
    sigset_t before;
    HeldStopSignals() {
      sigset_t stops;
      sigemptyset(&stops);
      for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&stops, s);
      pthread_sigmask(SIG_BLOCK, &stops, &before);
    }
    ~HeldStopSignals() { pthread_sigmask(SIG_SETMASK, &before, nullptr); }
  } held;
  for (const char* ext : {".bin", ".idx"}) {
    std::string tmp = prefix_ + ext + ".tmp", real = prefix_ + ext;
    if (std::rename(tmp.c_str(), real.c_str()) != 0)
      corpus_error(real, "cannot rename " + tmp + " into place (" + errno_text() + ")");
  }
  finished_ = true;
}

// ---------------------------------------------------------------------------------------------
// Reader

namespace {

std::string missing_file_hint(const std::string& prefix) {
  std::error_code ec;
  if (std::filesystem::is_directory(prefix, ec))
    return " (" + prefix + " is a directory: give the corpus' prefix, PREFIX of PREFIX.bin and " +
           "PREFIX.idx, or an llm.c shard)";
  for (const char* ext : {".idx", ".bin"}) {
    if (!prefix.ends_with(ext) || !std::filesystem::exists(prefix, ec)) continue;
    const std::string stem = prefix.substr(0, prefix.size() - 4);
    if (std::filesystem::exists(stem + ".idx", ec))
      return " (give the prefix without " + std::string(ext) + ": " + stem + ")";
    return " (" + prefix + " is not an llm.c shard, and no " + stem +
           ".idx lies beside it to make it a Megatron-LM corpus)";
  }
  if (is_llmc_shard(prefix + ".bin"))  // named as a prefix
    return " (" + prefix +
           ".bin is there without an .idx: an llm.c shard is given by its file "
           "name, " +
           prefix + ".bin)";
  return " (make one with `tessera tokenize encode`)";
}

template <typename T>
T load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

struct Header {
  DType dtype;
  uint64_t seqs, docs;
};

// Checks the fixed header at `h` (the mapped .idx of `file_bytes`), and that the counts it gives
// match the file's size.
Header read_header(const char* h, const std::string& path, uint64_t file_bytes) {
  if (file_bytes < static_cast<uint64_t>(kHeaderBytes))
    corpus_error(path, "expected at least the " + std::to_string(kHeaderBytes) +
                           "-byte header, found a file of " + std::to_string(file_bytes) +
                           " bytes");
  if (std::memcmp(h, kMagic, sizeof kMagic) != 0)
    corpus_error(path,
                 "expected magic \"MMIDIDX\\x00\\x00\" (a Megatron indexed dataset), "
                 "found \"" +
                     escaped_bytes(h, sizeof kMagic) + "\"");
  const auto version = load<uint64_t>(h + 9);
  const auto code = load<uint8_t>(h + 17);
  Header header{DType::U16, load<uint64_t>(h + 18), load<uint64_t>(h + 26)};
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

}  // namespace

std::shared_ptr<const MappedFile> IndexedDataset::map_file(const std::string& path,
                                                           int64_t expected,
                                                           const std::string& what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) corpus_error(path, "cannot open (" + errno_text() + ")");
  struct stat st {};
  const bool stat_ok = ::fstat(fd, &st) == 0;
  const std::string stat_err = stat_ok ? "" : errno_text();
  const uint64_t found = static_cast<uint64_t>(st.st_size);
  if (!stat_ok || (expected >= 0 && found != static_cast<uint64_t>(expected))) {
    ::close(fd);
    if (!stat_ok) corpus_error(path, "cannot stat (" + stat_err + ")");
    corpus_error(path, "expected " + std::to_string(expected) + " bytes (" + what + "), found " +
                           std::to_string(found) + " bytes (" +
                           (found < static_cast<uint64_t>(expected) ? "truncated"
                                                                    : "longer than its index") +
                           ")");
  }
  auto mapping = map_read_only(fd, static_cast<size_t>(found), path);
  const std::string err = errno_text();
  ::close(fd);
  if (!mapping) corpus_error(path, "cannot memory-map (" + err + ")");
  return mapping;
}

int64_t IndexedDataset::size_at(int64_t i) const {
  return load<int32_t>(static_cast<const char*>(idx_->data) + kHeaderBytes + 4 * i);
}

int64_t IndexedDataset::pointer_at(int64_t i) const {
  return load<int64_t>(static_cast<const char*>(idx_->data) + kHeaderBytes + 4 * sequences_ +
                       8 * i);
}

int64_t IndexedDataset::doc_at(int64_t i) const {
  return load<int64_t>(static_cast<const char*>(idx_->data) + kHeaderBytes + 12 * sequences_ +
                       8 * i);
}

int64_t IndexedDataset::sequence_length(int64_t seq) const {
  return size_at(seq);
}

int64_t IndexedDataset::sequence_start(int64_t seq) const {
  return seq == sequences_ ? num_tokens_
                           : pointer_at(seq) / static_cast<int64_t>(dtype_size(dtype_));
}

std::pair<int64_t, int64_t> part_of(int64_t n, int part, int parts) {
  TESSERA_CHECK(parts >= 1 && part >= 0 && part < parts,
                "part " + std::to_string(part) + " of " + std::to_string(parts));
  const int64_t begin = n / parts * part + std::min<int64_t>(part, n % parts);
  return {begin, begin + n / parts + (part < n % parts ? 1 : 0)};
}

std::string shared_part_note(const char* what, int64_t n, int part, int parts) {
  if (parts == 1) return "";
  const auto [begin, end] = part_of(n, part, parts);
  return std::string("; the ranks share this check, this one read ")
      .append(what)
      .append(" [")
      .append(std::to_string(begin))
      .append(", ")
      .append(std::to_string(end))
      .append(") of ")
      .append(std::to_string(n));
}

IndexedDataset IndexedDataset::open(const std::string& prefix, int part, int parts) {
  namespace fs = std::filesystem;
  IndexedDataset ds;
  ds.prefix_ = prefix;
  const std::string idx_path = ds.idx_path(), bin_path = ds.bin_path();
  std::error_code ec;
  if (!fs::is_regular_file(idx_path, ec))
    corpus_error(idx_path, fs::exists(idx_path, ec)
                               ? "expected a file, found " + non_regular_kind(idx_path)
                               : "no such file" + missing_file_hint(prefix));
  ds.idx_ = map_file(idx_path, -1, "");
  const Header header =
      read_header(static_cast<const char*>(ds.idx_->data), idx_path, ds.idx_->bytes);
  ds.dtype_ = header.dtype;
  ds.sequences_ = static_cast<int64_t>(header.seqs);
  ds.documents_ = static_cast<int64_t>(header.docs);

  // One pass over the mapped arrays: each pointer is the previous one plus the previous size, so
  // the sequences tile the .bin and sequence_start() is the pointer over the token size; and the
  // document indices rise. Every check compares an entry with the one before, so with `parts` > 1
  // this rank checks only its part of the entries and the parts together check them all.
  const int64_t item = static_cast<int64_t>(dtype_size(ds.dtype_));
  const int64_t seqs = ds.sequences_, docs = ds.documents_;
  const auto fail = [&](const std::string& what) {
    if (parts == 1) corpus_error(idx_path, what);
    throw SharedInputError("corpus " + idx_path + ": " + what);
  };
  const auto [first, end] = part_of(seqs, part, parts);
  for (int64_t i = first; i < end; ++i) {
    const int64_t size = ds.size_at(i), pointer = ds.pointer_at(i);
    if (size < 0)
      fail("expected sequence sizes >= 0, found " + std::to_string(size) + " for sequence " +
           std::to_string(i) + shared_part_note("sequences", seqs, part, parts));
    // The previous pointer may be anything here when another part holds it.
    int64_t expected = 0;
    const bool beyond =
        i > 0 && __builtin_add_overflow(ds.pointer_at(i - 1), ds.size_at(i - 1) * item, &expected);
    if (beyond || pointer != expected)
      fail("pointer of sequence " + std::to_string(i) + " is " + std::to_string(pointer) +
           ", expected " + (beyond ? std::string("one beyond 64 bits") : std::to_string(expected)) +
           " (the previous pointer plus its size x " + std::to_string(item) + " bytes)" +
           shared_part_note("sequences", seqs, part, parts));
  }
  const auto [first_doc, end_doc] = part_of(docs, part, parts);
  bool rising = true;
  for (int64_t i = std::max<int64_t>(first_doc, 1); i < end_doc && rising; ++i)
    rising = ds.doc_at(i - 1) <= ds.doc_at(i);
  if (docs == 0 || ds.doc_at(0) != 0 || ds.doc_at(docs - 1) != seqs || !rising)
    fail("expected document indices rising from 0 to the sequence count " + std::to_string(seqs) +
         ", found " +
         (docs == 0 ? std::string("none")
                    : std::to_string(ds.doc_at(0)) + " .. " + std::to_string(ds.doc_at(docs - 1)) +
                          (rising ? ""
                                  : ", not rising" +
                                        shared_part_note("document indices", docs, part, parts))));
  // The last sequence's end is the token count once the parts all hold. Every rank checks that
  // entry, so that none goes on (until the ranks agree) with a count made of a bad one.
  if (seqs > 0) {
    const int64_t size = ds.size_at(seqs - 1), pointer = ds.pointer_at(seqs - 1);
    if (size < 0 || pointer < 0 || pointer % item != 0 ||
        pointer / item > std::numeric_limits<int64_t>::max() / item - size)
      fail("expected the last sequence (" + std::to_string(seqs - 1) +
           ") to have a size >= 0 at a pointer that is a multiple of " + std::to_string(item) +
           " bytes, ending before byte 2^63, found size " + std::to_string(size) + " at " +
           std::to_string(pointer));
  }
  ds.num_tokens_ = seqs == 0 ? 0 : ds.pointer_at(seqs - 1) / item + ds.size_at(seqs - 1);
  if (ds.num_tokens() == 0)
    corpus_error(idx_path, "empty corpus: expected at least one token, found " +
                               std::to_string(seqs) + " sequences holding 0 tokens");

  if (!fs::is_regular_file(bin_path, ec))
    corpus_error(bin_path, fs::exists(bin_path, ec)
                               ? "expected a file, found " + non_regular_kind(bin_path)
                               : "no such file (its index " + idx_path + " exists)");
  ds.bin_ = map_file(
      bin_path, ds.num_tokens() * item,
      std::to_string(ds.num_tokens()) + " tokens x " + std::to_string(item) + " as the index says");
  return ds;
}

std::string IndexedDataset::token_place(int64_t pos) const {
  return "token " + std::to_string(pos) + " (document " + std::to_string(document_of_token(pos)) +
         " of " + std::to_string(num_documents()) + ", counted from 0)";
}

int64_t IndexedDataset::document_of_token(int64_t pos) const {
  TESSERA_CHECK(pos >= 0 && pos < num_tokens(),
                "token position " + std::to_string(pos) + " outside the corpus " + prefix_);
  // The last sequence that starts at or before pos (empty ones included), then the last
  // document that starts at or before that sequence.
  int64_t lo = 0, hi = sequences_;  // sequence_start(lo) <= pos < sequence_start(hi)
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (sequence_start(mid) <= pos ? lo : hi) = mid;
  }
  int64_t first = 0, last = documents_;  // doc_at(first) <= lo < doc_at(last), last may be D
  while (last - first > 1) {
    const int64_t mid = first + (last - first) / 2;
    (doc_at(mid) <= lo ? first : last) = mid;
  }
  return first;
}

int64_t IndexedDataset::document_last_token(int64_t d) const {
  TESSERA_CHECK(d >= 0 && d < num_documents(), "document " + std::to_string(d) + " outside " +
                                                   std::to_string(num_documents()) + " of " +
                                                   prefix_);
  const int64_t first = doc_at(d), next = doc_at(d + 1);  // its sequences: [first, next)
  if (first < 0 || next <= first || next > sequences_) return -1;
  const int64_t begin = sequence_start(first), end = sequence_start(next);
  return begin >= 0 && begin < end && end <= num_tokens_ ? end - 1 : -1;
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
