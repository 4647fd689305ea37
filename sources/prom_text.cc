#include "sources/prom_text.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>

namespace inferscope {
namespace {

// Character classes of metric and label names ([a-zA-Z_:][a-zA-Z0-9_:]* and
// [a-zA-Z_][a-zA-Z0-9_]*).
struct CharTable {
  bool name_start[256] = {};
  bool name_char[256] = {};
  bool label_start[256] = {};
  bool label_char[256] = {};
  constexpr CharTable() {
    for (int c = 0; c < 256; ++c) {
      const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
      const bool digit = c >= '0' && c <= '9';
      label_start[c] = alpha;
      label_char[c] = alpha || digit;
      name_start[c] = alpha || c == ':';
      name_char[c] = alpha || digit || c == ':';
    }
  }
};
constexpr CharTable kChars;

inline bool IsBlank(char c) { return c == ' ' || c == '\t'; }

inline size_t SkipBlanks(std::string_view s, size_t i) {
  while (i < s.size() && IsBlank(s[i])) ++i;
  return i;
}

// The end of the name starting at `i` (i itself when there is none).
inline size_t ScanMetricName(std::string_view s, size_t i) {
  if (i >= s.size() || !kChars.name_start[static_cast<unsigned char>(s[i])]) return i;
  ++i;
  while (i < s.size() && kChars.name_char[static_cast<unsigned char>(s[i])]) ++i;
  return i;
}

inline size_t ScanLabelName(std::string_view s, size_t i) {
  if (i >= s.size() || !kChars.label_start[static_cast<unsigned char>(s[i])]) return i;
  ++i;
  while (i < s.size() && kChars.label_char[static_cast<unsigned char>(s[i])]) ++i;
  return i;
}

inline size_t TokenEnd(std::string_view s, size_t i) {
  while (i < s.size() && !IsBlank(s[i])) ++i;
  return i;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i];
    char y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

bool ParseType(std::string_view text, PromType* type) {
  struct Entry {
    std::string_view name;
    PromType type;
  };
  static constexpr Entry kTypes[] = {
      {"counter", PromType::kCounter},     {"gauge", PromType::kGauge},
      {"histogram", PromType::kHistogram}, {"gaugehistogram", PromType::kGaugeHistogram},
      {"summary", PromType::kSummary},     {"untyped", PromType::kUntyped},
      {"unknown", PromType::kUntyped},     {"info", PromType::kInfo},
      {"stateset", PromType::kStateSet},
  };
  for (const Entry& e : kTypes) {
    if (text == e.name) {
      *type = e.type;
      return true;
    }
  }
  return false;
}

bool EndsWithEof(std::string_view page) {
  while (!page.empty() && (page.back() == '\n' || page.back() == '\r' || IsBlank(page.back()))) {
    page.remove_suffix(1);
  }
  constexpr std::string_view kEof = "# EOF";
  if (page.size() < kEof.size() || page.substr(page.size() - kEof.size()) != kEof) return false;
  return page.size() == kEof.size() || page[page.size() - kEof.size() - 1] == '\n';
}

}  // namespace

std::string_view PromTypeName(PromType type) {
  switch (type) {
    case PromType::kUntyped:
      return "untyped";
    case PromType::kCounter:
      return "counter";
    case PromType::kGauge:
      return "gauge";
    case PromType::kHistogram:
      return "histogram";
    case PromType::kGaugeHistogram:
      return "gaugehistogram";
    case PromType::kSummary:
      return "summary";
    case PromType::kInfo:
      return "info";
    case PromType::kStateSet:
      return "stateset";
  }
  return "untyped";
}

std::string_view PromRoleName(PromRole role) {
  switch (role) {
    case PromRole::kValue:
      return "value";
    case PromRole::kTotal:
      return "total";
    case PromRole::kCreated:
      return "created";
    case PromRole::kBucket:
      return "bucket";
    case PromRole::kSum:
      return "sum";
    case PromRole::kCount:
      return "count";
    case PromRole::kQuantile:
      return "quantile";
    case PromRole::kInfo:
      return "info";
  }
  return "value";
}

std::string_view PromSkipName(PromSkip reason) {
  switch (reason) {
    case PromSkip::kLineTooLong:
      return "line_too_long";
    case PromSkip::kTooManyLabels:
      return "too_many_labels";
    case PromSkip::kTooManySamples:
      return "too_many_samples";
    case PromSkip::kBadName:
      return "bad_name";
    case PromSkip::kBadLabels:
      return "bad_labels";
    case PromSkip::kBadValue:
      return "bad_value";
    case PromSkip::kBadTimestamp:
      return "bad_timestamp";
    case PromSkip::kBadComment:
      return "bad_comment";
    case PromSkip::kAfterEof:
      return "after_eof";
    case PromSkip::kCount_:
      break;
  }
  return "unknown";
}

uint64_t PromParseStats::skipped_total() const {
  uint64_t n = 0;
  for (uint64_t s : skipped) n += s;
  return n;
}

const PromLabel* PromSample::Label(std::string_view label_name) const {
  for (size_t i = 0; i < num_labels; ++i) {
    if (labels[i].name == label_name) return &labels[i];
  }
  return nullptr;
}

Status PromParserOptions::Validate() const {
  if (max_line_bytes < 64) return Status::InvalidArgument("max_line_bytes must be >= 64");
  if (max_labels < 1 || max_labels > 1024) {
    return Status::InvalidArgument("max_labels must be between 1 and 1024");
  }
  if (max_samples < 1) return Status::InvalidArgument("max_samples must be >= 1");
  return Status::Ok();
}

void UnescapeLabelValue(std::string_view raw, std::string& out) {
  out.clear();
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    const char c = raw[i];
    if (c == '\\' && i + 1 < raw.size()) {
      const char n = raw[i + 1];
      if (n == '\\' || n == '"') {
        out.push_back(n);
        ++i;
        continue;
      }
      if (n == 'n') {
        out.push_back('\n');
        ++i;
        continue;
      }
    }
    out.push_back(c);
  }
}

