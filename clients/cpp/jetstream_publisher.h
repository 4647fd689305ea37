#pragma once

// Publishing protocol-v1 payloads into a NATS JetStream stream (docs/PROTOCOL.md, "JetStream"),
// for the engine's `jetstream` source. Built only with INFERSCOPE_JETSTREAM (it needs libnats);
// link inferscope_client_jetstream.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "clients/cpp/publisher.h"

typedef struct __natsConnection natsConnection;
typedef struct __jsCtx jsCtx;

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
  size_t batch_size = 256;          // events per message and partition
  int64_t max_in_flight = 1024;     // asynchronous publishes not yet acknowledged by the stream
  int64_t ack_timeout_ms = 10'000;  // Flush waits this long for the stream's acknowledgements
};

// JetStreamPublisher batches events per partition (the partition chosen from each event's instance)
// and publishes each batch as one message with acknowledged, asynchronous JetStream publishes, at
// most max_in_flight unacknowledged (a publish beyond it waits). Every message carries a
// Nats-Msg-Id "<publisher id>/p<p>:<start ns>:<seq>" (the start time of this object: a restarted
// process numbering from 0 again is not taken for duplicates), so the stream drops a message
// published twice within its duplicate window.
//
// Lifecycle: Connect → Request/Gauge (a partition's batch is published at batch_size) → Flush
// (publishes what is pending and waits for every acknowledgement) → destructor (flushes). Errors: a
// publish the stream refuses or does not acknowledge is counted in failed_messages and reported by
// the next Flush; it is not resent, since a resend after newer messages would put the partition out
// of order. On a cluster, publishes made while the stream elects a new leader (a few seconds after
// its leader's server dies) fail this way; the connection itself fails over to another server. A
// publish whose acknowledgement is lost (its server died with it in flight) is never acknowledged:
// the next Flush times out after ack_timeout_ms, drops it, counts it in failed_messages and frees
// its max_in_flight slot, so later Flushes succeed again. The caller should resend what failed.
// Concurrency: not thread-safe.
class JetStreamPublisher {
 public:
  explicit JetStreamPublisher(JetStreamPublisherOptions options);
  ~JetStreamPublisher();
  JetStreamPublisher(const JetStreamPublisher&) = delete;
  JetStreamPublisher& operator=(const JetStreamPublisher&) = delete;

  // Connects and checks the stream exists. False with last_error() on failure.
  bool Connect();
  // Adds an event to its partition's batch; false when a publish failed (see last_error).
  bool Request(const RequestOutcome& r);
  bool Gauge(std::string_view instance, std::string_view model, std::string_view name, double value,
             int64_t time_ms = 0);
  // Publishes one ready payload (already protocol-v1, e.g. received by `inferscope bridge`) to
  // partition `partition`, with `msg_id` as its Nats-Msg-Id (empty: none). Waits while
  // max_in_flight publishes are unacknowledged.
  bool PublishRaw(uint32_t partition, std::string_view payload, std::string_view msg_id);
  // Publishes the pending batches and waits until every publish is acknowledged (ack_timeout_ms).
  // False when any publish failed since the last Flush, or the wait timed out. On a timeout the
  // publishes still unacknowledged are dropped and counted in failed_messages (they may or may not
  // be stored: resend them, with the same data, to be sure; the stream's duplicate window drops a
  // resend of a stored message only if it carries the same Nats-Msg-Id, which PublishRaw allows).
  bool Flush();

  uint64_t messages_published() const { return messages_published_; }
  uint64_t events_published() const { return events_published_; }
  uint64_t failed_messages() const { return failed_.load(); }
  const std::string& last_error() const { return last_error_; }

  // Creates `stream` (file storage, limits retention, subjects "<subject_prefix>.*", `replicas`
  // copies: 3 on a 3-server cluster) at `url` unless it exists. False with `*error` set on failure,
  // and when the stream exists with another number of replicas (it is not changed).
  static bool EnsureStream(const std::string& url, const std::string& stream,
                           const std::string& subject_prefix, std::string* error, int replicas = 1);

 private:
  bool FlushPartition(uint32_t p);

  JetStreamPublisherOptions options_;
  std::vector<std::unique_ptr<BatchEncoder>> encoders_;  // one per partition
  std::vector<std::string> subjects_;
  natsConnection* conn_ = nullptr;
  jsCtx* js_ = nullptr;
  std::string msg_id_;
  uint64_t incarnation_;  // this object's start (ns since the epoch), in its message ids
  uint64_t messages_published_ = 0;
  uint64_t events_published_ = 0;
  std::atomic<uint64_t> failed_{0};  // incremented by libnats' reply thread
  friend struct JetStreamPublisherAccess;
  uint64_t failed_reported_ = 0;
  std::string last_error_;
};

}  // namespace inferscope::client
