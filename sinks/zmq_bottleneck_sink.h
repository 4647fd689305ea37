#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <msgpack.hpp>
#include <zmq.hpp>

#include "bottlenecks/bottleneck.h"
#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "pipeline/sink.h"
#include "pipeline/status.h"
#include "sinks/stream_sink.h"

namespace inferscope {

// ZmqBottleneckSink publishes bottleneck changes (raised, severity changed, primary changed,
// resolved; kind::Bottleneck from bottleneck_classify) on a ZeroMQ PUB socket as [topic, payload]
// with topic "bottlenecks.<type>.<instance>." (names escaped, sinks/topic.h), so a subscriber
// filters by prefix ("bottlenecks." everything, "bottlenecks.MEMORY_PRESSURE." one type,
// "bottlenecks.MEMORY_PRESSURE.vllm-1." one type of one instance). The payload (msgpack map, or
// JSON; documented floats are always float64) is specified in docs/PROTOCOL.md, "Bottleneck
// stream", with the same conventions as the alert stream.
//
// Options: `endpoint` (required; bound), `sndhwm` (default 10000), `format` (msgpack | json),
// `curve` (optional: only the listed subscriber keys may subscribe; see PubSocket).
// Lifecycle: Open binds; Write publishes; Close closes with a 100 ms linger.
// Concurrency: Write from the sink thread only.
// Limitations: fire-and-forget like every PUB socket; the durable copy is in the state store
// (rocksdb_bottlenecks) and at GET /v1/bottlenecks.
class ZmqBottleneckSink final : public Sink {
 public:
  static constexpr std::string_view kName = "zmq_bottlenecks";
  static constexpr std::string_view kDescription =
      "Publishes bottleneck changes on a ZeroMQ PUB socket (topic bottlenecks.<type>.<instance>.)";

  using Options = StreamSinkOptions;
  static constexpr int kVersion = 1;

  static Result<std::unique_ptr<ZmqBottleneckSink>> Create(const ConfigNode& options);
  explicit ZmqBottleneckSink(Options options) : options_(std::move(options)) {}
  ~ZmqBottleneckSink() override;

  Status Open(const StageContext& ctx) override;
  KindSet Accepts() const override { return KindSet::Of<kind::Bottleneck>(); }
  Status Write(const OutputBatch& batch) override;
  void Close() override;
  std::string Endpoint() const override { return pub_.endpoint(); }

  // The topic and payloads of one change (exposed for tests and docs).
  static std::string Topic(const Bottleneck& b);
  static void EncodeMsgpack(const Bottleneck& b, msgpack::sbuffer& out);
  static std::string EncodeJson(const Bottleneck& b);

 private:
  Options options_;
  StreamPublisher pub_;
  std::string topic_;
};

}  // namespace inferscope
