// The routing learner end to end with real sockets: `inferscope simulate` (a real subprocess)
// publishes a fleet to an engine on the default topology; the simulator fails one backend
// (`--fault error_burst:sglang-1:...:1.0`: every request of it is a server error); a subscriber
// on `routing.` receives weights that move traffic off it, POST /v1/routing/select stops choosing
// it, and GET /v1/routing/weights serves the stored weights.

#include <gtest/gtest.h>
#include <httplib.h>
#include <msgpack.hpp>
#include <nlohmann/json.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <chrono>
#include <csignal>
#include <map>

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

constexpr const char* kModel = "llama-3.1-8b-instruct";
constexpr const char* kFailed = "sglang-1";

TEST(RoutingEndToEndTest, SimulatedFailureMovesTrafficOffTheBackend) {
  TempDir dir;
  const std::string topology = testing::DefaultTopologyOnFreePorts();
  ASSERT_FALSE(topology.empty());
  EngineProcess engine(
      dir, {topology, "engine", {"--state-dir", dir.str() + "/state", "--listen", "127.0.0.1:0"}});
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();

  zmq::context_t ctx;
  zmq::socket_t sub(ctx, zmq::socket_type::sub);
  sub.set(zmq::sockopt::subscribe, "routing.llama-3%2E1-8b-instruct.balanced.");
  sub.set(zmq::sockopt::rcvtimeo, 200);
  sub.connect(engine.Endpoint("routing_stream"));

  // 4 instances x 5 models: every model has 4 backends (vllm-0, sglang-1, tgi-2, vllm-3); from
  // 3 s after the warm-up sglang-1 answers every request with a server error.
  Subprocess sim({testing::InferscopeBinary(),
                  "simulate",
                  "--endpoint",
                  engine.Endpoint("ingest"),
                  "--publisher-id",
                  "routing-sim",
                  "--instances",
                  "4",
                  "--models",
                  "5",
                  "--rate",
                  "200",
                  "--prompt-median",
                  "300",
                  "--output-median",
                  "16",
                  "--warmup",
                  "5",
                  "--duration",
                  "60",
                  "--fault",
                  std::string("error_burst:") + kFailed + ":3s-10m:1.0"},
                 dir.str() + "/sim.log");

  // Weights with sglang-1 healthy first, then weights that move traffic off it.
  bool saw_healthy = false, moved = false;
  json moved_weights;
  ASSERT_TRUE(WaitFor(
      [&] {
        std::vector<zmq::message_t> frames;
        if (!zmq::recv_multipart(sub, std::back_inserter(frames)) || frames.size() != 2) {
          return false;
        }
        msgpack::object_handle oh = msgpack::unpack(frames[1].data<char>(), frames[1].size());
        auto m = oh.get().as<std::map<std::string, msgpack::object>>();
        EXPECT_EQ(m.at("model").as<std::string>(), kModel);
        for (const auto& b :
             m.at("backends").as<std::vector<std::map<std::string, msgpack::object>>>()) {
          if (b.at("backend").as<std::string>() != kFailed) continue;
          const double w = b.at("weight").as<double>();
          if (w > 0.02) saw_healthy = true;
          if (saw_healthy && w <= 0.02) {
            moved = true;
            moved_weights = {{"weight", w}, {"gate", b.at("gate").as<std::string>()}};
          }
        }
        return moved;
      },
      std::chrono::seconds(60)))
      << ReadFile(dir.str() + "/sim.log") << "\n"
      << engine.Log();
  EXPECT_EQ(moved_weights["gate"], "ejected") << moved_weights.dump();

  // The live learner stops choosing it: 200 decisions, at most the probe fraction (2 %, here
  // with slack for the draw) go to sglang-1 — while it is ejected, none.
  int chosen_failed = 0, ok = 0;
  for (int i = 0; i < 200; ++i) {
    auto res = engine.http().Post(
        "/v1/routing/select",
        json{{"model", kModel}, {"strategy", "balanced"}, {"prompt_tokens", 300}}.dump(),
        "application/json");
    ASSERT_TRUE(res);
    ASSERT_EQ(res->status, 200) << res->body;
    json d = json::parse(res->body);
    ++ok;
    if (d["backend"] == kFailed) ++chosen_failed;
    if (i == 0) {
      bool gated = false;
      for (const json& g : d["gated"]) gated |= g["backend"] == kFailed;
      EXPECT_TRUE(gated) << d.dump();
      EXPECT_TRUE(d["reasoning"].is_string());
    }
  }
  EXPECT_EQ(ok, 200);
  EXPECT_LE(chosen_failed, 8) << "beyond the probe fraction";

  // Stored and served from the store.
  json stored;
  ASSERT_TRUE(WaitFor(
      [&] {
        auto res = engine.http().Get(
            (std::string("/v1/routing/weights?strategy=balanced&model=") + kModel).c_str());
        if (!res || res->status != 200) return false;
        stored = json::parse(res->body, nullptr, false);
        for (const json& b : stored["weights"][0]["backends"]) {
          if (b["backend"] == kFailed) return b["weight"].get<double>() <= 0.02;
        }
        return false;
      },
      std::chrono::seconds(20)))
      << stored.dump();
  auto res =
      engine.http().Get((std::string("/v1/models/recommendations?n=2&model=") + kModel).c_str());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  for (const json& r : json::parse(res->body)["recommendations"]) {
    EXPECT_NE(r["backend"], kFailed);
  }
  sim.Signal(SIGTERM);
  sim.Wait();
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

}  // namespace
}  // namespace inferscope
