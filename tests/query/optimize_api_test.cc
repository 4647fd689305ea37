// POST /v1/optimization/recommend, POST /v1/performance/optimize and
// GET /v1/performance/profile/{model_id} over a real RocksDB store holding the panes of a
// simulated fleet (the serving model, one instance with a KV cache too small), served by the real
// HTTP server on 127.0.0.1: success and every error case.

#include <gtest/gtest.h>
#include <httplib.h>

#include <map>
#include <string>
#include <tuple>

#include <nlohmann/json.hpp>

#include "query/server.h"
#include "sim/faults.h"
#include "sim/fleet.h"
#include "state/bottleneck_store.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr int64_t kT0 = 1'700'000'000'000;  // event time of simulated time 0
constexpr int64_t kPaneMs = 10'000;
constexpr char kModel[] = "llama-3.1-8b-instruct";

// Turns the fleet's outcomes and gauges into 10 s panes per series, as window_aggregate does.
class PaneBuilder final : public sim::OutcomeSink {
 public:
  explicit PaneBuilder(const sim::Fleet* fleet = nullptr) : fleet_(fleet) {}
  void Bind(const sim::Fleet* fleet) { fleet_ = fleet; }

  void OnRequest(const sim::RequestOutcome& o) override {
    const int64_t t = kT0 + static_cast<int64_t>(o.time_ms);
    const std::string& instance = fleet_->instance(o.instance).options().name;
    auto add = [&](const char* metric, double value, bool has) {
      Aggregate& a = Pane(instance, metric, t);
      if (has) a.Add(value, t);
      a.AddEvent(!o.ok());
    };
    add("e2e_ms", o.e2e_ms, true);
    add("ttft_ms", o.ttft_ms, o.ttft_ms >= 0);
    add("tpot_ms", o.tpot_ms, o.tpot_ms >= 0);
    add("prompt_tokens", o.prompt_tokens, true);
    add("output_tokens", o.output_tokens, true);
    add("cached_tokens", o.cached_tokens, true);
    add("cost_usd", 0.0002 * (o.prompt_tokens + o.output_tokens) / 1000, true);
  }
  void OnGauge(const sim::GaugeSample& g) override {
    const int64_t t = kT0 + static_cast<int64_t>(g.time_ms);
    Pane(fleet_->instance(g.instance).options().name, std::string(sim::GaugeName(g.gauge)), t)
        .Add(g.value, t);
  }

  std::vector<WindowSummary> Panes(Interner& interner) const {
    std::vector<WindowSummary> out;
    for (const auto& [key, agg] : panes_) {
      const auto& [instance, metric, start] = key;
      WindowSummary s;
      s.series = {interner.Intern(instance), interner.Intern(kModel), interner.Intern(metric)};
      s.start_ms = start;
      s.end_ms = start + kPaneMs;
      s.max_event_time_ms = start;
      s.agg = agg;
      out.push_back(std::move(s));
    }
    return out;
  }

 private:
  Aggregate& Pane(const std::string& instance, const std::string& metric, int64_t t) {
    return panes_[{instance, metric, t - t % kPaneMs}];
  }
  const sim::Fleet* fleet_;
  std::map<std::tuple<std::string, std::string, int64_t>, Aggregate> panes_;
};

class OptimizeApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StateStoreOptions options;
    options.path = dir_.str();
    auto opened = StateStore::Open(options, &metrics_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();

    // Four 8B vLLM instances, 3 requests/s each, 6 simulated minutes; vllm-1's KV cache at 3 %.
    std::vector<sim::InstanceOptions> instances;
    for (int i = 0; i < 4; ++i) {
      sim::InstanceOptions o;
      o.name = "vllm-" + std::to_string(i);
      o.model = kModel;
      o.seed = 100 + static_cast<uint64_t>(i);
      instances.push_back(std::move(o));
    }
    sim::PoissonOptions arrivals;
    arrivals.rate_per_s = 12;
    arrivals.duration_s = 360;
    arrivals.seed = 7;
    sim::FleetOptions fleet_options;
    fleet_options.duration_ms = 360'000;
    auto fault = sim::ParseFault("kv_cache_small:vllm-1:0s-1h:0.03");
    ASSERT_TRUE(fault.ok());
    PaneBuilder builder;
    auto fleet = sim::Fleet::Create(fleet_options, std::move(instances), {*fault},
                                    std::make_unique<sim::PoissonArrivals>(arrivals),
                                    std::make_unique<sim::RoundRobinRouter>(), &builder);
    ASSERT_TRUE(fleet.ok()) << fleet.status().ToString();
    builder.Bind(fleet->get());
    (*fleet)->Run();
    ASSERT_TRUE(store_->WritePanes(builder.Panes(interner_), interner_, kT0 + 360'000).ok());

    Bottleneck b;
    b.instance = "vllm-1";
    b.model = kModel;
    b.engine = "vllm";
    b.type = BottleneckType::kMemoryPressure;
    b.severity = BottleneckSeverity::kHigh;
    b.primary = true;
    b.root = b.type;
    b.chain = {b.type};
    b.metric = "kv_cache_usage";
    b.stat = "mean";
    b.detected_at_ms = kT0 + 300'000;
    b.description = "d";
    ASSERT_TRUE(StoreBottlenecks(*store_, std::vector<Bottleneck>{b}).ok());

    server_ = std::make_unique<QueryServer>(
        QueryServer::Options{}, store_.get(), &metrics_, &clock_, [] { return json::object(); },
        std::vector<Registry::Entry>{});
    ASSERT_TRUE(server_->Start().ok());
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    client_->set_read_timeout(60, 0);
  }

  json Post(const std::string& path, const std::string& body, int expected_status = 200) {
    auto res = client_->Post(path.c_str(), body, "application/json");
    EXPECT_TRUE(res) << path;
    if (!res) return json();
    EXPECT_EQ(res->status, expected_status) << body << ": " << res->body;
    return json::parse(res->body, nullptr, false);
  }
  json Get(const std::string& path, int expected_status = 200) {
    auto res = client_->Get(path.c_str());
    EXPECT_TRUE(res) << path;
    if (!res) return json();
    EXPECT_EQ(res->status, expected_status) << path << ": " << res->body;
    return json::parse(res->body, nullptr, false);
  }
  // A 400 in the common shape naming `field` (details.field) or `parameter`.
  void ExpectBadField(const std::string& path, const std::string& body, const std::string& field) {
    SCOPED_TRACE(body);
    json reply = Post(path, body, 400);
    ASSERT_TRUE(reply.is_object());
    EXPECT_EQ(reply["error"]["code"], "VALIDATION_ERROR");
    EXPECT_EQ(reply["error"]["details"]["field"], field) << reply.dump();
    EXPECT_TRUE(reply["timestamp"].is_string());
  }

  testing::TempDir dir_;
  MetricsRegistry metrics_;
  Interner interner_;
  ManualClock clock_{1'750'000'000'000};
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<QueryServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(OptimizeApiTest, RecommendsMoreKvMemoryForTheStoredInstance) {
  json r = Post("/v1/optimization/recommend", R"({"instance": "vllm-1"})");
  ASSERT_TRUE(r.is_object());
  EXPECT_EQ(r["model"], kModel);
  EXPECT_EQ(r["engine"], "vllm");
  EXPECT_EQ(r["window"]["to"], kT0 + 360'000);
  EXPECT_EQ(r["window"]["from"], kT0 + 60'000);  // the last 5 minutes by default
  EXPECT_EQ(r["primary"], "MEMORY_PRESSURE");
  ASSERT_FALSE(r["recommendations"].empty()) << r.dump();
  const json& first = r["recommendations"][0];
  EXPECT_EQ(first["type"], "KV_CACHE");
  EXPECT_EQ(first["addresses"], "MEMORY_PRESSURE");
  EXPECT_EQ(first["config_changes"]["--gpu-memory-utilization"], "0.90");
  EXPECT_GT(first["estimated_improvement"]["improvement"].get<double>(), 0.5);
  EXPECT_TRUE(first["risks"].is_string());
  EXPECT_EQ(r["configuration"]["--max-num-seqs"], "256");
  EXPECT_LT(r["configuration"]["kv_cache_capacity_tokens"].get<int64_t>(), 20'000);
  EXPECT_GT(r["model_runs"].get<int>(), 1);
  // An explicit range (RFC 3339 and epoch ms) and engine.
  json ranged = Post("/v1/optimization/recommend",
                     R"({"instance": "vllm-1", "engine": "vllm", "model": "llama-3.1-8b-instruct",
                         "from": "2023-11-14T22:15:20Z", "to": 1700000300000})");
  EXPECT_EQ(ranged["window"]["from"], kT0 + 120'000);
  EXPECT_EQ(ranged["window"]["to"], kT0 + 300'000);
  // A healthy peer: nothing to recommend, no model run.
  json healthy = Post("/v1/optimization/recommend", R"({"instance": "vllm-2"})");
  EXPECT_TRUE(healthy["primary"].is_null()) << healthy.dump();
  EXPECT_TRUE(healthy["recommendations"].empty());
  EXPECT_EQ(healthy["model_runs"], 0);
}

TEST_F(OptimizeApiTest, RecommendsFromStatisticsInTheRequest) {
  // The slot limit is the limit: 8 running of 8, a long queue, ttft far above the SLO.
  const std::string body = R"({"instance": "sglang-0", "window_ms": 60000, "instances": [
      {"instance": "sglang-0", "model": "llama-3.1-8b-instruct", "metrics": {
        "ttft_ms": {"count": 150, "p50": 40000, "p95": 90000},
        "tpot_ms": {"count": 150, "p50": 23, "p95": 30},
        "e2e_ms": {"count": 180, "errors": 30, "p50": 45000, "p95": 110000},
        "prompt_tokens": {"count": 180, "sum": 108000, "p50": 600, "p95": 2200},
        "cached_tokens": {"count": 180, "sum": 54000},
        "output_tokens": {"count": 180, "p50": 180, "p95": 560},
        "num_requests_running": {"mean": 8}, "num_requests_waiting": {"mean": 300},
        "max_num_seqs": {"mean": 8, "last": 8}}}]})";
  json r = Post("/v1/optimization/recommend", body);
  EXPECT_EQ(r["engine"], "sglang");
  EXPECT_EQ(r["primary"], "QUEUE_BUILDUP") << r.dump();
  ASSERT_FALSE(r["recommendations"].empty()) << r.dump();
  EXPECT_EQ(r["recommendations"][0]["type"], "BATCHING");
  EXPECT_TRUE(r["recommendations"][0]["config_changes"].contains("--max-running-requests"));
  EXPECT_EQ(r["recommendations"][0]["priority"], "HIGH");
}

TEST_F(OptimizeApiTest, RecommendErrors) {
  const std::string path = "/v1/optimization/recommend";
  json reply = Post(path + "?x=1", R"({"instance": "vllm-1"})", 400);
  EXPECT_EQ(reply["error"]["details"]["parameter"], "x");
  reply = Post(path, "not json", 400);
  EXPECT_EQ(reply["error"]["code"], "VALIDATION_ERROR");
  ExpectBadField(path, R"({"instanse": "vllm-1"})", "instanse");
  ExpectBadField(path, R"({})", "instance");
  ExpectBadField(path, R"({"instance": 3})", "instance");
  ExpectBadField(path, R"({"instance": "vllm-1", "engine": "triton"})", "engine");
  ExpectBadField(path, R"({"instance": "vllm-1", "from": "yesterday"})", "from");
  ExpectBadField(path, R"({"instance": "vllm-1", "from": 1700000300000, "to": 1700000200000})",
                 "from");
  ExpectBadField(path, R"({"instance": "vllm-1", "window_ms": 30000})", "window_ms");
  ExpectBadField(path, R"({"instance": "vllm-1", "options": {"nope": 1}})", "options.nope");
  ExpectBadField(path, R"({"instance": "vllm-1", "simulation": {"max_requests": 5}})",
                 "simulation.max_requests");
  ExpectBadField(path, R"({"instance": "vllm-1", "simulation": {"speed": 5}})", "simulation.speed");
  ExpectBadField(path, R"({"instances": []})", "instances");
  ExpectBadField(path, R"({"instances": [{"instance": "a", "metrics": {}}, {"instance": "b",
                 "metrics": {}}]})",
                 "instance");
  ExpectBadField(path, R"({"instance": "c", "instances": [{"instance": "a", "metrics": {}}]})",
                 "instance");
  ExpectBadField(path, R"({"instances": [{"instance": "a", "metrics": {"foo_ms": {}}}]})",
                 "instances[0].metrics.foo_ms");
  ExpectBadField(path,
                 R"({"instances": [{"instance": "a", "metrics": {"ttft_ms": {"p50": "x"}}}]})",
                 "instances[0].metrics.ttft_ms.p50");
  ExpectBadField(path, R"({"instances": [{"instance": "a", "metrics": {}}], "from": 1})", "from");
  // No requests in the request's window: nothing to replay.
  reply =
      Post(path, R"({"instances": [{"instance": "a", "metrics": {"kv_cache_usage": {"mean": 0.97},
               "num_preemptions": {"sum": 90}}}]})",
           400);
  EXPECT_NE(reply["error"]["message"].get<std::string>().find("no requests"), std::string::npos);
  reply = Post(path, R"({"instance": "nobody"})", 404);
  EXPECT_EQ(reply["error"]["code"], "NOT_FOUND");
  reply = Post(path, R"({"instance": "vllm-1", "model": "other"})", 404);
  EXPECT_EQ(reply["error"]["code"], "NOT_FOUND");
  reply = Post(path, R"({"instance": "vllm-1", "to": 1600000000000})", 404);
  EXPECT_EQ(reply["error"]["code"], "NOT_FOUND");
}