bool ParsePromDouble(std::string_view text, double* out) {
  if (text.empty()) return false;
  const char first = text[0];
  if ((first >= '0' && first <= '9') || first == '-' || first == '.') {
    const char* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, *out);
    if (ec == std::errc() && ptr == end) return true;
    if (ec == std::errc::result_out_of_range && ptr == end) {
      // Go's ParseFloat returns ±Inf (or 0) with an error; Prometheus rejects those, so do we.
      return false;
    }
    if (first != '-') return false;
  }
  std::string_view rest = text;
  bool negative = false;
  if (rest[0] == '+' || rest[0] == '-') {
    negative = rest[0] == '-';
    rest.remove_prefix(1);
    if (rest.empty()) return false;
    if (rest[0] >= '0' && rest[0] <= '9') {
      if (negative) return false;  // "-1.5" was handled above; here it is malformed
      // "+1.5": from_chars does not take a leading '+'.
      const char* end = rest.data() + rest.size();
      auto [ptr, ec] = std::from_chars(rest.data(), end, *out);
      return ec == std::errc() && ptr == end;
    }
  }
  if (EqualsIgnoreCase(rest, "inf") || EqualsIgnoreCase(rest, "infinity")) {
    *out = negative ? -std::numeric_limits<double>::infinity()
                    : std::numeric_limits<double>::infinity();
    return true;
  }
  if (EqualsIgnoreCase(rest, "nan") && rest.size() == text.size()) {
    *out = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  return false;
}

PromTextParser::PromTextParser(PromParserOptions options)
    : options_(options), labels_(new PromLabel[options.max_labels]) {}

PromParseStats PromTextParser::Parse(std::string_view page, PromSampleSink& sink) {
  PromParseStats stats;
  family_ = {};
  bool openmetrics = options_.format == PromFormat::kOpenMetrics ||
                     (options_.format == PromFormat::kAuto && EndsWithEof(page));
  bool eof = false;
  PromSample sample;
  sample.labels = labels_.get();
  size_t pos = 0;
  while (pos < page.size()) {
    const char* start = page.data() + pos;
    const void* nl = std::memchr(start, '\n', page.size() - pos);
    const size_t len = nl == nullptr ? page.size() - pos
                                     : static_cast<size_t>(static_cast<const char*>(nl) - start);
    std::string_view line(start, len);
    pos += len + 1;
    ++stats.lines;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > options_.max_line_bytes) {
      ++stats.skipped[static_cast<size_t>(PromSkip::kLineTooLong)];
      continue;
    }
    const size_t first = SkipBlanks(line, 0);
    if (first == line.size()) continue;  // blank line
    if (eof) {
      ++stats.skipped[static_cast<size_t>(PromSkip::kAfterEof)];
      continue;
    }
    PromSkip skip = PromSkip::kBadName;
    if (line[first] == '#') {
      bool saw_eof = false;
      if (!ParseComment(line.substr(first), openmetrics, &skip, &saw_eof)) {
        ++stats.skipped[static_cast<size_t>(skip)];
      }
      if (saw_eof) {
        eof = true;
        stats.saw_eof = true;
      }
      continue;
    }
    if (stats.samples >= options_.max_samples) {
      ++stats.skipped[static_cast<size_t>(PromSkip::kTooManySamples)];
      continue;
    }
    if (!ParseSampleLine(line.substr(first), openmetrics, sample, &skip)) {
      ++stats.skipped[static_cast<size_t>(skip)];
      continue;
    }
    ++stats.samples;
    sink.OnSample(sample);
  }
  stats.openmetrics = openmetrics;
  return stats;
}

