#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "alerting/alert.h"
#include "alerting/alert_json.h"
#include "pipeline/status.h"
#include "state/record_table.h"
#include "state/state_store.h"

namespace inferscope {

class StateStore;

// Alert records in the StateStore, shared by the sink that writes them and the query node that
// reads them. Alerts are rare next to panes, so values are JSON (AlertToJson), readable with
// `ldb` and easy to evolve.
//
// clang-format off
//   alerts               key: be64(fingerprint)                                           value: JSON of the latest state change
//   alert_history        key: be64(detected_at ms) be64(fingerprint) be64(window_start ms)
//                             u8(state) u8(severity)                                      value: JSON of that change
//   alert_history_by_fp  key: be64(fingerprint) be64(detected_at ms) be64(window_start ms)
//                             u8(state) u8(severity)                                      value: the same JSON
// clang-format on
//
// The history key orders changes by detection (wall-clock) time, so "what changed since T" is one
// range scan. A backlog closes many panes in one step, so one alert can change several times in a
// millisecond: the evidence window's start (event time) keeps those changes apart and in order
// (a change on the same window differs by state or severity). Stores written before 2026-12-07
// have history keys without the window start (18 bytes); they are read and expire alike. The
// by-fingerprint copy makes one alert's history a prefix scan.
//
// Retention: alert_history is time-keyed (state/record_table.h), kept 30 days by default
// (`state.record_retention.alert_history`). When a change expires, its by-fingerprint copy goes
// with it, and a resolved alert whose latest change is older than the retention is forgotten
// (its `alerts` record is deleted): the tables hold what changed within the retention plus the
// alerts still pending or firing.

extern const RecordTable kAlertsTable;                     // "alerts"
extern const RecordTable kAlertHistoryTable;               // "alert_history"
extern const RecordTable kAlertHistoryByFingerprintTable;  // "alert_history_by_fp"
inline constexpr int64_t kDefaultAlertHistoryRetentionMs = 30LL * 24 * 3600 * 1000;

std::string AlertKey(uint64_t fingerprint);
std::string AlertHistoryKey(const Alert& alert);
// The key of `alert` in alert_history_by_fp; its first 8 bytes (AlertKey) select the fingerprint.
std::string AlertHistoryByFingerprintKey(const Alert& alert);

// Writes each alert as the latest state of its fingerprint and appends it to the history (both
// orders), all in one atomic WriteBatch.
Status StoreAlerts(StateStore& store, std::span<const Alert> alerts);
// The record writes StoreAlerts makes, appended to `*writes` (for a caller that adds them to a
// larger batch: the query node materialising the results stream).
void AppendAlertWrites(std::span<const Alert> alerts, std::vector<RecordWrite>* writes);
// The writes of one alert: its two history rows, and its current row (kAlertsTable) only when
// `current` (the results feed keeps the current row at the latest transition in event time).
void AppendAlertWrite(const Alert& alert, bool current, std::vector<RecordWrite>* writes);
// The latest state of one fingerprint, or nullopt.
Result<std::optional<Alert>> LoadAlert(const StateStore& store, uint64_t fingerprint);
// Calls `fn` with the latest state of every stored alert (fingerprint order) until it returns
// false. Undecodable records are skipped and counted in *skipped (when not null).
Status ScanAlerts(const StateStore& store, const std::function<bool(const Alert&)>& fn,
                  uint64_t* skipped = nullptr);
// Calls `fn` with every state change detected at or after `from_ms`, oldest first, until it
// returns false.
Status ScanAlertHistory(const StateStore& store, int64_t from_ms,
                        const std::function<bool(const Alert&)>& fn);

}  // namespace inferscope
