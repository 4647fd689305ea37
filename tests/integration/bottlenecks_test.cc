// Bottleneck classification end to end, as a user runs it: `inferscope run` on the shipped default
// topology (ephemeral ports), the Python client publishing a memory-pressure scenario on one of
// three instances, a real ZeroMQ subscriber on `bottlenecks.`, and GET /v1/bottlenecks.

#include <gtest/gtest.h>
#include <httplib.h>
#include <msgpack.hpp>
#include <nlohmann/json.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <chrono>

#include "tests/integration/engine_fixture.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;
using testing::EngineProcess;
using testing::ReadFile;
using testing::Subprocess;
using testing::TempDir;
using testing::WaitFor;

TEST(BottlenecksEndToEndTest, DefaultTopologyNamesMemoryPressureOnTheFullInstance) {
  TempDir dir;
  const std::string topology = testing::DefaultTopologyOnFreePorts();
  ASSERT_FALSE(topology.empty());
  EngineProcess engine(
      dir, {topology, "engine", {"--state-dir", dir.str() + "/state", "--listen", "127.0.0.1:0"}});
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();

  zmq::context_t ctx;
  zmq::socket_t sub(ctx, zmq::socket_type::sub);
  sub.set(zmq::sockopt::subscribe, "bottlenecks.");
  sub.set(zmq::sockopt::rcvtimeo, 200);
  sub.connect(engine.Endpoint("bottleneck_stream"));

  // Twelve panes ending a little before now: the idle watermark then closes the last ones.
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  const int64_t start = (now_ms - 130'000) / 10'000 * 10'000;
  Subprocess publisher({testing::Python(),
                        testing::SourceDir() + "/tests/integration/publish_bottleneck_scenario.py",
                        engine.Endpoint("ingest"), std::to_string(start), "12"},
                       dir.str() + "/publisher.log");
  ASSERT_EQ(publisher.Wait(), 0) << ReadFile(dir.str() + "/publisher.log");

  // Stored and served: the primary bottleneck of vllm-1, nothing for the healthy instances.
  json list;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto res = engine.http().Get("/v1/bottlenecks?primary=true");
        if (!res || res->status != 200) return false;
        list = json::parse(res->body, nullptr, false);
        return list.is_object() && list["count"] == 1;
      },
      std::chrono::seconds(30)))
      << list.dump() << "\n"
      << engine.Log();
  const json& b = list["bottlenecks"][0];
  EXPECT_EQ(b["instance"], "vllm-1");
  EXPECT_EQ(b["model"], "m");
  EXPECT_EQ(b["engine"], "vllm");
  EXPECT_EQ(b["type"], "MEMORY_PRESSURE");
  EXPECT_EQ(b["severity"], "HIGH");  // 3 preemptions/s
  EXPECT_EQ(b["state"], "active");
  EXPECT_EQ(b["root"], "MEMORY_PRESSURE");
  EXPECT_EQ(b["metric"], "kv_cache_usage");
  EXPECT_NEAR(b["value"].get<double>(), 0.97, 1e-9);
  auto res = engine.http().Get("/v1/bottlenecks?state=all");
  ASSERT_TRUE(res);
  for (const json& each : json::parse(res->body)["bottlenecks"]) {
    EXPECT_EQ(each["instance"], "vllm-1") << each.dump();
  }
  res = engine.http().Get("/v1/bottlenecks?severity=high");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400) << res->body;

  // Published: the raise on bottlenecks.MEMORY_PRESSURE.vllm-1.
  std::vector<zmq::message_t> frames;
  ASSERT_TRUE(zmq::recv_multipart(sub, std::back_inserter(frames)).has_value())
      << "nothing on the bottleneck stream";
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].to_string(), "bottlenecks.MEMORY_PRESSURE.vllm-1.");
  msgpack::object_handle oh = msgpack::unpack(frames[1].data<char>(), frames[1].size());
  auto m = oh.get().as<std::map<std::string, msgpack::object>>();
  EXPECT_EQ(m.at("change").as<std::string>(), "raised");
  EXPECT_EQ(m.at("value").type, msgpack::type::FLOAT64);

  // The engine's metrics count it.
  res = engine.http().Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_NE(res->body.find("inferscope_bottlenecks_active{stage=\"bottlenecks\",type=\"MEMORY_"
                           "PRESSURE\"} 1"),
            std::string::npos);
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

}  // namespace
}  // namespace inferscope
