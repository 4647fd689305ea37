// The routing endpoints over a real query server, a real RocksDB store and a live learner:
// GET /v1/routing/weights (store), POST /v1/routing/select and GET /v1/models/recommendations
// (learner): success and every error case (400 naming the parameter or field, 404, 503).

#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <yaml-cpp/yaml.h>
#include <nlohmann/json.hpp>

#include "query/server.h"
#include "routing/live_router.h"
#include "routing/published.h"
#include "state/routing_store.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;
using routing::Strategy;

constexpr int64_t kT0 = 1'700'000'000'000;

// A served request of "llama" on `backend` at `t`: `ttft_ms`, then 100 tokens at 20 ms each.
routing::Outcome Served(std::string_view backend, int64_t t, double ttft_ms) {
  return {.backend = backend,
          .model = "llama",
          .time_ms = t,
          .ttft_ms = ttft_ms,
          .tpot_ms = 20,
          .e2e_ms = ttft_ms + 2000,
          .output_tokens = 100};
}

class RoutingApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StateStoreOptions options;
    options.path = dir_.str() + "/state";
    auto opened = StateStore::Open(options, &metrics_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();
    // A catalogue: "vis" (vision) and "txt" (none) serve "llama"; "fails" serves "bad" and fails.
    routing::RoutingOptions ro;
    ASSERT_TRUE(routing::ParseRoutingOptions(ConfigNode("t.yaml", YAML::Load(R"(
models:
  - name: llama
    backends:
      - {name: vis, capabilities: [vision]}
      - {name: txt}
  - name: empty
    backends: []
)"),
                                                        "options"),
                                             &ro)
                    .ok());
    router_ = std::make_shared<routing::LiveRouter>(ro, nullptr);
    router_->With([&](routing::RoutingLearner& l) {
      for (int i = 0; i < 50; ++i) {
        const int64_t t = kT0 + i * 10;
        l.Observe(Served("vis", t, 200));
        l.Observe(Served("txt", t, 100));
        l.Observe(
            {.backend = "fails", .model = "bad", .time_ms = t, .error = ErrorKind::kServerError});
      }
    });
    router_->AdvanceTo(kT0 + 500);
    registry_.Register("routing", router_);
    server_ = std::make_unique<QueryServer>(
        QueryServer::Options{}, store_.get(), &metrics_, &clock_, [] { return json::object(); },
        std::vector<Registry::Entry>{});
    server_->SetRouting(&registry_);
    ASSERT_TRUE(server_->Start().ok());
    client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
  }

  json Call(const std::string& method, const std::string& path, const std::string& body,
            int expected_status) {
    httplib::Result res = method == "GET" ? client_->Get(path.c_str())
                                          : client_->Post(path.c_str(), body, "application/json");
    EXPECT_TRUE(res) << method << " " << path;
    if (!res) return json();
    EXPECT_EQ(res->status, expected_status) << method << " " << path << ": " << res->body;
    return json::parse(res->body, nullptr, false);
  }
  json Get(const std::string& path, int expected = 200) { return Call("GET", path, "", expected); }
  json Select(const json& body, int expected = 200) {
    return Call("POST", "/v1/routing/select", body.dump(), expected);
  }
  static void ExpectError(const json& j, const std::string& code) {
    ASSERT_TRUE(j.contains("error")) << j.dump();
    EXPECT_EQ(j["error"]["code"], code) << j.dump();
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_TRUE(j.contains("timestamp"));
  }

  testing::TempDir dir_;
  MetricsRegistry metrics_;
  ManualClock clock_{kT0};
  std::unique_ptr<StateStore> store_;
  std::shared_ptr<routing::LiveRouter> router_;
  routing::RoutingRegistry registry_;
  std::unique_ptr<QueryServer> server_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(RoutingApiTest, WeightsComeFromTheStore) {
  routing::RoutingWeights w;
  w.model = "llama";
  w.strategy = Strategy::kBalanced;
  w.time_ms = kT0;
  w.backends = {{"vis", 0.3, 0.3, routing::GateState::kHealthy},
                {"txt", 0.7, 0.7, routing::GateState::kHealthy}};
  routing::RoutingWeights fast = w;
  fast.strategy = Strategy::kLowestLatency;
  ASSERT_TRUE(StoreRoutingWeights(*store_, std::vector{w, fast}).ok());

  json all = Get("/v1/routing/weights?model=llama");
  ASSERT_EQ(all["weights"].size(), 2u);
  json one = Get("/v1/routing/weights?model=llama&strategy=balanced");
  ASSERT_EQ(one["weights"].size(), 1u);
  EXPECT_EQ(one["weights"][0]["strategy"], "balanced");
  EXPECT_EQ(one["weights"][0]["backends"][1]["backend"], "txt");
  EXPECT_DOUBLE_EQ(one["weights"][0]["backends"][1]["weight"].get<double>(), 0.7);
  EXPECT_EQ(Get("/v1/routing/weights")["weights"].size(), 2u);

  json e = Get("/v1/routing/weights?model=nope", 404);
  ExpectError(e, "NOT_FOUND");
  e = Get("/v1/routing/weights?model=llama&strategy=adaptive", 404);
  ExpectError(e, "NOT_FOUND");
  e = Get("/v1/routing/weights?model=llama&strategy=fastest", 400);
  ExpectError(e, "VALIDATION_ERROR");
  EXPECT_EQ(e["error"]["details"]["parameter"], "strategy");
  e = Get("/v1/routing/weights?model=llama&modle=x", 400);
  EXPECT_EQ(e["error"]["details"]["parameter"], "modle");
}

