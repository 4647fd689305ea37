#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "pipeline/clock.h"
#include "pipeline/metrics.h"
#include "pipeline/status.h"

namespace inferscope {

class StateStore;

struct ResultsFeedOptions {
  // A server or a comma-separated list of one cluster's servers; empty: no results feed.
  std::string url;
  // The results stream the engines' jetstream_results sinks publish to.
  std::string stream = "INFERSCOPE_RESULTS";
  // Their subject_prefix: the feed reads "<subject_prefix>.*".
  std::string subject_prefix = "inferscope.results";
  // This query node's durable consumer; each query node needs its own. No '.', '*', '>', spaces.
  std::string durable = "inferscope-query";
  // Messages per fetch (and at most per applied WriteBatch). Default 1024; 1..65536.
  int fetch_batch = 1024;
  // How long a fetch waits on an empty stream. Default 100 ms; 1..1000 ms.
  int64_t fetch_wait_ms = 100;

  Status Validate() const;
};

// ResultsFeed materialises the results stream (sinks/jetstream_results_sink.h) into a StateStore of
// the query node's own, so the node answers for every engine node that publishes to the stream.
//
// Exactly-once: the stream sequence of the last message applied is stored in the store
// (results_position, state/results_store.h) in the same WriteBatch as the rows it produced. On
// start the durable consumer is created again to deliver from that position + 1 (the store, not the
// consumer's ack floor, is the truth, as for the jetstream source and its checkpoints), and a
// message at or below the position (a redelivery) is skipped. Each fetch (up to fetch_batch
// messages) is decoded and applied as one batch (ApplyResults), then acknowledged (AckAll). A
// message that cannot be decoded is counted, logged and skipped (its position still advances). A
// failed write is retried from the stored position a second later.
//
// Lifecycle: Start returns once the thread runs (connecting, waiting for the stream to exist and
// creating the consumer happen there, retried every second); Stop joins it.
// Concurrency: one thread of its own; Health from any thread.
class ResultsFeed {
 public:
  // Unavailable in a build without INFERSCOPE_JETSTREAM.
  static Result<std::unique_ptr<ResultsFeed>> Start(const ResultsFeedOptions& options,
                                                    StateStore* store, MetricsRegistry* metrics,
                                                    const Clock* clock);
  virtual ~ResultsFeed() = default;
  virtual void Stop() = 0;
  // {"stream", "consumer", "connected", "position", "pending_messages", "lag_ms", "applied",
  //  "batches", "skipped_panes", "bad_messages", "failures", "nodes": {node: watermark_ms},
  //  "last_error"}. lag_ms: the time since the feed last had applied everything the stream held
  // (0 pending after a fetch); null before that happened once.
  virtual nlohmann::json Health() const = 0;
  // The lag_ms above (-1 before the feed was caught up once); `error` is set while failing.
  virtual int64_t LagMs(std::string* error) const = 0;
};

}  // namespace inferscope
