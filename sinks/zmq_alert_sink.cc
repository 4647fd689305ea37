#include "sinks/zmq_alert_sink.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "alerting/alert_json.h"
#include "pipeline/json_text.h"
#include "pipeline/summary.h"
#include "sinks/stream_encoding.h"
#include "sinks/topic.h"

namespace inferscope {
namespace {

using Packer = msgpack::packer<msgpack::sbuffer>;

}  // namespace

Result<std::unique_ptr<ZmqAlertSink>> ZmqAlertSink::Create(const ConfigNode& options) {
  INFERSCOPE_RETURN_IF_ERROR(
      options.CheckKnownFields({"endpoint", "sndhwm", "format", "include_silenced", "curve"}));
  Options opts;
  Result<StreamSinkOptions> stream = ParseStreamSinkOptions(options, kName);
  if (!stream.ok()) return stream.status();
  opts.stream = std::move(stream).value();
  Result<bool> silenced = options.GetBool("include_silenced", opts.include_silenced);
  if (!silenced.ok()) return silenced.status();
  opts.include_silenced = *silenced;
  return std::make_unique<ZmqAlertSink>(std::move(opts));
}

ZmqAlertSink::~ZmqAlertSink() { Close(); }

Status ZmqAlertSink::Open(const StageContext& ctx) {
  INFERSCOPE_RETURN_IF_ERROR(pub_.Open(ctx, options_.stream, kName));
  skipped_silenced_ = ctx.metrics->GetCounter("inferscope_sink_alerts_silenced_total",
                                              "Silenced alerts a stream sink did not publish",
                                              {{"stage", ctx.name}});
  return Status::Ok();
}

void ZmqAlertSink::Close() { pub_.Close(); }

std::string ZmqAlertSink::Topic(const Alert& a) {
  std::string topic = "alerts.";
  AppendTopicSegment(topic, SeverityName(a.severity));
  AppendTopicSegment(topic, a.instance);
  AppendTopicSegment(topic, a.model);
  return topic;
}

void ZmqAlertSink::EncodeMsgpack(const Alert& a, msgpack::sbuffer& out) {
  out.clear();
  Packer pk(out);
  pk.pack_map(25);
  PackStr(pk, "v");
  pk.pack_int(kAlertPayloadVersion);
  PackStr(pk, "fingerprint");
  PackStr(pk, FingerprintHex(a.fingerprint));
  PackStr(pk, "state");
  PackStr(pk, AlertStateName(a.state));
  PackStr(pk, "type");
  PackStr(pk, AnomalyTypeName(a.type));
  PackStr(pk, "severity");
  PackStr(pk, SeverityName(a.severity));
  PackStr(pk, "rule");
  PackStr(pk, a.rule);
  PackStr(pk, "instance");
  PackStr(pk, a.instance);
  PackStr(pk, "model");
  PackStr(pk, a.model);
  PackStr(pk, "metric");
  PackStr(pk, a.metric);
  PackStr(pk, "stat");
  PackStr(pk, a.stat);
  PackStr(pk, "value");
  PackFloat64OrNil(out, a.value);
  PackStr(pk, "expected");
  PackFloat64OrNil(out, a.expected);
  PackStr(pk, "lower");
  PackFloat64OrNil(out, a.lower);
  PackStr(pk, "upper");
  PackFloat64OrNil(out, a.upper);
  PackStr(pk, "limit");
  PackFloat64OrNil(out, a.limit);
  PackStr(pk, "score");
  PackFloat64OrNil(out, a.score);
  PackStr(pk, "window_start");
  pk.pack_int64(a.window_start_ms);
  PackStr(pk, "window_end");
  pk.pack_int64(a.window_end_ms);
  PackStr(pk, "event_time");
  pk.pack_int64(a.event_time_ms);
  PackStr(pk, "detected_at");
  pk.pack_int64(a.detected_at_ms);
  PackStr(pk, "active_since");
  pk.pack_int64(a.active_since_ms);
  PackStr(pk, "message");
  PackStr(pk, a.message);
  PackStr(pk, "silenced");
  pk.pack(a.silenced);
  PackStr(pk, "early");
  pk.pack(a.early);
  PackStr(pk, "series");
  PackStr(pk, a.instance + "/" + a.model + "/" + a.metric);
}

std::string ZmqAlertSink::EncodeJson(const Alert& a) {
  // The API's JSON (AlertToJson: v, series, window_start/window_end included) without the API's
  // extra `window` object.
  nlohmann::json j = AlertToJson(a);
  j.erase("window");
  return ToJsonText(j);
}

Status ZmqAlertSink::Write(const OutputBatch& batch) {
  INFERSCOPE_RETURN_IF_ERROR(pub_.CheckOpen());
  for (const Alert& a : batch.Get<kind::Alert>()) {
    if (a.silenced && !options_.include_silenced) {
      skipped_silenced_->Inc();
      continue;
    }
    INFERSCOPE_RETURN_IF_ERROR(
        pub_.SendRecord(Topic(a), a, options_.stream.format, EncodeMsgpack, EncodeJson));
  }
  return Status::Ok();
}

}  // namespace inferscope
