// libFuzzer target: the query API's parameter parsing, through the real handlers.
//
// Input: byte 0 picks a route of the route table (query/handlers.h: Routes(), whatever it holds
// when built); the rest is split at the first two '\n' into
//   <path parameter>\n<query string>\n<body>
// The query string is parsed by cpp-httplib exactly as the server parses a request target
// (httplib::detail::parse_query_text: '&'-separated, percent-decoded), the path parameter is
// percent-decoded as httplib decodes paths, and the route's handler runs against a real StateStore
// (RocksDB in a temporary directory, written once at start-up: 2 instances, 3 models, 10 s panes
// over 20 minutes, default storage tiers, one alert) and in-memory silence and workflow registries
// (one silence, one workflow pending approval) and a live routing learner (model "llama" served by
// "vis" and "txt" with 50 outcomes each, model "empty" with no backend) made fresh for each input,
// so runs are independent.
//
// Checked besides the sanitizers: the handler never throws (the server would turn that into a 500);
// it answers 200, 201, 400, 404 or 409, or 503 UNAVAILABLE on the routing routes that ask the live
// learner (no backend can take the request) — 500 means a handler failed on input it should have
// rejected; every error reply has the documented shape; the reply serialises as the server does.
// The pure parsers behind the parameters (ParseTimeMs, ParseDurationMs, GlobMatch, FormatRfc3339)
// are called on every query value too, with a round-trip check of ParseTimeMs(FormatRfc3339(t)) ==
// t.

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <httplib.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>

#include "alerting/alert.h"
#include "alerting/silence.h"
#include "pipeline/clock.h"
#include "pipeline/config.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/tiers.h"
#include "query/handlers.h"
#include "routing/live_router.h"
#include "state/alert_store.h"
#include "state/state_store.h"
#include "workflows/workflow.h"

namespace inferscope {
namespace {

constexpr int64_t kPaneMs = 10'000;
constexpr int64_t kStartMs = 1'718'000'000'000;  // 2024-06-10T06:13:20Z
constexpr int64_t kPanes = 120;
constexpr int64_t kNowMs = kStartMs + kPanes * kPaneMs + 60'000;

struct World {
  std::string dir;
  ManualClock clock{kNowMs};
  MetricsRegistry metrics;
  Interner interner;
  std::unique_ptr<StateStore> store;
  routing::RoutingOptions routing_options;
  ApiContext ctx;
};

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "query_params_fuzzer: %s\n", what.c_str());
  std::abort();
}

