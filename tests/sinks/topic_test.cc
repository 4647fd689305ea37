// Topics of the stream sinks (docs/PROTOCOL.md, "Topics"): escaping, the clients' prefix helpers,
// and real subscribers to real sinks that must get exactly the names they subscribed to.

#include "sinks/topic.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <msgpack.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "clients/cpp/topics.h"
#include "pipeline/summary.h"
#include "sinks/zmq_alert_sink.h"
#include "sinks/zmq_pub_sink.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

TEST(TopicTest, EscapesDotsPercentAndBytesOutsidePrintableAscii) {
  EXPECT_EQ(EscapeTopicName("vllm-1"), "vllm-1");
  EXPECT_EQ(EscapeTopicName("llama-3.1-8b"), "llama-3%2E1-8b");
  EXPECT_EQ(EscapeTopicName("10.0.0.5"), "10%2E0%2E0%2E5");
  EXPECT_EQ(EscapeTopicName("50%"), "50%25");
  EXPECT_EQ(EscapeTopicName("a b\t"), "a%20b%09");
  EXPECT_EQ(EscapeTopicName("n\xc5\x93ud"), "n%C5%93ud");
  EXPECT_EQ(EscapeTopicName(std::string("\x00\x7f", 2)), "%00%7F");
  EXPECT_EQ(EscapeTopicName("meta-llama/Llama-3:8b_x~y"), "meta-llama/Llama-3:8b_x~y");
  std::string topic = "summaries.";
  AppendTopicSegment(topic, "vllm-1.eu");
  AppendTopicSegment(topic, "llama-3.1-8b");
  EXPECT_EQ(topic, "summaries.vllm-1%2Eeu.llama-3%2E1-8b.");
  EXPECT_EQ(SplitTopic(topic),
            (std::vector<std::string>{"summaries", "vllm-1.eu", "llama-3.1-8b"}));

  EXPECT_EQ(UnescapeTopicName("a%2eb"), "a.b");  // either case
  EXPECT_EQ(UnescapeTopicName("a.b"), std::nullopt);
  EXPECT_EQ(UnescapeTopicName("a%2"), std::nullopt);
  EXPECT_EQ(UnescapeTopicName("a%zz"), std::nullopt);
  EXPECT_EQ(SplitTopic("summaries.a.b"), std::nullopt);  // no terminating dot
  EXPECT_EQ(client::ParseTopic("summaries.a%2"), std::nullopt);
  EXPECT_EQ(client::ParseTopic("summaries.a.b.c."), std::nullopt);  // one name too many
  EXPECT_EQ(client::ParseTopic("metrics.a.b."), std::nullopt);
}

// Any byte string round-trips, the engine and the C++ client escape alike, and a segment never
// holds a raw dot.
TEST(TopicTest, RandomNamesRoundTripAndTheClientAgrees) {
  std::mt19937_64 rng(5);
  for (int i = 0; i < 20000; ++i) {
    std::string name(1 + rng() % 20, '\0');
    for (char& c : name) c = static_cast<char>(rng() % 4 == 0 ? '.' : rng() % 256);
    const std::string escaped = EscapeTopicName(name);
    ASSERT_EQ(escaped.find('.'), std::string::npos);
    ASSERT_EQ(client::EscapeTopicName(name), escaped);
    ASSERT_EQ(UnescapeTopicName(escaped), name);
    ASSERT_EQ(client::UnescapeTopicName(escaped), name);
  }
}

TEST(TopicTest, ClientPrefixes) {
  EXPECT_EQ(client::SummaryTopicPrefix(), "summaries.");
  EXPECT_EQ(client::SummaryTopicPrefix("vllm-1"), "summaries.vllm-1.");
  EXPECT_EQ(client::SummaryTopicPrefix("10.0.0.5", "llama-3.1-8b"),
            "summaries.10%2E0%2E0%2E5.llama-3%2E1-8b.");
  EXPECT_EQ(client::SummaryTopicPrefix("", "ignored"), "summaries.");
  EXPECT_EQ(client::AlertTopicPrefix(), "alerts.");
  EXPECT_EQ(client::AlertTopicPrefix("critical"), "alerts.critical.");
  EXPECT_EQ(client::AlertTopicPrefix("warning", "vllm-1.eu"), "alerts.warning.vllm-1%2Eeu.");
  EXPECT_EQ(client::AlertTopicPrefix("warning", "a", "50%"), "alerts.warning.a.50%25.");
  EXPECT_EQ(client::ParseTopic("alerts.warning.a.50%25."),
            (std::vector<std::string>{"alerts", "warning", "a", "50%"}));
}

