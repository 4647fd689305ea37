// Sliding windows two ways (issue 15 item 3): an engine in this process (real ZeroMQ source,
// window_aggregate, sliding_window publishing 1 m windows sliding by one 10 s pane on a zmq_pub
// stream, the RocksDB state sink and its HTTP API), fed by the C++ publisher with chosen event
// times. Every window the operator published equals the API's GET /v1/series?window=1m&step=10s
// point ending at the same time (count, sum, min, max and every quantile): the API merges the
// stored panes exactly as the operator merges its ring.

#include <gtest/gtest.h>
#include <httplib.h>
#include <msgpack.hpp>
#include <nlohmann/json.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <chrono>
#include <map>
#include <random>
#include <string>
#include <vector>

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

constexpr char kTopology[] = R"(name: sliding-series
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
    options: {pane: 10s, out_of_orderness: 1s, idle_timeout: 0}
  - name: sliding
    type: sliding_window
    inputs: [windows]
    options: {windows: [1m], emit: final, allowed_lateness: 0s, pass_panes: false}
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
  - name: sliding_out
    type: zmq_pub
    inputs: [sliding]
    options:
      endpoint: tcp://127.0.0.1:*
)";

// The statistics both sides report, by window end.
struct Stats {
  int64_t start = 0;
  uint64_t count = 0;
  double sum = 0, min = 0, max = 0, p50 = 0, p90 = 0, p95 = 0, p99 = 0;
};

TEST(SlidingSeriesTest, PublishedSlidingWindowsEqualTheApiSeriesWithAWindow) {
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

  zmq::context_t zctx;
  zmq::socket_t sub(zctx, zmq::socket_type::sub);
  sub.set(zmq::sockopt::subscribe, "summaries.");
  sub.set(zmq::sockopt::rcvtimeo, 100);
  sub.connect(engine->Endpoint("sliding_out"));

  PublisherOptions options;
  options.endpoint = engine->Endpoint("ingest");
  options.publisher_id = "gw";
  Publisher pub(options);
  ASSERT_TRUE(pub.Connect());
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const int64_t base = (now - 30 * 60'000) / 10'000 * 10'000;  // a pane start, in the past
  auto request = [&](const char* instance, int64_t time_ms, double ttft_ms) {
    RequestOutcome r;
    r.instance = instance;
    r.model = "m";
    r.ttft_ms = ttft_ms;
    r.time_ms = time_ms;
    EXPECT_TRUE(pub.Request(r));
  };

  // Handshake (a SUB socket misses what is published before its subscription reaches the PUB):
  // one `warmup` event per pane until a window of that series arrives.
  std::vector<zmq::message_t> frames;
  auto receive = [&] {
    frames.clear();
    return zmq::recv_multipart(sub, std::back_inserter(frames)).has_value();
  };
  int64_t warmup = base;
  ASSERT_TRUE(WaitFor([&] {
    request("warmup", warmup, 1);
    warmup += 10'000;
    EXPECT_TRUE(pub.Flush());
    return receive();
  })) << "no sliding window published";
  ASSERT_LT(warmup, base + 20 * 60'000);

  // node-1: 5 requests a second with integer TTFTs (sums are exact in any order) over 18 panes,
  // the 8th of them empty; then an event of another instance far enough on to close them all.
  const int64_t t0 = warmup / 60'000 * 60'000 + 120'000;
  std::mt19937_64 rng(7);
  for (int64_t t = t0; t < t0 + 180'000; t += 200) {
    if (t >= t0 + 70'000 && t < t0 + 80'000) continue;
    request("node-1", t, static_cast<double>(1 + rng() % 5000));
  }
  request("closer", t0 + 200'000, 1);
  ASSERT_TRUE(pub.Flush());

  std::map<int64_t, Stats> published;  // node-1's ttft_ms windows by end
  ASSERT_TRUE(WaitFor([&] {
    while (receive()) {
      EXPECT_EQ(frames.size(), 2u);
      if (frames.size() != 2 || frames[0].to_string() != "summaries.node-1.m.") continue;
      msgpack::object_handle oh = msgpack::unpack(frames[1].data<char>(), frames[1].size());
      auto m = oh.get().as<std::map<std::string, msgpack::object>>();
      if (m.at("metric").as<std::string>() != "ttft_ms") continue;
      Stats& s = published[m.at("end").as<int64_t>()];
      s.start = m.at("start").as<int64_t>();
      s.count = m.at("count").as<uint64_t>();
      s.sum = m.at("sum").as<double>();
      s.min = m.at("min").as<double>();
      s.max = m.at("max").as<double>();
      s.p50 = m.at("p50").as<double>();
      s.p90 = m.at("p90").as<double>();
      s.p95 = m.at("p95").as<double>();
      s.p99 = m.at("p99").as<double>();
    }
    return published.size() >= 17;
  })) << published.size()
      << " windows";
  // One window per pane node-1 had, each ending at the pane's end.
  ASSERT_EQ(published.size(), 17u);
  EXPECT_EQ(published.begin()->first, t0 + 10'000);
  EXPECT_EQ(published.rbegin()->first, t0 + 180'000);
  EXPECT_EQ(published.count(t0 + 80'000), 0u);

  // The API: one point per 10 s step, each the 1 m ending there, once the sink stored every pane.
  const std::string path =
      "/v1/series?instance=node-1&model=m&metric=ttft_ms&step=10s&window=1m"
      "&from=" +
      std::to_string(t0) + "&to=" + std::to_string(t0 + 180'000);
  json body;
  ASSERT_TRUE(WaitFor([&] {
    auto res = http.Get(path);
    if (!res || res->status != 200) return false;
    body = json::parse(res->body, nullptr, false);
    return body.is_object() && body["points"].size() == 18 &&
           body["points"][17]["count"] == published.rbegin()->second.count;
  })) << body.dump();
  EXPECT_EQ(body["window_ms"], 60'000);
  EXPECT_EQ(body["tier"], "10s");

  size_t compared = 0;
  for (const json& p : body["points"]) {
    auto it = published.find(p["end"].get<int64_t>());
    if (it == published.end()) continue;
    const Stats& s = it->second;
    SCOPED_TRACE("window ending " + std::to_string(it->first - t0) + " ms after t0");
    EXPECT_EQ(p["start"], s.start);
    EXPECT_EQ(p["count"], s.count);
    EXPECT_EQ(p["sum"].get<double>(), s.sum);
    EXPECT_EQ(p["min"].get<double>(), s.min);
    EXPECT_EQ(p["max"].get<double>(), s.max);
    EXPECT_EQ(p["p50"].get<double>(), s.p50);
    EXPECT_EQ(p["p90"].get<double>(), s.p90);
    EXPECT_EQ(p["p95"].get<double>(), s.p95);
    EXPECT_EQ(p["p99"].get<double>(), s.p99);
    ++compared;
  }
  EXPECT_EQ(compared, 17u);
  // Windows that span the empty pane and windows that do not: both kinds were compared.
  EXPECT_LT(body["points"][8]["count"].get<uint64_t>(), 300u) << "the 1 m window spans the gap";
  EXPECT_EQ(body["points"][17]["count"], 300u) << "6 full panes of 50 requests";

  pub.Close();
  engine->Stop();
}

}  // namespace
}  // namespace inferscope
