// `tessera plot`: metrics.jsonl as a text chart and an SVG file (see plot_command.h).
#include "launcher/plot_command.h"

#include <algorithm>
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/error.h"
#include "io/durable_file.h"
#include "io/file_kind.h"
#include "launcher/exit_codes.h"
#include "launcher/option_text.h"
#include "launcher/progress.h"

namespace fs = std::filesystem;
namespace po = boost::program_options;

namespace tessera {

namespace {

constexpr const char* kUsage =
    "usage: tessera plot RUN_DIR... [--output FILE] [--from STEP] [--width N] [--height N]\n"
    "\n"
    "Shows the loss curve of RUN_DIR/metrics.jsonl (or of the metrics file RUN_DIR names): a\n"
    "chart of the training loss (*) and the validation loss (o) against the step, with the\n"
    "first, last and lowest loss, the last validation and the median throughput under it; and\n"
    "writes the chart as an SVG file to open in a browser. The file is read as it is, so a run\n"
    "still training can be plotted. Up to 6 RUN_DIRs are drawn over each other (marks * + x #\n"
    "@ %), to compare runs.\n"
    "\n"
    "  --output FILE   the SVG file (default RUN_DIR/loss.svg for one run, none for several;\n"
    "                  \"\" writes none); an existing file is replaced only if it is SVG\n"
    "  --from STEP     only the records of steps >= STEP (the first steps' loss is high)\n"
    "  --width N       columns of the text chart (default 72)\n"
    "  --height N      rows of the text chart (default 16)\n";

// Each run's mark in the text chart.
constexpr char kMarks[kMaxPlotRuns + 1] = "*+x#@%";

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// The plotted ranges: every step and every loss shown, widened where they are one value. Steps
// are placed relative to the first (`first`), so that steps near 2^63 keep their spacing.
struct Ranges {
  int64_t first = 0, last = 0;  // steps; the axis labels name only steps that are there
  double x1 = 0, y0 = INFINITY, y1 = -INFINITY;  // x from 0 (the first step) to x1 >= 1
  double x(int64_t step) const { return static_cast<double>(step - first); }
};

Ranges ranges_of(const std::vector<PlotRun>& runs) {
  Ranges r;
  r.first = INT64_MAX;
  r.last = INT64_MIN;
  const auto add = [&](const std::vector<int64_t>& xs, const std::vector<double>& ys) {
    for (size_t i = 0; i < xs.size(); ++i) {
      r.first = std::min(r.first, xs[i]);
      r.last = std::max(r.last, xs[i]);
      r.y0 = std::min(r.y0, ys[i]);
      r.y1 = std::max(r.y1, ys[i]);
    }
  };
  for (const PlotRun& run : runs) {
    add(run.series.steps, run.series.loss);
    add(run.series.valid_steps, run.series.valid_loss);
  }
  r.x1 = std::max(1.0, static_cast<double>(r.last - r.first));
  if (!(r.y1 - r.y0 > 1e-9 * std::max(std::abs(r.y0), std::abs(r.y1)))) {
    const double pad = std::max(0.5, 1e-6 * std::abs(r.y0));
    r.y0 -= pad, r.y1 += pad;
  }
  return r;
}

// The training points binned into `columns` columns by column_of(x), x the step less the first:
// each occupied column's index, mean x and mean loss, in column order.
struct Column {
  size_t index;
  double x, loss;
};

template <typename F>
std::vector<Column> column_means(const MetricsSeries& s, const Ranges& r, size_t columns,
                                 F column_of) {
  std::vector<double> xs(columns, 0), losses(columns, 0);
  std::vector<int> count(columns, 0);
  for (size_t i = 0; i < s.steps.size(); ++i) {
    const auto c = static_cast<size_t>(column_of(r.x(s.steps[i])));
    xs[c] += r.x(s.steps[i]);
    losses[c] += s.loss[i];
    ++count[c];
  }
  std::vector<Column> out;
  for (size_t c = 0; c < columns; ++c)
    if (count[c] > 0) out.push_back(Column{c, xs[c] / count[c], losses[c] / count[c]});
  return out;
}

// Tick values in [lo, hi] at a step of 1, 2 or 5 x 10^k (at least `min_step`), about `n` of
// them; just the two ends where the range is too narrow for such steps to tell apart.
std::vector<double> ticks(double lo, double hi, int n, double min_step = 0) {
  const double raw = (hi - lo) / std::max(n, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double unit = raw / mag < 1.5 ? 1 : raw / mag < 3.5 ? 2 : raw / mag < 7.5 ? 5 : 10;
  const double step = std::max(unit * mag, min_step);
  const double first = std::ceil(lo / step), last = std::floor(hi / step);
  if (!std::isfinite(step) || step <= 0 || !(last - first < 50) || first + 1 == first)
    return {lo, hi};
  std::vector<double> out;
  for (double k = first; k <= last; ++k) out.push_back(k == 0 ? 0 : k * step);
  return out;
}

std::string xml_escaped(const std::string& s) {
  std::string out;
  for (const char c : s) {
    if (c == '&')
      out += "&amp;";
    else if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '"')
      out += "&quot;";
    else
      out += c;
  }
  return out;
}

}  // namespace

MetricsSeries read_metrics(const std::string& path, int64_t from) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw InputError(path + ": expected a run's metrics file (metrics.jsonl), found " +
                     (fs::exists(path, ec) ? non_regular_kind(path) : "no such file"));
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot open for reading");
  MetricsSeries s;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    const std::string where = path + ":" + std::to_string(number);
    const nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
    const bool bad = record.is_discarded() || !record.is_object() || !record.contains("step") ||
                     !record["step"].is_number_integer();
    // A last line without its line break, or with NULs: a run that stopped mid-write (the run
    // that resumes cuts it); what came before is whole.
    if (bad && (in.eof() || line.find('\0') != std::string::npos) && in.peek() == EOF) {
      s.unfinished_line = number;
      break;
    }
    if (bad)
      throw InputError(where + ": expected a JSON object with an integer \"step\", found \"" +
                       printable(line.substr(0, 200), 200) + "\"");
    const int64_t step = record["step"].get<int64_t>();
    if (step < from) continue;
    const auto number_of = [&](const char* key) {
      const auto it = record.find(key);
      return it != record.end() && it->is_number() ? it->get<double>() : NAN;
    };
    if (record.contains("valid_loss")) {
      const double v = number_of("valid_loss");
      if (std::abs(v) <= 1e300) {
        s.valid_steps.push_back(step);
        s.valid_loss.push_back(v);
      }
      continue;
    }
    if (record.contains("skipped")) {
      ++s.skipped;
      continue;
    }
    // Not drawn: a loss that is not finite, or so large (a file edited by hand) that the chart's
    // range and sums would overflow to inf.
    const double loss = number_of("loss");
    if (!(std::abs(loss) <= 1e300)) {
      if (s.undrawn++ == 0) s.first_undrawn_line = number;
      continue;
    }
    s.steps.push_back(step);
    s.loss.push_back(loss);
    if (const double t = number_of("tokens_per_s"); std::isfinite(t)) s.tokens_per_s.push_back(t);
    if (const double m = number_of("mfu"); std::isfinite(m)) s.mfu.push_back(m);
  }
  return s;
}

