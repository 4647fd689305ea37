// The `inferscope` command line as a user meets it: the real binary run as a subprocess, its exit
// codes, help texts and error messages, `tail`'s start-up line and quiet warning, and the engine's
// status log (text and JSON).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <zmq.hpp>

#include "cli/recording.h"
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

struct CliRun {
  int code = -1;
  std::string output;  // stdout and stderr
};

// Runs `inferscope args...` to completion.
CliRun Inferscope(const TempDir& dir, const std::vector<std::string>& args) {
  static int n = 0;
  const std::string log = dir.str() + "/run" + std::to_string(++n) + ".log";
  std::vector<std::string> argv = {testing::InferscopeBinary()};
  argv.insert(argv.end(), args.begin(), args.end());
  Subprocess p(argv, log);
  CliRun r;
  r.code = p.Wait(std::chrono::seconds(30));
  r.output = ReadFile(log);
  return r;
}

// A TCP port on 127.0.0.1 that nothing listens on: bound by the kernel's choice, then closed.
int ClosedPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

std::string Topology() { return testing::SourceDir() + "/topologies/inference-fleet.yaml"; }

TEST(CliTest, VersionNamesBuildAndLibraries) {
  TempDir dir;
  CliRun r = Inferscope(dir, {"--version"});
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(r.output.rfind("inferscope ", 0), 0u) << r.output;
  for (const char* part : {"revision ", " build)", "libzmq 4.", "RocksDB ", "msgpack-c "}) {
    EXPECT_NE(r.output.find(part), std::string::npos) << part << " in " << r.output;
  }
  EXPECT_EQ(r.output.find("subcommand"), std::string::npos) << r.output;
}

TEST(CliTest, GlobalFlagsWorkBeforeAndAfterTheSubcommand) {
  TempDir dir;
  CliRun before = Inferscope(dir, {"--log-level", "debug", "check-topology", Topology()});
  EXPECT_EQ(before.code, 0) << before.output;
  CliRun after = Inferscope(
      dir, {"check-topology", Topology(), "--log-level", "warn", "--log-format", "json"});
  EXPECT_EQ(after.code, 0) << after.output;
  EXPECT_NE(after.output.find(": OK"), std::string::npos) << after.output;
}

TEST(CliTest, BadGlobalValuesAreRefusedWithTheAllowedList) {
  TempDir dir;
  CliRun level = Inferscope(dir, {"run", "--log-level", "verbose"});
  EXPECT_NE(level.code, 0);
  EXPECT_NE(level.output.find("--log-level: expected one of trace, debug, info, warn, error, "
                              "critical, off, got 'verbose'"),
            std::string::npos)
      << level.output;
  CliRun format = Inferscope(dir, {"--log-format", "xml", "check-topology", Topology()});
  EXPECT_NE(format.code, 0);
  EXPECT_NE(format.output.find("expected one of text, json, got 'xml'"), std::string::npos)
      << format.output;
}

TEST(CliTest, HelpTextsMentionGlobalFlagsAndDescribeWhatExists) {
  TempDir dir;
  CliRun run = Inferscope(dir, {"run", "--help"});
  EXPECT_EQ(run.code, 0) << run.output;
  for (const char* flag : {"--log-level", "--log-format", "--version", "--status-interval",
                           "before or after the subcommand"}) {
    EXPECT_NE(run.output.find(flag), std::string::npos) << flag << " in " << run.output;
  }
  CliRun top = Inferscope(dir, {"--help"});
  EXPECT_EQ(top.code, 0) << top.output;
  for (const char* sub : {"run", "query-node", "check-topology", "simulate", "query", "tail",
                          "keygen", "detect", "replay"}) {
    EXPECT_NE(top.output.find("  " + std::string(sub) + " "), std::string::npos)
        << sub << " in " << top.output;
  }
  CliRun detect = Inferscope(dir, {"detect", "--help"});
  EXPECT_NE(detect.output.find("1 when some lines were bad"), std::string::npos) << detect.output;
}

