// The CSV side of `inferscope detect` (cli/detect_command.cc): reads `timestamp,value` lines,
// runs a SeriesDetector over them and writes `timestamp,value,anomaly_score,type,severity`.

#include "cli/detect_csv.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>

namespace inferscope {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// A header field naming a time column ("timestamp", "Time", "ts", ...; the first of the fields).
bool NamesATime(std::string_view fields) {
  std::string name(Trim(fields.substr(0, fields.find(','))));
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const char* time : {"time", "timestamp", "ts", "date", "datetime", "t"}) {
    if (name == time) return true;
  }
  return false;
}

std::optional<double> ParseNumber(std::string_view s) {
  double v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
int64_t DaysFromCivil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

bool Digits(std::string_view s, size_t pos, size_t n, int64_t& out) {
  if (pos + n > s.size()) return false;
  out = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

}  // namespace

std::optional<int64_t> ParseCsvTimestampMs(std::string_view s) {
  s = Trim(s);
  if (s.size() >= 19 && s[4] == '-' && s[7] == '-' && (s[10] == 'T' || s[10] == ' ')) {
    int64_t y, mo, d, h, mi, sec;
    if (!Digits(s, 0, 4, y) || !Digits(s, 5, 2, mo) || !Digits(s, 8, 2, d) ||
        !Digits(s, 11, 2, h) || s[13] != ':' || !Digits(s, 14, 2, mi) || s[16] != ':' ||
        !Digits(s, 17, 2, sec)) {
      return std::nullopt;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return std::nullopt;
    int64_t ms = ((DaysFromCivil(y, mo, d) * 24 + h) * 60 + mi) * 60'000 + sec * 1000;
    size_t pos = 19;
    if (pos < s.size() && (s[pos] == '.' || s[pos] == ',')) {
      ++pos;
      int64_t scale = 100;
      size_t start = pos;
      while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
        ms += (s[pos] - '0') * scale;
        scale /= 10;
        ++pos;
      }
      if (pos == start) return std::nullopt;
    }
    if (pos < s.size()) {
      if ((s[pos] == 'Z' || s[pos] == 'z') && pos + 1 == s.size()) return ms;
      if (s[pos] != '+' && s[pos] != '-') return std::nullopt;
      const int64_t sign = s[pos] == '+' ? 1 : -1;
      int64_t oh, om = 0;
      if (!Digits(s, pos + 1, 2, oh)) return std::nullopt;
      size_t rest = pos + 3;
      if (rest < s.size() && s[rest] == ':') ++rest;
      if (rest < s.size() && !Digits(s, rest, 2, om)) return std::nullopt;
      if (rest < s.size() && rest + 2 != s.size()) return std::nullopt;
      ms -= sign * (oh * 60 + om) * 60'000;
    }
    return ms;
  }
  std::optional<double> seconds = ParseNumber(s);
  if (!seconds || !std::isfinite(*seconds) || std::fabs(*seconds) > 9e12) return std::nullopt;
  return static_cast<int64_t>(std::llround(*seconds * 1000));
}

DetectCsvCounts DetectCsv(LineReader& in, SeriesDetector& detector, std::ostream& out,
                          std::ostream& diagnostics,
                          const std::function<void(const DetectCsvCounts&)>& on_progress) {
  DetectCsvCounts counts;
  bool first_content_line = true;  // only the first line that is not blank or '#' may be a header
  char score[32];
  // Line reports, at most kDetectMaxLineReports of them (a file of millions of bad or out-of-order
  // lines printed millions of lines); the counts say how many there were.
  int64_t reports = 0;
  auto report = [&](int64_t line_no, const std::string& what) {
    if (reports < kDetectMaxLineReports) {
      diagnostics << "line " << line_no << ": " << what << "\n";
    } else if (reports == kDetectMaxLineReports) {
      diagnostics << "... further line reports not shown (the totals below count them)\n";
    }
    ++reports;
  };
  while (true) {
    std::string_view line;
    const LineReader::Outcome outcome = in.Next(&line);
    if (outcome == LineReader::Outcome::kEnd) break;
    if (outcome == LineReader::Outcome::kError) {
      counts.read_error = in.error();
      break;
    }
    const int64_t line_no = in.line_number();
    if (on_progress && line_no % kDetectProgressLines == 0) on_progress(counts);
    if (outcome == LineReader::Outcome::kTooLong) {
      report(line_no,
             "longer than " + std::to_string(LineReader::kMaxLineBytes) + " bytes; skipped");
      ++counts.bad;
      first_content_line = false;
      continue;
    }
    const std::string_view text = Trim(line);
    if (text.empty() || text.front() == '#') continue;
    const bool may_be_header = first_content_line;
    first_content_line = false;
    const size_t comma = text.find(',');
    if (comma == std::string_view::npos) {
      report(line_no, "expected timestamp,value");
      ++counts.bad;
      continue;
    }
    const std::string_view ts = Trim(text.substr(0, comma));
    const std::string_view val = Trim(text.substr(comma + 1));
    const std::optional<int64_t> time_ms = ParseCsvTimestampMs(ts);
    const std::optional<double> value = ParseNumber(val);
    if (!time_ms || !value) {
      if (may_be_header && !value) {
        if (NamesATime(val)) {
          // "value,timestamp": every row would be scored with its value as the time.
          diagnostics << "line " << line_no << ": the header puts the time second ('" << text
                      << "'); detect reads timestamp,value: swap the columns\n";
          counts.reversed_header = true;
          break;
        }
        continue;
      }
      report(line_no, !time_ms ? "bad timestamp '" + std::string(ts) + "'"
                               : "bad value '" + std::string(val) + "'");
      ++counts.bad;
      continue;
    }
    const int64_t ignored_before = detector.ignored();
    const Verdict v = detector.Observe(*time_ms, *value);
    // A point the detector ignores (older than the previous one, or NaN/±Inf) gets no verdict: it
    // is written with type `ignored` and counted apart, so that it does not read as judged normal.
    if (detector.ignored() > ignored_before) {
      if (std::isfinite(*value)) {
        report(line_no, "timestamp earlier than the previous point; ignored");
      }
      ++counts.ignored;
      out << ts << ',' << val << ",0.0000,ignored,none\n";
      continue;
    }
    ++counts.rows;
    counts.alerts += v.severity >= Severity::kWarning;
    std::snprintf(score, sizeof score, "%.4f", v.score);
    out << ts << ',' << val << ',' << score << ',' << AnomalyTypeName(v.type) << ','
        << SeverityName(v.severity) << '\n';
  }
  return counts;
}

}  // namespace inferscope
