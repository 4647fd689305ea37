#include "sinks/zmq_alert_sink.h"

#include <gtest/gtest.h>
#include <zmq_addon.hpp>

#include "pipeline/summary.h"
#include "tests/sinks/zmq_sink_fixture.h"

namespace inferscope {
namespace {

TEST(ZmqAlertSinkTest, PublishesTopicAndPayloadSkipsSilenced) {
  MetricsRegistry metrics;
  std::unique_ptr<ZmqAlertSink> sink = testing::OpenLoopbackSink<ZmqAlertSink>("alerts", metrics);
  ASSERT_NE(sink, nullptr);

  zmq::context_t zctx;
  zmq::socket_t sub = testing::Subscriber(zctx, sink->Endpoint(), "alerts.critical.");

  Alert a;
  a.fingerprint = 0xabcdef;
  a.severity = Severity::kCritical;
  a.type = AnomalyType::kThreshold;
  a.instance = "vllm-1";
  a.model = "llama";
  a.metric = "ttft_ms";
  a.stat = "p95";
  a.value = 5000;
  a.message = "p95 ttft_ms high";
  Alert silenced = a;
  silenced.silenced = true;
  Alert warning = a;
  warning.severity = Severity::kWarning;
  OutputBatch batch;
  batch.Mutable<kind::Alert>() = {silenced, warning, a};

  std::vector<zmq::message_t> frames = testing::WriteUntilReceived(*sink, batch, sub);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].to_string(), "alerts.critical.vllm-1.llama.");
  msgpack::object_handle oh = msgpack::unpack(frames[1].data<char>(), frames[1].size());
  auto m = oh.get().as<std::map<std::string, msgpack::object>>();
  EXPECT_EQ(m.at("fingerprint").as<std::string>(), "0000000000abcdef");
  EXPECT_EQ(m.at("state").as<std::string>(), "firing");
  EXPECT_EQ(m.at("severity").as<std::string>(), "critical");
  EXPECT_EQ(m.at("type").as<std::string>(), "threshold");
  EXPECT_EQ(m.at("value").as<double>(), 5000);
  EXPECT_FALSE(m.at("silenced").as<bool>()) << "silenced alerts are not published";
  EXPECT_GE(metrics.GetCounter("inferscope_sink_alerts_silenced_total", "", {{"stage", "alerts"}})
                ->value(),
            1u);
  EXPECT_EQ(ZmqAlertSink::Topic(warning), "alerts.warning.vllm-1.llama.");
  EXPECT_NE(ZmqAlertSink::EncodeJson(a).find("\"fingerprint\":\"0000000000abcdef\""),
            std::string::npos);
  sink->Close();
}

}  // namespace
}  // namespace inferscope
