#include "sinks/zmq_routing_sink.h"

#include <gtest/gtest.h>
#include <zmq_addon.hpp>

#include <nlohmann/json.hpp>

#include "pipeline/summary.h"
#include "sinks/topic.h"
#include "tests/sinks/zmq_sink_fixture.h"

namespace inferscope {
namespace {

routing::RoutingWeights Sample(const std::string& model = "llama-3.1-8b") {
  routing::RoutingWeights w;
  w.model = model;
  w.strategy = routing::Strategy::kLowestLatency;
  w.time_ms = 1'700'000'000'123;
  w.backends = {{"vllm-0", 0.98, 0.97, routing::GateState::kHealthy},
                {"vllm-1", 0.0, NAN, routing::GateState::kEjected},
                {"vllm-2", 0.02, 0.0, routing::GateState::kProbing}};
  return w;
}

TEST(ZmqRoutingSinkTest, PublishesTopicAndFloat64Payload) {
  MetricsRegistry metrics;
  std::unique_ptr<ZmqRoutingSink> sink =
      testing::OpenLoopbackSink<ZmqRoutingSink>("routing_stream", metrics);
  ASSERT_NE(sink, nullptr);

  zmq::context_t zctx;
  // One model: the escaped name ends the prefix, so "llama-3" does not match it.
  zmq::socket_t sub = testing::Subscriber(zctx, sink->Endpoint(), "routing.llama-3%2E1-8b.");

  OutputBatch batch;
  batch.Mutable<kind::RoutingWeights>() = {Sample("llama-3"), Sample()};
  std::vector<zmq::message_t> frames = testing::WriteUntilReceived(*sink, batch, sub);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].to_string(), "routing.llama-3%2E1-8b.lowest_latency.");
  EXPECT_EQ(SplitTopic(frames[0].to_string())->at(1), "llama-3.1-8b");
  msgpack::object_handle oh = msgpack::unpack(frames[1].data<char>(), frames[1].size());
  auto m = oh.get().as<std::map<std::string, msgpack::object>>();
  EXPECT_EQ(m.size(), 7u);
  EXPECT_GE(m.at("topic_seq").as<uint64_t>(), 1u);  // written until a subscriber got one
  EXPECT_EQ(m.at("v").as<int>(), 1);
  EXPECT_EQ(m.at("model").as<std::string>(), "llama-3.1-8b");
  EXPECT_EQ(m.at("strategy").as<std::string>(), "lowest_latency");
  EXPECT_EQ(m.at("time").as<int64_t>(), 1'700'000'000'123);
  EXPECT_FALSE(m.at("panic").as<bool>());
  auto backends = m.at("backends").as<std::vector<std::map<std::string, msgpack::object>>>();
  ASSERT_EQ(backends.size(), 3u);
  EXPECT_EQ(backends[1].at("backend").as<std::string>(), "vllm-1");
  EXPECT_EQ(backends[1].at("gate").as<std::string>(), "ejected");
  EXPECT_EQ(backends[1].at("weight").type, msgpack::type::FLOAT64) << "0.0 stays a float";
  EXPECT_EQ(backends[1].at("p_best").type, msgpack::type::NIL);
  EXPECT_DOUBLE_EQ(backends[0].at("weight").as<double>(), 0.98);
  EXPECT_FALSE(backends[0].at("idle").as<bool>());
  EXPECT_GE(metrics.GetCounter("inferscope_sink_messages_total", "", {{"stage", "routing_stream"}})
                ->value(),
            2u);

  const nlohmann::json j = nlohmann::json::parse(ZmqRoutingSink::EncodeJson(Sample()));
  EXPECT_EQ(j["v"], 1);
  EXPECT_EQ(j["backends"][2]["gate"], "probing");
  EXPECT_TRUE(j["backends"][1]["p_best"].is_null());
  Result<routing::RoutingWeights> back = routing::WeightsFromJson(j);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->backends.size(), 3u);
  EXPECT_EQ(back->strategy, routing::Strategy::kLowestLatency);
  EXPECT_FALSE(back->backends[0].idle);
  // An idle backend (routing/README.md, "Forgetting backends") says so; a removed model is
  // published without backends.
  routing::RoutingWeights idle = Sample();
  idle.backends[0].idle = true;
  back = routing::WeightsFromJson(nlohmann::json::parse(ZmqRoutingSink::EncodeJson(idle)));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(back->backends[0].idle);
  idle.backends.clear();
  back = routing::WeightsFromJson(nlohmann::json::parse(ZmqRoutingSink::EncodeJson(idle)));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(back->backends.empty());
  sink->Close();
}

TEST(ZmqRoutingSinkTest, OptionErrorsNameTheField) {
  auto made = ZmqRoutingSink::Create(
      ConfigNode("t.yaml", YAML::Load("endpoint: tcp://127.0.0.1:*\nfromat: json\n"), "options"));
  ASSERT_FALSE(made.ok());
  EXPECT_NE(made.status().message().find("t.yaml:2"), std::string::npos) << made.status().message();
  EXPECT_NE(made.status().message().find("fromat"), std::string::npos);
}

}  // namespace
}  // namespace inferscope
