#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>

#include <zmq.hpp>

#include "clients/cpp/publisher.h"

namespace inferscope::client {

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
};

// AckedPublisher sends protocol-v1 messages in acknowledged mode (docs/PROTOCOL.md §9): the engine
// acknowledges a message only once a checkpoint holding its effect is durable, so a message is
// either acknowledged or still in this publisher's resend buffer — nothing is lost when the engine
// crashes or restarts, and the engine drops the resent messages it had applied (exactly-once
// effect).
//
// Lifecycle: Connect (DEALER connect + hello, which tells where to resume) → Request/Gauge
// (auto-flush at batch_size) → Flush → WaitAcked (optional: until everything is acknowledged) →
// Close. Acknowledgements are read, and timed-out messages resent, inside every call; a publisher
// that stops calling for longer than resend_timeout_ms should call Poll now and then.
// Concurrency: not thread-safe; one AckedPublisher per thread.
class AckedPublisher {
 public:
  explicit AckedPublisher(AckedPublisherOptions options);
  ~AckedPublisher();
  AckedPublisher(const AckedPublisher&) = delete;
  AckedPublisher& operator=(const AckedPublisher&) = delete;

  // Creates the socket, connects and says hello. Returns false with `*error` set when the socket
  // cannot be created; an engine that does not answer the hello is not an error (the publisher
  // starts at sequence 0 and resends until acknowledged).
  bool Connect(std::string* error = nullptr);

  // Adds an event; flushes when the batch is full. False when that flush reported back-pressure.
  bool Request(const RequestOutcome& r);
  bool Gauge(std::string_view instance, std::string_view model, std::string_view name, double value,
             int64_t time_ms = 0);
  // Sends the pending events as one message, keeping it until acknowledged. False on
  // back-pressure (resend buffer full for block_timeout_ms); the events then stay pending.
  bool Flush();
  // Reads acknowledgements and resends what timed out, waiting up to `timeout_ms` for input.
  void Poll(int timeout_ms = 0);
  // Flushes, then waits until every message is acknowledged. False on timeout.
  bool WaitAcked(int timeout_ms);
  void Close();

  uint64_t acked_seq() const { return acked_seq_; }  // highest acknowledged (valid if any_acked())
  bool any_acked() const { return any_acked_; }
  size_t unacked() const { return unacked_.size(); }
  uint64_t messages_sent() const { return messages_sent_; }
  uint64_t resends() const { return resends_; }
  uint64_t next_seq() const { return encoder_.next_seq(); }
  const std::string& last_error() const { return last_error_; }

 private:
  struct Message {
    uint64_t seq = 0;
    std::string payload;
  };
  void Send(const Message& m);
  void HandleAck(const zmq::message_t& payload);
  void ResendAll();

  AckedPublisherOptions options_;
  BatchEncoder encoder_;
  std::unique_ptr<zmq::context_t> context_;
  std::unique_ptr<zmq::socket_t> socket_;
  std::deque<Message> unacked_;
  std::chrono::steady_clock::time_point last_progress_;
  std::chrono::steady_clock::time_point last_go_back_;
  uint64_t acked_seq_ = 0;
  bool any_acked_ = false;
  bool hello_answered_ = false;
  uint64_t messages_sent_ = 0;
  uint64_t resends_ = 0;
  std::string last_error_;
};

}  // namespace inferscope::client
