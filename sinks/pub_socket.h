#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <zmq.hpp>

#include "auth/curve.h"
#include "pipeline/metrics.h"
#include "pipeline/status.h"

namespace inferscope {

// PubSocket is the bound ZeroMQ PUB socket (with its own context) of a stream sink: each stream
// sink publishes `[topic, payload]` messages on one (through StreamPublisher, sinks/stream_sink.h).
//
// Delivery: PUB never blocks; past the high-water mark ZeroMQ drops the message for that
// subscriber. Close lingers at most 100 ms for queued messages.
// Security: after RequireKeys, the socket is a CurveZMQ server: only subscribers whose public key
// is in the authorised-keys file complete the handshake (refusals are counted in
// inferscope_sink_auth_failures_total{stage}); a subscriber without keys gets nothing.
// Concurrency: Bind/Close on the engine thread, Send on the sink thread.
class PubSocket {
 public:
  // Makes the next Bind a CurveZMQ server (when `curve` is enabled; otherwise nothing changes).
  // `metrics` may be null.
  void RequireKeys(CurveServerOptions curve, MetricsRegistry* metrics, const std::string& stage);
  // Binds `endpoint` (a wildcard port is resolved: see endpoint()). `what` names the sink in
  // errors ("zmq_pub", "zmq_alerts").
  Status Bind(const std::string& endpoint, int sndhwm, std::string_view what);
  // Sends one message. IOError when ZeroMQ fails.
  Status Send(zmq::const_buffer topic, zmq::const_buffer payload);
  void Close();

  bool bound() const { return socket_ != nullptr; }
  const std::string& endpoint() const { return endpoint_; }

 private:
  static constexpr int kLingerMs = 100;

  std::string what_;
  CurveServerOptions curve_;
  MetricsRegistry* metrics_ = nullptr;
  std::string stage_;
  std::unique_ptr<CurveServer> curve_server_;
  std::unique_ptr<zmq::context_t> context_;
  std::unique_ptr<zmq::socket_t> socket_;
  std::string endpoint_;
};

}  // namespace inferscope
