#include "cli/query_node.h"

#include <stdlib.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <system_error>

#include <spdlog/spdlog.h>

#include "cli/version.h"
#include "pipeline/address.h"
#include "pipeline/thread_name.h"
#include "query/handlers.h"
#include "query/server.h"

namespace inferscope {
namespace {

// FNV-1a over every record of `table` (key and value, length-delimited): cheap next to parsing
// the JSON, so a catch-up reloads a registry only when its table changed.
Result<uint64_t> HashTable(const StateStore& store, const RecordTable& table) {
  uint64_t hash = 1469598103934665603ULL;
  auto mix = [&hash](std::string_view bytes) {
    for (unsigned char c : bytes) {
      hash ^= c;
      hash *= 1099511628211ULL;
    }
    hash ^= bytes.size();
    hash *= 1099511628211ULL;
  };
  Status s = store.ScanRecords(table, "", "", [&](std::string_view key, std::string_view value) {
    mix(key);
    mix(value);
    return true;
  });
  if (!s.ok()) return s;
  return hash;
}

Result<std::string> MakeTempDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/inferscope-query-node.XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    return Status::IOError("cannot create a directory like " + pattern);
  }
  return pattern;
}

}  // namespace

Status QueryNodeOptions::Validate() const {
  if (state_dir.empty()) return Status::InvalidArgument("--state-dir is required");
  std::error_code ec;
  if (!results.url.empty()) {
    if (Status s = results.Validate(); !s.ok()) return s;
    if (maintenance_interval_ms < 10 || maintenance_interval_ms > 3'600'000) {
      return Status::InvalidArgument("--maintenance-interval must be in 10ms..1h, got " +
                                     FormatDurationMs(maintenance_interval_ms));
    }
  } else if (!std::filesystem::is_directory(state_dir, ec)) {
    return Status::InvalidArgument("--state-dir: " + state_dir +
                                   " is not a directory (start the engine on it first)");
  }
  if (!secondary_path.empty() && std::filesystem::weakly_canonical(secondary_path, ec) ==
                                     std::filesystem::weakly_canonical(state_dir, ec)) {
    return Status::InvalidArgument("--secondary-path must not be the state directory");
  }
  Result<HostPort> hp = ParseHostPort(listen);
  if (!hp.ok()) return Status::InvalidArgument("--listen: " + hp.status().message());
  if (access.tokens.empty() && !IsLoopbackHost(hp->host)) {
    return Status::InvalidArgument(
        "--listen: '" + hp->host +
        "' is not a loopback address and no API tokens are configured (--tokens FILE, or "
        "query.tokens / query.token_file in --topology): the API would answer anyone who can "
        "reach it; configure tokens or listen on 127.0.0.1");
  }
  if (Status s = access.Validate(); !s.ok()) return s;
  if (Status s = export_options.Validate(); !s.ok()) return s;
  if (catch_up_interval_ms < 10 || catch_up_interval_ms > 3'600'000) {
    return Status::InvalidArgument("--catch-up-interval must be in 10ms..1h, got " +
                                   FormatDurationMs(catch_up_interval_ms));
  }
  return Status::Ok();
}

