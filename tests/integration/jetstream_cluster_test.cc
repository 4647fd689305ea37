// Failover of NATS servers: a seeded stream is published into an R3 stream on a real 3-server NATS
// cluster (tests/nats_server.h) while the engine (a subprocess, `type: jetstream` source with
// the three client URLs) consumes it. Mid-stream, the server the engine is connected to, made the
// leader of the stream and of every partition's consumer, is killed with SIGKILL. The engine, the
// publisher and the two remaining servers go on: every stored pane must equal that of a run over
// the same stream on a single server, and every message must be acked (applied, its checkpoint
// durable and its ack taken by the new consumer leaders).

#include <gtest/gtest.h>
#include <nats/nats.h>
#include <signal.h>

#include <httplib.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "clients/cpp/jetstream_publisher.h"
#include "pipeline/clock.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "sources/envelope.h"
#include "sources/wire_decoder.h"
#include "tests/integration/engine_fixture.h"
#include "tests/integration/jetstream_seeded.h"
#include "tests/nats_server.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using testing::NatsCluster;
using testing::NatsServer;
using testing::ReadStore;
using testing::StoredResult;
using testing::TempDir;
using testing::WaitFor;
using namespace jetstream_test;  // NOLINT(google-build-using-namespace)

// The stream's leader and replica count as the cluster reports them ("" when it does not answer).
struct StreamPlacement {
  std::string leader;
  int replicas = 0;  // leader and followers
  int current_followers = 0;
};

StreamPlacement ReadPlacement(const std::string& urls, const std::string& stream) {
  StreamPlacement out;
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  if (natsConnection_ConnectTo(&conn, urls.c_str()) == NATS_OK &&
      natsConnection_JetStream(&js, conn, nullptr) == NATS_OK) {
    jsStreamInfo* info = nullptr;
    if (js_GetStreamInfo(&info, js, stream.c_str(), nullptr, nullptr) == NATS_OK) {
      if (info->Cluster != nullptr && info->Cluster->Leader != nullptr) {
        out.leader = info->Cluster->Leader;
        out.replicas = 1 + info->Cluster->ReplicasLen;
        for (int i = 0; i < info->Cluster->ReplicasLen; ++i) {
          if (info->Cluster->Replicas[i]->Current) ++out.current_followers;
        }
      }
      jsStreamInfo_Destroy(info);
    }
  }
  if (js != nullptr) jsCtx_Destroy(js);
  if (conn != nullptr) natsConnection_Destroy(conn);
  return out;
}

// The server the engine's source is connected to (its connection is named
// "inferscope-jetstream-source"), from each server's /connz; -1 when none reports it.
int EngineServer(NatsCluster& cluster) {
  for (int i = 0; i < NatsCluster::kServers; ++i) {
    if (!cluster.process(i).Running()) continue;
    httplib::Client http(cluster.monitor(i));
    const httplib::Result res = http.Get("/connz");
    if (!res || res->status != 200) continue;
    const nlohmann::json connz = nlohmann::json::parse(res->body, nullptr, false);
    if (!connz.is_object() || !connz.contains("connections")) continue;
    for (const nlohmann::json& c : connz["connections"]) {
      if (c.value("name", "") == "inferscope-jetstream-source") return i;
    }
  }
  return -1;
}

// The leader of consumer `consumer` of `stream`, "" when the cluster does not answer.
std::string ConsumerLeader(const std::string& urls, const std::string& stream,
                           const std::string& consumer) {
  std::string leader;
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  if (natsConnection_ConnectTo(&conn, urls.c_str()) == NATS_OK &&
      natsConnection_JetStream(&js, conn, nullptr) == NATS_OK) {
    jsConsumerInfo* ci = nullptr;
    if (js_GetConsumerInfo(&ci, js, stream.c_str(), consumer.c_str(), nullptr, nullptr) ==
        NATS_OK) {
      if (ci->Cluster != nullptr && ci->Cluster->Leader != nullptr) leader = ci->Cluster->Leader;
      jsConsumerInfo_Destroy(ci);
    }
  }
  if (js != nullptr) jsCtx_Destroy(js);
  if (conn != nullptr) natsConnection_Destroy(conn);
  return leader;
}

