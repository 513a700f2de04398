// `tessera ckpt info|verify|diff|export` (see launcher/ckpt_command.h). Tensors are read in
// slabs of whole rows (at most kSlabElements values at a time), so a checkpoint larger than
// memory can be verified, compared and exported. info checks the MANIFEST's files and sizes, diff
// also model.h5's map of the shards; verify and export check every file's CRC-32C and that map
// too (verify_checkpoint).
#include "launcher/ckpt_command.h"

#include <algorithm>
#include <boost/program_options.hpp>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/number_text.h"
#include "io/checkpoint_io.h"
#include "io/durable_file.h"
#include "io/file_kind.h"
#include "io/text_files.h"
#include "launcher/checkpoint_choice.h"
#include "launcher/checkpointing.h"
#include "launcher/exit_codes.h"
#include "launcher/option_text.h"
#include "launcher/progress.h"

namespace tessera {

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

constexpr int kVerifyFailed = 1;  // README, "Exit codes": the checkpoint failed verification
constexpr int64_t kSlabElements = int64_t{1} << 22;

constexpr const char* kUsage =
    "usage: tessera ckpt VERB [options]\n"
    "  info DIR                                       step, layout, config, tensors\n"
    "  verify DIR                                     MANIFEST, CRCs, every tensor finite\n"
    "  diff DIR_A DIR_B                               largest and norm-relative differences\n"
    "  export DIR --to safetensors --output FILE      the model's tensors as one file\n"
    "`tessera ckpt VERB --help` lists a verb's options.\n";

using TensorInfo = CheckpointReader::TensorInfo;

// Parses the options after the verb into `vm` and the checkpoint directories given as arguments,
// `count` of them (`usage` names them: "DIR", "DIR_A DIR_B"), into `dirs`; false when --help was
// given.
bool parse(po::options_description& desc, const char* usage, size_t count, int argc, char** argv,
           po::variables_map& vm, std::vector<std::string>& dirs) {
  desc.add_options()("help,h", "print this help");
  const std::string command = "ckpt " + std::string(argv[1]);
  const std::string see_help = " (see tessera " + command + " --help)";
  const auto check = [&](const std::vector<std::string>& words) {
    if (words.size() == count) return;
    throw InputError(command + ": expected " +
                     (count > 1 ? "two checkpoint directories" : "a checkpoint directory") +
                     ", found " + words_found(words) + see_help);
  };
  const std::optional<std::vector<std::string>> words = parse_command_words(
      std::vector<std::string>(argv + 2, argv + argc), desc, vm, see_help, check);
  if (!words) {
    std::cout << "usage: tessera " << command << " " << usage << " [options]\n" << desc;
    return false;
  }
  // A run's checkpoints/ is not one checkpoint: each verb reads a step directory.
  for (const std::string& dir : *words) refuse_directory_of_checkpoints(command, dir);
  dirs = *words;
  return true;
}

// (offset, extent) of consecutive slabs of whole rows (dimension 0) that cover a tensor, each
// of at most kSlabElements values (or one row).
std::vector<std::pair<Shape, Shape>> row_slabs(const Shape& shape) {
  const int64_t rows = shape[0], row = rows ? shape_numel(shape) / rows : 0;
  const int64_t step = std::max<int64_t>(1, kSlabElements / std::max<int64_t>(row, 1));
  std::vector<std::pair<Shape, Shape>> slabs;
  for (int64_t begin = 0; begin < rows; begin += step) {
    Shape offset(shape.size(), 0), extent = shape;
    offset[0] = begin;
    extent[0] = std::min(step, rows - begin);
    slabs.emplace_back(offset, extent);
  }
  return slabs;
}

int64_t tensor_bytes(const TensorInfo& t) {
  return shape_numel(t.shape) * static_cast<int64_t>(dtype_size(t.dtype));
}

// A progress line over the tensors a verb reads (launcher/progress.h): their bytes as stored.
class TensorProgress {
 public:
  TensorProgress(std::string what, const std::vector<TensorInfo>& tensors)
      : count_(tensors.size()) {
    int64_t total = 0;
    for (const TensorInfo& t : tensors) total += tensor_bytes(t);
    line_.emplace(true, std::move(what), total);
  }
  // Before tensor t's slabs.
  void next_tensor(const TensorInfo& t) {
    item_ = static_cast<int64_t>(dtype_size(t.dtype));
    ++index_;
  }
  void read(const Tensor& slab) {
    done_ += slab.numel() * item_;
    if (line_->due())
      line_->print(done_, "tensor " + std::to_string(index_) + " of " + std::to_string(count_));
  }
  void end() {
    line_->finish(done_, "tensor " + std::to_string(index_) + " of " + std::to_string(count_));
  }

