#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <zmq.hpp>

#include "clients/cpp/publisher.h"
#include "clients/cpp/spool.h"

namespace inferscope::client {

// A message the engine refused for good (docs/PROTOCOL.md §9, the nack message).
struct Rejection {
  uint64_t incarnation = 0;
  uint64_t seq = 0;
  uint32_t events = 0;  // events in the refused message
  std::string reason;   // e.g. "batch_too_large", "message_too_large", "stale_incarnation"
};

struct AckedPublisherOptions {
  std::string endpoint;      // required: the engine's `mode: router` source, e.g. tcp://host:5558
  std::string publisher_id;  // required, 1..255 bytes, stable across restarts of this publisher
  std::string topic = "metrics";  // first frame of every message
  size_t batch_size = 256;        // events per message; Request/Gauge flush when reached
  // Messages kept until acknowledged (the resend buffer). When it is full, Flush waits up to
  // block_timeout_ms for acknowledgements, then reports back-pressure (the events stay pending).
  size_t max_unacked = 4096;
  int block_timeout_ms = -1;  // -1 = wait as long as it takes
  // Without acknowledgement progress for this long, everything unacknowledged is sent again
  // (oldest first). Must exceed the engine's checkpoint interval (default 1 s).
  int resend_timeout_ms = 3000;
  int hello_timeout_ms = 2000;  // how long Connect waits for the engine's answer to its hello
  int sndhwm = 100000;          // ZMQ_SNDHWM in messages
  int linger_ms = 0;            // unacknowledged messages are resent, so nothing needs lingering
  // CurveZMQ keys, for an engine source that requires them.
  CurveClientKeys curve;
  // The engine's limits (its source options of the same names; these are the engine's defaults).
  // A message is never built over them: batch_size must not exceed max_events_per_message, and a
  // batch is sent early when the next event would make it larger than max_message_bytes.
  size_t max_events_per_message = 65536;
  size_t max_message_bytes = size_t{16} << 20;
  // Optional spool file (one per publisher process; see Spool): the incarnation, the next sequence
  // number and every unacknowledged message are written to it before they are sent, and Connect
  // resends what it holds, so a process that is killed and restarted with the same spool loses
  // nothing and duplicates nothing. Empty: no spool (a restart then begins a new incarnation, and
  // the messages the dead process had not seen acknowledged are lost unless the engine applied
  // them).
  std::string spool_path;
  bool spool_sync = false;  // fdatasync every spool record (survives an OS crash too)
  // Called for each message the engine refused for good (from inside the call that read the
  // nack). May be empty; rejected_messages() counts them anyway.
  std::function<void(const Rejection&)> on_rejected;
};

// AckedPublisher sends protocol-v1 messages in acknowledged mode (docs/PROTOCOL.md §9): the engine
// acknowledges a message only once a checkpoint holding its effect is durable, so a message is
// either acknowledged or still in this publisher's resend buffer — nothing is lost when the engine
// crashes or restarts, and the engine drops the resent messages it had applied (exactly-once
// effect).
//
// Incarnations: every message carries the publisher's incarnation ("inc"), chosen when the
// publisher starts (the wall clock in ms << 22 plus 22 random bits, above any the engine reports)
// or restored from the spool; sequence numbers start at 0 in each incarnation, so a restarted
// process never reuses an earlier process's numbers.
// Rejections: a message the engine refuses for good (a nack) is reported through on_rejected and
// rejected_messages() and is not resent.
//
// Lifecycle: Connect (spool, DEALER connect + hello) → Request/Gauge (auto-flush at batch_size) →
// Flush → WaitAcked (optional: until everything is acknowledged) → Close. Acknowledgements are
// read, and timed-out messages resent, inside every call; a publisher that stops calling for
// longer than resend_timeout_ms should call Poll now and then.
// Concurrency: not thread-safe; one AckedPublisher per thread.
class AckedPublisher {
 public:
  explicit AckedPublisher(AckedPublisherOptions options);
  ~AckedPublisher();
  AckedPublisher(const AckedPublisher&) = delete;
  AckedPublisher& operator=(const AckedPublisher&) = delete;