TEST_F(OptimizeApiTest, OptimizesUnderConstraintsOrSaysNoneMeetsThem) {
  const std::string path = "/v1/performance/optimize";
  json r = Post(path, R"({"instance": "vllm-1", "goal": "minimize_p95_ttft",
                          "constraints": {"p99_e2e_ms": 60000, "max_instances": 2}})");
  EXPECT_EQ(r["goal"], "minimize_p95_ttft");
  EXPECT_EQ(r["status"], "improved") << r.dump();
  EXPECT_FALSE(r["current"]["meets_constraints"].get<bool>());
  ASSERT_TRUE(r["recommended"].is_object());
  EXPECT_FALSE(r["recommended"]["config_changes"].empty());
  EXPECT_LT(r["recommended"]["predicted"]["ttft_p95_ms"].get<double>(),
            r["current"]["predicted"]["ttft_p95_ms"].get<double>());
  EXPECT_LT(r["recommended"]["predicted"]["e2e_p99_ms"].get<double>(), 60000);
  EXPECT_LE(r["recommended"]["goal_change"].get<double>(), -0.5);
  EXPECT_GE(r["candidates"].size(), 5u);
  EXPECT_LE(r["candidates"].size(), 12u);
  for (const json& c : r["candidates"]) {
    if (c["config_changes"].contains("replicas")) {
      EXPECT_LE(c["config_changes"]["replicas"], "2");
    }
  }
  json none = Post(path, R"({"instance": "vllm-1", "constraints": {"p95_ttft_ms": 1}})");
  EXPECT_EQ(none["status"], "no_candidate_meets_constraints");
  EXPECT_TRUE(none["recommended"].is_null());
  json cost = Post(path, R"({"instance": "vllm-2", "goal": "minimize_cost_per_1k_tokens",
                             "simulation": {"instance_cost_per_hour": 4, "max_requests": 1000}})");
  EXPECT_TRUE(cost["status"] == "improved" || cost["status"] == "keep_current") << cost.dump();
  EXPECT_GT(cost["current"]["predicted"]["cost_per_1k_tokens"].get<double>(), 0);
}

