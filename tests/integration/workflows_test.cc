// Optimization workflows end to end, as a user runs them: `inferscope run` with window_aggregate
// and workflow_canary; a workflow created, approved and marked applied through the HTTP API; four
// instances of one model publishing request outcomes through the real ZeroMQ ingest (acknowledged
// mode), where the changed instance gets better in one run (→ COMPLETED) and worse in another
// (→ ROLLED_BACK with evidence), the engine restarted in the middle of the second canary.

#include <signal.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <cmath>
#include <memory>
#include <random>
#include <string>

#include <nlohmann/json.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "clients/cpp/acked_publisher.h"
#include "clients/cpp/publisher.h"
#include "tests/integration/engine_fixture.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;
using testing::EngineProcess;
using testing::Substitute;
using testing::TempDir;
using testing::WaitFor;

constexpr char kTopology[] = R"(name: workflows-e2e
state:
  path: STATE
  tiers:
    - {resolution: 1s, retention: forever}
query:
  listen: 127.0.0.1:0
engine:
  checkpoint_interval: 100ms
sources:
  - name: ingest
    type: zmq
    options:
      endpoint: ENDPOINT
      mode: router
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options: {pane: 1s, out_of_orderness: 200ms, idle_timeout: 0}
  - name: canary
    type: workflow_canary
    inputs: [windows]
    options: {min_samples: 50}
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
  - name: workflow_stream
    type: zmq_workflows
    inputs: [canary]
    options: {endpoint: "tcp://127.0.0.1:*", format: json}
)";

constexpr int kBaselinePanes = 30;  // 1 s panes: 30 s of event time before the change
constexpr int kCanaryPanes = 60;    // the workflow's canary: 60 s
constexpr int kPerPane = 30;        // requests per instance and pane
constexpr int kInstances = 4;

// The fleet's request stream: pane p holds kPerPane requests of each instance; after the change,
// vllm-0's ttft is multiplied by `factor`.
class Fleet {
 public:
  // `t0` is rounded down to a pane boundary, so the fleet's panes are the engine's.
  explicit Fleet(int64_t t0, uint64_t seed) : t0_(t0 - t0 % 1000), rng_(seed) {}
  int64_t PaneStart(int pane) const { return t0_ + pane * 1000; }
  void Publish(client::AckedPublisher& pub, int pane, double factor) {
    std::normal_distribution<double> noise(0, 0.35);
    std::uniform_real_distribution<double> u(0, 1);
    for (int r = 0; r < kPerPane; ++r) {
      for (int i = 0; i < kInstances; ++i) {
        client::RequestOutcome o;
        o.instance = "vllm-" + std::to_string(i);
        o.model = "llama";
        const double f = i == 0 ? factor : 1.0;
        o.ttft_ms = 120 * f * std::exp(noise(rng_));
        o.e2e_ms = 900 * std::exp(noise(rng_)) + *o.ttft_ms;
        o.output_tokens = 64;
        o.error = u(rng_) < 0.01 ? "timeout" : "";
        o.time_ms = PaneStart(pane) + r * (1000 / kPerPane);
        pub.Request(o);
      }
    }
    pub.Poll(0);
  }

 private:
  int64_t t0_;
  std::mt19937_64 rng_;
};

client::AckedPublisherOptions PublisherOptions(const std::string& endpoint) {
  client::AckedPublisherOptions o;
  o.endpoint = endpoint;
  o.publisher_id = "gateway";
  o.batch_size = 120;
  o.resend_timeout_ms = 700;
  o.hello_timeout_ms = 2000;
  return o;
}

class WorkflowsEndToEndTest : public ::testing::Test {
 protected:
  std::unique_ptr<EngineProcess> StartEngine(const std::string& endpoint, int run) {
    auto engine = std::make_unique<EngineProcess>(
        dir_, EngineProcess::Options{
                  Substitute(kTopology, {{"STATE", dir_.str() + "/state"}, {"ENDPOINT", endpoint}}),
                  "engine-" + std::to_string(run)});
    EXPECT_TRUE(engine->WaitReady()) << engine->Log();
    return engine;
  }

  static json Call(EngineProcess& engine, const std::string& method, const std::string& path,
                   const json& body, int expected) {
    httplib::Result res = method == "GET"
                              ? engine.http().Get(path.c_str())
                              : engine.http().Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(res) << method << " " << path;
    if (!res) return json();
    EXPECT_EQ(res->status, expected) << method << " " << path << ": " << res->body;
    return json::parse(res->body, nullptr, false);
  }