TEST_F(RoutingApiTest, SelectAnswersWithConfidenceReasoningAndAlternatives) {
  json d = Select({{"model", "llama"},
                   {"strategy", "lowest_latency"},
                   {"prompt_tokens", 500},
                   {"expected_output_tokens", 100}});
  EXPECT_TRUE(d["ok"].get<bool>());
  EXPECT_TRUE(d["backend"] == "vis" || d["backend"] == "txt") << d.dump();
  EXPECT_GE(d["confidence"].get<double>(), 0.0);
  EXPECT_LE(d["confidence"].get<double>(), 1.0);
  EXPECT_TRUE(d["reasoning"].is_string());
  EXPECT_EQ(d["ranked"].size(), 2u);
  EXPECT_EQ(d["strategy"], "lowest_latency");
  EXPECT_EQ(d["time"], kT0 + 500) << "decided at the stream's event time";

  // Vision: only "vis" is capable, however often we ask.
  for (int i = 0; i < 20; ++i) {
    json v = Select({{"model", "llama"}, {"required_capabilities", {"vision"}}});
    EXPECT_EQ(v["backend"], "vis");
    EXPECT_EQ(v["incapable"], 1);
  }
}

TEST_F(RoutingApiTest, SelectErrors) {
  json e = Select({{"model", "llama"}, {"promt_tokens", 5}}, 400);
  ExpectError(e, "VALIDATION_ERROR");
  EXPECT_EQ(e["error"]["details"]["field"], "promt_tokens");
  e = Select({{"strategy", "balanced"}}, 400);
  EXPECT_EQ(e["error"]["details"]["field"], "model");
  e = Select({{"model", "llama"}, {"strategy", "fastest"}}, 400);
  EXPECT_EQ(e["error"]["details"]["field"], "strategy");
  e = Select({{"model", "llama"}, {"prompt_tokens", -1}}, 400);
  EXPECT_EQ(e["error"]["details"]["field"], "prompt_tokens");
  e = Select({{"model", "llama"}, {"required_capabilities", {"telepathy"}}}, 400);
  EXPECT_EQ(e["error"]["details"]["field"], "required_capabilities");
  e = Call("POST", "/v1/routing/select", "not json", 400);
  ExpectError(e, "VALIDATION_ERROR");
  e = Call("POST", "/v1/routing/select?x=1", json{{"model", "llama"}}.dump(), 400);
  EXPECT_EQ(e["error"]["details"]["parameter"], "x");

  e = Select({{"model", "nope"}}, 404);
  ExpectError(e, "NOT_FOUND");
  // No capable backend, and no backend at all: 503 with the reason.
  e = Select({{"model", "llama"}, {"required_capabilities", {"audio"}}}, 503);
  ExpectError(e, "UNAVAILABLE");
  EXPECT_EQ(e["error"]["details"]["reason"], "no_capable_backend");
  e = Select({{"model", "empty"}}, 503);
  EXPECT_EQ(e["error"]["details"]["reason"], "no_backends");

  // Without a learner (a query node that runs none): 503.
  routing::RoutingRegistry none;
  server_->Stop();
  server_ = std::make_unique<QueryServer>(
      QueryServer::Options{}, store_.get(), &metrics_, &clock_, [] { return json::object(); },
      std::vector<Registry::Entry>{});
  server_->SetRouting(&none);
  ASSERT_TRUE(server_->Start().ok());
  client_ = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
  json none_reply = Select({{"model", "llama"}}, 503);
  ExpectError(none_reply, "UNAVAILABLE");
  EXPECT_EQ(none_reply["error"]["details"]["reason"], "no_routing_learner");
  ExpectError(Get("/v1/models/recommendations?model=llama", 503), "UNAVAILABLE");
}

