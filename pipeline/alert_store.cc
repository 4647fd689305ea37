#include "pipeline/alert_store.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <vector>

#include "pipeline/json_text.h"
#include "pipeline/state_store.h"

namespace inferscope {
namespace {

using nlohmann::json;

json Number(double v) { return std::isfinite(v) ? json(v) : json(); }

double NumberOr(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return std::nan("");
  return it->get<double>();
}

}  // namespace

json AlertToJson(const Alert& a) {
  return {{"fingerprint", FingerprintHex(a.fingerprint)},
          {"state", AlertStateName(a.state)},
          {"type", AnomalyTypeName(a.type)},
          {"severity", SeverityName(a.severity)},
          {"rule", a.rule},
          {"instance", a.instance},
          {"model", a.model},
          {"metric", a.metric},
          {"stat", a.stat},
          {"value", Number(a.value)},
          {"expected", Number(a.expected)},
          {"lower", Number(a.lower)},
          {"upper", Number(a.upper)},
          {"score", Number(a.score)},
          {"window", {{"start", a.window_start_ms}, {"end", a.window_end_ms}}},
          {"event_time", a.event_time_ms},
          {"detected_at", a.detected_at_ms},
          {"active_since", a.active_since_ms},
          {"message", a.message},
          {"silenced", a.silenced}};
}

Result<Alert> AlertFromJson(const json& j) {
  // nlohmann's typed getters throw on a type mismatch; this is the boundary where that becomes a
  // Status.
  try {
    if (!j.is_object()) return Status::Corruption("alert record is not a JSON object");
    Alert a;
    std::optional<uint64_t> fp = ParseFingerprintHex(j.at("fingerprint").get<std::string>());
    std::optional<AlertState> state = ParseAlertState(j.at("state").get<std::string>());
    std::optional<AnomalyType> type = ParseAnomalyType(j.at("type").get<std::string>());
    std::optional<Severity> severity = ParseSeverity(j.at("severity").get<std::string>());
    if (!fp || !state || !type || !severity) {
      return Status::Corruption("alert record: bad fingerprint, state, type or severity");
    }
    a.fingerprint = *fp;
    a.state = *state;
    a.type = *type;
    a.severity = *severity;
    a.rule = j.at("rule").get<std::string>();
    a.instance = j.at("instance").get<std::string>();
    a.model = j.at("model").get<std::string>();
    a.metric = j.at("metric").get<std::string>();
    a.stat = j.at("stat").get<std::string>();
    a.value = NumberOr(j, "value");
    a.expected = NumberOr(j, "expected");
    a.lower = NumberOr(j, "lower");
    a.upper = NumberOr(j, "upper");
    a.score = NumberOr(j, "score");
    a.window_start_ms = j.at("window").at("start").get<int64_t>();
    a.window_end_ms = j.at("window").at("end").get<int64_t>();
    a.event_time_ms = j.at("event_time").get<int64_t>();
    a.detected_at_ms = j.at("detected_at").get<int64_t>();
    a.active_since_ms = j.at("active_since").get<int64_t>();
    a.message = j.at("message").get<std::string>();
    a.silenced = j.value("silenced", false);
    return a;
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("alert record: ") + e.what());
  }
}

std::string AlertKey(uint64_t fingerprint) {
  std::string key;
  AppendBigEndian64(&key, fingerprint);
  return key;
}

std::string AlertHistoryKey(const Alert& alert) {
  std::string key;
  // Times before the epoch do not occur (detection is wall-clock); clamp so the order holds.
  AppendBigEndian64(&key, static_cast<uint64_t>(std::max<int64_t>(alert.detected_at_ms, 0)));
  AppendBigEndian64(&key, alert.fingerprint);
  key.push_back(static_cast<char>(alert.state));
  key.push_back(static_cast<char>(alert.severity));
  return key;
}

Status StoreAlerts(StateStore& store, std::span<const Alert> alerts) {
  if (alerts.empty()) return Status::Ok();
  std::vector<RecordWrite> writes;
  writes.reserve(alerts.size() * 2);
  for (const Alert& a : alerts) {
    std::string value = ToJsonText(AlertToJson(a));
    writes.push_back({StateTable::kAlerts, AlertKey(a.fingerprint), value});
    writes.push_back({StateTable::kAlertHistory, AlertHistoryKey(a), std::move(value)});
  }
  return store.WriteRecords(writes);
}

Result<std::optional<Alert>> LoadAlert(const StateStore& store, uint64_t fingerprint) {
  Result<std::optional<std::string>> value =
      store.GetRecord(StateTable::kAlerts, AlertKey(fingerprint));
  if (!value.ok()) return value.status();
  if (!value->has_value()) return std::optional<Alert>();
  Result<Alert> alert = AlertFromJson(json::parse(**value, nullptr, false));
  if (!alert.ok()) return alert.status();
  return std::optional<Alert>(std::move(alert).value());
}

Status ScanAlerts(const StateStore& store, const std::function<bool(const Alert&)>& fn,
                  uint64_t* skipped) {
  return store.ScanRecords(StateTable::kAlerts, "", "",
                           [&](std::string_view, std::string_view value) {
                             Result<Alert> a = AlertFromJson(json::parse(value, nullptr, false));
                             if (!a.ok()) {
                               if (skipped != nullptr) ++*skipped;
                               return true;
                             }
                             return fn(*a);
                           });
}

Status ScanAlertHistory(const StateStore& store, int64_t from_ms,
                        const std::function<bool(const Alert&)>& fn) {
  std::string from;
  AppendBigEndian64(&from, static_cast<uint64_t>(std::max<int64_t>(from_ms, 0)));
  return store.ScanRecords(StateTable::kAlertHistory, from, "",
                           [&](std::string_view, std::string_view value) {
                             Result<Alert> a = AlertFromJson(json::parse(value, nullptr, false));
                             return a.ok() ? fn(*a) : true;
                           });
}

}  // namespace inferscope
