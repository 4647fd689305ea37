#pragma once

#include <nlohmann/json.hpp>

#include "bottlenecks/bottleneck.h"
#include "pipeline/status.h"

namespace inferscope {

// The bottleneck as a JSON object, the shape of the API, the stream's JSON format, the store and
// the classifier's checkpoint: {"id": "<16 hex>", "instance", "model", "engine", "type",
// "severity", "state", "change", "primary", "root", "chain": [types], "metric", "stat", "value",
// "threshold", "basis", "peer_median", "window": {"start", "end"}, "active_since", "detected_at",
// "description"}. Non-finite numbers are null.
nlohmann::json BottleneckToJson(const Bottleneck& b);
// The inverse; Corruption when a field is missing or has the wrong type.
Result<Bottleneck> BottleneckFromJson(const nlohmann::json& json);

}  // namespace inferscope
