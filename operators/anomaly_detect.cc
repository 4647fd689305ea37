#include "operators/anomaly_detect.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "operators/alert_options.h"
#include "pipeline/tiers.h"

namespace inferscope {
namespace {

std::string FormatValue(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.4g", v);
  return buf;
}

// A list of strings from `field` (a YAML sequence of scalars).
Result<std::vector<std::string>> GetStringList(const ConfigNode& node, std::string_view field) {
  const YAML::Node list = node.node()[std::string(field)];
  if (!list.IsSequence()) return node.Error(field, "expected a list, e.g. [ttft_ms, e2e_ms]");
  std::vector<std::string> out;
  for (const auto& item : list) {
    if (!item.IsScalar() || item.Scalar().empty())
      return node.Error(field, "expected non-empty strings");
    out.push_back(item.Scalar());
  }
  return out;
}

}  // namespace

size_t AnomalyDetectOperator::KeyHash::operator()(const Key& k) const {
  uint64_t h = (static_cast<uint64_t>(k.series.instance) << 32) ^ k.series.model;
  h ^= (static_cast<uint64_t>(k.series.metric) << 8 | static_cast<uint64_t>(k.stat)) *
       0x9E3779B97F4A7C15ULL;
  h ^= h >> 31;
  h *= 0xBF58476D1CE4E5B9ULL;
  h ^= h >> 29;
  return static_cast<size_t>(h);
}

Status AnomalyDetectOperator::Options::Validate() const {
  if (metrics.empty()) return Status::InvalidArgument("metrics: at least one metric is required");
  if (stats.empty()) return Status::InvalidArgument("stats: at least one statistic is required");
  if (window_ms < 0) return Status::InvalidArgument("window must not be negative");
  if (min_count < 1) return Status::InvalidArgument("min_count must be >= 1");
  if (min_severity == Severity::kNone)
    return Status::InvalidArgument("min_severity must not be none");
  if (!(clear_below > 0 && clear_below <= 1))
    return Status::InvalidArgument("clear_below must be in (0, 1]");
  if (max_series < 1) return Status::InvalidArgument("max_series must be >= 1");
  if (series_ttl_ms < 0) return Status::InvalidArgument("series_ttl must not be negative");
  INFERSCOPE_RETURN_IF_ERROR(timing.Validate());
  INFERSCOPE_RETURN_IF_ERROR(detector.Validate());
  return lifecycle.Validate();
}

Result<AnomalyDetectOperator::Options> AnomalyDetectOperator::ParseOptions(const ConfigNode& node) {
  INFERSCOPE_RETURN_IF_ERROR(
      node.CheckKnownFields({"metrics", "stats", "window", "min_count", "min_severity",
                             "clear_below", "for", "keep_firing_for", "max_series", "series_ttl",
                             "max_alert_states", "stale_after", "early", "detector"}));
  Options o;
  Result<std::vector<std::string>> metrics = GetStringList(node, "metrics");
  if (!metrics.ok()) return metrics.status();
  o.metrics = *metrics;
  if (node.Has("stats")) {
    Result<std::vector<std::string>> stats = GetStringList(node, "stats");
    if (!stats.ok()) return stats.status();
    o.stats.clear();
    for (const std::string& s : *stats) {
      std::optional<WindowStat> stat = ParseWindowStat(s);
      if (!stat) {
        return node.Error("stats", "unknown statistic '" + s +
                                       "' (mean, p50, p90, p95, p99, min, max, last, rate, "
                                       "error_ratio, count)");
      }
      o.stats.push_back(*stat);
    }
  }
  AlertRuleOptions common;
  common.min_count = o.min_count;
  INFERSCOPE_RETURN_IF_ERROR(ParseAlertRuleOptions(node, &common));
  o.window_ms = common.window_ms;
  o.min_count = common.min_count;
  o.timing = common.timing;
  Result<std::string> min_severity = node.GetString("min_severity", "warning");
  if (!min_severity.ok()) return min_severity.status();
  std::optional<Severity> severity = ParseSeverity(*min_severity);
  if (!severity || *severity == Severity::kNone) {
    return node.Error("min_severity", "expected info, warning, critical or emergency");
  }
  o.min_severity = *severity;
  Result<double> clear_below = node.GetDouble("clear_below", o.clear_below, 1e-9, 1);
  if (!clear_below.ok()) return clear_below.status();
  o.clear_below = *clear_below;
  Result<int64_t> max_series = node.GetInt("max_series", o.max_series, 1, 100'000'000);
  if (!max_series.ok()) return max_series.status();
  o.max_series = *max_series;
  Result<int64_t> ttl = node.GetDurationMs("series_ttl", o.series_ttl_ms, 0);
  if (!ttl.ok()) return ttl.status();
  o.series_ttl_ms = *ttl;
  INFERSCOPE_RETURN_IF_ERROR(ParseAlertLifecycleOptions(node, &o.lifecycle));
  Result<bool> early = node.GetBool("early", o.early);
  if (!early.ok()) return early.status();
  o.early = *early;
  Result<ConfigNode> detector = node.Child("detector");
  if (!detector.ok()) return detector.status();
  Result<DetectorOptions> detector_options = ParseDetectorOptions(*detector);
  if (!detector_options.ok()) return detector_options.status();
  o.detector = *detector_options;
  if (Status st = o.Validate(); !st.ok()) return node.Error("", st.message());
  return o;
}

Result<std::unique_ptr<AnomalyDetectOperator>> AnomalyDetectOperator::Create(
    const ConfigNode& options) {
  Result<Options> parsed = ParseOptions(options);
  if (!parsed.ok()) return parsed.status();
  return std::make_unique<AnomalyDetectOperator>(std::move(parsed).value());
}

AnomalyDetectOperator::AnomalyDetectOperator(Options options)
    : options_(std::move(options)),
      detector_options_(std::make_shared<const PreparedDetectorOptions>(options_.detector)),
      lifecycle_(options_.lifecycle) {}

Status AnomalyDetectOperator::Open(const StageContext& ctx) {
  INFERSCOPE_RETURN_IF_ERROR(options_.Validate());
  if (ctx.interner == nullptr) {
    return Status::InvalidArgument("operator '" + ctx.name +
                                   "': the stage context lacks an interner");
  }
  interner_ = ctx.interner;
  name_ = ctx.name.empty() ? std::string(kName) : ctx.name;
  lifecycle_.Open(ctx);
  if (ctx.metrics != nullptr) {
    const Labels stage = {{"stage", ctx.name}};
    points_ = ctx.metrics->GetCounter("inferscope_detector_points_total",
                                      "Window statistics fed to anomaly detectors", stage);
    early_points_ = ctx.metrics->GetCounter(
        "inferscope_detector_early_points_total",
        "Statistics of open panes scored (not learned) by anomaly detectors (early: true)", stage);
    dropped_series_ =
        ctx.metrics->GetCounter("inferscope_detector_series_dropped_total",
                                "Points not judged because max_series detectors exist", stage);
    detectors_gauge_ = ctx.metrics->GetGauge("inferscope_detector_series",
                                             "Anomaly detectors (series x statistic)", stage);
    expired_ =
        ctx.metrics->GetCounter("inferscope_detector_series_expired_total",
                                "Detectors forgotten after series_ttl without points", stage);
  }
  return Status::Ok();
}

Status AnomalyDetectOperator::Process(const EventBatch&, OutputBatch&) {
  return Status::InvalidArgument(
      "anomaly_detect reads an operator's results, not events; "
      "give it a window_aggregate operator as input");
}

bool AnomalyDetectOperator::WantsMetric(StringId metric) {
  auto it = wanted_metrics_.find(metric);
  if (it != wanted_metrics_.end()) return it->second;
  const std::string_view name = interner_->Name(metric);
  const bool wanted =
      std::find(options_.metrics.begin(), options_.metrics.end(), name) != options_.metrics.end();
  // Reclaimed ids are never reused, but their entries would pile up: keep the cache small.
  if (wanted_metrics_.size() >= 4096) wanted_metrics_.clear();
  wanted_metrics_.emplace(metric, wanted);
  return wanted;
}

void AnomalyDetectOperator::Observe(const WindowSummary& summary, const SummaryStats& stats,
                                    WindowStat stat, std::vector<Alert>& out) {
  bool has_data = false;
  const double value = StatValue(stats, stat, &has_data);
  if (!has_data || !std::isfinite(value)) return;
  Key key{summary.series, stat};
  auto it = detectors_.find(key);
  if (it == detectors_.end()) {
    if (detectors_.size() >= static_cast<size_t>(options_.max_series)) {
      if (dropped_series_) dropped_series_->Inc();
      Unjudged(summary, stat, out);
      return;
    }
    it =
        detectors_.emplace(key, Tracked{std::make_unique<SeriesDetector>(detector_options_)}).first;
    if (detectors_gauge_) detectors_gauge_->Set(static_cast<double>(detectors_.size()));
  }
  if (points_) points_->Inc();
  it->second.last_end_ms = std::max(it->second.last_end_ms, summary.end_ms);
  const Verdict v = it->second.detector->Observe(summary.end_ms, value);
  if (v.warming_up) {
    // The closed pane cannot judge (a new or reset model): early evidence it carried is withdrawn.
    Unjudged(summary, stat, out);
    return;
  }

  Condition condition = Condition::kHold;
  if (v.severity >= options_.min_severity) {
    condition = Condition::kActive;
  } else if (v.score < options_.clear_below) {
    condition = Condition::kClear;
  }
  const Alert a = Evidence(summary, stat, value, v, condition);
  lifecycle_.Observe(a, condition, v.severity, summary.end_ms, options_.timing, out);
}

void AnomalyDetectOperator::Unjudged(const WindowSummary& summary, WindowStat stat,
                                     std::vector<Alert>& out) {
  if (lifecycle_.tracked() == 0) return;
  const uint64_t fingerprint = AlertFingerprint(
      name_, interner_->Name(summary.series.instance), interner_->Name(summary.series.model),
      interner_->Name(summary.series.metric), WindowStatName(stat));
  lifecycle_.ObserveUnjudged(fingerprint, summary.end_ms, out);
}

Alert AnomalyDetectOperator::Evidence(const WindowSummary& summary, WindowStat stat, double value,
                                      const Verdict& v, Condition condition) const {
  Alert a;
  a.rule = name_;
  a.instance = std::string(interner_->Name(summary.series.instance));
  a.model = std::string(interner_->Name(summary.series.model));
  a.metric = std::string(interner_->Name(summary.series.metric));
  a.stat = std::string(WindowStatName(stat));
  a.fingerprint = AlertFingerprint(a.rule, a.instance, a.model, a.metric, a.stat);
  a.type = condition == Condition::kActive ? v.type : AnomalyType::kNone;
  a.value = value;
  a.expected = v.expected;
  a.lower = v.lower;
  a.upper = v.upper;
  a.score = v.score;
  a.window_start_ms = summary.start_ms;
  a.window_end_ms = summary.end_ms;
  a.event_time_ms = summary.max_event_time_ms;
  a.message = a.stat + " " + a.metric + " = " + FormatValue(value) + " on " + a.instance + "/" +
              a.model + ", expected " + FormatValue(v.expected) + " [" + FormatValue(v.lower) +
              ", " + FormatValue(v.upper) + "], score " + FormatValue(v.score);
  if (condition == Condition::kActive)
    a.message += " (" + std::string(AnomalyTypeName(v.type)) + ")";
  return a;
}

void AnomalyDetectOperator::ObserveEarly(const WindowSummary& summary, const SummaryStats& stats,
                                         WindowStat stat, double noise, std::vector<Alert>& out) {
  bool has_data = false;
  const double value = StatValue(stats, stat, &has_data);
  if (!has_data || !std::isfinite(value)) return;
  // No detector yet: it is warming up (its first point is a closed pane), nothing to judge by.
  auto it = detectors_.find(Key{summary.series, stat});
  if (it == detectors_.end()) return;
  // The closed pane's point will be the detector's next one only once the previous pane was
  // learned: with out_of_orderness longer than early_slice the first early summaries of a pane
  // come before the previous pane closes, and a seasonal detector would judge them at the previous
  // pane's phase. (A pane after a gap in the series is not judged early either.)
  if (it->second.last_end_ms != summary.start_ms) return;
  // The closed pane's point will be at the pane's end: score as that point, without learning.
  const Verdict v = it->second.detector->Score(summary.end_ms, value, noise);
  if (v.warming_up) return;
  if (early_points_) early_points_->Inc();
  if (v.severity < options_.min_severity) return;
  // Early evidence changes nothing for a firing alert: skip building it (no allocation).
  const std::string_view instance = interner_->Name(summary.series.instance);
  const std::string_view model = interner_->Name(summary.series.model);
  const std::string_view metric = interner_->Name(summary.series.metric);
  if (lifecycle_.Firing(AlertFingerprint(name_, instance, model, metric, WindowStatName(stat))))
    return;
  Alert a = Evidence(summary, stat, value, v, Condition::kActive);
  const int64_t observed_ms = summary.observed_until_ms - summary.start_ms;
  a.message += " (open pane, " + FormatDurationMs(observed_ms) + " observed)";
  lifecycle_.ObserveEarly(a, Condition::kActive, v.severity, summary.observed_until_ms,
                          summary.end_ms, options_.timing, out);
}

Status AnomalyDetectOperator::ProcessResults(const OutputBatch& in, OutputBatch& out) {
  if (interner_ == nullptr) return Status::Internal("anomaly_detect: ProcessResults before Open");
  watermark_ms_ = std::max(watermark_ms_, in.watermark_ms);
  const std::span<const WindowSummary> summaries[] = {in.Get<kind::PaneSummary>(),
                                                      in.Get<kind::WindowSummary>()};
  for (std::span<const WindowSummary> part : summaries) {
    for (const WindowSummary& s : part) {
      shortest_window_ms_ = std::min(shortest_window_ms_, s.end_ms - s.start_ms);
    }
  }
  const int64_t window = options_.window_ms > 0 ? options_.window_ms : shortest_window_ms_;
  std::vector<Alert>& alerts = out.Mutable<kind::Alert>();
  for (std::span<const WindowSummary> part : summaries) {
    for (const WindowSummary& s : part) {
      if (s.end_ms - s.start_ms != window || !WantsMetric(s.series.metric)) continue;
      if (static_cast<int64_t>(s.agg.count) < options_.min_count) continue;
      const SummaryStats stats = Summarize(s.agg, s.end_ms - s.start_ms);
      for (WindowStat stat : options_.stats) Observe(s, stats, stat, alerts);
    }
  }
  // Early summaries after the closed panes: a pane that closes in this step judges its own early
  // evidence before a later pane's arrives. They do not count for the shortest window (they repeat
  // the pane of the closed summaries).
  if (options_.early) {
    for (const WindowSummary& s : in.Get<kind::EarlySummary>()) {
      const int64_t pane_ms = s.end_ms - s.start_ms;
      if (pane_ms != window || !WantsMetric(s.series.metric)) continue;
      if (static_cast<int64_t>(s.agg.count) < options_.min_count) continue;
      // The part of the pane observed so far; the statistic of a share f of the pane is noisier
      // than a closed pane's by about 1 / sqrt(f) (a sample f times the size).
      const int64_t observed_ms = std::clamp<int64_t>(s.observed_until_ms - s.start_ms, 1, pane_ms);
      const double noise =
          std::sqrt(static_cast<double>(pane_ms) / static_cast<double>(observed_ms));
      const SummaryStats stats = Summarize(s.agg, observed_ms);
      // Not count (it grows with the pane) nor rate: the early summary holds events up to the
      // newest one seen, which with publishers skewed is beyond observed_until, so count /
      // observed time is biased upward (and newest - start biases it downward).
      for (WindowStat stat : options_.stats) {
        if (stat != WindowStat::kCount && stat != WindowStat::kRate)
          ObserveEarly(s, stats, stat, noise, alerts);
      }
    }
  }
  lifecycle_.Sweep(watermark_ms_, alerts);
  return Status::Ok();
}

Status AnomalyDetectOperator::OnTimer(int64_t now_ms, OutputBatch& out) {
  timer_watermark_ms_ = watermark_ms_;
  if (watermark_ms_ != INT64_MIN) lifecycle_.Sweep(watermark_ms_, out.Mutable<kind::Alert>());
  if (options_.series_ttl_ms > 0 && watermark_ms_ > 0 && now_ms >= next_expiry_ms_) {
    next_expiry_ms_ = now_ms + 1000;
    const int64_t limit = watermark_ms_ - options_.series_ttl_ms;
    const size_t expired = std::erase_if(
        detectors_, [limit](const auto& entry) { return entry.second.last_end_ms < limit; });
    if (expired > 0) {
      expired_total_ += expired;
      if (expired_ != nullptr) expired_->Inc(expired);
      if (detectors_gauge_ != nullptr)
        detectors_gauge_->Set(static_cast<double>(detectors_.size()));
    }
  }
  out.watermark_ms = std::max<int64_t>(watermark_ms_, 0);
  return Status::Ok();
}

}  // namespace inferscope
