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
#include "tests/integration/jetstream_seeded.h"
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
using namespace jetstream_test;  // NOLINT(google-build-using-namespace)

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
