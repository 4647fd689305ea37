// A lost NATS connection is visible: the engine (a subprocess, `type: jetstream` source) runs on a
// real nats-server that is killed under it. /v1/health then shows the source's connection down
// (and the engine degraded), /metrics shows inferscope_jetstream_connected 0 and a disconnect; the
// server restarted on the same port and store, the connection comes back (health ok, a
// reconnect counted) and what is published afterwards is ingested.

#include <gtest/gtest.h>
#include <signal.h>

#include <httplib.h>

#include <string>

#include <nlohmann/json.hpp>

#include "clients/cpp/jetstream_publisher.h"
#include "tests/integration/engine_fixture.h"
#include "tests/nats_server.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;
using testing::EngineProcess;
using testing::GetJson;
using testing::NatsServer;
using testing::Substitute;
using testing::TempDir;
using testing::WaitFor;

constexpr char kTopology[] = R"(name: jetstream-reconnect
state:
  path: STATE
  tiers:
    - {resolution: 1s, retention: forever}
engine:
  checkpoint_interval: 100ms
query:
  listen: 127.0.0.1:0
sources:
  - name: ingest
    type: jetstream
    options:
      url: URL
      stream: INFERSCOPE
      partitions: [0, 1]
      fetch_wait: 20ms
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options:
      pane: 1s
      out_of_orderness: 5s
      idle_timeout: 300ms
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
)";

// The value of the series `name{stage="ingest"}` in a Prometheus text page, -1 when absent.
double Sample(const std::string& page, const std::string& name) {
  const std::string key = name + "{stage=\"ingest\"} ";
  const size_t at = page.find(key);
  if (at == std::string::npos) return -1;
  return std::stod(page.substr(at + key.size()));
}

