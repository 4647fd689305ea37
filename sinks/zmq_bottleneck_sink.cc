#include "sinks/zmq_bottleneck_sink.h"

#include <cstdio>

#include <nlohmann/json.hpp>

#include "bottlenecks/bottleneck_json.h"
#include "pipeline/json_text.h"
#include "sinks/stream_encoding.h"
#include "sinks/topic.h"

namespace inferscope {
namespace {

using Packer = msgpack::packer<msgpack::sbuffer>;

std::string Hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

Status ZmqBottleneckSink::Options::Validate() const {
  if (endpoint.empty()) return Status::InvalidArgument("zmq_bottlenecks: endpoint is required");
  if (sndhwm < 0 || sndhwm > INT32_MAX) {
    return Status::InvalidArgument("zmq_bottlenecks: sndhwm out of range");
  }
  return Status::Ok();
}

Result<std::unique_ptr<ZmqBottleneckSink>> ZmqBottleneckSink::Create(const ConfigNode& options) {
  INFERSCOPE_RETURN_IF_ERROR(options.CheckKnownFields({"endpoint", "sndhwm", "format", "curve"}));
  Options opts;
  Result<std::string> endpoint = options.GetEndpoint("endpoint");
  if (!endpoint.ok()) return endpoint.status();
  if (endpoint->empty()) return options.Error("endpoint", "must not be empty");
  opts.endpoint = *endpoint;
  Result<int64_t> hwm = options.GetInt("sndhwm", opts.sndhwm, 0, INT32_MAX);
  if (!hwm.ok()) return hwm.status();
  opts.sndhwm = *hwm;
  Result<std::string> format = options.GetString("format", "msgpack");
  if (!format.ok()) return format.status();
  if (*format == "msgpack") {
    opts.format = Format::kMsgpack;
  } else if (*format == "json") {
    opts.format = Format::kJson;
  } else {
    return options.Error("format", "expected 'msgpack' or 'json', got '" + *format + "'");
  }
  Result<CurveServerOptions> curve = ParseCurveServerOptions(options, /*require_globs=*/false);
  if (!curve.ok()) return curve.status();
  opts.curve = std::move(curve).value();
  INFERSCOPE_RETURN_IF_ERROR(opts.Validate());
  return std::make_unique<ZmqBottleneckSink>(std::move(opts));
}

ZmqBottleneckSink::~ZmqBottleneckSink() { Close(); }

Status ZmqBottleneckSink::Open(const StageContext& ctx) {
  INFERSCOPE_RETURN_IF_ERROR(options_.Validate());
  if (ctx.metrics == nullptr) {
    return Status::InvalidArgument("sink '" + ctx.name + "': the stage context lacks metrics");
  }
  Labels labels = {{"stage", ctx.name}};
  messages_ = ctx.metrics->GetCounter("inferscope_sink_messages_total",
                                      "Messages a sink published or wrote", labels);
  errors_ = ctx.metrics->GetCounter("inferscope_sink_write_errors_total", "Sink writes that failed",
                                    labels);
  pub_.RequireKeys(options_.curve, ctx.metrics, ctx.name);
  return pub_.Bind(options_.endpoint, static_cast<int>(options_.sndhwm), "zmq_bottlenecks");
}

void ZmqBottleneckSink::Close() { pub_.Close(); }

std::string ZmqBottleneckSink::Topic(const Bottleneck& b) {
  std::string topic = "bottlenecks.";
  AppendTopicSegment(topic, BottleneckTypeName(b.type));
  AppendTopicSegment(topic, b.instance);
  return topic;
}

void ZmqBottleneckSink::EncodeMsgpack(const Bottleneck& b, msgpack::sbuffer& out) {
  out.clear();
  Packer pk(out);
  pk.pack_map(23);
  PackStr(pk, "v");
  pk.pack_int(kVersion);
  PackStr(pk, "id");
  PackStr(pk, Hex(BottleneckId(b.instance, b.model, b.type)));
  PackStr(pk, "instance");
  PackStr(pk, b.instance);
  PackStr(pk, "model");
  PackStr(pk, b.model);
  PackStr(pk, "engine");
  PackStr(pk, b.engine);
  PackStr(pk, "type");
  PackStr(pk, BottleneckTypeName(b.type));
  PackStr(pk, "severity");
  PackStr(pk, BottleneckSeverityName(b.severity));
  PackStr(pk, "state");
  PackStr(pk, BottleneckStateName(b.state));
  PackStr(pk, "change");
  PackStr(pk, BottleneckChangeName(b.change));
  PackStr(pk, "primary");
  pk.pack(b.primary);
  PackStr(pk, "root");
  PackStr(pk, BottleneckTypeName(b.root));
  PackStr(pk, "chain");
  pk.pack_array(static_cast<uint32_t>(b.chain.size()));
  for (BottleneckType t : b.chain) PackStr(pk, BottleneckTypeName(t));
  PackStr(pk, "metric");
  PackStr(pk, b.metric);
  PackStr(pk, "stat");
  PackStr(pk, b.stat);
  PackStr(pk, "value");
  PackFloat64OrNil(out, b.value);
  PackStr(pk, "threshold");
  PackFloat64OrNil(out, b.threshold);
  PackStr(pk, "basis");
  PackStr(pk, BottleneckBasisName(b.basis));
  PackStr(pk, "peer_median");
  PackFloat64OrNil(out, b.peer_median);
  PackStr(pk, "window_start");
  pk.pack_int64(b.window_start_ms);
  PackStr(pk, "window_end");
  pk.pack_int64(b.window_end_ms);
  PackStr(pk, "active_since");
  pk.pack_int64(b.active_since_ms);
  PackStr(pk, "detected_at");
  pk.pack_int64(b.detected_at_ms);
  PackStr(pk, "description");
  PackStr(pk, b.description);
}

std::string ZmqBottleneckSink::EncodeJson(const Bottleneck& b) {
  nlohmann::json j = BottleneckToJson(b);
  j["v"] = kVersion;
  j["window_start"] = b.window_start_ms;
  j["window_end"] = b.window_end_ms;
  j.erase("window");
  return ToJsonText(j);
}

Status ZmqBottleneckSink::Write(const OutputBatch& batch) {
  if (!pub_.bound()) return Status::Internal("zmq_bottlenecks: Write before Open");
  uint64_t sent = 0;
  Status result;
  for (const Bottleneck& b : batch.Get<kind::Bottleneck>()) {
    topic_ = Topic(b);
    std::string json;
    zmq::const_buffer payload;
    if (options_.format == Format::kMsgpack) {
      EncodeMsgpack(b, packed_);
      payload = zmq::buffer(packed_.data(), packed_.size());
    } else {
      json = EncodeJson(b);
      payload = zmq::buffer(json);
    }
    result = pub_.Send(zmq::buffer(topic_), payload);
    if (!result.ok()) {
      errors_->Inc();
      break;
    }
    ++sent;
  }
  messages_->Inc(sent);
  return result;
}

}  // namespace inferscope
