// Acknowledged publishing survives crashes: the engine runs as a subprocess, a publisher sends a
// known stream in acknowledged mode, the engine is killed with SIGKILL at random points and
// restarted on the same state directory, and every stored window result must equal that of a
// run without crashes — nothing lost, nothing counted twice — and every alert transition of that
// run must be stored (a transition stored twice around a crash is allowed: alert history is
// at-least-once).

#include <gtest/gtest.h>
#include <signal.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "alerting/alert.h"
#include "clients/cpp/acked_publisher.h"
#include "state/alert_store.h"
#include "state/state_store.h"
#include "tests/integration/engine_fixture.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;
using testing::EngineProcess;
using testing::ReadFile;
using testing::ReadStore;
using testing::StoredResult;
using testing::Subprocess;
using testing::Substitute;
using testing::TempDir;
using testing::WaitFor;

// Deterministic watermarks (idle_timeout 0: only data moves them) and a pane of 1 s, so a short
// stream closes many panes; checkpoints every 100 ms so kills land between and inside them.
constexpr char kTopology[] = R"(name: crash
state:
  path: STATE
  tiers:
    - {resolution: 1s, retention: forever}
engine:
  checkpoint_interval: 100ms
sources:
  - name: ingest
    type: zmq
    options:
      endpoint: ENDPOINT
      mode: router
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options:
      pane: 1s
      out_of_orderness: 2s
      idle_timeout: 0
  - name: rules
    type: threshold_rules
    inputs: [windows]
    options:
      rules:
        - name: kv_full
          metric: kv_cache_usage
          stat: max
          op: ">="
          levels: {warning: 0.99}
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
  - name: alert_store
    type: rocksdb_alerts
    inputs: [rules]
)";

class Engine {
 public:
  Engine(const TempDir& dir, const std::string& state, const std::string& endpoint, int run,
         const std::string& checkpoint_interval = "100ms")
      : process_(
            dir,
            {Substitute(kTopology,
                        {{"100ms", checkpoint_interval}, {"STATE", state}, {"ENDPOINT", endpoint}}),
             "engine-" + std::to_string(run)}) {}
  bool WaitReady() { return process_.WaitReady(); }
  std::string endpoint() const { return process_.Endpoint("ingest"); }
  std::string Log() const { return process_.Log(); }
  Subprocess& process() { return process_.process(); }

 private:
  EngineProcess process_;
};

