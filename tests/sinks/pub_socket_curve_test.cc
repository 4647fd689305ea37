// Streams that require keys (docs/PROTOCOL.md, "Security"): a stream sink's PUB socket as a
// CurveZMQ server. Real sockets on 127.0.0.1; the subscriber with a listed key receives, one
// without keys or with an unknown key gets nothing, and the refused key is counted.

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <string>

#include <zmq.hpp>

#include "auth/curve.h"
#include "clients/cpp/curve.h"
#include "pipeline/clock.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "sinks/pub_socket.h"
#include "sinks/zmq_alert_sink.h"
#include "sinks/zmq_pub_sink.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using testing::TempDir;
using testing::WaitFor;

CurveKeyPair NewPair() {
  Result<CurveKeyPair> pair = GenerateCurveKeyPair();
  EXPECT_TRUE(pair.ok()) << pair.status().ToString();
  return *pair;
}

TEST(PubSocketCurveTest, OnlyListedSubscribersReceive) {
  const CurveKeyPair engine = NewPair();
  const CurveKeyPair reader = NewPair();
  const CurveKeyPair stranger = NewPair();
  CurveServerOptions curve;
  curve.server_secret_key = engine.secret_key;
  curve.server_public_key = engine.public_key;
  Result<std::shared_ptr<const AuthorizedKeys>> keys =
      AuthorizedKeys::Parse(reader.public_key + "\n", "subscribers", false);
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  curve.authorized_keys = *keys;

  MetricsRegistry metrics;
  PubSocket pub;
  pub.RequireKeys(curve, &metrics, "alerts");
  ASSERT_TRUE(pub.Bind("tcp://127.0.0.1:*", 1000, "zmq_alerts").ok());

  zmq::context_t ctx(1);
  auto subscriber = [&](const CurveKeyPair* pair) {
    auto sub = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::sub);
    sub->set(zmq::sockopt::linger, 0);
    sub->set(zmq::sockopt::subscribe, "");
    if (pair != nullptr) {
      std::string error;
      EXPECT_TRUE(client::ApplyCurveClientKeys(
          *sub, client::CurveClientKeys{engine.public_key, pair->secret_key, ""}, &error))
          << error;
    }
    sub->connect(pub.endpoint());
    return sub;
  };
  auto plain = subscriber(nullptr);
  auto refused = subscriber(&stranger);
  auto admitted = subscriber(&reader);

  // Publish until the admitted subscriber has three messages (PUB/SUB joins are asynchronous).
  int received = 0;
  int sent = 0;
  ASSERT_TRUE(WaitFor([&] {
    const std::string payload = "alert-" + std::to_string(sent++);
    EXPECT_TRUE(pub.Send(zmq::str_buffer("alerts.critical"), zmq::buffer(payload)).ok());
    zmq::message_t msg;
    while (admitted->recv(msg, zmq::recv_flags::dontwait)) {
      if (!msg.more()) ++received;
    }
    return received >= 3;
  }));
  ASSERT_TRUE(WaitFor([&] {
    return metrics.CounterValue("inferscope_sink_auth_failures_total", {{"stage", "alerts"}}) >= 1;
  }));
  zmq::message_t msg;
  EXPECT_FALSE(plain->recv(msg, zmq::recv_flags::dontwait));
  EXPECT_FALSE(refused->recv(msg, zmq::recv_flags::dontwait));
  admitted.reset();
  plain.reset();
  refused.reset();
  pub.Close();
}

TEST(PubSocketCurveTest, StreamSinksTakeTheCurveOption) {
  TempDir dir;
  const CurveKeyPair engine = NewPair();
  ASSERT_TRUE(WriteCurveKeyFiles(dir.str() + "/streams", engine, false).ok());
  {
    std::ofstream out(dir.str() + "/subscribers");
    out << "# dashboards\n" << NewPair().public_key << "\n";
  }
  const std::string yaml =
      "endpoint: tcp://127.0.0.1:*\ncurve: {server_secret_key_file: " + dir.str() +
      "/streams.key, authorized_keys_file: " + dir.str() + "/subscribers}";
  Result<std::unique_ptr<ZmqPubSink>> summaries =
      ZmqPubSink::Create(ConfigNode("<test>", YAML::Load(yaml), "sinks[0].options"));
  ASSERT_TRUE(summaries.ok()) << summaries.status().ToString();
  Result<std::unique_ptr<ZmqAlertSink>> alerts =
      ZmqAlertSink::Create(ConfigNode("<test>", YAML::Load(yaml), "sinks[1].options"));
  ASSERT_TRUE(alerts.ok()) << alerts.status().ToString();

  // Open binds a CurveZMQ server (its ZAP handler starts and stops with the sink).
  Interner interner;
  MetricsRegistry metrics;
  StageContext ctx;
  ctx.name = "summaries";
  ctx.interner = &interner;
  ctx.metrics = &metrics;
  ctx.clock = &SystemClock::Instance();
  ASSERT_TRUE((*summaries)->Open(ctx).ok());
  (*summaries)->Close();

  Result<std::unique_ptr<ZmqPubSink>> missing = ZmqPubSink::Create(ConfigNode(
      "<test>",
      YAML::Load("endpoint: tcp://127.0.0.1:*\ncurve: {server_secret_key_file: " + dir.str() +
                 "/streams.key, authorized_keys_file: " + dir.str() + "/nope}"),
      "sinks[0].options"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("authorized_keys_file"), std::string::npos);
}

}  // namespace
}  // namespace inferscope
