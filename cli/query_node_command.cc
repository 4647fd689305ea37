#include <signal.h>

#include <spdlog/spdlog.h>

#include <ctime>
#include <filesystem>
#include <fstream>

#include "cli/builtins.h"
#include "cli/commands.h"
#include "cli/query_node.h"
#include "pipeline/config.h"
#include "pipeline/json_text.h"
#include "pipeline/topology.h"

namespace inferscope {

int QueryNodeCommand(const QueryNodeArgs& args) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  QueryNodeOptions options;
  options.state_dir = args.state_dir;
  options.secondary_path = args.secondary_path;
  options.listen = args.listen;
  options.engine_url = args.engine_url;
  std::optional<int64_t> interval = ParseDurationMs(args.catch_up_interval);
  if (!interval) {
    spdlog::error("--catch-up-interval: expected a duration such as 500ms or 1s, got '{}'",
                  args.catch_up_interval);
    return 2;
  }
  options.catch_up_interval_ms = *interval;
  options.results.url = args.results;
  options.results.stream = args.results_stream;
  options.results.subject_prefix = args.results_subject_prefix;
  options.results.durable = args.results_consumer;
  std::optional<int64_t> maintenance = ParseDurationMs(args.maintenance_interval);
  if (!maintenance) {
    spdlog::error("--maintenance-interval: expected a duration such as 10s, got '{}'",
                  args.maintenance_interval);
    return 2;
  }
  options.maintenance_interval_ms = *maintenance;
  if (!args.topology.empty()) {
    Result<TopologySpec> spec = LoadTopologyFile(args.topology);
    if (!spec.ok()) {
      spdlog::error("{}", spec.status().message());
      return 2;
    }
    options.fallback_tiers = spec->state_tiers;
    Result<QuerySectionAccess> access = ParseQueryAccess(spec->query_at);
    if (!access.ok()) {
      spdlog::error("{}", access.status().message());
      return 2;
    }
    options.access = access->access;
    options.export_options = access->export_options;
    options.max_url_bytes = access->max_url_bytes;
    options.max_body_bytes = access->max_body_bytes;
    options.max_connections_per_address = access->max_connections_per_address;
  }
  if (!args.tokens.empty()) {
    Result<std::vector<ApiToken>> tokens = LoadTokenFile(args.tokens);
    if (!tokens.ok()) {
      spdlog::error("--tokens: {}", tokens.status().message());
      return 2;
    }
    for (ApiToken& t : *tokens) options.access.tokens.push_back(std::move(t));
  }
  if (args.rate_limit >= 0) options.access.rate_limit.rate = args.rate_limit;
  if (args.rate_burst >= 0) options.access.rate_limit.burst = args.rate_burst;
  if (!args.cors_origins.empty()) options.access.cors.allowed_origins = args.cors_origins;
  Registry registry;
  RegisterBuiltins(registry);
  options.capabilities = registry.List();
  if (Status st = options.Validate(); !st.ok()) {
    spdlog::error("{}", st.message());
    return 2;
  }

  Result<std::unique_ptr<QueryNode>> started = QueryNode::Start(options);
  if (!started.ok()) {
    spdlog::error("{}", started.status().ToString());
    return 1;
  }
  QueryNode& node = **started;
  if (!args.ready_file.empty()) {
    const std::string tmp = args.ready_file + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << ToJsonText(node.Describe()) << '\n';
    }
    std::error_code ec;
    std::filesystem::rename(tmp, args.ready_file, ec);
    if (ec) {
      spdlog::error("cannot write {}: {}", args.ready_file, ec.message());
      return 1;
    }
  }
  WaitForStop(signals, args.duration_s);
  spdlog::info("query node stopping");
  node.Stop();
  return 0;
}

}  // namespace inferscope
