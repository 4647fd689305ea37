#pragma once

#include <nlohmann/json.hpp>

#include "alerting/alert.h"
#include "pipeline/status.h"

namespace inferscope {

// The version of the alert payload (`v`), on the stream and in the API.
inline constexpr int kAlertPayloadVersion = 1;

// The alert as a JSON object, the shape used by the API, the alert stream's JSON format and the
// store: the stream payload's fields (docs/PROTOCOL.md, "Alert stream": "v", "fingerprint":
// "<16 hex>", "state", "type", "severity", "rule", "instance", "model", "metric", "series",
// "stat", "value", "expected", "lower", "upper", "limit", "score", "window_start", "window_end",
// "event_time", "detected_at", "active_since", "message", "silenced") plus the API's "window":
// {"start", "end"} (the stream leaves it out). Non-finite numbers are null.
nlohmann::json AlertToJson(const Alert& alert);
// The inverse; Corruption when a field is missing or has the wrong type.
Result<Alert> AlertFromJson(const nlohmann::json& json);

}  // namespace inferscope
