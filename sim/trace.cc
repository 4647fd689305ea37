#include "sim/trace.h"

#include <charconv>
#include <fstream>
#include <sstream>

namespace inferscope::sim {
namespace {

constexpr std::string_view kHeader = "TIMESTAMP,ContextTokens,GeneratedTokens";

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

bool Digits(std::string_view s, size_t pos, size_t n, int64_t* out) {
  if (pos + n > s.size()) return false;
  int64_t v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

// "2023-11-16 18:15:46.6805900" → µs since the epoch.
bool ParseTimestamp(std::string_view s, int64_t* us) {
  int64_t y, mo, d, h, mi, sec;
  if (s.size() < 19 || s[4] != '-' || s[7] != '-' || s[10] != ' ' || s[13] != ':' || s[16] != ':' ||
      !Digits(s, 0, 4, &y) || !Digits(s, 5, 2, &mo) || !Digits(s, 8, 2, &d) ||
      !Digits(s, 11, 2, &h) || !Digits(s, 14, 2, &mi) || !Digits(s, 17, 2, &sec)) {
    return false;
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return false;
  int64_t frac_us = 0;
  if (s.size() > 19) {
    if (s[19] != '.' || s.size() == 20 || s.size() > 27) return false;
    int64_t frac = 0;
    const size_t digits = s.size() - 20;
    if (!Digits(s, 20, digits, &frac)) return false;
    for (size_t i = digits; i < 7; ++i) frac *= 10;  // in units of 100 ns
    frac_us = frac / 10;
  }
  const int64_t days = DaysFromCivil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d));
  *us = ((days * 24 + h) * 60 + mi) * 60'000'000 + sec * 1'000'000 + frac_us;
  return true;
}

bool ParseCount(std::string_view s, uint32_t* out) {
  uint32_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || v < 1 || v > 0x7fffffffu) return false;
  *out = v;
  return true;
}

}  // namespace

Result<std::vector<TraceRecord>> ParseAzureTrace(std::string_view text, std::string_view name) {
  std::vector<TraceRecord> records;
  size_t line_no = 0;
  auto error = [&](std::string_view what) {
    return Status::InvalidArgument(std::string(name) + ":" + std::to_string(line_no) + ": " +
                                   std::string(what));
  };
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    std::string_view line =
        text.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    pos = end == std::string_view::npos ? text.size() : end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line_no == 1) {
      if (line.size() >= 3 && line.substr(0, 3) == "\xEF\xBB\xBF") line.remove_prefix(3);
      if (line != kHeader) {
        return error("expected the header '" + std::string(kHeader) + "'");
      }
      continue;
    }
    if (line.empty()) return error("empty line");
    size_t c1 = line.find(',');
    size_t c2 = c1 == std::string_view::npos ? c1 : line.find(',', c1 + 1);
    if (c2 == std::string_view::npos || line.find(',', c2 + 1) != std::string_view::npos) {
      return error("expected 3 comma-separated fields TIMESTAMP,ContextTokens,GeneratedTokens");
    }
    TraceRecord r;
    if (!ParseTimestamp(line.substr(0, c1), &r.time_us)) {
      return error("TIMESTAMP: expected YYYY-MM-DD HH:MM:SS[.fffffff], got '" +
                   std::string(line.substr(0, c1)) + "'");
    }
    if (!ParseCount(line.substr(c1 + 1, c2 - c1 - 1), &r.context_tokens)) {
      return error("ContextTokens: expected an integer >= 1, got '" +
                   std::string(line.substr(c1 + 1, c2 - c1 - 1)) + "'");
    }
    if (!ParseCount(line.substr(c2 + 1), &r.generated_tokens)) {
      return error("GeneratedTokens: expected an integer >= 1, got '" +
                   std::string(line.substr(c2 + 1)) + "'");
    }
    if (!records.empty() && r.time_us < records.back().time_us) {
      return error("TIMESTAMP goes backwards (earlier than the line before)");
    }
    records.push_back(r);
  }
  if (line_no == 0) {
    line_no = 1;
    return error("empty file (expected the header '" + std::string(kHeader) + "')");
  }
  return records;
}

Result<std::vector<TraceRecord>> ReadAzureTrace(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IOError("cannot open trace " + path);
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return Status::IOError("cannot read trace " + path);
  return ParseAzureTrace(buf.str(), path);
}

}  // namespace inferscope::sim
