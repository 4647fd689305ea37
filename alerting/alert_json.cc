#include "alerting/alert_json.h"

#include <cmath>
#include <exception>
#include <optional>
#include <string>

#include "pipeline/json_text.h"

namespace inferscope {
namespace {

using nlohmann::json;

double NumberOr(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return std::nan("");
  return it->get<double>();
}

}  // namespace

json AlertToJson(const Alert& a) {
  return {{"v", kAlertPayloadVersion},
          {"fingerprint", FingerprintHex(a.fingerprint)},
          {"state", AlertStateName(a.state)},
          {"type", AnomalyTypeName(a.type)},
          {"severity", SeverityName(a.severity)},
          {"rule", a.rule},
          {"instance", a.instance},
          {"model", a.model},
          {"metric", a.metric},
          {"series", a.instance + "/" + a.model + "/" + a.metric},
          {"stat", a.stat},
          {"value", JsonNumberOrNull(a.value)},
          {"expected", JsonNumberOrNull(a.expected)},
          {"lower", JsonNumberOrNull(a.lower)},
          {"upper", JsonNumberOrNull(a.upper)},
          {"limit", JsonNumberOrNull(a.limit)},
          {"score", JsonNumberOrNull(a.score)},
          {"window_start", a.window_start_ms},
          {"window_end", a.window_end_ms},
          {"window", {{"start", a.window_start_ms}, {"end", a.window_end_ms}}},
          {"event_time", a.event_time_ms},
          {"detected_at", a.detected_at_ms},
          {"active_since", a.active_since_ms},
          {"message", a.message},
          {"silenced", a.silenced},
          {"early", a.early}};
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
    a.limit = NumberOr(j, "limit");
    a.score = NumberOr(j, "score");
    a.window_start_ms = j.at("window").at("start").get<int64_t>();
    a.window_end_ms = j.at("window").at("end").get<int64_t>();
    a.event_time_ms = j.at("event_time").get<int64_t>();
    a.detected_at_ms = j.at("detected_at").get<int64_t>();
    a.active_since_ms = j.at("active_since").get<int64_t>();
    a.message = j.at("message").get<std::string>();
    a.silenced = j.value("silenced", false);
    a.early = j.value("early", false);
    return a;
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("alert record: ") + e.what());
  }
}

}  // namespace inferscope