std::string text_chart(const MetricsSeries& s, int width, int height) {
  return text_chart(std::vector<PlotRun>{{"", s}}, width, height);
}

std::string text_chart(const std::vector<PlotRun>& runs, int width, int height) {
  TESSERA_CHECK(!runs.empty() && runs.size() <= kMaxPlotRuns, "text_chart: 1 to 6 runs");
  const Ranges r = ranges_of(runs);
  const auto col = [&](double x) {  // x: a step less the first
    return static_cast<size_t>(std::lround(x / r.x1 * (width - 1)));
  };
  const auto row = [&](double y) {
    return static_cast<size_t>(std::lround((r.y1 - y) / (r.y1 - r.y0) * (height - 1)));
  };
  std::vector<std::string> grid(static_cast<size_t>(height), std::string(width, ' '));
  for (size_t k = runs.size(); k-- > 0;) {  // the first run's marks drawn last, over the others
    const MetricsSeries& s = runs[k].series;
    for (const Column& c : column_means(s, r, static_cast<size_t>(width), col))
      grid[row(c.loss)][c.index] = kMarks[k];
    for (size_t i = 0; i < s.valid_steps.size(); ++i)
      grid[row(s.valid_loss[i])][col(r.x(s.valid_steps[i]))] = 'o';
  }
  std::string out;
  for (int k = 0; k < height; ++k) {
    const bool labelled = k == 0 || k == height - 1 || k == (height - 1) / 2;
    const double y = r.y1 - (r.y1 - r.y0) * k / (height - 1);
    out += (labelled ? fmt("%9.4g ", y) : std::string(10, ' ')) + "|" +
           grid[static_cast<size_t>(k)] + "\n";
  }
  out += std::string(10, ' ') + "+" + std::string(static_cast<size_t>(width), '-') + "\n";
  const std::string first = "step " + std::to_string(r.first), last = std::to_string(r.last);
  const auto gap = static_cast<int64_t>(width) + 1 - static_cast<int64_t>(first.size()) -
                   static_cast<int64_t>(last.size());
  out += std::string(11, ' ') + first +
         std::string(static_cast<size_t>(std::max<int64_t>(gap, 1)), ' ') + last + "\n";
  if (runs.size() > 1) {
    out += std::string(11, ' ');
    for (size_t k = 0; k < runs.size(); ++k)
      out.append(1, kMarks[k]).append(" ").append(runs[k].name).append("   ");
    out += "o validation (where runs meet, the first run's mark shows)\n";
  }
  return out;
}