// The ttft_ms events of gpu-0/llama stored since `from_ms` (-1 when the API does not answer).
int64_t StoredCount(httplib::Client& http, int64_t from_ms) {
  int64_t total = 0;
  const json windows = testing::SummaryWindows(http, "gpu-0", "llama", "ttft_ms", from_ms,
                                               client::NowMs() + 120'000);
  if (!windows.is_array()) return -1;
  for (const json& w : windows) total += w.value("count", int64_t{0});
  return total;
}

void Publish(client::JetStreamPublisher& pub, int64_t t0, int first, int count) {
  for (int i = first; i < first + count; ++i) {
    client::RequestOutcome r;
    r.instance = "gpu-0";
    r.model = "llama";
    r.ttft_ms = 10 + i;
    r.time_ms = t0 + i * 10;
    ASSERT_TRUE(pub.Request(r)) << pub.last_error();
  }
  ASSERT_TRUE(pub.Flush()) << pub.last_error();
}

TEST(JetStreamReconnectTest, AServerKilledUnderTheEngineShowsDisconnectedThenRecovers) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_FALSE(server.url().empty()) << server.Log();
  std::string error;
  ASSERT_TRUE(
      client::JetStreamPublisher::EnsureStream(server.url(), "INFERSCOPE", "inferscope.in", &error))
      << error;
  const int64_t t0 = client::NowMs() - 60'000;
  {
    client::JetStreamPublisherOptions o;
    o.url = server.url();
    o.stream = "INFERSCOPE";
    o.partitions = 2;
    o.publisher_id = "before";
    o.batch_size = 10;
    client::JetStreamPublisher pub(o);
    ASSERT_TRUE(pub.Connect()) << pub.last_error();
    Publish(pub, t0, 0, 100);
  }
  EngineProcess engine(
      dir, EngineProcess::Options{
               Substitute(kTopology, {{"STATE", dir.str() + "/state"}, {"URL", server.url()}}),
               "engine"});
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();
  httplib::Client& http = engine.http();
  ASSERT_TRUE(WaitFor([&] { return StoredCount(http, t0 - 60'000) == 100; }))
      << StoredCount(http, t0 - 60'000) << engine.Log();

  json health = GetJson(http, "/v1/health");
  ASSERT_TRUE(health.contains("connections")) << health.dump();
  ASSERT_EQ(health["connections"].size(), 1u) << health.dump();
  EXPECT_EQ(health["status"], "ok") << health.dump();
  EXPECT_EQ(health["connections"][0]["stage"], "ingest");
  EXPECT_EQ(health["connections"][0]["kind"], "jetstream");
  EXPECT_EQ(health["connections"][0]["connected"], true);
  EXPECT_EQ(health["connections"][0]["server"], server.url());
  EXPECT_EQ(health["connections"][0]["disconnects"], 0);
  ASSERT_TRUE(health["connections"][0]["last_fetch_age_s"].is_number()) << health.dump();
  EXPECT_LT(health["connections"][0]["last_fetch_age_s"].get<double>(), 5.0);

  // The server dies: the engine shows the connection down.
  server.process().Signal(SIGKILL);
  server.process().Wait();
  ASSERT_TRUE(WaitFor([&] {
    health = GetJson(http, "/v1/health");
    return health.contains("connections") && health["connections"][0]["connected"] == false;
  })) << health.dump();
  EXPECT_EQ(health["status"], "degraded") << health.dump();
  EXPECT_NE(health.value("reason", "").find("source ingest (jetstream) disconnected from"),
            std::string::npos)
      << health.dump();
  EXPECT_EQ(health["connections"][0]["disconnects"], 1);
  EXPECT_EQ(health["connections"][0]["server"], "");
  std::string page;
  ASSERT_TRUE(WaitFor([&] {
    auto res = http.Get("/metrics");
    page = res ? res->body : "";
    return Sample(page, "inferscope_jetstream_connected") == 0;
  })) << page;
  EXPECT_EQ(Sample(page, "inferscope_jetstream_disconnects_total"), 1);
  EXPECT_EQ(Sample(page, "inferscope_jetstream_reconnects_total"), 0);
  // No fetch completes while it is down: the age grows past a second and a half.
  ASSERT_TRUE(WaitFor([&] {
    auto res = http.Get("/metrics");
    page = res ? res->body : "";
    return Sample(page, "inferscope_jetstream_last_fetch_age_seconds") > 1.5;
  })) << page;

  // Back on the same port and store: connected again, and new events are ingested.
  ASSERT_TRUE(server.Restart()) << server.Log();
  ASSERT_TRUE(WaitFor(
      [&] {
        health = GetJson(http, "/v1/health");
        return health.contains("connections") && health["connections"][0]["connected"] == true;
      },
      std::chrono::seconds(30)))
      << health.dump() << engine.Log();
  EXPECT_EQ(health["status"], "ok") << health.dump();
  EXPECT_EQ(health["connections"][0]["reconnects"], 1);
  EXPECT_EQ(health["connections"][0]["server"], server.url());
  {
    client::JetStreamPublisherOptions o;
    o.url = server.url();
    o.stream = "INFERSCOPE";
    o.partitions = 2;
    o.publisher_id = "after";
    o.batch_size = 10;
    client::JetStreamPublisher pub(o);
    ASSERT_TRUE(pub.Connect()) << pub.last_error();
    // Current event times: the idle engine's watermark has moved on (idle_timeout).
    Publish(pub, client::NowMs() - 1000, 100, 100);
  }
  ASSERT_TRUE(
      WaitFor([&] { return StoredCount(http, t0 - 60'000) == 200; }, std::chrono::seconds(30)))
      << StoredCount(http, t0 - 60'000) << engine.Log();
  auto res = http.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(Sample(res->body, "inferscope_jetstream_connected"), 1);
  EXPECT_EQ(Sample(res->body, "inferscope_jetstream_reconnects_total"), 1);
  EXPECT_LT(Sample(res->body, "inferscope_jetstream_last_fetch_age_seconds"), 5.0);

  const std::string log = engine.Log();
  ASSERT_EQ(engine.Stop(SIGTERM), 0) << log;
  // One warning per change of state, not one per fetch.
  auto occurrences = [&](const std::string& needle) {
    size_t n = 0;
    for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(occurrences("lost the connection to the NATS servers"), 1u) << log;
  EXPECT_EQ(occurrences("reconnected to NATS server"), 1u) << log;
  EXPECT_EQ(occurrences("creating the consumer again"), 0u) << log;
}

}  // namespace
}  // namespace inferscope