bool PromTextParser::ParseComment(std::string_view line, bool openmetrics, PromSkip* skip,
                                  bool* eof) {
  // line[0] == '#'. "# HELP name text", "# TYPE name type", "# UNIT name unit", "# EOF"; any other
  // comment is ignored (0.0.4; OpenMetrics has no free comments, but tolerating them costs
  // nothing).
  size_t i = SkipBlanks(line, 1);
  const size_t kw_end = TokenEnd(line, i);
  const std::string_view keyword = line.substr(i, kw_end - i);
  if (keyword == "EOF") {
    *eof = SkipBlanks(line, kw_end) == line.size();
    return true;
  }
  const bool help = keyword == "HELP";
  const bool type = keyword == "TYPE";
  const bool unit = keyword == "UNIT";
  if (!help && !type && !unit) return true;
  (void)openmetrics;
  i = SkipBlanks(line, kw_end);
  const size_t name_end = ScanMetricName(line, i);
  if (name_end == i || (name_end < line.size() && !IsBlank(line[name_end]))) {
    *skip = PromSkip::kBadComment;
    return false;
  }
  const std::string_view name = line.substr(i, name_end - i);
  if (!type) return true;  // HELP text and UNIT are not needed for the mapping
  const size_t t = SkipBlanks(line, name_end);
  const size_t t_end = TokenEnd(line, t);
  PromType parsed;
  if (!ParseType(line.substr(t, t_end - t), &parsed) || SkipBlanks(line, t_end) != line.size()) {
    *skip = PromSkip::kBadComment;
    return false;
  }
  family_.name = name;
  family_.type = parsed;
  return true;
}

