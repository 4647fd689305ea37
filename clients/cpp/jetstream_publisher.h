#pragma once

// Publishing protocol-v1 payloads into a NATS JetStream stream (docs/PROTOCOL.md, "JetStream"),
// for the engine's `jetstream` source. Built only with INFERSCOPE_JETSTREAM (it needs libnats);
// link inferscope_client_jetstream.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "clients/cpp/publisher.h"

typedef struct __natsConnection natsConnection;
typedef struct __jsCtx jsCtx;
typedef struct __natsStatistics natsStatistics;

namespace inferscope::client {

// The partition of `instance` among `partitions`: FNV-1a (32 bits) of its bytes modulo
// `partitions` — the same function as the engine's (sources/partition.h).
uint32_t JetStreamPartition(std::string_view instance, uint32_t partitions);

struct JetStreamPublisherOptions {
  // A server, or a comma-separated list of the servers of one cluster: the publisher connects to
  // one that answers and, when the connection is lost, reconnects to any of them (and to servers
  // the cluster announces), without limit, 250 ms apart per server.
  std::string url = "nats://127.0.0.1:4222";
  std::string stream;                            // required
  std::string subject_prefix = "inferscope.in";  // partition p is "<subject_prefix>.<p>"
  uint32_t partitions = 1;                       // >= 1: the stream's partition count
  // Required, 1..250 bytes. Each partition's messages carry publisher id "<publisher_id>/p<p>", so
  // that each (publisher, partition) is one ordered sequence (the engine's sequence tracking and
  // watermarks are per publisher id).
  std::string publisher_id;
  size_t batch_size = 256;       // events per message and partition
  int64_t max_in_flight = 1024;  // messages published and not yet acknowledged by the stream
  // How long one publish waits for the stream's acknowledgement before it is resent (or, without
  // resends, counted failed). Default 10 s.
  int64_t ack_timeout_ms = 10'000;
  // A publish the stream refuses (while it has no leader, during an election) or does not
  // acknowledge within ack_timeout_ms is resent with the same Nats-Msg-Id, after a backoff (100 ms
  // doubling to 2 s), until this long after it was first published; only then is it counted in
  // failed_messages. 0: never resent. Default 30 s. Keep it below the stream's duplicate window
  // (JetStream's default is 2 minutes) minus ack_timeout_ms: a resend of a message that was stored
  // after all (its acknowledgement lost) is then dropped by the stream as a duplicate.
  int64_t resend_deadline_ms = 30'000;
};

// JetStreamPublisher batches events per partition (the partition chosen from each event's instance)
// and publishes each batch as one message with acknowledged, asynchronous JetStream publishes, at
// most max_in_flight unacknowledged (a publish beyond it waits). Every message carries a
// Nats-Msg-Id "<publisher id>/p<p>:<start ns>:<seq>" (the start time of this object: a restarted
// process numbering from 0 again is not taken for duplicates), so the stream drops a message
// published twice within its duplicate window.
//
// Resends: the publisher keeps a copy of each message until the stream acknowledges it (at most
// max_in_flight). A message refused for a reason that can clear (no responders, JetStream errors
// 10008 "temporarily unavailable", 10009 "not leader", 10041 raft: a stream without leader during
// an election; other refusals, such as a full stream, fail the message at once) or not acknowledged
// within ack_timeout_ms (its acknowledgement lost with a dying server), and every message in flight
// when the connection was lost, is resent with the same Nats-Msg-Id until resend_deadline_ms after
// its first publish, so each is stored exactly once. Order within a partition is kept: while a
// partition has such a message, that partition publishes nothing new; it resends its oldest
// unacknowledged message (with backoff) until the stream takes it, then the others in their order,
// then goes on. Limitation: a message whose acknowledgement is lost while the connection stays up
// is known to be in doubt only after ack_timeout_ms; if the stream stored newer messages of its
// partition in between (a new leader elected before the publisher saw any refusal), its resend is
// stored after them. The engine applies it then, once (the gap it left counted it missing:
// docs/PROTOCOL.md §4, inferscope_source_late_messages_total); its events are late events for the
// windows.
//
// Lifecycle: Connect → Request/Gauge (a partition's batch is published at batch_size) → Flush
// (publishes what is pending and waits until every message is acknowledged or given up) →
// destructor (flushes). Errors: a message still not stored resend_deadline_ms after its first
// publish is dropped, counted in failed_messages and reported by the next Flush. Outcomes are
// taken and resends made inside the calls (Request, Gauge, PublishRaw, Flush, Poll): a publisher
// idle for a while calls Poll now and then.
// Concurrency: not thread-safe (libnats' acknowledgement callbacks only queue results).
class JetStreamPublisher {
 public:
  explicit JetStreamPublisher(JetStreamPublisherOptions options);
  ~JetStreamPublisher();
  JetStreamPublisher(const JetStreamPublisher&) = delete;
  JetStreamPublisher& operator=(const JetStreamPublisher&) = delete;

