#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "alerting/alert.h"
#include "operators/detectors.h"

namespace inferscope::bench {

// The evaluation harness of the streaming detectors: a generator of labelled series and a scorer.
// Both the `anomaly_eval` executable and the operators unit test (a reduced suite) use it, so the
// figures in docs/DETECTORS.md and the CI guard come from the same code.
//
// Protocol (see docs/DETECTORS.md):
// - An alert is a rising edge: a point whose severity is >= warning while the previous point's was
//   below warning.
// - A labelled anomaly [start, end] (point indices) is detected when an alert falls in
//   [start, end + tolerance]; its delay is (first such alert - start) in points.
// - An alert is a true positive when it falls in some anomaly's window, else a false positive.
//   precision = TP alerts / all alerts, recall = detected anomalies / anomalies, F1 their harmonic
//   mean; per scenario (each series carries anomalies of one type).
// - Clean series (plain and seasonal) report false alerts per 10,000 points after warm-up.

enum class Noise : uint8_t { kGaussian, kLaplace, kStudentT, kAr1 };
enum class Sampling : uint8_t { kRegular, kIrregular, kMissing };
std::string_view NoiseName(Noise noise);
std::string_view SamplingName(Sampling sampling);

struct LabelledAnomaly {
  AnomalyType type = AnomalyType::kNone;
  int64_t start = 0;  // point index (after sampling)
  int64_t end = 0;    // inclusive
  int64_t tolerance = 0;
};

struct LabelledSeries {
  AnomalyType scenario = AnomalyType::kNone;  // kNone = clean
  bool seasonal = false;
  Noise noise = Noise::kGaussian;
  Sampling sampling = Sampling::kRegular;
  DetectorOptions options;
  std::vector<int64_t> time_ms;
  std::vector<double> value;
  std::vector<LabelledAnomaly> anomalies;
};

struct SuiteConfig {
  int series_per_scenario = 24;  // cycles through 4 noises x 3 samplings
  int64_t length = 4000;         // grid points per series (before missing points are dropped)
  uint64_t seed = 20240601;
};

// Scenarios: spike, dip, level_shift, drift, seasonal_break, rate_of_change, clean, clean seasonal.
std::vector<LabelledSeries> GenerateSuite(const SuiteConfig& config);

struct ScenarioResult {
  std::string name;
  AnomalyType type = AnomalyType::kNone;
  bool seasonal = false;
  int64_t series = 0;
  int64_t points = 0;  // judged points (after warm-up)
  int64_t anomalies = 0;
  int64_t detected = 0;
  int64_t type_matched = 0;  // detected anomalies with a >= warning verdict of the labelled type
  int64_t alerts = 0;
  int64_t true_alerts = 0;
  double delay_sum = 0;
  int64_t false_by_type[kNumAnomalyTypes] = {};  // false alerts by the verdict's type
  double precision() const;
  double recall() const;
  double f1() const;
  double mean_delay() const;
  double false_alerts_per_10k() const;  // (alerts - true_alerts) per 10,000 judged points
};

struct EvalReport {
  std::vector<ScenarioResult> scenarios;
  const ScenarioResult* Find(std::string_view name) const;
};

EvalReport Evaluate(const std::vector<LabelledSeries>& suite);

// Markdown table, one row per scenario.
std::string FormatMarkdown(const EvalReport& report);

// The Done-when targets of issue 4; appends one line per missed target to `failures`.
bool MeetsTargets(const EvalReport& report, std::vector<std::string>* failures);

}  // namespace inferscope::bench
