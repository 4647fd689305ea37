#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

#include <msgpack.hpp>

#include "auth/curve.h"
#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "pipeline/stage.h"
#include "pipeline/status.h"
#include "pipeline/string_hash.h"
#include "sinks/pub_socket.h"

namespace inferscope {

// What the stream sinks (zmq_pub, zmq_alerts, zmq_bottlenecks, zmq_workflows, zmq_routing) share:
// their options, their PUB socket with its counters, the choice of encoding per record, and the
// message number `topic_seq` every payload carries. Each sink adds its topic and payload
// (docs/PROTOCOL.md).

enum class StreamFormat { kMsgpack, kJson };

struct StreamSinkOptions {
  std::string endpoint;     // required; the address to bind (e.g. "tcp://127.0.0.1:*")
  int64_t sndhwm = 10'000;  // send high-water mark in messages; 0..INT32_MAX (0 = unlimited)
  StreamFormat format = StreamFormat::kMsgpack;  // `format`: "msgpack" (default) or "json"
  // Who may subscribe: CurveZMQ server keys and the authorised subscriber keys. Default: off
  // (anyone who can connect subscribes).
  CurveServerOptions curve;
  // InvalidArgument, prefixed with `sink` ("zmq_alerts"), when endpoint is empty or sndhwm is out
  // of range.
  Status Validate(std::string_view sink) const;
};

// Reads `endpoint`, `sndhwm`, `format` and `curve` from a stream sink's options and validates them
// (errors prefixed with `sink`); the caller checks for unknown fields (these four plus its own).
Result<StreamSinkOptions> ParseStreamSinkOptions(const ConfigNode& options, std::string_view sink);
// The same for a sink with no options of its own: any other field is an error.
Result<StreamSinkOptions> ParseStreamOnlySinkOptions(const ConfigNode& options,
                                                     std::string_view sink);

// Copies `payload` (a msgpack map, or a JSON object with nothing after its closing brace) into
// `*out` with one more entry, "topic_seq": `seq`; false (and `*out` unspecified) when it is
// neither.
bool AppendTopicSeq(std::string_view payload, StreamFormat format, uint64_t seq, std::string* out);

// StreamPublisher is a stream sink's bound PUB socket with the sink's message and error counters
// (inferscope_sink_messages_total, inferscope_sink_write_errors_total{stage}).
//
// Loss detection: PUB drops a subscriber's messages past the high-water mark (a slow subscriber)
// and cannot count them. So every payload gets "topic_seq", the message's number on its topic (1,
// 2, ... from the sink's start): a subscriber sees a gap when messages of a topic were lost to it,
// and topic_seq starting again at 1 when the engine restarted. At most kMaxTopics topics are
// numbered; past that the numbers start again at 1, as after a restart. Lifecycle: Open (engine
// thread) → Send (sink thread) → Close.
class StreamPublisher {
 public:
  // Validates `options`, registers the counters of stage `ctx.name` and binds. `sink` names the
  // sink type in errors.
  Status Open(const StageContext& ctx, const StreamSinkOptions& options, std::string_view sink);
  static constexpr size_t kMaxTopics = size_t{1} << 18;  // ~30 MB of counters at most

  // Sends one [topic, payload] message with its "topic_seq" and counts it, or counts the failure
  // and returns it. `payload` is encoded in the format the publisher was opened with.
  Status Send(std::string_view topic, std::string_view payload);
  // Sends `record` under `topic` encoded in `format`: `msgpack(record, sbuffer&)` into a buffer
  // reused across calls, or `json(record)` returning the text.
  template <typename Record, typename Msgpack, typename Json>
  Status SendRecord(std::string_view topic, const Record& record, StreamFormat format,
                    Msgpack msgpack, Json json) {
    if (format == StreamFormat::kMsgpack) {
      msgpack(record, packed_);
      return Send(topic, std::string_view(packed_.data(), packed_.size()));
    }
    const std::string text = json(record);
    return Send(topic, text);
  }
  // Internal error unless Open succeeded (for Write before Open).
  Status CheckOpen() const;
  void Close() { pub_.Close(); }
  const std::string& endpoint() const { return pub_.endpoint(); }

 private:
  std::string sink_;
  StreamFormat format_ = StreamFormat::kMsgpack;
  std::unordered_map<std::string, uint64_t, StringHash, std::equal_to<>> seqs_;  // by topic
  std::string stamped_;  // the payload with its seq, reused across messages
  PubSocket pub_;
  Counter* messages_ = nullptr;
  Counter* errors_ = nullptr;
  msgpack::sbuffer packed_;
};

}  // namespace inferscope