  // Connects and checks the stream exists and, with resends, that its duplicate window is at
  // least resend_deadline_ms + ack_timeout_ms. False with last_error() on failure.
  bool Connect();
  // Adds an event to its partition's batch; false when a publish failed (see last_error).
  bool Request(const RequestOutcome& r);
  bool Gauge(std::string_view instance, std::string_view model, std::string_view name, double value,
             int64_t time_ms = 0);
  // Publishes one ready payload (already protocol-v1, e.g. received by `inferscope bridge`) to
  // partition `partition`, with `msg_id` as its Nats-Msg-Id (empty: one of this publisher's own,
  // "<publisher_id>:<start ns>:r<n>", so that its resends are recognised). Waits while
  // max_in_flight messages are unacknowledged, and while the partition resends (see the class
  // comment); false when that wait outlasts resend_deadline_ms + ack_timeout_ms (the message is
  // then not published and counted failed).
  bool PublishRaw(uint32_t partition, std::string_view payload, std::string_view msg_id);
  // Publishes the pending batches and waits until every message is acknowledged or given up
  // (resend_deadline_ms after its first publish). False when any message was given up since the
  // last Flush.
  bool Flush();
  // Takes the stream's acknowledgements and refusals and resends what is due, without waiting.
  // Publishes and Flush do this too; a publisher idle for a while calls Poll now and then, so that
  // its resends go on and failures are counted.
  void Poll() { Pump(0); }

  uint64_t messages_published() const { return messages_published_; }
  uint64_t events_published() const { return events_published_; }
  // Messages given up: not acknowledged by resend_deadline_ms after their first publish.
  uint64_t failed_messages() const { return failed_; }
  // Publishes made again (same Nats-Msg-Id) after a refusal, a timeout or a lost connection.
  uint64_t resent_messages() const { return resent_; }
  const std::string& last_error() const { return last_error_; }

  // Creates `stream` (file storage, limits retention, subjects "<subject_prefix>.*", `replicas`
  // copies: 3 on a 3-server cluster, JetStream's default duplicate window of 2 minutes) at `url`
  // unless it exists. False with `*error` set on failure, and when the stream exists with another
  // number of replicas (it is not changed).
  static bool EnsureStream(const std::string& url, const std::string& stream,
                           const std::string& subject_prefix, std::string* error, int replicas = 1);

 private:
  // A published message kept until the stream acknowledges it.
  struct InFlight {
    uint32_t partition = 0;
    std::string msg_id;
    std::string payload;
    int64_t first_ns = 0;  // steady clock: its first publish
    int outstanding = 0;   // publishes of it whose outcome has not come back
    uint64_t epoch = 0;    // reconnections seen when it was last published
    bool done = false;     // acknowledged, or given up
    bool acked = false;
  };
  struct PartitionState {
    std::deque<std::unique_ptr<InFlight>> in_flight;  // publish order
    // Resending (see the class comment): while `probing`, the oldest unacknowledged message is
    // resent alone (with backoff) until the stream takes it; then the others are resent once, in
    // order (draining), and once all are acknowledged the partition publishes new messages again.
    bool recovering = false;
    bool probing = false;
    bool drained = false;             // not probing: the others were resent
    const InFlight* probe = nullptr;  // the message last resent as the probe
    int64_t next_attempt_ns = 0;
    int64_t backoff_ms = 0;
  };
  // What libnats' acknowledgement callback reports of one publish.
  struct Outcome {
    std::string msg_id;
    bool ok = false;
    // A refusal that can clear (a timeout, no responders, no stream leader): resent. Any other
    // refusal (the stream full, the message too large) fails the message at once.
    bool transient = true;
    std::string error;
  };
  friend struct JetStreamPublisherAccess;

  bool FlushPartition(uint32_t p);
  // Takes the queued outcomes (first waiting up to `wait_ms` for one), notices a reconnection,
  // gives up messages past their deadline and advances each recovering partition's resends.
  void Pump(int64_t wait_ms);
  // Publishes `m` (again); a publish libnats refuses at once starts its partition's recovery.
  void Send(InFlight& m);
  void StartRecovery(PartitionState& ps);
  bool Connected() const;

  JetStreamPublisherOptions options_;
  std::vector<std::unique_ptr<BatchEncoder>> encoders_;  // one per partition
  std::vector<std::string> subjects_;
  std::vector<PartitionState> states_;                     // one per partition
  std::unordered_map<std::string_view, InFlight*> by_id_;  // not done, by Nats-Msg-Id
  size_t entries_ = 0;  // messages kept (all partitions' in_flight): at most max_in_flight
  natsConnection* conn_ = nullptr;
  jsCtx* js_ = nullptr;
  natsStatistics* stats_ = nullptr;
  uint64_t reconnects_seen_ = 0;
  uint64_t incarnation_;  // this object's start (ns since the epoch), in its message ids
  uint64_t raw_ids_ = 0;  // own ids given to PublishRaw payloads without one
  uint64_t messages_published_ = 0;
  uint64_t events_published_ = 0;
  uint64_t failed_ = 0;
  uint64_t resent_ = 0;
  uint64_t failed_reported_ = 0;
  std::string last_error_;
  // Outcomes queued by libnats' callback thread.
  std::mutex outcomes_mu_;
  std::condition_variable outcomes_cv_;
  std::vector<Outcome> outcomes_;
  std::vector<Outcome> taken_;  // the publisher's side of the swap
};

}  // namespace inferscope::client
