#include "sinks/zmq_pub_sink.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <msgpack.hpp>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "values/aggregate.h"

namespace inferscope {
namespace {

ConfigNode Options(const std::string& yaml) {
  return ConfigNode("<test>", YAML::Load(yaml), "sinks[0].options");
}

struct Received {
  std::string topic;
  std::string payload;
};

class ZmqPubSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ctx_.name = "pub";
    ctx_.interner = &interner_;
    ctx_.metrics = &metrics_;
    ctx_.clock = &clock_;
  }

  // The known pane: values 1..200 ms on node-1/llama/ttft_ms over [60 s, 70 s), 3 of 250 requests
  // failed.
  WindowSummary KnownSummary() {
    WindowSummary s;
    s.series = {interner_.Intern("node-1"), interner_.Intern("llama"), interner_.Intern("ttft_ms")};
    s.start_ms = 60'000;
    s.end_ms = 70'000;
    for (int i = 1; i <= 200; ++i) s.agg.Add(i, s.start_ms + i);
    for (int i = 0; i < 250; ++i) s.agg.AddEvent(i < 3);
    s.max_event_time_ms = s.start_ms + 200;
    return s;
  }

  WindowSummary Probe() {
    WindowSummary s;
    s.series = {interner_.Intern("probe"), interner_.Intern("p"), interner_.Intern("ttft_ms")};
    s.start_ms = 0;
    s.end_ms = 10'000;
    return s;
  }

  // Connects a SUB socket to `sink` and publishes probes until one arrives: PUB/SUB joins are
  // asynchronous, so a message sent before the subscription propagated would be dropped.
  void Join(ZmqPubSink& sink, zmq::socket_t& sub) {
    sub.set(zmq::sockopt::subscribe, "summaries.");
    sub.set(zmq::sockopt::rcvtimeo, 100);
    sub.connect(sink.Endpoint());
    OutputBatch probe;
    probe.Add<kind::PaneSummary>(Probe());
    for (int attempt = 0; attempt < 100; ++attempt) {
      ASSERT_TRUE(sink.Write(probe).ok());
      Received r;
      if (Receive(sub, &r)) return;
    }
    FAIL() << "the subscriber never joined";
  }

  // Receives one two-frame message (waiting up to the receive timeout).
  static bool Receive(zmq::socket_t& sub, Received* out) {
    zmq::message_t topic, payload;
    if (!sub.recv(topic)) return false;
    EXPECT_TRUE(topic.more());
    EXPECT_TRUE(sub.recv(payload).has_value());
    EXPECT_FALSE(payload.more());
    out->topic = topic.to_string();
    out->payload = payload.to_string();
    return true;
  }

  // Receives until a message whose topic is not a probe's (skipping probes still in flight).
  static Received ReceiveSummary(zmq::socket_t& sub) {
    Received r;
    for (int i = 0; i < 1000; ++i) {
      if (!Receive(sub, &r)) continue;
      if (r.topic.rfind("summaries.probe.", 0) != 0) return r;
    }
    ADD_FAILURE() << "no summary received";
    return r;
  }

  Interner interner_;
  MetricsRegistry metrics_;
  ManualClock clock_{1'000'000};
  StageContext ctx_;
  zmq::context_t zmq_;
};

