// `inferscope detect`: runs the streaming detectors (operators/detectors.h) over a CSV series, for
// backtesting on history. Input `timestamp,value` (header optional); output
// `timestamp,value,anomaly_score,type,severity` with the timestamp and value echoed as given.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

#include "cli/commands.h"
#include "cli/detect_csv.h"
#include "cli/line_reader.h"
#include "cli/progress.h"
#include "operators/detectors.h"
#include "pipeline/config.h"
#include "pipeline/scoped_fd.h"
#include "pipeline/yaml_file.h"

namespace inferscope {

int DetectCommand(const DetectArgs& args) {
  DetectorOptions options;
  if (!args.config.empty()) {
    Result<YAML::Node> loaded = LoadYamlFile(args.config, "detector config");
    if (!loaded.ok()) {
      std::cerr << "--config " << loaded.status().message() << "\n";
      return 2;
    }
    YAML::Node node = *loaded;
    if (node.IsNull()) node = YAML::Node(YAML::NodeType::Map);
    Result<DetectorOptions> parsed = ParseDetectorOptions(ConfigNode(args.config, node, ""));
    if (!parsed.ok()) {
      std::cerr << parsed.status().message() << "\n";
      return 2;
    }
    options = *parsed;
  }
  if (args.season_points > 0) options.season_points = args.season_points;
  if (args.warmup_points >= 0) options.warmup_points = args.warmup_points;
  if (!args.season_period.empty()) {
    std::optional<int64_t> ms = ParseDurationMs(args.season_period);
    if (!ms || *ms <= 0) {
      std::cerr << "--season-period: expected a duration such as 1d, got '" << args.season_period
                << "'\n";
      return 2;
    }
    options.season_ms = *ms;
  }
  if (Status st = options.Validate(); !st.ok()) {
    std::cerr << "detector options: " << st.message() << "\n";
    return 2;
  }

  int in_fd = STDIN_FILENO;
  if (args.input != "-") {
    in_fd = ::open(args.input.c_str(), O_RDONLY | O_CLOEXEC);
    if (in_fd < 0) {
      std::cerr << "detect: cannot open " << args.input << ": " << std::strerror(errno) << "\n";
      return 2;
    }
  }
  const ScopedFd in_closer(in_fd);  // stdin stays open
  struct stat in_stat {};
  const bool in_stat_ok = ::fstat(in_fd, &in_stat) == 0;
  if (in_stat_ok && S_ISDIR(in_stat.st_mode)) {
    std::cerr << "detect: " << args.input << ": is a directory\n";
    return 2;
  }
  // The output must not be the input: opening it for writing would truncate the input before it
  // is read (also through a symlink or a hard link: compared by device and inode).
  if (in_stat_ok && S_ISREG(in_stat.st_mode)) {
    struct stat out_stat {};
    const bool out_exists = args.output == "-" ? ::fstat(STDOUT_FILENO, &out_stat) == 0
                                               : ::stat(args.output.c_str(), &out_stat) == 0;
    if (out_exists && out_stat.st_dev == in_stat.st_dev && out_stat.st_ino == in_stat.st_ino) {
      std::cerr << "detect: the output " << (args.output == "-" ? "(stdout)" : args.output)
                << " is the input file " << args.input
                << "; writing it would destroy the input: write to another file\n";
      return 2;
    }
  }
  LineReader reader(in_fd);
  std::ofstream out_file;
  std::ostream* out = &std::cout;
  if (args.output != "-") {
    out_file.open(args.output);
    if (!out_file) {
      std::cerr << "detect: cannot write " << args.output << ": " << std::strerror(errno) << "\n";
      return 2;
    }
    out = &out_file;
  }

  SeriesDetector detector(options);
  *out << "timestamp,value,anomaly_score,type,severity\n";
  // All diagnostics of this command go to stderr (spdlog's default sink is stdout, which may be
  // the CSV output).
  // At a terminal, a progress line (points, and how much of the file is read); diagnostics are
  // then collected and printed between redraws so that they do not run into it.
  Progress progress;
  std::ostringstream held;
  const int64_t file_size = in_stat_ok && S_ISREG(in_stat.st_mode) ? in_stat.st_size : -1;
  const auto flush_held = [&] {
    if (held.tellp() <= 0) return;
    progress.Done();
    std::cerr << held.str();
    held.str("");
  };
  const auto on_progress = [&](const DetectCsvCounts& c) {
    flush_held();
    if (!progress.Due()) return;
    std::string text =
        "detect: " + std::to_string(c.rows) + " points, " + std::to_string(c.bad) + " bad lines";
    if (file_size > 0) {
      const int64_t at = static_cast<int64_t>(reader.bytes_read());
      text += ", " + std::to_string(100 * std::min(at, file_size) / file_size) + " % read";
    }
    progress.Show(text);
  };
  const DetectCsvCounts counts = progress.enabled()
                                     ? DetectCsv(reader, detector, *out, held, on_progress)
                                     : DetectCsv(reader, detector, *out, std::cerr);
  flush_held();
  progress.Done();
  out->flush();
  // Diagnostics go to stderr so that stdout stays a clean CSV.
  std::cerr << "detect: " << counts.rows << " points, " << counts.alerts << " at warning or above, "
            << counts.ignored << " ignored, " << counts.bad << " bad lines\n";
  if (counts.read_error != 0) {
    std::cerr << "detect: cannot read " << args.input << " after line " << reader.line_number()
              << ": " << std::strerror(counts.read_error) << "\n";
    return 2;
  }
  if (counts.reversed_header) return 2;
  if (!*out) {
    std::cerr << "detect: cannot write " << (args.output == "-" ? "stdout" : args.output) << "\n";
    return 2;
  }
  return counts.bad > 0 ? 1 : 0;
}

}  // namespace inferscope