World* MakeWorld() {
  auto* w = new World();
  const char* tmp = std::getenv("TMPDIR");
  std::string templ =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/inferscope-fuzz-query-XXXXXX";
  if (mkdtemp(templ.data()) == nullptr) Fail("mkdtemp failed");
  w->dir = templ;
  StateStoreOptions options;
  options.path = w->dir;
  options.tiers = DefaultTiers();
  options.clock = &w->clock;
  Result<std::unique_ptr<StateStore>> store = StateStore::Open(options, &w->metrics);
  if (!store.ok()) Fail("cannot open the store: " + store.status().ToString());
  w->store = std::move(store).value();

  std::vector<WindowSummary> panes;
  const char* series[][3] = {
      {"node-1", "llama", "ttft_ms"},       {"node-1", "llama", "e2e_ms"},
      {"node-1", "mistral", "ttft_ms"},     {"node-1", "llama", "prompt_tokens"},
      {"node-1", "llama", "cached_tokens"}, {"node-2", "qwen", "e2e_ms"}};
  for (const auto& s : series) {
    for (int64_t k = 0; k < kPanes; ++k) {
      WindowSummary pane;
      pane.series = {w->interner.Intern(s[0]), w->interner.Intern(s[1]), w->interner.Intern(s[2])};
      pane.start_ms = kStartMs + k * kPaneMs;
      pane.end_ms = pane.start_ms + kPaneMs;
      pane.max_event_time_ms = pane.end_ms - 1;
      for (int j = 1; j <= 5; ++j) {
        pane.agg.Add(static_cast<double>(10 * k + j), pane.start_ms + j);
        pane.agg.AddEvent(j == 1 && k % 3 == 0);
      }
      panes.push_back(std::move(pane));
    }
  }
  Status written = w->store->WritePanes(panes, w->interner, kStartMs + kPanes * kPaneMs);
  if (!written.ok()) Fail("cannot write panes: " + written.ToString());
  if (Result<MaintenanceReport> r = w->store->RunMaintenance(); !r.ok()) {
    Fail("maintenance failed: " + r.status().ToString());
  }

  Alert alert;
  alert.rule = "ttft_p95";
  alert.instance = "node-1";
  alert.model = "llama";
  alert.metric = "ttft_ms";
  alert.stat = "p95";
  alert.fingerprint =
      AlertFingerprint(alert.rule, alert.instance, alert.model, alert.metric, alert.stat);
  alert.state = AlertState::kFiring;
  alert.type = AnomalyType::kThreshold;
  alert.severity = Severity::kWarning;
  alert.value = 900;
  alert.window_start_ms = kStartMs;
  alert.window_end_ms = kStartMs + kPaneMs;
  alert.event_time_ms = kStartMs + kPaneMs - 1;
  alert.detected_at_ms = kNowMs - 1000;
  alert.active_since_ms = kStartMs;
  alert.message = "p95 ttft above 800 ms";
  if (Status s = StoreAlerts(*w->store, std::span<const Alert>(&alert, 1)); !s.ok()) {
    Fail("cannot store the alert: " + s.ToString());
  }

  const char* catalogue = R"(
models:
  - name: llama
    backends:
      - {name: vis, capabilities: [vision]}
      - {name: txt}
  - name: empty
    backends: []
)";
  if (!routing::ParseRoutingOptions(ConfigNode("fuzz.yaml", YAML::Load(catalogue), "options"),
                                    &w->routing_options)
           .ok()) {
    Fail("cannot parse the routing catalogue");
  }

  w->ctx.store = w->store.get();
  w->ctx.metrics = &w->metrics;
  w->ctx.clock = &w->clock;
  w->ctx.health_info = [] { return nlohmann::json{{"version", "fuzz"}}; };
  w->ctx.capabilities = {{"source", "zmq", "ZeroMQ source"}, {"sink", "zmq_pub", "sink"}};
  return w;
}

World& TheWorld() {
  static World* world = MakeWorld();
  return *world;
}

void RemoveWorld() {
  std::error_code ec;
  std::filesystem::remove_all(TheWorld().dir, ec);
}

void CheckParsers(const std::string& value) {
  if (std::optional<int64_t> t = ParseTimeMs(value); t && *t >= 0 && *t <= 253'402'300'799'999) {
    const std::string formatted = FormatRfc3339(*t);
    const std::optional<int64_t> back = ParseTimeMs(formatted);
    if (!back || *back != *t) {
      Fail("ParseTimeMs(FormatRfc3339(" + std::to_string(*t) + ")) = '" + formatted +
           "' does not parse back");
    }
  }
  (void)ParseDurationMs(value);
  const size_t half = value.size() / 2;
  (void)GlobMatch(std::string_view(value).substr(0, half), std::string_view(value).substr(half));
}

