// `inferscope bridge` as a subprocess between a ZeroMQ PUSH publisher and a real nats-server: every
// protocol message arrives in the stream byte for byte, in order per publisher, on the partition of
// its publisher id; a message that is not [topic, protocol payload] is skipped and counted.

#include <gtest/gtest.h>
#include <nats/nats.h>
#include <signal.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "clients/cpp/jetstream_publisher.h"
#include "clients/cpp/nats_pull.h"
#include "clients/cpp/publisher.h"
#include "sources/partition.h"
#include "tests/nats_server.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using testing::NatsServer;
using testing::ReadFile;
using testing::Subprocess;
using testing::TempDir;
using testing::WaitFor;

uint64_t StreamMessages(jsCtx* js, const char* stream) {
  jsStreamInfo* info = nullptr;
  if (js_GetStreamInfo(&info, js, stream, nullptr, nullptr) != NATS_OK) return 0;
  const uint64_t n = info->State.Msgs;
  jsStreamInfo_Destroy(info);
  return n;
}

TEST(JetStreamBridgeTest, ForwardsEachMessageWholeToThePartitionOfItsPublisher) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_FALSE(server.url().empty()) << server.Log();
  std::string error;
  ASSERT_TRUE(
      client::JetStreamPublisher::EnsureStream(server.url(), "BRIDGE", "inferscope.in", &error))
      << error;
  const std::string ready = dir.str() + "/bridge.ready.json";
  const std::string log = dir.str() + "/bridge.log";
  Subprocess bridge({testing::InferscopeBinary(), "bridge", "--zmq-bind", "tcp://127.0.0.1:*",
                     "--nats", server.url(), "--stream", "BRIDGE", "--partitions", "2",
                     "--max-in-flight", "4", "--ready-file", ready},
                    log);
  ASSERT_TRUE(WaitFor([&] { return !ReadFile(ready).empty() || !bridge.Running(); }));
  const nlohmann::json info = nlohmann::json::parse(ReadFile(ready), nullptr, false);
  ASSERT_TRUE(info.is_object()) << ReadFile(log);
  const std::string endpoint = info["endpoint"].get<std::string>();

  // 2 publishers x 10 messages of 5 events, interleaved, and one message that is not protocol.
  std::map<std::string, std::vector<std::string>> sent;
  {
    zmq::context_t ctx(1);
    zmq::socket_t push(ctx, zmq::socket_type::push);
    push.set(zmq::sockopt::linger, 5000);
    push.connect(endpoint);
    client::BatchEncoder alpha("alpha");
    client::BatchEncoder gamma("gamma");
    for (int m = 0; m < 10; ++m) {
      for (client::BatchEncoder* e : {&alpha, &gamma}) {
        for (int i = 0; i < 5; ++i) {
          client::RequestOutcome r;
          r.instance = "gpu-" + std::to_string(i);
          r.model = "llama";
          r.e2e_ms = 100 + m * 5 + i;
          e->AddRequest(r);
        }
        const std::string payload(e->Finish());
        sent[e->publisher_id()].push_back(payload);
        push.send(zmq::buffer(std::string_view("metrics")), zmq::send_flags::sndmore);
        push.send(zmq::buffer(payload), zmq::send_flags::none);
      }
      if (m == 4) {
        push.send(zmq::buffer(std::string_view("metrics")), zmq::send_flags::sndmore);
        push.send(zmq::buffer(std::string_view("not msgpack")), zmq::send_flags::none);
      }
    }
  }
  ASSERT_NE(PartitionOf("alpha", 2), PartitionOf("gamma", 2)) << "pick ids on both partitions";

  natsConnection* conn = nullptr;
  jsCtx* js = nullptr;
  ASSERT_EQ(natsConnection_ConnectTo(&conn, server.url().c_str()), NATS_OK);
  ASSERT_EQ(natsConnection_JetStream(&js, conn, nullptr), NATS_OK);
  EXPECT_TRUE(WaitFor([&] { return StreamMessages(js, "BRIDGE") == 20; }))
      << StreamMessages(js, "BRIDGE") << "\n"
      << ReadFile(log);

  // Read the stream back in order: per publisher, the payloads as sent, each on its partition.
  natsSubscription* sub = nullptr;
  ASSERT_EQ(js_PullSubscribe(&sub, js, "inferscope.in.*", nullptr, nullptr, nullptr, nullptr),
            NATS_OK);
  client::PullFetcher fetcher;
  ASSERT_EQ(fetcher.Open(conn, sub), NATS_OK);
  std::map<std::string, std::vector<std::string>> got;
  std::map<std::string, std::string> subject_of;
  WaitFor([&] {
    client::PulledMsgs list;
    if (fetcher.Fetch(&list, 32, 200) == NATS_OK) {
      for (int i = 0; i < list.Count(); ++i) {
        const std::string payload(natsMsg_GetData(list[i]),
                                  static_cast<size_t>(natsMsg_GetDataLength(list[i])));
        const auto& a = sent["alpha"];
        const std::string publisher =
            std::find(a.begin(), a.end(), payload) != a.end() ? "alpha" : "gamma";
        got[publisher].push_back(payload);
        subject_of[publisher] = natsMsg_GetSubject(list[i]);
        natsConnection_PublishString(conn, natsMsg_GetReply(list[i]), "+ACK");
      }
    }
    return got["alpha"].size() + got["gamma"].size() >= 20;
  });
  EXPECT_EQ(got, sent);
  EXPECT_EQ(subject_of["alpha"], "inferscope.in." + std::to_string(PartitionOf("alpha", 2)));
  EXPECT_EQ(subject_of["gamma"], "inferscope.in." + std::to_string(PartitionOf("gamma", 2)));
  fetcher.Close();
  natsSubscription_Destroy(sub);
  jsCtx_Destroy(js);
  natsConnection_Destroy(conn);

  bridge.Signal(SIGTERM);
  EXPECT_EQ(bridge.Wait(), 0) << ReadFile(log);
  const std::string text = ReadFile(log);
  EXPECT_NE(text.find("20 messages forwarded"), std::string::npos) << text;
  EXPECT_NE(text.find("1 skipped"), std::string::npos) << text;
}