// Asks the leader behind `api` ($JS.API.STREAM.LEADER.STEPDOWN.<stream> or the consumer's) to step
// down until `leader()` names `target`: at most `attempts` times (the new leader is elected at
// random among the current replicas). True when `target` leads.
bool MoveLeader(const std::string& urls, const std::string& api,
                const std::function<std::string()>& leader, const std::string& target,
                int attempts) {
  natsConnection* conn = nullptr;
  if (natsConnection_ConnectTo(&conn, urls.c_str()) != NATS_OK) return false;
  bool moved = false;
  for (int i = 0; i < attempts; ++i) {
    std::string now;
    WaitFor([&] { return !(now = leader()).empty(); }, std::chrono::seconds(30));
    if (now == target) {
      moved = true;
      break;
    }
    natsMsg* reply = nullptr;
    if (natsConnection_Request(&reply, conn, api.c_str(), "", 0, 5000) == NATS_OK) {
      natsMsg_Destroy(reply);
    }
    // The old leader answers before the new one is elected: wait for a different one.
    WaitFor(
        [&] {
          const std::string next = leader();
          return !next.empty() && next != now;
        },
        std::chrono::seconds(30));
  }
  natsConnection_Destroy(conn);
  return moved;
}

TEST(JetStreamClusterTest, StreamLeaderSigkilledMidStreamEqualsASingleServerRun) {
  constexpr int kMessages = 800;  // 40,000 events over ~4.7 minutes of event time
  constexpr int kBeforeKill = 400;
  TempDir dir;
  const SeededStream stream(client::NowMs() - 3'600'000);
  std::string error;

  // The reference: the whole stream on a single server, one run.
  std::map<std::string, StoredResult> expected;
  {
    NatsServer server(dir);
    ASSERT_FALSE(server.url().empty()) << server.Log();
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
    auto engine = StartEngine(dir, ref_state, server.url(), "REF", "ref.in", "reference");
    ASSERT_TRUE(engine->WaitReady()) << engine->Log();
    ASSERT_TRUE(WaitFor([&] { return AllAcked(server.url(), "REF"); }, std::chrono::seconds(60)))
        << engine->Log();
    ASSERT_EQ(engine->Stop(SIGTERM), 0) << engine->Log();
    expected = ReadStore(ref_state);
  }
  ASSERT_GT(expected.size(), 500u);

  // The cluster and an R3 stream (creation is refused until the three servers are current).
  NatsCluster cluster(dir);
  ASSERT_FALSE(cluster.urls().empty()) << cluster.Log();
  const std::string urls = cluster.urls();
  ASSERT_TRUE(WaitFor(
      [&] {
        return client::JetStreamPublisher::EnsureStream(urls, "CLU", "inferscope.in", &error, 3);
      },
      std::chrono::seconds(60)))
      << error << cluster.Log();
  ASSERT_TRUE(WaitFor([&] { return ReadPlacement(urls, "CLU").current_followers == 2; },
                      std::chrono::seconds(60)))
      << cluster.Log();
  ASSERT_EQ(ReadPlacement(urls, "CLU").replicas, 3);

  client::JetStreamPublisher pub(PublisherOptions(urls, "CLU"));
  ASSERT_TRUE(pub.Connect()) << pub.last_error();
  for (int m = 0; m < kBeforeKill; m += 50) Publish(pub, stream, m, m + 50);
  const std::string state = dir.str() + "/state";
  auto engine = StartEngine(dir, state, urls, "CLU", "inferscope.in", "engine");
  ASSERT_TRUE(engine->WaitReady()) << engine->Log();

  // Mid-stream: a checkpoint is durable (acks reached the consumers), more is published.
  ASSERT_TRUE(
      WaitFor([&] { return ReadConsumers(urls, "CLU").acked > 0; }, std::chrono::seconds(60)))
      << engine->Log();
  // The victim: the server the engine is connected to, made leader of the stream and of every
  // partition's consumer (by asking the others to step down), so that its death cuts the engine's
  // connection, its fetches in flight and its acks, and moves every leader.
  int victim = -1;
  ASSERT_TRUE(WaitFor([&] { return (victim = EngineServer(cluster)) >= 0; }))
      << "no server reports the engine's connection";
  const std::string target = NatsCluster::Name(victim);
  EXPECT_TRUE(MoveLeader(
      urls, "$JS.API.STREAM.LEADER.STEPDOWN.CLU", [&] { return ReadPlacement(urls, "CLU").leader; },
      target, 20));
  int consumers_led = 0;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    const std::string consumer = "inferscope-p" + std::to_string(p);
    if (MoveLeader(
            urls, "$JS.API.CONSUMER.LEADER.STEPDOWN.CLU." + consumer,
            [&] { return ConsumerLeader(urls, "CLU", consumer); }, target, 20)) {
      ++consumers_led;
    }
  }
  EXPECT_EQ(consumers_led, static_cast<int>(kPartitions));
  // A spontaneous re-election on a loaded machine may have moved the stream's leader since: move
  // it back (a few times) before requiring it.
  StreamPlacement before = ReadPlacement(urls, "CLU");
  for (int i = 0; i < 3 && before.leader != target; ++i) {
    MoveLeader(
        urls, "$JS.API.STREAM.LEADER.STEPDOWN.CLU",
        [&] { return ReadPlacement(urls, "CLU").leader; }, target, 20);
    before = ReadPlacement(urls, "CLU");
  }
  ASSERT_EQ(before.leader, target);
  // The engine is paused (SIGSTOP) while the last messages before the kill are published and the
  // server dies, so that the kill certainly comes with work left (those messages pending or
  // delivered unacked), whatever the machine's load; it resumes to find its server dead.
  ASSERT_TRUE(engine->process().Pause());
  for (int m = kBeforeKill; m < kBeforeKill + 100; m += 50) Publish(pub, stream, m, m + 50);
  const Consumers at_kill = ReadConsumers(urls, "CLU");
  cluster.process(victim).Signal(SIGKILL);
  cluster.process(victim).Wait();
  engine->process().Signal(SIGCONT);

  // The rest is published through the surviving servers while the engine goes on, once they have
  // elected a new stream leader (the publisher would resend what the stream refuses meanwhile:
  // JetStreamClusterTest.PublishesRefusedDuringALeaderElectionAreResentStoredOnceAndAllApplied;
  // here the engine's failover alone is tested).
  ASSERT_TRUE(WaitFor(
      [&] {
        const StreamPlacement now = ReadPlacement(urls, "CLU");
        return !now.leader.empty() && now.leader != before.leader;
      },
      std::chrono::seconds(60)))
      << cluster.Log();
  for (int m = kBeforeKill + 100; m < kMessages; m += 50) Publish(pub, stream, m, m + 50);
  ASSERT_TRUE(WaitFor([&] { return AllAcked(urls, "CLU"); }, std::chrono::seconds(90)))
      << engine->Log() << cluster.Log();
  const StreamPlacement after = ReadPlacement(urls, "CLU");
  const std::string log = engine->Log();
  ASSERT_EQ(engine->Stop(SIGTERM), 0) << log;
  EXPECT_NE(after.leader, before.leader);
  EXPECT_FALSE(after.leader.empty());
  // The kill came with work left: messages not yet applied or not yet durable (at least those
  // published while the engine was paused).
  EXPECT_GT(at_kill.pending + at_kill.ack_pending, 0u);

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

