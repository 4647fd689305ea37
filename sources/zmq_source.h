#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "pipeline/config.h"
#include "pipeline/source.h"
#include "pipeline/status.h"
#include "sources/ack_messages.h"
#include "sources/ingest_auth.h"
#include "sources/wire_decoder.h"

namespace inferscope {

// ZmqSource receives protocol-v1 metric batches (docs/PROTOCOL.md) on a ZeroMQ PULL or SUB socket
// and emits decoded EventBatches.
//
// Lifecycle: Open creates the socket and binds or connects (Endpoint() then reports the bound
// address with a wildcard port resolved); Run drains every message available without blocking into
// the current batch, emits it when it holds >= batch_events events or, once the socket has nothing
// more, batch_delay later if it holds under batch_events / 8 (small messages are coalesced: one
// hand-off per delay), and polls only once the socket is drained, so a loaded source makes no poll
// system call per batch. The poll has no timeout (an idle source does not wake up): an eventfd
// wakes it, written by Interrupt (after `stop` is set: whoever stops Run calls Interrupt) and, in
// router mode, by OnCheckpointDurable for the acks. Close closes the socket (linger 0). Delivery:
// with on_full=block a full engine queue back-pressures the socket (ZeroMQ then queues up to rcvhwm
// messages, after which PUSH publishers block); with on_full=shed the batch is dropped and its
// events counted in inferscope_source_shed_events_total{stage,publisher}. Acknowledged mode
// (`mode: router`): publishers connect DEALER sockets and send sequenced messages; the source
// applies a publisher's messages strictly in sequence order (a message ahead of the expected one is
// not applied: the publisher resends from its oldest unacknowledged one), drops the ones it applied
// already, and sends `ack` messages back once a checkpoint holding their effect is durable
// (OnCheckpointDurable). Sequence numbers are per publisher incarnation ("inc": a new incarnation
// starts again at 0); a message refused for good gets a `nack` with the reason. A `hello` message
// returns the last durable sequence number and the next expected one of the hello's incarnation,
// and the publisher's current incarnation. The applied positions are part of every checkpoint and
// restored on start (Restore), in every mode. Robustness: any input is decoded or rejected with a
// reason (see WireDecoder); nothing crashes. Security (docs/PROTOCOL.md, "Security"): with `curve`,
// a bound source is a CurveZMQ server that admits only the client keys of its authorised-keys file,
// and a message or hello whose publisher id the sender's key may not use is rejected
// (unauthorized_publisher) before it touches that publisher's sequence state. Without it, Open
// warns that ingest is unauthenticated. Bounded state: at most `max_publishers` publisher ids
// (decoder option) get state — sequence position, counters, routing id, pinned name; a message or
// hello from a new id beyond that is rejected (publisher_limit) before anything is kept for it, and
// a message is answered with a nack (router mode). Known publishers are never forgotten
// (exactly-once needs their positions: docs/PROTOCOL.md §9). Concurrency: Open/Close/Restore on the
// engine thread, Run on the source's own thread, OnCheckpointDurable on a sink thread (it hands the
// acks over under a mutex).
class ZmqSource final : public Source {
 public:
  static constexpr std::string_view kName = "zmq";
  static constexpr std::string_view kDescription =
      "Receives msgpack metric batches (wire protocol v1) on a ZeroMQ PULL or SUB socket";

  enum class Mode { kPull, kSub, kRouter };
  enum class OnFull { kBlock, kShed };
  // A frame larger than the decoder's max_message_bytes by more than this closes its connection
  // in libzmq (ZMQ_MAXMSGSIZE), before it is held in memory whole.
  static constexpr size_t kFrameSlackBytes = size_t{1} << 20;

  struct Options {
    // Required. "tcp://127.0.0.1:5555"; "tcp://127.0.0.1:*" binds an ephemeral port.
    std::string endpoint;
    // kPull binds by default, kSub connects by default.
    Mode mode = Mode::kPull;
    // Overrides the mode's default of binding or connecting when set.
    std::optional<bool> bind;
    // SUB only: topic prefixes to subscribe to. Default: everything.
    std::vector<std::string> topics = {""};
    // ZMQ_RCVHWM in messages. Default 1000; >= 0 (0 = unlimited).
    int rcvhwm = 1000;
    OnFull on_full = OnFull::kBlock;
    // Emit the current batch once it holds this many events. Default 1024; >= 1.
    size_t batch_events = 1024;
    // Coalescing of small messages: once the socket is drained, a batch holding fewer than
    // batch_events / 8 events waits until this long after it started waiting (the source thread
    // sleeps, then drains again) before it goes to the operators, so a fleet of small messages
    // costs one hand-off and one wake-up per delay instead of one per message. 0: emit at once.
    // Default 10 ms; 0..1000.
    int64_t batch_delay_ms = 10;
    WireDecoderOptions decoder;
    // CurveZMQ server keys and the authorised client keys (default: off). Requires binds().
    CurveServerOptions curve;

    bool binds() const { return bind.has_value() ? *bind : mode != Mode::kSub; }
    Status Validate() const;
  };

