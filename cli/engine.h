#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "alerting/silence.h"
#include "pipeline/clock.h"
#include "pipeline/executor.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/registry.h"
#include "pipeline/source_health.h"
#include "pipeline/topology.h"
#include "query/access.h"
#include "routing/live_router.h"
#include "state/checkpoint_store.h"
#include "state/silence_store.h"
#include "state/state_store.h"
#include "state/workflow_store.h"
#include "workflows/workflow.h"

namespace inferscope {

class QueryServer;

// What `inferscope run` may override in a topology (Engine::Overrides). Outside Engine so that its
// default member initializers can serve Engine::Build's default argument.
struct EngineOverrides {
  std::string state_path;    // replaces the topology's state.path when not empty
  std::string query_listen;  // replaces the topology's query.listen when not empty
  // Distinct `publisher` label values per metric family (MetricsRegistry); 0 = the default.
  size_t metrics_max_publishers = 0;
};

// Engine is one running inferscope process: the state store, the executor running the topology's
// stages, and the query API, built from a TopologySpec.
//
// Lifecycle: Build (validates the topology and creates every stage; nothing runs yet) → Start
// (opens RocksDB, stages, the state maintenance thread and the HTTP server) → Stop (graceful:
// drains and flushes; the maintenance thread is joined) → destroy.
// Concurrency: Build/Start/Stop from one thread; accessors from any thread once started. State
// maintenance (rollups, retention: StateStore::RunMaintenance) runs on its own thread every
// state.maintenance_interval of real time; a failed run is logged and counted, holds the store's
// background error (health `degraded`) and is retried at the next interval.
class Engine {
 public:
  using Overrides = EngineOverrides;

  static Result<std::unique_ptr<Engine>> Build(const TopologySpec& spec, const Registry& registry,
                                               const Overrides& overrides = {},
                                               const Clock* clock = &SystemClock::Instance());
  ~Engine();

  Status Start();
  void Stop();
  // Stops at once without the graceful end (Executor::Abandon: no last checkpoint, open windows
  // not flushed): for a cluster slot whose lease was lost (cli/node.h).
  void Abandon();
  // Called with every durable checkpoint (Executor::SetCheckpointObserver); call before Start.
  void SetCheckpointObserver(std::function<void(const PendingCheckpoint&)> observer) {
    executor_->SetCheckpointObserver(std::move(observer));
  }

  // The file system the state store writes through (StateStoreOptions::file_system); null (the
  // default): the local one. Call before Start; for tests that inject storage failures.
  void SetStateFileSystem(std::shared_ptr<StateFileSystem> fs) {
    state_file_system_ = std::move(fs);
  }

  // The resolved endpoint of a source or sink ("tcp://127.0.0.1:40123").
  std::string Endpoint(const std::string& stage) const { return executor_->Endpoint(stage); }
  // "http://127.0.0.1:PORT", empty without a query API.
  std::string HttpUrl() const;
  // What `run --ready-file` writes: {"http": url, "endpoints": {stage: endpoint}, "state": path}.
  nlohmann::json Describe() const;
  // What /v1/health reports: "status" is "ok", or "degraded" with a "reason" while a failed state
  // write is held and retried (StateStore::BackgroundError; back to "ok" once it succeeded) or
  // while a source's broker connection is down ("connections": the jetstream sources' NATS
  // connections; the state write's reason wins when both hold).
  nlohmann::json Health() const;

  Interner& interner() { return interner_; }
  MetricsRegistry& metrics() { return metrics_; }
  StateStore* state() { return state_.get(); }
  // The silences (loaded from the store at Start); null before Start.
  SilenceRegistry* silences() { return silences_.get(); }
  // The optimization workflows (loaded from the store at Start); null before Start.
  WorkflowRegistry* workflows() { return workflows_.get(); }
  routing::RoutingRegistry* routing() { return routing_.get(); }

 private:
  Engine() = default;
  void MaintenanceLoop();
  void StopMaintenance();

  TopologySpec spec_;
  QuerySectionAccess query_access_;  // the topology's query tokens, limits, CORS, export
  std::shared_ptr<StateFileSystem> state_file_system_;
  std::vector<Registry::Entry> capabilities_;
  const Clock* clock_ = nullptr;
  int64_t started_ms_ = 0;
  Interner interner_;
  MetricsRegistry metrics_;
  std::unique_ptr<StateStore> state_;
  // Over state_ (null without a state directory): checkpoints for the executor, silences.
  std::unique_ptr<StateCheckpointStorage> checkpoints_;
  std::unique_ptr<StateSilenceStore> silence_store_;
  std::unique_ptr<SilenceRegistry> silences_;  // shared by alerting operators and the query API
  std::unique_ptr<StateWorkflowStore> workflow_store_;
  std::unique_ptr<WorkflowRegistry> workflows_;  // shared by workflow_canary and the query API
  // Scrape targets' and broker connections' health, reported by sources, shown in Health().
  SourceHealth source_health_;
  // The live routing learners (routing_learn registers its own), shared with the query API.
  std::unique_ptr<routing::RoutingRegistry> routing_ = std::make_unique<routing::RoutingRegistry>();
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<QueryServer> query_;

  std::thread maintenance_;
  std::mutex maintenance_mu_;
  std::condition_variable maintenance_cv_;
  bool maintenance_stop_ = false;  // guarded by maintenance_mu_
};

}  // namespace inferscope