TEST_F(ZmqPubSinkTest, CreateValidatesOptions) {
  EXPECT_EQ(ZmqPubSink::Create(Options("sndhwm: 5")).status().code(),
            Status::Code::kInvalidArgument);
  Result<std::unique_ptr<ZmqPubSink>> bad_format =
      ZmqPubSink::Create(Options("{endpoint: 'tcp://127.0.0.1:*', format: xml}"));
  EXPECT_EQ(bad_format.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(bad_format.status().message().find("format"), std::string::npos);
  EXPECT_EQ(ZmqPubSink::Create(Options("{endpoint: 'tcp://127.0.0.1:*', hwm: 5}")).status().code(),
            Status::Code::kInvalidArgument);
  EXPECT_TRUE(ZmqPubSink::Create(Options("{endpoint: 'tcp://127.0.0.1:*', format: json}")).ok());
}

TEST_F(ZmqPubSinkTest, OpenReportsABadEndpoint) {
  // Malformed: refused at Create, naming the endpoint.
  auto malformed = ZmqPubSink::Create(Options("{endpoint: 'nonsense://x'}"));
  ASSERT_FALSE(malformed.ok());
  EXPECT_NE(malformed.status().message().find("nonsense"), std::string::npos)
      << malformed.status().ToString();
  // Well-formed but unbindable: an IOError at Open.
  auto sink =
      ZmqPubSink::Create(Options("{endpoint: 'ipc:///nonexistent-inferscope-dir/out.sock'}"));
  ASSERT_TRUE(sink.ok()) << sink.status().ToString();
  EXPECT_EQ((*sink)->Open(ctx_).code(), Status::Code::kIOError);
}

TEST_F(ZmqPubSinkTest, PublishesMsgpackSummariesUnderTheInstanceAndModelTopic) {
  auto sink = ZmqPubSink::Create(Options("{endpoint: 'tcp://127.0.0.1:*'}"));
  ASSERT_TRUE(sink.ok());
  ASSERT_TRUE((*sink)->Open(ctx_).ok());
  const std::string endpoint = (*sink)->Endpoint();
  EXPECT_EQ(endpoint.rfind("tcp://127.0.0.1:", 0), 0u) << endpoint;
  EXPECT_EQ(endpoint.find('*'), std::string::npos) << endpoint;

  zmq::socket_t sub(zmq_, zmq::socket_type::sub);
  ASSERT_NO_FATAL_FAILURE(Join(**sink, sub));
  uint64_t probes = metrics_.CounterValue("inferscope_sink_messages_total", {{"stage", "pub"}});

  OutputBatch batch;
  batch.Add<kind::PaneSummary>(KnownSummary());
  batch.Mutable<kind::PaneSummary>().back().update = true;  // re-published after late events
  batch.watermark_ms = 75'000;
  ASSERT_TRUE((*sink)->Write(batch).ok());
  Received r = ReceiveSummary(sub);
  EXPECT_EQ(r.topic, "summaries.node-1.llama.");
  EXPECT_EQ(metrics_.CounterValue("inferscope_sink_messages_total", {{"stage", "pub"}}),
            probes + 1);

  msgpack::object_handle handle = msgpack::unpack(r.payload.data(), r.payload.size());
  std::map<std::string, msgpack::object> m;
  handle.get().convert(m);
  EXPECT_EQ(m.at("v").as<int>(), 1);
  EXPECT_EQ(m.at("instance").as<std::string>(), "node-1");
  EXPECT_EQ(m.at("model").as<std::string>(), "llama");
  EXPECT_EQ(m.at("metric").as<std::string>(), "ttft_ms");
  EXPECT_EQ(m.at("start").as<int64_t>(), 60'000);
  EXPECT_EQ(m.at("end").as<int64_t>(), 70'000);
  EXPECT_EQ(m.at("count").as<uint64_t>(), 200u);
  EXPECT_DOUBLE_EQ(m.at("sum").as<double>(), 20'100);
  EXPECT_DOUBLE_EQ(m.at("mean").as<double>(), 100.5);
  EXPECT_DOUBLE_EQ(m.at("min").as<double>(), 1);
  EXPECT_DOUBLE_EQ(m.at("max").as<double>(), 200);
  EXPECT_NEAR(m.at("variance").as<double>(), (200.0 * 200.0 - 1) / 12, 1e-6);
  EXPECT_DOUBLE_EQ(m.at("last").as<double>(), 200);
  EXPECT_NEAR(m.at("p50").as<double>(), 100, 100 * 0.01 + 1);
  EXPECT_NEAR(m.at("p90").as<double>(), 180, 180 * 0.01 + 1);
  EXPECT_NEAR(m.at("p95").as<double>(), 190, 190 * 0.01 + 1);
  EXPECT_NEAR(m.at("p99").as<double>(), 198, 198 * 0.01 + 1);
  EXPECT_DOUBLE_EQ(m.at("rate").as<double>(), 20);  // 200 values over 10 s
  EXPECT_EQ(m.at("events").as<uint64_t>(), 250u);
  EXPECT_EQ(m.at("errors").as<uint64_t>(), 3u);
  EXPECT_DOUBLE_EQ(m.at("error_ratio").as<double>(), 3.0 / 250);
  EXPECT_EQ(m.at("watermark").as<int64_t>(), 75'000);
  EXPECT_TRUE(m.at("update").as<bool>());
  (*sink)->Close();
}

TEST_F(ZmqPubSinkTest, OmitsQuantilesOfAnEmptyPaneAndSpeaksJson) {
  auto sink = ZmqPubSink::Create(Options("{endpoint: 'tcp://127.0.0.1:*', format: json}"));
  ASSERT_TRUE(sink.ok());
  ASSERT_TRUE((*sink)->Open(ctx_).ok());
  zmq::socket_t sub(zmq_, zmq::socket_type::sub);
  ASSERT_NO_FATAL_FAILURE(Join(**sink, sub));

  OutputBatch batch;
  WindowSummary empty;
  empty.series = {interner_.Intern("node-2"), interner_.Intern("qwen"), interner_.Intern("e2e_ms")};
  empty.start_ms = 0;
  empty.end_ms = 10'000;
  empty.agg.AddEvent(true);
  batch.Add<kind::PaneSummary>(empty);
  batch.Add<kind::PaneSummary>(KnownSummary());
  batch.watermark_ms = 80'000;
  ASSERT_TRUE((*sink)->Write(batch).ok());

  Received first = ReceiveSummary(sub);
  EXPECT_EQ(first.topic, "summaries.node-2.qwen.");
  nlohmann::json j = nlohmann::json::parse(first.payload);
  EXPECT_EQ(j["count"], 0);
  EXPECT_EQ(j["events"], 1);
  EXPECT_EQ(j["errors"], 1);
  EXPECT_DOUBLE_EQ(j["error_ratio"].get<double>(), 1.0);
  EXPECT_FALSE(j.contains("p50"));
  EXPECT_FALSE(j.contains("p99"));

  Received second = ReceiveSummary(sub);
  EXPECT_EQ(second.topic, "summaries.node-1.llama.");
  nlohmann::json k = nlohmann::json::parse(second.payload);
  EXPECT_EQ(k["count"], 200);
  EXPECT_DOUBLE_EQ(k["sum"].get<double>(), 20'100);
  EXPECT_NEAR(k["p50"].get<double>(), 100, 2);
  EXPECT_EQ(k["watermark"], 80'000);
  EXPECT_EQ(k["update"], false);
}

}  // namespace
}  // namespace inferscope