 private:
  std::optional<ProgressLine> line_;
  size_t count_, index_ = 0;
  int64_t item_ = 1, done_ = 0;
};

// Calls fn(slab) for each row slab of tensor t, read as `as`.
void for_each_slab(const CheckpointReader& r, const TensorInfo& t, DType as,
                   const std::function<void(const Tensor&)>& fn,
                   TensorProgress* progress = nullptr) {
  if (progress) progress->next_tensor(t);
  for (const auto& [offset, extent] : row_slabs(t.shape)) {
    Tensor slab(extent, as);
    r.read(t.name, t.shape, offset, slab);
    fn(slab);
    if (progress) progress->read(slab);
  }
}

std::string meta_int(const CheckpointMeta& m, const std::string& key) {
  const auto it = m.ints.find(key);
  return it == m.ints.end() ? "?" : std::to_string(it->second);
}

// "step 10, layout tp 2 pp 1 dp 2": which checkpoint this is.
std::string step_and_layout(const CheckpointMeta& m) {
  return "step " + meta_int(m, "step") + ", layout tp " + meta_int(m, "tp") + " pp " +
         meta_int(m, "pp") + " dp " + meta_int(m, "dp");
}

void print_meta(const CheckpointMeta& m) {
  std::printf("%s\n", step_and_layout(m).c_str());
  for (const auto& [key, value] : m.ints)
    std::printf("  %s = %lld\n", key.c_str(), static_cast<long long>(value));
  for (const auto& [key, value] : m.reals)
    std::printf("  %s = %s\n", key.c_str(), shortest_text(value).c_str());
  for (const auto& [key, value] : m.texts)
    if (key != "config") std::printf("  %s = \"%s\"\n", key.c_str(), printable(value).c_str());
  const auto config = m.texts.find("config");
  if (config != m.texts.end())
    std::printf("config:\n%s\n", printable(config->second, std::string::npos).c_str());
}

int info(int argc, char** argv) {
  po::options_description desc("ckpt info options");
  po::variables_map vm;
  std::vector<std::string> dirs;
  if (!parse(desc, "DIR", 1, argc, argv, vm, dirs)) return 0;
  const CheckpointReader r = CheckpointReader::open(dirs[0], ManifestCheck::kSizes);
  std::printf("checkpoint %s\n", r.dir().c_str());
  print_meta(r.meta());
  size_t width = 6;
  for (const TensorInfo& t : r.tensors()) width = std::max(width, t.name.size());
  std::printf("%-*s  %-20s %-9s %14s\n", static_cast<int>(width), "tensor", "shape", "dtype",
              "bytes");
  int64_t total = 0;
  for (const TensorInfo& t : r.tensors()) {
    std::printf("%-*s  %-20s %-9s %14lld\n", static_cast<int>(width), t.name.c_str(),
                shape_str(t.shape).c_str(), dtype_name(t.dtype).c_str(),
                static_cast<long long>(tensor_bytes(t)));
    total += tensor_bytes(t);
  }
  std::printf("total: %zu tensors, %lld bytes (%.2f MB)\n", r.tensors().size(),
              static_cast<long long>(total), total / 1e6);
  return 0;
}

int verify(int argc, char** argv) {
  po::options_description desc("ckpt verify options");
  po::variables_map vm;
  std::vector<std::string> dirs;
  if (!parse(desc, "DIR", 1, argc, argv, vm, dirs)) return 0;
  const std::string dir = dirs[0];
  require_checkpoint_directory(dir);
  std::vector<std::string> problems;
  int64_t bytes = 0;
  size_t tensors = 0;
  try {
    const CheckpointReader r = verify_checkpoint(dir, "ckpt verify");
    check_resume_meta(r.meta(), dir);
    TensorProgress progress("ckpt verify: NaN check", r.tensors());
    for (const TensorInfo& t : r.tensors()) {
      int64_t bad = 0;
      for_each_slab(
          r, t, DType::F64, [&](const Tensor& slab) { bad += count_non_finite(slab); }, &progress);
      if (bad)
        problems.push_back("tensor " + t.name + ": " + std::to_string(bad) + " of " +
                           std::to_string(shape_numel(t.shape)) +
                           " values are NaN or infinite (a missing shard reads as NaN)");
      bytes += tensor_bytes(t);
      ++tensors;
    }
  } catch (const InputError& e) {
    problems.push_back(e.what());
  }
  for (const std::string& p : problems) std::printf("FAILED: %s\n", printable(p).c_str());
  if (!problems.empty()) return kVerifyFailed;
  std::printf("ok: %zu files, %zu tensors, %lld bytes\n", checkpoint_files(dir).size(), tensors,
              static_cast<long long>(bytes));
  return 0;
}

struct Difference {
  double max_abs = 0, max_rel = 0;
  double diff_sq = 0, a_sq = 0, b_sq = 0;  // sums of squares, for the norm-relative difference
  // |a - b| / max(|a|, |b|) over the whole tensor: what tells rounding from a real difference
  // where max_rel, element by element, is large for values near zero.
  double norm_rel() const {
    return std::sqrt(diff_sq) / std::max({std::sqrt(a_sq), std::sqrt(b_sq), 1e-300});
  }
};

// rel = |a - b| / max(|a|, |b|, 1e-12); a NaN on one side only is an infinite difference.
void accumulate(const Tensor& a, const Tensor& b, Difference& d) {
  const double *x = a.data<double>(), *y = b.data<double>();
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (std::isnan(x[i]) || std::isnan(y[i])) {
      if (std::isnan(x[i]) != std::isnan(y[i]))
        d.max_abs = d.max_rel = d.diff_sq = std::numeric_limits<double>::infinity();
      continue;
    }
    const double abs = std::fabs(x[i] - y[i]);
    d.max_abs = std::max(d.max_abs, abs);
    d.max_rel = std::max(d.max_rel, abs / std::max({std::fabs(x[i]), std::fabs(y[i]), 1e-12}));
    d.diff_sq += abs * abs;
    d.a_sq += x[i] * x[i];
    d.b_sq += y[i] * y[i];
  }
}

