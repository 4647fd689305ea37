#include "routing/published.h"

#include <cmath>

namespace inferscope::routing {
namespace {

using nlohmann::json;

json Num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

bool ParseGate(std::string_view name, GateState* out) {
  for (GateState g : {GateState::kHealthy, GateState::kEjected, GateState::kProbing}) {
    if (GateStateName(g) == name) {
      *out = g;
      return true;
    }
  }
  return false;
}

}  // namespace

json WeightsToJson(const RoutingWeights& w) {
  json backends = json::array();
  for (const RoutingWeights::Entry& e : w.backends) {
    backends.push_back({{"backend", e.backend},
                        {"weight", Num(e.weight)},
                        {"p_best", Num(e.p_best)},
                        {"gate", GateStateName(e.gate)},
                        {"idle", e.idle}});
  }
  return {{"model", w.model},
          {"strategy", StrategyName(w.strategy)},
          {"time", w.time_ms},
          {"panic", w.panic},
          {"backends", std::move(backends)}};
}

Result<RoutingWeights> WeightsFromJson(const json& j) {
  auto bad = [](std::string_view field) {
    return Status::InvalidArgument("routing weights: missing or malformed '" + std::string(field) +
                                   "'");
  };
  if (!j.is_object()) return bad("(object)");
  RoutingWeights w;
  if (!j.contains("model") || !j["model"].is_string()) return bad("model");
  w.model = j["model"].get<std::string>();
  if (!j.contains("strategy") || !j["strategy"].is_string() ||
      !ParseStrategy(j["strategy"].get<std::string>(), &w.strategy)) {
    return bad("strategy");
  }
  if (!j.contains("time") || !j["time"].is_number_integer()) return bad("time");
  w.time_ms = j["time"].get<int64_t>();
  if (!j.contains("panic") || !j["panic"].is_boolean()) return bad("panic");
  w.panic = j["panic"].get<bool>();
  if (!j.contains("backends") || !j["backends"].is_array()) return bad("backends");
  for (const json& b : j["backends"]) {
    RoutingWeights::Entry e;
    if (!b.is_object() || !b.contains("backend") || !b["backend"].is_string()) {
      return bad("backends[].backend");
    }
    e.backend = b["backend"].get<std::string>();
    if (!b.contains("weight") || !b["weight"].is_number()) return bad("backends[].weight");
    e.weight = b["weight"].get<double>();
    e.p_best = b.contains("p_best") && b["p_best"].is_number() ? b["p_best"].get<double>() : NAN;
    if (!b.contains("gate") || !b["gate"].is_string() ||
        !ParseGate(b["gate"].get<std::string>(), &e.gate)) {
      return bad("backends[].gate");
    }
    e.idle = b.contains("idle") && b["idle"].is_boolean() && b["idle"].get<bool>();  // added later
    w.backends.push_back(std::move(e));
  }
  return w;
}

json BackendScoreToJson(const BackendScore& s) {
  return {{"backend", s.name},
          {"weight", Num(s.weight)},
          {"p_best", Num(s.p_best)},
          {"score", Num(s.score)},
          {"latency_score", Num(s.latency_score)},
          {"quality_score", Num(s.quality_score)},
          {"cost_score", Num(s.cost_score)},
          {"expected_latency_ms", Num(s.expected_latency_ms)},
          {"error_rate", Num(s.error_rate)},
          {"quality", Num(s.quality)},
          {"cost_usd", Num(s.cost_usd)},
          {"in_flight", Num(s.in_flight)},
          {"samples", Num(s.samples)},
          {"gate", GateStateName(s.gate)},
          {"idle", s.idle}};
}

json DecisionToJson(const Decision& d, size_t limit) {
  json ranked = json::array();
  const size_t n = limit == 0 ? d.num_ranked : std::min<size_t>(limit, d.num_ranked);
  for (size_t i = 0; i < n; ++i) ranked.push_back(BackendScoreToJson(d.ranked[i]));
  json gated = json::array();
  for (size_t i = 0; i < d.num_gated; ++i) {
    const GatedBackend& g = d.gated[i];
    json e = {{"backend", g.name},
              {"gate", GateStateName(g.state)},
              {"until", g.until_ms},
              {"ejections", g.ejections}};
    if (g.reason != EjectReason::kNone) e["reason"] = EjectReasonName(g.reason);
    gated.push_back(std::move(e));
  }
  json j = {
      {"ok", d.ok},
      {"strategy", StrategyName(d.strategy)},
      {"strategy_weights",
       {{"latency", d.weights.latency}, {"quality", d.weights.quality}, {"cost", d.weights.cost}}},
      {"panic", d.panic},
      {"capable", d.capable},
      {"incapable", d.incapable},
      {"ranked", std::move(ranked)},
      {"gated", std::move(gated)}};
  if (d.ok) {
    j["backend"] = d.backend_name;
    j["confidence"] = Num(d.confidence);
    j["weight"] = Num(d.weight);
    j["reasoning"] = FormatReasoning(d);
  } else {
    j["reason"] = NoBackendReasonName(d.reason);
  }
  return j;
}

}  // namespace inferscope::routing
