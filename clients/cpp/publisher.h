#pragma once

// The C++ publisher client of inferscope's wire protocol v1 (docs/PROTOCOL.md). It depends only on
// libzmq, cppzmq and msgpack-c, not on the engine.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "clients/cpp/curve.h"

namespace zmq {
class context_t;
class socket_t;
}  // namespace zmq

namespace inferscope::client {

// The outcome of one inference request. Strings are only read during the call that takes it.
struct RequestOutcome {
  std::string_view instance;  // required, 1..255 bytes
  std::string_view model;     // required, 1..255 bytes
  // End-to-end latency; unset = not known yet (e.g. a gateway reporting at first-token time):
  // the request still counts and feeds ttft, and is absent from e2e windows.
  std::optional<double> e2e_ms;
  std::optional<double> ttft_ms;  // time to first token
  std::optional<double> tpot_ms;  // time per output token
  std::optional<uint32_t> prompt_tokens;
  std::optional<uint32_t> output_tokens;
  std::optional<uint32_t> cached_tokens;  // prompt tokens served from the prefix cache
  // "" = success; "timeout", "rate_limited", "server_error", "client_error", "cancelled" or any
  // other string (counted as "other").
  std::string_view error;
  std::optional<double> cost_usd;  // >= 0
  std::optional<double> quality;   // in [0, 1]
  int64_t time_ms = 0;             // event time, ms since the Unix epoch; 0 = now
};

// Milliseconds since the Unix epoch (system clock).
int64_t NowMs();

// BatchEncoder builds protocol-v1 payloads: one msgpack map {"v":1, "pub", "seq", "events":[...]}.
//
// Events are packed straight into one reused buffer behind a fixed-size header whose sequence
// number and event count are patched in by Finish(), so encoding copies nothing twice and, once
// the buffer has grown, allocates nothing.
// Concurrency: not thread-safe.
class BatchEncoder {
 public:
  // `publisher_id`: 1..255 bytes, unique per publishing process. `first_seq`: the sequence number
  // of the first payload (publishers start at 0).
  explicit BatchEncoder(std::string publisher_id, uint64_t first_seq = 0);
  ~BatchEncoder();
  BatchEncoder(const BatchEncoder&) = delete;
  BatchEncoder& operator=(const BatchEncoder&) = delete;

  void AddRequest(const RequestOutcome& r);
  // `time_ms` 0 = now.
  void AddGauge(std::string_view instance, std::string_view model, std::string_view name,
                double value, int64_t time_ms = 0);

  // Events in the current batch (0 once it is finished).
  size_t size() const { return finished_ ? 0 : count_; }
  // Completes the batch with the next sequence number and returns the payload. The view stays valid
  // until the next Add*/Reset/Finish; the next Add* starts a new batch.
  std::string_view Finish();
  // Drops the current batch (its sequence number is not used).
  void Reset();

  uint64_t next_seq() const { return next_seq_; }
  // The sequence number the next Finish() uses (a publisher resuming where the engine expects).
  void set_next_seq(uint64_t seq) { next_seq_ = seq; }
  // Acknowledged mode: every payload carries "inc" (the publisher incarnation), written by Finish.
  // Call before the first Add*; the value may change at any time.
  void enable_incarnation(uint64_t incarnation) {
    with_incarnation_ = true;
    incarnation_ = incarnation;
  }
  void set_incarnation(uint64_t incarnation) { incarnation_ = incarnation; }
  uint64_t incarnation() const { return incarnation_; }
  const std::string& publisher_id() const { return publisher_id_; }
  // The payload bytes of the current batch so far (header included).
  size_t bytes() const;
  // Removes the event added last (the batch must hold one), e.g. because it made the payload too
  // large.
  void DropLast();
  // Where Finish writes the sequence number and the incarnation (8 bytes big-endian each) in every
  // payload of this encoder, so that a stored payload can be renumbered. inc_offset is 0 without
  // incarnations.
  size_t seq_offset() const { return seq_offset_; }
  size_t inc_offset() const { return inc_offset_; }

 private:
  class Buffer;
  void StartIfNeeded();

