#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <msgpack.hpp>

#include "pipeline/config.h"
#include "pipeline/sink.h"
#include "pipeline/status.h"
#include "routing/published.h"
#include "sinks/stream_sink.h"

namespace inferscope {

// ZmqRoutingSink publishes routing weights (kind::RoutingWeights from routing_learn) on a ZeroMQ
// PUB socket as [topic, payload] with topic "routing.<model>.<strategy>." (names escaped,
// sinks/topic.h), so a router subscribes to "routing." (everything), "routing.<model>." (one
// model) or "routing.<model>.<strategy>.". The payload (msgpack map, or JSON; floats always
// float64) is specified in docs/PROTOCOL.md, "Routing stream".
//
// Options: `endpoint` (required; bound), `sndhwm` (default 10000), `format` (msgpack | json),
// `curve` (optional).
// Lifecycle: Open binds; Write publishes; Close closes with a 100 ms linger.
// Concurrency: Write from the sink thread only.
// Limitations: fire-and-forget like every PUB socket; the latest weights per (model, strategy)
// are durable in the state store (rocksdb_routing) and at GET /v1/routing/weights.
class ZmqRoutingSink final : public Sink {
 public:
  static constexpr std::string_view kName = "zmq_routing";
  static constexpr std::string_view kDescription =
      "Publishes routing weights on a ZeroMQ PUB socket (topic routing.<model>.<strategy>.)";

  using Options = StreamSinkOptions;
  static constexpr int kVersion = 1;

  static Result<std::unique_ptr<ZmqRoutingSink>> Create(const ConfigNode& options);
  explicit ZmqRoutingSink(Options options) : options_(std::move(options)) {}
  ~ZmqRoutingSink() override;

  Status Open(const StageContext& ctx) override;
  KindSet Accepts() const override { return KindSet::Of<kind::RoutingWeights>(); }
  Status Write(const OutputBatch& batch) override;
  void Close() override;
  std::string Endpoint() const override { return pub_.endpoint(); }

  // The topic and payloads of one publication (exposed for tests and docs).
  static void AppendTopic(const routing::RoutingWeights& w, std::string& topic);
  static std::string Topic(const routing::RoutingWeights& w);
  static void EncodeMsgpack(const routing::RoutingWeights& w, msgpack::sbuffer& out);
  static std::string EncodeJson(const routing::RoutingWeights& w);

 private:
  Options options_;
  StreamPublisher pub_;
  std::string topic_;
};

}  // namespace inferscope
