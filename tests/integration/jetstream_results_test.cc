// One query view over several engine nodes (issue 17, item 4): a real nats-server, a seeded input
// stream of 4 partitions, two engine nodes (`inferscope run` subprocesses) owning partitions
// [0, 1] and [2, 3], each publishing its results with the `jetstream_results` sink, and a query
// node (`inferscope query-node --results`) materialising the results stream. Its answers must
// equal those of one engine that consumed every partition (read through an ordinary query node on
// that engine's directory): the instances, per-series summaries, /v1/series, the fleet performance
// endpoint (the fleet rollup merged across nodes) and the alerts. Then the same with one node
// SIGKILLed mid-stream and restarted: its replayed results are duplicates (dropped by Msg-Id or
// applied idempotently), and no alert appears twice.

#include <gtest/gtest.h>
#include <nats/nats.h>
#include <signal.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "clients/cpp/jetstream_publisher.h"
#include "tests/integration/engine_fixture.h"
#include "tests/integration/jetstream_seeded.h"
#include "tests/nats_server.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;
using testing::EngineProcess;
using testing::NatsServer;
using testing::ReadFile;
using testing::Subprocess;
using testing::Substitute;
using testing::TempDir;
using testing::WaitFor;
using namespace jetstream_test;  // NOLINT(google-build-using-namespace)

constexpr int kMessages = 600;  // 30,000 events over ~3.5 minutes of event time

// jetstream_seeded.h's engine (1 s panes, only data moves watermarks) plus a threshold rule that
// fires and resolves on the seeded latencies (e2e p95 of a 1 s pane above 3.9 s), and, on the
// nodes, the results sink.
constexpr char kTopology[] = R"(name: NAME
state:
  path: STATE
  tiers:
    - {resolution: 1s, retention: forever}
engine:
  checkpoint_interval: 100ms
sources:
  - name: ingest
    type: jetstream
    options:
      url: URL
      stream: IN
      subject_prefix: inferscope.in
      partitions: PARTS
      durable: DURABLE
      fetch_batch: 2
      fetch_wait: 20ms
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options:
      pane: 1s
      out_of_orderness: 5s
      idle_timeout: 0
      max_publisher_lag: 5m
  - name: rules
    type: threshold_rules
    inputs: [windows]
    options:
      rules:
        - name: slow_e2e
          metric: e2e_ms
          stat: p95
          op: ">"
          levels: {warning: 3900}
          keep_firing_for: 2s
          min_count: 5
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
  - name: alert_store
    type: rocksdb_alerts
    inputs: [rules]
RESULTS)";

constexpr char kResultsSink[] = R"(  - name: results
    type: jetstream_results
    inputs: [windows, rules]
    options:
      url: URL
      stream: RES
      subject_prefix: res
      node: DURABLE
)";

std::string Topology(const std::string& name, const std::string& state, const std::string& url,
                     const std::string& parts, const std::string& durable, bool results) {
  const std::string sink =
      results ? Substitute(kResultsSink, {{"URL", url}, {"DURABLE", durable}}) : "";
  return Substitute(kTopology, {{"NAME", name},
                                {"STATE", state},
                                {"URL", url},
                                {"PARTS", parts},
                                {"RESULTS", sink},
                                {"DURABLE", durable}});
}

std::unique_ptr<EngineProcess> StartNode(const TempDir& dir, const std::string& url,
                                         const std::string& name, const std::string& parts,
                                         const std::string& durable, bool results) {
  return std::make_unique<EngineProcess>(
      dir, EngineProcess::Options{
               Topology(name, dir.str() + "/" + durable + "-state", url, parts, durable, results),
               name});
}

