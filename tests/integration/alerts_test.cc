// Alerting end to end, as a user runs it: `inferscope run` on a topology with threshold rules, the
// simulator injecting a latency spike on one instance, a real ZeroMQ subscriber on `alerts.`, the
// HTTP API for stored alerts and silences, and `inferscope tail` as a subprocess.

#include <signal.h>

#include <gtest/gtest.h>
#include <httplib.h>
#include <msgpack.hpp>
#include <nlohmann/json.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "tests/integration/engine_fixture.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;
using testing::EngineProcess;
using testing::ReadFile;
using testing::Subprocess;
using testing::Substitute;
using testing::TempDir;
using testing::WaitFor;

constexpr char kTopology[] = R"(name: alerts-e2e
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
    options: {pane: 1s, out_of_orderness: 300ms, idle_timeout: 1s}
  - name: rules
    type: threshold_rules
    inputs: [windows]
    options:
      rules:
        - name: high_ttft_p95
          metric: ttft_ms
          stat: p95
          window: 1s
          op: ">"
          levels: {warning: 1500, critical: 3000}
          keep_firing_for: 1s
          min_count: 10
sinks:
  - name: alert_store
    type: rocksdb_alerts
    inputs: [rules]
  - name: alerts
    type: zmq_alerts
    inputs: [rules]
    options:
      endpoint: tcp://127.0.0.1:*
)";

json ToJson(const msgpack::object& o) {
  switch (o.type) {
    case msgpack::type::STR:
      return o.as<std::string>();
    case msgpack::type::BOOLEAN:
      return o.as<bool>();
    case msgpack::type::POSITIVE_INTEGER:
    case msgpack::type::NEGATIVE_INTEGER:
      return o.as<int64_t>();
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64:
      return o.as<double>();
    case msgpack::type::MAP: {
      json m = json::object();
      for (const auto& [k, v] : o.as<std::map<std::string, msgpack::object>>()) m[k] = ToJson(v);
      return m;
    }
    default:
      return nullptr;
  }
}

class AlertsEndToEndTest : public ::testing::Test {
 protected:
  void SetUp() override {
    engine_ = std::make_unique<EngineProcess>(
        dir_, Substitute(kTopology, {{"STATE", dir_.str() + "/state"}}));
    ASSERT_TRUE(engine_->WaitReady()) << engine_->Log();
    info_ = engine_->info();
  }

  // Runs the simulator (the serving model of sim/): 2 instances (Llama-8B, Mistral-7B) at 12
  // requests/s each, short answers (outcomes are reported when a request completes, so they follow
  // the spike closely), and vllm-0's GPU 8x slower from 2 s to 5 s: its queue builds up and the
  // requests it serves report ttft of seconds until about 10 s; 16 s, so the alert also resolves.
  void Simulate(const std::string& publisher) {
    Subprocess sim({testing::InferscopeBinary(),
                    "simulate",
                    "--endpoint",
                    info_["endpoints"]["ingest"],
                    "--publisher-id",
                    publisher,
                    "--instances",
                    "2",
                    "--models",
                    "1",
                    "--rate",
                    "24",
                    "--prompt-median",
                    "300",
                    "--output-median",
                    "16",
                    "--duration",
                    "16",
                    "--spike-instance",
                    "vllm-0",
                    "--spike-start",
                    "2",
                    "--spike-duration",
                    "3",
                    "--spike-factor",
                    "8"},
                   dir_.str() + "/sim.log");
    ASSERT_EQ(sim.Wait(), 0) << ReadFile(dir_.str() + "/sim.log");
  }

  // The next alert on `sub` within the poll budget (null when none).
  static json Next(zmq::socket_t& sub, std::string* topic) {
    std::vector<zmq::message_t> frames;
    if (!zmq::recv_multipart(sub, std::back_inserter(frames))) return nullptr;
    if (frames.size() != 2) return nullptr;
    *topic = frames[0].to_string();
    msgpack::object_handle oh = msgpack::unpack(frames[1].data<char>(), frames[1].size());
    return ToJson(oh.get());
  }

  TempDir dir_;
  json info_;
  std::unique_ptr<EngineProcess> engine_;
};

