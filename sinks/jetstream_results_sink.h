#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/clock.h"
#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "pipeline/sink.h"
#include "pipeline/status.h"
#include "sinks/results_codec.h"

// The NATS C client's handles (nats/nats.h), kept out of this header.
typedef struct __natsConnection natsConnection;
typedef struct __jsCtx jsCtx;

namespace inferscope {

// JetStreamResultsSink publishes what the engine's RocksDB sinks store — closed panes with their
// whole Aggregate (sketch included), alerts, bottleneck changes, routing weights and dead letters —
// to a JetStream results stream, one result per message on "<subject_prefix>.<kind>" with a
// deterministic Nats-Msg-Id (sinks/results_codec.h), followed by a watermark message of this node
// whenever the batch's watermark advanced. Query nodes materialise the stream into stores of their
// own (`inferscope query-node --results`), so any number of them answer for every engine node.
//
// Publication and checkpoints: results are published as the operators emit them, before the
// checkpoint that covers them is durable (as the rocksdb_* sinks write them), and a checkpoint is
// written only once this sink has published (and the stream acknowledged) every result emitted
// before it (NeedsCheckpointBarrier: the executor puts a barrier in this sink's queue and hands
// the checkpoint to the state sink when the barrier is passed). So no checkpoint ever covers a
// result the stream does not hold — without the barrier, a crash after a checkpoint and before
// this sink caught up lost those results for good, since the restart emits only what follows the
// checkpoint. After a crash the engine restores its last durable checkpoint and emits the results
// after it again: each carries the same Msg-Id (identity + version), so the stream drops those
// within its duplicate window (`duplicate_window`), and materialisation is idempotent for the rest
// (state/results_store.h). What the stream holds is therefore at least what the engine's own
// store held before the crash, and converges to what it holds after the replay. The cost: a
// checkpoint (and so the jetstream source's acks) waits for the stream's acknowledgements.
//
// Delivery: a batch's messages are published asynchronously (at most `max_in_flight`
// unacknowledged) and the sink waits for every acknowledgement before the next batch. When any is
// refused or not acknowledged within `ack_timeout`, the whole batch is published again (same
// Msg-Ids: what was stored is dropped as a duplicate) after a backoff doubling from
// `retry_backoff` to `retry_max_backoff`, until it succeeds: meanwhile the sink's queue fills and
// back-pressure reaches the sources, as with a failed RocksDB write. On a stop (Interrupt) while
// failing, the batch is given up (counted). Counted in /metrics:
// inferscope_results_published_total{stage,kind}, inferscope_results_publish_failures_total,
// inferscope_results_batch_retries_total, inferscope_results_given_up_total.
//
// Lifecycle: Open connects and creates the stream (subjects "<subject_prefix>.*", limits
// retention, file storage, `replicas`, `duplicate_window`) unless it exists; Write on the sink
// thread; Close flushes and disconnects. Concurrency: Write on the sink thread only; Interrupt
// from any thread. Limitations: workflow changes are not published (workflows belong to the
// engine whose API created them); ordering across a retried batch is per batch, not per message.
class JetStreamResultsSink final : public Sink {
 public:
  static constexpr std::string_view kName = "jetstream_results";
  static constexpr std::string_view kDescription =
      "Publishes panes (with sketches), alerts, bottlenecks, routing weights and dead letters to a "
      "NATS JetStream results stream for query nodes to materialise";

  struct Options {
    // Required: a server or a comma-separated list of one cluster's servers.
    std::string url;
    // The results stream. Default "INFERSCOPE_RESULTS".
    std::string stream = "INFERSCOPE_RESULTS";
    // Kind k is published on "<subject_prefix>.<k>". Default "inferscope.results".
    std::string subject_prefix = "inferscope.results";
    // Required: this engine node's name, stable across its restarts (its watermark messages, and
    // so the fleet watermark of the query nodes, are per node). 1..255 bytes.
    std::string node;
    // Create the stream when it does not exist. Default true.
    bool create_stream = true;
    // Replicas of a stream this sink creates. Default 1; 1..5.
    int replicas = 1;
    // The duplicate window of a stream this sink creates. Default 10 min; >= 1 s.
    int64_t duplicate_window_ms = 600'000;
    // Asynchronous publishes not yet acknowledged. Default 4096; 1..1,000,000.
    int64_t max_in_flight = 4096;
    // How long the sink waits for a batch's acknowledgements. Default 10 s; >= 100 ms.
    int64_t ack_timeout_ms = 10'000;
    // First wait before publishing a failed batch again (default 100 ms); doubles up to
    // retry_max_backoff (default 5 s).
    int64_t retry_backoff_ms = 100;
    int64_t retry_max_backoff_ms = 5'000;

    Status Validate() const;
  };

  static Result<std::unique_ptr<JetStreamResultsSink>> Create(const ConfigNode& options);
  explicit JetStreamResultsSink(Options options);
  ~JetStreamResultsSink() override;

  Status Open(const StageContext& ctx) override;
  KindSet Accepts() const override;
  Status Write(const OutputBatch& batch) override;
  // Yes: a checkpoint is written only once every result emitted before it is in the stream (see
  // the class comment).
  bool NeedsCheckpointBarrier() const override { return true; }
  void Interrupt() override;
  void Close() override;
  std::string Endpoint() const override { return options_.url; }

 private:
  // Publishes messages_ and waits for their acknowledgements; false when any failed.
  bool PublishOnce(std::string* error);

  const Options options_;
  std::string name_;
  const Interner* interner_ = nullptr;
  const Clock* clock_ = nullptr;
  natsConnection* conn_ = nullptr;
  jsCtx* js_ = nullptr;
  std::vector<std::string> subjects_;  // by ResultsKind
  std::vector<ResultsMessage> messages_;
  size_t num_messages_ = 0;  // messages_ in use
  int64_t last_watermark_ = 0;
  std::atomic<uint64_t> async_failures_{0};  // incremented by libnats' reply thread

  std::mutex interrupt_mu_;
  std::condition_variable interrupt_cv_;
  bool interrupted_ = false;  // guarded by interrupt_mu_

  Counter* published_[kNumResultsKinds] = {};
  Counter* failures_ = nullptr;
  Counter* retries_ = nullptr;
  Counter* given_up_ = nullptr;
  Counter* invalid_ = nullptr;

  friend struct JetStreamResultsSinkAccess;
};

}  // namespace inferscope