// `inferscope query-node` as a subprocess: on an engine's directory (`args` empty) or in the
// results mode (`args` has --results ...).
class QueryNodeProcess {
 public:
  QueryNodeProcess(const TempDir& dir, const std::string& name, std::vector<std::string> args) {
    ready_ = dir.str() + "/" + name + ".ready.json";
    log_ = dir.str() + "/" + name + ".log";
    std::vector<std::string> argv = {testing::InferscopeBinary(),
                                     "query-node",
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--ready-file",
                                     ready_};
    argv.insert(argv.end(), args.begin(), args.end());
    process_ = std::make_unique<Subprocess>(argv, log_);
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

// Drops what differs between two stores of the same results by construction: the time of the
// answer and of its data (`as_of`, watermarks), and the wall-clock detection times of alerts.
void Scrub(json& j) {
  if (j.is_object()) {
    for (const char* key : {"timestamp", "as_of", "as_of_ms", "watermark_ms", "detected_at",
                            "detected_at_ms", "updated_at", "freshness"}) {
      j.erase(key);
    }
    for (auto& [key, value] : j.items()) Scrub(value);
  } else if (j.is_array()) {
    for (json& v : j) Scrub(v);
  }
}

json Get(httplib::Client& http, const std::string& path, int* status) {
  auto res = http.Get(path);
  if (!res) return json("no answer");
  *status = res->status;
  json body = json::parse(res->body, nullptr, false);
  Scrub(body);
  // Alerts are listed by detection (wall-clock) time, which differs between the runs.
  if (body.is_object() && body.contains("alerts") && body["alerts"].is_array()) {
    std::sort(body["alerts"].begin(), body["alerts"].end(), [](const json& a, const json& b) {
      return a.value("fingerprint", "") < b.value("fingerprint", "");
    });
  }
  return body;
}

// The compared reads, over a fixed range of the stream's event time.
std::vector<std::string> ComparedPaths(int64_t t0, const std::vector<std::string>& instances) {
  const int64_t from = t0 / 60'000 * 60'000;
  const std::string range =
      "&from=" + std::to_string(from) + "&to=" + std::to_string(from + 300'000);
  return {"/v1/instances?limit=1000",
          "/v1/instances/" + instances[0] + "/summary?metric=e2e_ms&window=1m" + range,
          "/v1/instances/" + instances[3] + "/summary?metric=ttft_ms&window=10s" + range,
          "/v1/instances/" + instances[6] + "/summary?metric=kv_cache_usage&window=1m" + range,
          "/v1/series?instance=" + instances[5] + "&metric=e2e_ms&step=1s" + range,
          "/v1/series?instance=" + instances[2] + "&model=llama&metric=ttft_ms&step=10s" + range,
          "/v1/performance/metrics?" + range.substr(1),
          "/v1/alerts?limit=1000"};
}

// Equal JSON, floating-point numbers within a relative 1e-12: a mean merged from the same panes
// in another order (the fleet rollup adds each node's panes as they arrive) may differ in its last
// digits.
bool Alike(const json& a, const json& b) {
  if (a.is_number_float() || b.is_number_float()) {
    if (!a.is_number() || !b.is_number()) return false;
    const double x = a.get<double>(), y = b.get<double>();
    return x == y || std::abs(x - y) <= 1e-12 * std::max(std::abs(x), std::abs(y));
  }
  if (a.type() != b.type() || a.size() != b.size()) return false;
  if (a.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it) {
      if (!b.contains(it.key()) || !Alike(it.value(), b[it.key()])) return false;
    }
    return true;
  }
  if (a.is_array()) {
    for (size_t i = 0; i < a.size(); ++i) {
      if (!Alike(a[i], b[i])) return false;
    }
    return true;
  }
  return a == b;
}

// Waits until every compared path answers alike; the last difference in `*why`.
bool SameAnswers(httplib::Client& want, httplib::Client& got, const std::vector<std::string>& paths,
                 std::string* why) {
  return WaitFor(
      [&] {
        for (const std::string& path : paths) {
          int want_status = 0, got_status = 0;
          json a = Get(want, path, &want_status);
          json b = Get(got, path, &got_status);
          if (want_status != 200 || got_status != 200 || !Alike(a, b)) {
            *why = path + ":\nwant " + std::to_string(want_status) + " " + a.dump() + "\ngot  " +
                   std::to_string(got_status) + " " + b.dump();
            return false;
          }
        }
        return true;
      },
      std::chrono::seconds(60));
}

// Every message of the input stream applied by `durable`'s consumers and its checkpoint durable.
bool AllAckedBy(const std::string& url, const std::string& durable,
                const std::vector<uint32_t>& partitions) {
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  bool done = natsConnection_ConnectTo(&conn, url.c_str()) == NATS_OK &&
              natsConnection_JetStream(&js, conn, nullptr) == NATS_OK;
  for (uint32_t p : partitions) {
    if (!done) break;
    jsConsumerInfo* ci = nullptr;
    const std::string name = durable + "-p" + std::to_string(p);
    if (js_GetConsumerInfo(&ci, js, "IN", name.c_str(), nullptr, nullptr) != NATS_OK) {
      done = false;
      break;
    }
    done = ci->NumPending == 0 && ci->NumAckPending == 0 && ci->AckFloor.Stream > 0;
    jsConsumerInfo_Destroy(ci);
  }
  if (js != nullptr) jsCtx_Destroy(js);
  if (conn != nullptr) natsConnection_Destroy(conn);
  return done;
}

class JetStreamResultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(server_.url().empty()) << server_.Log();
    std::string error;
    ASSERT_TRUE(
        client::JetStreamPublisher::EnsureStream(server_.url(), "IN", "inferscope.in", &error))
        << error;
    pub_ = std::make_unique<client::JetStreamPublisher>(PublisherOptions(server_.url(), "IN"));
    ASSERT_TRUE(pub_->Connect()) << pub_->last_error();
    // The query node over the results stream (waits for an engine to create it).
    node_topology_ = dir_.str() + "/node-topology.yaml";
    WriteTopology(node_topology_);
    results_ = std::make_unique<QueryNodeProcess>(
        dir_, "results-node",
        std::vector<std::string>{"--state-dir", dir_.str() + "/results-state", "--results",
                                 server_.url(), "--results-stream", "RES",
                                 "--results-subject-prefix", "res", "--topology", node_topology_,
                                 "--maintenance-interval", "200ms"});
    ASSERT_TRUE(results_->WaitReady()) << results_->Log();
  }