// The distinct alert transitions stored in the history at `path`, as
// "<fingerprint> <state> <severity> <window start>".
std::set<std::string> ReadAlertTransitions(const std::string& path) {
  StateStoreOptions options;
  options.path = path;
  options.create_if_missing = false;
  auto store = StateStore::Open(options, nullptr);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  std::set<std::string> out;
  if (!store.ok()) return out;
  Status s = ScanAlertHistory(**store, 0, [&](const Alert& a) {
    out.insert(FingerprintHex(a.fingerprint) + " " + std::string(AlertStateName(a.state)) + " " +
               std::string(SeverityName(a.severity)) + " " + std::to_string(a.window_start_ms));
    return true;
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

// The known stream: `messages` messages of 50 events over 12 series (requests and gauges), event
// times increasing by 7 ms with jitter inside out_of_orderness.
struct Stream {
  static constexpr int kEventsPerMessage = 50;
  explicit Stream(int64_t t0) : t0(t0) {}
  void Fill(client::AckedPublisher& pub, int message) const {
    std::mt19937_64 rng(static_cast<uint64_t>(message) * 7919 + 1);
    std::uniform_real_distribution<double> latency(20, 400);
    std::uniform_int_distribution<int> jitter(-500, 500);
    for (int i = 0; i < kEventsPerMessage; ++i) {
      const int n = message * kEventsPerMessage + i;
      const int64_t t = t0 + n * 7 + jitter(rng);
      const std::string instance = "node-" + std::to_string(n % 4);
      const std::string model = n % 3 == 0 ? "llama" : "qwen";
      if (n % 5 == 0) {
        pub.Gauge(instance, model, "kv_cache_usage", latency(rng) / 400, t);
        continue;
      }
      client::RequestOutcome r;
      r.instance = instance;
      r.model = model;
      r.e2e_ms = latency(rng) * 10;
      r.ttft_ms = latency(rng);
      r.output_tokens = static_cast<uint32_t>(latency(rng));
      r.error = n % 37 == 0 ? "timeout" : "";
      r.time_ms = t;
      pub.Request(r);
    }
  }
  int64_t t0;
};

client::AckedPublisherOptions PublisherOptions(const std::string& endpoint) {
  client::AckedPublisherOptions o;
  o.endpoint = endpoint;
  o.publisher_id = "crash-test";
  o.batch_size = Stream::kEventsPerMessage;
  o.resend_timeout_ms = 700;
  o.hello_timeout_ms = 2000;
  return o;
}

// Publishes messages [from, to), polling acks as it goes.
void Publish(client::AckedPublisher& pub, const Stream& stream, int from, int to) {
  for (int m = from; m < to; ++m) {
    stream.Fill(pub, m);
    pub.Poll(0);
    if (m % 20 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // let panes close
  }
}

TEST(CrashTest, SigkillAtRandomPointsLosesNothingAndCountsNothingTwice) {
  constexpr int kMessages = 1200;  // 60,000 events over ~7 minutes of event time
  const Stream stream(client::NowMs() - 3'600'000);

  // The reference: one run without crashes.
  TempDir ref_dir;
  {
    Engine engine(ref_dir, ref_dir.str() + "/state", "tcp://127.0.0.1:*", 0);
    ASSERT_TRUE(engine.WaitReady()) << engine.Log();
    client::AckedPublisher pub(PublisherOptions(engine.endpoint()));
    ASSERT_TRUE(pub.Connect());
    Publish(pub, stream, 0, kMessages);
    ASSERT_TRUE(pub.WaitAcked(60'000)) << pub.last_error() << "\n" << engine.Log();
    engine.process().Signal(SIGTERM);
    ASSERT_EQ(engine.process().Wait(), 0) << engine.Log();
  }
  const std::map<std::string, StoredResult> expected = ReadStore(ref_dir.str() + "/state");
  ASSERT_GT(expected.size(), 1000u);
  const std::set<std::string> expected_alerts = ReadAlertTransitions(ref_dir.str() + "/state");
  ASSERT_GT(expected_alerts.size(), 50u);

  // The same stream with SIGKILLs at random points; the publisher keeps running throughout.
  TempDir dir;
  const std::string state = dir.str() + "/state";
  std::mt19937 rng(20261126);
  std::vector<int> kills;
  for (int i = 0; i < 6; ++i)
    kills.push_back(std::uniform_int_distribution<int>(50, kMessages - 50)(rng));
  std::sort(kills.begin(), kills.end());
  kills.push_back(kMessages);

  int run = 1;
  auto engine = std::make_unique<Engine>(
      dir, state, "tcp://127.0.0.1:" + std::to_string(testing::RestartablePort()), run);
  ASSERT_TRUE(engine->WaitReady()) << engine->Log();
  // Restarts bind the port of the first run, so the publisher's connection finds them.
  const std::string endpoint = engine->endpoint();
  client::AckedPublisher pub(PublisherOptions(endpoint));
  ASSERT_TRUE(pub.Connect());
  int sent = 0;
  int kills_after_acks = 0;    // kills after acknowledgements arrived: state had to be restored
  int kills_with_unacked = 0;  // kills with messages in flight: they had to be resent
  uint64_t last_acked = 0;
  for (size_t k = 0; k < kills.size(); ++k) {
    Publish(pub, stream, sent, kills[k]);
    sent = kills[k];
    if (sent == kMessages) break;
    // Kill either at once (messages in flight, none of the latest acknowledged) or after a few
    // checkpoint intervals (acknowledged state the restart must restore), alternately.
    // The long waits last until a new acknowledgement arrived (at most 10 s: a slow machine), then
    // a random part of a checkpoint interval more.
    if (k % 2 == 1) {
      const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while ((!pub.any_acked() || pub.acked_seq() <= last_acked) &&
             std::chrono::steady_clock::now() < limit) {
        pub.Poll(5);
      }
    }
    const int wait_ms = k % 2 == 0 ? std::uniform_int_distribution<int>(0, 40)(rng)
                                   : std::uniform_int_distribution<int>(0, 150)(rng);
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
    while (std::chrono::steady_clock::now() < until) pub.Poll(5);
    if (pub.any_acked() && pub.acked_seq() > last_acked) ++kills_after_acks;
    if (pub.unacked() > 0) ++kills_with_unacked;
    last_acked = pub.any_acked() ? pub.acked_seq() : 0;
    engine->process().Signal(SIGKILL);
    engine->process().Wait();
    engine = std::make_unique<Engine>(dir, state, endpoint, ++run);
    ASSERT_TRUE(engine->WaitReady()) << engine->Log();
  }
  ASSERT_TRUE(pub.WaitAcked(60'000)) << pub.last_error() << "\n" << engine->Log();
  EXPECT_GT(pub.resends(), 0u) << "the kills should have forced resends";
  EXPECT_GE(kills_after_acks, 2) << "too few kills hit restored state; the test proves little";
  EXPECT_GE(kills_with_unacked, 2) << "too few kills hit messages in flight";
  engine->process().Signal(SIGTERM);
  ASSERT_EQ(engine->process().Wait(), 0) << engine->Log();

  const std::map<std::string, StoredResult> got = ReadStore(state);
  ASSERT_EQ(got.size(), expected.size());
  uint64_t total = 0;
  for (const auto& [key, want] : expected) {
    auto it = got.find(key);
    ASSERT_NE(it, got.end()) << key;
    const StoredResult& have = it->second;
    SCOPED_TRACE(key);
    EXPECT_EQ(have.count, want.count);
    EXPECT_EQ(have.events, want.events);
    EXPECT_EQ(have.errors, want.errors);
    EXPECT_DOUBLE_EQ(have.sum, want.sum);
    EXPECT_EQ(have.min, want.min);
    EXPECT_EQ(have.max, want.max);
    EXPECT_EQ(have.p50, want.p50);
    EXPECT_EQ(have.p99, want.p99);
    if (key.find("/e2e_ms@") != std::string::npos ||
        key.find("/kv_cache_usage@") != std::string::npos) {
      total += have.events;
    }
  }
  EXPECT_EQ(total, static_cast<uint64_t>(kMessages) * Stream::kEventsPerMessage);
  const std::set<std::string> alerts = ReadAlertTransitions(state);
  for (const std::string& a : expected_alerts) {
    EXPECT_EQ(alerts.count(a), 1u) << "alert transition lost: " << a;
  }
  for (const std::string& a : alerts) {
    EXPECT_EQ(expected_alerts.count(a), 1u)
        << "alert transition not in the run without crashes: " << a;
  }
}

// When acknowledgements do not come (here: checkpoints far apart, as when the engine is saturated),
// a full resend buffer makes Flush wait and then report back-pressure; no event is dropped.
TEST(CrashTest, FullResendBufferReportsBackPressureAndKeepsEvents) {
  TempDir dir;
  Engine engine(dir, dir.str() + "/state", "tcp://127.0.0.1:*", 0, "1h");
  ASSERT_TRUE(engine.WaitReady()) << engine.Log();
  client::AckedPublisherOptions o = PublisherOptions(engine.endpoint());
  o.max_unacked = 2;
  o.block_timeout_ms = 200;
  o.batch_size = 1000;
  client::AckedPublisher pub(o);
  ASSERT_TRUE(pub.Connect());
  const Stream stream(client::NowMs() - 60'000);
  for (int m = 0; m < 2; ++m) {
    stream.Fill(pub, m);
    ASSERT_TRUE(pub.Flush()) << pub.last_error();
  }
  stream.Fill(pub, 2);
  const auto started = std::chrono::steady_clock::now();
  EXPECT_FALSE(pub.Flush());
  EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(200));
  EXPECT_NE(pub.last_error().find("back-pressure"), std::string::npos) << pub.last_error();
  EXPECT_EQ(pub.unacked(), 2u);
  EXPECT_EQ(pub.next_seq(), 2u);  // the third batch is still pending, not sent and not lost
  engine.process().Signal(SIGTERM);
  EXPECT_EQ(engine.process().Wait(), 0) << engine.Log();
}

}  // namespace
}  // namespace inferscope
