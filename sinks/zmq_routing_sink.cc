#include "sinks/zmq_routing_sink.h"

#include <nlohmann/json.hpp>

#include "pipeline/json_text.h"
#include "sinks/stream_encoding.h"
#include "sinks/topic.h"

namespace inferscope {

using routing::RoutingWeights;

Result<std::unique_ptr<ZmqRoutingSink>> ZmqRoutingSink::Create(const ConfigNode& options) {
  Result<StreamSinkOptions> opts = ParseStreamOnlySinkOptions(options, kName);
  if (!opts.ok()) return opts.status();
  return std::make_unique<ZmqRoutingSink>(std::move(opts).value());
}

ZmqRoutingSink::~ZmqRoutingSink() { Close(); }

Status ZmqRoutingSink::Open(const StageContext& ctx) { return pub_.Open(ctx, options_, kName); }

void ZmqRoutingSink::Close() { pub_.Close(); }

void ZmqRoutingSink::AppendTopic(const RoutingWeights& w, std::string& topic) {
  topic.clear();
  topic += "routing.";
  AppendTopicSegment(topic, w.model);
  AppendTopicSegment(topic, routing::StrategyName(w.strategy));
}

std::string ZmqRoutingSink::Topic(const RoutingWeights& w) {
  std::string topic;
  AppendTopic(w, topic);
  return topic;
}

void ZmqRoutingSink::EncodeMsgpack(const RoutingWeights& w, msgpack::sbuffer& out) {
  using Packer = msgpack::packer<msgpack::sbuffer>;
  out.clear();
  Packer pk(out);
  pk.pack_map(6);
  PackStr(pk, "v");
  pk.pack_int(kVersion);
  PackStr(pk, "model");
  PackStr(pk, w.model);
  PackStr(pk, "strategy");
  PackStr(pk, routing::StrategyName(w.strategy));
  PackStr(pk, "time");
  pk.pack_int64(w.time_ms);
  PackStr(pk, "panic");
  pk.pack(w.panic);
  PackStr(pk, "backends");
  pk.pack_array(static_cast<uint32_t>(w.backends.size()));
  for (const RoutingWeights::Entry& e : w.backends) {
    pk.pack_map(5);
    PackStr(pk, "backend");
    PackStr(pk, e.backend);
    PackStr(pk, "weight");
    PackFloat64OrNil(out, e.weight);
    PackStr(pk, "p_best");
    PackFloat64OrNil(out, e.p_best);
    PackStr(pk, "gate");
    PackStr(pk, routing::GateStateName(e.gate));
    PackStr(pk, "idle");
    pk.pack(e.idle);
  }
}

std::string ZmqRoutingSink::EncodeJson(const RoutingWeights& w) {
  nlohmann::json j = routing::WeightsToJson(w);
  j["v"] = kVersion;
  return ToJsonText(j);
}

Status ZmqRoutingSink::Write(const OutputBatch& batch) {
  INFERSCOPE_RETURN_IF_ERROR(pub_.CheckOpen());
  for (const RoutingWeights& w : batch.Get<kind::RoutingWeights>()) {
    AppendTopic(w, topic_);
    INFERSCOPE_RETURN_IF_ERROR(
        pub_.SendRecord(topic_, w, options_.format, EncodeMsgpack, EncodeJson));
  }
  return Status::Ok();
}

}  // namespace inferscope