Result<std::unique_ptr<QueryNode>> QueryNode::Start(QueryNodeOptions options, const Clock* clock) {
  INFERSCOPE_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<QueryNode> node(new QueryNode());
  node->clock_ = clock;
  node->started_ms_ = clock->NowMs();
  if (!options.results.url.empty()) {
    options.secondary_path.clear();  // the node's own store: no secondary files
  } else if (options.secondary_path.empty()) {
    Result<std::string> dir = MakeTempDir();
    if (!dir.ok()) return dir.status();
    options.secondary_path = *dir;
    node->own_secondary_path_ = true;
  } else {
    std::error_code ec;
    std::filesystem::create_directories(options.secondary_path, ec);
    if (ec) {
      return Status::IOError("--secondary-path: cannot create " + options.secondary_path + ": " +
                             ec.message());
    }
  }
  node->options_ = std::move(options);
  const QueryNodeOptions& o = node->options_;
  MetricsRegistry& metrics = node->metrics_;
  metrics.AddProcessMetrics();
  metrics
      .GetGauge("inferscope_build_info",
                "Build of this process and its libraries' versions; always 1", BuildInfoLabels())
      ->Set(1);
  node->catch_up_seconds_ =
      metrics.GetHistogram("inferscope_query_node_catch_up_seconds",
                           "Duration of catch-ups with the engine's state (TryCatchUpWithPrimary)");
  node->catch_up_failures_ = metrics.GetCounter("inferscope_query_node_catch_up_failures_total",
                                                "Catch-ups with the engine's state that failed");
  node->reopens_total_ = metrics.GetCounter("inferscope_query_node_reopens_total",
                                            "Secondary instance reopened after a failed catch-up");
  node->reloads_silences_ = metrics.GetCounter(
      "inferscope_query_node_registry_reloads_total",
      "Registries reloaded from the store because their table changed", {{"registry", "silences"}});
  node->reloads_workflows_ =
      metrics.GetCounter("inferscope_query_node_registry_reloads_total",
                         "Registries reloaded from the store because their table changed",
                         {{"registry", "workflows"}});
  QueryNode* self = node.get();
  metrics.AddCallbackGauge(
      "inferscope_query_node_lag_seconds",
      "Seconds since the start of the last successful catch-up (what the answers may miss)", {},
      [self] {
        std::lock_guard<std::mutex> lock(self->stats_mu_);
        if (self->last_catch_up_ms_ == 0) return 0.0;
        return static_cast<double>(self->clock_->NowMs() - self->last_catch_up_ms_) / 1000.0;
      },
      self);

  if (node->results_mode()) {
    if (Status st = node->StartResultsMode(); !st.ok()) {
      node->Stop();
      return st;
    }
    return node;
  }

  StateStoreOptions store_options;
  store_options.path = o.state_dir;
  store_options.secondary_path = o.secondary_path;
  store_options.tiers = o.fallback_tiers;
  store_options.clock = clock;
  const int64_t open_started = clock->NowMs();
  Result<std::unique_ptr<StateStore>> state = StateStore::Open(store_options, &metrics);
  if (!state.ok()) {
    node->Stop();
    return state.status();
  }
  node->state_ = std::move(state).value();
  {
    // Opening read what the engine had committed: that counts as the first catch-up.
    std::lock_guard<std::mutex> lock(node->stats_mu_);
    node->last_catch_up_ms_ = open_started;
  }
  node->silence_store_ = std::make_unique<StateSilenceStore>(node->state_.get());
  node->silences_ = std::make_unique<SilenceRegistry>(node->silence_store_.get(), clock);
  node->workflow_store_ = std::make_unique<StateWorkflowStore>(node->state_.get());
  node->workflows_ = std::make_unique<WorkflowRegistry>(node->workflow_store_.get(), clock);
  if (Status st = node->RefreshRegistries(); !st.ok()) {
    node->Stop();
    return st;
  }

  HostPort listen = ParseHostPort(o.listen).value();  // checked in Validate
  node->host_ = listen.host;
  QueryServer::Options server_options;
  server_options.host = listen.host;
  server_options.port = listen.port;
  server_options.read_only = true;
  server_options.engine_url = o.engine_url;
  server_options.access = o.access;
  server_options.export_options = o.export_options;
  if (o.max_url_bytes > 0) server_options.max_url_bytes = o.max_url_bytes;
  if (o.max_body_bytes > 0) server_options.max_body_bytes = o.max_body_bytes;
  if (o.max_connections_per_address > 0) {
    server_options.max_connections_per_address = static_cast<int>(o.max_connections_per_address);
  }
  node->query_ = std::make_unique<QueryServer>(
      server_options, node->state_.get(), &node->metrics_, clock, [self] { return self->Health(); },
      o.capabilities);
  node->query_->SetSilences(node->silences_.get());
  node->query_->SetWorkflows(node->workflows_.get());
  if (Status st = node->query_->Start(); !st.ok()) {
    node->Stop();
    return st.WithContext("starting the query API on " + o.listen);
  }
  node->thread_ = std::thread([self] { self->CatchUpLoop(); });
  spdlog::info("query node on {} (secondary files in {}) at {}, catching up every {}", o.state_dir,
               o.secondary_path, node->HttpUrl(), FormatDurationMs(o.catch_up_interval_ms));
  return node;
}

QueryNode::~QueryNode() { Stop(); }

void QueryNode::Stop() {
  {
    std::lock_guard<std::mutex> lock(loop_mu_);
    stop_ = true;
  }
  loop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (query_) query_->Stop();
  query_.reset();
  if (results_) results_->Stop();
  results_.reset();
  workflows_.reset();
  workflow_store_.reset();
  silences_.reset();
  silence_store_.reset();
  state_.reset();
  metrics_.RemoveCallbacks(this);
  if (own_secondary_path_) {
    std::error_code ec;
    std::filesystem::remove_all(options_.secondary_path, ec);
    own_secondary_path_ = false;
  }
}

