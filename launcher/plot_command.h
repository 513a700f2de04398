// `tessera plot RUN_DIR...`: a run's loss curve from RUN_DIR/metrics.jsonl, as a chart in the
// terminal with a few figures under it, and as an SVG file (RUN_DIR/loss.svg) to open in a
// browser; or several runs' curves over each other, to compare. It reads the files as they are,
// so it also shows a run still training, from a login node.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

// The series of a metrics.jsonl (docs/FORMATS.md): one point per logged step with a finite loss,
// one per validation.
struct MetricsSeries {
  std::vector<int64_t> steps;
  std::vector<double> loss;
  std::vector<int64_t> valid_steps;
  std::vector<double> valid_loss;
  std::vector<double> tokens_per_s, mfu;  // of the training records that have them
  int64_t skipped = 0;                    // records of skipped steps (no loss)
  int64_t unfinished_line = 0;  // a last line left unfinished (a run stopped mid-write), or 0
  // Training records not drawn: no loss that is a number, or one beyond +-1e300; the first one's
  // line.
  int64_t undrawn = 0, first_undrawn_line = 0;
};

// Reads `path`, keeping the records of steps >= `from`. InputError naming the file (and the line)
// when it cannot be read or a line is not a JSON object with a numeric "step"; a last line left
// unfinished (no line break, or NULs) is left out and its number kept.
MetricsSeries read_metrics(const std::string& path, int64_t from = 0);

// A run's series and the name the charts give it.
struct PlotRun {
  std::string name;
  MetricsSeries series;
};
// Runs one chart shows at most: each has a mark and a colour of its own.
inline constexpr size_t kMaxPlotRuns = 6;

// The training loss (`*`; with several runs `*`, `+`, `x`, `#`, `@`, `%` in turn, the first run's
// on top, and a legend under the steps) and validation loss (`o`) against the step, `width` x
// `height` characters of plot area with the loss on the left and the steps under it; each column
// shows the mean of a run's training losses that fall in it.
std::string text_chart(const std::vector<PlotRun>& runs, int width, int height);
std::string text_chart(const MetricsSeries& s, int width, int height);  // one run

// The same as a standalone SVG document: axes with ticks, each run's training loss as a line
// (each pixel column's mean where there are more points than columns), validation points, a
// legend.
std::string svg_chart(const std::vector<PlotRun>& runs, const std::string& title);
std::string svg_chart(const MetricsSeries& s, const std::string& title);  // one run

// argv[0] is "plot".
int plot_command(int argc, char** argv);

}  // namespace tessera
