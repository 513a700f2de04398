// Text inputs read as they are or through zlib's inflate (gzip) and libzstd's streaming decoder
// (see io/compressed_input.h). The file is read in blocks of kRawBlock; the decoder takes its
// input from the block and writes straight into the caller's buffer.
#include "io/compressed_input.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace tessera {

namespace fs = std::filesystem;

namespace {

constexpr size_t kRawBlock = size_t{1} << 20;

enum class Format { Plain, Gzip, Zstd };

}  // namespace

struct InputBytes::Impl {
  fs::path path;
  std::ifstream in;
  std::vector<char> raw = std::vector<char>(kRawBlock);
  size_t raw_pos = 0, raw_len = 0;  // raw[raw_pos, raw_len): read from the file, not yet used
  bool raw_eof = false;
  int64_t fetched = 0;  // bytes read from the file
  Format format = Format::Plain;
  bool inside = false;     // a gzip member or zstd frame has begun and not yet ended
  int64_t unit_start = 0;  // the byte of the file where the last member or frame began
  z_stream z{};
  bool z_ready = false;
  ZSTD_DCtx* zstd = nullptr;

  ~Impl() {
    if (z_ready) inflateEnd(&z);
    ZSTD_freeDCtx(zstd);
  }

  std::string where() const { return "text input " + path.string(); }
  int64_t used() const { return fetched - static_cast<int64_t>(raw_len - raw_pos); }

  // Whether raw holds unused bytes, reading the next block once it is used up: false at the end
  // of the file.
  bool fill() {
    if (raw_pos < raw_len) return true;
    if (raw_eof) return false;
    in.read(raw.data(), static_cast<std::streamsize>(raw.size()));
    if (in.bad()) throw InputError(where() + ": read failed");
    raw_pos = 0;
    raw_len = static_cast<size_t>(in.gcount());
    fetched += static_cast<int64_t>(raw_len);
    raw_eof = in.eof();
    return raw_len > 0;
  }

  // Where a decoder stops is no guide to where the damage is (libzstd takes a whole block in
  // first): the member or frame it lies in is named by the byte it begins at.
  [[noreturn]] void damaged(const char* name, const char* unit, const std::string& reason) const {
    throw InputError(where() + ": damaged " + name + " data in the " + unit +
                     " that begins at byte " + std::to_string(unit_start) + " of the file (" +
                     reason + ")");
  }

  // Zero bytes after the last gzip member (a tape or dd block's padding), which gzip itself
  // ignores: true when nothing else follows, up to the end of the file.
  bool only_zeros_left() {
    while (fill()) {
      if (raw[raw_pos] != 0) return false;
      ++raw_pos;
    }
    return true;
  }

  // One step of the decoder into out[0, n), with the unused input (none at the end of the file):
  // the bytes it wrote, perhaps none.
  size_t inflate_some(char* out, size_t n, bool more) {
    if (!inside) {  // a member begins: gzip files may be several concatenated (pigz, bgzip)
      inflateReset(&z);
      inside = true;
      unit_start = used();
    }
    z.next_in = more ? reinterpret_cast<Bytef*>(raw.data() + raw_pos) : nullptr;
    z.avail_in = more ? static_cast<uInt>(raw_len - raw_pos) : 0;
    z.next_out = reinterpret_cast<Bytef*>(out);
    z.avail_out = static_cast<uInt>(n);
    const int r = inflate(&z, Z_NO_FLUSH);
    raw_pos = raw_len - (more ? z.avail_in : 0);
    if (r == Z_STREAM_END)
      inside = false;
    else if (r == Z_MEM_ERROR)
      throw std::bad_alloc();
    else if (r != Z_OK && r != Z_BUF_ERROR)
      damaged("gzip", "member", std::string("zlib: ").append(z.msg ? z.msg : "not gzip data"));
    return n - z.avail_out;
  }

