#include "state/alert_store.h"

#include <algorithm>
#include <vector>

#include "pipeline/json_text.h"
#include "state/state_store.h"

namespace inferscope {

namespace {
Status ExpireAlertChange(const StateStore& store, std::string_view key, std::string_view value,
                         int64_t cutoff_ms, std::vector<RecordWrite>* writes);
}  // namespace

const RecordTable kAlertsTable("alerts");
const RecordTable kAlertHistoryTable("alert_history", RecordExpiry{kDefaultAlertHistoryRetentionMs,
                                                                   &ExpireAlertChange});
const RecordTable kAlertHistoryByFingerprintTable("alert_history_by_fp");

using nlohmann::json;

namespace {

// alert_history key: be64(detected_at ms) be64(fingerprint) be64(window start ms) u8(state)
// u8(severity); stores of versions before 2026-12-07 have no window start (18 bytes).
constexpr size_t kHistoryKeyBytes = 26;
constexpr size_t kHistoryKeyBytesWithoutWindow = 18;

void AppendTimeMs(std::string* key, int64_t ms) {
  // Times before the epoch do not occur (detection is wall-clock, event times are checked at
  // ingest); clamp so the order holds.
  AppendBigEndian64(key, static_cast<uint64_t>(std::max<int64_t>(ms, 0)));
}

// The expiry hook of alert_history (RecordExpiry::Hook): the change's by-fingerprint copy goes,
// and so does a resolved alert whose latest change is older than the cutoff.
Status ExpireAlertChange(const StateStore& store, std::string_view key, std::string_view value,
                         int64_t cutoff_ms, std::vector<RecordWrite>* writes) {
  (void)value;
  if (key.size() != kHistoryKeyBytes && key.size() != kHistoryKeyBytesWithoutWindow) {
    return Status::Ok();  // not written by StoreAlerts
  }
  const uint64_t fingerprint = ReadBigEndian64(key.substr(8));
  // The by-fingerprint key holds the same fields, the fingerprint first.
  std::string by_fp(key.substr(8, 8));
  by_fp.append(key.substr(0, 8));
  by_fp.append(key.substr(16));
  writes->push_back({&kAlertHistoryByFingerprintTable, std::move(by_fp), std::nullopt});
  if (!IsTerminal(static_cast<AlertState>(key[key.size() - 2]))) return Status::Ok();
  Result<std::optional<Alert>> latest = LoadAlert(store, fingerprint);
  if (!latest.ok()) return latest.status();
  if (latest->has_value() && IsTerminal((*latest)->state) &&
      (*latest)->detected_at_ms < cutoff_ms) {
    writes->push_back({&kAlertsTable, AlertKey(fingerprint), std::nullopt});
  }
  return Status::Ok();
}

}  // namespace

std::string AlertKey(uint64_t fingerprint) {
  std::string key;
  AppendBigEndian64(&key, fingerprint);
  return key;
}

std::string AlertHistoryKey(const Alert& alert) {
  std::string key;
  AppendTimeMs(&key, alert.detected_at_ms);
  AppendBigEndian64(&key, alert.fingerprint);
  AppendTimeMs(&key, alert.window_start_ms);
  key.push_back(static_cast<char>(alert.state));
  key.push_back(static_cast<char>(alert.severity));
  return key;
}

std::string AlertHistoryByFingerprintKey(const Alert& alert) {
  std::string key = AlertKey(alert.fingerprint);
  AppendTimeMs(&key, alert.detected_at_ms);
  AppendTimeMs(&key, alert.window_start_ms);
  key.push_back(static_cast<char>(alert.state));
  key.push_back(static_cast<char>(alert.severity));
  return key;
}

void AppendAlertWrite(const Alert& alert, bool current, std::vector<RecordWrite>* writes) {
  std::string value = ToJsonText(AlertToJson(alert));
  if (current) writes->push_back({&kAlertsTable, AlertKey(alert.fingerprint), value});
  writes->push_back({&kAlertHistoryByFingerprintTable, AlertHistoryByFingerprintKey(alert), value});
  writes->push_back({&kAlertHistoryTable, AlertHistoryKey(alert), std::move(value)});
}

void AppendAlertWrites(std::span<const Alert> alerts, std::vector<RecordWrite>* writes) {
  writes->reserve(writes->size() + alerts.size() * 3);
  for (const Alert& a : alerts) AppendAlertWrite(a, /*current=*/true, writes);
}

Status StoreAlerts(StateStore& store, std::span<const Alert> alerts) {
  if (alerts.empty()) return Status::Ok();
  std::vector<RecordWrite> writes;
  AppendAlertWrites(alerts, &writes);
  return store.WriteRecords(writes);
}

Result<std::optional<Alert>> LoadAlert(const StateStore& store, uint64_t fingerprint) {
  Result<std::optional<std::string>> value = store.GetRecord(kAlertsTable, AlertKey(fingerprint));
  if (!value.ok()) return value.status();
  if (!value->has_value()) return std::optional<Alert>();
  Result<Alert> alert = AlertFromJson(json::parse(**value, nullptr, false));
  if (!alert.ok()) return alert.status();
  return std::optional<Alert>(std::move(alert).value());
}

Status ScanAlerts(const StateStore& store, const std::function<bool(const Alert&)>& fn,
                  uint64_t* skipped) {
  return store.ScanRecords(kAlertsTable, "", "", [&](std::string_view, std::string_view value) {
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
  return store.ScanRecords(kAlertHistoryTable, from, "",
                           [&](std::string_view, std::string_view value) {
                             Result<Alert> a = AlertFromJson(json::parse(value, nullptr, false));
                             return a.ok() ? fn(*a) : true;
                           });
}

}  // namespace inferscope