  // Creates and approves a workflow on vllm-0 (ttft_ms p50 must decrease; e2e_ms p95 and
  // error_ratio must not rise).
  static std::string CreateAndApprove(EngineProcess& engine) {
    json created = Call(engine, "POST", "/v1/workflows",
                        {{"instance", "vllm-0"},
                         {"model", "llama"},
                         {"change", {{"--max-num-batched-tokens", "8192"}}},
                         {"description", "larger prefill chunks"},
                         {"baseline", "30s"},
                         {"canary", "60s"},
                         {"created_by", "test"}},
                        201);
    EXPECT_EQ(created["state"], "PENDING_APPROVAL");
    const std::string id = created.value("id", "");
    json approved = Call(engine, "POST", "/v1/workflows/" + id + "/approve", {{"by", "ops"}}, 200);
    EXPECT_EQ(approved["state"], "APPROVED");
    return id;
  }

  static json Get(EngineProcess& engine, const std::string& id) {
    return Call(engine, "GET", "/v1/workflows/" + id, json(), 200);
  }

  // Waits until the workflow leaves APPLIED; returns it.
  static json WaitFinished(EngineProcess& engine, const std::string& id) {
    json w;
    EXPECT_TRUE(WaitFor(
        [&] {
          w = Get(engine, id);
          return w.value("state", "") != "APPLIED";
        },
        std::chrono::seconds(30)))
        << w.dump(2) << "\n"
        << engine.Log();
    return w;
  }

  TempDir dir_;
};

TEST_F(WorkflowsEndToEndTest, HelpfulChangeCompletes) {
  auto engine = StartEngine("tcp://127.0.0.1:*", 1);
  // The verdict on the workflow stream, for this instance only.
  zmq::context_t zctx;
  zmq::socket_t sub(zctx, zmq::socket_type::sub);
  sub.set(zmq::sockopt::subscribe, "workflows.COMPLETED.vllm-0.");
  sub.set(zmq::sockopt::rcvtimeo, 100);
  sub.connect(engine->Endpoint("workflow_stream"));
  const std::string id = CreateAndApprove(*engine);
  client::AckedPublisher pub(PublisherOptions(engine->Endpoint("ingest")));
  ASSERT_TRUE(pub.Connect()) << pub.last_error();
  Fleet fleet(client::NowMs() - 3'600'000, 11);
  for (int p = 0; p < kBaselinePanes; ++p) fleet.Publish(pub, p, 1.0);
  json applied = Call(*engine, "POST", "/v1/workflows/" + id + "/applied",
                      {{"applied_at", fleet.PaneStart(kBaselinePanes)}}, 200);
  EXPECT_EQ(applied["state"], "APPLIED");
  // The whole canary period (and a pane more, to close the last one): 40 % faster first tokens.
  for (int p = kBaselinePanes; p <= kBaselinePanes + kCanaryPanes; ++p) {
    fleet.Publish(pub, p, 0.6);
  }
  ASSERT_TRUE(pub.WaitAcked(30'000)) << pub.last_error() << "\n" << engine->Log();
  json w = WaitFinished(*engine, id);
  ASSERT_EQ(w["state"], "COMPLETED") << w.dump(2);
  EXPECT_EQ(w["verdict"], "improved");
  EXPECT_EQ(w["stage"], "done");
  const json& t = w["evidence"]["target"];
  EXPECT_EQ(t["verdict"], "improved");
  EXPECT_TRUE(t["peer_adjusted"].get<bool>());
  EXPECT_LT(t["after"].get<double>(), t["before"].get<double>() * 0.75);
  EXPECT_EQ(t["n_before"].get<int>(), kBaselinePanes * kPerPane);
  EXPECT_LT(w["evidence"]["fraction"].get<double>(), 1.0) << "decided before the canary's end";
  EXPECT_EQ(w["history"].size(), 4u);
  EXPECT_EQ(w["history"][3]["by"], "canary");
  std::vector<zmq::message_t> frames;
  ASSERT_TRUE(WaitFor([&] {
    frames.clear();
    return zmq::recv_multipart(sub, std::back_inserter(frames)).has_value();
  }));
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].to_string(), "workflows.COMPLETED.vllm-0.");
  json change = json::parse(frames[1].to_string());
  EXPECT_EQ(change["id"], id);
  EXPECT_EQ(change["verdict"], "improved");

  // It is listed as completed, and the engine counted the verdict.
  json list =
      Call(*engine, "GET", "/v1/workflows?status=COMPLETED&instance_id=vllm-0", json(), 200);
  ASSERT_EQ(list["workflows"].size(), 1u);
  httplib::Result metrics = engine->http().Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("inferscope_workflow_canary_verdicts_total{stage=\"canary\",state="
                               "\"COMPLETED\"} 1"),
            std::string::npos);
  EXPECT_EQ(engine->Stop(), 0) << engine->Log();
}

