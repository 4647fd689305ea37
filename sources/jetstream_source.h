#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "clients/cpp/nats_pull.h"
#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "pipeline/source.h"
#include "pipeline/source_health.h"
#include "pipeline/status.h"
#include "sources/wire_decoder.h"

// The NATS C client's handles (nats/nats.h), kept out of this header.
typedef struct __natsConnection natsConnection;
typedef struct __natsSubscription natsSubscription;
typedef struct __jsCtx jsCtx;

namespace inferscope {

// JetStreamSource consumes protocol-v1 payloads (the same bytes the zmq source decodes) from a NATS
// JetStream stream, one pull consumer per configured partition (subject `<subject_prefix>.<p>`),
// and emits decoded EventBatches.
//
// Position and exactly-once: the position of partition p is the stream sequence of the last message
// applied from it. It travels in each batch's `sequences` (publisher key
// "jetstream:<stream>:<subject>") and so is part of every engine checkpoint, like a Kafka offset in
// a Flink checkpoint. On start (Run, after Restore) each partition's durable consumer
// `<durable>-p<p>` is deleted and created again with DeliverByStartSequence at the checkpointed
// sequence + 1 (DeliverAll without a checkpoint): the checkpoint, not the consumer's ack floor, is
// the truth, since a crash between a durable checkpoint and its ack leaves the ack floor behind,
// and the redelivery of messages delivered but not acked would come after newer ones (out of
// order). A message whose stream sequence is not above the partition's position (a redelivery after
// ack_wait) is skipped and counted. Acks (AckPolicy All: one ack covers everything before it) are
// sent from OnCheckpointDurable, for the newest message at or below the durable position, and for
// a skipped redelivery that a durable checkpoint covers (its first ack was lost: AckRedelivered).
// Only limits retention is supported (Open refuses work-queue and interest streams: deleting the
// consumer at start would make an interest stream drop unacked messages, and a work-queue stream
// refuses AckAll consumers). Each consumer creation compares the position with the stream's first
// and last sequence and warns and counts a gap (inferscope_jetstream_position_gaps_total) when
// messages after it are gone or the stream is behind it.
//
// Lifecycle: Open connects and checks that the stream exists with limits retention; Run creates the
// consumers (retrying every second while the server refuses), then fetches from the partitions in
// turn (up to fetch_batch messages, waiting up to fetch_wait when one is empty) and emits a batch
// per fetch, or several when it decodes to more than kBatchEvents events; a partition whose fetch
// fails (its consumer deleted, the server gone) has its consumer created again at its position, at
// most once a second; Run notices `stop` within fetch_wait. Close destroys subscriptions and the
// connection (the durable consumers stay on the server). Bad messages (anything the decoder rejects
// as a whole) are counted dead letters (inferscope_jetstream_dead_letters_total) and their position
// still advances: they are acknowledged like the others and never crash or stall the source; except
// publisher_limit (it can clear): the partition stops before that message and its consumer is
// created again there a second later (inferscope_jetstream_held_total). Metrics per partition:
// fetched messages, acked stream sequence, lag (messages pending in the consumer after the last
// fetched one), skipped redeliveries, dead letters, holds, gaps.
//
// Connection: libnats reconnects by itself (to any server of the list, without limit). The source
// follows its connection events: a loss and a reconnection are each logged once (a warning),
// counted (inferscope_jetstream_disconnects_total, _reconnects_total), shown in the gauge
// inferscope_jetstream_connected and in the engine's /v1/health ("connections", the SourceHealth
// service; a connection down makes the engine degraded). While disconnected the source does not
// fetch (it waits for the reconnection, quietly); inferscope_jetstream_last_fetch_age_seconds and
// the health's last_fetch_age_s say how long ago a fetch last completed with the connection up.
//
// Concurrency: Open/Restore/Close on the engine thread; Run on the source thread;
// OnCheckpointDurable on a sink thread (it publishes the acks itself under a mutex: the NATS
// connection is thread-safe); the connection callbacks on libnats' callback thread (under
// conn_mu_; Close waits for the connection's closed callback, the last one). Several nodes: an
// engine consumes all its configured partitions; `inferscope node` (cli/node.h) runs one engine
// per slot with the slot's partitions and durable "<durable>-<slot>", and moves slots between
// nodes with leases and a checkpoint changelog (docs/SOURCES.md, "jetstream").
class JetStreamSource final : public Source {
 public:
  static constexpr std::string_view kName = "jetstream";
  static constexpr std::string_view kDescription =
      "Consumes protocol-v1 metric batches from a NATS JetStream stream, one durable pull consumer "
      "per partition; positions are checkpointed";