Difference compare(const CheckpointReader& a, const CheckpointReader& b, const TensorInfo& t,
                   TensorProgress& progress) {
  Difference d;
  progress.next_tensor(t);
  for (const auto& [offset, extent] : row_slabs(t.shape)) {
    Tensor x(extent, DType::F64), y(extent, DType::F64);
    a.read(t.name, t.shape, offset, x);
    b.read(t.name, t.shape, offset, y);
    accumulate(x, y, d);
    progress.read(x);
  }
  return d;
}

int diff(int argc, char** argv) {
  po::options_description desc(
      "Per tensor of both: max_abs, the largest |a - b|; max_rel, the largest |a - b| / max(|a|, "
      "|b|, 1e-12), large where values are near 0; norm_rel, ||a - b|| / max(||a||, ||b||) over "
      "the "
      "tensor, which tells rounding (1e-7 in float32) from a real difference.\nckpt diff "
      "options");
  po::variables_map vm;
  std::vector<std::string> dirs;
  if (!parse(desc, "DIR_A DIR_B", 2, argc, argv, vm, dirs)) return 0;
  const CheckpointReader a = CheckpointReader::open(dirs[0], ManifestCheck::kSizes);
  const CheckpointReader b = CheckpointReader::open(dirs[1], ManifestCheck::kSizes);
  a.check_shards();
  b.check_shards();
  // Which checkpoints these are: two steps, or two layouts of one, read alike.
  for (const auto& [label, r] : {std::pair("A", &a), std::pair("B", &b)})
    std::printf("%s: %s (%s)\n", label, r->dir().c_str(), step_and_layout(r->meta()).c_str());
  size_t width = 6, compared = 0, differ = 0, reshaped = 0;
  for (const TensorInfo& t : a.tensors()) width = std::max(width, t.name.size());
  std::printf("%-*s  %-20s %13s %13s %13s\n", static_cast<int>(width), "tensor", "shape", "max_abs",
              "max_rel", "norm_rel");
  std::vector<TensorInfo> compared_tensors;  // what the progress line counts
  for (const TensorInfo& t : a.tensors())
    if (b.has(t.name) && b.tensor(t.name).shape == t.shape) compared_tensors.push_back(t);
  TensorProgress progress("ckpt diff (of A)", compared_tensors);
  for (const TensorInfo& t : a.tensors()) {
    if (!b.has(t.name)) continue;
    const TensorInfo& u = b.tensor(t.name);
    if (u.shape != t.shape) {  // not compared: no element of one has a place in the other
      std::printf("%-*s  shape %s vs %s\n", static_cast<int>(width), t.name.c_str(),
                  shape_str(t.shape).c_str(), shape_str(u.shape).c_str());
      ++reshaped;
      continue;
    }
    ++compared;
    const Difference d = compare(a, b, t, progress);
    progress.end();  // a line rewritten in place on a terminal ends before the row
    differ += d.max_abs != 0;
    std::printf("%-*s  %-20s %13.6g %13.6g %13.6g\n", static_cast<int>(width), t.name.c_str(),
                shape_str(t.shape).c_str(), d.max_abs, d.max_rel, d.norm_rel());
  }
  size_t only = 0;
  for (const auto& [x, y, label] : {std::tuple(&a, &b, "A"), std::tuple(&b, &a, "B")})
    for (const TensorInfo& t : x->tensors())
      if (!y->has(t.name)) {
        std::printf("only in %s (%s): %s %s\n", label, x->dir().c_str(), t.name.c_str(),
                    shape_str(t.shape).c_str());
        ++only;
      }
  std::printf(
      "%zu tensors compared, %zu differ, %zu of another shape, %zu in one checkpoint only\n",
      compared, differ, reshaped, only);
  return 0;
}

