// `inferscope tail --severity S --instance I` builds its subscription prefix with the names escaped
// (docs/PROTOCOL.md, "Topics"): subscribed to instance "vllm-1", it never prints alerts of
// "vllm-1.eu". A real alert sink in this process, `inferscope tail` as a subprocess.

#include <signal.h>

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "pipeline/metrics.h"
#include "pipeline/summary.h"
#include "sinks/zmq_alert_sink.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

Alert MakeAlert(const std::string& instance, const std::string& message) {
  Alert a;
  a.severity = Severity::kCritical;
  a.type = AnomalyType::kThreshold;
  a.instance = instance;
  a.model = "llama-3.1-8b";
  a.metric = "e2e_ms";
  a.stat = "mean";
  a.message = message;
  return a;
}

// The instances of the JSON lines in `log` and whether the line with `message` is there.
std::vector<std::string> Instances(const std::string& log, const std::string& message, bool* seen) {
  std::vector<std::string> out;
  std::istringstream lines(log);
  std::string line;
  *seen = false;
  while (std::getline(lines, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object()) continue;
    out.push_back(j.value("instance", ""));
    if (j.value("message", "") == message) *seen = true;
  }
  return out;
}

TEST(TailTopicsTest, InstanceOptionSelectsExactlyThatInstance) {
  MetricsRegistry metrics;
  StageContext ctx;
  ctx.name = "alerts";
  ctx.metrics = &metrics;
  auto sink = ZmqAlertSink::Create(
      ConfigNode("t.yaml", YAML::Load("endpoint: tcp://127.0.0.1:*"), "options"));
  ASSERT_TRUE(sink.ok());
  ASSERT_TRUE((*sink)->Open(ctx).ok());

  testing::TempDir dir;
  const std::string out = dir.str() + "/tail.out";
  testing::Subprocess tail({testing::InferscopeBinary(), "tail", "--endpoint", (*sink)->Endpoint(),
                            "--severity", "critical", "--instance", "vllm-1", "--json"},
                           out);
  // Until tail's subscription has reached the sink, publish both instances.
  OutputBatch join;
  join.Mutable<kind::Alert>() = {MakeAlert("vllm-1.eu", "join"), MakeAlert("vllm-1", "join")};
  bool seen = false;
  ASSERT_TRUE(testing::WaitFor([&] {
    EXPECT_TRUE((*sink)->Write(join).ok());
    Instances(testing::ReadFile(out), "join", &seen);
    return seen || !tail.Running();
  })) << testing::ReadFile(out);
  ASSERT_TRUE(tail.Running()) << testing::ReadFile(out);
  OutputBatch batch;
  batch.Mutable<kind::Alert>() = {MakeAlert("vllm-1.eu", "x"), MakeAlert("vllm-1", "end")};
  ASSERT_TRUE((*sink)->Write(batch).ok());
  std::vector<std::string> instances;
  ASSERT_TRUE(testing::WaitFor([&] {
    instances = Instances(testing::ReadFile(out), "end", &seen);
    return seen;
  })) << testing::ReadFile(out);
  for (const std::string& i : instances) EXPECT_EQ(i, "vllm-1");
  tail.Signal(SIGTERM);
  EXPECT_EQ(tail.Wait(), 0);
}

TEST(TailTopicsTest, InstanceWithoutSeverityIsAUsageError) {
  testing::TempDir dir;
  testing::Subprocess tail(
      {testing::InferscopeBinary(), "tail", "--endpoint", "tcp://127.0.0.1:1", "--instance", "x"},
      dir.str() + "/tail.out");
  EXPECT_EQ(tail.Wait(), 2);
  testing::Subprocess bad_severity({testing::InferscopeBinary(), "tail", "--endpoint",
                                    "tcp://127.0.0.1:1", "--severity", "loud"},
                                   dir.str() + "/tail.out");
  EXPECT_EQ(bad_severity.Wait(), 2);
}

}  // namespace
}  // namespace inferscope
