#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string_view>

#include "cli/line_reader.h"
#include "operators/detectors.h"

namespace inferscope {

// Epoch milliseconds of "YYYY-MM-DD[T| ]HH:MM:SS[.fff][Z|+HH:MM|-HHMM]" or of epoch seconds
// (possibly fractional, at most 9e12 in magnitude); nullopt for anything else.
std::optional<int64_t> ParseCsvTimestampMs(std::string_view text);

struct DetectCsvCounts {
  int64_t rows = 0;     // points the detector judged
  int64_t ignored = 0;  // points the detector ignored (out of order, NaN/±Inf): type `ignored`
  int64_t bad = 0;      // lines skipped as malformed or too long (each reported on `diagnostics`)
  int64_t alerts = 0;   // points judged at warning or above
  int read_error = 0;   // the errno of a failed read (reading stopped there); 0 if none
  bool reversed_header = false;  // a header "value,timestamp": nothing read (reported)
};

// The reader of `inferscope detect`: reads `timestamp,value` lines from `in` (blank lines and
// lines starting with '#' are skipped, so is the first other line when its value does not parse:
// a header; one whose second field names a time, "value,timestamp", stops the reading), feeds each
// point to `detector` and writes `timestamp,value,anomaly_score,type,severity` rows to `out` (the
// header row is the caller's), the timestamp and value echoed as given; a point the detector
// ignores is written with score 0, type `ignored`, severity `none`. Malformed lines and lines
// longer than LineReader::kMaxLineBytes are reported on `diagnostics` with their line number and
// skipped. A read error stops reading (counts.read_error). Any bytes are read without crashing, in
// bounded memory. `on_progress`, when set, is called with the counts so far every
// kDetectProgressLines lines (for a progress line).
inline constexpr int64_t kDetectProgressLines = 8192;
// Malformed, too long and out-of-order lines are reported one by one up to this many; one line
// then says further reports are not shown (the counts still count them).
inline constexpr int64_t kDetectMaxLineReports = 100;
DetectCsvCounts DetectCsv(LineReader& in, SeriesDetector& detector, std::ostream& out,
                          std::ostream& diagnostics,
                          const std::function<void(const DetectCsvCounts&)>& on_progress = {});

}  // namespace inferscope