std::string safetensors_dtype(DType t) {
  return t == DType::F32 ? "F32" : t == DType::F64 ? "F64" : "BF16";
}

// The safetensors header (https://github.com/huggingface/safetensors): tensors in name order,
// data back to back in the same order; the JSON is padded with spaces to a multiple of 8 bytes.
std::string safetensors_header(const std::map<std::string, TensorInfo>& tensors,
                               const CheckpointMeta& meta) {
  nlohmann::json header;
  header["__metadata__"] = {{"format", "pt"}, {"source", "tessera"}};
  if (meta.ints.count("step"))
    header["__metadata__"]["step"] = std::to_string(meta.ints.at("step"));
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", safetensors_dtype(t.dtype)},
                    {"shape", t.shape},
                    {"data_offsets", {offset, offset + tensor_bytes(t)}}};
    offset += tensor_bytes(t);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

// --output and its FILE.tmp must lie outside the checkpoint `dir` it reads, and not be the
// `latest` beside it: InputError otherwise.
void require_output_outside(const std::string& dir, const std::string& output,
                            const std::string& tmp) {
  const fs::path source = fs::weakly_canonical(dir);
  for (const fs::path& file : {fs::weakly_canonical(output), fs::weakly_canonical(tmp)}) {
    const auto [end, _] = std::mismatch(source.begin(), source.end(), file.begin(), file.end());
    const bool inside = end == source.end();
    if (!inside && file != source.parent_path() / "latest") continue;
    const char* why = !inside            ? "`latest` names the checkpoint to resume"
                      : fs::exists(file) ? "it would be overwritten"
                                         : "a checkpoint is not written to";
    throw InputError("--output " + output + ": expected a file outside the checkpoint " +
                     source.string() + ", found " + file.string() + " (" + why + ")");
  }
}

// An existing --output is replaced only when it is an export too (a safetensors file: an 8-byte
// little-endian header length, then the JSON header), or empty; not a corpus, a shard or a
// model.h5.
void require_replaceable_export(const std::string& output) {
  require_replaceable_output("--output", output, "export", "safetensors", 9,
                             [](std::string_view head, uintmax_t size) {
                               if (head.size() != 9 || head[8] != '{') return false;
                               uint64_t length = 0;
                               for (int i = 7; i >= 0; --i)
                                 length = length << 8 | static_cast<unsigned char>(head[i]);
                               return length <= size - 8;
                             });
}

