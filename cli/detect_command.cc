// `inferscope detect`: runs the streaming detectors (operators/detectors.h) over a CSV series, for
// backtesting on history. Input `timestamp,value` (header optional); output
// `timestamp,value,anomaly_score,type,severity` with the timestamp and value echoed as given.

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

#include "cli/commands.h"
#include "cli/detect_csv.h"
#include "cli/progress.h"
#include "operators/detectors.h"
#include "pipeline/config.h"

namespace inferscope {

int DetectCommand(const DetectArgs& args) {
  DetectorOptions options;
  if (!args.config.empty()) {
    YAML::Node node;
    try {
      node = YAML::LoadFile(args.config);
    } catch (const YAML::Exception& e) {
      std::cerr << args.config << ": " << e.what() << "\n";
      return 2;
    }
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

  std::ifstream in_file;
  std::istream* in = &std::cin;
  if (args.input != "-") {
    in_file.open(args.input);
    if (!in_file) {
      std::cerr << "cannot open " << args.input << "\n";
      return 2;
    }
    in = &in_file;
  }
  std::ofstream out_file;
  std::ostream* out = &std::cout;
  if (args.output != "-") {
    out_file.open(args.output);
    if (!out_file) {
      std::cerr << "cannot write " << args.output << "\n";
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
  std::streamoff file_size = -1;
  if (progress.enabled() && args.input != "-") {
    std::error_code ec;
    const auto size = std::filesystem::file_size(args.input, ec);
    if (!ec) file_size = static_cast<std::streamoff>(size);
  }
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
    const std::streamoff at =
        file_size > 0 ? static_cast<std::streamoff>(in_file.tellg()) : std::streamoff(-1);
    if (at >= 0) text += ", " + std::to_string(100 * at / file_size) + " % read";
    progress.Show(text);
  };
  const DetectCsvCounts counts = progress.enabled()
                                     ? DetectCsv(*in, detector, *out, held, on_progress)
                                     : DetectCsv(*in, detector, *out, std::cerr);
  flush_held();
  progress.Done();
  out->flush();
  // Diagnostics go to stderr so that stdout stays a clean CSV.
  std::cerr << "detect: " << counts.rows << " points, " << counts.alerts << " at warning or above, "
            << counts.bad << " bad lines\n";
  return counts.bad > 0 ? 1 : 0;
}

}  // namespace inferscope