// A live learner that has seen 50 outcomes of each "llama" backend (select and recommendations
// change its state, so each input gets its own).
std::shared_ptr<routing::LiveRouter> MakeRouter(const World& w) {
  auto router = std::make_shared<routing::LiveRouter>(w.routing_options, nullptr);
  router->With([](routing::RoutingLearner& l) {
    for (int i = 0; i < 50; ++i) {
      const int64_t t = kNowMs - 60'000 + i * 10;
      for (const char* backend : {"vis", "txt"}) {
        l.Observe({.backend = backend,
                   .model = "llama",
                   .time_ms = t,
                   .ttft_ms = 100,
                   .tpot_ms = 20,
                   .e2e_ms = 2100,
                   .output_tokens = 100});
      }
    }
  });
  router->AdvanceTo(kNowMs - 60'000 + 500);
  return router;
}

}  // namespace
}  // namespace inferscope

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  inferscope::TheWorld();
  std::atexit(inferscope::RemoveWorld);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace inferscope;
  if (size < 1 || size > 8192) return -1;
  World& w = TheWorld();
  const std::vector<Route>& routes = Routes();
  const Route& route = routes[data[0] % routes.size()];

  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  auto take_line = [&rest]() {
    const size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    return std::string(line);
  };
  const std::string path_param = take_line();
  const std::string query = take_line();
  const std::string body(rest);

  ApiRequest req;
  if (route.pattern.find('(') != std::string::npos) {
    // The route's capture ([^/]+) matches a non-empty decoded path segment without '/'.
    std::string decoded = httplib::detail::decode_url(path_param, false);
    if (decoded.empty() || decoded.find('/') != std::string::npos) return -1;
    req.path_params.push_back(std::move(decoded));
  }
  httplib::Params params;
  httplib::detail::parse_query_text(query, params);
  req.params.insert(params.begin(), params.end());
  if (route.method == "POST") req.body = body;
  for (const auto& [name, value] : req.params) CheckParsers(value);

  // A fresh registry each time keeps runs independent; one silence so that lookups can hit.
  SilenceRegistry silences(nullptr, &w.clock);
  Silence silence;
  silence.matchers = {{"instance", "node-*"}};
  silence.starts_at_ms = kNowMs - 1000;
  silence.ends_at_ms = kNowMs + 3'600'000;
  silence.created_by = "fuzz";
  if (!silences.Add(silence).ok()) Fail("cannot add the seed silence");
  // And one workflow, pending approval.
  WorkflowRegistry workflows(nullptr, &w.clock);
  Result<Workflow> seed = WorkflowFromRequest(
      {{"instance", "node-1"}, {"model", "m"}, {"target", {{"metric", "ttft_ms"}}}});
  if (!seed.ok() || !workflows.Create(*seed).ok()) Fail("cannot add the seed workflow");
  routing::RoutingRegistry routers;
  routers.Register("routing", MakeRouter(w));
  ApiContext ctx = w.ctx;
  ctx.silences = &silences;
  ctx.workflows = &workflows;
  ctx.routing = &routers;

  const ApiReply reply = route.handler(ctx, req);  // an exception here is a finding
  const std::string text =
      reply.body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  // 409: a workflow transition its state does not allow; 503: no backend of the live learner can
  // take the request (only the routes that ask it).
  const bool asks_learner = route.pattern.starts_with("/v1/routing/select") ||
                            route.pattern.starts_with("/v1/models/recommendations");
  const bool unavailable = reply.status == 503 && asks_learner && reply.body.is_object() &&
                           reply.body.contains("error") && reply.body["error"].is_object() &&
                           reply.body["error"].value("code", "") == "UNAVAILABLE";
  if (reply.status != 200 && reply.status != 201 && reply.status != 400 && reply.status != 404 &&
      reply.status != 409 && !unavailable) {
    Fail(route.method + " " + route.pattern + " answered " + std::to_string(reply.status) + ": " +
         text);
  }
  if (reply.status >= 400) {
    const nlohmann::json& body = reply.body;
    const bool shaped =
        body.is_object() && body.contains("error") && body.at("error").is_object() &&
        body.at("error").contains("code") && body.at("error").at("code").is_string() &&
        body.at("error").contains("message") && body.at("error").at("message").is_string() &&
        body.at("error").contains("details") && body.at("error").at("details").is_object();
    if (!shaped) Fail("error reply without the documented shape: " + text);
  }
  return 0;
}