TEST(JetStreamBridgeTest, PublishesTheStreamRefusesAreLoggedWhileRunningAndExitOne) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_FALSE(server.url().empty()) << server.Log();
  {
    // A stream that holds 3 messages and refuses more (discard new).
    natsConnection* conn = nullptr;
    jsCtx* js = nullptr;
    ASSERT_EQ(natsConnection_ConnectTo(&conn, server.url().c_str()), NATS_OK);
    ASSERT_EQ(natsConnection_JetStream(&js, conn, nullptr), NATS_OK);
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = "FULL";
    const char* subjects[] = {"inferscope.in.*"};
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.MaxMsgs = 3;
    sc.Discard = js_DiscardNew;
    jsStreamInfo* si = nullptr;
    ASSERT_EQ(js_AddStream(&si, js, &sc, nullptr, nullptr), NATS_OK);
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(conn);
  }
  const std::string ready = dir.str() + "/bridge.ready.json";
  const std::string log = dir.str() + "/bridge.log";
  Subprocess bridge(
      {testing::InferscopeBinary(), "bridge", "--zmq-bind", "tcp://127.0.0.1:*", "--nats",
       server.url(), "--stream", "FULL", "--partitions", "1", "--ready-file", ready},
      log);
  ASSERT_TRUE(WaitFor([&] { return !ReadFile(ready).empty() || !bridge.Running(); }));
  const nlohmann::json info = nlohmann::json::parse(ReadFile(ready), nullptr, false);
  ASSERT_TRUE(info.is_object()) << ReadFile(log);
  {
    zmq::context_t ctx(1);
    zmq::socket_t push(ctx, zmq::socket_type::push);
    push.set(zmq::sockopt::linger, 5000);
    push.connect(info["endpoint"].get<std::string>());
    client::BatchEncoder alpha("alpha");
    for (int m = 0; m < 6; ++m) {
      client::RequestOutcome r;
      r.instance = "gpu-0";
      r.model = "llama";
      r.e2e_ms = 100 + m;
      alpha.AddRequest(r);
      const std::string payload(alpha.Finish());
      push.send(zmq::buffer(std::string_view("metrics")), zmq::send_flags::sndmore);
      push.send(zmq::buffer(payload), zmq::send_flags::none);
    }
  }
  // Reported while the bridge runs, not only at its final flush.
  EXPECT_TRUE(WaitFor([&] {
    return ReadFile(log).find("publishes to stream FULL failed so far") != std::string::npos;
  })) << ReadFile(log);
  EXPECT_TRUE(bridge.Running());
  bridge.Signal(SIGTERM);
  EXPECT_EQ(bridge.Wait(), 1) << ReadFile(log);
  EXPECT_NE(ReadFile(log).find("3 publishes failed"), std::string::npos) << ReadFile(log);
}

TEST(JetStreamBridgeTest, CreateStreamReplicasMismatchIsAClearError) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_FALSE(server.url().empty()) << server.Log();
  std::string error;
  ASSERT_TRUE(client::JetStreamPublisher::EnsureStream(server.url(), "R1", "inferscope.in", &error))
      << error;
  const std::string log = dir.str() + "/bridge.log";
  Subprocess bridge(
      {testing::InferscopeBinary(), "bridge", "--zmq-bind", "tcp://127.0.0.1:*", "--nats",
       server.url(), "--stream", "R1", "--create-stream", "--replicas", "3"},
      log);
  EXPECT_EQ(bridge.Wait(), 1) << ReadFile(log);
  EXPECT_NE(ReadFile(log).find("stream R1 exists with 1 replica(s), not the 3 asked for"),
            std::string::npos)
      << ReadFile(log);
}

TEST(JetStreamBridgeTest, MissingStreamIsAClearError) {
  TempDir dir;
  NatsServer server(dir);
  ASSERT_FALSE(server.url().empty()) << server.Log();
  const std::string log = dir.str() + "/bridge.log";
  Subprocess bridge({testing::InferscopeBinary(), "bridge", "--zmq-bind", "tcp://127.0.0.1:*",
                     "--nats", server.url(), "--stream", "NOPE"},
                    log);
  EXPECT_EQ(bridge.Wait(), 1);
  EXPECT_NE(ReadFile(log).find("--create-stream"), std::string::npos) << ReadFile(log);
}

}  // namespace
}  // namespace inferscope