// Names that collide under a naive dotted topic: the prefix of each must select it alone.
const std::vector<std::string> kInstances = {"vllm-1",   "vllm-1.eu", "vllm-1%2Eeu",
                                             "10.0.0.5", "10",        "n\xc5\x93ud"};
const std::vector<std::string> kModels = {"llama-3.1-8b", "llama-3", "m%"};

// One subscriber per prefix; received topics, decoded from the payload's names.
class Subscribers {
 public:
  Subscribers(zmq::context_t& ctx, const std::string& endpoint,
              const std::vector<std::string>& prefixes, const std::string& probe_prefix)
      : probe_prefix_(probe_prefix) {
    for (const std::string& prefix : prefixes) {
      auto& sub = subs_.emplace_back(ctx, zmq::socket_type::sub);
      sub.set(zmq::sockopt::subscribe, prefix);
      sub.set(zmq::sockopt::subscribe, probe_prefix);
      sub.set(zmq::sockopt::rcvtimeo, 50);
      sub.connect(endpoint);
    }
    received_.resize(prefixes.size());
  }

  // Publishes probes until every subscriber has one (its subscriptions reached the PUB socket).
  bool Join(const std::function<void()>& publish_probe) {
    std::vector<bool> joined(subs_.size(), false);
    return testing::WaitFor([&] {
      publish_probe();
      bool all = true;
      for (size_t i = 0; i < subs_.size(); ++i) {
        std::vector<zmq::message_t> frames;
        while (!joined[i] && zmq::recv_multipart(subs_[i], std::back_inserter(frames))) {
          joined[i] = true;
        }
        all = all && joined[i];
      }
      return all;
    });
  }

  // Receives, per subscriber, everything up to the probe `end_marker` (messages from one PUB
  // socket arrive in order, so after it nothing published before is still on its way).
  bool ReceiveUntil(const std::string& end_marker) {
    for (size_t i = 0; i < subs_.size(); ++i) {
      received_[i].clear();
      bool done = false;
      if (!testing::WaitFor([&] {
            std::vector<zmq::message_t> frames;
            while (!done && zmq::recv_multipart(subs_[i], std::back_inserter(frames))) {
              const std::string topic = frames[0].to_string();
              frames.clear();
              if (topic == end_marker) {
                done = true;
              } else if (topic.rfind(probe_prefix_, 0) != 0) {
                received_[i].push_back(topic);
              }
            }
            return done;
          })) {
        return false;
      }
    }
    return true;
  }
  const std::vector<std::string>& received(size_t i) const { return received_[i]; }

 private:
  std::string probe_prefix_;
  std::vector<zmq::socket_t> subs_;
  std::vector<std::vector<std::string>> received_;
};

TEST(TopicTest, SummarySubscribersGetExactlyTheirInstanceAndModel) {
  Interner interner;
  MetricsRegistry metrics;
  ManualClock clock(0);
  StageContext ctx;
  ctx.name = "summaries";
  ctx.interner = &interner;
  ctx.metrics = &metrics;
  ctx.clock = &clock;
  auto sink = ZmqPubSink::Create(
      ConfigNode("t.yaml", YAML::Load("endpoint: tcp://127.0.0.1:*"), "options"));
  ASSERT_TRUE(sink.ok());
  ASSERT_TRUE((*sink)->Open(ctx).ok());

  auto summary = [&](const std::string& instance, const std::string& model) {
    WindowSummary s;
    s.series = {interner.Intern(instance), interner.Intern(model), interner.Intern("ttft_ms")};
    s.start_ms = 0;
    s.end_ms = 1000;
    s.agg.Add(1, 1);
    return s;
  };
  // Subscribers: one per instance, one per (instance, model), and the literal prefix a user
  // would have written before topics were escaped.
  std::vector<std::string> prefixes;
  std::vector<std::pair<std::string, std::string>> wanted;  // instance, model ("" = any)
  for (const std::string& i : kInstances) {
    prefixes.push_back(client::SummaryTopicPrefix(i));
    wanted.emplace_back(i, "");
    for (const std::string& m : kModels) {
      prefixes.push_back(client::SummaryTopicPrefix(i, m));
      wanted.emplace_back(i, m);
    }
  }
  prefixes.push_back("summaries.vllm-1.");
  wanted.emplace_back("vllm-1", "");

  zmq::context_t zctx;
  Subscribers subs(zctx, (*sink)->Endpoint(), prefixes, "summaries.probe.");
  OutputBatch probe;
  probe.Add<kind::PaneSummary>(summary("probe", "join"));
  ASSERT_TRUE(subs.Join([&] { ASSERT_TRUE((*sink)->Write(probe).ok()); }));

  OutputBatch batch;
  for (const std::string& i : kInstances) {
    for (const std::string& m : kModels) batch.Add<kind::PaneSummary>(summary(i, m));
  }
  batch.Add<kind::PaneSummary>(summary("probe", "end"));
  ASSERT_TRUE((*sink)->Write(batch).ok());
  ASSERT_TRUE(subs.ReceiveUntil("summaries.probe.end."));

  for (size_t s = 0; s < prefixes.size(); ++s) {
    SCOPED_TRACE("prefix " + prefixes[s]);
    std::multiset<std::pair<std::string, std::string>> got, want;
    for (const std::string& topic : subs.received(s)) {
      std::optional<std::vector<std::string>> names = client::ParseTopic(topic);
      ASSERT_TRUE(names.has_value()) << topic;
      ASSERT_EQ(names->size(), 3u);
      got.emplace((*names)[1], (*names)[2]);
    }
    for (const std::string& m : kModels) {
      if (wanted[s].second.empty() || wanted[s].second == m) want.emplace(wanted[s].first, m);
    }
    EXPECT_EQ(got, want);
  }
}

