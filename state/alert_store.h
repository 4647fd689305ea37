#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "alerting/alert.h"
#include "alerting/alert_json.h"
#include "pipeline/status.h"
#include "state/record_table.h"

namespace inferscope {

class StateStore;

// Alert records in the StateStore, shared by the sink that writes them and the query node that
// reads them. Alerts are rare next to panes, so values are JSON (AlertToJson), readable with
// `ldb` and easy to evolve.
//
// clang-format off
//   alerts         key: be64(fingerprint)                              value: JSON of the latest state change
//   alert_history  key: be64(detected_at ms) be64(fingerprint) u8(state) u8(severity)  value: JSON of that change
// clang-format on
//
// The history key orders changes by detection (wall-clock) time, so "what changed since T" is one
// range scan; two changes of one alert in the same millisecond differ by state or severity.
// Limitations: nothing expires yet (retention is issue 3's); a fingerprint's history is a full
// scan of alert_history filtered by fingerprint.

extern const RecordTable kAlertsTable;        // "alerts"
extern const RecordTable kAlertHistoryTable;  // "alert_history"

std::string AlertKey(uint64_t fingerprint);
std::string AlertHistoryKey(const Alert& alert);

// Writes each alert as the latest state of its fingerprint and appends it to the history, all in
// one atomic WriteBatch.
Status StoreAlerts(StateStore& store, std::span<const Alert> alerts);
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
