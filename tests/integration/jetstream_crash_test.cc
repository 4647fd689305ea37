// Exactly-once through JetStream: a seeded stream is published into a real nats-server (4
// partitions); the engine (a subprocess, `type: jetstream` source) is killed with SIGKILL
// mid-stream and restarted on the same state directory three times; every stored pane must equal
// that of a run without crashes over the same stream. The engine restores its checkpoint and
// resumes each partition after the checkpointed stream sequence (sources/jetstream_source.h).

#include <gtest/gtest.h>
#include <nats/nats.h>
#include <signal.h>

#include <map>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "clients/cpp/jetstream_publisher.h"
#include "tests/integration/engine_fixture.h"
#include "tests/nats_server.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using testing::EngineProcess;
using testing::NatsServer;
using testing::ReadStore;
using testing::StoredResult;
using testing::Substitute;
using testing::TempDir;
using testing::WaitFor;

constexpr uint32_t kPartitions = 4;

// As tests/integration/crash_test.cc: only data moves watermarks, 1 s panes, checkpoints every
// 100 ms. Watermarks are per publisher id, one per partition here, and the operator's is their
// minimum over the publishers seen so far. The partitions carry equal shares of event time and are
// fetched in turn, 2 messages (~1.1 s of event time) at a time: with the jitter (0.5 s) that stays
// within out_of_orderness (5 s), also for the partition fetched first, whose publisher alone sets
// the watermark until the others' first events arrive; max_publisher_lag (5 minutes) is far above
// it. So however the partitions interleave no event is ever late, and the panes do not depend on
// timing. (A topology must likewise give out_of_orderness room for one fetch_batch of event time
// per partition: docs/SOURCES.md.)
constexpr char kTopology[] = R"(name: jetstream-crash
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
      stream: STREAM
      subject_prefix: PREFIX
      partitions: [0, 1, 2, 3]
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
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
)";

std::unique_ptr<EngineProcess> StartEngine(const TempDir& dir, const std::string& state,
                                           const std::string& url, const std::string& stream,
                                           const std::string& prefix, const std::string& name) {
  return std::make_unique<EngineProcess>(
      dir, EngineProcess::Options{
               Substitute(kTopology,
                          {{"STATE", state}, {"URL", url}, {"STREAM", stream}, {"PREFIX", prefix}}),
               name});
}

// Eight instances, two per partition, so the partitions carry equal shares of event time.
std::vector<std::string> BalancedInstances() {
  std::vector<std::string> out;
  int per_partition[kPartitions] = {};
  for (int i = 0; out.size() < 2 * kPartitions; ++i) {
    std::string name = "node-" + std::to_string(i);
    uint32_t p = client::JetStreamPartition(name, kPartitions);
    if (per_partition[p] < 2) {
      ++per_partition[p];
      out.push_back(std::move(name));
    }
  }
  return out;
}

