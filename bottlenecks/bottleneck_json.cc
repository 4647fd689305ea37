#include "bottlenecks/bottleneck_json.h"

#include <cmath>

#include "pipeline/coding.h"
#include "pipeline/json_text.h"

namespace inferscope {
namespace {

using nlohmann::json;

bool GetString(const json& j, const char* field, std::string* out) {
  auto it = j.find(field);
  if (it == j.end() || !it->is_string()) return false;
  *out = it->get<std::string>();
  return true;
}

bool GetInt(const json& j, const char* field, int64_t* out) {
  auto it = j.find(field);
  if (it == j.end() || !it->is_number_integer()) return false;
  *out = it->get<int64_t>();
  return true;
}

// A number, or null for a non-finite one (NaN).
bool GetDouble(const json& j, const char* field, double* out) {
  auto it = j.find(field);
  if (it == j.end()) return false;
  if (it->is_null()) {
    *out = std::nan("");
    return true;
  }
  if (!it->is_number()) return false;
  *out = it->get<double>();
  return true;
}

}  // namespace

json BottleneckToJson(const Bottleneck& b) {
  json chain = json::array();
  for (BottleneckType t : b.chain) chain.push_back(BottleneckTypeName(t));
  return {{"id", Hex64(BottleneckId(b.instance, b.model, b.type))},
          {"instance", b.instance},
          {"model", b.model},
          {"engine", b.engine},
          {"type", BottleneckTypeName(b.type)},
          {"severity", BottleneckSeverityName(b.severity)},
          {"state", BottleneckStateName(b.state)},
          {"change", BottleneckChangeName(b.change)},
          {"primary", b.primary},
          {"root", BottleneckTypeName(b.root)},
          {"chain", std::move(chain)},
          {"metric", b.metric},
          {"stat", b.stat},
          {"value", JsonNumberOrNull(b.value)},
          {"threshold", JsonNumberOrNull(b.threshold)},
          {"basis", BottleneckBasisName(b.basis)},
          {"peer_median", JsonNumberOrNull(b.peer_median)},
          {"window", {{"start", b.window_start_ms}, {"end", b.window_end_ms}}},
          {"active_since", b.active_since_ms},
          {"detected_at", b.detected_at_ms},
          {"description", b.description},
          {"early", b.early}};
}

Result<Bottleneck> BottleneckFromJson(const json& j) {
  auto bad = [](std::string_view field) {
    return Status::Corruption("bottleneck record: missing or malformed '" + std::string(field) +
                              "'");
  };
  if (!j.is_object()) return Status::Corruption("bottleneck record: not a JSON object");
  Bottleneck b;
  std::string text;
  if (!GetString(j, "instance", &b.instance)) return bad("instance");
  if (!GetString(j, "model", &b.model)) return bad("model");
  if (!GetString(j, "engine", &b.engine)) return bad("engine");
  if (!GetString(j, "type", &text)) return bad("type");
  std::optional<BottleneckType> type = ParseBottleneckType(text);
  if (!type) return bad("type");
  b.type = *type;
  if (!GetString(j, "severity", &text)) return bad("severity");
  std::optional<BottleneckSeverity> severity = ParseBottleneckSeverity(text);
  if (!severity) return bad("severity");
  b.severity = *severity;
  if (!GetString(j, "state", &text)) return bad("state");
  std::optional<BottleneckState> state = ParseBottleneckState(text);
  if (!state) return bad("state");
  b.state = *state;
  if (!GetString(j, "change", &text)) return bad("change");
  std::optional<BottleneckChange> change = ParseBottleneckChange(text);
  if (!change) return bad("change");
  b.change = *change;
  auto primary = j.find("primary");
  if (primary == j.end() || !primary->is_boolean()) return bad("primary");
  b.primary = primary->get<bool>();
  if (!GetString(j, "root", &text)) return bad("root");
  std::optional<BottleneckType> root = ParseBottleneckType(text);
  if (!root) return bad("root");
  b.root = *root;
  auto chain = j.find("chain");
  if (chain == j.end() || !chain->is_array()) return bad("chain");
  for (const json& t : *chain) {
    std::optional<BottleneckType> parsed =
        t.is_string() ? ParseBottleneckType(t.get<std::string>()) : std::nullopt;
    if (!parsed) return bad("chain");
    b.chain.push_back(*parsed);
  }
  if (!GetString(j, "metric", &b.metric)) return bad("metric");
  if (!GetString(j, "stat", &b.stat)) return bad("stat");
  if (!GetDouble(j, "value", &b.value)) return bad("value");
  if (!GetDouble(j, "threshold", &b.threshold)) return bad("threshold");
  if (!GetString(j, "basis", &text)) return bad("basis");
  std::optional<BottleneckBasis> basis = ParseBottleneckBasis(text);
  if (!basis) return bad("basis");
  b.basis = *basis;
  if (!GetDouble(j, "peer_median", &b.peer_median)) return bad("peer_median");
  auto window = j.find("window");
  if (window == j.end() || !window->is_object() || !GetInt(*window, "start", &b.window_start_ms) ||
      !GetInt(*window, "end", &b.window_end_ms)) {
    return bad("window");
  }
  if (!GetInt(j, "active_since", &b.active_since_ms)) return bad("active_since");
  if (!GetInt(j, "detected_at", &b.detected_at_ms)) return bad("detected_at");
  if (!GetString(j, "description", &b.description)) return bad("description");
  // Optional (records written before early evaluation existed lack it).
  if (auto early = j.find("early"); early != j.end()) {
    if (!early->is_boolean()) return bad("early");
    b.early = early->get<bool>();
  }
  return b;
}

}  // namespace inferscope
