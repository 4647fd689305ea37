// The OpenAPI document (docs/openapi.json, compiled in) against the route table and the server:
// every route is documented and every documented operation is a route, the document is served at
// /v1/openapi.json, each operation refuses the query parameters the document does not declare,
// and /v1/performance/metrics honours from/to on whole panes. (The responses of all API tests are
// validated against the document by OpenApiTest.RecordedResponsesMatchTheDocument,
// tests/query/validate_openapi.py.)

#include "query/openapi.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "query/handlers.h"
#include "query/server.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr int64_t kPaneMs = 10'000;

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

TEST(OpenApiDocumentTest, IsOpenApi31AndTheFileInTheRepository) {
  const json& doc = OpenApiDocument();
  ASSERT_TRUE(doc.is_object()) << "docs/openapi.json does not parse";
  EXPECT_EQ(doc["openapi"].get<std::string>().rfind("3.1", 0), 0u);
  // The embedded text is the repository's file (rebuilt when it changes).
  EXPECT_EQ(std::string(OpenApiDocumentText()),
            testing::ReadFile(testing::SourceDir() + "/docs/openapi.json"));
}

TEST(OpenApiDocumentTest, EveryRouteIsDocumentedAndEveryOperationIsARoute) {
  const json& doc = OpenApiDocument();
  std::set<std::pair<std::string, std::string>> routes, documented;
  for (const Route& route : Routes()) {
    routes.insert({route.method, route.name});
    // The route's regex must match exactly the paths of its template.
    std::string sample = std::regex_replace(route.name, std::regex("\\{[^}]+\\}"), "x-1");
    EXPECT_TRUE(std::regex_match(sample, std::regex(route.pattern)))
        << route.name << " vs " << route.pattern;
  }
  for (const auto& [path, item] : doc["paths"].items()) {
    for (const auto& [method, op] : item.items()) {
      if (method == "parameters" || method == "summary" || method == "description") continue;
      std::string upper = method;
      std::transform(upper.begin(), upper.end(), upper.begin(),
                     [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
      documented.insert({upper, path});
    }
  }
  for (const auto& r : routes) {
    EXPECT_TRUE(documented.count(r)) << r.first << " " << r.second << " is not in the document";
  }
  for (const auto& d : documented) {
    EXPECT_TRUE(routes.count(d)) << d.first << " " << d.second << " is documented, not routed";
  }
}

// Every documented operation lists its statuses with the one error shape for errors, names its
// parameters with a schema, and each query parameter with a default says so in the schema.
TEST(OpenApiDocumentTest, OperationsDocumentParametersAndTheErrorShape) {
  const json& doc = OpenApiDocument();
  for (const Route& route : Routes()) {
    const json& op = doc["paths"][route.name][Lower(route.method)];
    ASSERT_TRUE(op.is_object()) << route.name;
    const json& responses = op["responses"];
    EXPECT_TRUE(responses.contains("400")) << route.name << ": unknown parameters are 400s";
    EXPECT_TRUE(responses.contains("500")) << route.name;
    if (route.requires_auth) {
      EXPECT_TRUE(responses.contains("401")) << route.name;
    }
    if (route.writes) {
      EXPECT_TRUE(responses.contains("405")) << route.name;
    }
    for (const auto& [status, response] : responses.items()) {
      if (status[0] == '2') continue;
      ASSERT_TRUE(response.contains("$ref")) << route.name << " " << status;
      const std::string ref = response["$ref"].get<std::string>();
      const json& shared = doc.at(json::json_pointer(ref.substr(1)));
      EXPECT_EQ(shared["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/Error")
          << route.name << " " << status;
    }
    // The route's path parameters, in order.
    std::vector<std::string> names;
    const std::regex capture("\\{([^}]+)\\}");
    for (auto it = std::sregex_iterator(route.name.begin(), route.name.end(), capture);
         it != std::sregex_iterator(); ++it) {
      names.push_back((*it)[1]);
    }
    std::vector<std::string> documented_path;
    for (const json& p : op["parameters"]) {
      if (p.contains("in") && p["in"] == "path") documented_path.push_back(p["name"]);
    }
    EXPECT_EQ(documented_path, names) << route.name;
  }
}

// A small store with 10 s panes: two instances with request outcomes, one with only a gauge.
class OpenApiServerTest : public ::testing::Test {
 protected:
  static constexpr int64_t kWatermark = 725'000;  // 00:12:05, not on a pane boundary

  void SetUp() override {
    StateStoreOptions options;
    options.path = dir_.str();
    options.tiers = {{kPaneMs, 0}};
    auto opened = StateStore::Open(options, &metrics_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();
    std::vector<WindowSummary> panes;
    auto add = [&](const std::string& instance, const std::string& metric, int64_t start,
                   int values) {
      WindowSummary pane;
      pane.series = {interner_.Intern(instance), interner_.Intern("llama"),
                     interner_.Intern(metric)};
      pane.start_ms = start;
      pane.end_ms = start + kPaneMs;
      pane.max_event_time_ms = start + kPaneMs - 1;
      for (int i = 0; i < values; ++i) {
        pane.agg.Add(100.0 + i, start + i);
        pane.agg.AddEvent(false);
      }
      panes.push_back(std::move(pane));
    };
    // Panes 00:10:00 .. 00:11:50 (12 panes); node-1 has k+1 requests in pane k, node-2 10 each.
    for (int k = 0; k < 12; ++k) {
      const int64_t start = 600'000 + k * kPaneMs;
      add("node-1", "e2e_ms", start, k + 1);
      add("node-2", "e2e_ms", start, 10);
      add("node-3", "kv_cache_usage", start, 1);  // gauges only: never "active"
    }
    ASSERT_TRUE(store_->WritePanes(panes, interner_, kWatermark).ok());
    server_ = std::make_unique<QueryServer>(QueryServer::Options{}, store_.get(), &metrics_,
                                            &clock_, nullptr, std::vector<Registry::Entry>{});
    ASSERT_TRUE(server_->Start().ok());
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
  }

  json Get(const std::string& path, int status) {
    httplib::Result res = client_->Get(path);
    EXPECT_TRUE(res) << path;
    if (!res) return json();
    EXPECT_EQ(res->status, status) << path << ": " << res->body;
    return json::parse(res->body, nullptr, false);
  }

  testing::TempDir dir_;
  MetricsRegistry metrics_;
  Interner interner_;
  ManualClock clock_{1'750'000'000'000};
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<QueryServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(OpenApiServerTest, ServesTheDocument) {
  httplib::Result res = client_->Get("/v1/openapi.json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
  EXPECT_EQ(res->body, std::string(OpenApiDocumentText()));
}

// The misspelt parameter of the issue, then every operation: an undeclared parameter is a 400
// naming it, before the handler runs (so before any 404 of an unknown path parameter).
TEST_F(OpenApiServerTest, UnknownParametersAreRefusedOnEveryRoute) {
  json body = Get("/v1/instances/node-1/summary?windw=10s", 400);
  EXPECT_EQ(body["error"]["code"], "VALIDATION_ERROR");
  EXPECT_EQ(body["error"]["details"]["parameter"], "windw");
  EXPECT_NE(body["error"]["message"].get<std::string>().find("window"), std::string::npos);
  EXPECT_EQ(body["error"]["details"]["allowed"],
            json({"model", "metric", "window", "from", "to", "resolution"}));

  for (const Route& route : Routes()) {
    std::string path = std::regex_replace(route.name, std::regex("\\{[^}]+\\}"), "x");
    path += "?bogus_param=1";
    httplib::Result res = route.method == "GET"    ? client_->Get(path)
                          : route.method == "POST" ? client_->Post(path, "{}", "application/json")
                                                   : client_->Delete(path);
    ASSERT_TRUE(res) << route.name;
    EXPECT_EQ(res->status, 400) << route.method << " " << route.name << ": " << res->body;
    json error = json::parse(res->body, nullptr, false);
    EXPECT_EQ(error["error"]["details"]["parameter"], "bogus_param") << route.name;
  }
  // Declared parameters pass through to the handler.
  Get("/v1/instances/node-1/summary?window=10s&metric=e2e_ms", 200);
}

// The case: a window shorter than the distance from the last pane boundary to the
// watermark used to hold no pane (requests 0) while the instances were counted active.
TEST_F(OpenApiServerTest, PerformanceMetricsCountWholePanesAndAgreeOnActivity) {
  json body = Get("/v1/performance/metrics?window=10s", 200);
  // to = the watermark rounded down to a pane; one whole pane: 00:11:50-00:12:00.
  EXPECT_EQ(body["to"], 720'000);
  EXPECT_EQ(body["from"], 710'000);
  EXPECT_EQ(body["requested_to"], kWatermark);
  EXPECT_EQ(body["partial_panes"], "excluded");
  EXPECT_EQ(body["metrics"]["requests"], 12 + 10);
  EXPECT_EQ(body["metrics"]["active_instances"], 2);
  EXPECT_DOUBLE_EQ(body["metrics"]["requests_per_second"].get<double>(), 22 / 10.0);

  // from/to are honoured; partial panes at the edges are left out and the rate divides by the
  // whole panes counted: [00:10:05, 00:10:35) covers the panes at 00:10:10 and 00:10:20.
  body = Get("/v1/performance/metrics?from=605000&to=635000", 200);
  EXPECT_EQ(body["from"], 610'000);
  EXPECT_EQ(body["to"], 630'000);
  EXPECT_EQ(body["window_ms"], 20'000);
  EXPECT_EQ(body["metrics"]["requests"], (2 + 3) + 2 * 10);
  EXPECT_DOUBLE_EQ(body["metrics"]["requests_per_second"].get<double>(), 25 / 20.0);
  body = Get("/v1/performance/metrics?from=1970-01-01T00:10:00Z&to=1970-01-01T00:10:10Z", 200);
  EXPECT_EQ(body["metrics"]["requests"], 1 + 10);

  // A range without request outcomes: no requests and no active instance, even though the
  // gauge-only node-3 and both others are in the series index.
  body = Get("/v1/performance/metrics?from=0&to=600000", 200);
  EXPECT_EQ(body["metrics"]["requests"], 0);
  EXPECT_EQ(body["metrics"]["active_instances"], 0);
  EXPECT_TRUE(body["metrics"]["p99_response_time_ms"].is_null());

  // Less than a whole pane, window with from, from after to: 400s naming the parameter.
  EXPECT_EQ(Get("/v1/performance/metrics?window=5s", 400)["error"]["details"]["parameter"],
            "window");
  EXPECT_EQ(
      Get("/v1/performance/metrics?from=601000&to=609000", 400)["error"]["details"]["parameter"],
      "from");
  EXPECT_EQ(Get("/v1/performance/metrics?window=1m&from=0", 400)["error"]["details"]["parameter"],
            "from");
  EXPECT_EQ(Get("/v1/performance/metrics?to=yesterday", 400)["error"]["details"]["parameter"],
            "to");
}

// p99 of a window never exceeds its max (nor p50 its min), although the sketch's bin value may.
TEST_F(OpenApiServerTest, PercentilesStayWithinMinAndMax) {
  json body =
      Get("/v1/instances/node-2/summary?metric=e2e_ms&window=10s&from=600000&to=610000", 200);
  const json& w = body["windows"][0];
  for (const char* q : {"p50", "p90", "p95", "p99"}) {
    EXPECT_LE(w[q].get<double>(), w["max"].get<double>()) << q;
    EXPECT_GE(w[q].get<double>(), w["min"].get<double>()) << q;
  }
}

}  // namespace
}  // namespace inferscope