  // Validates the options, opens the spool (resending what it holds), creates the socket,
  // connects and says hello. Returns false with `*error` set when the options are invalid or the
  // spool or socket cannot be set up; an engine that does not answer the hello is not an error
  // (the publisher sends anyway and resends until acknowledged).
  bool Connect(std::string* error = nullptr);

  // Adds an event; flushes when the batch is full. False when that flush reported back-pressure
  // or a spool error, or the event alone is larger than max_message_bytes (it is then dropped).
  bool Request(const RequestOutcome& r);
  bool Gauge(std::string_view instance, std::string_view model, std::string_view name, double value,
             int64_t time_ms = 0);
  // Sends the pending events as one message, keeping it until acknowledged. False on
  // back-pressure (resend buffer full for block_timeout_ms; the events then stay pending) or when
  // the message could not be written to the spool (it is kept and sent once it can be).
  bool Flush();
  // Reads acknowledgements and resends what timed out, waiting up to `timeout_ms` for input.
  void Poll(int timeout_ms = 0);
  // Flushes, then waits until every message is acknowledged (or refused). False on timeout.
  bool WaitAcked(int timeout_ms);
  void Close();

  uint64_t incarnation() const { return incarnation_; }
  uint64_t acked_seq() const { return acked_seq_; }  // highest acknowledged (valid if any_acked())
  bool any_acked() const { return any_acked_; }
  size_t unacked() const { return unacked_.size(); }
  uint64_t messages_sent() const { return messages_sent_; }
  uint64_t resends() const { return resends_; }
  uint64_t next_seq() const { return encoder_.next_seq(); }
  bool hello_answered() const { return hello_answered_; }
  uint64_t rejected_messages() const { return rejected_messages_; }
  uint64_t rejected_events() const { return rejected_events_; }
  // Messages restored from the spool by Connect (resent to the engine).
  size_t restored_from_spool() const { return restored_; }
  const std::string& last_error() const { return last_error_; }

 private:
  struct Message {
    uint64_t seq = 0;
    uint32_t events = 0;
    bool rejected = false;  // refused for good (reported); kept until an ack covers it
    bool spooled = true;    // written to the spool (only spooled messages are sent)
    std::string payload;
  };
  // Adds one event through `add` (a callable) and flushes when the batch is full.
  template <typename AddFn>
  bool Add(AddFn add);
  void Send(const Message& m);
  void HandleAck(const zmq::message_t& payload);
  void HandleNack(const zmq::message_t& payload);
  void ResendAll();
  void SendHello();
  void Reject(Message& m, const std::string& reason);
  // Begins a new incarnation above `above` and renumbers the buffered messages from 0 (allowed
  // only while nothing of the current incarnation was acknowledged: then the engine applied none
  // of them, since it refused them as stale).
  void Reincarnate(uint64_t above);
  bool SpoolPending();
  void MaybeCompactSpool();
  Spool::State SpoolState() const;

  AckedPublisherOptions options_;
  BatchEncoder encoder_;
  std::unique_ptr<zmq::context_t> context_;
  std::unique_ptr<zmq::socket_t> socket_;
  Spool spool_;
  std::deque<Message> unacked_;
  std::chrono::steady_clock::time_point last_progress_;
  std::chrono::steady_clock::time_point last_go_back_;
  uint64_t incarnation_ = 0;
  uint64_t acked_seq_ = 0;
  bool any_acked_ = false;
  bool hello_answered_ = false;
  uint64_t messages_sent_ = 0;
  uint64_t resends_ = 0;
  uint64_t rejected_messages_ = 0;
  uint64_t rejected_events_ = 0;
  size_t restored_ = 0;
  std::string last_error_;
};

}  // namespace inferscope::client
