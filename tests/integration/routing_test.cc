// The routing learner end to end with real sockets: `inferscope simulate` (a real subprocess)
// publishes a fleet to an engine on the default topology; the simulator fails one backend
// (`--fault error_burst:sglang-1:...:1.0`: every request of it is a server error); a subscriber
// on `routing.` receives weights that move traffic off it, POST /v1/routing/select stops choosing
// it, and GET /v1/routing/weights serves the stored weights. And the learner's checkpoint across a
// SIGKILL of the engine process: restarted on the same state directory, it answers from the
// evidence it had (same now, gates and weights) and goes on from it.

#include <gtest/gtest.h>
#include <httplib.h>
#include <msgpack.hpp>
#include <nlohmann/json.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <chrono>
#include <csignal>
#include <map>
#include <sstream>
#include <string>

#include "clients/cpp/publisher.h"
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

// The engine's inferscope_checkpoints_total (-1 when /metrics does not answer).
double CheckpointsTotal(httplib::Client& http) {
  auto res = http.Get("/metrics");
  if (!res || res->status != 200) return -1;
  std::istringstream lines(res->body);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("inferscope_checkpoints_total", 0) == 0) {
      return std::stod(line.substr(line.find_last_of(' ') + 1));
    }
  }
  return -1;
}

// POST /v1/routing/select for the checkpoint test's model; the status in `*status`.
json SelectCkpt(httplib::Client& http, int* status) {
  auto res = http.Post("/v1/routing/select",
                       json{{"model", "ckpt-model"},
                            {"strategy", "lowest_latency"},
                            {"prompt_tokens", 500},
                            {"expected_output_tokens", 100}}
                           .dump(),
                       "application/json");
  *status = res ? res->status : 0;
  return res ? json::parse(res->body, nullptr, false) : json();
}

const json* Ranked(const json& decision, const std::string& backend) {
  for (const json& r : decision["ranked"]) {
    if (r["backend"] == backend) return &r;
  }
  return nullptr;
}

// Publishes `n` outcomes of "fast" (ttft 40 ms) and of "slow" (ttft 400 ms) of model ckpt-model,
// one every 5 ms of event time from `t0`, then (with `break_it`) 6 server errors of "broken" (the
// gate ejects after 5 in a row). Returns the last event time.
int64_t PublishCkptEvents(client::Publisher& pub, int64_t t0, int n, bool break_it) {
  int64_t t = t0;
  for (int i = 0; i < n; ++i) {
    for (const char* b : {"fast", "slow"}) {
      const bool fast = b[0] == 'f';
      client::RequestOutcome r;
      r.instance = b;
      r.model = "ckpt-model";
      r.ttft_ms = (fast ? 40.0 : 400.0) * (1 + 0.1 * (i % 5));
      r.tpot_ms = fast ? 10.0 : 40.0;
      r.output_tokens = 100;
      r.prompt_tokens = 500;
      r.e2e_ms = *r.ttft_ms + *r.tpot_ms * 100;
      r.time_ms = t += 5;
      EXPECT_TRUE(pub.Request(r)) << pub.last_error();
    }
    if (break_it) {
      client::RequestOutcome r;
      r.instance = "broken";
      r.model = "ckpt-model";
      r.e2e_ms = 50;
      r.error = "server_error";
      r.time_ms = t;
      EXPECT_TRUE(pub.Request(r)) << pub.last_error();
    }
  }
  EXPECT_TRUE(pub.Flush()) << pub.last_error();
  return t;
}

