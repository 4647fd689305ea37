// Every field of every stream message has exactly the type docs/PROTOCOL.md documents, as a strict
// decoder in another language (Go, Rust, Java) would check it: the type tables of the "Summary
// stream" and "Alert stream" sections are read from the document itself, and messages published
// by the real sinks over real ZeroMQ sockets, in msgpack and JSON, are checked against them. The
// values are chosen whole (sum 20100, rate 20, expected 1500, score 1...), the case where a lax
// encoder writes an integer for a float.

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <msgpack.hpp>
#include <nlohmann/json.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "pipeline/summary.h"
#include "sinks/zmq_alert_sink.h"
#include "sinks/zmq_pub_sink.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;

// One documented field: its type ("int", "uint", "float", "float or nil", "str", "bool") and
// whether it may be absent.
struct FieldSpec {
  std::string type;
  bool optional = false;
};
using Spec = std::map<std::string, FieldSpec>;

// The `| key | type | meaning |` table of the PROTOCOL.md section titled `section`.
Spec ReadSpec(const std::string& section) {
  const std::string doc = testing::ReadFile(testing::SourceDir() + "/docs/PROTOCOL.md");
  const size_t start = doc.find("\n## " + section + "\n");
  EXPECT_NE(start, std::string::npos) << section;
  if (start == std::string::npos) return {};
  const size_t end = doc.find("\n## ", start + 1);
  std::istringstream lines(doc.substr(start, end - start));
  Spec spec;
  std::string line;
  const std::regex key_re("`([a-z_0-9]+)`");
  while (std::getline(lines, line)) {
    if (line.rfind("| `", 0) != 0) continue;
    // | keys | type | meaning |
    const size_t c1 = line.find('|', 1);
    const size_t c2 = line.find('|', c1 + 1);
    std::string type = line.substr(c1 + 1, c2 - c1 - 1);
    type = type.substr(type.find_first_not_of(' '));
    type = type.substr(0, type.find_last_not_of(' ') + 1);
    const std::string meaning = line.substr(c2 + 1);
    const std::string keys = line.substr(1, c1 - 1);
    for (std::sregex_iterator it(keys.begin(), keys.end(), key_re), e; it != e; ++it) {
      spec[(*it)[1].str()] = {type, meaning.find("absent when") != std::string::npos};
    }
  }
  return spec;
}

const char* MsgpackTypeName(const msgpack::object& o) {
  switch (o.type) {
    case msgpack::type::NIL:
      return "nil";
    case msgpack::type::BOOLEAN:
      return "bool";
    case msgpack::type::POSITIVE_INTEGER:
      return "positive integer";
    case msgpack::type::NEGATIVE_INTEGER:
      return "negative integer";
    case msgpack::type::FLOAT32:
      return "float32";
    case msgpack::type::FLOAT64:
      return "float64";
    case msgpack::type::STR:
      return "str";
    default:
      return "other";
  }
}

// Whether `o` has the documented msgpack type: floats are float64 (never an integer, never
// float32); "uint" a non-negative integer; "int" any integer.
bool MsgpackHasType(const msgpack::object& o, const std::string& type) {
  if (type == "float") return o.type == msgpack::type::FLOAT64;
  if (type == "float or nil")
    return o.type == msgpack::type::FLOAT64 || o.type == msgpack::type::NIL;
  if (type == "int") {
    return o.type == msgpack::type::POSITIVE_INTEGER || o.type == msgpack::type::NEGATIVE_INTEGER;
  }
  if (type == "uint") return o.type == msgpack::type::POSITIVE_INTEGER;
  if (type == "str") return o.type == msgpack::type::STR;
  if (type == "bool") return o.type == msgpack::type::BOOLEAN;
  ADD_FAILURE() << "undocumented type '" << type << "' in PROTOCOL.md";
  return false;
}

// The same for JSON text: floats carry a fraction or exponent (1.0, not 1).
bool JsonHasType(const json& v, const std::string& type) {
  if (type == "float") return v.is_number_float();
  if (type == "float or nil") return v.is_number_float() || v.is_null();
  if (type == "int") return v.is_number_integer();
  if (type == "uint") return v.is_number_unsigned();
  if (type == "str") return v.is_string();
  if (type == "bool") return v.is_boolean();
  ADD_FAILURE() << "undocumented type '" << type << "' in PROTOCOL.md";
  return false;
}