std::string svg_chart(const MetricsSeries& s, const std::string& title) {
  return svg_chart(std::vector<PlotRun>{{"", s}}, title);
}

std::string svg_chart(const std::vector<PlotRun>& runs, const std::string& title) {
  TESSERA_CHECK(!runs.empty() && runs.size() <= kMaxPlotRuns, "svg_chart: 1 to 6 runs");
  constexpr double W = 800, H = 450, left = 70, right = 20, top = 40, bottom = 50;
  constexpr double pw = W - left - right, ph = H - top - bottom;
  const Ranges r = ranges_of(runs);
  const auto px = [&](double x) { return left + x / r.x1 * pw; };  // x: a step less the first
  const auto py = [&](double y) { return top + (r.y1 - y) / (r.y1 - r.y0) * ph; };
  std::string out =
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"800\" height=\"450\" "
      "viewBox=\"0 0 800 450\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"800\" height=\"450\" fill=\"white\"/>\n";
  out += "<text x=\"400\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">" + xml_escaped(title) +
         "</text>\n";
  for (const double t : ticks(r.y0, r.y1, 6)) {
    const std::string y = fmt("%.1f", py(t));
    out += "<line x1=\"" + fmt("%.1f", left) + "\" x2=\"" + fmt("%.1f", left + pw) + "\" y1=\"" +
           y + "\" y2=\"" + y + "\" stroke=\"#e0e0e0\"/>\n";
    out += "<text x=\"" + fmt("%.1f", left - 6) + "\" y=\"" + y +
           "\" text-anchor=\"end\" dominant-baseline=\"middle\">" + fmt("%g", t) + "</text>\n";
  }
  for (const double t : ticks(0, r.x1, 8, 1)) {  // whole steps
    if (t > r.x(r.last)) break;                  // one step: x1 is widened to 1, with no step there
    const std::string x = fmt("%.1f", px(t));
    out += "<line x1=\"" + x + "\" x2=\"" + x + "\" y1=\"" + fmt("%.1f", top) + "\" y2=\"" +
           fmt("%.1f", top + ph) + "\" stroke=\"#f0f0f0\"/>\n";
    out += "<text x=\"" + x + "\" y=\"" + fmt("%.1f", top + ph + 18) +
           "\" text-anchor=\"middle\">" + std::to_string(r.first + static_cast<int64_t>(t)) +
           "</text>\n";
  }
  out += "<rect x=\"" + fmt("%.1f", left) + "\" y=\"" + fmt("%.1f", top) + "\" width=\"" +
         fmt("%.1f", pw) + "\" height=\"" + fmt("%.1f", ph) +
         "\" fill=\"none\" stroke=\"#444\"/>\n";
  out += "<text x=\"" + fmt("%.1f", left + pw / 2) + "\" y=\"" + fmt("%.1f", H - 10) +
         "\" text-anchor=\"middle\">step</text>\n";
  out += "<text x=\"16\" y=\"" + fmt("%.1f", top + ph / 2) +
         "\" text-anchor=\"middle\" transform=\"rotate(-90 16 " + fmt("%.1f", top + ph / 2) +
         ")\">loss (nats/token)</text>\n";
  // One run: its training loss blue, its validations orange. Several: each run a colour of its
  // own, its validations dots of that colour, and the legend names the runs.
  const bool one = runs.size() == 1;
  static const char* const kColours[] = {"#1f77b4", "#d62728", "#2ca02c",
                                         "#9467bd", "#8c564b", "#e377c2"};
  static_assert(std::size(kColours) == kMaxPlotRuns);
  bool any_validation = false;
  for (size_t k = 0; k < runs.size(); ++k) {
    const MetricsSeries& s = runs[k].series;
    const std::string colour = kColours[k], dots = one ? "#ff7f0e" : colour;
    // The training loss: every point, or each pixel column's mean where there are more points.
    std::string points;
    const auto add_point = [&](double x, double y) {
      if (!points.empty()) points += ' ';
      points.append(fmt("%.2f", x)).append(",").append(fmt("%.2f", y));
    };
    const auto columns = static_cast<size_t>(pw);
    if (s.steps.size() <= columns) {
      for (size_t i = 0; i < s.steps.size(); ++i) add_point(px(r.x(s.steps[i])), py(s.loss[i]));
    } else {
      const auto pixel = [&](double x) { return std::lround(px(x) - left); };  // 0 .. columns
      for (const Column& c : column_means(s, r, columns + 1, pixel)) add_point(px(c.x), py(c.loss));
    }
    // Runs after the first dashed, so that a run that follows another shows both colours.
    const std::string dashes =
        k == 0 ? "" : " stroke-dasharray=\"" + std::to_string(3 + 2 * k) + " 4\"";
    out += "<polyline fill=\"none\" stroke=\"" + colour + "\" stroke-width=\"1.5\"" + dashes +
           " points=\"" + points + "\"/>\n";
    for (size_t i = 0; i < s.valid_steps.size(); ++i)
      out += "<circle cx=\"" + fmt("%.2f", px(r.x(s.valid_steps[i]))) + "\" cy=\"" +
             fmt("%.2f", py(s.valid_loss[i])) + "\" r=\"3.5\" fill=\"" + dots + "\"/>\n";
    any_validation = any_validation || !s.valid_steps.empty();
  }
  // The legend, in the top right corner: as wide as its longest label (about 7 px a character).
  size_t longest = std::string("validation loss").size();
  for (const PlotRun& run : runs) longest = std::max(longest, run.name.size());
  const double lx = std::max(left + 10, left + pw - 36 - 7.0 * static_cast<double>(longest));
  double ly = top + 14;
  const auto label = [&](const std::string& text) {
    out += "<text x=\"" + fmt("%.1f", lx + 26) + "\" y=\"" + fmt("%.1f", ly) +
           "\" dominant-baseline=\"middle\">" + xml_escaped(text) + "</text>\n";
    ly += 18;
  };
  for (size_t k = 0; k < runs.size(); ++k) {
    out += "<line x1=\"" + fmt("%.1f", lx) + "\" x2=\"" + fmt("%.1f", lx + 20) + "\" y1=\"" +
           fmt("%.1f", ly) + "\" y2=\"" + fmt("%.1f", ly) + "\" stroke=\"" + kColours[k] +
           "\" stroke-width=\"1.5\"/>\n";
    label(one ? "training loss" : runs[k].name);
  }
  if (any_validation) {
    out += "<circle cx=\"" + fmt("%.1f", lx + 10) + "\" cy=\"" + fmt("%.1f", ly) +
           "\" r=\"3.5\" fill=\"" + (one ? "#ff7f0e" : "#888888") + "\"/>\n";
    label(one ? "validation loss" : "validation loss (dots)");
  }
  return out + "</svg>\n";
}

