#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include <zmq.hpp>

#include "auth/curve.h"
#include "pipeline/metrics.h"
#include "pipeline/status.h"
#include "pipeline/string_hash.h"
#include "sources/wire_decoder.h"

namespace inferscope {

// IngestAuth is the CurveZMQ side of a bound zmq source: it runs the ZAP handler that admits the
// clients listed in the authorised-keys file (CurveServer) and decides, message by message, which
// publisher ids the sender may use: the ZAP handler gives each connection the User-Id of its
// client key, and every message carries that User-Id as a property.
//
// Metrics (besides the decoder's
// inferscope_source_rejected_total{reason="unauthorized_publisher"}):
//   inferscope_source_auth_failures_total{stage}                  handshakes refused (unknown key)
//   inferscope_source_unauthorized_total{stage,publisher}         messages (and hellos) refused,
//       by claimed publisher id; the first kMaxClaimedLabels ids get a label each, the rest
//       publisher="_other", so an attacker cannot grow the label set.
// Lifecycle: Start (before the socket binds) → Configure(socket) → Authorize per message → Stop.
// Concurrency: Start/Configure/Stop on the engine thread, Authorize and MayPublishAs on the source
// thread.
class IngestAuth final : public PublisherAuthorizer {
 public:
  static constexpr size_t kMaxClaimedLabels = 64;

  // `options` must be enabled and valid. `metrics` may be null.
  IngestAuth(CurveServerOptions options, const std::string& stage, MetricsRegistry* metrics);
  ~IngestAuth() override;

  Status Start(zmq::context_t& context) { return server_.Start(context); }
  void Configure(zmq::socket_t& socket) const { server_.Configure(socket); }
  void Stop() { server_.Stop(); }

  // Makes the sender of `message` (a frame of a received message) the one MayPublishAs judges,
  // and returns this authorizer for WireDecoder::Decode.
  PublisherAuthorizer* Authorize(const zmq::message_t& message);
  // True when the current sender's key lists a glob matching `publisher`; otherwise counts the
  // refusal.
  bool MayPublishAs(std::string_view publisher) const override;

  // The Z85 key of the current sender ("" when it has none).
  std::string_view sender_key() const;
  const CurveServer& server() const { return server_; }

 private:
  Counter* ClaimedCounter(std::string_view publisher) const;

  CurveServer server_;
  const std::string stage_;
  MetricsRegistry* const metrics_;
  mutable MetricsRegistry own_metrics_;
  const AuthorizedKeys::Entry* sender_ = nullptr;
  mutable std::unordered_map<std::string, Counter*, StringHash, std::equal_to<>> claimed_;
  mutable Counter* claimed_other_ = nullptr;
};

}  // namespace inferscope
