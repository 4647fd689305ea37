// Early alerts end to end (issue 15 item 3): an engine in this process (real ZeroMQ source,
// window_aggregate with early_slice, threshold_rules with `early: true`, the RocksDB alert store
// and its HTTP API), fed by the C++ publisher with chosen event times. One instance's spike fires
// on the open pane and the closed pane confirms it (one firing in its stored history); another
// instance's burst fires early and is retracted when its pane closes (stored as `retracted`).

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <string>

#include "alerting/alert.h"
#include "cli/builtins.h"
#include "cli/engine.h"
#include "clients/cpp/publisher.h"
#include "pipeline/registry.h"
#include "pipeline/topology.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using client::Publisher;
using client::PublisherOptions;
using client::RequestOutcome;
using nlohmann::json;
using testing::TempDir;
using testing::WaitFor;

constexpr char kTopology[] = R"(name: early-alerts
state:
  path: STATE
query:
  listen: 127.0.0.1:0
sources:
  - name: ingest
    type: zmq
    options:
      endpoint: tcp://127.0.0.1:*
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options: {pane: 10s, out_of_orderness: 2s, idle_timeout: 0, early_slice: 1s}
  - name: rules
    type: threshold_rules
    inputs: [windows]
    options:
      rules:
        - {name: ttft_mean, metric: ttft_ms, stat: mean, levels: {critical: 1000}, min_count: 3,
           early: true}
sinks:
  - name: alert_store
    type: rocksdb_alerts
    inputs: [rules]
)";

TEST(EarlyAlertsEndToEndTest, FiresOnTheOpenPaneThenConfirmsOrRetracts) {
  TempDir dir;
  std::string yaml = kTopology;
  yaml.replace(yaml.find("STATE"), 5, dir.str() + "/state");
  Result<TopologySpec> spec = ParseTopology(yaml, "<test>");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  Registry registry;
  RegisterBuiltins(registry);
  Result<std::unique_ptr<Engine>> built = Engine::Build(*spec, registry);
  ASSERT_TRUE(built.ok()) << built.status().ToString();
  std::unique_ptr<Engine> engine = std::move(built).value();
  ASSERT_TRUE(engine->Start().ok());
  httplib::Client http(engine->HttpUrl());

  PublisherOptions options;
  options.endpoint = engine->Endpoint("ingest");
  options.publisher_id = "gw";
  Publisher pub(options);
  ASSERT_TRUE(pub.Connect());
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const int64_t t0 = (now - 600'000) / 10'000 * 10'000;  // a pane start, in the past
  // node-1: 100 ms TTFT, then 5 s from 3.1 s on (the spike holds); node-3: a 3 s burst in the
  // first second of the pane, then 50 ms. One request each per 100 ms, in event-time order.
  auto send = [&](int64_t from, int64_t to) {
    for (int64_t t = from; t < to; t += 100) {
      RequestOutcome spiked;
      spiked.instance = "node-1";
      spiked.model = "m";
      spiked.ttft_ms = t >= 3100 ? 5000 : 100;
      spiked.time_ms = t0 + t;
      EXPECT_TRUE(pub.Request(spiked));
      RequestOutcome burst;
      burst.instance = "node-3";
      burst.model = "m";
      burst.ttft_ms = t < 1000 ? 3000 : 50;
      burst.time_ms = t0 + t;
      EXPECT_TRUE(pub.Request(burst));
    }
    EXPECT_TRUE(pub.Flush());
  };
  auto counter = [&](std::string_view name) {
    return engine->metrics().CounterValue(name, {{"stage", "rules"}});
  };
  auto history = [&](const char* instance) {
    const std::string fp =
        FingerprintHex(AlertFingerprint("ttft_mean", instance, "m", "ttft_ms", "mean"));
    auto res = http.Get("/v1/alerts/" + fp);
    if (!res || res->status != 200) return json();
    return json::parse(res->body, nullptr, false)["history"];
  };

  // The first second (and the event at 1 s): the early mark crosses 1 s; node-3's burst fires.
  // The source may merge messages into one batch, so each step waits for its verdict.
  send(0, 1100);
  ASSERT_TRUE(WaitFor([&] { return counter("inferscope_alerts_early_fired_total") == 1; }));
  // Up to 4.1 s of event time: the watermark is at 2.1 s, far from the pane's end; the early mark
  // crossed 4 s, after node-1's spike began.
  send(1100, 4100);
  ASSERT_TRUE(WaitFor([&] { return counter("inferscope_alerts_early_fired_total") == 2; }))
      << counter("inferscope_alerts_early_fired_total");
  EXPECT_EQ(counter("inferscope_alerts_resolved_total"), 0u);
  ASSERT_TRUE(WaitFor([&] { return history("node-1").size() == 1; }));
  json fired = history("node-1")[0];
  EXPECT_EQ(fired["state"], "firing");
  EXPECT_EQ(fired["early"], true);
  EXPECT_EQ(fired["window"]["end"], t0 + 10'000);
  EXPECT_EQ(fired["active_since"], t0 + 4000);

  // Past 12 s: the pane closes. node-1's closed pane confirms (no second firing); node-3's mean
  // over the whole pane is ~340 ms: retracted.
  send(4100, 12'100);
  ASSERT_TRUE(WaitFor([&] { return counter("inferscope_alerts_retracted_total") == 1; }));
  EXPECT_EQ(counter("inferscope_alerts_early_confirmed_total"), 1u);
  EXPECT_EQ(counter("inferscope_alerts_fired_total"), 2u) << "no second firing";
  ASSERT_TRUE(WaitFor([&] { return history("node-3").size() == 2; }));
  json node3 = history("node-3");
  EXPECT_EQ(node3[0]["state"], "firing");
  EXPECT_EQ(node3[1]["state"], "retracted");
  EXPECT_EQ(node3[1]["early"], true);
  EXPECT_LT(node3[1]["value"].get<double>(), 1000);
  auto listed = http.Get("/v1/alerts?state=retracted");
  ASSERT_TRUE(listed && listed->status == 200);
  EXPECT_EQ(json::parse(listed->body)["count"], 1);
  EXPECT_EQ(history("node-1").size(), 1u) << "confirmed: still the one firing";
  pub.Close();
  engine->Stop();
}

}  // namespace
}  // namespace inferscope
