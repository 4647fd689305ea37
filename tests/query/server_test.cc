#include "query/server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "query/handlers.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr int64_t kPaneMs = 10'000;
constexpr int64_t kWatermark = 720'000;  // 00:12:00

// A pane as the test generated it: the raw values, so expectations never go through Aggregate.
struct RawPane {
  std::string instance, model, metric;
  int64_t start_ms;
  std::vector<double> values;
  uint64_t errors;
};

struct Expected {
  std::vector<double> values;  // sorted
  uint64_t events = 0, errors = 0;
  double sum = 0;
};

class QueryServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StateStoreOptions options;
    options.path = dir_.str();
    auto opened = StateStore::Open(options, &metrics_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();

    // node-1: two models over 00:10:00-00:12:00; node-2: one model over 00:06:40-00:12:00.
    for (int k = 0; k < 12; ++k) {
      const int64_t start = 600'000 + k * kPaneMs;
      std::vector<double> llama, mistral, e2e, prompt, cached;
      for (int j = 1; j <= 10; ++j) {
        llama.push_back(k * 10 + j);  // minute 10: 1..60, minute 11: 61..120
        mistral.push_back(1000 + k * 10 + j);
        e2e.push_back(100.0 * (k + 1) + j);
        prompt.push_back(1000);
        cached.push_back(250);
      }
      Add({"node-1", "llama", "ttft_ms", start, llama, 1});
      Add({"node-1", "mistral", "ttft_ms", start, mistral, 2});
      Add({"node-1", "llama", "e2e_ms", start, e2e, k % 2 == 0 ? 1u : 0u});
      Add({"node-1", "llama", "prompt_tokens", start, prompt, 0});
      Add({"node-1", "llama", "cached_tokens", start, cached, 0});
    }
    for (int k = 0; k < 32; ++k) {
      std::vector<double> e2e;
      for (int j = 1; j <= 5; ++j) e2e.push_back(500 + 7 * j + k);
      Add({"node-2", "qwen", "e2e_ms", 400'000 + k * kPaneMs, e2e, 0});
    }
    std::vector<WindowSummary> panes;
    for (const RawPane& raw : raw_) {
      WindowSummary pane;
      pane.series = {interner_.Intern(raw.instance), interner_.Intern(raw.model),
                     interner_.Intern(raw.metric)};
      pane.start_ms = raw.start_ms;
      pane.end_ms = raw.start_ms + kPaneMs;
      pane.max_event_time_ms = raw.start_ms + kPaneMs - 1;
      for (size_t i = 0; i < raw.values.size(); ++i) {
        pane.agg.Add(raw.values[i], raw.start_ms + static_cast<int64_t>(i));
        pane.agg.AddEvent(i < raw.errors);
      }
      panes.push_back(std::move(pane));
    }
    ASSERT_TRUE(store_->WritePanes(panes, interner_, kWatermark).ok());
    ASSERT_NO_FATAL_FAILURE(StartServer(QueryServer::Options{}));
  }

  void StartServer(QueryServer::Options options) {
    server_ = std::make_unique<QueryServer>(
        options, store_.get(), &metrics_, &clock_,
        [] {
          return json{{"version", "test"}};
        },
        std::vector<Registry::Entry>{{"source", "zmq", "ZeroMQ source"},
                                     {"sink", "rocksdb_state", "state sink"}});
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_GT(server_->port(), 0);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
  }

  void Add(RawPane pane) { raw_.push_back(std::move(pane)); }

  Expected Expect(const std::function<bool(const RawPane&)>& select, int64_t from, int64_t to) {
    Expected e;
    for (const RawPane& p : raw_) {
      if (!select(p) || p.start_ms < from || p.start_ms >= to) continue;
      e.values.insert(e.values.end(), p.values.begin(), p.values.end());
      e.events += p.values.size();
      e.errors += p.errors;
      for (double v : p.values) e.sum += v;
    }
    std::sort(e.values.begin(), e.values.end());
    return e;
  }

  // Within 1% of the exact value at quantile q (either neighbouring rank).
  static void ExpectQuantile(const json& got, const std::vector<double>& sorted, double q) {
    ASSERT_TRUE(got.is_number()) << got;
    const double rank = q * static_cast<double>(sorted.size() - 1);
    const double lo = sorted[static_cast<size_t>(std::floor(rank))];
    const double hi = sorted[std::min(sorted.size() - 1, static_cast<size_t>(std::ceil(rank)) + 1)];
    EXPECT_GE(got.get<double>(), lo * 0.99) << "q=" << q;
    EXPECT_LE(got.get<double>(), hi * 1.01) << "q=" << q;
  }

  json GetJson(const std::string& path, int expected_status, const httplib::Headers& headers = {}) {
    auto res = client_->Get(path.c_str(), headers);
    EXPECT_TRUE(res) << path << ": " << httplib::to_string(res.error());
    if (!res) return json();
    EXPECT_EQ(res->status, expected_status) << path << ": " << res->body;
    EXPECT_EQ(res->get_header_value("Content-Type"), "application/json") << path;
    return json::parse(res->body, nullptr, /*allow_exceptions=*/false);
  }

  static void ExpectError(const json& body, const std::string& code) {
    ASSERT_TRUE(body.is_object()) << body;
    ASSERT_TRUE(body.contains("error")) << body;
    EXPECT_EQ(body["error"]["code"], code) << body;
    EXPECT_TRUE(body["error"]["message"].is_string()) << body;
    EXPECT_TRUE(body["error"]["details"].is_object()) << body;
    ASSERT_TRUE(body["timestamp"].is_string()) << body;
    EXPECT_TRUE(ParseTimeMs(body["timestamp"].get<std::string>()).has_value()) << body;
  }

  static void ExpectWindow(const json& w, const Expected& e, int64_t window_ms) {
    ASSERT_EQ(w["count"], e.values.size()) << w;
    EXPECT_DOUBLE_EQ(w["sum"].get<double>(), e.sum);
    EXPECT_DOUBLE_EQ(w["min"].get<double>(), e.values.front());
    EXPECT_DOUBLE_EQ(w["max"].get<double>(), e.values.back());
    EXPECT_NEAR(w["mean"].get<double>(), e.sum / e.values.size(), 1e-9);
    ExpectQuantile(w["p50"], e.values, 0.50);
    ExpectQuantile(w["p90"], e.values, 0.90);
    ExpectQuantile(w["p95"], e.values, 0.95);
    ExpectQuantile(w["p99"], e.values, 0.99);
    EXPECT_EQ(w["events"], e.events);
    EXPECT_EQ(w["errors"], e.errors);
    EXPECT_DOUBLE_EQ(w["error_ratio"].get<double>(), static_cast<double>(e.errors) / e.events);
    EXPECT_DOUBLE_EQ(w["rate"].get<double>(), e.values.size() / (window_ms / 1000.0));
  }

  static std::function<bool(const RawPane&)> Series(std::string instance, std::string model,
                                                    std::string metric) {
    return [=](const RawPane& p) {
      return p.instance == instance && (model.empty() || p.model == model) && p.metric == metric;
    };
  }

  testing::TempDir dir_;
  MetricsRegistry metrics_;
  Interner interner_;
  ManualClock clock_{1'750'000'000'000};
  std::unique_ptr<StateStore> store_;
  std::vector<RawPane> raw_;
  std::unique_ptr<QueryServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST(QueryServerOptionsTest, ValidateNamesTheBadField) {
  QueryServer::Options options;
  EXPECT_TRUE(options.Validate().ok());
  options.threads = 0;
  EXPECT_NE(options.Validate().message().find("threads"), std::string::npos);
  options = {};
  options.port = 70'000;
  EXPECT_NE(options.Validate().message().find("port"), std::string::npos);
}

TEST(QueryServerTimeTest, ParsesEpochMillisAndRfc3339) {
  EXPECT_EQ(ParseTimeMs("660000"), 660'000);
  EXPECT_EQ(ParseTimeMs("1970-01-01T00:11:00Z"), 660'000);
  EXPECT_EQ(ParseTimeMs("1970-01-01T00:11:00.250Z"), 660'250);
  EXPECT_EQ(ParseTimeMs("1970-01-01T01:11:00+01:00"), 660'000);
  EXPECT_EQ(ParseTimeMs("2024-02-29T12:00:00Z"), 1'709'208'000'000);
  EXPECT_FALSE(ParseTimeMs("2023-02-29T12:00:00Z").has_value());
  EXPECT_FALSE(ParseTimeMs("yesterday").has_value());
  EXPECT_FALSE(ParseTimeMs("").has_value());
  EXPECT_EQ(FormatRfc3339(660'250), "1970-01-01T00:11:00.250Z");
}

TEST_F(QueryServerTest, StartTwiceFails) {
  EXPECT_EQ(server_->Start().code(), Status::Code::kInternal);
}

TEST_F(QueryServerTest, Health) {
  json body = GetJson("/v1/health", 200);
  EXPECT_EQ(body["status"], "ok");
  EXPECT_EQ(body["version"], "test");
  EXPECT_EQ(ParseTimeMs(body["timestamp"].get<std::string>()), clock_.NowMs());
}

TEST_F(QueryServerTest, Capabilities) {
  json body = GetJson("/v1/capabilities", 200);
  const json& caps = body["capabilities"];
  ASSERT_EQ(caps["sources"].size(), 1u);
  EXPECT_EQ(caps["sources"][0]["name"], "zmq");
  ASSERT_EQ(caps["sinks"].size(), 1u);
  EXPECT_EQ(caps["sinks"][0]["name"], "rocksdb_state");
  EXPECT_EQ(caps["sinks"][0]["description"], "state sink");
  EXPECT_TRUE(caps["operators"].empty());
}

TEST_F(QueryServerTest, Instances) {
  json body = GetJson("/v1/instances", 200);
  EXPECT_EQ(body["as_of"], kWatermark);
  const json& list = body["instances"];
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["id"], "node-1");
  EXPECT_EQ(list[0]["first_seen"], 600'000);
  EXPECT_EQ(list[0]["last_seen"], 719'999);
  ASSERT_EQ(list[0]["models"].size(), 2u);
  EXPECT_EQ(list[0]["models"][0]["name"], "llama");
  EXPECT_EQ(list[0]["models"][0]["metrics"],
            json({"cached_tokens", "e2e_ms", "prompt_tokens", "ttft_ms"}));
  EXPECT_EQ(list[0]["models"][1]["name"], "mistral");
  EXPECT_EQ(list[1]["id"], "node-2");
  EXPECT_EQ(list[1]["first_seen"], 400'000);
  EXPECT_EQ(list[1]["models"][0]["metrics"], json({"e2e_ms"}));
}

TEST_F(QueryServerTest, SummaryDefaultsToTheLastMinuteBeforeTheWatermark) {
  json body = GetJson("/v1/instances/node-1/summary?model=llama", 200);
  EXPECT_EQ(body["instance"], "node-1");
  EXPECT_EQ(body["model"], "llama");
  EXPECT_EQ(body["metric"], "ttft_ms");
  EXPECT_EQ(body["window"], "1m");
  EXPECT_EQ(body["from"], 660'000);
  EXPECT_EQ(body["to"], 720'000);
  EXPECT_EQ(body["as_of"], kWatermark);
  ASSERT_EQ(body["windows"].size(), 1u);
  const json& w = body["windows"][0];
  EXPECT_EQ(w["start"], 660'000);
  EXPECT_EQ(w["end"], 720'000);
  Expected e = Expect(Series("node-1", "llama", "ttft_ms"), 660'000, 720'000);
  ASSERT_EQ(e.values.size(), 60u);
  EXPECT_DOUBLE_EQ(e.sum, 5430);  // 61 + ... + 120
  ExpectWindow(w, e, 60'000);
}

TEST_F(QueryServerTest, SummaryMergesPanesIntoAlignedWindowsAndAllModels) {
  // 30 s windows over two minutes given in RFC 3339, all models of the instance merged.
  json body =
      GetJson("/v1/instances/node-1/summary?window=30s&from=1970-01-01T00:10:00Z&to=720000", 200);
  EXPECT_TRUE(body["model"].is_null());
  EXPECT_EQ(body["models"], json({"llama", "mistral"}));
  ASSERT_EQ(body["windows"].size(), 4u);
  for (int i = 0; i < 4; ++i) {
    const int64_t start = 600'000 + i * 30'000;
    const json& w = body["windows"][i];
    EXPECT_EQ(w["start"], start);
    EXPECT_EQ(w["end"], start + 30'000);
    ExpectWindow(w, Expect(Series("node-1", "", "ttft_ms"), start, start + 30'000), 30'000);
  }
}

TEST_F(QueryServerTest, SummaryWindowsWithoutDataHaveCountZeroAndNullStats) {
  json body = GetJson(
      "/v1/instances/node-1/summary?model=llama&metric=e2e_ms&window=1m&from=480000&to=720000",
      200);
  ASSERT_EQ(body["windows"].size(), 4u);
  for (int i = 0; i < 2; ++i) {
    const json& w = body["windows"][i];
    EXPECT_EQ(w["count"], 0);
    EXPECT_EQ(w["events"], 0);
    EXPECT_TRUE(w["mean"].is_null());
    EXPECT_TRUE(w["min"].is_null());
    EXPECT_TRUE(w["max"].is_null());
    EXPECT_TRUE(w["p50"].is_null());
    EXPECT_TRUE(w["p99"].is_null());
    EXPECT_TRUE(w["error_ratio"].is_null());
    EXPECT_EQ(w["rate"], 0);
  }
  ExpectWindow(body["windows"][2], Expect(Series("node-1", "llama", "e2e_ms"), 600'000, 660'000),
               60'000);
  ExpectWindow(body["windows"][3], Expect(Series("node-1", "llama", "e2e_ms"), 660'000, 720'000),
               60'000);
}

TEST_F(QueryServerTest, SummaryErrors) {
  json body = GetJson("/v1/instances/nope/summary", 404);
  ExpectError(body, "NOT_FOUND");
  EXPECT_EQ(body["error"]["details"]["instance"], "nope");

  ExpectError(GetJson("/v1/instances/node-1/summary?model=gpt", 404), "NOT_FOUND");
  ExpectError(GetJson("/v1/instances/node-1/summary?metric=nothing", 404), "NOT_FOUND");

  body = GetJson("/v1/instances/node-1/summary?window=abc", 400);
  ExpectError(body, "VALIDATION_ERROR");
  EXPECT_EQ(body["error"]["details"]["parameter"], "window");

  // 15 s is not a multiple of the 10 s panes.
  body = GetJson("/v1/instances/node-1/summary?window=15s&from=600000&to=720000", 400);
  ExpectError(body, "VALIDATION_ERROR");
  EXPECT_EQ(body["error"]["details"]["parameter"], "window");
  EXPECT_EQ(body["error"]["details"]["pane_ms"], kPaneMs);

  body = GetJson("/v1/instances/node-1/summary?from=noon", 400);
  ExpectError(body, "VALIDATION_ERROR");
  EXPECT_EQ(body["error"]["details"]["parameter"], "from");

  body = GetJson("/v1/instances/node-1/summary?to=9223372036854775807", 400);
  EXPECT_EQ(body["error"]["details"]["parameter"], "to");
  body = GetJson("/v1/instances/node-1/summary?window=100000000d", 400);
  EXPECT_EQ(body["error"]["details"]["parameter"], "window");

  body = GetJson("/v1/instances/node-1/summary?from=720000&to=600000", 400);
  EXPECT_EQ(body["error"]["details"]["parameter"], "from");

  body = GetJson("/v1/instances/node-1/summary?window=10s&from=0&to=200000000", 400);
  ExpectError(body, "VALIDATION_ERROR");
  EXPECT_EQ(body["error"]["details"]["max_windows"], kMaxWindowsPerRequest);
}

TEST_F(QueryServerTest, PerformanceMetricsCoverTheFleetOverTheWindow) {
  json body = GetJson("/v1/performance/metrics?window=5m", 200);
  EXPECT_EQ(body["window"], "5m");
  EXPECT_EQ(body["as_of"], kWatermark);
  EXPECT_TRUE(ParseTimeMs(body["timestamp"].get<std::string>()).has_value());
  const int64_t from = kWatermark - 300'000;
  auto e2e = [](const RawPane& p) { return p.metric == "e2e_ms"; };
  Expected e = Expect(e2e, from, kWatermark);
  ASSERT_EQ(e.values.size(), 12u * 10 + 30u * 5);
  const json& m = body["metrics"];
  EXPECT_DOUBLE_EQ(m["requests_per_second"].get<double>(), e.events / 300.0);
  EXPECT_NEAR(m["avg_response_time_ms"].get<double>(), e.sum / e.values.size(), 1e-9);
  ExpectQuantile(m["p95_response_time_ms"], e.values, 0.95);
  ExpectQuantile(m["p99_response_time_ms"], e.values, 0.99);
  EXPECT_DOUBLE_EQ(m["error_rate"].get<double>(), static_cast<double>(e.errors) / e.events);
  EXPECT_DOUBLE_EQ(m["cache_hit_rate"].get<double>(), 0.25);
  EXPECT_EQ(m["active_instances"], 2);

  // A window before any data: no requests, null rates.
  body = GetJson("/v1/performance/metrics?window=1s", 200);
  EXPECT_EQ(body["metrics"]["requests_per_second"], 0);

  body = GetJson("/v1/performance/metrics?window=-5m", 400);
  ExpectError(body, "VALIDATION_ERROR");
  EXPECT_EQ(body["error"]["details"]["parameter"], "window");
}

TEST_F(QueryServerTest, UnknownRoutesGetTheErrorShape) {
  json body = GetJson("/v1/nothing/here", 404);
  ExpectError(body, "NOT_FOUND");
  EXPECT_EQ(body["error"]["details"]["path"], "/v1/nothing/here");
  // A route's path with another method: 405 naming the methods it answers.
  auto res = client_->Post("/v1/health", "{}", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 405);
  EXPECT_EQ(res->get_header_value("Allow"), "GET, HEAD");
  ExpectError(json::parse(res->body), "METHOD_NOT_ALLOWED");
}

TEST_F(QueryServerTest, PrometheusMetricsCountRequestsPerRouteAndStatus) {
  GetJson("/v1/health", 200);
  GetJson("/v1/instances/nope/summary", 404);
  GetJson("/v1/missing", 404);
  auto res = client_->Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4");
  EXPECT_NE(res->body.find("inferscope_http_requests_total{route=\"/v1/health\",status=\"200\"} 1"),
            std::string::npos)
      << res->body;
  EXPECT_NE(res->body.find("inferscope_http_requests_total{route=\"/v1/instances/{id}/summary\","
                           "status=\"404\"} 1"),
            std::string::npos);
  EXPECT_NE(res->body.find("inferscope_http_requests_total{route=\"unmatched\",status=\"404\"} 1"),
            std::string::npos);
  EXPECT_NE(res->body.find("inferscope_http_request_seconds_count{route=\"/v1/health\"} 1"),
            std::string::npos);
  EXPECT_NE(res->body.find("inferscope_state_panes_written_total"), std::string::npos);
}

TEST_F(QueryServerTest, BearerTokenGuardsEverythingButHealth) {
  server_->Stop();
  QueryServer::Options options;
  options.access.tokens = {{"test", "s3cret-0123456789abcdef", static_cast<uint8_t>(Scope::kRead)}};
  ASSERT_NO_FATAL_FAILURE(StartServer(options));
  ExpectError(GetJson("/v1/instances", 401), "UNAUTHORIZED");
  ExpectError(GetJson("/v1/instances", 401, {{"Authorization", "Bearer wrong"}}), "UNAUTHORIZED");
  json body = GetJson("/v1/instances", 200, {{"Authorization", "Bearer s3cret-0123456789abcdef"}});
  EXPECT_EQ(body["instances"].size(), 2u);
  GetJson("/v1/health", 200);
}

}  // namespace
}  // namespace inferscope
