#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "alerting/alert.h"
#include "bottlenecks/bottleneck.h"
#include "pipeline/interner.h"
#include "pipeline/status.h"
#include "pipeline/summary.h"
#include "routing/learner.h"
#include "values/aggregate.h"

namespace inferscope {

// The messages of the results stream (docs/PROTOCOL.md, "Results stream"): what the
// jetstream_results sink publishes and a query node materialises into a store of its own. Pure
// bytes in and out (no NATS), shared by the sink (sinks/) and the query node (cli/).
//
// One result per message, so that each has a Nats-Msg-Id of its own derived from the result's
// identity and version: a result an engine emits again after a restart (replayed from its
// checkpoint) carries the same id and the stream drops it within its duplicate window. Subjects
// are "<subject_prefix>.<kind>" with the kinds below. Every payload starts with a format byte
// (kResultsFormat); a reader refuses another.
//
//   pane        u8(1) str(instance) str(model) str(metric) be64(start ms) be64(end ms)
//               be64(max event time ms) u8(flags: 1 = update) Aggregate (values/aggregate.h)
//   alert       u8(1) AlertToJson text           (alerting/alert_json.h)
//   bottleneck  u8(1) BottleneckToJson text      (bottlenecks/bottleneck_json.h)
//   routing     u8(1) WeightsToJson text         (routing/published.h)
//   dead_letter u8(1) be64(published at ms) DeadLetterJson text (pipeline/dead_letter_json.h)
//   watermark   u8(1) str(node) be64(watermark ms)
//
// Msg-Ids (each at most ~90 bytes; h64 is FNV-1a 64 in 16 hex digits):
//   pane        "pane:<h64(instance model metric)>:<start>:<count>:<h64(payload)>"
//   alert       "alert:<fingerprint>:<state>:<severity>:<window_end>[:early]"
//               (event time: a replay by another node has the same id)
//   bottleneck  "bottleneck:<BottleneckId>:<change>:<detected_at>"       (its history key)
//   routing     "routing:<h64(model)>:<strategy>:<time>:<h64(payload)>"
//   dead_letter "dead_letter:<published at>:<h64(payload)>"
//   watermark   "watermark:<h64(node)>:<watermark>"
inline constexpr uint8_t kResultsFormat = 1;

enum class ResultsKind : uint8_t {
  kPane,
  kAlert,
  kBottleneck,
  kRouting,
  kDeadLetter,
  kWatermark,
};
inline constexpr int kNumResultsKinds = 6;

// "pane", "alert", "bottleneck", "routing", "dead_letter", "watermark": the last subject token.
std::string_view ResultsKindName(ResultsKind kind);
// The kind of a subject "<prefix>.<kind>"; InvalidArgument for another subject.
Result<ResultsKind> ResultsKindOfSubject(std::string_view subject, std::string_view prefix);

// One message to publish: its kind (the subject is "<prefix>.<kind>"), payload and Msg-Id.
struct ResultsMessage {
  ResultsKind kind = ResultsKind::kPane;
  std::string payload;
  std::string msg_id;
};

// FNV-1a 64 of `bytes` (the ids' h64).
uint64_t ResultsHash(std::string_view bytes);

// Encoders; each overwrites *out. InvalidArgument when a name is longer than kMaxNameBytes.
Status EncodePaneResult(const WindowSummary& pane, const Interner& names, ResultsMessage* out);
void EncodeAlertResult(const Alert& alert, ResultsMessage* out);
void EncodeBottleneckResult(const Bottleneck& change, ResultsMessage* out);
void EncodeRoutingResult(const routing::RoutingWeights& weights, ResultsMessage* out);
void EncodeDeadLetterResult(const DeadLetter& dead_letter, const Interner& names,
                            int64_t published_at_ms, ResultsMessage* out);
void EncodeWatermarkResult(std::string_view node, int64_t watermark_ms, ResultsMessage* out);

// A decoded pane, its names as strings.
struct PaneResult {
  std::string instance;
  std::string model;
  std::string metric;
  int64_t start_ms = 0;
  int64_t end_ms = 0;
  int64_t max_event_time_ms = 0;
  bool update = false;
  Aggregate agg;
};
struct DeadLetterResult {
  int64_t published_at_ms = 0;
  std::string json;  // as the rocksdb_state sink stores it
};
struct WatermarkResult {
  std::string node;
  int64_t watermark_ms = 0;
};

// Decoders: Corruption naming what is wrong for a payload that is not of the kind.
Status DecodePaneResult(std::string_view payload, PaneResult* out);
Result<Alert> DecodeAlertResult(std::string_view payload);
Result<Bottleneck> DecodeBottleneckResult(std::string_view payload);
Result<routing::RoutingWeights> DecodeRoutingResult(std::string_view payload);
Status DecodeDeadLetterResult(std::string_view payload, DeadLetterResult* out);
Status DecodeWatermarkResult(std::string_view payload, WatermarkResult* out);

}  // namespace inferscope