// The model's tensors by their safetensors names ("layers.03.attn.qkv.weight" for
// model/layers/03/attn/qkv/weight); InputError for a name JSON cannot hold or two that collide.
std::map<std::string, TensorInfo> export_names(const CheckpointReader& r) {
  std::map<std::string, TensorInfo> tensors;
  for (const TensorInfo& t : r.tensors()) {
    if (t.name.rfind("model/", 0) != 0) continue;
    std::string name = t.name.substr(6);
    std::replace(name.begin(), name.end(), '/', '.');
    if (!is_valid_utf8(name))  // a hand-edited model.h5: JSON keys are UTF-8
      throw InputError("checkpoint " + r.dir() + ": tensor " + printable(t.name) +
                       " has a name that is not UTF-8, which safetensors' JSON header cannot "
                       "hold");
    if (!tensors.emplace(name, t).second)
      throw InputError("checkpoint " + r.dir() + ": two tensors export as " + name);
  }
  return tensors;
}

int export_command(int argc, char** argv) {
  po::options_description desc("ckpt export options");
  desc.add_options()("to", po::value<std::string>()->default_value("safetensors"),
                     "format: safetensors")("output", po::value<std::string>()->required(),
                                            "file to write");
  po::variables_map vm;
  std::vector<std::string> dirs;
  if (!parse(desc, "DIR", 1, argc, argv, vm, dirs)) return 0;
  if (vm["to"].as<std::string>() != "safetensors")
    throw InputError("--to: expected safetensors, found \"" + vm["to"].as<std::string>() + "\"");
  const std::string& dir = dirs[0];
  const std::string output = vm["output"].as<std::string>(), tmp = output + ".tmp";
  require_file_to_write("--output", output);
  require_output_outside(dir, output, tmp);
  require_replaceable_export(output);
  // Every file's checksum, the optimizer's shards too, so that no damaged weights leave: one more
  // read of the checkpoint, from the page cache for the weights that follow.
  const CheckpointReader r = verify_checkpoint(dir, "ckpt export");
  const std::map<std::string, TensorInfo> tensors = export_names(r);
  const std::string header = safetensors_header(tensors, r.meta());
  int64_t bytes = 0;
  write_file_through(tmp, output, "--output " + output, [&](const PutBytes& put) {
    const uint64_t header_size = header.size();  // little-endian host (checkpoint_io.cpp)
    put(&header_size, 8);
    put(header.data(), header.size());
    std::vector<TensorInfo> written;
    for (const auto& [name, t] : tensors) written.push_back(t);
    TensorProgress progress("ckpt export: writing", written);
    for (const auto& [name, t] : tensors)
      for_each_slab(
          r, t, t.dtype,
          [&](const Tensor& slab) {
            if (count_non_finite(slab) > 0)
              throw InputError("checkpoint " + dir + ": " + t.name +
                               " holds NaN or infinite values: not exported (`tessera ckpt "
                               "verify " +
                               dir + "` lists every such tensor)");
            put(slab.raw(), slab.bytes());
            bytes += static_cast<int64_t>(slab.bytes());
          },
          &progress);
    progress.end();
  });
  std::printf("ckpt export: %zu tensors, %lld bytes -> %s\n", tensors.size(),
              static_cast<long long>(bytes), output.c_str());
  return 0;
}

}  // namespace

int ckpt_command(int argc, char** argv) {
  if (argc < 2)
    throw InputError(std::string("ckpt: expected a verb (info, verify, diff, export)\n") + kUsage);
  const std::string verb = argv[1];
  int code = -1;
  if (verb == "info") code = info(argc, argv);
  if (verb == "verify") code = verify(argc, argv);
  if (verb == "diff") code = diff(argc, argv);
  if (verb == "export") code = export_command(argc, argv);
  if (verb == "--help" || verb == "-h" || verb == "help") {
    std::cout << kUsage;
    code = 0;
  }
  if (code < 0)
    throw InputError("ckpt: expected a verb (info, verify, diff, export), found \"" + verb + "\"");
  std::fflush(stdout);
  return code;
}

}  // namespace tessera
