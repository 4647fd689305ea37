#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "alerting/alert.h"
#include "operators/alert_lifecycle.h"
#include "pipeline/config.h"
#include "pipeline/interner.h"
#include "pipeline/operator.h"
#include "pipeline/status.h"
#include "values/aggregate.h"

namespace inferscope {

// A statistic of a window summary that a rule or detector judges.
enum class WindowStat : uint8_t {
  kMean,
  kP50,
  kP90,
  kP95,
  kP99,
  kMin,
  kMax,
  kLast,
  kRate,        // values per second
  kErrorRatio,  // errors / events
  kCount,
};
// "mean", "p50", "p90", "p95", "p99", "min", "max", "last", "rate", "error_ratio", "count".
std::string_view WindowStatName(WindowStat stat);
std::optional<WindowStat> ParseWindowStat(std::string_view name);
// The statistic of `stats`; `has_data` is false when the window holds nothing to judge (no values
// for value statistics, no requests for error_ratio).
double StatValue(const SummaryStats& stats, WindowStat stat, bool* has_data);

// One static threshold rule (see docs/ALERTS.md for the topology syntax).
struct ThresholdRule {
  enum class Op : uint8_t { kGreater, kGreaterEqual, kLess, kLessEqual };

  std::string name;    // required; part of the fingerprint
  std::string metric;  // required: ttft_ms, e2e_ms, error ratio carriers, or a gauge name
  WindowStat stat = WindowStat::kP95;
  // Window length the rule judges: summaries with end - start == window_ms. Default 0: the
  // shortest window the upstream operator emits (its pane).
  int64_t window_ms = 0;
  Op op = Op::kGreater;
  // (severity, threshold), severities ascending and distinct, at least one. For > and >= the
  // thresholds must not decrease with severity; for < and <= not increase.
  std::vector<std::pair<Severity, double>> levels;
  AlertTiming timing;
  // Relative hysteresis band below (for >) or above (for <) the lowest level: a firing alert
  // resolves only once the value is beyond threshold ∓ |threshold| × hysteresis. Default 0.05;
  // 0..1.
  double hysteresis = 0.05;
  // Windows with fewer values (requests for error_ratio) are not judged. Default 1; >= 1.
  int64_t min_count = 1;
  // Glob matchers on the series ("*" and "?"); default everything.
  std::string instance = "*";
  std::string model = "*";
  // Judge the open pane as it fills (early summaries of a window_aggregate with `early_slice`),
  // not only the closed one; see ThresholdRulesOperator. Default false. Only for rules that judge
  // the pane (no `window`, or `window` equal to the pane).
  bool early = false;

  Status Validate() const;
};

std::string_view ThresholdOpName(ThresholdRule::Op op);

// ThresholdRulesOperator evaluates Prometheus-style static threshold rules on the window summaries
// of the operator it reads (topology `inputs: [<window_aggregate operator>]`), and turns the
// verdicts into alerts through AlertLifecycle: pending → firing after `for`, resolved after
// `keep_firing_for` below the hysteresis band, escalation when a higher level is crossed.
//
// Each summary is judged by every rule whose metric, window length and instance/model matchers
// fit it; the evaluation time is the window's end (event time), so `for` and `keep_firing_for`
// count event time, as the windows do.
//
// Early rules (`early: true`) also judge the early summaries of the open pane (window_aggregate
// `early_slice`) that have at least `min_count` values: the evaluation time is how far the pane
// has been observed (the slice boundary), and AlertLifecycle::ObserveEarly may start the alert or
// fire it (published with `early` set). The closed pane then confirms it (nothing published) or
// retracts it (state `retracted`). Other rules ignore early summaries.
//
// Lifecycle: Create → Open → ProcessResults / OnTimer (stale sweep) → Close.
// Concurrency: none; the operator thread makes every call.
// Limitations: see AlertLifecycle (bounded states, no checkpoint). Rules are fixed at start.
class ThresholdRulesOperator final : public Operator {
 public:
  static constexpr std::string_view kName = "threshold_rules";
  static constexpr std::string_view kDescription =
      "Static threshold rules on window statistics (levels per severity, for, keep_firing_for, "
      "hysteresis) raising firing/resolved alerts";

  struct Options {
    std::vector<ThresholdRule> rules;  // at least one; names unique
    AlertLifecycle::Options lifecycle;
    Status Validate() const;
  };

  // Reads `rules` (a list; see ThresholdRule), `max_alert_states`, `stale_after`.
  static Result<std::unique_ptr<ThresholdRulesOperator>> Create(const ConfigNode& options);
  static Result<Options> ParseOptions(const ConfigNode& options);

  explicit ThresholdRulesOperator(Options options);

  Status Open(const StageContext& ctx) override;
  Status Process(const EventBatch& batch, OutputBatch& out) override;
  // Reads pane summaries (window_aggregate) and window summaries (sliding_window); emits alerts.
  KindSet Reads() const override {
    return KindSet::Of<kind::PaneSummary, kind::WindowSummary, kind::EarlySummary>();
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

  const AlertLifecycle& lifecycle() const { return lifecycle_; }

 private:
  // The rules that judge one metric id (resolved lazily from names).
  const std::vector<uint32_t>& RulesFor(StringId metric);
  // `early`: `summary` is an early summary of the open pane.
  void Evaluate(const ThresholdRule& rule, const WindowSummary& summary, bool early,
                std::vector<Alert>& out);
  void EvaluateAll(std::span<const WindowSummary> summaries, bool early, std::vector<Alert>& out);

  Options options_;
  AlertLifecycle lifecycle_;
  const Interner* interner_ = nullptr;
  std::unordered_map<StringId, std::vector<uint32_t>> rules_by_metric_;
  int64_t shortest_window_ms_ = INT64_MAX;
  bool any_early_ = false;  // some rule has early: true
  int64_t watermark_ms_ = INT64_MIN;
  int64_t timer_watermark_ms_ = INT64_MIN;  // watermark_ms_ at the last OnTimer
  Counter* evaluations_ = nullptr;
  Counter* early_evaluations_ = nullptr;
};

}  // namespace inferscope
