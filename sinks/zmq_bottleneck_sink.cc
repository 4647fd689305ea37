#include "sinks/zmq_bottleneck_sink.h"

#include <nlohmann/json.hpp>

#include "bottlenecks/bottleneck_json.h"
#include "pipeline/coding.h"
#include "pipeline/json_text.h"
#include "sinks/stream_encoding.h"
#include "sinks/topic.h"

namespace inferscope {
namespace {

using Packer = msgpack::packer<msgpack::sbuffer>;

}  // namespace

Result<std::unique_ptr<ZmqBottleneckSink>> ZmqBottleneckSink::Create(const ConfigNode& options) {
  Result<StreamSinkOptions> opts = ParseStreamOnlySinkOptions(options, kName);
  if (!opts.ok()) return opts.status();
  return std::make_unique<ZmqBottleneckSink>(std::move(opts).value());
}

ZmqBottleneckSink::~ZmqBottleneckSink() { Close(); }

Status ZmqBottleneckSink::Open(const StageContext& ctx) { return pub_.Open(ctx, options_, kName); }

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
  pk.pack_map(24);
  PackStr(pk, "v");
  pk.pack_int(kVersion);
  PackStr(pk, "id");
  PackStr(pk, Hex64(BottleneckId(b.instance, b.model, b.type)));
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
  PackStr(pk, "early");
  pk.pack(b.early);
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
  INFERSCOPE_RETURN_IF_ERROR(pub_.CheckOpen());
  for (const Bottleneck& b : batch.Get<kind::Bottleneck>()) {
    topic_ = Topic(b);
    INFERSCOPE_RETURN_IF_ERROR(
        pub_.SendRecord(topic_, b, options_.format, EncodeMsgpack, EncodeJson));
  }
  return Status::Ok();
}

}  // namespace inferscope
