// libFuzzer target: the CSV reader of `inferscope detect` (cli/detect_csv.h) and the detectors it
// feeds.
//
// The input is the CSV text. It is read three times: with the default detector options, with a
// short warm-up and index seasonality (4 points), and with time seasonality (1 h, 6 buckets), so
// that every detector reaches its judging state from short inputs. Any bytes must be read without
// a crash, an exception or a hang; the counts must add up; every score written must be a number.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "cli/detect_csv.h"
#include "operators/detectors.h"

namespace {

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "detect_csv_fuzzer: contract violated: %s\n", what);
  std::abort();
}

void Run(const inferscope::DetectorOptions& options, const std::string& text) {
  if (!options.Validate().ok()) Fail("fuzzer's detector options are invalid");
  inferscope::SeriesDetector detector(options);
  std::istringstream text_in(text);
  inferscope::LineReader in(text_in);
  std::ostringstream out, diagnostics;
  const inferscope::DetectCsvCounts counts = inferscope::DetectCsv(in, detector, out, diagnostics);
  if (counts.rows < 0 || counts.ignored < 0 || counts.bad < 0 || counts.read_error != 0 ||
      counts.alerts < 0 || counts.alerts > counts.rows) {
    Fail("counts");
  }
  // One output row per point, each with 5 fields and a numeric score.
  std::istringstream rows(out.str());
  std::string row;
  int64_t n = 0;
  while (std::getline(rows, row)) {
    ++n;
    const size_t type_comma = row.rfind(',', row.rfind(',') - 1);
    const size_t score_comma = row.rfind(',', type_comma - 1);
    if (type_comma == std::string::npos || score_comma == std::string::npos) Fail("output row");
    const std::string score = row.substr(score_comma + 1, type_comma - score_comma - 1);
    char* end = nullptr;
    const double s = std::strtod(score.c_str(), &end);
    if (score.empty() || *end != '\0' || !std::isfinite(s)) {
      std::fprintf(stderr, "detect_csv_fuzzer: score '%s' in row '%s'\n", score.c_str(),
                   row.c_str());
      Fail("a score that is not a finite number");
    }
  }
  if (n != counts.rows + counts.ignored) Fail("output rows != points judged + ignored");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return -1;
  const std::string text(reinterpret_cast<const char*>(data), size);

  inferscope::DetectorOptions defaults;
  Run(defaults, text);

  inferscope::DetectorOptions seasonal;
  seasonal.warmup_points = 2;
  seasonal.season_points = 4;
  Run(seasonal, text);

  inferscope::DetectorOptions timed;
  timed.warmup_points = 3;
  timed.season_ms = 3'600'000;
  timed.season_points = 6;
  Run(timed, text);
  return 0;
}