// An existing chart file is replaced only when it is a chart too (an SVG file), or empty: not the
// metrics.jsonl it is drawn from, a corpus or a checkpoint's file.
void require_replaceable_chart(const std::string& option, const std::string& output) {
  require_file_to_write(option, output);
  // An SVG document: its root element svg, after what may come before it (white space, an XML
  // declaration, processing instructions, comments, a DOCTYPE) in its first 4 KiB.
  require_replaceable_output(
      option, output, "chart", "SVG", 4096, [](std::string_view rest, uintmax_t) {
        for (;;) {
          rest.remove_prefix(std::min(rest.size(), rest.find_first_not_of(" \t\r\n")));
          const auto skip_to = [&](std::string_view end) {
            const size_t at = rest.find(end);
            rest = at == std::string_view::npos ? std::string_view() : rest.substr(at + end.size());
          };
          if (rest.starts_with("<?"))
            skip_to("?>");
          else if (rest.starts_with("<!--"))
            skip_to("-->");
          else if (rest.starts_with("<!DOCTYPE") || rest.starts_with("<!doctype"))
            skip_to(">");
          else
            break;
        }
        return rest.starts_with("<svg");
      });
}

// The figures under the chart of one run: its first, last and lowest training loss, its last
// validation, its median throughput, and what was left out of the chart. `who` begins each line
// ("" for one run, "* runs/a: " for several).
void print_figures(const MetricsSeries& s, const std::string& metrics, const std::string& who) {
  const auto lowest = std::min_element(s.loss.begin(), s.loss.end()) - s.loss.begin();
  std::printf(
      "%straining loss: %.4f at step %lld -> %.4f at step %lld; lowest %.4f at step %lld (%s",
      who.c_str(), s.loss.front(), static_cast<long long>(s.steps.front()), s.loss.back(),
      static_cast<long long>(s.steps.back()), s.loss[static_cast<size_t>(lowest)],
      static_cast<long long>(s.steps[static_cast<size_t>(lowest)]),
      count_of(static_cast<int64_t>(s.steps.size()), "record").c_str());
  if (s.skipped > 0) std::printf(", %lld skipped steps", static_cast<long long>(s.skipped));
  std::printf(")\n");
  if (!s.valid_steps.empty())
    std::printf("%svalidation loss: %.4f at step %lld (%zu evaluation%s)\n", who.c_str(),
                s.valid_loss.back(), static_cast<long long>(s.valid_steps.back()),
                s.valid_steps.size(), s.valid_steps.size() == 1 ? "" : "s");
  if (!s.tokens_per_s.empty()) {
    std::printf("%sthroughput: median %.0f tokens/s", who.c_str(), median(s.tokens_per_s));
    if (!s.mfu.empty()) std::printf(", MFU %.3f", median(s.mfu));
    std::printf("\n");
  }
  if (s.unfinished_line > 0)
    std::printf(
        "note: %s:%lld, an unfinished last line (a run that stopped while writing it), is "
        "left out\n",
        metrics.c_str(), static_cast<long long>(s.unfinished_line));
  if (s.undrawn > 0)
    std::printf(
        "note: %s without a loss that is a finite number (the first at %s:%lld) %s not "
        "drawn\n",
        count_of(s.undrawn, "training record").c_str(), metrics.c_str(),
        static_cast<long long>(s.first_undrawn_line), s.undrawn == 1 ? "is" : "are");
}

