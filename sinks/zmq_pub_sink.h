#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <msgpack.hpp>
#include <zmq.hpp>

#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "pipeline/sink.h"
#include "pipeline/status.h"
#include "sinks/stream_sink.h"

namespace inferscope {

class Interner;
struct WindowSummary;

// ZmqPubSink publishes every window summary on a ZeroMQ PUB socket as a two-frame message
// [topic, payload] with topic "summaries.<instance>.<model>." (names escaped, sinks/topic.h), so
// subscribers can filter by prefix. The payload (msgpack or JSON; documented floats are always
// float64) is specified in docs/PROTOCOL.md, "Summary stream".
//
// Options: `endpoint` (required; bound, e.g. "tcp://127.0.0.1:*"), `sndhwm` (default 10000
// messages; beyond it PUB drops for slow subscribers, as ZeroMQ does), `format` ("msgpack", the
// default, or "json"), `curve` (optional: only the listed subscriber keys may subscribe; see
// PubSocket).
// Lifecycle: Open binds (Endpoint() then returns the resolved address), Write publishes, Close
// closes the socket with a short linger (100 ms). Concurrency: Write from the sink thread only.
// Limitations: fire-and-forget; a subscriber that joins late misses earlier summaries.
class ZmqPubSink final : public Sink {
 public:
  static constexpr std::string_view kName = "zmq_pub";
  static constexpr std::string_view kDescription =
      "Publishes window summaries on a ZeroMQ PUB socket (topic summaries.<instance>.<model>.)";

  using Options = StreamSinkOptions;
  static constexpr int kVersion = 1;

  static Result<std::unique_ptr<ZmqPubSink>> Create(const ConfigNode& options);
  explicit ZmqPubSink(Options options) : options_(std::move(options)) {}
  ~ZmqPubSink() override;

  Status Open(const StageContext& ctx) override;
  // Pane summaries and window summaries, published alike (panes first, then windows).
  KindSet Accepts() const override { return KindSet::Of<kind::PaneSummary, kind::WindowSummary>(); }
  Status Write(const OutputBatch& batch) override;
  void Close() override;
  std::string Endpoint() const override { return pub_.endpoint(); }

 private:
  // Publishes `summaries`; stops at the first failure.
  Status Publish(std::span<const WindowSummary> summaries, int64_t watermark_ms);
  void EncodeMsgpack(const WindowSummary& summary, int64_t watermark_ms);
  void EncodeJson(const WindowSummary& summary, int64_t watermark_ms);

  Options options_;
  const Interner* interner_ = nullptr;
  StreamPublisher pub_;
  // Reused across messages so the steady state does not allocate.
  std::string topic_;
  msgpack::sbuffer packed_;
  std::string json_;
};

}  // namespace inferscope