  struct Options {
    // Required. A server ("nats://127.0.0.1:4222") or a comma-separated list of the servers of one
    // cluster (scripts/nats-cluster.sh prints one): the source connects to one that answers and,
    // when it is lost, reconnects to any of them (and to servers the cluster announces), without
    // limit, 250 ms apart per server.
    std::string url;
    // Required. The stream holding the subjects (created by the operator or a client's
    // EnsureStream).
    std::string stream;
    // Partition p is subject "<subject_prefix>.<p>". Default "inferscope.in".
    std::string subject_prefix = "inferscope.in";
    // Required, non-empty, distinct, each in 0..65535: the partitions this engine consumes.
    std::vector<uint32_t> partitions;
    // Consumer of partition p: "<durable>-p<p>". Default "inferscope"; no '.', '*', '>' or spaces.
    std::string durable = "inferscope";
    // Messages per fetch. Default 256; 1..65536.
    int fetch_batch = 256;
    // How long a fetch waits for a message on an empty partition. Default 100 ms; 1..1000 ms (it
    // bounds how long stopping takes).
    int64_t fetch_wait_ms = 100;
    // The consumer's AckWait: a message unacked this long is delivered again (and skipped: see the
    // class comment). Default 60 s; >= 1 s; keep it above the checkpoint interval.
    int64_t ack_wait_ms = 60'000;
    // The consumer's MaxAckPending: messages delivered and not yet acked (acks follow checkpoints).
    // Default 65536; 1..2^30.
    int64_t max_ack_pending = 65536;
    WireDecoderOptions decoder;

    Status Validate() const;
  };

  // From a topology's `options` mapping: url, stream, subject_prefix, partitions, durable,
  // fetch_batch, fetch_wait, ack_wait, max_ack_pending and the decoder limits of the zmq source.
  static Result<std::unique_ptr<JetStreamSource>> Create(const ConfigNode& options);

  explicit JetStreamSource(Options options);
  ~JetStreamSource() override;

  Status Open(const StageContext& ctx) override;
  Status Run(SourceOutput& out, const std::atomic<bool>& stop) override;
  void Close() override;
  Status Restore(const CheckpointReader& reader) override;
  void OnCheckpointDurable(const std::vector<AppliedSequence>& applied) override;
  // The server URL(s), as configured.
  std::string Endpoint() const override { return options_.url; }

  // The checkpoint key of a partition's position.
  static std::string PositionKey(std::string_view stream, std::string_view subject);

  // The decoder (valid after Open); read it only while Run is not running.
  const WireDecoder* decoder() const { return decoder_.get(); }

 private:
  // A message delivered and applied but not yet acked: its stream sequence and ack subject.
  struct Unacked {
    uint64_t seq = 0;
    std::string reply;
  };
  struct Partition {
    uint32_t index = 0;
    std::string subject;
    std::string durable;
    StringId key = 0;                 // PositionKey, interned and pinned
    natsSubscription* sub = nullptr;  // binds the consumer; fetched through `fetcher`, not itself
    // Pull requests and their deliveries on an inbox of its own (clients/cpp/nats_pull.h: not
    // natsSubscription_Fetch, which overflows its array in libnats 3.4.1). Made with `sub`.
    std::unique_ptr<client::PullFetcher> fetcher;
    uint64_t applied = 0;  // stream sequence of the last message applied (0: none)
    // A ring of the last message applied per emitted batch (guarded by ack_mu_): at most kRing;
    // when it is full, the newest entry is overwritten (so the newest applied message can always
    // be acked; an ack of an older entry then covers less).
    std::vector<Unacked> ring;
    size_t head = 0;  // oldest entry
    size_t size = 0;
    uint64_t acked = 0;  // stream sequence acked last (guarded by ack_mu_)
    // When an idle partition last checked that its consumer still exists (a consumer deleted
    // while no fetch was pending is not reported to the next fetches: they only time out).
    int64_t consumer_checked_ms = 0;
    Counter* fetched = nullptr;
    Counter* dead = nullptr;
    Counter* skipped = nullptr;
    Counter* acks = nullptr;
    Gauge* acked_seq = nullptr;
    Gauge* lag = nullptr;
    Counter* held = nullptr;
    Counter* gaps = nullptr;
    Counter* delivery_gaps = nullptr;
  };
  static constexpr size_t kRing = 1024;
  // Events per emitted batch: a fetch whose messages decode to more is emitted in several batches,
  // so pooled batches keep a bounded capacity whatever fetch_batch is.
  static constexpr size_t kBatchEvents = 8192;

