// CurveZMQ end to end (docs/PROTOCOL.md, "Security"): `inferscope keygen` writes the keys, `run`
// loads them from files named in the topology, and the real clients publish with them —
// `inferscope simulate` and the Python Publisher. A listed key publishes; an unlisted key is
// refused at the handshake; a listed key cannot publish under an id its globs do not allow; a
// source without keys is announced as unauthenticated at start.

#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include <csignal>
#include <fstream>
#include <sstream>
#include <string>

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

constexpr char kTopology[] = R"(name: curve
state:
  path: state
query:
  listen: 127.0.0.1:0
sources:
  - name: ingest
    type: zmq
    options:
      endpoint: tcp://127.0.0.1:*
      curve:
        server_secret_key_file: engine.key   # relative to this file's folder
        authorized_keys_file: publishers
  - name: plain
    type: zmq
    options:
      endpoint: tcp://127.0.0.1:*
  - name: acked
    type: zmq
    options:
      endpoint: tcp://127.0.0.1:*
      mode: router
      curve:
        server_secret_key_file: engine.key
        authorized_keys_file: publishers
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest, plain, acked]
    options:
      pane: 10s
      out_of_orderness: 2s
  - name: rules
    type: threshold_rules
    inputs: [windows]
    options:
      rules:
        - name: slow
          metric: e2e_ms
          stat: max
          op: ">"
          levels: {warning: 1000000}
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
  - name: alerts
    type: zmq_alerts
    inputs: [rules]
    options:
      endpoint: tcp://127.0.0.1:*
      curve:                                 # who may subscribe
        server_secret_key_file: engine.key
        authorized_keys_file: subscribers
)";

int RunProcess(const std::vector<std::string>& argv, const std::string& log) {
  Subprocess p(argv, log);
  return p.Wait(std::chrono::seconds(60));
}

// The value of the first sample of `name` whose labels contain every one of `labels`
// (e.g. `stage="ingest"`); -1 when there is none.
double Metric(const std::string& body, const std::string& name,
              const std::vector<std::string>& labels) {
  std::istringstream lines(body);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(name + "{", 0) != 0) continue;
    const size_t close = line.find("} ");
    if (close == std::string::npos) continue;
    const std::string label_text = line.substr(name.size(), close - name.size() + 1);
    bool all = true;
    for (const std::string& l : labels) all = all && label_text.find(l) != std::string::npos;
    if (all) return std::stod(line.substr(close + 2));
  }
  return -1;
}