  // From a topology's `options` mapping: endpoint, mode, bind, topics, rcvhwm, on_full,
  // batch_events, batch_delay, max_future_skew, max_past, max_events_per_message, max_string_bytes,
  // max_message_bytes, max_publishers, max_strings_per_publisher, curve
  // ({server_secret_key_file, authorized_keys_file}).
  static Result<std::unique_ptr<ZmqSource>> Create(const ConfigNode& options);

  // `options` must be valid (Create validates; tests may construct directly).
  explicit ZmqSource(Options options);
  ~ZmqSource() override;

  Status Open(const StageContext& ctx) override;
  Status Run(SourceOutput& out, const std::atomic<bool>& stop) override;
  void Close() override;
  // Wakes Run's poll so that it sees `stop` (any thread; after Open, before Close).
  void Interrupt() override;
  std::string Endpoint() const override { return endpoint_; }
  Status Restore(const CheckpointReader& reader) override;
  void OnCheckpointDurable(const std::vector<AppliedSequence>& applied) override;

  // Acknowledged mode without a socket, for harnesses that drive the protocol at thousands of
  // messages per second (fuzz/targets/ack_fuzzer.cc). A detached source keeps the same state and
  // makes the same decisions as an opened one; its replies go to a ReplySink instead of the ROUTER
  // socket.
  class ReplySink {
   public:
    virtual ~ReplySink() = default;
    // One reply to the peer with routing id `peer`: `kind` is "ack" or "nack", `payload` its body.
    virtual void OnReply(std::string_view peer, std::string_view kind,
                         std::string_view payload) = 0;
  };
  // Instead of Open (mode router, no curve): everything but the socket. `replies` must outlive
  // the source. Run must not be called; use Deliver and FlushAcks on one thread instead.
  Status OpenDetached(const StageContext& ctx, ReplySink& replies);
  // Handles one message as received by the ROUTER socket: `frames` is the sender's routing id and
  // then the message's frames (a message has 2: topic, payload). Accepted events go to `batch`.
  void Deliver(std::span<const std::string_view> frames, EventBatch& batch);
  // Sends the acks handed over by OnCheckpointDurable, as Run does between batches.
  void FlushAcks();

  // The decoder (valid after Open), for tests and diagnostics. Read it only while Run is not
  // running, or read its metrics instead.
  const WireDecoder* decoder() const { return decoder_.get(); }

 private:
  // Receives one multipart message if one is waiting and decodes it into `batch`. Returns false
  // when nothing was waiting.
  bool ReceiveOne(EventBatch& batch);
  // Open without the socket: validation, metrics, decoder.
  Status OpenState(const StageContext& ctx);
  // Handles one received message (peer: the sender's routing id in router mode).
  void HandleMessage(std::string_view peer, std::string_view topic, std::string_view payload,
                     EventBatch& batch);
  // Acknowledged mode: answers a hello; answers a message that was not applied (a nack when it is
  // refused for good, an ack saying where to resume when it was a duplicate or ahead); sends the
  // acks handed over by OnCheckpointDurable.
  void AnswerHello(std::string_view payload);
  void RespondToMessage(const DecodeResult& result);
  void SendAcks();
  // An ack about `incarnation` of `publisher` (its durable and next sequence numbers) to `peer`.
  void SendAck(StringId publisher, uint64_t incarnation, std::string_view peer);
  // A nack to the sender of the message being handled.
  void SendNack(StringId publisher, uint64_t incarnation, uint64_t seq, std::string_view reason,
                bool consumed);
  void SendNackTo(const NackMessage& nack);
  void SendControl(std::string_view peer, std::string_view kind, const std::string& payload);
  void Shed(const EventBatch& batch);
  // Writes the eventfd Run polls.
  void Wake();
  void LogRejection(const DecodeResult& result);

  const Options options_;
  StageContext ctx_;
  std::unique_ptr<zmq::context_t> context_;
  std::unique_ptr<zmq::socket_t> socket_;
  std::string endpoint_;
  std::unique_ptr<WireDecoder> decoder_;
  std::unique_ptr<IngestAuth> auth_;       // with options_.curve
  PublisherAuthorizer* sender_ = nullptr;  // the current message's sender (null without curve)
  zmq::message_t topic_;
  zmq::message_t payload_;
  zmq::message_t extra_;
  zmq::message_t identity_;       // router mode: the sending peer's routing id
  std::string_view peer_;         // the routing id of the message being handled
  ReplySink* replies_ = nullptr;  // OpenDetached: replies go here instead of the socket
  // Router mode (source thread): each publisher's routing id and last durable position.
  std::unordered_map<StringId, std::string> peers_;
  std::unordered_map<StringId, AppliedSequence> durable_;
  std::unordered_map<StringId, int64_t> last_nack_ns_;
  // Acks handed over by OnCheckpointDurable.
  std::mutex ack_mu_;
  std::vector<AppliedSequence> ack_pending_;
  std::atomic<bool> ack_ready_{false};
  // An eventfd polled with the socket, written by Interrupt and when acks are handed over (-1:
  // none, before Open).
  int wake_fd_ = -1;
  Counter* acks_sent_ = nullptr;
  Counter* hellos_ = nullptr;
  Counter* nacks_sent_ = nullptr;
  std::unordered_map<StringId, Counter*> shed_by_publisher_;
  int64_t last_log_ns_ = 0;
  uint64_t suppressed_logs_ = 0;
};

}  // namespace inferscope
