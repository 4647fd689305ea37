// The query node as its own process: `inferscope run` (the default topology, ports read back) and
// `inferscope query-node` on the same state directory, fed by `inferscope simulate`. The query node
// answers what the engine's built-in API answers, keeps answering when the engine is SIGKILLed,
// picks the engine's new data up after a restart, refuses writes with 405 READ_ONLY, and several
// query nodes work at once.

#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

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

// `inferscope query-node` as a subprocess, waited for like EngineProcess.
class QueryNodeProcess {
 public:
  QueryNodeProcess(const TempDir& dir, const std::string& state, const std::string& name,
                   const std::string& engine_url) {
    ready_ = dir.str() + "/" + name + ".ready.json";
    log_ = dir.str() + "/" + name + ".log";
    process_ = std::make_unique<Subprocess>(
        std::vector<std::string>{testing::InferscopeBinary(), "query-node", "--state-dir", state,
                                 "--listen", "127.0.0.1:0", "--catch-up-interval", "100ms",
                                 "--secondary-path", dir.str() + "/" + name + ".secondary",
                                 "--engine-url", engine_url, "--ready-file", ready_},
        log_);
  }
  [[nodiscard]] bool WaitReady() {
    if (!WaitFor([&] { return !ReadFile(ready_).empty() || !process_->Running(); })) return false;
    json info = json::parse(ReadFile(ready_), nullptr, false);
    if (!info.is_object() || !info.contains("http")) return false;
    http_ = std::make_unique<httplib::Client>(info["http"].get<std::string>());
    return process_->Running();
  }
  httplib::Client& http() { return *http_; }
  std::string Log() const { return ReadFile(log_); }
  Subprocess& process() { return *process_; }

 private:
  std::string ready_;
  std::string log_;
  std::unique_ptr<Subprocess> process_;
  std::unique_ptr<httplib::Client> http_;
};

// The JSON body of GET `path` (status in `*status`), without the top-level "timestamp" (the time
// of the answer, which differs by construction).
json Get(httplib::Client& http, const std::string& path, int* status = nullptr) {
  auto res = http.Get(path);
  if (!res) return json("no answer");
  if (status != nullptr) *status = res->status;
  json body = json::parse(res->body, nullptr, false);
  if (body.is_object()) body.erase("timestamp");
  return body;
}

int64_t WatermarkOf(httplib::Client& http) {
  json health = Get(http, "/v1/health");
  return health.is_object() ? health.value("watermark_ms", int64_t{0}) : 0;
}

// Runs the simulator against `endpoint` for 4 wall seconds at 10x; returns its exit code. Each run
// is its own publisher (`name`): a restarted engine remembers the sequence numbers of the last.
int Simulate(const TempDir& dir, const std::string& endpoint, int instances,
             const std::string& name) {
  Subprocess sim({testing::InferscopeBinary(), "simulate", "--endpoint", endpoint, "--instances",
                  std::to_string(instances), "--models", "2", "--rate", "30", "--duration", "4",
                  "--speed", "10", "--seed", "7", "--publisher-id", name},
                 dir.str() + "/" + name + ".log");
  return sim.Wait(std::chrono::seconds(60));
}

std::set<std::string> InstanceIds(httplib::Client& http) {
  std::set<std::string> ids;
  json body = Get(http, "/v1/instances?limit=1000");
  if (!body.contains("instances")) return ids;
  for (const json& i : body["instances"]) ids.insert(i["id"].get<std::string>());
  return ids;
}