TEST(CurveCliTest, KeygenRunAndPublishersWithKeys) {
  TempDir dir;
  const std::string log = dir.str() + "/commands.log";
  const std::string bin = testing::InferscopeBinary();
  for (const char* name : {"engine", "gateway", "stranger"}) {
    ASSERT_EQ(RunProcess({bin, "keygen", "--out", dir.str() + "/" + name}, log), 0)
        << ReadFile(log);
  }
  struct stat st {};
  ASSERT_EQ(::stat((dir.str() + "/engine.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // keygen does not overwrite a key pair by accident.
  EXPECT_EQ(RunProcess({bin, "keygen", "--out", dir.str() + "/engine"}, log), 1);

  // The gateway key may publish as gateway-*; the stranger key is not listed.
  std::string gateway_pub = ReadFile(dir.str() + "/gateway.pub");
  gateway_pub = gateway_pub.substr(gateway_pub.find('\n') + 1, 40);
  std::ofstream(dir.str() + "/publishers") << "# who may publish\n"
                                           << gateway_pub << " gateway-*\n";
  std::ofstream(dir.str() + "/subscribers") << gateway_pub << "\n";
  const std::string topology = dir.str() + "/topology.yaml";
  std::ofstream(topology) << kTopology;
  ASSERT_EQ(RunProcess({bin, "check-topology", topology}, log), 0) << ReadFile(log);

  EngineProcess engine(dir, {kTopology, "engine", {"--state-dir", dir.str() + "/state"}});
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();
  const json& info = engine.info();
  const std::string ingest = engine.Endpoint("ingest");
  httplib::Client& http = engine.http();

  // The warning names the source without keys, and only that one.
  const std::string started_log = engine.Log();
  EXPECT_NE(started_log.find("source plain: ingest on"), std::string::npos) << started_log;
  EXPECT_NE(started_log.find("is unauthenticated"), std::string::npos) << started_log;
  EXPECT_EQ(started_log.find("source ingest: ingest on"), std::string::npos) << started_log;

  auto metrics = [&] {
    auto res = http.Get("/metrics");
    return res ? res->body : std::string();
  };

  // A listed key publishes: the simulator and the Python client.
  const std::vector<std::string> simulate = {bin,
                                             "simulate",
                                             "-e",
                                             ingest,
                                             "--publisher-id",
                                             "gateway-sim",
                                             "--curve-key",
                                             dir.str() + "/gateway.key",
                                             "--curve-server-key",
                                             dir.str() + "/engine.pub",
                                             "--duration",
                                             "0.5",
                                             "--rate",
                                             "200",
                                             "--instances",
                                             "1",
                                             "--models",
                                             "1",
                                             "--batch-size",
                                             "10"};
  ASSERT_EQ(RunProcess(simulate, log), 0) << ReadFile(log);
  ASSERT_EQ(RunProcess(
                {testing::Python(), testing::SourceDir() + "/tests/integration/publish_curve.py",
                 ingest, "gateway-py", dir.str() + "/gateway.key", dir.str() + "/engine.pub", "20"},
                log),
            0)
      << ReadFile(log);
  ASSERT_TRUE(WaitFor([&] {
    const std::string m = metrics();
    return Metric(m, "inferscope_source_events_total", {"stage=\"ingest\""}) >= 20;
  })) << metrics();

  // Acknowledged mode with keys: the Python AckedPublisher gets every message acknowledged.
  ASSERT_EQ(
      RunProcess({testing::Python(), testing::SourceDir() + "/tests/integration/publish_curve.py",
                  info["endpoints"]["acked"].get<std::string>(), "gateway-acked",
                  dir.str() + "/gateway.key", dir.str() + "/engine.pub", "40", "acked"},
                 log),
      0)
      << ReadFile(log);
  EXPECT_EQ(Metric(metrics(), "inferscope_source_events_total", {"stage=\"acked\""}), 40);

  // A listed key under an id it may not use: every message rejected and counted.
  ASSERT_EQ(
      RunProcess({testing::Python(), testing::SourceDir() + "/tests/integration/publish_curve.py",
                  ingest, "billing", dir.str() + "/gateway.key", dir.str() + "/engine.pub", "32"},
                 log),
      0)
      << ReadFile(log);
  ASSERT_TRUE(WaitFor([&] {
    return Metric(metrics(), "inferscope_source_rejected_total",
                  {"stage=\"ingest\"", "reason=\"unauthorized_publisher\""}) == 2;
  })) << metrics();
  EXPECT_EQ(Metric(metrics(), "inferscope_source_unauthorized_total",
                   {"stage=\"ingest\"", "publisher=\"billing\""}),
            2);

  // An unlisted key: refused at the handshake, counted, nothing applied.
  const double events_before =
      Metric(metrics(), "inferscope_source_events_total", {"stage=\"ingest\""});
  ASSERT_EQ(
      RunProcess(
          {testing::Python(), testing::SourceDir() + "/tests/integration/publish_curve.py", ingest,
           "gateway-evil", dir.str() + "/stranger.key", dir.str() + "/engine.pub", "16"},
          log),
      0)
      << ReadFile(log);
  ASSERT_TRUE(WaitFor([&] {
    return Metric(metrics(), "inferscope_source_auth_failures_total", {"stage=\"ingest\""}) >= 1;
  })) << metrics();
  EXPECT_EQ(Metric(metrics(), "inferscope_source_events_total", {"stage=\"ingest\""}),
            events_before);
  EXPECT_NE(engine.Log().find("refused a CurveZMQ client"), std::string::npos);

  // `tail` presents its key: with an unlisted one the stream sink refuses (and counts) it.
  const std::string alerts = info["endpoints"]["alerts"];
  EXPECT_EQ(RunProcess({bin, "tail", "-e", alerts, "--curve-key", dir.str() + "/missing.key",
                        "--curve-server-key", dir.str() + "/engine.pub"},
                       log),
            2);
  Subprocess tail({bin, "tail", "-e", alerts, "--curve-key", dir.str() + "/stranger.key",
                   "--curve-server-key", dir.str() + "/engine.pub"},
                  log);
  ASSERT_TRUE(WaitFor([&] {
    return Metric(metrics(), "inferscope_sink_auth_failures_total", {"stage=\"alerts\""}) >= 1;
  })) << metrics();
  tail.Signal(SIGTERM);
  EXPECT_EQ(tail.Wait(), 0);

  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

}  // namespace
}  // namespace inferscope
