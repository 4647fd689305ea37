#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "operators/alert_lifecycle.h"
#include "operators/detectors.h"
#include "operators/threshold_rules.h"
#include "pipeline/config.h"
#include "pipeline/interner.h"
#include "pipeline/operator.h"
#include "pipeline/status.h"

namespace inferscope {

// AnomalyDetectOperator runs one SeriesDetector per (series, statistic) over the window summaries
// of the operator it reads, and turns the verdicts into alerts through the same AlertLifecycle as
// the threshold rules. The detector's name in alerts (`rule`) is the stage name.
//
// Per summary of a configured metric and window length with at least `min_count` values, each
// configured statistic (p95, mean, ...) is one point (time = window end) of its detector. A verdict
// at or above `min_severity` is active (with the verdict's severity and type); a score below
// `clear_below` is clear; in between is the hysteresis band. Warm-up verdicts are ignored.
//
// Early evaluation (`early: true`, default off): early summaries of the open pane (window_aggregate
// `early_slice`) of the judged window with at least `min_count` values are scored with
// SeriesDetector::Score — against the detector's current state, which they never change (only
// closed panes teach the baseline) — with the scale widened by sqrt(pane / observed part) (a
// statistic of 30 % of a pane is noisier than the closed panes the scale was learned from). A
// verdict at or above `min_severity` goes to AlertLifecycle::ObserveEarly (evaluation time: the
// slice boundary), so the alert can fire early and the closed pane confirms or retracts it. The
// `count` statistic is not judged early (a partial pane's count is not comparable with a closed
// one's). An early verdict that cannot change anything allocates nothing.
//
// Lifecycle: Create → Open → ProcessResults / OnTimer → Close.
// Concurrency: none; the operator thread makes every call.
// Limitations: at most `max_series` detectors (~700 bytes each, plus the seasonal profile); points
// of further (series, statistic) pairs are dropped and counted
// (inferscope_detector_series_dropped_total). A detector without a point for `series_ttl` of event
// time (on the upstream watermark) is forgotten (inferscope_detector_series_expired_total), so the
// series of a cardinality attack do not hold the table; it warms up again if its series returns.
// Detector state is not checkpointed: after a restart each detector warms up again.
class AnomalyDetectOperator final : public Operator {
 public:
  static constexpr std::string_view kName = "anomaly_detect";
  static constexpr std::string_view kDescription =
      "Streaming anomaly detectors (spike, level shift, drift, seasonal break, rate of change) per "
      "series statistic, raising firing/resolved alerts";

  struct Options {
    std::vector<std::string> metrics;                 // required, at least one
    std::vector<WindowStat> stats{WindowStat::kP95};  // default [p95]
    int64_t window_ms = 0;  // 0: the shortest window the upstream emits (its pane)
    int64_t min_count = 1;  // windows with fewer values are skipped; >= 1
    Severity min_severity = Severity::kWarning;  // verdicts at or above it are active
    double clear_below = 0.5;                    // scores below it are clear; in (0, 1]
    AlertTiming timing;
    int64_t max_series = 100'000;       // detectors; >= 1
    int64_t series_ttl_ms = 3'600'000;  // idle detectors are forgotten; 0 keeps them; >= 0
    DetectorOptions detector;
    AlertLifecycle::Options lifecycle;
    bool early = false;  // also judge early summaries of the open pane (see above); default false
    Status Validate() const;
  };

  // Reads `metrics`, `stats`, `window`, `min_count`, `min_severity`, `clear_below`, `for`,
  // `keep_firing_for`, `max_series`, `series_ttl`, `max_alert_states`, `stale_after`, `early` and
  // `detector` (a mapping of DetectorOptions, see operators/detectors.h).
  static Result<std::unique_ptr<AnomalyDetectOperator>> Create(const ConfigNode& options);
  static Result<Options> ParseOptions(const ConfigNode& options);

  explicit AnomalyDetectOperator(Options options);