  void WriteTopology(const std::string& path) {
    FILE* f = fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    const std::string text =
        Topology("tiers", dir_.str() + "/unused", server_.url(), "[0]", "unused", false);
    fwrite(text.data(), 1, text.size(), f);
    fclose(f);
  }

  // One engine over every partition, stopped once it has applied the whole stream; served by an
  // ordinary query node on its directory.
  void RunReference() {
    {
      auto engine = StartNode(dir_, server_.url(), "reference", "[0, 1, 2, 3]", "ref", false);
      ASSERT_TRUE(engine->WaitReady()) << engine->Log();
      ASSERT_TRUE(WaitFor(
          [&] {
            return AllAckedBy(server_.url(), "ref", {0, 1, 2, 3});
          },
          std::chrono::seconds(90)))
          << engine->Log();
      ASSERT_EQ(engine->Stop(SIGTERM), 0) << engine->Log();
    }
    reference_ = std::make_unique<QueryNodeProcess>(
        dir_, "reference-node",
        std::vector<std::string>{"--state-dir", dir_.str() + "/ref-state", "--secondary-path",
                                 dir_.str() + "/ref-secondary"});
    ASSERT_TRUE(reference_->WaitReady()) << reference_->Log();
  }

  json Health() {
    auto res = results_->http().Get("/v1/health");
    return res ? json::parse(res->body, nullptr, false) : json();
  }

  // The stored alerts as (fingerprint, state) pairs; *duplicates counts fingerprints listed twice.
  std::set<std::string> AlertIds(httplib::Client& http, int* duplicates) {
    std::set<std::string> ids;
    *duplicates = 0;
    int status = 0;
    json body = Get(http, "/v1/alerts?limit=1000", &status);
    if (!body.contains("alerts")) return ids;
    for (const json& a : body["alerts"]) {
      const std::string id = a.value("fingerprint", std::string());
      if (!ids.insert(id).second) ++*duplicates;
    }
    return ids;
  }

  TempDir dir_;
  NatsServer server_{dir_};
  const SeededStream stream_{client::NowMs() - 3'600'000};
  std::unique_ptr<client::JetStreamPublisher> pub_;
  std::string node_topology_;
  std::unique_ptr<QueryNodeProcess> results_;
  std::unique_ptr<QueryNodeProcess> reference_;
};