bool PromTextParser::ParseSampleLine(std::string_view line, bool openmetrics, PromSample& out,
                                     PromSkip* skip) {
  const size_t name_end = ScanMetricName(line, 0);
  if (name_end == 0) {
    *skip = PromSkip::kBadName;
    return false;
  }
  out.name = line.substr(0, name_end);
  out.num_labels = 0;
  size_t i = SkipBlanks(line, name_end);
  if (i < line.size() && line[i] == '{') {
    ++i;
    while (true) {
      i = SkipBlanks(line, i);
      if (i >= line.size()) {
        *skip = PromSkip::kBadLabels;
        return false;
      }
      if (line[i] == '}') {
        ++i;
        break;
      }
      const size_t ln_end = ScanLabelName(line, i);
      if (ln_end == i) {
        *skip = PromSkip::kBadLabels;
        return false;
      }
      const std::string_view label_name = line.substr(i, ln_end - i);
      i = SkipBlanks(line, ln_end);
      if (i >= line.size() || line[i] != '=') {
        *skip = PromSkip::kBadLabels;
        return false;
      }
      i = SkipBlanks(line, i + 1);
      if (i >= line.size() || line[i] != '"') {
        *skip = PromSkip::kBadLabels;
        return false;
      }
      ++i;
      // The closing quote: the first '"' not escaped. memchr finds candidates fast; a backslash
      // before it sends us to the careful scan.
      const char* base = line.data();
      const void* q = std::memchr(base + i, '"', line.size() - i);
      if (q == nullptr) {
        *skip = PromSkip::kBadLabels;
        return false;
      }
      size_t close = static_cast<size_t>(static_cast<const char*>(q) - base);
      bool escaped = std::memchr(base + i, '\\', close - i) != nullptr;
      if (escaped) {
        size_t j = i;
        while (j < line.size() && line[j] != '"') {
          if (line[j] == '\\') {
            if (j + 1 >= line.size()) break;
            ++j;
          }
          ++j;
        }
        if (j >= line.size()) {
          *skip = PromSkip::kBadLabels;
          return false;
        }
        close = j;
      }
      if (out.num_labels >= options_.max_labels) {
        *skip = PromSkip::kTooManyLabels;
        return false;
      }
      PromLabel& label = labels_[out.num_labels++];
      label.name = label_name;
      label.value = line.substr(i, close - i);
      label.escaped = escaped;
      i = SkipBlanks(line, close + 1);
      if (i < line.size() && line[i] == ',') {
        ++i;
      } else if (i >= line.size() || line[i] != '}') {
        *skip = PromSkip::kBadLabels;
        return false;
      }
    }
    out.series = line.substr(0, i);
    i = SkipBlanks(line, i);
  } else {
    out.series = out.name;
  }
  if (i == name_end && i < line.size()) {  // the name must be followed by a blank or a label set
    *skip = PromSkip::kBadName;
    return false;
  }
  const size_t v_end = TokenEnd(line, i);
  if (v_end == i || !ParsePromDouble(line.substr(i, v_end - i), &out.value)) {
    *skip = PromSkip::kBadValue;
    return false;
  }
  out.has_timestamp = false;
  i = SkipBlanks(line, v_end);
  if (i < line.size() && line[i] != '#') {
    const size_t t_end = TokenEnd(line, i);
    const std::string_view ts = line.substr(i, t_end - i);
    if (openmetrics) {
      double seconds = 0;
      if (!ParsePromDouble(ts, &seconds) || !std::isfinite(seconds) || std::fabs(seconds) > 9e15) {
        *skip = PromSkip::kBadTimestamp;
        return false;
      }
      out.timestamp_ms = std::llround(seconds * 1000.0);
    } else {
      int64_t ms = 0;
      auto [ptr, ec] = std::from_chars(ts.data(), ts.data() + ts.size(), ms);
      if (ec != std::errc() || ptr != ts.data() + ts.size()) {
        *skip = PromSkip::kBadTimestamp;
        return false;
      }
      out.timestamp_ms = ms;
    }
    out.has_timestamp = true;
    i = SkipBlanks(line, t_end);
  }
  // Whatever follows must be an exemplar (" # {...} value [ts]"), which we ignore.
  if (i < line.size() && line[i] != '#') {
    *skip = PromSkip::kBadTimestamp;
    return false;
  }
  Classify(out);
  return true;
}

void PromTextParser::Classify(PromSample& sample) const {
  const std::string_view name = sample.name;
  const std::string_view fam = family_.name;
  if (!fam.empty() && name.size() >= fam.size() && name.compare(0, fam.size(), fam) == 0) {
    const std::string_view suffix = name.substr(fam.size());
    bool matched = true;
    PromRole role = PromRole::kValue;
    switch (family_.type) {
      case PromType::kCounter:
        if (suffix.empty() || suffix == "_total") {
          role = PromRole::kTotal;
        } else if (suffix == "_created") {
          role = PromRole::kCreated;
        } else {
          matched = false;
        }
        break;
      case PromType::kGauge:
      case PromType::kUntyped:
      case PromType::kStateSet:
        matched = suffix.empty();
        break;
      case PromType::kHistogram:
      case PromType::kGaugeHistogram: {
        const bool gauge = family_.type == PromType::kGaugeHistogram;
        if (suffix == "_bucket") {
          role = PromRole::kBucket;
        } else if (suffix == (gauge ? "_gsum" : "_sum")) {
          role = PromRole::kSum;
        } else if (suffix == (gauge ? "_gcount" : "_count")) {
          role = PromRole::kCount;
        } else if (!gauge && suffix == "_created") {
          role = PromRole::kCreated;
        } else {
          matched = false;
        }
        break;
      }
      case PromType::kSummary:
        if (suffix.empty()) {
          role = PromRole::kQuantile;
        } else if (suffix == "_sum") {
          role = PromRole::kSum;
        } else if (suffix == "_count") {
          role = PromRole::kCount;
        } else if (suffix == "_created") {
          role = PromRole::kCreated;
        } else {
          matched = false;
        }
        break;
      case PromType::kInfo:
        if (suffix.empty() || suffix == "_info") {
          role = PromRole::kInfo;
        } else {
          matched = false;
        }
        break;
    }
    if (matched) {
      sample.family = fam;
      sample.type = family_.type;
      sample.role = role;
      return;
    }
  }
  sample.family = name;
  sample.type = PromType::kUntyped;
  sample.role = PromRole::kValue;
}

}  // namespace inferscope