TEST(CliTest, SimulateRateNamesTheValidRange) {
  TempDir dir;
  CliRun r = Inferscope(dir, {"simulate", "--rate", "-5"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("--rate: must be a number > 0 (e.g. 30), got '-5'"), std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("1797693"), std::string::npos) << "no 300-digit bound: " << r.output;
  CliRun endpoint =
      Inferscope(dir, {"simulate", "--endpoint", "localhost:5555", "--duration", "1"});
  EXPECT_EQ(endpoint.code, 2);
  EXPECT_NE(endpoint.output.find("expected tcp://host:port"), std::string::npos) << endpoint.output;
}

TEST(CliTest, UnknownSubcommandNamesTheClosest) {
  TempDir dir;
  CliRun r = Inferscope(dir, {"query", "tabel"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.output.find("inferscope query: unknown subcommand 'tabel'; did you mean 'table'? "
                          "(subcommands: table)"),
            std::string::npos)
      << r.output;
  CliRun top = Inferscope(dir, {"simulte"});
  EXPECT_NE(top.output.find("did you mean 'simulate'?"), std::string::npos) << top.output;
  CliRun none = Inferscope(dir, {"query"});
  EXPECT_NE(none.output.find("inferscope query: a subcommand is required: table"),
            std::string::npos)
      << none.output;
}

TEST(CliTest, QueryTableSaysNothingListensAndWhatTheReadyFileSays) {
  TempDir dir;
  const std::string url = "http://127.0.0.1:" + std::to_string(ClosedPort());
  CliRun r = Inferscope(dir, {"query", "table", "--url", url});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("nothing listens at " + url + "; is the engine running?"),
            std::string::npos)
      << r.output;
  const std::string ready = dir.str() + "/ready.json";
  std::ofstream(ready) << json{{"http", url}, {"endpoints", json::object()}}.dump();
  CliRun from_file = Inferscope(dir, {"query", "table", "--ready-file", ready});
  EXPECT_EQ(from_file.code, 1);
  EXPECT_NE(from_file.output.find("its ready file " + ready + " says " + url), std::string::npos)
      << from_file.output;
  CliRun missing = Inferscope(dir, {"query", "table", "--ready-file", dir.str() + "/none.json"});
  EXPECT_EQ(missing.code, 2);
  EXPECT_NE(missing.output.find("cannot read it"), std::string::npos) << missing.output;
}

TEST(CliTest, TailRefusesAMalformedEndpointWithTheExpectedForm) {
  TempDir dir;
  CliRun r = Inferscope(dir, {"tail", "--endpoint", "foo"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.output.find("tail: --endpoint: 'foo' has no transport (expected tcp://host:port, "
                          "ipc://path or inproc://name)"),
            std::string::npos)
      << r.output;
  CliRun severity = Inferscope(dir, {"tail", "--severity", "loud"});
  EXPECT_EQ(severity.code, 2);
  EXPECT_NE(severity.output.find("unknown severity 'loud' (info, warning, critical, emergency)"),
            std::string::npos)
      << severity.output;
}

TEST(CliTest, TailSaysWhatItSubscribedToAndWarnsWhenNothingIsHeard) {
  TempDir dir;
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(ClosedPort());
  const std::string log = dir.str() + "/tail.log";
  Subprocess tail({testing::InferscopeBinary(), "tail", "--endpoint", endpoint, "--severity",
                   "critical", "--instance", "vllm-0", "--quiet-warning", "200ms"},
                  log);
  ASSERT_TRUE(WaitFor([&] {
    return ReadFile(log).find("tail: subscribed to 'alerts.critical.vllm-0.' on " + endpoint) !=
           std::string::npos;
  })) << ReadFile(log);
  ASSERT_TRUE(WaitFor([&] {
    return ReadFile(log).find("tail: nothing heard from " + endpoint) != std::string::npos;
  })) << ReadFile(log);
  tail.Signal(SIGINT);
  EXPECT_EQ(tail.Wait(std::chrono::seconds(10)), 0);
}

// Messages lost on the way (a subscriber past the engine's high-water mark) show as a jump of
// the topic's topic_seq, and tail says how many. The stream here is a PUB socket of the test's
// speaking the alert stream's JSON form.
TEST(CliTest, TailReportsAlertsLostOnTheWayFromTheTopicSeqGap) {
  TempDir dir;
  zmq::context_t ctx;
  zmq::socket_t pub(ctx, zmq::socket_type::pub);
  pub.bind("tcp://127.0.0.1:*");
  const std::string endpoint = pub.get(zmq::sockopt::last_endpoint);
  const std::string log = dir.str() + "/tail.log";
  Subprocess tail({testing::InferscopeBinary(), "tail", "--endpoint", endpoint, "--json"}, log);
  const std::string topic = "alerts.critical.vllm-0.llama.";
  auto send = [&](uint64_t seq) {
    const json alert = {
        {"v", 1},           {"state", "firing"}, {"severity", "critical"}, {"instance", "vllm-0"},
        {"model", "llama"}, {"message", "m"},    {"topic_seq", seq}};
    pub.send(zmq::buffer(topic), zmq::send_flags::sndmore);
    pub.send(zmq::buffer(alert.dump()), zmq::send_flags::none);
  };
  // Numbered on until tail prints one (ZeroMQ's slow joiner drops the first ones).
  uint64_t seq = 0;
  ASSERT_TRUE(WaitFor([&] {
    send(++seq);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return ReadFile(log).find("\"topic_seq\"") != std::string::npos;
  })) << ReadFile(log);
  EXPECT_EQ(ReadFile(log).find("lost"), std::string::npos) << ReadFile(log);
  send(seq + 4);  // three never sent: lost, as far as tail can tell
  ASSERT_TRUE(WaitFor([&] {
    return ReadFile(log).find("tail: 3 alert message(s) lost on topic " + topic) !=
           std::string::npos;
  })) << ReadFile(log);
  send(1);  // the engine restarted: numbers start again, nothing lost
  send(2);
  ASSERT_TRUE(WaitFor([&] {
    const std::string text = ReadFile(log);
    return text.find("\"topic_seq\":2") != std::string::npos &&
           text.rfind("\"topic_seq\":2") > text.find(" lost on topic ");
  })) << ReadFile(log);
  const std::string text = ReadFile(log);
  EXPECT_EQ(text.find(" lost on topic "), text.rfind(" lost on topic ")) << text;
  tail.Signal(SIGINT);
  EXPECT_EQ(tail.Wait(std::chrono::seconds(10)), 0);
}

constexpr char kTopologyTemplate[] = R"(name: status-log
state:
  path: STATE
query:
  listen: 127.0.0.1:0
sources:
  - name: ingest
    type: zmq
    options:
      endpoint: tcp://127.0.0.1:*
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options: {pane: 1s, out_of_orderness: 100ms}
sinks:
  - name: summaries
    type: zmq_pub
    inputs: [windows]
    options:
      endpoint: tcp://127.0.0.1:*
)";

std::string Topology(const TempDir& dir) {
  return testing::Substitute(kTopologyTemplate, {{"STATE", dir.str() + "/state"}});
}

// Publishes `n` request outcomes as `publisher` to `endpoint`.
void Publish(const std::string& endpoint, const std::string& publisher, int n) {
  client::PublisherOptions o;
  o.endpoint = endpoint;
  o.publisher_id = publisher;
  client::Publisher pub(o);
  std::string error;
  ASSERT_TRUE(pub.Connect(&error)) << error;
  for (int i = 0; i < n; ++i) {
    client::RequestOutcome r;
    r.instance = "vllm-0";
    r.model = "llama";
    r.time_ms = client::NowMs();
    r.e2e_ms = 100 + i;
    pub.Request(r);
  }
  pub.Close();
}

// The JSON objects of a JSON log, one per line (lines that are not objects fail the test).
std::vector<json> JsonLines(const std::string& text) {
  std::vector<json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, false);
    EXPECT_TRUE(j.is_object()) << "not a JSON object: " << line;
    if (j.is_object()) out.push_back(std::move(j));
  }
  return out;
}