// The reads a dashboard makes, over a fixed time range so that the answers depend only on the
// stored state.
std::vector<std::string> ComparedPaths(int64_t to_ms) {
  const int64_t to = to_ms / 60'000 * 60'000;
  const std::string range = "&from=" + std::to_string(to - 120'000) + "&to=" + std::to_string(to);
  return {"/v1/capabilities",
          "/v1/instances?limit=1000",
          "/v1/instances/vllm-0/summary?metric=ttft_ms&window=1m" + range,
          "/v1/instances/tgi-2/summary?metric=e2e_ms&window=10s" + range,
          "/v1/series?instance=sglang-1&metric=tpot_ms&step=10s" + range,
          "/v1/performance/metrics?window=1m",
          "/v1/alerts",
          "/v1/bottlenecks?state=all",
          "/v1/silences",
          "/v1/workflows"};
}

// Every compared path answered alike by the engine and the node — waited for (the node catches
// up every 100 ms; the engine may still be writing), with the last difference in `*why`.
bool SameAnswers(httplib::Client& engine, httplib::Client& node, std::string* why) {
  return WaitFor(
      [&] {
        const int64_t wm = WatermarkOf(engine);
        if (wm == 0 || WatermarkOf(node) != wm) {
          *why = "watermarks differ: engine " + std::to_string(wm) + ", node " +
                 std::to_string(WatermarkOf(node));
          return false;
        }
        for (const std::string& path : ComparedPaths(wm)) {
          int engine_status = 0, node_status = 0;
          json a = Get(engine, path, &engine_status);
          json b = Get(node, path, &node_status);
          if (engine_status != 200 || a != b || node_status != engine_status) {
            *why = path + ": engine " + std::to_string(engine_status) + " " + a.dump() + "\nnode " +
                   std::to_string(node_status) + " " + b.dump();
            return false;
          }
        }
        return true;
      },
      std::chrono::seconds(30));
}

TEST(QueryNodeTest, AnswersAsTheEngineSurvivesItsCrashAndFollowsItsRestart) {
  TempDir dir;
  const std::string state = dir.str() + "/state";
  const std::string topology = testing::DefaultTopologyOnFreePorts();
  auto engine = std::make_unique<EngineProcess>(
      dir, EngineProcess::Options{topology, "engine-1", {"--state-dir", state}});
  ASSERT_TRUE(engine->WaitReady()) << engine->Log();

  // Two query nodes on the one state directory, each with its own secondary path.
  QueryNodeProcess node_a(dir, state, "node-a", engine->HttpUrl());
  QueryNodeProcess node_b(dir, state, "node-b", engine->HttpUrl());
  ASSERT_TRUE(node_a.WaitReady()) << node_a.Log();
  ASSERT_TRUE(node_b.WaitReady()) << node_b.Log();
  json health = Get(node_a.http(), "/v1/health");
  EXPECT_EQ(health["role"], "query-node") << health;
  EXPECT_EQ(Get(engine->http(), "/v1/health")["role"], "engine");

  // State the registries hold: a silence and a workflow, written through the engine.
  auto silence = engine->http().Post(
      "/v1/silences",
      R"({"matchers": {"instance": "vllm-3"}, "duration": "2h", "created_by": "test"})",
      "application/json");
  ASSERT_TRUE(silence && silence->status == 201) << (silence ? silence->body : "no answer");
  auto workflow = engine->http().Post(
      "/v1/workflows",
      R"({"instance": "vllm-3", "model": "m", "change": {"--max-num-seqs": "512"}})",
      "application/json");
  ASSERT_TRUE(workflow && workflow->status == 201) << (workflow ? workflow->body : "no answer");

  ASSERT_EQ(Simulate(dir, engine->Endpoint("ingest"), 4, "sim-1"), 0);
  ASSERT_TRUE(WaitFor([&] { return InstanceIds(engine->http()).size() == 4; }));
  std::string why;
  EXPECT_TRUE(SameAnswers(engine->http(), node_a.http(), &why)) << why;
  EXPECT_TRUE(SameAnswers(engine->http(), node_b.http(), &why)) << why;
  json silences = Get(node_a.http(), "/v1/silences");
  ASSERT_EQ(silences["silences"].size(), 1u) << silences;

  // Writes go to the engine: 405 READ_ONLY naming it, and nothing changes.
  auto refused =
      node_a.http().Post("/v1/silences", R"({"matchers": {"instance": "x"}})", "application/json");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 405);
  EXPECT_EQ(refused->get_header_value("Allow"), "GET");
  json error = json::parse(refused->body);
  EXPECT_EQ(error["error"]["code"], "READ_ONLY") << error;
  EXPECT_EQ(error["error"]["details"]["engine_url"], engine->HttpUrl()) << error;
  auto refused_delete = node_b.http().Delete("/v1/silences/whatever");
  ASSERT_TRUE(refused_delete);
  EXPECT_EQ(refused_delete->status, 405);
  EXPECT_EQ(Get(node_a.http(), "/v1/silences"), silences);

  // SIGKILL the engine: the nodes keep answering from the last committed state.
  const std::set<std::string> before = InstanceIds(node_a.http());
  const int64_t watermark_before = WatermarkOf(node_a.http());
  EXPECT_EQ(engine->Stop(SIGKILL), 128 + SIGKILL);
  engine.reset();
  int status = 0;
  for (int i = 0; i < 3; ++i) {  // across several catch-ups with no primary
    health = Get(node_a.http(), "/v1/health", &status);
    EXPECT_EQ(status, 200) << health;
    EXPECT_EQ(InstanceIds(node_a.http()), before);
    EXPECT_EQ(WatermarkOf(node_b.http()), watermark_before);
    const uint64_t count = health["catch_up"]["count"].get<uint64_t>();
    ASSERT_TRUE(WaitFor([&] {
      return Get(node_a.http(), "/v1/health")["catch_up"]["count"].get<uint64_t>() > count;
    }));
  }

  // Restart the engine on the same state with more instances: the nodes pick the new data up.
  engine = std::make_unique<EngineProcess>(
      dir, EngineProcess::Options{topology, "engine-2", {"--state-dir", state}});
  ASSERT_TRUE(engine->WaitReady()) << engine->Log();
  ASSERT_EQ(Simulate(dir, engine->Endpoint("ingest"), 6, "sim-2"), 0);
  ASSERT_TRUE(WaitFor([&] { return InstanceIds(engine->http()).size() == 6; }));
  ASSERT_TRUE(WaitFor([&] { return InstanceIds(node_a.http()).size() == 6; }))
      << Get(node_a.http(), "/v1/health");
  // New instances can show up through late panes (upserts) before the restored watermark moves:
  // wait for the engine's watermark, then the node's, to pass the one before the crash.
  ASSERT_TRUE(WaitFor([&] { return WatermarkOf(engine->http()) > watermark_before; }));
  ASSERT_TRUE(WaitFor([&] { return WatermarkOf(node_a.http()) > watermark_before; }))
      << Get(node_a.http(), "/v1/health");
  EXPECT_TRUE(SameAnswers(engine->http(), node_a.http(), &why)) << why;
  EXPECT_TRUE(SameAnswers(engine->http(), node_b.http(), &why)) << why;
  health = Get(node_b.http(), "/v1/health");
  EXPECT_EQ(health["status"], "ok") << health;
  EXPECT_GE(health["catch_up"]["reopens"].get<int>(), 1) << health;  // the engine's new MANIFEST
  EXPECT_EQ(engine->Stop(), 0) << engine->Log();
  node_a.process().Signal(SIGTERM);
  EXPECT_EQ(node_a.process().Wait(), 0) << node_a.Log();
}

TEST(QueryNodeTest, RefusesAStateDirectoryWithoutAStore) {
  TempDir dir;
  const std::string log = dir.str() + "/node.log";
  Subprocess node({testing::InferscopeBinary(), "query-node", "--state-dir", dir.str() + "/none"},
                  log);
  EXPECT_EQ(node.Wait(), 2);
  EXPECT_NE(ReadFile(log).find("is not a directory (start the engine on it first)"),
            std::string::npos)
      << ReadFile(log);
  Subprocess empty({testing::InferscopeBinary(), "query-node", "--state-dir", dir.str(), "--listen",
                    "127.0.0.1:0"},
                   log);
  EXPECT_EQ(empty.Wait(), 1);
  EXPECT_NE(ReadFile(log).find("no state store to read at"), std::string::npos) << ReadFile(log);
}

}  // namespace
}  // namespace inferscope