TEST_F(OptimizeApiTest, OptimizeErrors) {
  const std::string path = "/v1/performance/optimize";
  ExpectBadField(path, R"({"instance": "vllm-1", "goal": "be_fast"})", "goal");
  ExpectBadField(path, R"({"instance": "vllm-1", "constraints": []})", "constraints");
  ExpectBadField(path, R"({"instance": "vllm-1", "constraints": {"p95_tfft_ms": 1}})",
                 "constraints.p95_tfft_ms");
  ExpectBadField(path, R"({"instance": "vllm-1", "constraints": {"p95_ttft_ms": -1}})",
                 "constraints.p95_ttft_ms");
  ExpectBadField(path, R"({"instance": "vllm-1", "constraints": {"max_instances": 0}})",
                 "constraints.max_instances");
  ExpectBadField(path, R"({"instance": "vllm-1", "options": {}})", "options");
  ExpectBadField(path, R"({"goal": "minimize_p95_ttft"})", "instance");
  json reply = Post(path + "?instance=vllm-1", "{}", 400);
  EXPECT_EQ(reply["error"]["details"]["parameter"], "instance");
  reply = Post(path, R"({"instance": "nobody"})", 404);
  EXPECT_EQ(reply["error"]["code"], "NOT_FOUND");
}

// An early raise not yet confirmed by a closed pane (it may still be retracted) is not an active
// bottleneck for the profile: vllm-2's stays healthy, vllm-1 keeps its confirmed primary.
TEST_F(OptimizeApiTest, ProfileIgnoresUnconfirmedEarlyRaises) {
  Bottleneck b;
  b.model = kModel;
  b.engine = "vllm";
  b.type = BottleneckType::kHighLatency;
  b.severity = BottleneckSeverity::kHigh;
  b.primary = true;
  b.early = true;
  b.root = b.type;
  b.chain = {b.type};
  b.metric = "ttft_ms";
  b.stat = "p95";
  b.detected_at_ms = kT0 + 350'000;
  b.description = "d (open pane, 3s observed)";
  b.instance = "vllm-2";
  Bottleneck on_primary = b;
  on_primary.instance = "vllm-1";
  ASSERT_TRUE(StoreBottlenecks(*store_, std::vector<Bottleneck>{b, on_primary}).ok());
  json p = Get("/v1/performance/profile/llama-3.1-8b-instruct?window=5m");
  EXPECT_EQ(p["total"]["instances_with_bottlenecks"], 1) << p.dump();
  for (const json& i : p["instances"]) {
    SCOPED_TRACE(i.dump());
    if (i["instance"] == "vllm-1") {
      EXPECT_EQ(i["primary_bottleneck"], "MEMORY_PRESSURE");
    } else {
      EXPECT_TRUE(i["primary_bottleneck"].is_null());
    }
  }
}

