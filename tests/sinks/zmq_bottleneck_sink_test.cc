#include "sinks/zmq_bottleneck_sink.h"

#include <gtest/gtest.h>
#include <zmq_addon.hpp>

#include <nlohmann/json.hpp>

#include "pipeline/summary.h"
#include "sinks/topic.h"
#include "tests/sinks/zmq_sink_fixture.h"

namespace inferscope {
namespace {

Bottleneck Sample() {
  Bottleneck b;
  b.instance = "vllm-1.eu";
  b.model = "llama-3.1-8b";
  b.engine = "vllm";
  b.type = BottleneckType::kHighLatency;
  b.severity = BottleneckSeverity::kHigh;
  b.change = BottleneckChange::kRaised;
  b.primary = false;
  b.root = BottleneckType::kMemoryPressure;
  b.chain = {BottleneckType::kMemoryPressure, BottleneckType::kQueueBuildup,
             BottleneckType::kHighLatency};
  b.metric = "ttft_ms";
  b.stat = "p95";
  b.value = 5000;  // whole: still a float64 on the wire
  b.threshold = 3000;
  b.peer_median = NAN;
  b.window_start_ms = 10'000;
  b.window_end_ms = 40'000;
  b.active_since_ms = 20'000;
  b.detected_at_ms = 1234;
  b.description = "ttft_ms p95 = 5000 ms over 30s";
  return b;
}

TEST(ZmqBottleneckSinkTest, PublishesTopicAndFloat64Payload) {
  MetricsRegistry metrics;
  std::unique_ptr<ZmqBottleneckSink> sink =
      testing::OpenLoopbackSink<ZmqBottleneckSink>("bottleneck_stream", metrics);
  ASSERT_NE(sink, nullptr);

  zmq::context_t zctx;
  // Exactly one type of exactly one instance: the escaped name ends the prefix.
  zmq::socket_t sub =
      testing::Subscriber(zctx, sink->Endpoint(), "bottlenecks.HIGH_LATENCY.vllm-1%2Eeu.");

  Bottleneck other = Sample();
  other.instance = "vllm-1";  // a prefix of the escaped name above, must not match
  OutputBatch batch;
  batch.Mutable<kind::Bottleneck>() = {other, Sample()};

  std::vector<zmq::message_t> frames = testing::WriteUntilReceived(*sink, batch, sub);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].to_string(), "bottlenecks.HIGH_LATENCY.vllm-1%2Eeu.");
  EXPECT_EQ(SplitTopic(frames[0].to_string())->at(2), "vllm-1.eu");
  msgpack::object_handle oh = msgpack::unpack(frames[1].data<char>(), frames[1].size());
  auto m = oh.get().as<std::map<std::string, msgpack::object>>();
  EXPECT_EQ(m.size(), 25u);
  EXPECT_GE(m.at("topic_seq").as<uint64_t>(), 1u);  // written until a subscriber got one
  EXPECT_FALSE(m.at("early").as<bool>());
  EXPECT_EQ(m.at("v").as<int>(), 1);
  EXPECT_EQ(m.at("instance").as<std::string>(), "vllm-1.eu");
  EXPECT_EQ(m.at("type").as<std::string>(), "HIGH_LATENCY");
  EXPECT_EQ(m.at("severity").as<std::string>(), "HIGH");
  EXPECT_EQ(m.at("state").as<std::string>(), "active");
  EXPECT_EQ(m.at("change").as<std::string>(), "raised");
  EXPECT_EQ(m.at("root").as<std::string>(), "MEMORY_PRESSURE");
  EXPECT_EQ(m.at("chain").as<std::vector<std::string>>().size(), 3u);
  EXPECT_FALSE(m.at("primary").as<bool>());
  for (const char* key : {"value", "threshold"}) {
    EXPECT_EQ(m.at(key).type, msgpack::type::FLOAT64) << key;
  }
  EXPECT_EQ(m.at("value").as<double>(), 5000.0);
  EXPECT_EQ(m.at("peer_median").type, msgpack::type::NIL);
  EXPECT_EQ(m.at("window_end").as<int64_t>(), 40'000);
  EXPECT_EQ(m.at("id").as<std::string>().size(), 16u);
  EXPECT_GE(
      metrics.GetCounter("inferscope_sink_messages_total", "", {{"stage", "bottleneck_stream"}})
          ->value(),
      2u);

  const nlohmann::json j = nlohmann::json::parse(ZmqBottleneckSink::EncodeJson(Sample()));
  EXPECT_EQ(j["window_start"], 10'000);
  EXPECT_TRUE(j["peer_median"].is_null());
  EXPECT_NE(ZmqBottleneckSink::EncodeJson(Sample()).find("\"value\":5000.0"), std::string::npos);
  sink->Close();
}

// A retraction of an early raise (bottleneck_classify `early: true`) on the real socket.
TEST(ZmqBottleneckSinkTest, PublishesEarlyRetraction) {
  MetricsRegistry metrics;
  std::unique_ptr<ZmqBottleneckSink> sink =
      testing::OpenLoopbackSink<ZmqBottleneckSink>("bottleneck_stream", metrics);
  ASSERT_NE(sink, nullptr);
  zmq::context_t zctx;
  zmq::socket_t sub = testing::Subscriber(zctx, sink->Endpoint(), "bottlenecks.");
  Bottleneck b = Sample();
  b.state = BottleneckState::kRetracted;
  b.change = BottleneckChange::kRetracted;
  b.early = true;
  OutputBatch batch;
  batch.Mutable<kind::Bottleneck>() = {b};
  std::vector<zmq::message_t> frames = testing::WriteUntilReceived(*sink, batch, sub);
  ASSERT_EQ(frames.size(), 2u);
  msgpack::object_handle oh = msgpack::unpack(frames[1].data<char>(), frames[1].size());
  auto m = oh.get().as<std::map<std::string, msgpack::object>>();
  EXPECT_EQ(m.at("state").as<std::string>(), "retracted");
  EXPECT_EQ(m.at("change").as<std::string>(), "retracted");
  EXPECT_TRUE(m.at("early").as<bool>());
  const nlohmann::json j = nlohmann::json::parse(ZmqBottleneckSink::EncodeJson(b));
  EXPECT_EQ(j["state"], "retracted");
  EXPECT_EQ(j["early"], true);
  sink->Close();
}

TEST(ZmqBottleneckSinkTest, OptionErrorsNameTheField) {
  Result<std::unique_ptr<ZmqBottleneckSink>> made = ZmqBottleneckSink::Create(
      ConfigNode("t.yaml", YAML::Load("endpoint: tcp://127.0.0.1:*\nformat: xml\n"), "options"));
  ASSERT_FALSE(made.ok());
  EXPECT_NE(made.status().message().find("t.yaml:2:9: options.format"), std::string::npos)
      << made.status().message();
}

}  // namespace
}  // namespace inferscope