TEST_F(AlertsEndToEndTest, SpikeFiresResolvesIsStoredAndSilenceSuppresses) {
  zmq::context_t ctx;
  zmq::socket_t sub(ctx, zmq::socket_type::sub);
  sub.set(zmq::sockopt::subscribe, "alerts.");
  sub.set(zmq::sockopt::rcvtimeo, 200);
  sub.connect(info_["endpoints"]["alerts"].get<std::string>());
  const std::string tail_log = dir_.str() + "/tail.log";
  Subprocess tail({testing::InferscopeBinary(), "tail", "--endpoint", info_["endpoints"]["alerts"],
                   "--topic", "alerts.", "--json"},
                  tail_log);
  // Give both subscriptions time to reach the PUB socket: the first alert comes seconds later.
  Simulate("sim-1");

  // Firing then resolved for vllm-0, nothing for the other instances.
  json firing, resolved;
  std::string topic, firing_topic;
  ASSERT_TRUE(WaitFor(
      [&] {
        json a = Next(sub, &topic);
        if (!a.is_object()) return false;
        EXPECT_EQ(a["instance"], "vllm-0") << a.dump();
        if (a["state"] == "firing" && firing.is_null()) {
          firing = a;
          firing_topic = topic;
        }
        if (a["state"] == "resolved") resolved = a;
        return !resolved.is_null();
      },
      std::chrono::seconds(30)))
      << engine_->Log();
  ASSERT_TRUE(firing.is_object()) << "resolved without firing";
  EXPECT_EQ(firing_topic.rfind("alerts." + firing["severity"].get<std::string>() + ".vllm-0.", 0),
            0u)
      << firing_topic;
  EXPECT_EQ(firing["rule"], "high_ttft_p95");
  EXPECT_EQ(firing["type"], "threshold");
  EXPECT_EQ(firing["metric"], "ttft_ms");
  EXPECT_EQ(firing["stat"], "p95");
  EXPECT_GT(firing["value"].get<double>(), 1500);
  EXPECT_EQ(firing["window_end"].get<int64_t>() - firing["window_start"].get<int64_t>(), 1000);
  EXPECT_GE(firing["detected_at"].get<int64_t>(), firing["window_end"].get<int64_t>());
  EXPECT_EQ(resolved["fingerprint"], firing["fingerprint"]);
  EXPECT_LT(resolved["value"].get<double>(), 1500);
  const std::string fp = firing["fingerprint"];

  // Stored: the latest state is resolved, the history has the firing too.
  httplib::Client http(info_["http"].get<std::string>());
  auto res = http.Get("/v1/alerts?instance=vllm-0&state=resolved");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  json list = json::parse(res->body);
  ASSERT_EQ(list["alerts"].size(), 1u) << list.dump();
  EXPECT_EQ(list["alerts"][0]["fingerprint"], fp);
  res = http.Get("/v1/alerts?state=firing");
  ASSERT_TRUE(res);
  EXPECT_EQ(json::parse(res->body)["alerts"].size(), 0u) << res->body;
  res = http.Get(("/v1/alerts/" + fp).c_str());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  json one = json::parse(res->body);
  EXPECT_EQ(one["alert"]["state"], "resolved");
  // The API's alert is the stream payload: every field the stream carried, with the same value
  // (msgpack float64 vs JSON text included), plus only `window`.
  for (const auto& [key, value] : resolved.items()) {
    if (key == "topic_seq") continue;  // the stream's numbering of its messages
    ASSERT_TRUE(one["alert"].contains(key)) << key << " missing from " << one["alert"].dump();
    EXPECT_EQ(one["alert"][key], value) << key;
  }
  for (const auto& [key, value] : one["alert"].items()) {
    EXPECT_TRUE(resolved.contains(key) || key == "window") << key << " only in the API";
  }
  EXPECT_EQ(one["alert"]["window"]["start"], resolved["window_start"]);
  EXPECT_EQ(one["alert"]["v"], 1);
  EXPECT_EQ(one["alert"]["series"], "vllm-0/" + resolved["model"].get<std::string>() + "/ttft_ms");
  // Each change shows the threshold of its own severity: 1500 warning, 3000 critical.
  const double firing_limit = firing["severity"] == "critical" ? 3000 : 1500;
  EXPECT_EQ(firing["limit"].get<double>(), firing_limit) << firing.dump();
  EXPECT_EQ(firing["expected"].get<double>(), 1500) << "expected stays the lowest level";
  EXPECT_TRUE(firing["lower"].is_null()) << "op '>': the bound is upper";
  EXPECT_EQ(firing["upper"].get<double>(), 1500);
  ASSERT_GE(one["history"].size(), 2u) << one.dump();
  EXPECT_EQ(one["history"][0]["state"], "firing");
  res = http.Get("/v1/alerts?severity=loud");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(json::parse(res->body)["error"]["code"], "VALIDATION_ERROR");
  res = http.Get("/v1/alerts/00000000000000ff");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);

  // `tail --json` printed the same two alerts.
  ASSERT_TRUE(WaitFor([&] { return ReadFile(tail_log).find("\"resolved\"") != std::string::npos; }))
      << ReadFile(tail_log);
  EXPECT_NE(ReadFile(tail_log).find(fp), std::string::npos);
  tail.Signal(SIGINT);
  EXPECT_EQ(tail.Wait(std::chrono::seconds(5)), 0) << "tail exits cleanly on Ctrl-C";

  // A silence on vllm-0 suppresses the next spike's alerts on the stream; they are still stored.
  res = http.Post("/v1/silences", R"({"matchers": {"instance": "vllm-0", "rule": "high_*"},
                                      "duration": "10m", "comment": "e2e"})",
                  "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 201) << res->body;
  const std::string silence_id = json::parse(res->body)["id"];
  res = http.Get("/v1/silences?status=active");
  ASSERT_TRUE(res);
  ASSERT_EQ(json::parse(res->body)["silences"].size(), 1u) << res->body;

  Simulate("sim-2");
  json stored;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto r = http.Get(("/v1/alerts/" + fp).c_str());
        if (!r || r->status != 200) return false;
        stored = json::parse(r->body);
        int silenced_changes = 0;
        for (const json& h : stored["history"])
          silenced_changes += h["silenced"].get<bool>() ? 1 : 0;
        // The silenced firing (maybe an escalation too) and its resolution.
        return silenced_changes >= 2 && stored["alert"]["state"] == "resolved";
      },
      std::chrono::seconds(30)))
      << stored.dump();
  EXPECT_EQ(stored["alert"]["state"], "resolved");
  EXPECT_TRUE(stored["alert"]["silenced"].get<bool>());
  // Nothing reached the subscriber: both silenced changes were stored seconds after the firing
  // would have been published, and the stream carries nothing else.
  json leaked = Next(sub, &topic);
  EXPECT_TRUE(leaked.is_null()) << "published despite the silence: " << leaked.dump();

  res = http.Delete(("/v1/silences/" + silence_id).c_str());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  res = http.Delete(("/v1/silences/" + silence_id).c_str());
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);

  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("inferscope_alerts_silenced_total{stage=\"rules\"} 2"),
            std::string::npos)
      << metrics->body;

  EXPECT_EQ(engine_->Stop(), 0) << engine_->Log();
}

}  // namespace
}  // namespace inferscope