// How far run `b`'s training loss lies from run `a`'s at the steps both logged: what tells two
// layouts or two builds apart, where the chart's rows cannot.
void print_agreement(const PlotRun& a, const PlotRun& b, char mark_a, char mark_b) {
  std::map<int64_t, double> at;
  for (size_t i = 0; i < a.series.steps.size(); ++i) at[a.series.steps[i]] = a.series.loss[i];
  double worst = 0, worst_rel = 0;
  int64_t common = 0, worst_step = 0;
  for (size_t i = 0; i < b.series.steps.size(); ++i) {
    const auto it = at.find(b.series.steps[i]);
    if (it == at.end()) continue;
    ++common;
    const double d = std::abs(b.series.loss[i] - it->second);
    if (d > worst || common == 1) {
      worst = d;
      worst_step = it->first;
      worst_rel = d / std::max(std::abs(it->second), 1e-12);
    }
  }
  if (common == 0) {
    std::printf("%c %s against %c %s: no step logged by both\n", mark_b, b.name.c_str(), mark_a,
                a.name.c_str());
    return;
  }
  std::printf(
      "%c %s against %c %s: training loss differs by at most %.3g (relative %.3g, at step %lld) "
      "over the %s both logged\n",
      mark_b, b.name.c_str(), mark_a, a.name.c_str(), worst, worst_rel,
      static_cast<long long>(worst_step), count_of(common, "step").c_str());
}