void CheckMsgpack(const Spec& spec, const std::string& payload, const std::string& what) {
  SCOPED_TRACE(what);
  msgpack::object_handle handle = msgpack::unpack(payload.data(), payload.size());
  ASSERT_EQ(handle.get().type, msgpack::type::MAP);
  std::set<std::string> seen;
  for (const msgpack::object_kv& kv : handle.get().via.map) {
    ASSERT_EQ(kv.key.type, msgpack::type::STR);
    const std::string key = kv.key.as<std::string>();
    seen.insert(key);
    auto it = spec.find(key);
    if (it == spec.end()) {
      ADD_FAILURE() << "field '" << key << "' is not documented";
      continue;
    }
    EXPECT_TRUE(MsgpackHasType(kv.val, it->second.type))
        << "field '" << key << "' is documented as " << it->second.type << " but arrived as "
        << MsgpackTypeName(kv.val);
  }
  for (const auto& [key, field] : spec) {
    if (!field.optional) {
      EXPECT_TRUE(seen.count(key)) << "documented field '" << key << "' missing";
    }
  }
}

void CheckJson(const Spec& spec, const std::string& payload, const std::string& what) {
  SCOPED_TRACE(what);
  const json j = json::parse(payload, nullptr, false);
  ASSERT_TRUE(j.is_object()) << payload;
  for (const auto& [key, value] : j.items()) {
    auto it = spec.find(key);
    if (it == spec.end()) {
      ADD_FAILURE() << "field '" << key << "' is not documented";
      continue;
    }
    EXPECT_TRUE(JsonHasType(value, it->second.type))
        << "field '" << key << "' is documented as " << it->second.type << " but is "
        << value.dump();
  }
  for (const auto& [key, field] : spec) {
    if (!field.optional) {
      EXPECT_TRUE(j.contains(key)) << "documented field '" << key << "' missing";
    }
  }
}

// Publishes `batch` through `sink` to a real subscriber and returns the payloads received for the
// batch (after PUB/SUB joined, ending at the last message of the batch).
template <typename SinkT>
std::vector<std::string> PublishAndReceive(SinkT& sink, const OutputBatch& join,
                                           const OutputBatch& batch, const std::string& last_topic,
                                           const std::string& join_topic) {
  zmq::context_t ctx;
  zmq::socket_t sub(ctx, zmq::socket_type::sub);
  sub.set(zmq::sockopt::subscribe, "");
  sub.set(zmq::sockopt::rcvtimeo, 50);
  sub.connect(sink.Endpoint());
  std::vector<zmq::message_t> frames;
  EXPECT_TRUE(testing::WaitFor([&] {
    EXPECT_TRUE(sink.Write(join).ok());
    frames.clear();
    return zmq::recv_multipart(sub, std::back_inserter(frames)).has_value();
  }));
  EXPECT_TRUE(sink.Write(batch).ok());
  std::vector<std::string> payloads;
  bool done = false;
  EXPECT_TRUE(testing::WaitFor([&] {
    frames.clear();
    while (!done && zmq::recv_multipart(sub, std::back_inserter(frames))) {
      const std::string topic = frames[0].to_string();
      if (topic != join_topic) {
        payloads.push_back(frames[1].to_string());
        done = topic == last_topic;
      }
      frames.clear();
    }
    return done;
  }));
  return payloads;
}

class StreamTypesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ctx_.name = "stream";
    ctx_.interner = &interner_;
    ctx_.metrics = &metrics_;
    ctx_.clock = &clock_;
  }

  // Whole values everywhere: 1..200 ms (sum 20100), 250 requests none failed (error_ratio 0),
  // over 10 s (rate 20).
  WindowSummary WholeSummary(const std::string& instance) {
    WindowSummary s;
    s.series = {interner_.Intern(instance), interner_.Intern("llama"), interner_.Intern("e2e_ms")};
    s.start_ms = 60'000;
    s.end_ms = 70'000;
    for (int i = 1; i <= 200; ++i) s.agg.Add(i, s.start_ms + i);
    for (int i = 0; i < 250; ++i) s.agg.AddEvent(false);
    s.max_event_time_ms = s.start_ms + 200;
    return s;
  }
  // An empty pane (no values, one failed request: error_ratio 1, quantiles absent).
  WindowSummary EmptySummary(const std::string& instance) {
    WindowSummary s;
    s.series = {interner_.Intern(instance), interner_.Intern("llama"), interner_.Intern("e2e_ms")};
    s.start_ms = 0;
    s.end_ms = 1000;
    s.agg.AddEvent(true);
    return s;
  }

  std::vector<std::string> Summaries(const std::string& format) {
    auto sink = ZmqPubSink::Create(
        ConfigNode("t.yaml", YAML::Load("{endpoint: 'tcp://127.0.0.1:*', format: " + format + "}"),
                   "options"));
    EXPECT_TRUE(sink.ok());
    EXPECT_TRUE((*sink)->Open(ctx_).ok());
    OutputBatch join, batch;
    join.Add<kind::PaneSummary>(EmptySummary("join"));
    batch.Mutable<kind::PaneSummary>() = {WholeSummary("a"), EmptySummary("b"),
                                          WholeSummary("last")};
    batch.Mutable<kind::PaneSummary>()[0].update = true;
    batch.watermark_ms = 80'000;
    return PublishAndReceive(**sink, join, batch, "summaries.last.llama.", "summaries.join.llama.");
  }

  static std::vector<Alert> WholeAlerts() {
    Alert rule;  // a threshold rule: `>` 1500, so upper is nil
    rule.fingerprint = 0xabc;
    rule.state = AlertState::kFiring;
    rule.type = AnomalyType::kThreshold;
    rule.severity = Severity::kCritical;
    rule.rule = "high_e2e";
    rule.instance = "a";
    rule.model = "llama";
    rule.metric = "e2e_ms";
    rule.stat = "mean";
    rule.value = 5000;
    rule.expected = 1500;
    rule.lower = 1500;
    rule.upper = std::nan("");
    rule.score = 1;
    rule.window_start_ms = 60'000;
    rule.window_end_ms = 70'000;
    rule.event_time_ms = 69'999;
    rule.detected_at_ms = 1'700'000'000'000;
    rule.active_since_ms = 70'000;
    rule.message = "mean e2e_ms 5000 > 1500";
    Alert detector = rule;  // a detector: both bounds, whole
    detector.type = AnomalyType::kSpike;
    detector.expected = 100;
    detector.lower = 0;
    detector.upper = 200;
    detector.score = 1;
    detector.instance = "last";
    Alert resolved = rule;
    resolved.state = AlertState::kResolved;
    resolved.value = 0;
    resolved.score = 0;
    resolved.instance = "b";
    return {rule, resolved, detector};
  }

  std::vector<std::string> Alerts(const std::string& format) {
    auto sink = ZmqAlertSink::Create(
        ConfigNode("t.yaml", YAML::Load("{endpoint: 'tcp://127.0.0.1:*', format: " + format + "}"),
                   "options"));
    EXPECT_TRUE(sink.ok());
    EXPECT_TRUE((*sink)->Open(ctx_).ok());
    OutputBatch join, batch;
    join.Mutable<kind::Alert>() = {WholeAlerts()[0]};
    join.Mutable<kind::Alert>()[0].instance = "join";
    batch.Mutable<kind::Alert>() = WholeAlerts();
    return PublishAndReceive(**sink, join, batch, "alerts.critical.last.llama.",
                             "alerts.critical.join.llama.");
  }

  Interner interner_;
  MetricsRegistry metrics_;
  ManualClock clock_{1'000'000};
  StageContext ctx_;
};

TEST_F(StreamTypesTest, TheDocumentedTablesAreRead) {
  const Spec summary = ReadSpec("Summary stream");
  EXPECT_EQ(summary.size(), 24u);  // topic_seq added
  EXPECT_EQ(summary.at("error_ratio").type, "float");
  EXPECT_EQ(summary.at("count").type, "uint");
  EXPECT_TRUE(summary.at("p99").optional);
  const Spec alert = ReadSpec("Alert stream");
  EXPECT_EQ(alert.size(), 26u);  // limit added (issue 16), early (issue 15), topic_seq
  EXPECT_EQ(alert.at("upper").type, "float or nil");
  EXPECT_EQ(alert.at("score").type, "float");
}

TEST_F(StreamTypesTest, SummaryMsgpackFieldsHaveTheDocumentedTypes) {
  const Spec spec = ReadSpec("Summary stream");
  const std::vector<std::string> payloads = Summaries("msgpack");
  ASSERT_EQ(payloads.size(), 3u);
  for (size_t i = 0; i < payloads.size(); ++i) {
    CheckMsgpack(spec, payloads[i], "summary " + std::to_string(i));
  }
}

TEST_F(StreamTypesTest, SummaryJsonFieldsHaveTheDocumentedTypes) {
  const Spec spec = ReadSpec("Summary stream");
  const std::vector<std::string> payloads = Summaries("json");
  ASSERT_EQ(payloads.size(), 3u);
  for (size_t i = 0; i < payloads.size(); ++i) {
    CheckJson(spec, payloads[i], "summary " + std::to_string(i));
  }
  EXPECT_NE(payloads[0].find("\"sum\":20100.0"), std::string::npos) << payloads[0];
}

TEST_F(StreamTypesTest, AlertMsgpackFieldsHaveTheDocumentedTypes) {
  const Spec spec = ReadSpec("Alert stream");
  const std::vector<std::string> payloads = Alerts("msgpack");
  ASSERT_EQ(payloads.size(), 3u);
  for (size_t i = 0; i < payloads.size(); ++i) {
    CheckMsgpack(spec, payloads[i], "alert " + std::to_string(i));
  }
}

TEST_F(StreamTypesTest, AlertJsonFieldsHaveTheDocumentedTypes) {
  const Spec spec = ReadSpec("Alert stream");
  const std::vector<std::string> payloads = Alerts("json");
  ASSERT_EQ(payloads.size(), 3u);
  for (size_t i = 0; i < payloads.size(); ++i) {
    CheckJson(spec, payloads[i], "alert " + std::to_string(i));
  }
}

}  // namespace
}  // namespace inferscope
