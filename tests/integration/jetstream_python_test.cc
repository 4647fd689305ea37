// The Python client publishes into JetStream (clients/python/inferscope/jetstream.py, its own NATS
// client): tests/integration/publish_jetstream.py publishes a seeded batch to a real nats-server
// (stopped, killed and restarted halfway, so that it resends), the C++ JetStreamPublisher publishes
// the same events into a second stream, the engine (a subprocess, `type: jetstream` source)
// consumes each stream, and the stored panes of the two runs must be equal — same partitions, same
// payload semantics, every event exactly once.

#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>

#include "clients/cpp/jetstream_publisher.h"
#include "tests/integration/engine_fixture.h"
#include "tests/integration/jetstream_seeded.h"
#include "tests/nats_server.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using testing::NatsServer;
using testing::ReadStore;
using testing::StoredResult;
using testing::Subprocess;
using testing::TempDir;
using testing::WaitFor;
using namespace jetstream_test;  // NOLINT(google-build-using-namespace)

constexpr int kMessages = 200;  // of 50 events: 10,000 events over 70 s of event time
constexpr int kEventsPerMessage = 50;

// Event n as publish_jetstream.py makes it (the same formulas).
void PublishSeeded(client::JetStreamPublisher& pub, int64_t t0) {
  for (int n = 0; n < kMessages * kEventsPerMessage; ++n) {
    const std::string instance = "node-" + std::to_string(n % 8);
    const std::string model = n % 3 == 0 ? "llama" : "qwen";
    const int64_t t = t0 + int64_t{n} * 7;
    if (n % 5 == 0) {
      ASSERT_TRUE(pub.Gauge(instance, model, "kv_cache_usage", (n % 97) / 97.0, t))
          << pub.last_error();
      continue;
    }
    client::RequestOutcome r;
    r.instance = instance;
    r.model = model;
    r.e2e_ms = 200 + (n * 37) % 3800;
    r.ttft_ms = 20 + (n * 13) % 380;
    r.output_tokens = static_cast<uint32_t>((n * 7) % 500);
    r.error = n % 37 == 0 ? "timeout" : "";
    r.time_ms = t;
    ASSERT_TRUE(pub.Request(r)) << pub.last_error();
  }
  ASSERT_TRUE(pub.Flush()) << pub.last_error();
}

// The engine over `stream` until every message is applied and acked; the stored panes.
std::map<std::string, StoredResult> Consume(const TempDir& dir, const std::string& url,
                                            const std::string& stream, const std::string& prefix) {
  const std::string state = dir.str() + "/state-" + stream;
  auto engine = StartEngine(dir, state, url, stream, prefix, "engine-" + stream);
  EXPECT_TRUE(engine->WaitReady()) << engine->Log();
  EXPECT_TRUE(WaitFor([&] { return AllAcked(url, stream); }, std::chrono::seconds(60)))
      << engine->Log();
  EXPECT_EQ(engine->Stop(SIGTERM), 0) << engine->Log();
  return ReadStore(state);
}

TEST(JetStreamPythonTest, PythonPublishesTheSamePanesAsTheCppPublisher) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_FALSE(server.url().empty()) << server.Log();
  std::string error;
  ASSERT_TRUE(client::JetStreamPublisher::EnsureStream(server.url(), "PY", "py.in", &error))
      << error;
  ASSERT_TRUE(client::JetStreamPublisher::EnsureStream(server.url(), "CPP", "cpp.in", &error))
      << error;
  const int64_t t0 = client::NowMs() - 3'600'000;

  // Python, as a subprocess. Halfway, the server is stopped (SIGSTOP) while the next messages are
  // published, then killed and started again on the same port and store: the publishes whose
  // acknowledgements never came are resent after the reconnection.
  const std::string log = dir.str() + "/python.log";
  Subprocess python(
      {testing::Python(), testing::SourceDir() + "/tests/integration/publish_jetstream.py",
       server.url(), "PY", "py.in", std::to_string(kPartitions), std::to_string(kMessages),
       std::to_string(t0), std::to_string(kMessages / 2), dir.str()},
      log);
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(dir.str() + "/paused"); }))
      << testing::ReadFile(log);
  ASSERT_TRUE(server.process().Pause());
  { std::ofstream go(dir.str() + "/go"); }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // publishes time out (1 s)
  ASSERT_TRUE(server.Restart()) << server.Log();
  ASSERT_EQ(python.Wait(std::chrono::seconds(120)), 0) << testing::ReadFile(log);
  const std::string report = testing::ReadFile(log);
  EXPECT_NE(report.find("\"events\": 10000"), std::string::npos) << report;
  EXPECT_NE(report.find("\"failed\": 0,"), std::string::npos) << report;
  EXPECT_NE(report.find("\"reconnects\": 1,"), std::string::npos) << report;
  EXPECT_EQ(report.find("\"resent\": 0,"), std::string::npos) << report;  // some were resent

  // C++, the same events.
  {
    client::JetStreamPublisherOptions o = PublisherOptions(server.url(), "CPP");
    o.subject_prefix = "cpp.in";
    client::JetStreamPublisher pub(o);
    ASSERT_TRUE(pub.Connect()) << pub.last_error();
    PublishSeeded(pub, t0);
    EXPECT_EQ(pub.events_published(), static_cast<uint64_t>(kMessages * kEventsPerMessage));
  }

  const std::map<std::string, StoredResult> from_python = Consume(dir, server.url(), "PY", "py.in");
  const std::map<std::string, StoredResult> from_cpp = Consume(dir, server.url(), "CPP", "cpp.in");
  ASSERT_GT(from_cpp.size(), 200u);
  testing::ExpectSamePanes(from_python, from_cpp);
  uint64_t total = 0;
  for (const auto& [key, pane] : from_python) {
    if (key.find("/e2e_ms@") != std::string::npos ||
        key.find("/kv_cache_usage@") != std::string::npos) {
      total += pane.events;
    }
  }
  EXPECT_EQ(total, static_cast<uint64_t>(kMessages * kEventsPerMessage));
}

}  // namespace
}  // namespace inferscope