int plot_command(int argc, char** argv) {
  std::string output;
  int64_t from = 0, width = 72, height = 16;
  po::options_description desc("plot options");
  desc.add_options()("help,h", "print this help")("output", po::value(&output), "the SVG file")(
      "from", po::value(&from), "first step")("width", po::value(&width), "columns")(
      "height", po::value(&height), "rows");
  po::variables_map vm;
  const auto some_runs = [](const std::vector<std::string>& words) {
    if (words.empty())
      throw InputError("tessera plot: expected a RUN_DIR, found none (see tessera plot --help)");
    if (words.size() > kMaxPlotRuns)
      throw InputError("tessera plot: expected at most " + std::to_string(kMaxPlotRuns) +
                       " RUN_DIRs to draw over each other, found " + words_found(words));
    for (const std::string& w : words)
      if (w.empty())
        throw InputError("tessera plot: expected a RUN_DIR, found \"\" (see tessera plot --help)");
  };
  const std::optional<std::vector<std::string>> words =
      parse_command_words(std::vector<std::string>(argv + 1, argv + argc), desc, vm,
                          " (see tessera plot --help)", some_runs);
  if (!words) {
    std::cout << kUsage;
    return kExitOk;
  }
  const bool output_given = vm.count("output") > 0;
  const auto require_in = [](const char* option, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi)
      throw InputError(std::string(option) + ": expected a whole number in [" + std::to_string(lo) +
                       ", " + std::to_string(hi) + "], found " + std::to_string(v));
  };
  require_in("--from", from, 0, INT64_MAX);
  require_in("--width", width, 10, 1000);
  require_in("--height", height, 3, 200);

  // Each run named as given (a directory, or a metrics file: two files of one directory are two
  // runs), read as it is; one run's chart goes to its directory, which names it.
  std::vector<PlotRun> runs;
  std::vector<std::string> files;
  std::string run_dir;
  for (const std::string& word : *words) {
    std::error_code ec;
    const bool is_dir = fs::is_directory(word, ec);
    files.push_back(is_dir ? (fs::path(word) / "metrics.jsonl").string() : word);
    if (run_dir.empty()) run_dir = is_dir ? word : fs::path(word).parent_path().string();
    runs.push_back(
        {is_dir || words->size() > 1 ? word : run_dir, read_metrics(files.back(), from)});
    if (runs.back().series.steps.empty())
      throw InputError(files.back() + ": expected training records with a loss" +
                       (from > 0 ? " from step " + std::to_string(from) : std::string()) +
                       ", found none");
  }
  const bool one = runs.size() == 1;
  // One run's chart goes beside its metrics; several runs' only where --output says.
  if (!output_given && one) output = (fs::path(run_dir) / "loss.svg").string();
  std::string heading = one ? "loss curve of " + files[0] : "loss curves of";
  for (size_t k = 0; k < runs.size() && !one; ++k)
    heading.append(k ? ", " : " ").append(files[k]).append(" (").append(1, kMarks[k]).append(")");
  std::printf("%s\n%s", heading.c_str(),
              text_chart(runs, static_cast<int>(width), static_cast<int>(height)).c_str());
  for (size_t k = 0; k < runs.size(); ++k)
    print_figures(runs[k].series, files[k],
                  one ? "" : std::string(1, kMarks[k]) + " " + runs[k].name + ": ");
  for (size_t k = 1; k < runs.size(); ++k) print_agreement(runs[0], runs[k], kMarks[0], kMarks[k]);
  if (!output.empty()) {
    std::string title;
    for (const PlotRun& run : runs) title.append(title.empty() ? "" : " vs ").append(run.name);
    title += ": loss against step";
    try {
      require_replaceable_chart(output_given ? "--output" : "the chart", output);
      write_file_atomically(output, svg_chart(runs, title));
    } catch (const InputError& e) {
      throw InputError(std::string(e.what()) +
                       (output_given ? "" : " (give --output FILE to write it elsewhere)"));
    }
    std::printf("chart: %s\n", output.c_str());
  } else if (!one && !output_given) {
    std::printf("note: give --output FILE to write the chart of these runs as SVG\n");
  }
  std::fflush(stdout);
  return kExitOk;
}

}  // namespace tessera
