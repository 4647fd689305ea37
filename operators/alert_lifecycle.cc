#include "operators/alert_lifecycle.h"

#include <algorithm>
#include <string>

#include <nlohmann/json.hpp>

#include "alerting/alert_json.h"
#include "alerting/silence.h"
#include "pipeline/json_text.h"

namespace inferscope {
namespace {

std::string Seconds(int64_t ms) {
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

}  // namespace

Status AlertTiming::Validate() const {
  if (for_ms < 0) return Status::InvalidArgument("for must not be negative");
  if (keep_firing_for_ms < 0)
    return Status::InvalidArgument("keep_firing_for must not be negative");
  return Status::Ok();
}

Status AlertLifecycle::Options::Validate() const {
  if (max_states < 1) return Status::InvalidArgument("max_alert_states must be >= 1");
  if (stale_after_ms < 0) return Status::InvalidArgument("stale_after must not be negative");
  return Status::Ok();
}

void AlertLifecycle::Open(const StageContext& ctx) {
  if (ctx.clock != nullptr) clock_ = ctx.clock;
  silences_ = ctx.services.Get<SilenceRegistry>();
  if (ctx.metrics == nullptr) return;
  MetricsRegistry& m = *ctx.metrics;
  const Labels stage = {{"stage", ctx.name}};
  fired_ = m.GetCounter("inferscope_alerts_fired_total", "Alerts that became firing", stage);
  escalated_ = m.GetCounter("inferscope_alerts_escalated_total",
                            "Firing alerts whose severity rose (published again)", stage);
  resolved_ =
      m.GetCounter("inferscope_alerts_resolved_total", "Firing alerts that resolved", stage);
  silenced_ = m.GetCounter("inferscope_alerts_silenced_total",
                           "Alert state changes not published because a silence matched", stage);
  dropped_counter_ = m.GetCounter("inferscope_alert_states_dropped_total",
                                  "Alerts not tracked because max_alert_states was reached", stage);
  tracked_gauge_ =
      m.GetGauge("inferscope_alert_states", "Alerts tracked (pending or firing)", stage);
  early_fired_ = m.GetCounter("inferscope_alerts_early_fired_total",
                              "Alerts that became firing on an open pane's evidence", stage);
  confirmed_ = m.GetCounter("inferscope_alerts_early_confirmed_total",
                            "Early alerts the closed pane confirmed", stage);
  retracted_ =
      m.GetCounter("inferscope_alerts_retracted_total",
                   "Early alerts the closed pane did not confirm (published retracted)", stage);
}

void AlertLifecycle::Emit(Tracked& t, AlertState state, bool early, std::vector<Alert>& out) {
  Alert a = t.last;
  a.state = state;
  a.early = early;
  a.severity = t.severity;
  a.active_since_ms = t.active_since_ms;
  a.detected_at_ms = clock_->NowMs();
  if (state == AlertState::kResolved) {
    a.message = "resolved: " + a.message;
  } else if (state == AlertState::kRetracted) {
    a.message = "retracted (not confirmed by the closed pane): " + a.message;
  }
  a.silenced = false;
  if (silences_ != nullptr && silences_->Match(a, a.detected_at_ms)) {
    a.silenced = true;
    if (silenced_) silenced_->Inc();
  }
  out.push_back(std::move(a));
}

AlertLifecycle::States::iterator AlertLifecycle::Start(const Alert& evidence, Severity severity,
                                                       int64_t time_ms) {
  changed_ = true;
  if (states_.size() >= static_cast<size_t>(options_.max_states)) {
    ++dropped_;
    if (dropped_counter_) dropped_counter_->Inc();
    return states_.end();
  }
  auto it = states_.emplace(evidence.fingerprint, Tracked{}).first;
  it->second.active_since_ms = time_ms;
  it->second.severity = severity;
  return it;
}

void AlertLifecycle::ObserveEarly(const Alert& evidence, Condition condition, Severity severity,
                                  int64_t time_ms, int64_t pane_end_ms, const AlertTiming& timing,
                                  std::vector<Alert>& out) {
  // Early evidence only starts or advances an alert; the closed pane clears, forgets, resolves.
  if (condition != Condition::kActive) return;
  auto it = states_.find(evidence.fingerprint);
  if (it == states_.end()) {
    it = Start(evidence, severity, time_ms);
    if (it == states_.end()) return;
  } else if (it->second.state != AlertState::kPending) {
    return;  // firing: escalation and resolution wait for the closed pane
  }
  Tracked& t = it->second;
  changed_ = true;
  if (t.unconfirmed_end_ms == INT64_MIN) t.unconfirmed_end_ms = pane_end_ms;
  t.last_eval_ms = std::max(t.last_eval_ms, time_ms);
  t.last = evidence;
  t.severity = std::max(t.severity, severity);
  if (time_ms - t.active_since_ms >= timing.for_ms) {
    t.state = AlertState::kFiring;
    t.early_fire_end_ms = pane_end_ms;
    Emit(t, AlertState::kFiring, /*early=*/true, out);
    ++early_fired_count_;
    if (fired_) fired_->Inc();
    if (early_fired_) early_fired_->Inc();
  }
  if (tracked_gauge_) tracked_gauge_->Set(static_cast<double>(states_.size()));
}

void AlertLifecycle::Observe(const Alert& evidence, Condition condition, Severity severity,
                             int64_t time_ms, const AlertTiming& timing, std::vector<Alert>& out) {
  auto it = states_.find(evidence.fingerprint);
  bool confirmed_severity_changed = false;
  if (it == states_.end()) {
    if (condition != Condition::kActive) return;
    it = Start(evidence, severity, time_ms);
    if (it == states_.end()) return;
  } else if (it->second.unconfirmed_end_ms != INT64_MIN) {
    // Early evidence awaits the closed pane that carried it.
    Tracked& t = it->second;
    if (time_ms < t.unconfirmed_end_ms) {
      // An earlier pane: it cannot judge that evidence; an active one shows the condition held
      // since its end.
      if (condition == Condition::kActive && t.state == AlertState::kFiring &&
          t.early_fire_end_ms != INT64_MIN) {
        // The condition holds in closed data: the early firing is confirmed (the later pane's
        // closed verdict then only escalates, holds or resolves it).
        changed_ = true;
        t.unconfirmed_end_ms = INT64_MIN;
        t.early_fire_end_ms = INT64_MIN;
        t.clear_since_ms = INT64_MIN;
        t.last_eval_ms = std::max(t.last_eval_ms, time_ms);
        ++confirmed_count_;
        if (confirmed_) confirmed_->Inc();
        return;
      }
      if (condition == Condition::kActive && t.state == AlertState::kPending) {
        if (time_ms < t.active_since_ms) {
          t.active_since_ms = time_ms;
          changed_ = true;
        }
        t.last_eval_ms = std::max(t.last_eval_ms, time_ms);
        t.severity = std::max(t.severity, severity);
        if (time_ms - t.active_since_ms >= timing.for_ms) {
          // Closed panes alone held the condition for `for`: fire as without early evidence. The
          // later pane's early evidence no longer matters (its closed pane resolves, not
          // retracts).
          changed_ = true;
          t.last = evidence;
          t.state = AlertState::kFiring;
          t.unconfirmed_end_ms = INT64_MIN;
          t.early_fire_end_ms = INT64_MIN;
          Emit(t, AlertState::kFiring, /*early=*/false, out);
          if (fired_) fired_->Inc();
        }
      }
      return;
    }
    changed_ = true;
    if (condition != Condition::kActive) {
      if (t.state == AlertState::kFiring) {
        t.last = evidence;
        Emit(t, AlertState::kRetracted, /*early=*/true, out);
        ++retracted_count_;
        if (retracted_) retracted_->Inc();
      }
      states_.erase(it);  // pending: the condition did not hold in the closed pane; forgotten
      if (tracked_gauge_) tracked_gauge_->Set(static_cast<double>(states_.size()));
      return;
    }
    if (t.state == AlertState::kPending || time_ms >= t.early_fire_end_ms) {
      if (t.state == AlertState::kFiring) {
        ++confirmed_count_;
        if (confirmed_) confirmed_->Inc();
        // The early severity came from part of the pane; the closed pane's level replaces it.
        // (A higher level is published below as an escalation.)
        if (severity < t.severity) {
          t.severity = severity;
          confirmed_severity_changed = true;
        }
      }
      t.unconfirmed_end_ms = INT64_MIN;
      t.early_fire_end_ms = INT64_MIN;
    } else {
      t.unconfirmed_end_ms = time_ms + 1;  // the next closed pane judges what is left
    }
  }
  Tracked& t = it->second;
  changed_ = true;
  t.last_eval_ms = std::max(t.last_eval_ms, time_ms);
  // A resolution reports what fired (a detector's clear verdict has no anomaly type).
  const AnomalyType fired_type = t.last.type;
  t.last = evidence;
  if (t.state == AlertState::kFiring && condition != Condition::kActive) t.last.type = fired_type;

  if (t.state == AlertState::kPending) {
    if (condition != Condition::kActive) {
      states_.erase(it);  // the condition did not hold for `for`: forget it
    } else {
      t.severity = std::max(t.severity, severity);
      if (time_ms - t.active_since_ms >= timing.for_ms) {
        t.state = AlertState::kFiring;
        Emit(t, AlertState::kFiring, /*early=*/false, out);
        if (fired_) fired_->Inc();
      }
    }
  } else {  // firing
    if (condition == Condition::kClear) {
      if (t.clear_since_ms == INT64_MIN) t.clear_since_ms = time_ms;
      if (time_ms - t.clear_since_ms >= timing.keep_firing_for_ms) {
        Emit(t, AlertState::kResolved, /*early=*/false, out);
        if (resolved_) resolved_->Inc();
        states_.erase(it);
      }
    } else {
      t.clear_since_ms = INT64_MIN;
      if (condition == Condition::kActive && severity > t.severity) {
        t.severity = severity;
        Emit(t, AlertState::kFiring, t.early_fire_end_ms != INT64_MIN, out);
        if (escalated_) escalated_->Inc();
      } else if (confirmed_severity_changed) {
        Emit(t, AlertState::kFiring, /*early=*/false, out);  // the confirmed level
      }
    }
  }
  if (tracked_gauge_) tracked_gauge_->Set(static_cast<double>(states_.size()));
}

void AlertLifecycle::ObserveUnjudged(uint64_t fingerprint, int64_t time_ms,
                                     std::vector<Alert>& out) {
  auto it = states_.find(fingerprint);
  if (it == states_.end()) return;
  Tracked& t = it->second;
  if (t.unconfirmed_end_ms == INT64_MIN || time_ms < t.unconfirmed_end_ms) return;
  changed_ = true;
  if (t.state == AlertState::kFiring) {
    if (time_ms < t.early_fire_end_ms) {
      t.unconfirmed_end_ms = time_ms + 1;  // a later closed pane judges the early firing
      return;
    }
    t.last.message = "the closed pane could not be judged (" + t.last.message + ")";
    Emit(t, AlertState::kRetracted, /*early=*/true, out);
    ++retracted_count_;
    if (retracted_) retracted_->Inc();
  }
  states_.erase(it);
  if (tracked_gauge_) tracked_gauge_->Set(static_cast<double>(states_.size()));
}

void AlertLifecycle::Sweep(int64_t watermark_ms, std::vector<Alert>& out) {
  if (options_.stale_after_ms <= 0 || states_.empty()) return;
  const int64_t limit = watermark_ms - options_.stale_after_ms;
  for (auto it = states_.begin(); it != states_.end();) {
    Tracked& t = it->second;
    if (t.last_eval_ms >= limit) {
      ++it;
      continue;
    }
    if (t.state == AlertState::kFiring) {
      t.last.message =
          "no data for " + Seconds(watermark_ms - t.last_eval_ms) + " (" + t.last.message + ")";
      if (t.early_fire_end_ms != INT64_MIN) {
        // Fired early and never confirmed: no closed pane backs it.
        Emit(t, AlertState::kRetracted, /*early=*/true, out);
        ++retracted_count_;
        if (retracted_) retracted_->Inc();
      } else {
        Emit(t, AlertState::kResolved, /*early=*/false, out);
        if (resolved_) resolved_->Inc();
      }
    }
    it = states_.erase(it);
    changed_ = true;
  }
  if (tracked_gauge_) tracked_gauge_->Set(static_cast<double>(states_.size()));
}

Status AlertLifecycle::Checkpoint(CheckpointWriter& writer) {
  if (!changed_) return Status::Ok();
  changed_ = false;
  nlohmann::json states = nlohmann::json::array();
  for (const auto& [fingerprint, t] : states_) {
    states.push_back({{"state", AlertStateName(t.state)},
                      {"severity", SeverityName(t.severity)},
                      {"active_since", t.active_since_ms},
                      {"clear_since", t.clear_since_ms},
                      {"last_eval", t.last_eval_ms},
                      {"unconfirmed_end", t.unconfirmed_end_ms},
                      {"early_fire_end", t.early_fire_end_ms},
                      {"alert", AlertToJson(t.last)}});
  }
  writer.Put("lifecycle", ToJsonText(states));
  return Status::Ok();
}

Status AlertLifecycle::Restore(const CheckpointReader& reader) {
  return reader.ForEach([this](std::string_view key, std::string_view value) -> Status {
    if (key != "lifecycle") return Status::Ok();
    nlohmann::json states = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
    if (!states.is_array())
      return Status::Corruption("alert lifecycle checkpoint: not a JSON array");
    for (const nlohmann::json& s : states) {
      if (!s.is_object() || !s.contains("alert") || !s["state"].is_string() ||
          !s["severity"].is_string() || !s["active_since"].is_number_integer() ||
          !s["clear_since"].is_number_integer() || !s["last_eval"].is_number_integer()) {
        return Status::Corruption("alert lifecycle checkpoint: malformed state");
      }
      Result<Alert> alert = AlertFromJson(s["alert"]);
      if (!alert.ok()) return alert.status().WithContext("alert lifecycle checkpoint");
      std::optional<AlertState> state = ParseAlertState(s["state"].get<std::string>());
      std::optional<Severity> severity = ParseSeverity(s["severity"].get<std::string>());
      if (!state || !severity)
        return Status::Corruption("alert lifecycle checkpoint: bad state or severity");
      Tracked t;
      t.state = *state;
      t.severity = *severity;
      t.active_since_ms = s["active_since"].get<int64_t>();
      t.clear_since_ms = s["clear_since"].get<int64_t>();
      t.last_eval_ms = s["last_eval"].get<int64_t>();
      // Absent in checkpoints written before early evaluation existed.
      if (s.contains("unconfirmed_end") || s.contains("early_fire_end")) {
        if (!s.value("unconfirmed_end", nlohmann::json(INT64_MIN)).is_number_integer() ||
            !s.value("early_fire_end", nlohmann::json(INT64_MIN)).is_number_integer()) {
          return Status::Corruption("alert lifecycle checkpoint: malformed early state");
        }
        t.unconfirmed_end_ms = s.value("unconfirmed_end", INT64_MIN);
        t.early_fire_end_ms = s.value("early_fire_end", INT64_MIN);
      }
      t.last = std::move(alert).value();
      states_[t.last.fingerprint] = std::move(t);
    }
    if (tracked_gauge_) tracked_gauge_->Set(static_cast<double>(states_.size()));
    return Status::Ok();
  });
}

}  // namespace inferscope