TEST_F(JetStreamResultsTest, TwoNodesThroughTheResultsStreamAnswerAsOneEngine) {
  Publish(*pub_, stream_, 0, kMessages);
  RunReference();
  if (HasFatalFailure()) return;
  auto a = StartNode(dir_, server_.url(), "node-a", "[0, 1]", "node-a", true);
  auto b = StartNode(dir_, server_.url(), "node-b", "[2, 3]", "node-b", true);
  ASSERT_TRUE(a->WaitReady()) << a->Log();
  ASSERT_TRUE(b->WaitReady()) << b->Log();
  ASSERT_TRUE(WaitFor(
      [&] {
        return AllAckedBy(server_.url(), "node-a", {0, 1});
      },
      std::chrono::seconds(90)))
      << a->Log();
  ASSERT_TRUE(WaitFor(
      [&] {
        return AllAckedBy(server_.url(), "node-b", {2, 3});
      },
      std::chrono::seconds(90)))
      << b->Log();
  // A graceful stop publishes the flushed open panes too, as the reference stored them.
  ASSERT_EQ(a->Stop(SIGTERM), 0) << a->Log();
  ASSERT_EQ(b->Stop(SIGTERM), 0) << b->Log();

  std::string why;
  EXPECT_TRUE(SameAnswers(reference_->http(), results_->http(),
                          ComparedPaths(stream_.t0, stream_.instances), &why))
      << why << "\n"
      << results_->Log();
  int duplicates = 0;
  const std::set<std::string> alerts = AlertIds(results_->http(), &duplicates);
  EXPECT_GT(alerts.size(), 0u) << "the rule fired no alert; the comparison of alerts proves little";
  EXPECT_EQ(duplicates, 0);

  const json health = Health();
  EXPECT_EQ(health.value("mode", ""), "results") << health;
  EXPECT_EQ(health["results"].value("pending_messages", -1), 0) << health;
  EXPECT_TRUE(health["lag_ms"].is_number()) << health;
  EXPECT_EQ(health["results"]["nodes"].size(), 2u) << health;
}

TEST_F(JetStreamResultsTest, ANodeKilledMidStreamAndRestartedStillAnswersAsOneEngine) {
  // The nodes read the stream while it is published, in chunks; node A is SIGKILLed with work in
  // flight (messages applied and results published, the checkpoint not yet durable) and started
  // again: it resumes from its checkpoint and publishes the results after it once more.
  Publish(*pub_, stream_, 0, kMessages / 2);
  auto b = StartNode(dir_, server_.url(), "node-b", "[2, 3]", "node-b", true);
  ASSERT_TRUE(b->WaitReady()) << b->Log();
  auto a = StartNode(dir_, server_.url(), "node-a-1", "[0, 1]", "node-a", true);
  ASSERT_TRUE(a->WaitReady()) << a->Log();
  ASSERT_TRUE(WaitFor(
      [&] {
        return AllAckedBy(server_.url(), "node-a", {0, 1});
      },
      std::chrono::seconds(90)))
      << a->Log();
  Publish(*pub_, stream_, kMessages / 2, kMessages * 3 / 4);
  std::this_thread::sleep_for(std::chrono::milliseconds(150));  // part of the chunk applied
  const bool in_flight = !AllAckedBy(server_.url(), "node-a", {0, 1});
  a->process().Signal(SIGKILL);
  a->process().Wait();
  Publish(*pub_, stream_, kMessages * 3 / 4, kMessages);
  a = StartNode(dir_, server_.url(), "node-a-2", "[0, 1]", "node-a", true);
  ASSERT_TRUE(a->WaitReady()) << a->Log();
  ASSERT_TRUE(WaitFor(
      [&] {
        return AllAckedBy(server_.url(), "node-a", {0, 1});
      },
      std::chrono::seconds(90)))
      << a->Log();
  ASSERT_TRUE(WaitFor(
      [&] {
        return AllAckedBy(server_.url(), "node-b", {2, 3});
      },
      std::chrono::seconds(90)))
      << b->Log();
  ASSERT_EQ(a->Stop(SIGTERM), 0) << a->Log();
  ASSERT_EQ(b->Stop(SIGTERM), 0) << b->Log();
  EXPECT_TRUE(in_flight) << "node A had applied the chunk before the kill; the test proves little";
  RunReference();
  if (HasFatalFailure()) return;

  std::string why;
  EXPECT_TRUE(SameAnswers(reference_->http(), results_->http(),
                          ComparedPaths(stream_.t0, stream_.instances), &why))
      << why << "\n"
      << results_->Log();
  int duplicates = 0;
  const std::set<std::string> alerts = AlertIds(results_->http(), &duplicates);
  EXPECT_GT(alerts.size(), 0u);
  EXPECT_EQ(duplicates, 0) << "an alert appears twice in /v1/alerts";
  int ref_duplicates = 0;
  EXPECT_EQ(alerts, AlertIds(reference_->http(), &ref_duplicates));
}

}  // namespace
}  // namespace inferscope
