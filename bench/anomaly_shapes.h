#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bench/anomaly_harness.h"
#include "operators/detectors.h"

namespace inferscope::bench {

// The real-shape evaluation of the streaming detectors (issue 10), beside the synthetic suite of
// anomaly_harness.h: generated series with the shapes real metrics have (sparse counts, low-rate
// Poisson counts, intermittent event counts, multi-decade byte bursts, quantised gauges,
// noise-free periodic signals with and without a configured season, cumulative counters with
// resets, a change of units), and per-minute series derived from the real request traces in
// /work/shared/traces (see LoadTraceSeries).
//
// Protocol, point-wise (as an alerting user experiences it; see docs/DETECTORS.md):
// - a point is *in alarm* when its severity is >= warning; an *episode* is a maximal run of points
//   in alarm;
// - a labelled window is [start, end + tolerance] (point indices). Points in alarm outside every
//   window are false-positive points; `clean share` = those / judged points outside windows;
// - an episode that overlaps a window is true, otherwise false; precision = true episodes /
//   episodes; recall = windows (of injected anomalies) touched by an alarm point / windows;
//   F1 their harmonic mean; *early recall* weighs each detected window by a sigmoid of the
//   position of its first alarm point in the window (1 at the start, 0.5 in the middle, ~0 at
//   the end), so early detection counts more than late;
// - periodic shapes are scored from their 4th period on (ShapeSeries::scored_from);
// - a window marked `persistent` is a permanent change (a regime change, a counter reset, idle
//   after activity): the episode it raises must end within EpisodeBound(options) points of the
//   window start, and it is not counted as an injected anomaly in recall.

// Series of one shape; `anomalous` series carry injected anomalies, the others are clean (apart
// from persistent windows, which are part of the shape).
struct ShapeSeries {
  std::string shape;
  std::string variant;  // e.g. "season", "no season", "lambda 0.3"
  bool anomalous = false;
  DetectorOptions options;
  std::vector<int64_t> time_ms;
  std::vector<double> value;
  std::vector<LabelledAnomaly> windows;
  std::vector<bool> persistent;  // per window
  // Points before this index are not scored: a periodic signal is judged once the detector has
  // seen 3 periods of it ("regular transitions must not alarm once seen a few periods").
  int64_t scored_from = 0;
};

struct ShapeSuiteConfig {
  int series_per_shape = 8;  // clean series; as many anomalous ones
  int64_t length = 10'000;   // points per series (1-minute sampling)
  uint64_t seed = 20240601;
};

// The shapes, in table order.
std::vector<std::string_view> ShapeNames();
std::vector<ShapeSeries> GenerateShapeSuite(const ShapeSuiteConfig& config);

// The longest alarm episode the detector allows after a persistent change, in points (documented
// in docs/DETECTORS.md: 2 x shift_max_run).
int64_t EpisodeBound(const DetectorOptions& options);

struct PointwiseResult {
  std::string name;
  int64_t series = 0;
  int64_t points = 0;           // judged points (after warm-up)
  int64_t clean_points = 0;     // judged points outside every window
  int64_t clean_warning = 0;    // of those, at >= warning (score >= options.warning)
  int64_t clean_emergency = 0;  // of those, score >= 0.95
  int64_t episodes = 0;
  int64_t true_episodes = 0;
  int64_t windows = 0;  // injected (non-persistent) windows judged
  int64_t detected = 0;
  double early_sum = 0;
  int64_t persistent_windows = 0;
  int64_t longest_clean_episode = 0;       // longest episode that overlaps no window
  int64_t longest_persistent_episode = 0;  // longest episode starting in a persistent window
  int64_t persistent_over_bound = 0;       // persistent windows whose episode exceeded the bound
  double clean_warning_share() const;
  double clean_emergency_share() const;
  double precision() const;
  double recall() const;
  double f1() const;
  double early_recall() const;
};

// Point-wise results per shape (rows in the order the shapes first appear in `suite`). With
// `clean_only`, the anomalous series are skipped (the calibration table).
std::vector<PointwiseResult> EvaluatePointwise(const std::vector<ShapeSeries>& suite,
                                               bool clean_only = false);
std::string FormatPointwiseMarkdown(const std::vector<PointwiseResult>& results);
// Calibration table: share of clean points at >= warning (0.7) and >= 0.95, per shape.
std::string FormatCalibrationMarkdown(const std::vector<PointwiseResult>& results);

// Issue-10 targets on clean data: <= 0.1 % of clean points at warning or above and <= 0.01 % at
// >= 0.95 per shape, every persistent change's episode within the bound. Appends one line per
// miss to `failures`.
bool MeetsShapeTargets(const std::vector<PointwiseResult>& clean,
                       std::vector<std::string>* failures);

// ---- Real request traces ----

// One per-bucket series derived from a request trace.
struct TraceSeries {
  std::string name;  // e.g. "conv request_rate"
  std::vector<int64_t> time_ms;
  std::vector<double> value;
};

// Reads a trace CSV `TIMESTAMP,ContextTokens,GeneratedTokens` (Azure LLM inference 2023; see
// /work/shared/traces/README.md) and derives, per `bucket_ms` of invocation time, the series a
// user would watch: request rate (requests per bucket), prompt tokens per bucket, generated tokens
// per bucket, and the p95 of prompt and generated tokens per request in the bucket. `label`
// prefixes the names. Empty buckets count 0 requests (p95 then repeats nothing: the point is
// skipped). Returns an empty vector when the file cannot be read.
std::vector<TraceSeries> LoadTraceSeries(const std::string& path, const std::string& label,
                                         int64_t bucket_ms);
// Writes/reads the derived series as `series,timestamp_ms,value` rows (the committed test data).
bool WriteTraceSeriesCsv(const std::vector<TraceSeries>& series, const std::string& path);
std::vector<TraceSeries> ReadTraceSeriesCsv(const std::string& path);

struct TraceResult {
  std::string name;
  int64_t points = 0;   // judged points
  int64_t warning = 0;  // at >= warning
  int64_t emergency = 0;
  double warning_share() const { return points > 0 ? double(warning) / double(points) : 0.0; }
};
// Runs a detector with `options` over each series and counts flagged points.
std::vector<TraceResult> EvaluateTraces(const std::vector<TraceSeries>& series,
                                        const DetectorOptions& options);
std::string FormatTraceMarkdown(const std::vector<TraceResult>& results);

}  // namespace inferscope::bench
