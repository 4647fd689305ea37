#pragma once

// What the engine publishes and serves of the routing learner: the result kind of the
// `routing_learn` operator (kind::RoutingWeights, carrying RoutingWeights), and the JSON forms of
// weights and decisions shared by the stream sink (zmq_routing), the store (rocksdb_routing) and
// the query API (docs/PROTOCOL.md "Routing stream", docs/ROUTING.md).

#include <string>

#include <nlohmann/json.hpp>

#include "pipeline/status.h"
#include "routing/learner.h"

namespace inferscope {

namespace kind {
// The result kind of routing_learn (pipeline/result_kind.h).
struct RoutingWeights {
  using Value = ::inferscope::routing::RoutingWeights;
  static constexpr std::string_view kName = "routing_weights";
  static constexpr std::string_view kDescription =
      "The recommended traffic distribution of one (model, strategy), published when it changed "
      "meaningfully (routing/learner.h)";
};
}  // namespace kind

namespace routing {

// {"model", "strategy", "time" (event time, ms), "panic", "backends": [{"backend", "weight",
// "p_best", "gate", "idle"}]} ("backends" empty: the model was removed).
nlohmann::json WeightsToJson(const RoutingWeights& w);
// The inverse; InvalidArgument naming the first missing or malformed field.
Result<RoutingWeights> WeightsFromJson(const nlohmann::json& j);
// One decision: {"ok", "backend", "confidence", "weight", "strategy", "strategy_weights",
// "panic", "capable", "incapable", "reasoning", "ranked": [...], "gated": [...]} ("reason" when
// not ok). `limit` caps the ranked list (0: all of it).
nlohmann::json DecisionToJson(const Decision& d, size_t limit = 0);
// One ranked backend's fields (as in DecisionToJson's "ranked"). Non-finite numbers are null.
nlohmann::json BackendScoreToJson(const BackendScore& s);

}  // namespace routing
}  // namespace inferscope