  struct FetchOutcome {
    int messages = 0;
    // A message was refused for a temporary reason (publisher_limit): the partition's position
    // stays before it and its consumer must be created again there later.
    bool hold = false;
    // A delivery was lost on the way (its consumer sequence skipped): the messages before the gap
    // are applied, the rest are not, and the consumer is created again after the position, so the
    // lost ones come again. Without this, acknowledging a later message (AckAll) would have
    // acknowledged the lost ones too, and their events were gone.
    bool gap = false;
    bool closed = false;  // the output is closed (the engine is stopping)
  };
  // For a partition whose fetches come back empty: at most every 2 s, asks the server whether
  // its consumer still exists; an error when it does not (the caller creates it again).
  Result<FetchOutcome> CheckConsumerExists(Partition& p);

  // Deletes and creates every partition's consumer at its position and subscribes to it (after
  // checking its position against the stream's first and last sequence).
  Status CreateConsumers();
  // Fetches once from `p`, decoding into `batch` and emitting it whenever it holds kBatchEvents
  // events (the last, partial batch stays in `batch` for the caller to emit).
  Result<FetchOutcome> FetchOnce(Partition& p, SourceOutput& out, EventBatchPtr& batch);
  // Appends p's position to `batch` and records the ack of its last applied message, when
  // messages were applied since `before`.
  void EndBatch(Partition& p, EventBatch& batch, uint64_t before, const char* last_reply,
                uint64_t pending);
  // A redelivery of a message of `p` applied already (seq <= p.applied): acknowledged at once
  // (its `reply`) when a durable checkpoint covers it. Its first ack was lost (a server died
  // with it, a consumer leader changed), and on a stream that went idle no later ack covers it:
  // the server would redeliver it every ack_wait for ever. One not covered yet is acked by the
  // checkpoint that covers it, as any other.
  void AckRedelivered(Partition& p, uint64_t seq, const char* reply);
  void DestroySubscriptions();

  // libnats' connection callbacks (jetstream_source.cc; closure: the source). They set the
  // connection state through ConnectionChanged and, for the closed callback, closed_.
  friend struct JetStreamConnectionEvents;
  // Sets the state after a change seen by a callback (or the first connection) and reports it.
  void ConnectionChanged(natsConnection* nc, bool connected);
  // Reports the connection state to the SourceHealth service (when there is one). conn_mu_ held.
  void ReportConnectionLocked();
  // The source thread's view: records a fetch that completed with the connection up and reports
  // the state at most once a second, so that the health's last fetch age stays current.
  void FetchCompleted(bool with_messages_or_wait);
  // Waits (quietly, within ~100 ms of `stop`) until the connection is up again.
  void WaitConnected(const std::atomic<bool>& stop);

  const Options options_;
  StageContext ctx_;
  std::unique_ptr<WireDecoder> decoder_;
  natsConnection* conn_ = nullptr;
  jsCtx* js_ = nullptr;
  std::vector<Partition> partitions_;
  std::mutex ack_mu_;
  int64_t last_log_ns_ = 0;

  // Connection state (guarded by conn_mu_, written by the callbacks and Open; `connected_` and
  // `last_fetch_ms_` are also read without it by the source thread and the metrics).
  std::mutex conn_mu_;
  std::condition_variable closed_cv_;
  bool closing_ = false;  // Close has begun: further callbacks change nothing
  bool closed_ = false;   // the closed callback ran
  std::atomic<bool> connected_{false};
  std::atomic<int64_t> last_fetch_ms_{0};
  int64_t opened_ms_ = 0;
  int64_t last_report_ms_ = 0;  // source thread
  SourceHealth::Connection health_entry_;
  SourceHealth* health_ = nullptr;
  Counter* disconnects_ = nullptr;
  Counter* reconnects_ = nullptr;
  Gauge* connected_gauge_ = nullptr;
};

}  // namespace inferscope