void QueryNode::CatchUpLoop() {
  SetThreadName(results_mode() ? "maintenance" : "catch-up");
  const auto interval = std::chrono::milliseconds(results_mode() ? options_.maintenance_interval_ms
                                                                 : options_.catch_up_interval_ms);
  std::unique_lock<std::mutex> lock(loop_mu_);
  while (!loop_cv_.wait_for(lock, interval, [this] { return stop_; })) {
    lock.unlock();
    if (results_mode()) {
      MaintenanceOnce();
    } else if (Status st = CatchUpOnce(); !st.ok()) {
      spdlog::warn("query node: {}", st.ToString());
    }
    lock.lock();
  }
}

Status QueryNode::StartResultsMode() {
  const QueryNodeOptions& o = options_;
  std::error_code ec;
  std::filesystem::create_directories(o.state_dir, ec);
  if (ec) return Status::IOError("--state-dir: cannot create " + o.state_dir + ": " + ec.message());
  StateStoreOptions store_options;
  store_options.path = o.state_dir;
  store_options.tiers = o.fallback_tiers.empty() ? DefaultTiers() : o.fallback_tiers;
  store_options.clock = clock_;
  Result<std::unique_ptr<StateStore>> state = StateStore::Open(store_options, &metrics_);
  if (!state.ok()) return state.status().WithContext("opening the node's store");
  state_ = std::move(state).value();
  silence_store_ = std::make_unique<StateSilenceStore>(state_.get());
  silences_ = std::make_unique<SilenceRegistry>(silence_store_.get(), clock_);
  workflow_store_ = std::make_unique<StateWorkflowStore>(state_.get());
  workflows_ = std::make_unique<WorkflowRegistry>(workflow_store_.get(), clock_);
  INFERSCOPE_RETURN_IF_ERROR(RefreshRegistries());
  Result<std::unique_ptr<ResultsFeed>> feed =
      ResultsFeed::Start(o.results, state_.get(), &metrics_, clock_);
  if (!feed.ok()) return feed.status();
  results_ = std::move(feed).value();

  HostPort listen = ParseHostPort(o.listen).value();  // checked in Validate
  host_ = listen.host;
  QueryServer::Options server_options;
  server_options.host = listen.host;
  server_options.port = listen.port;
  server_options.read_only = true;
  server_options.engine_url = o.engine_url;
  server_options.access = o.access;
  server_options.export_options = o.export_options;
  if (o.max_url_bytes > 0) server_options.max_url_bytes = o.max_url_bytes;
  if (o.max_body_bytes > 0) server_options.max_body_bytes = o.max_body_bytes;
  if (o.max_connections_per_address > 0) {
    server_options.max_connections_per_address = static_cast<int>(o.max_connections_per_address);
  }
  QueryNode* self = this;
  query_ = std::make_unique<QueryServer>(
      server_options, state_.get(), &metrics_, clock_, [self] { return self->Health(); },
      o.capabilities);
  query_->SetSilences(silences_.get());
  query_->SetWorkflows(workflows_.get());
  if (Status st = query_->Start(); !st.ok()) {
    return st.WithContext("starting the query API on " + o.listen);
  }
  thread_ = std::thread([self] { self->CatchUpLoop(); });
  spdlog::info("query node at {} materialising results stream {} ({}) into {}", HttpUrl(),
               o.results.stream, o.results.url, o.state_dir);
  return Status::Ok();
}

void QueryNode::MaintenanceOnce() {
  Result<MaintenanceReport> report = state_->RunMaintenance();
  std::lock_guard<std::mutex> lock(stats_mu_);
  if (!report.ok()) {
    maintenance_error_ = report.status().ToString();
    spdlog::warn("query node: state maintenance: {}", maintenance_error_);
  } else {
    maintenance_error_.clear();
  }
}

Status QueryNode::CatchUpOnce() {
  std::lock_guard<std::mutex> serial(catch_up_mu_);
  Result<CatchUpReport> report = state_->CatchUp();
  Status status = report.ok() ? RefreshRegistries() : report.status();
  std::lock_guard<std::mutex> lock(stats_mu_);
  ++catch_ups_;
  if (!status.ok()) {
    ++failures_;
    ++consecutive_failures_;
    last_error_ = status.ToString();
    catch_up_failures_->Inc();
    return status;
  }
  consecutive_failures_ = 0;
  last_catch_up_ms_ = report->started_ms;
  last_duration_ns_ = report->duration_ns;
  tiers_changed_ = report->tiers_changed;
  catch_up_seconds_->Observe(static_cast<double>(report->duration_ns) / 1e9);
  if (report->reopened) {
    ++reopens_;
    reopens_total_->Inc();
  }
  return Status::Ok();
}

