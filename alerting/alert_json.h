#pragma once

#include <nlohmann/json.hpp>

#include "alerting/alert.h"
#include "pipeline/status.h"

namespace inferscope {

// The alert as a JSON object, the shape used by the API, the alert stream's JSON format and the
// store: {"fingerprint": "<16 hex>", "state", "type", "severity", "rule", "instance", "model",
// "metric", "stat", "value", "expected", "lower", "upper", "score", "window": {"start", "end"},
// "event_time", "detected_at", "active_since", "message", "silenced"}. Non-finite numbers are null.
nlohmann::json AlertToJson(const Alert& alert);
// The inverse; Corruption when a field is missing or has the wrong type.
Result<Alert> AlertFromJson(const nlohmann::json& json);

}  // namespace inferscope
