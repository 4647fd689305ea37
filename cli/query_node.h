#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "alerting/silence.h"
#include "cli/results_feed.h"
#include "pipeline/clock.h"
#include "pipeline/metrics.h"
#include "pipeline/registry.h"
#include "pipeline/status.h"
#include "pipeline/tiers.h"
#include "query/access.h"
#include "state/silence_store.h"
#include "state/state_store.h"
#include "state/workflow_store.h"
#include "workflows/workflow.h"

namespace inferscope {

class QueryServer;

struct QueryNodeOptions {
  // The engine's state directory (its state.path or --state-dir); required. It must exist: the
  // engine creates it. With `results` (below): the node's own store, created when missing.
  std::string state_dir;
  // Non-empty `results.url`: the results mode. The node keeps a store of its own in `state_dir`
  // (the same StateStore format, its tiers from `fallback_tiers`, DefaultTiers() when empty) and
  // fills it from the results stream the engines' jetstream_results sinks publish to
  // (cli/results_feed.h), instead of reading one engine's directory: it answers for every engine
  // node of the fleet. `secondary_path` and `catch_up_interval_ms` do not apply then.
  ResultsFeedOptions results;
  // Results mode: how often rollups and retention run on the node's store (RunMaintenance, as
  // the engine's maintenance thread does). Default 10 s; 10 ms .. 1 h.
  int64_t maintenance_interval_ms = 10'000;
  // This node's own RocksDB files (the secondary instance's info log). Empty (the default): a
  // fresh directory under $TMPDIR (or /tmp), removed at Stop. Several query nodes on one state
  // directory need one each; it must not be the state directory.
  std::string secondary_path;
  // host:port of the HTTP API; port 0 picks a free one (read it back with HttpUrl).
  std::string listen = "127.0.0.1:8081";
  // How often the node catches up with the engine (StateStore::CatchUp); 10 ms .. 1 h. The lag of
  // its answers behind the engine's committed state is at most about this plus one catch-up.
  int64_t catch_up_interval_ms = 500;
  // The engine's API, named in the 405 READ_ONLY answers to writes (silences, workflows); may be
  // empty.
  std::string engine_url;
  // Used only when the store holds no tier list (written by an engine from before the primary
  // stored it): the topology's tiers. Empty: panes only. In the results mode: the node's tiers
  // (give the engines' topology, so both store the same tiers).
  std::vector<TierSpec> fallback_tiers;
  // What /v1/capabilities lists (the engine's registered stage types).
  std::vector<Registry::Entry> capabilities;
  // Tokens, rate limits and CORS (query/access.h). No tokens: `listen` must be a loopback address.
  AccessOptions access;
  ExportOptions export_options;
  size_t max_url_bytes = 0;                // 0: the server's default
  size_t max_body_bytes = 0;               // 0: the server's default
  size_t max_connections_per_address = 0;  // 0: the server's default

  Status Validate() const;
};

// QueryNode is the query API as its own process: the same route table and handlers as the
// engine's built-in API (query/server.h), answering from the engine's RocksDB state opened as a
// secondary instance (StateStoreOptions::secondary_path) that catches up with the engine every
// catch_up_interval_ms.
//
// What it sees: the state the engine had committed (written to its log) when the last catch-up
// started — whole WriteBatches only, so a window is never half written; never the engine's memory
// (open panes, unsaved registry changes). Silences and workflows are read from their record tables
// and reloaded into read-only registries whenever a catch-up changed those tables, so their GETs
// answer what the engine's do; writes to them answer 405 READ_ONLY naming the engine's API
// (QueryServer::Options::read_only). It never writes to the state directory and takes no lock the
// engine needs, so it cannot block the engine; it keeps answering from its last view while the
// engine is down, and picks the engine's writes up again after a restart (a failed catch-up
// reopens the secondary on the primary's current files).
//
// Lifecycle: Start (opens the store, loads the registries, starts the HTTP server and the
// catch-up thread) → Stop (idempotent; the destructor calls it).
// Concurrency: requests run on the server's worker threads; catch-ups on one thread of their own;
// CatchUpOnce may also be called directly (calls are serialised).
class QueryNode {
 public:
  static Result<std::unique_ptr<QueryNode>> Start(QueryNodeOptions options,
                                                  const Clock* clock = &SystemClock::Instance());
  ~QueryNode();
  QueryNode(const QueryNode&) = delete;
  QueryNode& operator=(const QueryNode&) = delete;

  void Stop();

  // "http://127.0.0.1:PORT".
  std::string HttpUrl() const;
  // What `query-node --ready-file` writes: {"role", "http", "state", "secondary"}.
  nlohmann::json Describe() const;
  // What /v1/health reports: "role": "query-node", the stored watermark, the last catch-up (time,
  // duration, count, failures) and the lag; "status" "degraded" with a "reason" while catch-ups
  // fail or after the engine changed its tier list.
  nlohmann::json Health() const;
  // One catch-up now, then a reload of the silences and workflows when their tables changed.
  Status CatchUpOnce();

  StateStore* state() { return state_.get(); }
  MetricsRegistry& metrics() { return metrics_; }

 private:
  QueryNode() = default;
  void CatchUpLoop();
  bool results_mode() const { return !options_.results.url.empty(); }
  // Results mode: the node's store from the results stream; the loop runs maintenance.
  Status StartResultsMode();
  void MaintenanceOnce();
  // Reloads the registries whose record table changed since the last look.
  Status RefreshRegistries();

  QueryNodeOptions options_;
  const Clock* clock_ = nullptr;
  int64_t started_ms_ = 0;
  bool own_secondary_path_ = false;  // created by Start, removed by Stop
  MetricsRegistry metrics_;
  std::unique_ptr<StateStore> state_;
  std::unique_ptr<StateSilenceStore> silence_store_;
  std::unique_ptr<SilenceRegistry> silences_;
  std::unique_ptr<StateWorkflowStore> workflow_store_;
  std::unique_ptr<WorkflowRegistry> workflows_;
  std::unique_ptr<QueryServer> query_;
  std::unique_ptr<ResultsFeed> results_;  // results mode only
  std::string maintenance_error_;         // results mode: the last failed maintenance (stats_mu_)
  std::string host_;

  // Catch-up statistics (guarded by stats_mu_).
  mutable std::mutex stats_mu_;
  int64_t last_catch_up_ms_ = 0;  // start of the last successful catch-up (0: none yet)
  int64_t last_duration_ns_ = 0;
  uint64_t catch_ups_ = 0;
  uint64_t failures_ = 0;
  uint64_t consecutive_failures_ = 0;
  uint64_t reopens_ = 0;
  bool tiers_changed_ = false;
  std::string last_error_;
  // FNV-1a of the silences and workflows tables at their last load.
  uint64_t silences_hash_ = 0;
  uint64_t workflows_hash_ = 0;

  std::mutex catch_up_mu_;  // serialises CatchUpOnce
  Histogram* catch_up_seconds_ = nullptr;
  Counter* catch_up_failures_ = nullptr;
  Counter* reopens_total_ = nullptr;
  Counter* reloads_silences_ = nullptr;
  Counter* reloads_workflows_ = nullptr;

  std::thread thread_;
  std::mutex loop_mu_;
  std::condition_variable loop_cv_;
  bool stop_ = false;  // guarded by loop_mu_
};

}  // namespace inferscope
