#pragma once

#include <cstdint>
#include <functional>
#include <istream>
#include <optional>
#include <ostream>
#include <string_view>

#include "operators/detectors.h"

namespace inferscope {

// Epoch milliseconds of "YYYY-MM-DD[T| ]HH:MM:SS[.fff][Z|+HH:MM|-HHMM]" or of epoch seconds
// (possibly fractional, at most 9e12 in magnitude); nullopt for anything else.
std::optional<int64_t> ParseCsvTimestampMs(std::string_view text);

struct DetectCsvCounts {
  int64_t rows = 0;    // points given to the detector
  int64_t bad = 0;     // lines skipped as malformed (each reported on `diagnostics`)
  int64_t alerts = 0;  // points judged at warning or above
};

// The reader of `inferscope detect`: reads `timestamp,value` lines from `in` (blank lines and
// lines starting with '#' are skipped, so is a first line that does not parse as a point: a
// header), feeds each point to `detector` and writes `timestamp,value,anomaly_score,type,severity`
// rows to `out` (the header row is the caller's), the timestamp and value echoed as given.
// Malformed lines are reported on `diagnostics` with their line number and skipped. Any bytes are
// read without crashing. `on_progress`, when set, is called with the counts so far every
// kDetectProgressLines lines (for a progress line).
inline constexpr int64_t kDetectProgressLines = 8192;
DetectCsvCounts DetectCsv(std::istream& in, SeriesDetector& detector, std::ostream& out,
                          std::ostream& diagnostics,
                          const std::function<void(const DetectCsvCounts&)>& on_progress = {});

}  // namespace inferscope