// A message of the stream, as stored.
struct StoredMessage {
  std::string publisher;
  uint64_t seq = 0;
  std::string payload;
};

// The stream's messages of `subject`, in stream order.
std::vector<StoredMessage> StoredMessages(const std::string& urls, const std::string& stream,
                                          const std::string& subject) {
  std::vector<StoredMessage> out;
  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  if (natsConnection_ConnectTo(&conn, urls.c_str()) == NATS_OK &&
      natsConnection_JetStream(&js, conn, nullptr) == NATS_OK) {
    jsStreamInfo* info = nullptr;
    uint64_t last = 0;
    if (js_GetStreamInfo(&info, js, stream.c_str(), nullptr, nullptr) == NATS_OK) {
      last = info->State.LastSeq;
      jsStreamInfo_Destroy(info);
    }
    for (uint64_t seq = 1; seq <= last; ++seq) {
      natsMsg* msg = nullptr;
      if (js_GetMsg(&msg, js, stream.c_str(), seq, nullptr, nullptr) != NATS_OK) continue;
      if (natsMsg_GetSubject(msg) == subject) {
        Envelope envelope;
        const std::string_view payload(natsMsg_GetData(msg),
                                       static_cast<size_t>(natsMsg_GetDataLength(msg)));
        if (PeekEnvelope(payload, &envelope)) {
          out.push_back({std::string(envelope.publisher), envelope.seq, std::string(payload)});
        }
      }
      natsMsg_Destroy(msg);
    }
  }
  if (js != nullptr) jsCtx_Destroy(js);
  if (conn != nullptr) natsConnection_Destroy(conn);
  return out;
}