TEST(CliTest, StatusLogInJsonCountsEventsAndLogsPublishers) {
  TempDir dir;
  EngineProcess engine(dir, EngineProcess::Options(Topology(dir), "engine",
                                                   {"--log-format", "json", "--status-interval",
                                                    "100ms", "--publisher-idle", "300ms"}));
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();
  Publish(engine.Endpoint("ingest"), "gateway-7", 50);
  // A status line that saw the 50 events, the publisher's appearance, then its idleness.
  json status;
  ASSERT_TRUE(WaitFor([&] {
    bool appeared = false, idle = false;
    double events = 0;
    for (const json& j : JsonLines(engine.Log())) {
      if (j.value("event", "") == "status") {
        events += j["events_in"].get<double>();
        status = j;
      }
      appeared = appeared || (j.value("event", "") == "publisher_appeared" &&
                              j.value("publisher", "") == "gateway-7");
      idle = idle ||
             (j.value("event", "") == "publisher_idle" && j.value("publisher", "") == "gateway-7");
    }
    return events == 50 && appeared && idle;
  })) << engine.Log();
  for (const char* key : {"time", "level", "msg", "events_in_per_s", "results_out_per_s",
                          "rejected", "watermark_lag_s", "queues", "checkpoint_age_s"}) {
    EXPECT_TRUE(status.contains(key)) << key << " in " << status.dump();
  }
  EXPECT_EQ(status["level"], "info");
  EXPECT_TRUE(status["queues"].contains("operators")) << status.dump();
  EXPECT_TRUE(status["queues"].contains("summaries")) << status.dump();
  EXPECT_EQ(status["msg"].get<std::string>().rfind("status: in ", 0), 0u) << status.dump();
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

TEST(CliTest, StatusLogInTextIsOneLinePerInterval) {
  TempDir dir;
  EngineProcess engine(
      dir, EngineProcess::Options(Topology(dir), "engine", {"--status-interval", "100ms"}));
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();
  Publish(engine.Endpoint("ingest"), "gateway-8", 20);
  ASSERT_TRUE(WaitFor([&] {
    const std::string log = engine.Log();
    return log.find("publisher 'gateway-8' appeared on ingest") != std::string::npos &&
           log.find("status: in ") != std::string::npos;
  })) << engine.Log();
  const std::string log = engine.Log();
  const size_t at = log.find("status: in ");
  const std::string line = log.substr(at, log.find('\n', at) - at);
  for (const char* part : {"events/s, out ", "results/s, ", " rejected, watermark lag ",
                           "queues [operators=", "summaries=", "last checkpoint ", "publishers"}) {
    EXPECT_NE(line.find(part), std::string::npos) << part << " in " << line;
  }
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

TEST(CliTest, HealthAndMetricsCarryTheBuild) {
  TempDir dir;
  EngineProcess engine(dir, Topology(dir));
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();
  auto res = engine.http().Get("/v1/health");
  ASSERT_TRUE(res);
  json build = json::parse(res->body)["build"];
  for (const char* key : {"version", "revision", "build_type", "libzmq", "rocksdb", "msgpack"}) {
    EXPECT_TRUE(build.contains(key) && build[key].is_string()) << key << " in " << res->body;
  }
  CliRun version = Inferscope(dir, {"--version"});
  EXPECT_NE(version.output.find("libzmq " + build["libzmq"].get<std::string>()), std::string::npos)
      << version.output;
  res = engine.http().Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_NE(
      res->body.find("inferscope_build_info{version=\"" + build["version"].get<std::string>() +
                     "\",revision=\"" + build["revision"].get<std::string>()),
      std::string::npos);
  EXPECT_NE(res->body.find("libzmq=\"" + build["libzmq"].get<std::string>() + "\""),
            std::string::npos);
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

TEST(CliTest, RecordNeedsExactlyOneSocketAndANewWritableFile) {
  TempDir dir;
  const std::string out = dir.str() + "/out.isrec";
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"record", "--output", out},
        std::vector<std::string>{"record", "--connect", "tcp://127.0.0.1:1", "--bind",
                                 "tcp://127.0.0.1:*", "--output", out}}) {
    CliRun r = Inferscope(dir, args);
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("record: give exactly one of --connect ENDPOINT"), std::string::npos)
        << r.output;
  }
  CliRun bad_endpoint = Inferscope(dir, {"record", "--bind", "foo", "--output", out});
  EXPECT_EQ(bad_endpoint.code, 2);
  EXPECT_NE(bad_endpoint.output.find("record: --bind: 'foo' has no transport"), std::string::npos)
      << bad_endpoint.output;
  CliRun topic_on_pull = Inferscope(
      dir, {"record", "--bind", "tcp://127.0.0.1:*", "--topic", "metrics", "--output", out});
  EXPECT_EQ(topic_on_pull.code, 2);
  EXPECT_NE(topic_on_pull.output.find("--topic filters a sub socket"), std::string::npos)
      << topic_on_pull.output;
  CliRun no_dir = Inferscope(
      dir, {"record", "--bind", "tcp://127.0.0.1:*", "--output", dir.str() + "/no/such/x"});
  EXPECT_EQ(no_dir.code, 2);
  EXPECT_NE(no_dir.output.find("record: --output: " + dir.str() + "/no/such/x: cannot create"),
            std::string::npos)
      << no_dir.output;
  std::ofstream(out) << "precious";
  CliRun exists = Inferscope(dir, {"record", "--bind", "tcp://127.0.0.1:*", "--output", out});
  EXPECT_EQ(exists.code, 2);
  EXPECT_NE(exists.output.find(out + ": the file exists (use --force to overwrite it)"),
            std::string::npos)
      << exists.output;
  EXPECT_EQ(ReadFile(out), "precious");
  CliRun not_recording = Inferscope(
      dir, {"replay", "--input", out, "--format", "recording", "--endpoint", "tcp://127.0.0.1:1"});
  EXPECT_EQ(not_recording.code, 2);
  EXPECT_NE(not_recording.output.find(out + ": offset 0: not a recording"), std::string::npos)
      << not_recording.output;
}

