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
#include "tests/integration/jetstream_results_compare.h"
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
  // flight (messages of the chunk delivered to it and not all acknowledged: their checkpoint is
  // not durable, some may be applied and their results published) and started
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
  const std::vector<uint64_t> delivered = DeliveredTo(server_.url(), "node-a", {0, 1});
  Publish(*pub_, stream_, kMessages / 2, kMessages * 3 / 4);
  const bool in_flight = KillWithWorkInFlight(server_.url(), "node-a", {0, 1}, delivered, [&] {
    a->process().Signal(SIGKILL);
    a->process().Wait();
  });
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
  EXPECT_TRUE(in_flight)
      << "node A had acknowledged the chunk before the kill; the test proves little";
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