  std::string publisher_id_;
  uint64_t next_seq_;
  std::unique_ptr<Buffer> buffer_;
  size_t header_size_ = 0;
  size_t seq_offset_ = 0;    // where the 8 bytes of the sequence number go
  size_t count_offset_ = 0;  // where the 4 bytes of the event count go
  size_t inc_offset_ = 0;    // where the 8 bytes of the incarnation go (0: none)
  bool with_incarnation_ = false;
  uint64_t incarnation_ = 0;
  size_t last_event_at_ = 0;  // where the event added last starts
  size_t count_ = 0;
  bool finished_ = true;  // the buffer holds a finished payload (or nothing yet)
};

struct PublisherOptions {
  enum class SocketType { kPush, kPub };

  std::string endpoint;      // required, e.g. "tcp://127.0.0.1:5555"
  std::string publisher_id;  // required, 1..255 bytes, unique per process
  // kPush connects to a bound PULL source (default); kPub connects by default, or binds with
  // `bind`, for SUB sources.
  SocketType socket = SocketType::kPush;
  bool bind = false;
  std::string topic = "metrics";  // first frame; SUB sources filter on its prefix
  size_t batch_size = 256;        // events per message; Request/Gauge flush when reached
  int sndhwm = 1000;              // ZMQ_SNDHWM in messages
  // How long a send may block (PUSH with no peer or a full queue); -1 = forever. The batch is
  // dropped (and counted) when it expires.
  int send_timeout_ms = 5000;
  int linger_ms = 2000;  // how long Close() waits for unsent messages
  // ZMQ_IMMEDIATE for kPush: queue messages only on a completed connection. Without it a message
  // sent while no engine listens waits in the connection's queue and Close() discards it unsaid
  // after linger_ms; with it the send blocks up to send_timeout_ms and is then dropped and counted
  // (events_dropped). For a sender that must know, such as `inferscope replay`.
  bool immediate = false;
  // CurveZMQ keys, for an engine source that requires them (connecting sockets only).
  CurveClientKeys curve;
};

// A new publisher incarnation (docs/PROTOCOL.md §4, §9): (ms since the epoch) << 22 | 22 random
// bits, and above `above`. Greater than the incarnations this publisher id used before as long as
// the wall clock does not go back; made greater than the one the engine reports otherwise.
uint64_t NewIncarnation(uint64_t above = 0);

// Publisher batches events and sends them as protocol-v1 messages [topic, payload].
//
// Every Publisher is a new incarnation of its publisher id (NewIncarnation, sent as "inc" in
// every message): a process restarted with the same id starts again at seq 0 and the engine takes
// it for a restart. Without "inc" the engine took the new run's first 1,024 messages for
// duplicates of the old run's and dropped them.
//
// Lifecycle: Connect → Request/Gauge (auto-flush at batch_size) → Flush → Close (also in the
// destructor; it flushes). Fire-and-forget: a message is "sent" once ZeroMQ has queued it; a
// process that exits right after sending may lose its tail (libzmq), so keep the socket open or
// close with linger.
// Concurrency: not thread-safe; one Publisher per thread.
class Publisher {
 public:
  explicit Publisher(PublisherOptions options);
  ~Publisher();
  Publisher(const Publisher&) = delete;
  Publisher& operator=(const Publisher&) = delete;

  // Creates the socket and connects (or binds). Returns false with `*error` set on failure.
  bool Connect(std::string* error = nullptr);
  // The bound endpoint with a wildcard port resolved ("tcp://127.0.0.1:40123"); empty if not bound.
  std::string Endpoint() const { return endpoint_; }

  // Adds an event; flushes when the batch is full. False when that flush failed (see last_error).
  bool Request(const RequestOutcome& r);
  bool Gauge(std::string_view instance, std::string_view model, std::string_view name, double value,
             int64_t time_ms = 0);
  // Sends the pending events, if any. False when the send failed or timed out (the batch is then
  // dropped and counted in events_dropped).
  bool Flush();
  // Flushes and closes the socket, waiting up to linger_ms for queued messages.
  void Close();

  uint64_t messages_sent() const { return messages_sent_; }
  uint64_t events_sent() const { return events_sent_; }
  uint64_t events_dropped() const { return events_dropped_; }
  uint64_t incarnation() const { return encoder_.incarnation(); }
  const std::string& last_error() const { return last_error_; }

 private:
  PublisherOptions options_;
  BatchEncoder encoder_;
  std::unique_ptr<zmq::context_t> context_;
  std::unique_ptr<zmq::socket_t> socket_;
  std::string endpoint_;
  uint64_t messages_sent_ = 0;
  uint64_t events_sent_ = 0;
  uint64_t events_dropped_ = 0;
  std::string last_error_;
};

}  // namespace inferscope::client