TEST(RoutingEndToEndTest, LearnerCheckpointSurvivesSigkill) {
  TempDir dir;
  const std::string topology = testing::DefaultTopologyOnFreePorts();
  ASSERT_FALSE(topology.empty());
  const std::vector<std::string> args = {"--state-dir", dir.str() + "/state", "--listen",
                                         "127.0.0.1:0"};
  const int64_t t0 = client::NowMs() - 60'000;
  json before;
  int64_t last_event = 0;
  {
    EngineProcess engine(dir, {topology, "engine-1", args});
    ASSERT_TRUE(engine.WaitReady()) << engine.Log();
    client::PublisherOptions po;
    po.endpoint = engine.Endpoint("ingest");
    po.publisher_id = "ckpt-pub-1";
    client::Publisher pub(po);
    std::string error;
    ASSERT_TRUE(pub.Connect(&error)) << error;
    // 200 outcomes each of fast and slow; "broken" fails 6 times in a row among them (ejected for
    // base_ejection_time, 30 s of event time).
    last_event = PublishCkptEvents(pub, t0, 200, /*break_it=*/false);
    last_event = PublishCkptEvents(pub, last_event, 6, /*break_it=*/true);
    int status = 0;
    ASSERT_TRUE(WaitFor(
        [&] {
          before = SelectCkpt(engine.http(), &status);
          if (status != 200 || before.value("time", int64_t{0}) != last_event) return false;
          const json* fast = Ranked(before, "fast");
          bool gated = false;
          for (const json& g : before["gated"]) gated |= g["backend"] == "broken";
          return gated && fast != nullptr && (*fast)["samples"].get<double>() > 150;
        },
        std::chrono::seconds(20)))
        << status << " " << before.dump() << "\n"
        << engine.Log();
    ASSERT_EQ(before["backend"], "fast") << before.dump();
    // Two checkpoints after the learner has seen everything: the second one holds it.
    const double checkpoints = CheckpointsTotal(engine.http());
    ASSERT_GE(checkpoints, 0);
    ASSERT_TRUE(WaitFor([&] { return CheckpointsTotal(engine.http()) >= checkpoints + 2; },
                        std::chrono::seconds(20)))
        << engine.Log();
    engine.Stop(SIGKILL);
  }

  // Restarted on the same state directory: without a new event the learner answers from the
  // restored evidence — the model is known (a cold learner answers 404), now is the last event
  // time, "broken" is still ejected until the same time, and the weights and effective samples
  // are those before the kill.
  EngineProcess engine(dir, {topology, "engine-2", args});
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();
  int status = 0;
  json after = SelectCkpt(engine.http(), &status);
  ASSERT_EQ(status, 200) << after.dump() << "\n" << engine.Log();
  EXPECT_EQ(after["time"], last_event);
  EXPECT_EQ(after["backend"], "fast") << after.dump();
  ASSERT_EQ(after["gated"].size(), 1u) << after.dump();
  EXPECT_EQ(after["gated"][0]["backend"], "broken");
  EXPECT_EQ(after["gated"][0]["until"], before["gated"][0]["until"]);
  EXPECT_EQ(after["gated"][0]["ejections"], before["gated"][0]["ejections"]);
  for (const char* b : {"fast", "slow"}) {
    const json* x = Ranked(before, b);
    const json* y = Ranked(after, b);
    ASSERT_TRUE(x != nullptr && y != nullptr) << after.dump();
    EXPECT_NEAR((*y)["weight"].get<double>(), (*x)["weight"].get<double>(), 0.05) << b;
    EXPECT_NEAR((*y)["samples"].get<double>(), (*x)["samples"].get<double>(),
                0.01 * (*x)["samples"].get<double>())
        << b;
    EXPECT_NEAR((*y)["expected_latency_ms"].get<double>(),
                (*x)["expected_latency_ms"].get<double>(),
                0.05 * (*x)["expected_latency_ms"].get<double>())
        << b;
  }

  // The weights go on from there: 50 more outcomes each add to the restored evidence (a cold
  // learner would hold ~50 effective samples, not more than before the kill).
  client::PublisherOptions po;
  po.endpoint = engine.Endpoint("ingest");
  po.publisher_id = "ckpt-pub-2";
  client::Publisher pub(po);
  std::string error;
  ASSERT_TRUE(pub.Connect(&error)) << error;
  const int64_t last = PublishCkptEvents(pub, last_event + 1000, 50, /*break_it=*/false);
  json more;
  ASSERT_TRUE(WaitFor(
      [&] {
        more = SelectCkpt(engine.http(), &status);
        return status == 200 && more.value("time", int64_t{0}) == last;
      },
      std::chrono::seconds(20)))
      << more.dump();
  const json* fast_before = Ranked(before, "fast");
  const json* fast_more = Ranked(more, "fast");
  ASSERT_TRUE(fast_more != nullptr) << more.dump();
  EXPECT_GT((*fast_more)["samples"].get<double>(), (*fast_before)["samples"].get<double>())
      << more.dump();
  EXPECT_EQ(more["backend"], "fast") << more.dump();
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

}  // namespace
}  // namespace inferscope