// `record --bind` in the engine's place: PUSH publishers' messages land in the file as sent.
TEST(CliTest, RecordBindTakesPushPublishers) {
  TempDir dir;
  const std::string out = dir.str() + "/pushed.isrec";
  const std::string ready = dir.str() + "/record.ready.json";
  const std::string log = dir.str() + "/record.log";
  Subprocess record({testing::InferscopeBinary(), "record", "--bind", "tcp://127.0.0.1:*",
                     "--output", out, "--ready-file", ready},
                    log);
  json info;
  ASSERT_TRUE(WaitFor([&] {
    info = json::parse(ReadFile(ready), nullptr, false);
    return info.is_object() && info.contains("endpoint");
  })) << ReadFile(log);
  const std::string endpoint = info["endpoint"].get<std::string>();
  EXPECT_EQ(endpoint.rfind("tcp://127.0.0.1:", 0), 0u) << endpoint;
  EXPECT_EQ(endpoint.find('*'), std::string::npos) << endpoint;
  client::PublisherOptions o;
  o.endpoint = endpoint;
  o.publisher_id = "pusher";
  o.topic = "metrics.vllm-0";
  o.batch_size = 10;
  client::Publisher pub(o);
  std::string error;
  ASSERT_TRUE(pub.Connect(&error)) << error;
  for (int i = 0; i < 30; ++i) {
    client::RequestOutcome r;
    r.instance = "vllm-0";
    r.model = "llama";
    r.e2e_ms = 100 + i;
    ASSERT_TRUE(pub.Request(r)) << pub.last_error();
  }
  int records = 0;
  ASSERT_TRUE(WaitFor([&] {
    auto reader = RecordingReader::Open(out);
    if (!reader.ok()) return false;
    RecordedMessage m;
    records = 0;
    while ((*reader)->Next(&m)) {
      EXPECT_EQ(m.topic, "metrics.vllm-0");
      ++records;
    }
    return records == 3;
  })) << records
      << "\n"
      << ReadFile(log);
  pub.Close();
  record.Signal(SIGINT);
  EXPECT_EQ(record.Wait(), 0) << ReadFile(log);
  EXPECT_NE(ReadFile(log).find("record: 3 messages"), std::string::npos) << ReadFile(log);
}

