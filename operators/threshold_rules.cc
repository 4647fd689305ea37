#include "operators/threshold_rules.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <set>

#include "alerting/silence.h"
#include "operators/alert_options.h"
#include "pipeline/names.h"

namespace inferscope {
namespace {

constexpr std::array<std::string_view, 11> kStatNames = {
    "mean", "p50", "p90", "p95", "p99", "min", "max", "last", "rate", "error_ratio", "count"};
constexpr size_t kMaxRules = 10'000;
std::string NameLengthError() { return "must be 1.." + std::to_string(kMaxNameBytes) + " bytes"; }

bool Crosses(ThresholdRule::Op op, double value, double threshold) {
  switch (op) {
    case ThresholdRule::Op::kGreater:
      return value > threshold;
    case ThresholdRule::Op::kGreaterEqual:
      return value >= threshold;
    case ThresholdRule::Op::kLess:
      return value < threshold;
    case ThresholdRule::Op::kLessEqual:
      return value <= threshold;
  }
  return false;
}

bool IsUpper(ThresholdRule::Op op) {
  return op == ThresholdRule::Op::kGreater || op == ThresholdRule::Op::kGreaterEqual;
}

std::string FormatValue(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.4g", v);
  return buf;
}

std::string FormatDuration(int64_t ms) {
  if (ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
  if (ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

Result<ThresholdRule> ParseRule(const ConfigNode& node) {
  INFERSCOPE_RETURN_IF_ERROR(node.CheckKnownFields(
      {"name", "metric", "stat", "window", "op", "levels", "for", "keep_firing_for", "hysteresis",
       "min_count", "instance", "model", "early"}));
  ThresholdRule r;
  Result<std::string> name = node.GetString("name");
  if (!name.ok()) return name.status();
  if (name->empty() || name->size() > kMaxNameBytes) return node.Error("name", NameLengthError());
  r.name = *name;
  Result<std::string> metric = node.GetString("metric");
  if (!metric.ok()) return metric.status();
  if (metric->empty() || metric->size() > kMaxNameBytes) {
    return node.Error("metric", NameLengthError());
  }
  r.metric = *metric;
  Result<std::string> stat = node.GetString("stat", "p95");
  if (!stat.ok()) return stat.status();
  std::optional<WindowStat> parsed_stat = ParseWindowStat(*stat);
  if (!parsed_stat) {
    return node.Error("stat",
                      "expected mean, p50, p90, p95, p99, min, max, last, rate, error_ratio or "
                      "count, got '" +
                          *stat + "'");
  }
  r.stat = *parsed_stat;
  AlertRuleOptions common;
  common.min_count = r.min_count;
  INFERSCOPE_RETURN_IF_ERROR(ParseAlertRuleOptions(node, &common));
  r.window_ms = common.window_ms;
  r.min_count = common.min_count;
  r.timing = common.timing;
  Result<std::string> op = node.GetString("op", ">");
  if (!op.ok()) return op.status();
  if (*op == ">") {
    r.op = ThresholdRule::Op::kGreater;
  } else if (*op == ">=") {
    r.op = ThresholdRule::Op::kGreaterEqual;
  } else if (*op == "<") {
    r.op = ThresholdRule::Op::kLess;
  } else if (*op == "<=") {
    r.op = ThresholdRule::Op::kLessEqual;
  } else {
    return node.Error("op", "expected '>', '>=', '<' or '<=', got '" + *op + "'");
  }
  if (!node.Has("levels"))
    return node.Error("levels", "required, e.g. {warning: 2000, critical: 5000}");
  Result<ConfigNode> levels = node.Child("levels");
  if (!levels.ok()) return levels.status();
  for (const auto& kv : levels->node()) {
    std::string key = kv.first.Scalar();
    std::optional<Severity> severity = ParseSeverity(key);
    if (!severity || *severity == Severity::kNone) {
      return levels->Error(key, "expected a severity (info, warning, critical, emergency)");
    }
    Result<double> threshold = levels->GetDouble(key);
    if (!threshold.ok()) return threshold.status();
    r.levels.emplace_back(*severity, *threshold);
  }
  std::sort(r.levels.begin(), r.levels.end());
  Result<double> hysteresis = node.GetDouble("hysteresis", r.hysteresis, 0, 1);
  if (!hysteresis.ok()) return hysteresis.status();
  r.hysteresis = *hysteresis;
  Result<std::string> instance = node.GetString("instance", "*");
  if (!instance.ok()) return instance.status();
  r.instance = *instance;
  Result<std::string> model = node.GetString("model", "*");
  if (!model.ok()) return model.status();
  r.model = *model;
  Result<bool> early = node.GetBool("early", r.early);
  if (!early.ok()) return early.status();
  r.early = *early;
  if (Status st = r.Validate(); !st.ok()) return node.Error("", st.message());
  return r;
}

}  // namespace

std::string_view WindowStatName(WindowStat stat) {
  auto i = static_cast<size_t>(stat);
  return i < kStatNames.size() ? kStatNames[i] : "unknown";
}

std::optional<WindowStat> ParseWindowStat(std::string_view name) {
  for (size_t i = 0; i < kStatNames.size(); ++i) {
    if (kStatNames[i] == name) return static_cast<WindowStat>(i);
  }
  return std::nullopt;
}

double StatValue(const SummaryStats& s, WindowStat stat, bool* has_data) {
  *has_data = s.count > 0;
  switch (stat) {
    case WindowStat::kMean:
      return s.mean;
    case WindowStat::kP50:
      return s.p50;
    case WindowStat::kP90:
      return s.p90;
    case WindowStat::kP95:
      return s.p95;
    case WindowStat::kP99:
      return s.p99;
    case WindowStat::kMin:
      return s.min;
    case WindowStat::kMax:
      return s.max;
    case WindowStat::kLast:
      return s.last;
    case WindowStat::kRate:
      *has_data = true;
      return s.rate_per_s;
    case WindowStat::kErrorRatio:
      *has_data = s.events > 0;
      return s.error_ratio;
    case WindowStat::kCount:
      *has_data = true;
      return static_cast<double>(s.count);
  }
  *has_data = false;
  return 0;
}

std::string_view ThresholdOpName(ThresholdRule::Op op) {
  switch (op) {
    case ThresholdRule::Op::kGreater:
      return ">";
    case ThresholdRule::Op::kGreaterEqual:
      return ">=";
    case ThresholdRule::Op::kLess:
      return "<";
    case ThresholdRule::Op::kLessEqual:
      return "<=";
  }
  return "?";
}

Status ThresholdRule::Validate() const {
  if (name.empty()) return Status::InvalidArgument("name is required");
  if (metric.empty()) return Status::InvalidArgument("metric is required");
  if (window_ms < 0) return Status::InvalidArgument("window must not be negative");
  if (levels.empty()) return Status::InvalidArgument("levels: at least one level is required");
  for (size_t i = 0; i < levels.size(); ++i) {
    if (!std::isfinite(levels[i].second)) return Status::InvalidArgument("levels: not finite");
    if (i == 0) continue;
    if (levels[i].first <= levels[i - 1].first) {
      return Status::InvalidArgument("levels: each severity at most once");
    }
    const bool ordered = IsUpper(op) ? levels[i].second >= levels[i - 1].second
                                     : levels[i].second <= levels[i - 1].second;
    if (!ordered) {
      return Status::InvalidArgument(
          std::string("levels: for op '") + std::string(ThresholdOpName(op)) +
          "' a more severe level needs a " + (IsUpper(op) ? "higher" : "lower") + " threshold");
    }
  }
  if (hysteresis < 0 || hysteresis > 1)
    return Status::InvalidArgument("hysteresis must be in 0..1");
  if (min_count < 1) return Status::InvalidArgument("min_count must be >= 1");
  return timing.Validate();
}

Status ThresholdRulesOperator::Options::Validate() const {
  if (rules.empty()) return Status::InvalidArgument("rules: at least one rule is required");
  if (rules.size() > kMaxRules) return Status::InvalidArgument("rules: at most 10000 rules");
  std::set<std::string_view> names;
  for (const ThresholdRule& r : rules) {
    INFERSCOPE_RETURN_IF_ERROR(r.Validate());
    if (!names.insert(r.name).second) {
      return Status::InvalidArgument("rules: duplicate rule name '" + r.name + "'");
    }
  }
  return lifecycle.Validate();
}

Result<ThresholdRulesOperator::Options> ThresholdRulesOperator::ParseOptions(
    const ConfigNode& node) {
  INFERSCOPE_RETURN_IF_ERROR(node.CheckKnownFields({"rules", "max_alert_states", "stale_after"}));
  Options o;
  if (!node.Has("rules") || !node.node()["rules"].IsSequence()) {
    return node.Error("rules", "expected a list of rules");
  }
  const YAML::Node rules = node.node()["rules"];
  std::set<std::string> names;
  for (size_t i = 0; i < rules.size(); ++i) {
    ConfigNode rule_node(node.file(), rules[i], node.path() + ".rules[" + std::to_string(i) + "]");
    if (!rules[i].IsMap()) return rule_node.Error("", "expected a mapping");
    Result<ThresholdRule> rule = ParseRule(rule_node);
    if (!rule.ok()) return rule.status();
    if (!names.insert(rule->name).second) {
      return rule_node.Error("name", "duplicate rule name '" + rule->name + "'");
    }
    o.rules.push_back(std::move(rule).value());
  }
  INFERSCOPE_RETURN_IF_ERROR(ParseAlertLifecycleOptions(node, &o.lifecycle));
  if (Status st = o.Validate(); !st.ok()) return node.Error("", st.message());
  return o;
}

Result<std::unique_ptr<ThresholdRulesOperator>> ThresholdRulesOperator::Create(
    const ConfigNode& options) {
  Result<Options> parsed = ParseOptions(options);
  if (!parsed.ok()) return parsed.status();
  return std::make_unique<ThresholdRulesOperator>(std::move(parsed).value());
}

ThresholdRulesOperator::ThresholdRulesOperator(Options options)
    : options_(std::move(options)), lifecycle_(options_.lifecycle) {
  for (const ThresholdRule& r : options_.rules) any_early_ = any_early_ || r.early;
}

Status ThresholdRulesOperator::Open(const StageContext& ctx) {
  INFERSCOPE_RETURN_IF_ERROR(options_.Validate());
  if (ctx.interner == nullptr) {
    return Status::InvalidArgument("operator '" + ctx.name +
                                   "': the stage context lacks an interner");
  }
  interner_ = ctx.interner;
  lifecycle_.Open(ctx);
  if (ctx.metrics != nullptr) {
    evaluations_ =
        ctx.metrics->GetCounter("inferscope_rule_evaluations_total",
                                "Window summaries judged by a rule", {{"stage", ctx.name}});
    early_evaluations_ = ctx.metrics->GetCounter(
        "inferscope_rule_early_evaluations_total",
        "Early summaries of open panes judged by an early rule", {{"stage", ctx.name}});
  }
  return Status::Ok();
}

Status ThresholdRulesOperator::Process(const EventBatch&, OutputBatch&) {
  return Status::InvalidArgument(
      "threshold_rules reads an operator's results, not events; "
      "give it a window_aggregate operator as input");
}

const std::vector<uint32_t>& ThresholdRulesOperator::RulesFor(StringId metric) {
  auto it = rules_by_metric_.find(metric);
  if (it != rules_by_metric_.end()) return it->second;
  std::vector<uint32_t> matching;
  const std::string_view name = interner_->Name(metric);
  for (uint32_t i = 0; i < options_.rules.size(); ++i) {
    if (options_.rules[i].metric == name) matching.push_back(i);
  }
  // Reclaimed ids are never reused, but their entries would pile up: keep the cache small.
  if (rules_by_metric_.size() >= 4096) rules_by_metric_.clear();
  return rules_by_metric_.emplace(metric, std::move(matching)).first->second;
}

void ThresholdRulesOperator::Evaluate(const ThresholdRule& rule, const WindowSummary& summary,
                                      bool early, std::vector<Alert>& out) {
  const int64_t window_ms = summary.end_ms - summary.start_ms;
  // An open pane's rate is over the part observed so far.
  const int64_t observed_ms =
      early ? std::clamp<int64_t>(summary.observed_until_ms - summary.start_ms, 1, window_ms)
            : window_ms;
  const SummaryStats stats = Summarize(summary.agg, observed_ms);
  bool has_data = false;
  const double value = StatValue(stats, rule.stat, &has_data);
  const uint64_t population = rule.stat == WindowStat::kErrorRatio ? stats.events : stats.count;
  if (!has_data || static_cast<int64_t>(population) < rule.min_count || !std::isfinite(value)) {
    return;
  }
  if (evaluations_) (early ? early_evaluations_ : evaluations_)->Inc();

  Severity severity = Severity::kNone;
  double crossed = 0;
  for (const auto& [level, threshold] : rule.levels) {
    if (Crosses(rule.op, value, threshold)) {
      severity = level;
      crossed = threshold;
    }
  }
  const double lowest = rule.levels.front().second;
  Condition condition = Condition::kActive;
  if (severity == Severity::kNone) {
    const double margin = std::fabs(lowest) * rule.hysteresis;
    const bool clear = IsUpper(rule.op) ? value <= lowest - margin : value >= lowest + margin;
    condition = clear ? Condition::kClear : Condition::kHold;
  }
  // Build the evidence (strings, message) only when it can change a state: an inactive verdict
  // changes nothing for an untracked alert, and early evidence is ignored unless active and the
  // alert is not firing yet. The common clear case allocates nothing.
  const std::string_view instance = interner_->Name(summary.series.instance);
  const std::string_view model = interner_->Name(summary.series.model);
  const std::string_view stat_name = WindowStatName(rule.stat);
  const uint64_t fingerprint = AlertFingerprint(rule.name, instance, model, rule.metric, stat_name);
  if (early) {
    if (condition != Condition::kActive || lifecycle_.Firing(fingerprint)) return;
  } else if (condition != Condition::kActive && !lifecycle_.Tracks(fingerprint)) {
    return;
  }

  Alert a;
  a.rule = rule.name;
  a.instance = std::string(instance);
  a.model = std::string(model);
  a.metric = rule.metric;
  a.stat = std::string(stat_name);
  a.fingerprint = fingerprint;
  a.type = AnomalyType::kThreshold;
  a.value = value;
  a.expected = lowest;
  a.lower = IsUpper(rule.op) ? std::nan("") : lowest;
  a.upper = IsUpper(rule.op) ? lowest : std::nan("");
  a.score = condition == Condition::kActive ? 1.0 : 0.0;
  a.window_start_ms = summary.start_ms;
  a.window_end_ms = summary.end_ms;
  a.event_time_ms = summary.max_event_time_ms;
  a.message = std::string(a.stat) + " " + a.metric + " = " + FormatValue(value) + " over " +
              FormatDuration(window_ms) + " on " + a.instance + "/" + a.model;
  if (early) a.message += " (open pane, " + FormatDuration(observed_ms) + " observed)";
  if (condition == Condition::kActive) {
    a.message += ", " + std::string(ThresholdOpName(rule.op)) + " " + FormatValue(crossed) + " (" +
                 std::string(SeverityName(severity)) + " level of rule " + rule.name + ")";
  } else {
    a.message += ", within " + std::string(IsUpper(rule.op) ? "<= " : ">= ") + FormatValue(lowest) +
                 " (rule " + rule.name + ")";
  }
  const size_t before = out.size();
  if (early) {
    lifecycle_.ObserveEarly(a, condition, severity, summary.observed_until_ms, summary.end_ms,
                            rule.timing, out);
  } else {
    lifecycle_.Observe(a, condition, severity, summary.end_ms, rule.timing, out);
  }
  // Each change shows the threshold of its own severity (a resolution: the one it fired with).
  for (size_t i = before; i < out.size(); ++i) {
    for (const auto& [level, threshold] : rule.levels) {
      if (level == out[i].severity) out[i].limit = threshold;
    }
  }
}

Status ThresholdRulesOperator::ProcessResults(const OutputBatch& in, OutputBatch& out) {
  if (interner_ == nullptr) return Status::Internal("threshold_rules: ProcessResults before Open");
  watermark_ms_ = std::max(watermark_ms_, in.watermark_ms);
  const std::span<const WindowSummary> summaries[] = {in.Get<kind::PaneSummary>(),
                                                      in.Get<kind::WindowSummary>()};
  for (std::span<const WindowSummary> part : summaries) {
    for (const WindowSummary& s : part) {
      shortest_window_ms_ = std::min(shortest_window_ms_, s.end_ms - s.start_ms);
    }
  }
  std::vector<Alert>& alerts = out.Mutable<kind::Alert>();
  // Closed windows first: a pane that closes in the same step as a later pane's early summary
  // judges its own early evidence before the later evidence arrives.
  for (std::span<const WindowSummary> part : summaries) EvaluateAll(part, false, alerts);
  if (any_early_) {
    // Early summaries do not count for the shortest window: they repeat the pane of the closed
    // summaries (and must not narrow what window-less rules judge among longer windows).
    EvaluateAll(in.Get<kind::EarlySummary>(), true, alerts);
  }
  lifecycle_.Sweep(watermark_ms_, alerts);
  return Status::Ok();
}

void ThresholdRulesOperator::EvaluateAll(std::span<const WindowSummary> summaries, bool early,
                                         std::vector<Alert>& alerts) {
  for (const WindowSummary& s : summaries) {
    const int64_t window_ms = s.end_ms - s.start_ms;
    for (uint32_t index : RulesFor(s.series.metric)) {
      const ThresholdRule& rule = options_.rules[index];
      if (early) {
        // An early summary is always the open pane: an early rule without `window` judges it, one
        // with `window` only when that is the pane.
        if (!rule.early || (rule.window_ms > 0 && window_ms != rule.window_ms)) continue;
      } else if (window_ms != (rule.window_ms > 0 ? rule.window_ms : shortest_window_ms_)) {
        continue;
      }
      if (rule.instance != "*" && !GlobMatch(rule.instance, interner_->Name(s.series.instance)))
        continue;
      if (rule.model != "*" && !GlobMatch(rule.model, interner_->Name(s.series.model))) continue;
      Evaluate(rule, s, early, alerts);
    }
  }
}

Status ThresholdRulesOperator::OnTimer(int64_t, OutputBatch& out) {
  timer_watermark_ms_ = watermark_ms_;
  if (watermark_ms_ != INT64_MIN) lifecycle_.Sweep(watermark_ms_, out.Mutable<kind::Alert>());
  out.watermark_ms = std::max<int64_t>(watermark_ms_, 0);
  return Status::Ok();
}

}  // namespace inferscope
