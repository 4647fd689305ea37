// The whole engine as a user runs it: `inferscope run` as a subprocess on a topology with ephemeral
// ports, the real Python publisher, the real HTTP API and a real ZeroMQ subscriber.

#include <gtest/gtest.h>
#include <httplib.h>
#include <msgpack.hpp>
#include <nlohmann/json.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <fstream>

#include "tests/integration/engine_fixture.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;
using testing::EngineProcess;
using testing::GetJson;
using testing::ReadFile;
using testing::Subprocess;
using testing::Substitute;
using testing::TempDir;
using testing::WaitFor;

constexpr char kTopology[] = R"(name: e2e
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
    options:
      pane: 10s
      out_of_orderness: 2s
      idle_timeout: 0
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
  - name: summaries
    type: zmq_pub
    inputs: [windows]
    options:
      endpoint: tcp://127.0.0.1:*
)";

TEST(EndToEndTest, PythonPublisherToHttpSummaryAndSubscriber) {
  TempDir dir;
  EngineProcess engine(dir, Substitute(kTopology, {{"STATE", dir.str() + "/state"}}));
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();

  // Subscribe before anything is published; summaries are published once per closed pane.
  zmq::context_t ctx;
  zmq::socket_t sub(ctx, zmq::socket_type::sub);
  sub.set(zmq::sockopt::subscribe, "summaries.node-a.");
  sub.set(zmq::sockopt::rcvtimeo, 200);
  sub.connect(engine.Endpoint("summaries"));

  // A pane-aligned start in the recent past, so the decoder's timestamp bounds accept it.
  auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  int64_t start = (now_ms - 60'000) / 10'000 * 10'000;

  Subprocess publisher(
      {testing::Python(), testing::SourceDir() + "/tests/integration/publish_known_events.py",
       engine.Endpoint("ingest"), std::to_string(start)},
      dir.str() + "/publisher.log");
  ASSERT_EQ(publisher.Wait(), 0) << ReadFile(dir.str() + "/publisher.log");

  httplib::Client http(engine.HttpUrl());
  std::string query = "/v1/instances/node-a/summary?model=m1&metric=ttft_ms&window=10s&from=" +
                      std::to_string(start) + "&to=" + std::to_string(start + 10'000);
  json summary;
  ASSERT_TRUE(WaitFor([&] {
    summary = GetJson(http, query);
    return summary.is_object() && summary.contains("windows") && summary["windows"].size() == 1 &&
           summary["windows"][0]["count"] == 100;
  })) << summary.dump()
      << "\n"
      << engine.Log();
  const json& w = summary["windows"][0];
  EXPECT_EQ(w["start"], start);
  EXPECT_EQ(w["end"], start + 10'000);
  EXPECT_DOUBLE_EQ(w["mean"].get<double>(), 50.5);
  EXPECT_DOUBLE_EQ(w["min"].get<double>(), 1);
  EXPECT_DOUBLE_EQ(w["max"].get<double>(), 100);
  EXPECT_NEAR(w["p50"].get<double>(), 50.5, 50.5 * 0.03);
  EXPECT_NEAR(w["p99"].get<double>(), 99, 99 * 0.02);
  EXPECT_DOUBLE_EQ(w["rate"].get<double>(), 10);  // 100 values over 10 s
  EXPECT_EQ(w["events"], 110);
  EXPECT_EQ(w["errors"], 10);
  EXPECT_NEAR(w["error_ratio"].get<double>(), 10.0 / 110, 1e-12);

  json gauge =
      GetJson(http, "/v1/instances/node-a/summary?model=m1&metric=kv_cache_usage&window=10s&from=" +
                        std::to_string(start) + "&to=" + std::to_string(start + 10'000));
  ASSERT_EQ(gauge["windows"].size(), 1u) << gauge.dump();
  EXPECT_EQ(gauge["windows"][0]["count"], 3);
  EXPECT_DOUBLE_EQ(gauge["windows"][0]["mean"].get<double>(), 0.5);

  json instances = GetJson(http, "/v1/instances");
  EXPECT_NE(instances.dump().find("node-a"), std::string::npos) << instances.dump();

  int status = 0;
  json missing = GetJson(http, "/v1/instances/nope/summary?metric=ttft_ms", &status);
  EXPECT_EQ(status, 404);
  EXPECT_EQ(missing["error"]["code"], "NOT_FOUND") << missing.dump();

  // The subscriber saw the closed pane of ttft_ms with the same numbers.
  bool seen = false;
  for (int i = 0; i < 100 && !seen; ++i) {
    std::vector<zmq::message_t> frames;
    if (!zmq::recv_multipart(sub, std::back_inserter(frames))) continue;
    ASSERT_EQ(frames.size(), 2u);
    EXPECT_EQ(frames[0].to_string(), "summaries.node-a.m1.");
    msgpack::object_handle oh = msgpack::unpack(frames[1].data<char>(), frames[1].size());
    auto m = oh.get().as<std::map<std::string, msgpack::object>>();
    if (m.at("metric").as<std::string>() != "ttft_ms" || m.at("start").as<int64_t>() != start)
      continue;
    EXPECT_EQ(m.at("count").as<uint64_t>(), 100u);
    EXPECT_DOUBLE_EQ(m.at("mean").as<double>(), 50.5);
    EXPECT_EQ(m.at("errors").as<uint64_t>(), 10u);
    seen = true;
  }
  EXPECT_TRUE(seen) << "no summaries.node-a.m1 message for ttft_ms";

  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("inferscope_source_events_total{stage=\"ingest\"} 114"),
            std::string::npos)
      << metrics->body;

  // SIGTERM stops the engine cleanly.
  engine.process().Signal(SIGTERM);
  EXPECT_EQ(engine.process().Wait(), 0) << engine.Log();
}

// A gateway reporting at first-token time knows ttft but not e2e: such requests count (events,
// errors) in every request series, feed ttft, and add no value to e2e_ms, whose statistics stay
// those of the requests that carry e2e (absent, not 0).
TEST(EndToEndTest, RequestsWithoutE2eFeedTtftAndCountButAreMissingFromE2e) {
  TempDir dir;
  EngineProcess engine(dir, Substitute(kTopology, {{"STATE", dir.str() + "/state"}}));
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();
  auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  int64_t start = (now_ms - 60'000) / 10'000 * 10'000;
  Subprocess publisher(
      {testing::Python(), testing::SourceDir() + "/tests/integration/publish_without_e2e.py",
       engine.Endpoint("ingest"), std::to_string(start)},
      dir.str() + "/publisher.log");
  ASSERT_EQ(publisher.Wait(), 0) << ReadFile(dir.str() + "/publisher.log");

  httplib::Client http(engine.HttpUrl());
  auto query = [&](const std::string& metric) {
    return "/v1/instances/node-b/summary?model=m1&metric=" + metric +
           "&window=10s&from=" + std::to_string(start) + "&to=" + std::to_string(start + 10'000);
  };
  json ttft;
  ASSERT_TRUE(WaitFor([&] {
    ttft = GetJson(http, query("ttft_ms"));
    return ttft.is_object() && ttft.contains("windows") && ttft["windows"].size() == 1 &&
           ttft["windows"][0]["count"] == 100;
  })) << ttft.dump()
      << "\n"
      << engine.Log();
  EXPECT_EQ(ttft["windows"][0]["events"], 100);
  EXPECT_EQ(ttft["windows"][0]["errors"], 5);
  EXPECT_DOUBLE_EQ(ttft["windows"][0]["min"].get<double>(), 10);
  EXPECT_DOUBLE_EQ(ttft["windows"][0]["max"].get<double>(), 159);

  json e2e = GetJson(http, query("e2e_ms"));
  ASSERT_EQ(e2e["windows"].size(), 1u) << e2e.dump();
  const json& w = e2e["windows"][0];
  EXPECT_EQ(w["events"], 100);  // every request counts ...
  EXPECT_EQ(w["errors"], 5);
  EXPECT_NEAR(w["error_ratio"].get<double>(), 0.05, 1e-12);
  EXPECT_EQ(w["count"], 40);  // ... but only the 40 with e2e give values: none is taken as 0
  EXPECT_DOUBLE_EQ(w["min"].get<double>(), 2000);
  EXPECT_DOUBLE_EQ(w["max"].get<double>(), 2039);
  EXPECT_DOUBLE_EQ(w["mean"].get<double>(), 2019.5);
  EXPECT_GE(w["p50"].get<double>(), 2000 * 0.99);

  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("inferscope_source_events_total{stage=\"ingest\"} 101"),
            std::string::npos)
      << metrics->body;
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

TEST(EndToEndTest, CheckTopologyNamesFileLineAndField) {
  TempDir dir;
  std::string path = dir.str() + "/bad.yaml";
  std::string text = kTopology;
  text.replace(text.find("pane: 10s"), 9, "pane: often");
  std::ofstream(path) << text;
  std::string log = dir.str() + "/check.log";
  Subprocess check({testing::InferscopeBinary(), "check-topology", path}, log);
  EXPECT_EQ(check.Wait(), 1);
  EXPECT_NE(ReadFile(log).find(path + ":16:13: operators[0].options.pane:"), std::string::npos)
      << ReadFile(log);

  Subprocess good({testing::InferscopeBinary(), "check-topology",
                   testing::SourceDir() + "/topologies/inference-fleet.yaml"},
                  dir.str() + "/good.log");
  EXPECT_EQ(good.Wait(), 0) << ReadFile(dir.str() + "/good.log");
}

// What `run` could not use is refused by `check-topology` already, naming file, line and field.
TEST(EndToEndTest, CheckTopologyRefusesAddressesAndPathsRunCannotUse) {
  TempDir dir;
  std::string a_file = dir.str() + "/not-a-dir";
  std::ofstream(a_file) << "x";
  struct Case {
    std::string from, to, expected;
  };
  const std::vector<Case> cases = {
      {"listen: 127.0.0.1:0", "listen: 127.0.0.1:abc",
       ":5:11: query.listen: '127.0.0.1:abc': port 'abc'"},
      {"listen: 127.0.0.1:0", "listen: 127.0.0.1:99999",
       ":5:11: query.listen: '127.0.0.1:99999': port"},
      {"listen: 127.0.0.1:0", "listen: 127.0.0.1:-1", ":5:11: query.listen: '127.0.0.1:-1': port"},
      {"listen: 127.0.0.1:0", "listen: abc", ":5:11: query.listen: 'abc': expected host:port"},
      {"endpoint: tcp://127.0.0.1:*\noperators", "endpoint: not-an-endpoint\noperators",
       ":10:17: sources[0].options.endpoint: 'not-an-endpoint' has no transport"},
      {"endpoint: tcp://127.0.0.1:*\n)", "endpoint: tcp://127.0.0.1:70000\n)",
       ":27:17: sinks[1].options.endpoint: 'tcp://127.0.0.1:70000': port '70000'"},
      {"path: STATE", "path: " + a_file,
       ":3:9: state.path: '" + a_file + "' exists and is not a directory"},
      {"path: STATE", "path: STATE\n  record_retention: {alerts: 1d}",
       ":4:30: state.record_retention.alerts: 'alerts' is not a time-keyed "
       "record table (those are: "},
      {"path: STATE", "path: STATE\n  record_retention: {dead_letter: soon}",
       ":4:35: state.record_retention.dead_letter: expected a duration"},
  };
  for (const Case& c : cases) {
    std::string text = std::string(kTopology) + ")";
    size_t at = text.find(c.from);
    ASSERT_NE(at, std::string::npos) << c.from;
    text.replace(at, c.from.size(), c.to);
    text.pop_back();
    std::string path = dir.str() + "/bad.yaml";
    std::ofstream(path, std::ios::trunc) << text;
    std::string log = dir.str() + "/check.log";
    std::filesystem::remove(log);
    Subprocess check({testing::InferscopeBinary(), "check-topology", path}, log);
    EXPECT_EQ(check.Wait(), 1) << c.to;
    EXPECT_NE(ReadFile(log).find(path + c.expected), std::string::npos) << c.to << "\n"
                                                                        << ReadFile(log);
  }

  // The command-line overrides are checked the same way.
  std::string good = dir.str() + "/good.yaml";
  std::ofstream(good) << kTopology;
  Subprocess bad_dir({testing::InferscopeBinary(), "run", "--topology", good, "--state-dir", a_file,
                      "--duration", "1"},
                     dir.str() + "/run.log");
  EXPECT_EQ(bad_dir.Wait(), 2);
  EXPECT_NE(ReadFile(dir.str() + "/run.log")
                .find("--state-dir: '" + a_file + "' exists and is not a directory"),
            std::string::npos)
      << ReadFile(dir.str() + "/run.log");
}

}  // namespace
}  // namespace inferscope
