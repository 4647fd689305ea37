#include "sinks/zmq_workflow_sink.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>
#include <zmq_addon.hpp>

#include <nlohmann/json.hpp>

#include "pipeline/summary.h"
#include "sinks/topic.h"
#include "tests/sinks/zmq_sink_fixture.h"

namespace inferscope {
namespace {

WorkflowChange Sample() {
  WorkflowChange c;
  c.seq = 7;
  c.id = "5f0c9a1e2b3d4c6f";
  c.instance = "vllm-1.eu";
  c.model = "llama-3.1-8b";
  c.state = WorkflowState::kRolledBack;
  c.at_ms = 1234;
  c.by = "canary";
  c.note = "regressed: ttft_ms";
  c.verdict = "regressed";
  c.progress = 1;  // whole: still a float64 on the wire
  return c;
}

TEST(ZmqWorkflowSinkTest, PublishesTopicAndPayload) {
  MetricsRegistry metrics;
  std::unique_ptr<ZmqWorkflowSink> sink =
      testing::OpenLoopbackSink<ZmqWorkflowSink>("workflow_stream", metrics);
  ASSERT_NE(sink, nullptr);

  zmq::context_t zctx;
  // One state of exactly one instance: the escaped name ends the prefix.
  zmq::socket_t sub =
      testing::Subscriber(zctx, sink->Endpoint(), "workflows.ROLLED_BACK.vllm-1%2Eeu.");

  WorkflowChange other = Sample();
  other.instance = "vllm-1";  // a prefix of the escaped name above, must not match
  WorkflowChange applied = Sample();
  applied.state = WorkflowState::kApplied;  // another state, must not match
  OutputBatch batch;
  batch.Mutable<kind::WorkflowChange>() = {other, applied, Sample()};

  std::vector<zmq::message_t> frames = testing::WriteUntilReceived(*sink, batch, sub);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].to_string(), "workflows.ROLLED_BACK.vllm-1%2Eeu.");
  EXPECT_EQ(SplitTopic(frames[0].to_string())->at(2), "vllm-1.eu");
  msgpack::object_handle oh = msgpack::unpack(frames[1].data<char>(), frames[1].size());
  auto m = oh.get().as<std::map<std::string, msgpack::object>>();
  EXPECT_EQ(m.size(), 12u);
  EXPECT_EQ(m.at("v").as<int>(), 1);
  EXPECT_EQ(m.at("seq").as<uint64_t>(), 7u);  // the registry's, beside the stream's topic_seq
  EXPECT_GE(m.at("topic_seq").as<uint64_t>(), 1u);
  EXPECT_EQ(m.at("id").as<std::string>(), "5f0c9a1e2b3d4c6f");
  EXPECT_EQ(m.at("state").as<std::string>(), "ROLLED_BACK");
  EXPECT_EQ(m.at("verdict").as<std::string>(), "regressed");
  EXPECT_EQ(m.at("note").as<std::string>(), "regressed: ttft_ms");
  EXPECT_EQ(m.at("at").as<int64_t>(), 1234);
  EXPECT_EQ(m.at("progress").type, msgpack::type::FLOAT64);
  EXPECT_GE(
      metrics.GetCounter("inferscope_sink_messages_total", "", {{"stage", "workflow_stream"}})
          ->value(),
      3u);

  WorkflowChange pending = Sample();
  pending.verdict.clear();
  const nlohmann::json j = nlohmann::json::parse(ZmqWorkflowSink::EncodeJson(pending));
  EXPECT_TRUE(j["verdict"].is_null());
  EXPECT_EQ(j["state"], "ROLLED_BACK");
  EXPECT_NE(ZmqWorkflowSink::EncodeJson(Sample()).find("\"progress\":1.0"), std::string::npos);
  sink->Close();
}

TEST(ZmqWorkflowSinkTest, OptionErrorsNameTheField) {
  Result<std::unique_ptr<ZmqWorkflowSink>> made = ZmqWorkflowSink::Create(
      ConfigNode("t.yaml", YAML::Load("endpoint: tcp://127.0.0.1:*\nformat: xml\n"), "options"));
  ASSERT_FALSE(made.ok());
  EXPECT_NE(made.status().message().find("t.yaml:2:9: options.format"), std::string::npos)
      << made.status().message();
}

}  // namespace
}  // namespace inferscope