// A recording of three messages whose second is corrupt (or torn): the replay sends the first,
// names the bad record's offset and sends nothing after it.
// With no engine listening, replay said "N requests queued" with exit 0: ZeroMQ queued the
// messages on a connection that never came up and discarded them at close. Both paths (CSV through
// the C++ publisher, a recording through its own PUSH socket) now send on completed connections
// only, so the send times out and says so.
TEST(CliTest, ReplayToAnEndpointNobodyListensOnFailsSayingSo) {
  TempDir dir;
  std::string endpoint;
  {
    zmq::context_t ctx(1);
    zmq::socket_t pull(ctx, zmq::socket_type::pull);
    pull.set(zmq::sockopt::linger, 0);
    pull.bind("tcp://127.0.0.1:*");
    endpoint = pull.get(zmq::sockopt::last_endpoint);
  }  // closed: nothing listens on the port now
  const std::string csv = dir.str() + "/r.csv";
  std::ofstream(csv) << "time,instance,model,e2e_ms\n1700000000,a,m,5\n1700000001,a,m,6\n";
  CliRun rows = Inferscope(dir, {"replay", "-i", csv, "-e", endpoint, "--speed", "0"});
  EXPECT_EQ(rows.code, 1) << rows.output;
  EXPECT_NE(rows.output.find("replay: 2 events dropped (endpoint " + endpoint + " not accepting)"),
            std::string::npos)
      << rows.output;

  const std::string recording = dir.str() + "/one.isrec";
  {
    auto w = RecordingWriter::Create(recording, false);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    ASSERT_TRUE((*w)->Append(1'000'000'000, "metrics", "first").ok());
    ASSERT_TRUE((*w)->Close().ok());
  }
  CliRun records = Inferscope(dir, {"replay", "-i", recording, "-e", endpoint, "--speed", "0"});
  EXPECT_NE(records.code, 0) << records.output;
  EXPECT_NE(records.output.find("replay: send timed out after"), std::string::npos)
      << records.output;
  EXPECT_NE(records.output.find("0 of the recording's messages were sent"), std::string::npos)
      << records.output;
}

TEST(CliTest, ReplayStopsAtABadRecordNamingItsOffset) {
  TempDir dir;
  zmq::context_t ctx(1);
  zmq::socket_t pull(ctx, zmq::socket_type::pull);
  pull.set(zmq::sockopt::linger, 0);
  pull.bind("tcp://127.0.0.1:*");
  const std::string endpoint = pull.get(zmq::sockopt::last_endpoint);
  const std::string path = dir.str() + "/three.isrec";
  {
    auto w = RecordingWriter::Create(path, false);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    ASSERT_TRUE((*w)->Append(1'000'000'000, "metrics", "first").ok());
    ASSERT_TRUE((*w)->Append(1'001'000'000, "metrics", "second").ok());
    ASSERT_TRUE((*w)->Append(1'002'000'000, "metrics", "third").ok());
    ASSERT_TRUE((*w)->Close().ok());
  }
  const std::string bytes = ReadFile(path);
  const size_t second = kRecordingHeaderBytes + kRecordHeaderBytes + 7 + 5 + kRecordTrailerBytes;
  // Messages received, each "topic|payload", until none comes for a while after `want`.
  auto receive = [&](size_t want) {
    std::vector<std::string> got;
    EXPECT_TRUE(WaitFor([&] {
      zmq::message_t topic, payload;
      while (pull.recv(topic, zmq::recv_flags::dontwait)) {
        (void)pull.recv(payload);
        got.push_back(topic.to_string() + "|" + payload.to_string());
      }
      return got.size() >= want;
    }));
    zmq::pollitem_t item = {pull.handle(), 0, ZMQ_POLLIN, 0};
    while (zmq::poll(&item, 1, std::chrono::milliseconds(300)) > 0) {
      zmq::message_t topic, payload;
      (void)pull.recv(topic);
      (void)pull.recv(payload);
      got.push_back(topic.to_string() + "|" + payload.to_string());
    }
    return got;
  };

  std::string corrupt = bytes;
  corrupt[second + kRecordHeaderBytes + 7 + 2] ^= 0x01;  // a payload byte of the second record
  std::ofstream(path, std::ios::binary | std::ios::trunc) << corrupt;
  CliRun r = Inferscope(dir, {"replay", "--input", path, "--endpoint", endpoint, "--speed", "0"});
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find(path + ": offset " + std::to_string(second) +
                          ": corrupt record (checksum mismatch); 1 messages before it were "
                          "sent, nothing after it"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(receive(1), std::vector<std::string>{"metrics|first"});

  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes.substr(0, second + 20);
  CliRun torn =
      Inferscope(dir, {"replay", "--input", path, "--endpoint", endpoint, "--speed", "0"});
  EXPECT_EQ(torn.code, 2) << torn.output;
  EXPECT_NE(torn.output.find(path + ": offset " + std::to_string(second) +
                             ": truncated record (20 of 37 bytes)"),
            std::string::npos)
      << torn.output;
  EXPECT_EQ(receive(1), std::vector<std::string>{"metrics|first"});

  // The whole file, at its recorded pace: all three in order.
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  CliRun whole = Inferscope(dir, {"replay", "--input", path, "--endpoint", endpoint});
  EXPECT_EQ(whole.code, 0) << whole.output;
  EXPECT_NE(whole.output.find("replay: 3 messages"), std::string::npos) << whole.output;
  EXPECT_EQ(receive(3),
            (std::vector<std::string>{"metrics|first", "metrics|second", "metrics|third"}));
}

// `detect -o` naming its own input (directly or through a symlink) would truncate the input before
// reading it: refused, the input left intact.
TEST(CliTest, DetectRefusesAnOutputThatIsItsInput) {
  TempDir dir;
  const std::string input = dir.str() + "/series.csv";
  std::string content = "timestamp,value\n";
  for (int i = 0; i < 50; ++i) content += std::to_string(1700000000 + i * 60) + ",100\n";
  std::ofstream(input) << content;
  const std::string link = dir.str() + "/link.csv";
  ASSERT_EQ(symlink(input.c_str(), link.c_str()), 0);
  for (const std::string& output : {input, link}) {
    CliRun r = Inferscope(dir, {"detect", "-i", input, "-o", output});
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("detect: the output " + output + " is the input file " + input),
              std::string::npos)
        << r.output;
    EXPECT_EQ(ReadFile(input), content);
  }
  // Another file is fine.
  CliRun other = Inferscope(dir, {"detect", "-i", input, "-o", dir.str() + "/out.csv"});
  EXPECT_EQ(other.code, 0) << other.output;
  EXPECT_EQ(ReadFile(input), content);
}

// A line longer than the 1 MiB limit (here 2 MiB) between good rows is reported with its line
// number and skipped like any bad line (exit 1); the rows after it are still read.
TEST(CliTest, DetectSkipsALineLongerThanTheLimitAndReadsOn) {
  TempDir dir;
  const std::string input = dir.str() + "/series.csv";
  {
    std::ofstream f(input);
    f << "timestamp,value\n";
    for (int i = 0; i < 40; ++i) f << 1700000000 + i * 60 << ",100\n";
    f << std::string(2 << 20, '1') << "\n";  // line 42
    for (int i = 40; i < 80; ++i) f << 1700000000 + i * 60 << ",100\n";
  }
  const std::string output = dir.str() + "/out.csv";
  CliRun r = Inferscope(dir, {"detect", "-i", input, "-o", output});
  EXPECT_EQ(r.code, 1) << r.output.substr(0, 2000);
  EXPECT_NE(r.output.find("line 42: longer than 1048576 bytes; skipped"), std::string::npos)
      << r.output.substr(0, 2000);
  EXPECT_NE(r.output.find("detect: 80 points, 0 at warning or above, 0 ignored, 1 bad lines"),
            std::string::npos)
      << r.output.substr(0, 2000);
  const std::string out = ReadFile(output);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 81);
  EXPECT_NE(out.find("\n" + std::to_string(1700000000 + 79 * 60) + ",100,"), std::string::npos);
}

// Only the first line may be a header: a later unparsable line before the first point is reported.
// A point older than the previous one is written as `ignored` and counted apart.
TEST(CliTest, DetectReportsALateHeaderLikeLineAndMarksIgnoredPoints) {
  TempDir dir;
  const std::string input = dir.str() + "/series.csv";
  {
    std::ofstream f(input);
    f << "# a comment\ntimestamp,value\ntimestamp,value,extra\n";  // line 3: not a header
    for (int i = 0; i < 40; ++i) f << 1700000000 + i * 60 << ",100\n";
    f << "1600000000,100\n";  // line 44: older than the previous point
  }
  const std::string output = dir.str() + "/out.csv";
  CliRun r = Inferscope(dir, {"detect", "-i", input, "-o", output});
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("line 3: bad timestamp 'timestamp'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("line 44: timestamp earlier than the previous point; ignored"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("detect: 40 points, 0 at warning or above, 1 ignored, 1 bad lines"),
            std::string::npos)
      << r.output;
  EXPECT_NE(ReadFile(output).find("\n1600000000,100,0.0000,ignored,none\n"), std::string::npos)
      << ReadFile(output);
}

// A file of many bad or out-of-order lines printed a report per line (4 M lines for one input):
// at most kDetectMaxLineReports are printed, then one line says the rest are counted only.
TEST(CliTest, DetectCapsItsLineReportsAndStillCountsEveryLine) {
  TempDir dir;
  const std::string input = dir.str() + "/late.csv";
  {
    std::ofstream f(input);
    f << "1800000000,1\n";
    for (int i = 0; i < 250; ++i) f << 1700000000 + i << ",1\n";  // all older than the first
    for (int i = 0; i < 50; ++i) f << "x\n";
  }
  CliRun r = Inferscope(dir, {"detect", "-i", input, "-o", dir.str() + "/out.csv"});
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("line 101: timestamp earlier than the previous point; ignored"),
            std::string::npos);
  EXPECT_EQ(r.output.find("line 102:"), std::string::npos) << "more than 100 line reports";
  EXPECT_NE(r.output.find("... further line reports not shown (the totals below count them)\n"),
            std::string::npos);
  EXPECT_NE(r.output.find("detect: 1 points, 0 at warning or above, 250 ignored, 50 bad lines"),
            std::string::npos)
      << r.output.substr(r.output.size() > 2000 ? r.output.size() - 2000 : 0);
}

// A header "value,timestamp" made every row score its value as the time (exit 0): refused.
TEST(CliTest, DetectRefusesAHeaderWithTheColumnsSwapped) {
  TempDir dir;
  const std::string input = dir.str() + "/swapped.csv";
  std::ofstream(input) << "Value, Timestamp\n5,1700000000\n6,1700000060\n";
  CliRun r = Inferscope(dir, {"detect", "-i", input, "-o", dir.str() + "/out.csv"});
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("line 1: the header puts the time second ('Value, Timestamp'); detect "
                          "reads timestamp,value: swap the columns"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("detect: 0 points"), std::string::npos) << r.output;
  // A header that names its columns otherwise is still skipped.
  std::ofstream(input, std::ios::trunc) << "when,latency\n1700000000,5\n";
  EXPECT_EQ(Inferscope(dir, {"detect", "-i", input, "-o", dir.str() + "/out.csv"}).code, 0);
}

// Directories and missing files as inputs: "is a directory" (no crash, no "0 points"), and the
// reason a file cannot be opened.
TEST(CliTest, DirectoryAndMissingInputsSayWhatIsWrong) {
  TempDir dir;
  const std::string input = dir.str() + "/series.csv";
  std::ofstream(input) << "timestamp,value\n1700000000,1\n";
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(ClosedPort());
  CliRun config = Inferscope(dir, {"detect", "-i", input, "--config", dir.str()});
  EXPECT_EQ(config.code, 2) << config.output;
  EXPECT_NE(config.output.find("--config " + dir.str() + ": is a directory"), std::string::npos)
      << config.output;
  CliRun detect = Inferscope(dir, {"detect", "-i", dir.str()});
  EXPECT_EQ(detect.code, 2) << detect.output;
  EXPECT_NE(detect.output.find("detect: " + dir.str() + ": is a directory"), std::string::npos)
      << detect.output;
  CliRun replay = Inferscope(dir, {"replay", "-i", dir.str(), "-e", endpoint});
  EXPECT_EQ(replay.code, 2) << replay.output;
  EXPECT_NE(replay.output.find("replay: " + dir.str() + ": is a directory"), std::string::npos)
      << replay.output;
  const std::string missing = dir.str() + "/none.csv";
  CliRun detect_missing = Inferscope(dir, {"detect", "-i", missing});
  EXPECT_EQ(detect_missing.code, 2);
  EXPECT_NE(detect_missing.output.find("cannot open " + missing + ": No such file or directory"),
            std::string::npos)
      << detect_missing.output;
  CliRun replay_missing = Inferscope(dir, {"replay", "-i", missing, "-e", endpoint});
  EXPECT_EQ(replay_missing.code, 2);
  EXPECT_NE(replay_missing.output.find("cannot read " + missing + ": No such file or directory"),
            std::string::npos)
      << replay_missing.output;
}

// The sum of a metric's samples in a Prometheus text exposition (all label sets).
double MetricSum(const std::string& text, const std::string& name) {
  double sum = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name, 0) != 0 || (line[name.size()] != '{' && line[name.size()] != ' ')) {
      continue;
    }
    sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

// Rows the engine would reject (non-finite numbers, invalid UTF-8, event times <= 0, a shifted
// time before 1970, a 2 MiB line) are reported with their line numbers and skipped; everything
// replay queues, a real engine accepts, with no rejection.
TEST(CliTest, ReplaySkipsRowsTheEngineWouldRejectAndTheEngineAcceptsTheRest) {
  TempDir dir;
  EngineProcess engine(dir, Topology(dir));
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();
  const int64_t now_s = client::NowMs() / 1000;
  const std::string now = std::to_string(now_s);
  const std::string csv = dir.str() + "/rows.csv";
  {
    std::ofstream f(csv);
    f << "time,instance,model,e2e_ms,error\n";
    f << now << ",a,m,10,\n";    // 2: good
    f << now << ",a,m,inf,\n";   // 3
    f << now << ",a,m,-inf,\n";  // 4
    f << now << ",a,m,nan,\n";   // 5
    f << now
      << ",i\xff"
         "0,m,10,\n";                                          // 6
    f << now << ",a,m,10,\xfe\n";                              // 7
    f << now << ",a,m," << std::string(2 << 20, '1') << "\n";  // 8
    f << now << ",a,m,12,timeout\n";                           // 9: good
  }
  const std::string endpoint = engine.Endpoint("ingest");
  CliRun r = Inferscope(
      dir, {"replay", "-i", csv, "-e", endpoint, "--speed", "0", "--publisher-id", "r1"});
  EXPECT_EQ(r.code, 0) << r.output.substr(0, 3000);
  for (const std::string& want : std::vector<std::string>{
           ":3: e2e_ms: expected a finite number >= 0 (skipped)",
           ":4: e2e_ms: expected a finite number >= 0 (skipped)",
           ":5: e2e_ms: expected a finite number >= 0 (skipped)",
           ":6: instance: not valid UTF-8 (skipped)", ":7: error: not valid UTF-8 (skipped)",
           ":8: longer than 1048576 bytes (skipped)",
           "replay: 2 requests queued for " + endpoint + " from " + csv + " (6 rows skipped)"}) {
    EXPECT_NE(r.output.find(want), std::string::npos) << want << " in " << r.output.substr(0, 3000);
  }

  // --keep-times: times at or before 1970 are skipped, 0 is not sent as "now".
  const std::string keep = dir.str() + "/keep.csv";
  std::ofstream(keep) << "time,instance,model,e2e_ms\n"
                      << "0,b,m,1\n-1,b,m,1\n1969-12-31T23:59:59Z,b,m,1\n"
                      << "1970-01-01T00:00:00.0001Z,b,m,1\n"
                      << now << ",b,m,1\n";
  CliRun k = Inferscope(dir, {"replay", "-i", keep, "-e", endpoint, "--speed", "0", "--keep-times",
                              "--publisher-id", "r2"});
  EXPECT_EQ(k.code, 0) << k.output;
  for (int line = 2; line <= 5; ++line) {
    EXPECT_NE(k.output.find(":" + std::to_string(line) +
                            ": time: at or before 1970-01-01T00:00:00Z (event times must be > 0)"),
              std::string::npos)
        << line << " in " << k.output;
  }
  EXPECT_NE(k.output.find("replay: 1 requests queued"), std::string::npos) << k.output;

  // Without --keep-times, an outlier first row (year 9999) would shift the others before 1970.
  const std::string far = dir.str() + "/far.csv";
  std::ofstream(far) << "time,instance,model,e2e_ms\n9999-12-31T00:00:00Z,c,m,1\n"
                     << "1700000000,c,m,1\n1700000001,c,m,1\n";
  CliRun fr = Inferscope(
      dir, {"replay", "-i", far, "-e", endpoint, "--speed", "0", "--publisher-id", "r3"});
  EXPECT_EQ(fr.code, 0) << fr.output;
  EXPECT_NE(fr.output.find(":3: time: "), std::string::npos) << fr.output;
  EXPECT_NE(fr.output.find(":4: time: "), std::string::npos) << fr.output;
  EXPECT_NE(fr.output.find("shifted time would be before 1970"), std::string::npos) << fr.output;
  EXPECT_NE(fr.output.find("replay: 1 requests queued"), std::string::npos) << fr.output;

  // The engine accepted all 4 queued events (each run is its own publisher: a sequence starting at
  // 0 again would be taken for duplicates) and rejected none.
  std::string metrics;
  EXPECT_TRUE(WaitFor([&] {
    auto res = engine.http().Get("/metrics");
    metrics = res ? res->body : "";
    return MetricSum(metrics, "inferscope_source_events_total") == 4;
  })) << metrics;
  EXPECT_EQ(MetricSum(metrics, "inferscope_source_rejected_total"), 0) << metrics;
  EXPECT_EQ(engine.Stop(), 0) << engine.Log();
}

// window_aggregate's lag bound sums three durations: two of 60000000000d each overflowed int64
// (undefined behaviour) and the topology passed. Now the sum saturates and is refused.
TEST(CliTest, CheckTopologyRefusesALagSumThatOverflows) {
  TempDir dir;
  std::string text = ReadFile(Topology());
  for (const std::string field : {"out_of_orderness: 2s", "allowed_lateness: 30s"}) {
    const size_t at = text.find(field);
    ASSERT_NE(at, std::string::npos) << field;
    text.replace(at, field.size(), field.substr(0, field.find(':')) + ": 60000000000d");
  }
  const std::string path = dir.str() + "/overflow.yaml";
  std::ofstream(path) << text;
  CliRun r = Inferscope(dir, {"check-topology", path});
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("out_of_orderness + allowed_lateness + max_publisher_lag must be at "
                          "most 510 panes, got a sum beyond 2^63 ms"),
            std::string::npos)
      << r.output;
}

// Values that were accepted and then ignored or misused: a negative --season or --warmup (silently
// the default), --speed nan (no pacing at all) or 1e-12 (a wait of 30,000 years); and a tab in a
// topology's indentation, which yaml-cpp reports as whatever the tab broke.
TEST(CliTest, NegativeCountsUnusableSpeedsAndTabIndentsAreRefusedSayingWhy) {
  TempDir dir;
  const std::string csv = dir.str() + "/s.csv";
  std::ofstream(csv) << "timestamp,value\n1700000000,5\n";
  for (const std::string option : {"--season", "--warmup"}) {
    CliRun r = Inferscope(dir, {"detect", "-i", csv, option, "-1"});
    EXPECT_NE(r.code, 0) << option << r.output;
    EXPECT_NE(r.output.find(option + ": must be a whole number >= 0, got '-1'"), std::string::npos)
        << r.output;
  }
  for (const std::string speed : {"nan", "1e-12", "-1", "inf"}) {
    CliRun r = Inferscope(dir, {"replay", "-i", csv, "--speed", speed});
    EXPECT_NE(r.code, 0) << speed << r.output;
    EXPECT_NE(
        r.output.find("--speed: must be 0 (no pacing) or a number >= 0.001, got '" + speed + "'"),
        std::string::npos)
        << r.output;
  }
  const std::string tab = dir.str() + "/tab.yaml";
  std::ofstream(tab) << "name: t\nsources:\n\t- name: x\n";
  CliRun r = Inferscope(dir, {"check-topology", tab});
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_NE(r.output.find(tab + ":3:2: YAML syntax error: illegal block entry (line 3 is indented "
                                "with a tab; YAML indents with spaces only)"),
            std::string::npos)
      << r.output;
}

// keygen checks both NAME.key and NAME.pub before writing either (a NAME.pub alone made it write a
// new NAME.key, then fail); with --force a symlink at NAME.key is replaced, its target untouched.
TEST(CliTest, KeygenChecksBothFilesFirstAndForceReplacesASymlink) {
  TempDir dir;
  const std::string base = dir.str() + "/k";
  std::ofstream(base + ".pub") << "old public\n";
  CliRun r = Inferscope(dir, {"keygen", "-o", base});
  if (r.output.find("without CURVE") != std::string::npos) GTEST_SKIP() << r.output;
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find(base + ".pub: exists (use --force to overwrite)"), std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(base + ".key")) << "a secret key was written";
  EXPECT_EQ(ReadFile(base + ".pub"), "old public\n");

  const std::string target = dir.str() + "/target.txt";
  std::ofstream(target) << "not a key\n";
  ASSERT_EQ(::chmod(target.c_str(), 0644), 0);
  ASSERT_EQ(symlink(target.c_str(), (base + ".key").c_str()), 0);
  CliRun forced = Inferscope(dir, {"keygen", "-o", base, "--force"});
  EXPECT_EQ(forced.code, 0) << forced.output;
  EXPECT_EQ(ReadFile(target), "not a key\n");
  struct stat st {};
  ASSERT_EQ(::stat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  ASSERT_EQ(::lstat((base + ".key").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode)) << "the link was not replaced";
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_NE(ReadFile(base + ".key").find("CurveZMQ secret key"), std::string::npos);
  EXPECT_NE(ReadFile(base + ".pub"), "old public\n");
  // No temporary files are left beside them.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    files += e.path().filename().string().rfind("k.", 0) == 0;
  }
  EXPECT_EQ(files, 2);

  // A directory as NAME wrote the hidden files sub/.key and sub/.pub.
  std::filesystem::create_directory(dir.str() + "/sub");
  CliRun sub = Inferscope(dir, {"keygen", "-o", dir.str() + "/sub/"});
  EXPECT_EQ(sub.code, 2) << sub.output;
  EXPECT_NE(sub.output.find("NAME is a file name without extension"), std::string::npos)
      << sub.output;
  EXPECT_TRUE(std::filesystem::is_empty(dir.str() + "/sub"));
}

}  // namespace
}  // namespace inferscope