// The seeded stream: message m is 50 events, event times 7 ms apart with jitter within
// out_of_orderness, requests and gauges over the eight instances.
struct SeededStream {
  static constexpr int kEventsPerMessage = 50;
  SeededStream(int64_t t0) : t0(t0), instances(BalancedInstances()) {}
  void Fill(client::JetStreamPublisher& pub, int message) const {
    std::mt19937_64 rng(static_cast<uint64_t>(message) * 7919 + 3);
    std::uniform_real_distribution<double> latency(20, 400);
    std::uniform_int_distribution<int> jitter(-500, 500);
    for (int i = 0; i < kEventsPerMessage; ++i) {
      const int n = message * kEventsPerMessage + i;
      const int64_t t = t0 + n * 7 + jitter(rng);
      const std::string& instance = instances[static_cast<size_t>(n) % instances.size()];
      const std::string model = n % 3 == 0 ? "llama" : "qwen";
      if (n % 5 == 0) {
        ASSERT_TRUE(pub.Gauge(instance, model, "kv_cache_usage", latency(rng) / 400, t));
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
      ASSERT_TRUE(pub.Request(r)) << pub.last_error();
    }
  }
  int64_t t0;
  std::vector<std::string> instances;
};

void Publish(client::JetStreamPublisher& pub, const SeededStream& stream, int from, int to) {
  for (int m = from; m < to; ++m) stream.Fill(pub, m);
  ASSERT_TRUE(pub.Flush()) << pub.last_error();
}

client::JetStreamPublisherOptions PublisherOptions(const std::string& url,
                                                   const std::string& stream) {
  client::JetStreamPublisherOptions o;
  o.url = url;
  o.stream = stream;
  o.partitions = kPartitions;
  o.publisher_id = "seeded";
  o.batch_size = 20;  // events per message and partition: ~0.56 s of event time
  return o;
}

// What the server says of the partitions' consumers, summed.
struct Consumers {
  uint64_t pending = 0;      // not delivered yet
  uint64_t ack_pending = 0;  // delivered, not acked (their checkpoint is not durable yet)
  uint64_t acked = 0;        // sum of ack floors
  bool all_found = true;
};

Consumers ReadConsumers(const std::string& url, const std::string& stream) {
  Consumers c;
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  if (natsConnection_ConnectTo(&conn, url.c_str()) == NATS_OK &&
      natsConnection_JetStream(&js, conn, nullptr) == NATS_OK) {
    for (uint32_t p = 0; p < kPartitions; ++p) {
      jsConsumerInfo* ci = nullptr;
      const std::string name = "inferscope-p" + std::to_string(p);
      if (js_GetConsumerInfo(&ci, js, stream.c_str(), name.c_str(), nullptr, nullptr) != NATS_OK) {
        c.all_found = false;
        continue;
      }
      c.pending += ci->NumPending;
      c.ack_pending += static_cast<uint64_t>(ci->NumAckPending);
      c.acked += ci->AckFloor.Stream;
      jsConsumerInfo_Destroy(ci);
    }
  } else {
    c.all_found = false;
  }
  if (js != nullptr) jsCtx_Destroy(js);
  if (conn != nullptr) natsConnection_Destroy(conn);
  return c;
}

// Everything published is applied and its checkpoint durable (acks follow durable checkpoints).
bool AllAcked(const std::string& url, const std::string& stream) {
  const Consumers c = ReadConsumers(url, stream);
  return c.all_found && c.pending == 0 && c.ack_pending == 0 && c.acked > 0;
}

TEST(JetStreamCrashTest, SigkillMidStreamThenRestoreEqualsAnUncrashedRun) {
  constexpr int kMessages = 1200;  // 60,000 events over ~7 minutes of event time
  TempDir dir;
  NatsServer server(dir);
  ASSERT_FALSE(server.url().empty()) << server.Log();
  const SeededStream stream(client::NowMs() - 3'600'000);

  // The reference: the whole stream, one run without crashes.
  std::string error;
  ASSERT_TRUE(client::JetStreamPublisher::EnsureStream(server.url(), "REF", "ref.in", &error))
      << error;
  {
    client::JetStreamPublisherOptions o = PublisherOptions(server.url(), "REF");
    o.subject_prefix = "ref.in";
    client::JetStreamPublisher pub(o);
    ASSERT_TRUE(pub.Connect()) << pub.last_error();
    Publish(pub, stream, 0, kMessages);
  }
  const std::string ref_state = dir.str() + "/ref-state";
  {
    auto engine = StartEngine(dir, ref_state, server.url(), "REF", "ref.in", "reference");
    ASSERT_TRUE(engine->WaitReady()) << engine->Log();
    ASSERT_TRUE(WaitFor([&] { return AllAcked(server.url(), "REF"); }, std::chrono::seconds(60)))
        << engine->Log();
    ASSERT_EQ(engine->Stop(SIGTERM), 0) << engine->Log();
  }
  const std::map<std::string, StoredResult> expected = ReadStore(ref_state);
  ASSERT_GT(expected.size(), 1000u);

  // The same stream published in chunks while the engine runs, with SIGKILLs.
  ASSERT_TRUE(
      client::JetStreamPublisher::EnsureStream(server.url(), "CRASH", "inferscope.in", &error))
      << error;
  client::JetStreamPublisher pub(PublisherOptions(server.url(), "CRASH"));
  ASSERT_TRUE(pub.Connect()) << pub.last_error();
  const std::string state = dir.str() + "/state";
  std::mt19937 rng(20261205);
  const std::vector<int> kills = {300, 600, 900};
  int run = 1;
  auto engine = StartEngine(dir, state, server.url(), "CRASH", "inferscope.in", "engine-1");
  ASSERT_TRUE(engine->WaitReady()) << engine->Log();
  int sent = 0;
  int kills_with_work_in_flight = 0;  // messages not yet applied or not yet durable
  int kills_after_acks = 0;           // durable positions the restart had to restore
  uint64_t last_acked = 0;
  for (size_t k = 0; k < kills.size(); ++k) {
    // In chunks, so the engine is consuming while the publisher still publishes.
    for (int m = sent; m < kills[k]; m += 50) Publish(pub, stream, m, std::min(m + 50, kills[k]));
    sent = kills[k];
    // Kills 0 and 2 come once a new checkpoint is durable (acked: positions the restart must
    // restore) and a random part of a checkpoint interval later; kill 1 at once (messages
    // published and not yet applied, or applied and not yet durable).
    if (k % 2 == 0) {
      WaitFor([&] { return ReadConsumers(server.url(), "CRASH").acked > last_acked; },
              std::chrono::seconds(10));
      std::this_thread::sleep_for(
          std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 100)(rng)));
    }
    const Consumers before = ReadConsumers(server.url(), "CRASH");
    if (before.pending + before.ack_pending > 0) ++kills_with_work_in_flight;
    if (before.acked > last_acked) ++kills_after_acks;
    last_acked = before.acked;
    engine->process().Signal(SIGKILL);
    engine->process().Wait();
    engine = StartEngine(dir, state, server.url(), "CRASH", "inferscope.in",
                         "engine-" + std::to_string(++run));
    ASSERT_TRUE(engine->WaitReady()) << engine->Log();
  }
  for (int m = sent; m < kMessages; m += 50) Publish(pub, stream, m, std::min(m + 50, kMessages));
  ASSERT_TRUE(WaitFor([&] { return AllAcked(server.url(), "CRASH"); }, std::chrono::seconds(60)))
      << engine->Log();
  const std::string last_log = engine->Log();
  ASSERT_EQ(engine->Stop(SIGTERM), 0) << last_log;
  EXPECT_GE(kills_with_work_in_flight, 1) << "no kill hit work in flight; the test proves little";
  EXPECT_GE(kills_after_acks, 2) << "too few kills hit restored positions";
  // The last restart resumed after a checkpointed position, not from the start.
  EXPECT_TRUE(std::regex_search(last_log, std::regex("resumes after stream sequence [1-9]")))
      << last_log;

  const std::map<std::string, StoredResult> got = ReadStore(state);
  testing::ExpectSamePanes(got, expected);
  uint64_t total = 0;
  for (const auto& [key, pane] : got) {
    if (key.find("/e2e_ms@") != std::string::npos ||
        key.find("/kv_cache_usage@") != std::string::npos) {
      total += pane.events;
    }
  }
  EXPECT_EQ(total, static_cast<uint64_t>(kMessages) * SeededStream::kEventsPerMessage);
}

}  // namespace
}  // namespace inferscope