  size_t zstd_some(char* out, size_t n, bool more) {
    if (!inside) unit_start = used();
    ZSTD_inBuffer input{more ? raw.data() + raw_pos : nullptr, more ? raw_len - raw_pos : 0, 0};
    ZSTD_outBuffer output{out, n, 0};
    const size_t r = ZSTD_decompressStream(zstd, &output, &input);
    raw_pos += input.pos;
    if (ZSTD_isError(r)) damaged("zstd", "frame", std::string("libzstd: ") + ZSTD_getErrorName(r));
    inside = r != 0;  // 0: a frame has ended and all of it is out
    return output.pos;
  }
};

InputBytes::InputBytes(const fs::path& path) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.path = path;
  s.in.open(path, std::ios::binary);
  if (!s.in) throw InputError(s.where() + ": cannot open for reading");
  s.fill();  // the first block, which read() would take first, tells the format
  const std::string_view head(s.raw.data(), s.raw_len);
  if (head.starts_with("\x1f\x8b")) {
    s.format = Format::Gzip;
    if (inflateInit2(&s.z, 16 + MAX_WBITS) != Z_OK) throw std::bad_alloc();  // gzip wrapper only
    s.z_ready = true;
  } else if (head.starts_with("\x28\xb5\x2f\xfd") ||
             (head.size() >= 4 && (head[0] & 0xF0) == 0x50 &&
              head.substr(1, 3) == "\x2a\x4d\x18")) {
    // A frame, or a skippable frame first (pzstd writes one): libzstd reads both.
    s.format = Format::Zstd;
    s.zstd = ZSTD_createDCtx();
    if (s.zstd == nullptr) throw std::bad_alloc();
    // Frames written with a long window (zstd --long=31) need more than libzstd's default limit
    // of 2^27 bytes: up to zstd's largest, 2^31. A window is only as large as its frame asks.
    ZSTD_DCtx_setParameter(s.zstd, ZSTD_d_windowLogMax, 31);
  }
  struct Refused {
    std::string_view magic;
    const char* format;  // with its article
  };
  static const Refused kRefused[] = {{std::string_view("\xfd\x37\x7a\x58\x5a\x00", 6), "an xz"},
                                     {"\x42\x5a\x68", "a bzip2"},
                                     {"\x50\x4b\x03\x04", "a zip"}};
  for (const Refused& r : kRefused)
    if (head.starts_with(r.magic))
      throw InputError(s.where() +
                       ": expected plain text or JSON lines, as they are or compressed with gzip "
                       "or zstd, found " +
                       r.format + "-compressed file; decompress it first");
}

InputBytes::~InputBytes() = default;

size_t InputBytes::read(char* out, size_t n) {
  Impl& s = *impl_;
  if (n == 0) return 0;
  if (s.format == Format::Plain) {
    if (!s.fill()) return 0;
    const size_t k = std::min(n, s.raw_len - s.raw_pos);
    std::memcpy(out, s.raw.data() + s.raw_pos, k);
    s.raw_pos += k;
    return k;
  }
  for (;;) {
    // At the end of the file the decoder may still hold output of what it took in.
    const bool more = s.fill();
    if (!more && !s.inside) return 0;
    if (s.format == Format::Gzip && !s.inside && s.raw[s.raw_pos] == 0 && s.only_zeros_left())
      return 0;
    const size_t k =
        s.format == Format::Gzip ? s.inflate_some(out, n, more) : s.zstd_some(out, n, more);
    if (k > 0) return k;
    if (!more && s.inside)
      throw InputError(s.where() + ": expected the rest of a " + compression() +
                       (s.format == Format::Gzip ? " member" : " frame") +
                       ", found the end of the file after " + std::to_string(s.fetched) +
                       " bytes (a truncated download or copy?)");
  }
}

int64_t InputBytes::file_bytes_read() const {
  return impl_->used();
}

const char* InputBytes::compression() const {
  switch (impl_->format) {
    case Format::Gzip:
      return "gzip";
    case Format::Zstd:
      return "zstd";
    case Format::Plain:
      break;
  }
  return "";
}

}  // namespace tessera