TEST_F(OptimizeApiTest, ProfilesAModel) {
  json p = Get("/v1/performance/profile/llama-3.1-8b-instruct?window=5m");
  EXPECT_EQ(p["model"], kModel);
  ASSERT_EQ(p["instances"].size(), 4u);
  EXPECT_EQ(p["total"]["instances"], 4);
  EXPECT_NEAR(p["total"]["requests_per_s"].get<double>(), 12, 2.5);
  EXPECT_GT(p["total"]["tokens_per_s"].get<double>(), 1000);
  EXPECT_EQ(p["total"]["instances_with_bottlenecks"], 1);
  EXPECT_NEAR(p["total"]["cost_per_1k_tokens"].get<double>(), 0.0002, 1e-6);
  for (const json& i : p["instances"]) {
    SCOPED_TRACE(i.dump());
    EXPECT_GT(i["requests_per_s"].get<double>(), 1);
    EXPECT_TRUE(i["ttft_ms"]["p95"].is_number());
    EXPECT_TRUE(i["kv_cache_usage"].is_number());
    if (i["instance"] == "vllm-1") {
      EXPECT_EQ(i["primary_bottleneck"], "MEMORY_PRESSURE");
      EXPECT_GT(i["kv_cache_usage"].get<double>(), 0.85);
      EXPECT_GT(i["waiting"].get<double>(), 10);
      EXPECT_GT(i["ttft_ms"]["p95"].get<double>(), 10'000);
    } else {
      EXPECT_TRUE(i["primary_bottleneck"].is_null());
      EXPECT_LT(i["ttft_ms"]["p95"].get<double>(), 2'000);
    }
  }
  json ranged = Get(
      "/v1/performance/profile/llama-3.1-8b-instruct?from=2023-11-14T22:13:20Z&to=1700000120000");
  EXPECT_EQ(ranged["from"], kT0);
  EXPECT_EQ(ranged["to"], kT0 + 120'000);
}

TEST_F(OptimizeApiTest, ProfileErrors) {
  json reply = Get("/v1/performance/profile/unknown-model", 404);
  EXPECT_EQ(reply["error"]["code"], "NOT_FOUND");
  reply = Get("/v1/performance/profile/llama-3.1-8b-instruct?instance=vllm-1", 400);
  EXPECT_EQ(reply["error"]["details"]["parameter"], "instance");
  reply = Get("/v1/performance/profile/llama-3.1-8b-instruct?window=forever", 400);
  EXPECT_EQ(reply["error"]["details"]["parameter"], "window");
  reply = Get("/v1/performance/profile/llama-3.1-8b-instruct?to=noon", 400);
  EXPECT_EQ(reply["error"]["details"]["parameter"], "to");
  reply =
      Get("/v1/performance/profile/llama-3.1-8b-instruct?from=1700000120000&to=1700000000000", 400);
  EXPECT_EQ(reply["error"]["details"]["parameter"], "from");
  reply = Get("/v1/performance/profile/llama-3.1-8b-instruct?from=1&window=1m", 400);
  EXPECT_EQ(reply["error"]["details"]["parameter"], "from");
}

}  // namespace
}  // namespace inferscope
