#include "sinks/results_codec.h"

#include <nlohmann/json.hpp>

#include "alerting/alert_json.h"
#include "bottlenecks/bottleneck_json.h"
#include "pipeline/coding.h"
#include "pipeline/dead_letter_json.h"
#include "pipeline/json_text.h"
#include "pipeline/names.h"
#include "routing/published.h"

namespace inferscope {
namespace {

constexpr std::string_view kKindNames[kNumResultsKinds] = {"pane",    "alert",       "bottleneck",
                                                           "routing", "dead_letter", "watermark"};

Status Corrupt(ResultsKind kind, std::string_view what) {
  return Status::Corruption("results stream: " + std::string(ResultsKindName(kind)) +
                            " message: " + std::string(what));
}

// The payload after its format byte; Corruption when the byte is missing or another format.
Result<std::string_view> Body(ResultsKind kind, std::string_view payload) {
  if (payload.empty()) return Corrupt(kind, "empty");
  if (static_cast<uint8_t>(payload[0]) != kResultsFormat) {
    return Corrupt(kind, "format " + std::to_string(static_cast<uint8_t>(payload[0])) +
                             " (this build reads format " + std::to_string(kResultsFormat) + ")");
  }
  return payload.substr(1);
}

bool ReadStr(std::string_view* in, std::string* out) {
  if (in->empty()) return false;
  const size_t n = static_cast<uint8_t>(in->front());
  if (in->size() < n + 1) return false;
  out->assign(in->substr(1, n));
  in->remove_prefix(n + 1);
  return true;
}

bool ReadBe64(std::string_view* in, int64_t* out) {
  if (in->size() < 8) return false;
  *out = static_cast<int64_t>(ReadBigEndian64(*in));
  in->remove_prefix(8);
  return true;
}

void JsonPayload(const nlohmann::json& j, std::string* out) {
  out->assign(1, static_cast<char>(kResultsFormat));
  out->append(ToJsonText(j));
}

Result<nlohmann::json> ParseJson(ResultsKind kind, std::string_view payload) {
  Result<std::string_view> body = Body(kind, payload);
  if (!body.ok()) return body.status();
  nlohmann::json j = nlohmann::json::parse(*body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Corrupt(kind, "not JSON");
  return j;
}

}  // namespace

std::string_view ResultsKindName(ResultsKind kind) { return kKindNames[static_cast<size_t>(kind)]; }

Result<ResultsKind> ResultsKindOfSubject(std::string_view subject, std::string_view prefix) {
  if (subject.size() > prefix.size() + 1 && subject.substr(0, prefix.size()) == prefix &&
      subject[prefix.size()] == '.') {
    const std::string_view name = subject.substr(prefix.size() + 1);
    for (int i = 0; i < kNumResultsKinds; ++i) {
      if (kKindNames[i] == name) return static_cast<ResultsKind>(i);
    }
  }
  return Status::InvalidArgument("results stream: subject '" + std::string(subject) + "' is not " +
                                 std::string(prefix) + ".<kind>");
}

uint64_t ResultsHash(std::string_view bytes) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

Status EncodePaneResult(const WindowSummary& pane, const Interner& names, ResultsMessage* out) {
  const std::string_view instance = names.Name(pane.series.instance);
  const std::string_view model = names.Name(pane.series.model);
  const std::string_view metric = names.Name(pane.series.metric);
  if (instance.size() > kMaxNameBytes || model.size() > kMaxNameBytes ||
      metric.size() > kMaxNameBytes) {
    return Status::InvalidArgument("results stream: a pane's name is longer than 255 bytes");
  }
  out->kind = ResultsKind::kPane;
  std::string& p = out->payload;
  p.assign(1, static_cast<char>(kResultsFormat));
  AppendStr(&p, instance);
  AppendStr(&p, model);
  AppendStr(&p, metric);
  const size_t series_end = p.size();
  AppendBigEndian64(&p, static_cast<uint64_t>(pane.start_ms));
  AppendBigEndian64(&p, static_cast<uint64_t>(pane.end_ms));
  AppendBigEndian64(&p, static_cast<uint64_t>(pane.max_event_time_ms));
  p.push_back(pane.update ? 1 : 0);
  pane.agg.EncodeTo(&p);
  // The content hash leaves the update flag out: the same pane content fired again (a restart's
  // re-fire is not always marked `update`) is the same result.
  std::string content = p.substr(0, series_end + 24);
  content.append(p.substr(series_end + 25));
  out->msg_id = "pane:" + Hex64(ResultsHash(std::string_view(p).substr(1, series_end - 1))) + ":" +
                std::to_string(pane.start_ms) + ":" + std::to_string(pane.agg.count) + ":" +
                Hex64(ResultsHash(content));
  return Status::Ok();
}

void EncodeAlertResult(const Alert& alert, ResultsMessage* out) {
  out->kind = ResultsKind::kAlert;
  JsonPayload(AlertToJson(alert), &out->payload);
  out->msg_id = "alert:" + FingerprintHex(alert.fingerprint) + ":" +
                std::string(AlertStateName(alert.state)) + ":" +
                std::string(SeverityName(alert.severity)) + ":" +
                std::to_string(alert.window_end_ms) + (alert.early ? ":early" : "");
}

void EncodeBottleneckResult(const Bottleneck& change, ResultsMessage* out) {
  out->kind = ResultsKind::kBottleneck;
  JsonPayload(BottleneckToJson(change), &out->payload);
  out->msg_id = "bottleneck:" + Hex64(BottleneckId(change.instance, change.model, change.type)) +
                ":" + std::to_string(static_cast<int>(change.change)) + ":" +
                std::to_string(change.detected_at_ms);
}

void EncodeRoutingResult(const routing::RoutingWeights& weights, ResultsMessage* out) {
  out->kind = ResultsKind::kRouting;
  JsonPayload(routing::WeightsToJson(weights), &out->payload);
  out->msg_id = "routing:" + Hex64(ResultsHash(weights.model)) + ":" +
                std::string(routing::StrategyName(weights.strategy)) + ":" +
                std::to_string(weights.time_ms) + ":" + Hex64(ResultsHash(out->payload));
}

void EncodeDeadLetterResult(const DeadLetter& dead_letter, const Interner& names,
                            int64_t published_at_ms, ResultsMessage* out) {
  out->kind = ResultsKind::kDeadLetter;
  std::string& p = out->payload;
  p.assign(1, static_cast<char>(kResultsFormat));
  AppendBigEndian64(&p, static_cast<uint64_t>(published_at_ms));
  const std::string json = ToJsonText(DeadLetterJson(dead_letter, names));
  p.append(json);
  out->msg_id = "dead_letter:" + std::to_string(published_at_ms) + ":" + Hex64(ResultsHash(json));
}

void EncodeWatermarkResult(std::string_view node, int64_t watermark_ms, ResultsMessage* out) {
  out->kind = ResultsKind::kWatermark;
  std::string& p = out->payload;
  p.assign(1, static_cast<char>(kResultsFormat));
  AppendStr(&p, node);
  AppendBigEndian64(&p, static_cast<uint64_t>(watermark_ms));
  out->msg_id = "watermark:" + Hex64(ResultsHash(node)) + ":" + std::to_string(watermark_ms);
}

Status DecodePaneResult(std::string_view payload, PaneResult* out) {
  Result<std::string_view> body = Body(ResultsKind::kPane, payload);
  if (!body.ok()) return body.status();
  std::string_view in = *body;
  if (!ReadStr(&in, &out->instance) || !ReadStr(&in, &out->model) || !ReadStr(&in, &out->metric) ||
      !ReadBe64(&in, &out->start_ms) || !ReadBe64(&in, &out->end_ms) ||
      !ReadBe64(&in, &out->max_event_time_ms) || in.empty()) {
    return Corrupt(ResultsKind::kPane, "truncated");
  }
  if (out->start_ms < 0 || out->end_ms < out->start_ms) {
    return Corrupt(ResultsKind::kPane, "not a valid interval");
  }
  out->update = (in.front() & 1) != 0;
  in.remove_prefix(1);
  out->agg = Aggregate();
  return Aggregate::DecodeFrom(in, &out->agg).WithContext("results stream: pane message");
}

Result<Alert> DecodeAlertResult(std::string_view payload) {
  Result<nlohmann::json> j = ParseJson(ResultsKind::kAlert, payload);
  if (!j.ok()) return j.status();
  return AlertFromJson(*j);
}

Result<Bottleneck> DecodeBottleneckResult(std::string_view payload) {
  Result<nlohmann::json> j = ParseJson(ResultsKind::kBottleneck, payload);
  if (!j.ok()) return j.status();
  return BottleneckFromJson(*j);
}

Result<routing::RoutingWeights> DecodeRoutingResult(std::string_view payload) {
  Result<nlohmann::json> j = ParseJson(ResultsKind::kRouting, payload);
  if (!j.ok()) return j.status();
  return routing::WeightsFromJson(*j);
}

Status DecodeDeadLetterResult(std::string_view payload, DeadLetterResult* out) {
  Result<std::string_view> body = Body(ResultsKind::kDeadLetter, payload);
  if (!body.ok()) return body.status();
  std::string_view in = *body;
  if (!ReadBe64(&in, &out->published_at_ms)) return Corrupt(ResultsKind::kDeadLetter, "truncated");
  if (nlohmann::json::parse(in, nullptr, false).is_discarded()) {
    return Corrupt(ResultsKind::kDeadLetter, "not JSON");
  }
  out->json.assign(in);
  return Status::Ok();
}

Status DecodeWatermarkResult(std::string_view payload, WatermarkResult* out) {
  Result<std::string_view> body = Body(ResultsKind::kWatermark, payload);
  if (!body.ok()) return body.status();
  std::string_view in = *body;
  if (!ReadStr(&in, &out->node) || !ReadBe64(&in, &out->watermark_ms) || !in.empty() ||
      out->node.empty()) {
    return Corrupt(ResultsKind::kWatermark, "truncated or empty node");
  }
  return Status::Ok();
}

}  // namespace inferscope