// The stream leader's server is SIGKILLed while a seeded sequence is published (through the two
// other servers, so that the publisher's connection survives and the stream refuses or loses the
// publishes of the election). The publisher resends them with the same Nats-Msg-Id: Flush succeeds,
// and consuming the stream finds every message of every partition stored exactly once, and every
// one applied by the engine's decoder.
TEST(JetStreamClusterTest, PublishesRefusedDuringALeaderElectionAreResentStoredOnceAndAllApplied) {
  constexpr int kMessages = 600;  // of 50 events, published as 20-event messages per partition
  constexpr int kKillAt = 150;
  TempDir dir;
  NatsCluster cluster(dir);
  ASSERT_FALSE(cluster.urls().empty()) << cluster.Log();
  const std::string urls = cluster.urls();
  std::string error;
  ASSERT_TRUE(WaitFor(
      [&] {
        return client::JetStreamPublisher::EnsureStream(urls, "RES", "inferscope.in", &error, 3);
      },
      std::chrono::seconds(60)))
      << error << cluster.Log();
  ASSERT_TRUE(WaitFor([&] { return ReadPlacement(urls, "RES").current_followers == 2; },
                      std::chrono::seconds(60)))
      << cluster.Log();
  const std::string leader = ReadPlacement(urls, "RES").leader;
  const int victim = NatsCluster::Index(leader);
  ASSERT_GE(victim, 0) << leader;
  std::string followers;
  for (int i = 0; i < NatsCluster::kServers; ++i) {
    if (i == victim) continue;
    if (!followers.empty()) followers += ",";
    followers += cluster.url(i);
  }

  const SeededStream stream(client::NowMs() - 3'600'000);
  client::JetStreamPublisherOptions o = PublisherOptions(followers, "RES");
  o.ack_timeout_ms = 2000;
  o.resend_deadline_ms = 60'000;
  client::JetStreamPublisher pub(o);
  ASSERT_TRUE(pub.Connect()) << pub.last_error();
  for (int m = 0; m < kMessages; ++m) {
    if (m == kKillAt) {
      cluster.process(victim).Signal(SIGKILL);
      cluster.process(victim).Wait();
    }
    stream.Fill(pub, m);
    if (::testing::Test::HasFatalFailure()) return;
  }
  ASSERT_TRUE(pub.Flush()) << pub.last_error() << cluster.Log();
  EXPECT_EQ(pub.failed_messages(), 0u);
  EXPECT_GT(pub.resent_messages(), 0u);  // the election refused or lost some
  EXPECT_EQ(pub.events_published(),
            static_cast<uint64_t>(kMessages) * SeededStream::kEventsPerMessage);
  const StreamPlacement after = ReadPlacement(urls, "RES");
  EXPECT_NE(after.leader, leader);

  // Every partition's messages 0..n-1, each stored once. They are in the publisher's order unless
  // a message's acknowledgement was lost while the new leader stored newer ones (the publisher's
  // documented limitation: its resend is stored after them); the engine's decoder, reading the
  // stream in order as the jetstream source does, applies such a message late, once. So every
  // message's events are applied.
  uint64_t stored = 0;
  uint64_t late = 0;
  size_t applied_events = 0;
  for (uint32_t p = 0; p < kPartitions; ++p) {
    const auto messages = StoredMessages(followers, "RES", "inferscope.in." + std::to_string(p));
    ASSERT_FALSE(messages.empty()) << p;
    std::vector<bool> seen(messages.size(), false);
    for (const StoredMessage& m : messages) {
      EXPECT_EQ(m.publisher, "seeded/p" + std::to_string(p));
      ASSERT_LT(m.seq, messages.size()) << "partition " << p << ": a message lost";
      EXPECT_FALSE(seen[m.seq]) << "partition " << p << ": message " << m.seq << " stored twice";
      seen[m.seq] = true;
    }
    Interner interner;
    MetricsRegistry metrics;
    SystemClock clock;
    WireDecoder decoder(WireDecoderOptions{}, interner, clock, &metrics, "check");
    EventBatch batch;
    for (size_t i = 0; i < messages.size(); ++i) {
      const DecodeResult r = decoder.Decode(messages[i].payload, batch);
      EXPECT_TRUE(r.applied) << "partition " << p << ", stream position " << i << ": message "
                             << messages[i].seq << " " << SequenceVerdictName(r.sequence);
    }
    applied_events += batch.events.size();
    late += decoder.late();
    stored += messages.size();
  }
  if (late > 0)
    std::printf("%llu message(s) stored after newer ones, applied late\n",
                static_cast<unsigned long long>(late));
  EXPECT_EQ(applied_events, static_cast<size_t>(kMessages) * SeededStream::kEventsPerMessage);
  EXPECT_EQ(stored, pub.messages_published());
}

}  // namespace
}  // namespace inferscope