  Status Open(const StageContext& ctx) override;
  Status Process(const EventBatch& batch, OutputBatch& out) override;
  // Reads pane summaries (window_aggregate) and window summaries (sliding_window), and with
  // `early` the early summaries of open panes; emits alerts.
  KindSet Reads() const override {
    return options_.early
               ? KindSet::Of<kind::PaneSummary, kind::WindowSummary, kind::EarlySummary>()
               : KindSet::Of<kind::PaneSummary, kind::WindowSummary>();
  }
  KindSet Emits() const override { return KindSet::Of<kind::Alert>(); }
  Status ProcessResults(const OutputBatch& in, OutputBatch& out) override;
  Status OnTimer(int64_t now_ms, OutputBatch& out) override;
  // Its timer work (sweeping what the watermark made stale) depends on the watermark alone: due
  // once the watermark moved since the last timer, never otherwise.
  int64_t NextTimerMs(int64_t now_ms) const override {
    return watermark_ms_ != timer_watermark_ms_ ? now_ms : kNoTimer;
  }
  // The alert states (pending, firing) survive restarts; detector baselines do not.
  Status Checkpoint(CheckpointWriter& writer) override { return lifecycle_.Checkpoint(writer); }
  Status Restore(const CheckpointReader& reader) override { return lifecycle_.Restore(reader); }

  size_t detectors() const { return detectors_.size(); }
  // The detector of (series, stat), or nullptr (tests, diagnostics).
  const SeriesDetector* detector(const SeriesKey& series, WindowStat stat) const {
    auto it = detectors_.find(Key{series, stat});
    return it == detectors_.end() ? nullptr : it->second.detector.get();
  }
  uint64_t detectors_expired() const { return expired_total_; }
  const AlertLifecycle& lifecycle() const { return lifecycle_; }

 private:
  struct Key {
    SeriesKey series;
    WindowStat stat;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const;
  };

  bool WantsMetric(StringId metric);
  void Observe(const WindowSummary& summary, const SummaryStats& stats, WindowStat stat,
               std::vector<Alert>& out);
  // One early summary's statistic: scored (not learned) by its detector, if it has one.
  void ObserveEarly(const WindowSummary& summary, const SummaryStats& stats, WindowStat stat,
                    double noise, std::vector<Alert>& out);
  // A closed summary its detector cannot judge (warming up, or no detector): early evidence of
  // its pane or an earlier one is retracted or forgotten (AlertLifecycle::ObserveUnjudged).
  void Unjudged(const WindowSummary& summary, WindowStat stat, std::vector<Alert>& out);
  // The evidence of a verdict on `value` of `summary` (labels, range, message).
  Alert Evidence(const WindowSummary& summary, WindowStat stat, double value, const Verdict& v,
                 Condition condition) const;

  Options options_;
  // options_.detector, shared by every SeriesDetector of this operator (one copy in cache).
  std::shared_ptr<const PreparedDetectorOptions> detector_options_;
  std::string name_;
  AlertLifecycle lifecycle_;
  const Interner* interner_ = nullptr;
  std::unordered_map<StringId, bool> wanted_metrics_;
  struct Tracked {
    std::unique_ptr<SeriesDetector> detector;
    int64_t last_end_ms = INT64_MIN;  // end of the latest window observed
  };
  std::unordered_map<Key, Tracked, KeyHash> detectors_;
  int64_t next_expiry_ms_ = INT64_MIN;  // processing time of the next expiry pass
  uint64_t expired_total_ = 0;
  Counter* expired_ = nullptr;
  int64_t shortest_window_ms_ = INT64_MAX;
  int64_t watermark_ms_ = INT64_MIN;
  int64_t timer_watermark_ms_ = INT64_MIN;  // watermark_ms_ at the last OnTimer
  Counter* points_ = nullptr;
  Counter* early_points_ = nullptr;
  Counter* dropped_series_ = nullptr;
  Gauge* detectors_gauge_ = nullptr;
};

}  // namespace inferscope