TEST_F(RoutingApiTest, Recommendations) {
  json r = Get("/v1/models/recommendations?model=llama&strategy=balanced&n=1&prompt_tokens=100");
  EXPECT_EQ(r["model"], "llama");
  ASSERT_EQ(r["recommendations"].size(), 1u);
  r = Get("/v1/models/recommendations?model=llama&capabilities=vision");
  ASSERT_EQ(r["recommendations"].size(), 1u);
  EXPECT_EQ(r["recommendations"][0]["backend"], "vis");
  EXPECT_EQ(r["features"]["capabilities"], "vision");

  json e = Get("/v1/models/recommendations", 400);
  EXPECT_EQ(e["error"]["details"]["parameter"], "model");
  e = Get("/v1/models/recommendations?model=llama&n=0", 400);
  EXPECT_EQ(e["error"]["details"]["parameter"], "n");
  e = Get("/v1/models/recommendations?model=llama&capabilities=vision,xray", 400);
  EXPECT_EQ(e["error"]["details"]["parameter"], "capabilities");
  e = Get("/v1/models/recommendations?model=llama&prompt_tokens=abc", 400);
  EXPECT_EQ(e["error"]["details"]["parameter"], "prompt_tokens");
  e = Get("/v1/models/recommendations?model=llama&top=3", 400);
  EXPECT_EQ(e["error"]["details"]["parameter"], "top");
  ExpectError(Get("/v1/models/recommendations?model=nope", 404), "NOT_FOUND");
  json audio = Get("/v1/models/recommendations?model=llama&capabilities=audio", 503);
  ExpectError(audio, "UNAVAILABLE");
  EXPECT_EQ(audio["error"]["details"]["reason"], "no_capable_backend");
}

// A decision that arrives while the learner applies its first batch is made at the learner's
// time once the batch is in, not at the wall-clock time read before it (used while no event has
// been seen): that time, an hour after the events here, moved the gates an hour ahead and ended an
// ejection at once (RoutingEndToEndTest.LearnerCheckpointSurvivesSigkill failed so under load).
TEST(RoutingSelectRaceTest, ADecisionRacingTheFirstBatchIsMadeAtTheLearnersTime) {
  testing::TempDir dir;
  MetricsRegistry metrics;
  StateStoreOptions options;
  options.path = dir.str() + "/state";
  auto store = StateStore::Open(options, &metrics);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto router = std::make_shared<routing::LiveRouter>(routing::RoutingOptions{}, nullptr);
  routing::RoutingRegistry registry;
  registry.Register("routing", router);
  ManualClock wall{kT0 + 3'600'000};
  QueryServer server(
      QueryServer::Options{}, store->get(), &metrics, &wall, [] { return json::object(); },
      std::vector<Registry::Entry>{});
  server.SetRouting(&registry);
  ASSERT_TRUE(server.Start().ok());
  httplib::Client client("127.0.0.1", server.port());

  json decision;
  int status = 0;
  std::thread select;
  const int64_t last = kT0 + 20 * 10;
  router->With([&](routing::RoutingLearner& l) {
    // The first batch is being applied (the learner's lock held) when the decision comes in.
    select = std::thread([&] {
      auto res =
          client.Post("/v1/routing/select", json{{"model", "llama"}}.dump(), "application/json");
      status = res ? res->status : 0;
      if (res) decision = json::parse(res->body, nullptr, false);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    for (int i = 0; i < 20; ++i) {
      const int64_t t = kT0 + i * 10;
      for (const char* b : {"a", "b"}) l.Observe(Served(b, t, 100));
      if (i >= 14) {  // "c" fails 6 times in a row: ejected
        l.Observe(
            {.backend = "c", .model = "llama", .time_ms = t, .error = ErrorKind::kServerError});
      }
    }
    router->AdvanceTo(last);
  });
  select.join();
  ASSERT_EQ(status, 200) << decision.dump();
  EXPECT_EQ(decision["time"], last) << decision.dump();
  ASSERT_EQ(decision["gated"].size(), 1u) << decision.dump();
  EXPECT_EQ(decision["gated"][0]["backend"], "c");
  EXPECT_GT(decision["gated"][0]["until"].get<int64_t>(), last);
}

}  // namespace
}  // namespace inferscope