Status QueryNode::RefreshRegistries() {
  Result<uint64_t> silences = HashTable(*state_, kSilencesTable);
  if (!silences.ok()) return silences.status();
  if (*silences != silences_hash_) {
    INFERSCOPE_RETURN_IF_ERROR(silences_->Load().WithContext("reloading silences"));
    silences_hash_ = *silences;
    reloads_silences_->Inc();
  }
  Result<uint64_t> workflows = HashTable(*state_, kWorkflowsTable);
  if (!workflows.ok()) return workflows.status();
  if (*workflows != workflows_hash_) {
    INFERSCOPE_RETURN_IF_ERROR(workflows_->Load().WithContext("reloading workflows"));
    workflows_hash_ = *workflows;
    reloads_workflows_->Inc();
  }
  return Status::Ok();
}

std::string QueryNode::HttpUrl() const {
  if (!query_) return {};
  std::string host = host_;
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return "http://" + host + ":" + std::to_string(query_->port());
}

nlohmann::json QueryNode::Describe() const {
  if (results_mode()) {
    return {{"role", "query-node"},
            {"http", HttpUrl()},
            {"state", options_.state_dir},
            {"results", options_.results.url},
            {"stream", options_.results.stream}};
  }
  return {{"role", "query-node"},
          {"http", HttpUrl()},
          {"state", options_.state_dir},
          {"secondary", options_.secondary_path}};
}

nlohmann::json QueryNode::Health() const {
  const int64_t now = clock_->NowMs();
  const int64_t watermark = state_ ? state_->Watermark() : 0;
  if (results_mode()) {
    // The node's view is what it has applied from the results stream; lag_ms is the time since
    // it last had applied everything the stream held.
    std::string error;
    const int64_t lag = results_ ? results_->LagMs(&error) : -1;
    nlohmann::json health = {
        {"status", "ok"},
        {"role", "query-node"},
        {"mode", "results"},
        {"state", options_.state_dir},
        {"uptime_s", static_cast<double>(now - started_ms_) / 1000.0},
        {"watermark_ms", watermark},
        {"watermark_age_ms", watermark > 0 ? nlohmann::json(now - watermark) : nlohmann::json()},
        {"results", results_ ? results_->Health() : nlohmann::json()},
        {"build", BuildInfoJson()}};
    if (lag >= 0) health["lag_ms"] = lag;  // absent until the node has caught up once
    std::lock_guard<std::mutex> lock(stats_mu_);
    if (!error.empty()) {
      health["status"] = "degraded";
      health["reason"] = "materialising the results stream fails: " + error;
    } else if (!maintenance_error_.empty()) {
      health["status"] = "degraded";
      health["reason"] = "state maintenance fails: " + maintenance_error_;
    }
    return health;
  }
  std::lock_guard<std::mutex> lock(stats_mu_);
  nlohmann::json catch_up = {
      {"interval_ms", options_.catch_up_interval_ms},
      {"last_at",
       last_catch_up_ms_ > 0 ? nlohmann::json(FormatRfc3339(last_catch_up_ms_)) : nlohmann::json()},
      {"last_at_ms", last_catch_up_ms_},
      {"last_duration_ms", static_cast<double>(last_duration_ns_) / 1e6},
      {"count", catch_ups_},
      {"failures", failures_},
      {"consecutive_failures", consecutive_failures_},
      {"reopens", reopens_}};
  if (!last_error_.empty()) catch_up["last_error"] = last_error_;
  nlohmann::json health = {
      {"status", "ok"},
      {"role", "query-node"},
      {"state", options_.state_dir},
      {"uptime_s", static_cast<double>(now - started_ms_) / 1000.0},
      {"watermark_ms", watermark},
      {"catch_up", std::move(catch_up)},
      // The answers hold everything the engine committed before the last catch-up started.
      {"lag_ms",
       last_catch_up_ms_ > 0 ? nlohmann::json(now - last_catch_up_ms_) : nlohmann::json()},
      {"watermark_age_ms", watermark > 0 ? nlohmann::json(now - watermark) : nlohmann::json()},
      {"build", BuildInfoJson()}};
  if (consecutive_failures_ > 0) {
    health["status"] = "degraded";
    health["reason"] = "catching up with the engine's state failed " +
                       std::to_string(consecutive_failures_) +
                       " time(s) in a row; answering from the last view: " + last_error_;
  } else if (tiers_changed_) {
    health["status"] = "degraded";
    health["reason"] =
        "the engine now stores another tier list than this query node opened with; restart "
        "the query node to read the new tiers";
  }
  return health;
}

}  // namespace inferscope
