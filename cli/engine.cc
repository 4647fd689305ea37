#include "cli/engine.h"

#include <algorithm>
#include <chrono>

#include <spdlog/spdlog.h>

#include "cli/version.h"
#include "pipeline/address.h"
#include "pipeline/json_text.h"
#include "pipeline/thread_name.h"
#include "query/server.h"

namespace inferscope {

Result<std::unique_ptr<Engine>> Engine::Build(const TopologySpec& spec, const Registry& registry,
                                              const Overrides& overrides, const Clock* clock) {
  Result<TopologyStages> stages = CreateTopologyStages(spec, registry);
  if (!stages.ok()) return stages.status();
  std::unique_ptr<Engine> engine(new Engine());
  engine->spec_ = spec;
  if (!overrides.state_path.empty()) {
    if (std::optional<std::string> problem = StateDirProblem(overrides.state_path)) {
      return Status::InvalidArgument("--state-dir: " + *problem);
    }
    engine->spec_.state_path = overrides.state_path;
  }
  if (!overrides.query_listen.empty()) engine->spec_.query_listen = overrides.query_listen;
  if (!engine->spec_.query_listen.empty()) {
    if (Result<HostPort> hp = ParseHostPort(engine->spec_.query_listen); !hp.ok()) {
      return Status::InvalidArgument(
          (overrides.query_listen.empty() ? spec.file + ": query.listen: " : "--listen: ") +
          hp.status().message());
    }
  }
  Result<QuerySectionAccess> access = ParseQueryAccess(engine->spec_.query_at);
  if (!access.ok()) return access.status();
  engine->query_access_ = std::move(access).value();
  if (!engine->spec_.query_listen.empty() && engine->query_access_.access.tokens.empty()) {
    const std::string host = ParseHostPort(engine->spec_.query_listen).value().host;
    if (!IsLoopbackHost(host)) {
      const std::string problem =
          "'" + host +
          "' is not a loopback address and no API tokens are configured (query.tokens or "
          "query.token_file): the API would answer anyone who can reach it; configure tokens "
          "or listen on 127.0.0.1";
      if (!overrides.query_listen.empty()) return Status::InvalidArgument("--listen: " + problem);
      return engine->spec_.query_at.Error("listen", problem);
    }
  }
  for (const auto& [table, ms] : engine->spec_.record_retention_ms) {
    if (Status st = CheckRecordRetention(table, ms); !st.ok()) {
      return engine->spec_.record_retention_at.Error(table, st.message());
    }
  }
  engine->capabilities_ = registry.List();
  engine->clock_ = clock;
  if (overrides.metrics_max_publishers > 0) {
    engine->metrics_.SetMaxPublishersPerFamily(overrides.metrics_max_publishers);
  }
  engine->metrics_.AddProcessMetrics();
  engine->metrics_
      .GetGauge("inferscope_build_info",
                "Build of this engine and its libraries' versions; always 1", BuildInfoLabels())
      ->Set(1);

  StageContext base;
  base.interner = &engine->interner_;
  base.metrics = &engine->metrics_;
  base.clock = clock;
  engine->executor_ = std::make_unique<Executor>(spec.engine, base);
  for (size_t i = 0; i < spec.sources.size(); ++i) {
    engine->executor_->AddSource(spec.sources[i].name, std::move(stages->sources[i]));
  }
  for (size_t i = 0; i < spec.operators.size(); ++i) {
    engine->executor_->AddOperator(spec.operators[i].name, std::move(stages->operators[i]),
                                   spec.operators[i].inputs);
  }
  for (size_t i = 0; i < spec.sinks.size(); ++i) {
    engine->executor_->AddSink(spec.sinks[i].name, std::move(stages->sinks[i]),
                               spec.sinks[i].inputs);
  }
  return engine;
}

Engine::~Engine() { Stop(); }

Status Engine::Start() {
  started_ms_ = clock_->NowMs();
  if (!spec_.state_path.empty()) {
    StateStoreOptions options;
    options.path = spec_.state_path;
    options.tiers = spec_.state_tiers;
    options.rollup_delay_ms = spec_.rollup_delay_ms;
    options.record_retention_ms.insert(spec_.record_retention_ms.begin(),
                                       spec_.record_retention_ms.end());
    options.clock = clock_;
    options.file_system = state_file_system_;
    Result<std::unique_ptr<StateStore>> state = StateStore::Open(options, &metrics_);
    if (!state.ok()) return state.status();
    state_ = std::move(state).value();
    checkpoints_ = std::make_unique<StateCheckpointStorage>(state_.get());
    silence_store_ = std::make_unique<StateSilenceStore>(state_.get());
    workflow_store_ = std::make_unique<StateWorkflowStore>(state_.get());
    {
      std::lock_guard<std::mutex> lock(maintenance_mu_);
      maintenance_stop_ = false;
    }
    maintenance_ = std::thread([this] { MaintenanceLoop(); });
  }
  silences_ = std::make_unique<SilenceRegistry>(silence_store_.get(), clock_);
  INFERSCOPE_RETURN_IF_ERROR(silences_->Load().WithContext("loading silences"));
  workflows_ = std::make_unique<WorkflowRegistry>(workflow_store_.get(), clock_);
  INFERSCOPE_RETURN_IF_ERROR(workflows_->Load().WithContext("loading workflows"));
  // The executor's stages were created without the store; hand it to them now, before Open.
  StageContext base;
  base.interner = &interner_;
  base.metrics = &metrics_;
  base.clock = clock_;
  base.state = state_.get();
  base.checkpoints = checkpoints_.get();
  base.services.Provide(silences_.get());
  base.services.Provide(workflows_.get());
  base.services.Provide(&source_health_);
  base.services.Provide(routing_.get());
  executor_->SetStageContext(base);
  // The API's workflow changes reach the canary operator's timer at once, not at its next look.
  workflows_->SetOnChange([exec = executor_.get()] { exec->Wake(); });
  Status started = executor_->Start();
  if (!started.ok()) {
    StopMaintenance();
    return started;
  }

  if (!spec_.query_listen.empty()) {
    HostPort listen = ParseHostPort(spec_.query_listen).value();  // checked in Build
    QueryServer::Options options;
    options.host = listen.host;
    options.port = listen.port;
    options.access = query_access_.access;
    options.export_options = query_access_.export_options;
    if (query_access_.max_url_bytes > 0) options.max_url_bytes = query_access_.max_url_bytes;
    if (query_access_.max_body_bytes > 0) options.max_body_bytes = query_access_.max_body_bytes;
    if (query_access_.max_connections_per_address > 0) {
      options.max_connections_per_address =
          static_cast<int>(query_access_.max_connections_per_address);
    }
    query_ = std::make_unique<QueryServer>(
        options, state_.get(), &metrics_, clock_, [this] { return Health(); }, capabilities_);
    query_->SetSilences(silences_.get());
    query_->SetWorkflows(workflows_.get());
    query_->SetRouting(routing_.get());
    Status st = query_->Start();
    if (!st.ok()) {
      executor_->Stop();
      StopMaintenance();
      return st.WithContext("starting the query API on " + spec_.query_listen);
    }
  }
  spdlog::info("engine '{}' started: {}", spec_.name, ToJsonText(Describe()));
  return Status::Ok();
}

void Engine::Stop() {
  if (query_) query_->Stop();
  StopMaintenance();
  if (executor_) executor_->Stop();
}

void Engine::Abandon() {
  if (query_) query_->Stop();
  StopMaintenance();
  if (executor_) executor_->Abandon();
}

void Engine::StopMaintenance() {
  {
    std::lock_guard<std::mutex> lock(maintenance_mu_);
    maintenance_stop_ = true;
  }
  maintenance_cv_.notify_all();
  if (maintenance_.joinable()) maintenance_.join();
}

void Engine::MaintenanceLoop() {
  SetThreadName("maintenance");
  const auto interval = std::chrono::milliseconds(spec_.maintenance_interval_ms);
  std::unique_lock<std::mutex> lock(maintenance_mu_);
  while (!maintenance_cv_.wait_for(lock, interval, [this] { return maintenance_stop_; })) {
    lock.unlock();
    // After a failed write the store reopens itself first (StateStore::Resume).
    Result<MaintenanceReport> report = state_->RunMaintenance();
    if (!report.ok()) {
      spdlog::warn("{}", report.status().ToString());
      state_->HoldWriteError("state maintenance", report.status());
    } else {
      state_->ReleaseWriteError("state maintenance");
    }
    lock.lock();
  }
}

std::string Engine::HttpUrl() const {
  if (!query_) return {};
  std::string host = ParseHostPort(spec_.query_listen).value().host;
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return "http://" + host + ":" + std::to_string(query_->port());
}

nlohmann::json Engine::Describe() const {
  nlohmann::json endpoints = nlohmann::json::object();
  for (const auto& [stage, endpoint] : executor_->Endpoints()) endpoints[stage] = endpoint;
  return {{"topology", spec_.name},
          {"http", HttpUrl()},
          {"endpoints", endpoints},
          {"state", spec_.state_path}};
}

nlohmann::json Engine::Health() const {
  nlohmann::json health = {
      {"status", "ok"},
      {"role", "engine"},
      {"topology", spec_.name},
      {"running", executor_->running()},
      {"uptime_s", static_cast<double>(clock_->NowMs() - started_ms_) / 1000.0},
      {"stage_failures", executor_->stage_failures()},
      {"watermark_ms", state_ ? state_->Watermark() : 0},
      {"interned_strings", interner_.size()},
      {"build", BuildInfoJson()}};
  // Scrape targets (prometheus_scrape sources): counts, and the ones down with their last error
  // (at most 100 listed). A down target does not make the engine degraded.
  std::vector<SourceHealth::Target> targets = source_health_.Snapshot();
  if (!targets.empty()) {
    nlohmann::json down = nlohmann::json::array();
    size_t up = 0;
    for (const SourceHealth::Target& t : targets) {
      if (t.up) {
        ++up;
      } else if (down.size() < 100) {
        down.push_back({{"stage", t.stage},
                        {"target", t.target},
                        {"instance", t.instance},
                        {"last_error", t.last_error},
                        {"last_error_ms", t.last_error_ms},
                        {"failures", t.failures}});
      }
    }
    health["scrape"] = {{"targets", targets.size()}, {"up", up}, {"down", std::move(down)}};
  }
  // Broker connections (jetstream sources): each one's state; one that is down makes the engine
  // degraded (its source ingests nothing until the client library has reconnected).
  std::vector<SourceHealth::Connection> connections = source_health_.Connections();
  if (!connections.empty()) {
    const int64_t now_ms = clock_->NowMs();
    nlohmann::json list = nlohmann::json::array();
    std::string down;
    for (const SourceHealth::Connection& c : connections) {
      nlohmann::json entry = {{"stage", c.stage},
                              {"kind", c.kind},
                              {"endpoint", c.endpoint},
                              {"server", c.server},
                              {"connected", c.connected},
                              {"since_ms", c.since_ms},
                              {"disconnects", c.disconnects},
                              {"reconnects", c.reconnects}};
      entry["last_fetch_age_s"] =
          c.last_fetch_ms > 0
              ? nlohmann::json(static_cast<double>(std::max<int64_t>(now_ms - c.last_fetch_ms, 0)) /
                               1000.0)
              : nlohmann::json(nullptr);
      list.push_back(std::move(entry));
      if (!c.connected) {
        if (!down.empty()) down += "; ";
        down += "source " + c.stage + " (" + c.kind + ") disconnected from " + c.endpoint +
                " for " + std::to_string(std::max<int64_t>(now_ms - c.since_ms, 0) / 1000) +
                " s, reconnecting";
      }
    }
    health["connections"] = std::move(list);
    if (!down.empty()) {
      health["status"] = "degraded";
      health["reason"] = down;
    }
  }
  if (state_) {
    Status error = state_->BackgroundError();
    if (!error.ok()) {
      health["status"] = "degraded";
      health["reason"] = "state writes failing, held and retried: " + error.message();
    }
  }
  return health;
}

}  // namespace inferscope