TEST(TopicTest, AlertSubscribersGetExactlyTheirSeverityInstanceAndModel) {
  MetricsRegistry metrics;
  StageContext ctx;
  ctx.name = "alerts";
  ctx.metrics = &metrics;
  auto sink = ZmqAlertSink::Create(
      ConfigNode("t.yaml", YAML::Load("endpoint: tcp://127.0.0.1:*"), "options"));
  ASSERT_TRUE(sink.ok());
  ASSERT_TRUE((*sink)->Open(ctx).ok());

  auto alert = [](const std::string& instance, const std::string& model) {
    Alert a;
    a.severity = Severity::kCritical;
    a.type = AnomalyType::kThreshold;
    a.instance = instance;
    a.model = model;
    a.metric = "ttft_ms";
    a.stat = "p95";
    return a;
  };
  std::vector<std::string> prefixes = {
      client::AlertTopicPrefix("critical", "vllm-1"),
      client::AlertTopicPrefix("critical", "vllm-1.eu", "llama-3.1-8b"),
      client::AlertTopicPrefix("critical", "10"),
      "alerts.critical.vllm-1.",
  };
  zmq::context_t zctx;
  Subscribers subs(zctx, (*sink)->Endpoint(), prefixes, "alerts.info.");
  OutputBatch probe;
  probe.Add<kind::Alert>(alert("probe", "join"));
  probe.Mutable<kind::Alert>().back().severity = Severity::kInfo;
  ASSERT_TRUE(subs.Join([&] { ASSERT_TRUE((*sink)->Write(probe).ok()); }));

  OutputBatch batch;
  for (const std::string& i : kInstances) {
    for (const std::string& m : kModels) batch.Add<kind::Alert>(alert(i, m));
  }
  batch.Add<kind::Alert>(alert("end", "end"));
  batch.Mutable<kind::Alert>().back().severity = Severity::kInfo;
  ASSERT_TRUE((*sink)->Write(batch).ok());
  ASSERT_TRUE(subs.ReceiveUntil("alerts.info.end.end."));

  auto instances_of = [&](size_t s) {
    std::multiset<std::string> out;
    for (const std::string& topic : subs.received(s)) {
      std::optional<std::vector<std::string>> names = client::ParseTopic(topic);
      EXPECT_TRUE(names.has_value()) << topic;
      if (names) out.insert((*names)[2] + "/" + (*names)[3]);
    }
    return out;
  };
  const std::multiset<std::string> vllm1 = {"vllm-1/llama-3.1-8b", "vllm-1/llama-3", "vllm-1/m%"};
  EXPECT_EQ(instances_of(0), vllm1);
  EXPECT_EQ(instances_of(1), std::multiset<std::string>{"vllm-1.eu/llama-3.1-8b"});
  EXPECT_EQ(instances_of(2),
            (std::multiset<std::string>{"10/llama-3.1-8b", "10/llama-3", "10/m%"}));
  EXPECT_EQ(instances_of(3), vllm1);
}

}  // namespace
}  // namespace inferscope
