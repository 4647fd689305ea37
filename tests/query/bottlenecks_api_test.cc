// GET /v1/bottlenecks: filters, pagination and every error case, over a real RocksDB store.

#include <gtest/gtest.h>
#include <httplib.h>

#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "query/server.h"
#include "state/bottleneck_store.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;

Bottleneck Make(const std::string& instance, BottleneckType type, BottleneckSeverity severity,
                bool primary, int64_t detected_at) {
  Bottleneck b;
  b.instance = instance;
  b.model = "llama";
  b.engine = "vllm";
  b.type = type;
  b.severity = severity;
  b.primary = primary;
  b.root = primary ? type : BottleneckType::kMemoryPressure;
  b.chain = {b.root};
  if (!primary) b.chain.push_back(type);
  b.metric = "m";
  b.stat = "mean";
  b.value = 1;
  b.threshold = 0.5;
  b.peer_median = NAN;
  b.window_start_ms = 0;
  b.window_end_ms = 30'000;
  b.detected_at_ms = detected_at;
  b.description = "d";
  return b;
}

class BottlenecksApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StateStoreOptions options;
    options.path = dir_.str();
    auto opened = StateStore::Open(options, &metrics_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();
    using T = BottleneckType;
    using S = BottleneckSeverity;
    std::vector<Bottleneck> changes = {
        Make("vllm-0", T::kMemoryPressure, S::kHigh, true, 1000),
        Make("vllm-0", T::kQueueBuildup, S::kMedium, false, 1000),
        Make("vllm-0", T::kHighLatency, S::kLow, false, 1000),
        Make("vllm-1", T::kErrorSpike, S::kCritical, true, 2000),
        Make("sglang-2", T::kCacheInefficiency, S::kHigh, true, 3000),
        Make("tgi-3", T::kLowThroughput, S::kLow, true, 3000),
    };
    // tgi-3's bottleneck resolved later: the current record is replaced.
    Bottleneck resolved = changes.back();
    resolved.state = BottleneckState::kResolved;
    resolved.change = BottleneckChange::kResolved;
    resolved.primary = false;
    resolved.detected_at_ms = 4000;
    changes.push_back(resolved);
    ASSERT_TRUE(StoreBottlenecks(*store_, changes).ok());
    server_ = std::make_unique<QueryServer>(
        QueryServer::Options{}, store_.get(), &metrics_, &clock_, [] { return json::object(); },
        std::vector<Registry::Entry>{});
    ASSERT_TRUE(server_->Start().ok());
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
  }

  json Get(const std::string& path, int expected_status = 200) {
    auto res = client_->Get(path.c_str());
    EXPECT_TRUE(res) << path;
    if (!res) return json();
    EXPECT_EQ(res->status, expected_status) << path << ": " << res->body;
    return json::parse(res->body, nullptr, false);
  }

  // The (instance/type) of each listed bottleneck.
  static std::vector<std::string> Names(const json& reply) {
    std::vector<std::string> out;
    for (const json& b : reply["bottlenecks"]) {
      out.push_back(b["instance"].get<std::string>() + "/" + b["type"].get<std::string>());
    }
    return out;
  }

  json Post(const std::string& path, const std::string& body, int expected_status = 200) {
    auto res = client_->Post(path.c_str(), body, "application/json");
    EXPECT_TRUE(res) << path;
    if (!res) return json();
    EXPECT_EQ(res->status, expected_status) << body << ": " << res->body;
    return json::parse(res->body, nullptr, false);
  }

  void ExpectValidationError(const std::string& path, const std::string& parameter) {
    SCOPED_TRACE(path);
    json reply = Get(path, 400);
    ASSERT_TRUE(reply.is_object());
    EXPECT_EQ(reply["error"]["code"], "VALIDATION_ERROR");
    EXPECT_EQ(reply["error"]["details"]["parameter"], parameter);
    EXPECT_TRUE(reply["error"]["message"].is_string());
    EXPECT_TRUE(reply["timestamp"].is_string());
  }

  testing::TempDir dir_;
  MetricsRegistry metrics_;
  ManualClock clock_{1'750'000'000'000};
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<QueryServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(BottlenecksApiTest, ListsActiveBottlenecksByInstance) {
  json reply = Get("/v1/bottlenecks");
  // Key order: instance names by (length, bytes), then model, then type (causal rank).
  EXPECT_EQ(Names(reply),
            (std::vector<std::string>{"vllm-0/MEMORY_PRESSURE", "vllm-0/QUEUE_BUILDUP",
                                      "vllm-0/HIGH_LATENCY", "vllm-1/ERROR_SPIKE",
                                      "sglang-2/CACHE_INEFFICIENCY"}));
  EXPECT_EQ(reply["count"], 5);
  EXPECT_TRUE(reply["next_cursor"].is_null());
  const json& first = reply["bottlenecks"][0];
  EXPECT_EQ(first["severity"], "HIGH");
  EXPECT_EQ(first["state"], "active");
  EXPECT_EQ(first["primary"], true);
  EXPECT_EQ(first["engine"], "vllm");
  EXPECT_EQ(first["window"]["end"], 30'000);
  EXPECT_EQ(reply["bottlenecks"][2]["chain"], json({"MEMORY_PRESSURE", "HIGH_LATENCY"}));
}

TEST_F(BottlenecksApiTest, Filters) {
  EXPECT_EQ(Names(Get("/v1/bottlenecks?instance=vllm-*&primary=true")),
            (std::vector<std::string>{"vllm-0/MEMORY_PRESSURE", "vllm-1/ERROR_SPIKE"}));
  EXPECT_EQ(Names(Get("/v1/bottlenecks?type=QUEUE_BUILDUP")),
            (std::vector<std::string>{"vllm-0/QUEUE_BUILDUP"}));
  EXPECT_EQ(Names(Get("/v1/bottlenecks?severity=HIGH")),
            (std::vector<std::string>{"vllm-0/MEMORY_PRESSURE", "sglang-2/CACHE_INEFFICIENCY"}));
  EXPECT_EQ(Names(Get("/v1/bottlenecks?state=resolved")),
            (std::vector<std::string>{"tgi-3/LOW_THROUGHPUT"}));
  EXPECT_EQ(Get("/v1/bottlenecks?state=all")["count"], 6);
  EXPECT_EQ(Get("/v1/bottlenecks?model=other")["count"], 0);
  EXPECT_EQ(Get("/v1/bottlenecks?instance=tgi-3")["count"], 0);  // resolved: not active
}

// bottleneck_classify `early: true`: an early raise is active with `early: true`; a retraction is
// stored like a resolution and listed with state=retracted only.
TEST_F(BottlenecksApiTest, EarlyRaisesAndRetractions) {
  Bottleneck raised =
      Make("vllm-5", BottleneckType::kHighLatency, BottleneckSeverity::kHigh, true, 5000);
  raised.early = true;
  Bottleneck other =
      Make("vllm-6", BottleneckType::kHighLatency, BottleneckSeverity::kLow, true, 5000);
  other.early = true;
  Bottleneck retracted = other;
  retracted.state = BottleneckState::kRetracted;
  retracted.change = BottleneckChange::kRetracted;
  retracted.primary = false;
  retracted.detected_at_ms = 6000;
  ASSERT_TRUE(StoreBottlenecks(*store_, std::vector<Bottleneck>{raised, other, retracted}).ok());
  json active = Get("/v1/bottlenecks?instance=vllm-5");
  ASSERT_EQ(active["count"], 1);
  EXPECT_EQ(active["bottlenecks"][0]["early"], true);
  EXPECT_EQ(active["bottlenecks"][0]["state"], "active");
  EXPECT_EQ(Get("/v1/bottlenecks?instance=vllm-0")["bottlenecks"][0]["early"], false);
  json gone = Get("/v1/bottlenecks?state=retracted");
  EXPECT_EQ(Names(gone), (std::vector<std::string>{"vllm-6/HIGH_LATENCY"}));
  EXPECT_EQ(gone["bottlenecks"][0]["early"], true);
  EXPECT_EQ(gone["bottlenecks"][0]["change"], "retracted");
  EXPECT_EQ(Get("/v1/bottlenecks?state=resolved")["count"], 1);  // tgi-3 only
  EXPECT_EQ(Get("/v1/bottlenecks?state=all")["count"], 8);
}

TEST_F(BottlenecksApiTest, CursorWalksEveryBottleneckOnce) {
  std::set<std::string> seen;
  std::string cursor;
  int pages = 0;
  while (true) {
    json page = Get("/v1/bottlenecks?state=all&limit=2" +
                    (cursor.empty() ? std::string() : "&cursor=" + cursor));
    ++pages;
    EXPECT_LE(page["bottlenecks"].size(), 2u);
    for (const std::string& name : Names(page)) EXPECT_TRUE(seen.insert(name).second) << name;
    if (page["next_cursor"].is_null()) break;
    cursor = page["next_cursor"].get<std::string>();
    ASSERT_LT(pages, 10);
  }
  EXPECT_EQ(seen.size(), 6u);
  EXPECT_EQ(pages, 3);
}

TEST_F(BottlenecksApiTest, EveryErrorCaseIsA400NamingTheParameter) {
  ExpectValidationError("/v1/bottlenecks?instanse=vllm-0", "instanse");
  ExpectValidationError("/v1/bottlenecks?type=SLOW", "type");
  ExpectValidationError("/v1/bottlenecks?type=memory_pressure", "type");
  ExpectValidationError("/v1/bottlenecks?severity=warning", "severity");
  ExpectValidationError("/v1/bottlenecks?severity=NONE", "severity");
  ExpectValidationError("/v1/bottlenecks?state=firing", "state");
  ExpectValidationError("/v1/bottlenecks?primary=yes", "primary");
  ExpectValidationError("/v1/bottlenecks?limit=0", "limit");
  ExpectValidationError("/v1/bottlenecks?limit=1001", "limit");
  ExpectValidationError("/v1/bottlenecks?cursor=xyz", "cursor");
}

// A healthy instance's evidence window, in the request format of detect-bottlenecks.
json HealthyMetrics() {
  return {{"ttft_ms", {{"count", 300}, {"p50", 180}, {"p95", 200}}},
          {"tpot_ms", {{"count", 300}, {"p50", 20}, {"p95", 22}}},
          {"e2e_ms", {{"count", 300}, {"errors", 0}, {"p95", 2000}}},
          {"num_requests_running", {{"mean", 16}}},
          {"num_requests_waiting", {{"mean", 0}}},
          {"kv_cache_usage", {{"mean", 0.5}}},
          {"num_preemptions", {{"sum", 0}}},
          {"prefix_cache_hit_rate", {{"mean", 0.5}}},
          {"generation_tokens_per_s", {{"mean", 640}}}};
}

TEST_F(BottlenecksApiTest, DetectBottlenecksIsStatelessWithPeersAndCausalOrder) {
  json full = HealthyMetrics();
  full["kv_cache_usage"] = {{"mean", 0.97}};
  full["num_preemptions"] = {{"sum", 60}};  // 2/s over 30 s
  full["num_requests_waiting"] = {{"mean", 20}};
  full["ttft_ms"]["p95"] = 3500;
  json slow = HealthyMetrics();
  slow["ttft_ms"]["p50"] = 360;  // 2x its peers' median (peers compare p50s), within the SLO
  slow["ttft_ms"]["p95"] = 400;
  json body = {{"window_ms", 30'000},
               {"instances",
                {{{"instance", "vllm-0"}, {"model", "m"}, {"metrics", HealthyMetrics()}},
                 {{"instance", "vllm-1"}, {"model", "m"}, {"metrics", full}},
                 {{"instance", "vllm-2"}, {"model", "m"}, {"metrics", HealthyMetrics()}},
                 {{"instance", "vllm-3"}, {"model", "m"}, {"metrics", slow}},
                 {{"instance", "solo"}, {"model", "other"}, {"metrics", slow}}}}};
  json reply = Post("/v1/analysis/detect-bottlenecks", body.dump());
  ASSERT_TRUE(reply.is_object());
  ASSERT_EQ(reply["instances"].size(), 5u);  // in request order
  EXPECT_EQ(reply["instances"][0]["instance"], "vllm-0");
  EXPECT_TRUE(reply["instances"][0]["bottlenecks"].empty());
  EXPECT_TRUE(reply["instances"][0]["primary"].is_null());
  const json& one = reply["instances"][1];
  EXPECT_EQ(one["primary"], "MEMORY_PRESSURE") << one.dump();
  ASSERT_EQ(one["bottlenecks"].size(), 3u) << one.dump();
  for (const json& b : one["bottlenecks"]) {
    EXPECT_EQ(b["root"], "MEMORY_PRESSURE");
    if (b["type"] == "MEMORY_PRESSURE") {
      EXPECT_EQ(b["severity"], "HIGH");
    }
    if (b["type"] == "HIGH_LATENCY") {
      EXPECT_EQ(b["chain"], json({"MEMORY_PRESSURE", "QUEUE_BUILDUP", "HIGH_LATENCY"}));
      EXPECT_EQ(b["basis"], "absolute");
      EXPECT_FALSE(b["primary"].get<bool>());
    }
  }
  const json& three = reply["instances"][3];
  ASSERT_EQ(three["bottlenecks"].size(), 1u) << three.dump();
  EXPECT_EQ(three["bottlenecks"][0]["type"], "HIGH_LATENCY");
  EXPECT_EQ(three["bottlenecks"][0]["basis"], "peer");
  EXPECT_DOUBLE_EQ(three["bottlenecks"][0]["peer_median"].get<double>(), 180);
  EXPECT_TRUE(reply["instances"][2]["bottlenecks"].empty()) << "a peer of the slow one";
  EXPECT_TRUE(reply["instances"][4]["bottlenecks"].empty()) << "no peers of its model";

  // The topology's option syntax: a tighter SLO makes the slow one an absolute breach.
  body["options"] = {{"high_latency", {{"ttft_p95_ms", 300}}}};
  reply = Post("/v1/analysis/detect-bottlenecks", body.dump());
  EXPECT_EQ(reply["instances"][3]["bottlenecks"][0]["basis"], "absolute");
  EXPECT_EQ(reply["instances"][4]["bottlenecks"].size(), 1u);
}

TEST_F(BottlenecksApiTest, DetectBottlenecksErrorsNameTheField) {
  const std::string path = "/v1/analysis/detect-bottlenecks";
  auto expect = [&](const std::string& body, const std::string& fragment) {
    SCOPED_TRACE(body);
    json reply = Post(path, body, 400);
    ASSERT_TRUE(reply.is_object());
    EXPECT_EQ(reply["error"]["code"], "VALIDATION_ERROR");
    EXPECT_NE(reply["error"]["message"].get<std::string>().find(fragment), std::string::npos)
        << reply.dump();
  };
  expect("not json", "JSON object");
  expect("{}", "instances");
  expect(R"({"instances": []})", "instances");
  expect(R"({"instances": [{"instance": "a", "metrics": {}}], "extra": 1})", "extra");
  expect(R"({"instances": [{"metrics": {}}]})", "instances[0].instance");
  expect(R"({"instances": [{"instance": "a"}]})", "instances[0].metrics");
  expect(R"({"instances": [{"instance": "a", "metrics": {"gpu_temp": {"mean": 1}}}]})",
         "instances[0].metrics.gpu_temp: unknown metric");
  expect(R"({"instances": [{"instance": "a", "metrics": {"ttft_ms": {"p95": "high"}}}]})",
         "instances[0].metrics.ttft_ms.p95: expected a number");
  EXPECT_EQ(
      Post(path, R"({"instances": [{"instance": "a", "metrics": {"ttft_ms": {"p95": "x"}}}]})",
           400)["error"]["details"]["field"],
      "instances[0].metrics.ttft_ms.p95");
  expect(R"({"instances": [{"instance": "a", "metrics": {"ttft_ms": {"p42": 1}}}]})",
         "unknown statistic");
  expect(R"({"instances": [{"instance": "a", "metrics": {"e2e_ms": {"count": 2, "errors": 3}}}]})",
         "more errors than events");
  expect(R"({"window_ms": 0, "instances": [{"instance": "a", "metrics": {}}]})", "window_ms");
  expect(R"({"options": {"queue_buildup": {"levels": {"low": 1, "medium": 0.5}}},
             "instances": [{"instance": "a", "metrics": {}}]})",
         "options.queue_buildup.levels");
  expect(R"({"options": {"for": "20s"}, "instances": [{"instance": "a", "metrics": {}}]})",
         "options.for: unknown field");
  json reply =
      Post(path + "?verbose=1", R"({"instances": [{"instance": "a", "metrics": {}}]})", 400);
  EXPECT_EQ(reply["error"]["details"]["parameter"], "verbose");
}

}  // namespace
}  // namespace inferscope
