#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "pipeline/status.h"

namespace inferscope {

// The metric type a `# TYPE` line declares (untyped when none does).
enum class PromType : uint8_t {
  kUntyped = 0,  // 0.0.4 "untyped", OpenMetrics "unknown", or no TYPE line
  kCounter,
  kGauge,
  kHistogram,
  kGaugeHistogram,  // OpenMetrics
  kSummary,
  kInfo,      // OpenMetrics
  kStateSet,  // OpenMetrics
};
std::string_view PromTypeName(PromType type);

// What one sample line is within its family (from the sample name's suffix and the family type).
enum class PromRole : uint8_t {
  kValue = 0,  // a gauge, untyped, stateset or summary-quantile sample (the family name itself)
  kTotal,      // a counter's value (`_total`, or the family name in 0.0.4 counters without it)
  kCreated,    // `_created` of a counter, histogram or summary (OpenMetrics)
  kBucket,     // `_bucket` of a histogram (`le` label)
  kSum,        // `_sum` of a histogram or summary (`_gsum` of a gauge histogram)
  kCount,      // `_count` of a histogram or summary (`_gcount` of a gauge histogram)
  kQuantile,   // a summary's quantile sample (`quantile` label)
  kInfo,       // `_info` of an info family
};
std::string_view PromRoleName(PromRole role);

// Text format flavour; kAuto decides per page (see PromTextParser).
enum class PromFormat : uint8_t { kAuto = 0, kText004, kOpenMetrics };

// One label of a sample: views into the page. `value` is the raw text between the quotes; when
// `escaped` is set it holds backslash escapes (`\\`, `\"`, `\n`) that UnescapeLabelValue decodes.
struct PromLabel {
  std::string_view name;
  std::string_view value;
  bool escaped = false;
};

// One parsed sample. Every view points into the page passed to Parse and is valid only during the
// callback; `labels` is the parser's own fixed array (no allocation per sample).
struct PromSample {
  std::string_view name;    // the sample's metric name ("vllm:ttft_seconds_bucket")
  std::string_view family;  // the family it belongs to ("vllm:ttft_seconds")
  std::string_view series;  // name and label set exactly as on the page, a stable series key
  PromType type = PromType::kUntyped;
  PromRole role = PromRole::kValue;
  const PromLabel* labels = nullptr;
  size_t num_labels = 0;
  double value = 0;
  bool has_timestamp = false;
  int64_t timestamp_ms = 0;  // 0.0.4: integer ms; OpenMetrics: seconds (float), converted to ms

  // The label named `name` (its raw value and escape flag), or null.
  const PromLabel* Label(std::string_view name) const;
};

// Why a line was skipped (counted per reason in PromParseStats).
enum class PromSkip : uint8_t {
  kLineTooLong = 0,  // longer than max_line_bytes
  kTooManyLabels,    // more than max_labels labels
  kTooManySamples,   // beyond max_samples for this page
  kBadName,          // no valid metric name at the start of the line
  kBadLabels,        // malformed label set (quotes, escapes, separators)
  kBadValue,         // missing or unparsable value
  kBadTimestamp,     // unparsable timestamp
  kBadComment,       // a malformed `# TYPE`/`# HELP`/`# UNIT` line
  kAfterEof,         // content after OpenMetrics `# EOF`
  kCount_,
};
inline constexpr size_t kNumPromSkips = static_cast<size_t>(PromSkip::kCount_);
std::string_view PromSkipName(PromSkip reason);

// What one Parse call saw.
struct PromParseStats {
  uint64_t lines = 0;    // every line, blank and comment lines included
  uint64_t samples = 0;  // samples handed to the sink
  std::array<uint64_t, kNumPromSkips> skipped{};
  bool openmetrics = false;  // the page was read as OpenMetrics
  bool saw_eof = false;      // `# EOF` was seen (OpenMetrics requires it)

  uint64_t skipped_total() const;
};

// Receives the samples of a page, in page order.
class PromSampleSink {
 public:
  virtual ~PromSampleSink() = default;
  virtual void OnSample(const PromSample& sample) = 0;
};

struct PromParserOptions {
  // Longer lines are skipped (kLineTooLong). Default 64 KiB; >= 64.
  size_t max_line_bytes = 64 * 1024;
  // Labels per sample; a sample with more is skipped (kTooManyLabels). Default 64; 1..1024.
  size_t max_labels = 64;
  // Samples per page; the rest is skipped (kTooManySamples). Default 1,000,000; >= 1.
  size_t max_samples = 1'000'000;
  PromFormat format = PromFormat::kAuto;

  Status Validate() const;
};

// PromTextParser reads the Prometheus text exposition format 0.0.4 and the OpenMetrics 1.0 text
// format, zero-copy: samples are views into the page, and the parser allocates nothing per sample
// (the label array is sized once, at construction).
//
// Format: `# HELP`, `# TYPE` and (OpenMetrics) `# UNIT` lines describe the family that follows;
// other comment lines are ignored; `# EOF` ends an OpenMetrics page. Sample names are matched to
// the current family by the suffixes `_total`, `_created`, `_bucket`, `_count`, `_sum`, `_gcount`,
// `_gsum`, `_info`; a sample matching no declared family is untyped (its own family). Values are
// floats (NaN, +Inf, -Inf, exponents). Timestamps are integer ms (0.0.4) or float seconds
// (OpenMetrics). Exemplars (` # {...} value [ts]` after an OpenMetrics sample) are ignored.
// kAuto reads OpenMetrics syntax for timestamps when the page has `# EOF` as its last line or a
// `# UNIT` line — the two markers 0.0.4 has not; a 0.0.4 page never has them.
//
// Robustness: any bytes are accepted; a malformed line is skipped and counted by reason, never a
// crash, and parsing resumes at the next line (Prometheus fails the whole scrape; we keep the
// rest, and report). Bounded: line length, labels per sample and samples per page.
// Concurrency: one parser per thread.
class PromTextParser {
 public:
  // `options` must be valid (Validate).
  explicit PromTextParser(PromParserOptions options = {});

  // Parses `page`, handing each sample to `sink`; returns what it saw.
  PromParseStats Parse(std::string_view page, PromSampleSink& sink);

  const PromParserOptions& options() const { return options_; }

 private:
  struct Family {
    std::string_view name;
    PromType type = PromType::kUntyped;
  };
  // Parses one line (no newline). Returns false with `*skip` set when the line is skipped.
  bool ParseSampleLine(std::string_view line, bool openmetrics, PromSample& out, PromSkip* skip);
  bool ParseComment(std::string_view line, bool openmetrics, PromSkip* skip, bool* eof);
  void Classify(PromSample& sample) const;

  PromParserOptions options_;
  std::unique_ptr<PromLabel[]> labels_;
  Family family_;
};

// Decodes a raw label value (PromLabel::value) into `out` (replacing its contents): `\\` → `\`,
// `\"` → `"`, `\n` → newline; any other backslash sequence is kept as it is (as Prometheus does).
void UnescapeLabelValue(std::string_view raw, std::string& out);

// Parses a sample value: decimal or exponent floats, "NaN", "+Inf"/"Inf", "-Inf" (case-insensitive
// as Go's ParseFloat). Returns false on anything else.
bool ParsePromDouble(std::string_view text, double* out);

}  // namespace inferscope
