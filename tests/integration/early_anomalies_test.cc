// Early anomaly detection end to end (issue 15 item 3): an engine in this process (real ZeroMQ
// source, window_aggregate with early_slice, anomaly_detect with `early: true`, the RocksDB alert
// store and its HTTP API), fed by the C++ publisher with chosen event times. After the detectors
// warm up on clean panes, one instance's spike fires on the open pane and the closed pane confirms
// it (one firing in its stored history); another instance's short burst fires early and is
// retracted when its pane closes (stored as `retracted`).

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <random>
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

constexpr char kTopology[] = R"(name: early-anomalies
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
  - name: anomalies
    type: anomaly_detect
    inputs: [windows]
    options:
      metrics: [ttft_ms]
      stats: [p95]
      min_count: 5
      early: true
      detector: {warmup_points: 10, auto_season: false}
sinks:
  - name: alert_store
    type: rocksdb_alerts
    inputs: [anomalies]
)";

constexpr int64_t kPane = 10'000;
constexpr int64_t kSpikePane = 14 * kPane;  // after 14 clean panes (10 warm-up points)

TEST(EarlyAnomaliesEndToEndTest, FiresOnTheOpenPaneThenConfirmsOrRetracts) {
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
  const int64_t t0 = (now - 600'000) / kPane * kPane;  // a pane start, in the past
  // Clean TTFT 150 ms with 20 % of deterministic noise (enough for the p95 of the sketch to change
  // from pane to pane: the detector's warm-up waits for changes of the value). In the spike pane
  // node-1 is at 1.5 s throughout; node-3 at 3 s for its first 400 ms only (4 of the pane's 100
  // requests: the closed pane's p95 is normal). One request each per 100 ms, in event-time order.
  std::mt19937_64 rng(11);
  std::normal_distribution<double> noise(0, 1);
  auto send = [&](int64_t from, int64_t to) {
    for (int64_t t = from; t < to; t += 100) {
      const bool spike = t >= kSpikePane && t < kSpikePane + kPane;
      RequestOutcome spiked;
      spiked.instance = "node-1";
      spiked.model = "m";
      spiked.ttft_ms = spike ? 1500 : 150 * (1 + 0.2 * noise(rng));
      spiked.time_ms = t0 + t;
      EXPECT_TRUE(pub.Request(spiked));
      RequestOutcome burst;
      burst.instance = "node-3";
      burst.model = "m";
      burst.ttft_ms = spike && t < kSpikePane + 400 ? 3000 : 150 * (1 + 0.2 * noise(rng));
      burst.time_ms = t0 + t;
      EXPECT_TRUE(pub.Request(burst));
    }
    EXPECT_TRUE(pub.Flush());
  };
  auto counter = [&](std::string_view name) {
    return engine->metrics().CounterValue(name, {{"stage", "anomalies"}});
  };
  auto history = [&](const char* instance) {
    const std::string fp =
        FingerprintHex(AlertFingerprint("anomalies", instance, "m", "ttft_ms", "p95"));
    auto res = http.Get("/v1/alerts/" + fp);
    if (!res || res->status != 200) return json();
    return json::parse(res->body, nullptr, false)["history"];
  };

  // Warm-up: the clean panes close (the watermark passes each end + 2 s) and teach the detectors.
  send(0, kSpikePane);
  ASSERT_TRUE(WaitFor([&] { return counter("inferscope_detector_points_total") >= 2 * 12; }))
      << counter("inferscope_detector_points_total");
  EXPECT_EQ(counter("inferscope_alerts_fired_total"), 0u) << "clean panes raise nothing";
  // The spike pane's first two seconds: the previous pane closes when the early mark crosses 2 s
  // (out_of_orderness 2 s), and the open pane is scored from then on (not at 1 s: the detector has
  // not learned the previous pane yet); both fire early (node-3: 4 slow of 20, p95 far out).
  send(kSpikePane, kSpikePane + 2'100);
  ASSERT_TRUE(WaitFor([&] { return counter("inferscope_alerts_early_fired_total") == 2; }))
      << counter("inferscope_alerts_early_fired_total") << " " << history("node-1").dump() << " "
      << history("node-3").dump() << " early points "
      << counter("inferscope_detector_early_points_total");
  ASSERT_TRUE(WaitFor([&] { return history("node-1").size() == 1; }));
  json fired = history("node-1")[0];
  EXPECT_EQ(fired["state"], "firing");
  EXPECT_EQ(fired["early"], true);
  EXPECT_EQ(fired["window"]["end"], t0 + kSpikePane + kPane);

  // Past the pane's end + 2 s: it closes. node-1's closed pane confirms (no second firing);
  // node-3's does not: retracted.
  send(kSpikePane + 2'100, kSpikePane + kPane + 2'100);
  ASSERT_TRUE(WaitFor([&] { return counter("inferscope_alerts_retracted_total") == 1; }));
  EXPECT_EQ(counter("inferscope_alerts_early_confirmed_total"), 1u);
  EXPECT_EQ(counter("inferscope_alerts_fired_total"), 2u) << "no second firing";
  ASSERT_TRUE(WaitFor([&] { return history("node-3").size() == 2; }));
  json node3 = history("node-3");
  EXPECT_EQ(node3[0]["state"], "firing");
  EXPECT_EQ(node3[0]["early"], true);
  EXPECT_EQ(node3[1]["state"], "retracted");
  EXPECT_EQ(node3[1]["early"], true);
  EXPECT_EQ(history("node-1").size(), 1u) << "confirmed: still the one firing";
  pub.Close();
  engine->Stop();
}

}  // namespace
}  // namespace inferscope
