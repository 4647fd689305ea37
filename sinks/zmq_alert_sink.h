#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <msgpack.hpp>
#include <zmq.hpp>

#include "alerting/alert.h"
#include "alerting/alert_json.h"
#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "pipeline/sink.h"
#include "pipeline/status.h"
#include "sinks/stream_sink.h"

namespace inferscope {

// ZmqAlertSink publishes alert state changes (firing, escalation, resolved) on a ZeroMQ PUB socket
// as [topic, payload] with topic "alerts.<severity>.<instance>.<model>." (names escaped,
// sinks/topic.h), so a subscriber filters by prefix ("alerts." everything, "alerts.critical." one
// severity). The payload (msgpack map, or JSON; documented floats are always float64) is
// specified in docs/PROTOCOL.md, "Alert stream".
//
// Options: `endpoint` (required; bound), `sndhwm` (default 10000), `format` (msgpack | json),
// `include_silenced` (default false: alerts a silence matched are not published), `curve`
// (optional: only the listed subscriber keys may subscribe; see PubSocket).
// Lifecycle: Open binds; Write publishes; Close closes with a 100 ms linger.
// Concurrency: Write from the sink thread only.
// Limitations: fire-and-forget like every PUB socket; the durable copy is in the state store
// (the alert store sink, state/) and at GET /v1/alerts.
class ZmqAlertSink final : public Sink {
 public:
  static constexpr std::string_view kName = "zmq_alerts";
  static constexpr std::string_view kDescription =
      "Publishes alert state changes on a ZeroMQ PUB socket (topic "
      "alerts.<severity>.<instance>.<model>.)";

  struct Options {
    StreamSinkOptions stream;       // endpoint, sndhwm, format, curve
    bool include_silenced = false;  // publish alerts a silence matched too
  };
  static constexpr int kVersion = kAlertPayloadVersion;

  static Result<std::unique_ptr<ZmqAlertSink>> Create(const ConfigNode& options);
  explicit ZmqAlertSink(Options options) : options_(std::move(options)) {}
  ~ZmqAlertSink() override;

  Status Open(const StageContext& ctx) override;
  KindSet Accepts() const override { return KindSet::Of<kind::Alert>(); }
  Status Write(const OutputBatch& batch) override;
  void Close() override;
  std::string Endpoint() const override { return pub_.endpoint(); }

  // The topic and payloads of one alert (exposed for tests and the `tail` command's docs).
  static std::string Topic(const Alert& alert);
  static void EncodeMsgpack(const Alert& alert, msgpack::sbuffer& out);
  static std::string EncodeJson(const Alert& alert);

 private:
  Options options_;
  StreamPublisher pub_;
  Counter* skipped_silenced_ = nullptr;
};

}  // namespace inferscope