TEST_F(WorkflowsEndToEndTest, HarmfulChangeRollsBackAcrossARestart) {
  auto engine = StartEngine("tcp://127.0.0.1:*", 1);
  // The restart binds the port the first run was given, so the publisher's connection finds it.
  const std::string endpoint = engine->Endpoint("ingest");
  const std::string id = CreateAndApprove(*engine);
  client::AckedPublisher pub(PublisherOptions(endpoint));
  ASSERT_TRUE(pub.Connect()) << pub.last_error();
  Fleet fleet(client::NowMs() - 3'600'000, 12);
  for (int p = 0; p < kBaselinePanes; ++p) fleet.Publish(pub, p, 1.0);
  Call(*engine, "POST", "/v1/workflows/" + id + "/applied",
       {{"applied_at", fleet.PaneStart(kBaselinePanes)}}, 200);
  // Three panes of a 30 % slower first token: looked at, far from a verdict.
  constexpr int kBeforeRestart = 3;
  for (int p = kBaselinePanes; p < kBaselinePanes + kBeforeRestart; ++p) {
    fleet.Publish(pub, p, 1.3);
  }
  ASSERT_TRUE(pub.WaitAcked(30'000)) << pub.last_error() << "\n" << engine->Log();
  json mid;
  ASSERT_TRUE(WaitFor([&] {
    mid = Get(*engine, id);
    return mid["progress"].get<double>() > 0;
  })) << mid.dump(2);
  ASSERT_EQ(mid["state"], "APPLIED") << mid.dump(2);
  EXPECT_LT(mid["progress"].get<double>(), 0.1);
  const int n_after_mid = mid["evidence"]["target"]["n_after"].get<int>();
  EXPECT_GT(n_after_mid, 0);

  // Restart in the middle of the canary.
  EXPECT_EQ(engine->Stop(SIGTERM), 0) << engine->Log();
  engine = StartEngine(endpoint, 2);
  json restarted = Get(*engine, id);
  EXPECT_EQ(restarted["state"], "APPLIED") << "the workflow survived the restart";
  EXPECT_EQ(restarted["applied_at"], fleet.PaneStart(kBaselinePanes));

  for (int p = kBaselinePanes + kBeforeRestart; p <= kBaselinePanes + kCanaryPanes; ++p) {
    fleet.Publish(pub, p, 1.3);
  }
  ASSERT_TRUE(pub.WaitAcked(30'000)) << pub.last_error() << "\n" << engine->Log();
  json w = WaitFinished(*engine, id);
  ASSERT_EQ(w["state"], "ROLLED_BACK") << w.dump(2);
  EXPECT_EQ(w["verdict"], "regressed");
  EXPECT_NE(w["reason"].get<std::string>().find("ttft_ms"), std::string::npos);
  const json& t = w["evidence"]["target"];
  EXPECT_EQ(t["verdict"], "regressed");
  EXPECT_GT(t["z"].get<double>(), t["boundary"].get<double>());
  EXPECT_LT(t["p_value"].get<double>(), 0.01);
  EXPECT_GT(t["ratio"].get<double>(), 1.15);
  EXPECT_EQ(t["n_before"].get<int>(), kBaselinePanes * kPerPane)
      << "the baseline came through the restart (checkpoint)";
  EXPECT_GT(t["n_after"].get<int>(), n_after_mid);
  EXPECT_EQ(t["n_after"].get<int>() % kPerPane, 0);
  EXPECT_EQ(engine->Stop(), 0) << engine->Log();
}

}  // namespace
}  // namespace inferscope
