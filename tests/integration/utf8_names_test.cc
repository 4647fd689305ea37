// Names that are not UTF-8, end to end: `inferscope run` as a subprocess (real ZeroMQ source,
// RocksDB state, threshold rules, stream sinks, HTTP API) receives messages that mix good events
// with events whose instance, model, gauge name or error kind is not UTF-8, on every path an event
// can take — on time, late within the allowed lateness, a dead letter beyond it, a series whose
// rule fires (checkpointed) — and a message whose publisher id is not UTF-8. Before names were
// validated, the dead letter (or the alert checkpoint) threw from nlohmann-json on a pipeline
// thread and the engine died (type_error.316). The engine must survive, count each rejection and
// keep every good event.

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "clients/cpp/publisher.h"
#include "tests/integration/engine_fixture.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using nlohmann::json;
using testing::EngineProcess;
using testing::ReadFile;
using testing::Substitute;
using testing::TempDir;
using testing::WaitFor;

constexpr char kTopology[] = R"(name: utf8-names
state:
  path: STATE
query:
  listen: 127.0.0.1:0
sources:
  - name: ingest
    type: zmq
    options:
      endpoint: tcp://127.0.0.1:*
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options: {pane: 1s, out_of_orderness: 0s, idle_timeout: 0s, allowed_lateness: 2s}
  - name: rules
    type: threshold_rules
    inputs: [windows]
    options:
      rules:
        - name: high_e2e
          metric: e2e_ms
          stat: mean
          window: 1s
          op: ">"
          levels: {critical: 1000}
          min_count: 1
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
  - name: alert_store
    type: rocksdb_alerts
    inputs: [rules]
  - name: summaries
    type: zmq_pub
    inputs: [windows]
    options:
      endpoint: tcp://127.0.0.1:*
  - name: alerts
    type: zmq_alerts
    inputs: [rules]
    options:
      endpoint: tcp://127.0.0.1:*
)";

// The sum of the samples of `name` whose labels include every `key="value"` of `labels`, in a
// Prometheus text exposition; -1 when there is none.
double Metric(const std::string& text, const std::string& name,
              const std::map<std::string, std::string>& labels = {}) {
  std::istringstream lines(text);
  std::string line;
  double sum = -1;
  while (std::getline(lines, line)) {
    if (line.rfind(name, 0) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != '{' && next != ' ') continue;
    bool match = true;
    for (const auto& [k, v] : labels) {
      match = match && line.find(k + "=\"" + v + "\"") != std::string::npos;
    }
    if (!match) continue;
    sum = std::max(sum, 0.0) + std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

client::RequestOutcome Request(std::string_view instance, std::string_view model, double e2e_ms,
                               int64_t time_ms, std::string_view error = {}) {
  client::RequestOutcome r;
  r.instance = instance;
  r.model = model;
  r.e2e_ms = e2e_ms;
  r.time_ms = time_ms;
  r.error = error;
  return r;
}

class Utf8NamesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    engine_ = std::make_unique<EngineProcess>(
        dir_, Substitute(kTopology, {{"STATE", dir_.str() + "/state"}}));
    ASSERT_TRUE(engine_->WaitReady()) << engine_->Log();
    info_ = engine_->info();
    http_ = &engine_->http();
  }

  std::string Metrics() {
    auto res = http_->Get("/metrics");
    return res && res->status == 200 ? res->body : std::string();
  }

  // Waits until `done(metrics text)` holds; false as soon as the engine has died (or on timeout).
  bool WaitForMetrics(const std::function<bool(const std::string&)>& done) {
    bool ok = false;
    WaitFor([&] {
      if (!engine_->process().Running()) return true;
      ok = done(Metrics());
      return ok;
    });
    return ok;
  }

  // Sends good events for instance "good" and, in the same message, one bad event per name field,
  // all at `t`. The bad ones must be rejected one by one; the good ones kept.
  void SendMixed(client::Publisher& pub, int64_t t, double e2e) {
    ASSERT_TRUE(pub.Request(Request("good", "m1", e2e, t)));
    ASSERT_TRUE(pub.Gauge("good", "m1", "kv", 0.5, t));
    // Not UTF-8: instance (a lone 0xFF), model (a truncated sequence), gauge name (a surrogate),
    // error kind (a stray continuation byte). The instance one would fire the rule.
    ASSERT_TRUE(pub.Request(Request("bad-\xff", "m1", 5000, t)));
    ASSERT_TRUE(pub.Request(Request("good", "m-\xc3", 5000, t)));
    ASSERT_TRUE(pub.Gauge("good", "m1", "kv-\xed\xa0\x80", 0.5, t));
    ASSERT_TRUE(pub.Request(Request("good", "m1", 5000, t, "time\x80out")));
    ASSERT_TRUE(pub.Flush()) << pub.last_error();
    good_events_ += 2;
    bad_events_ += 4;
  }

  TempDir dir_;
  json info_;
  std::unique_ptr<EngineProcess> engine_;
  httplib::Client* http_ = nullptr;
  int good_events_ = 0;
  int bad_events_ = 0;
};

TEST_F(Utf8NamesTest, EngineSurvivesInvalidUtf8OnEveryPathAndKeepsTheRest) {
  client::PublisherOptions options;
  options.endpoint = info_["endpoints"]["ingest"].get<std::string>();
  options.publisher_id = "utf8-pub";
  options.batch_size = 1000;  // one message per SendMixed
  client::Publisher pub(options);
  ASSERT_TRUE(pub.Connect());
  options.publisher_id = "pub-\xc0\xaf";  // an overlong '/': not UTF-8
  client::Publisher bad_pub(options);
  ASSERT_TRUE(bad_pub.Connect());

  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const int64_t t0 = (now - 60'000) / 1000 * 1000;  // pane-aligned, well inside max_past
  auto watermark_at_least = [&](int64_t ms) {
    return [=](const std::string& m) {
      return Metric(m, "inferscope_window_watermark_seconds") >= static_cast<double>(ms) / 1000;
    };
  };

  // On time: pane [t0, t0+1s); "good" will fire the rule (mean 5000 > 1000).
  SendMixed(pub, t0 + 100, 5000);
  // Pushes the watermark to t0+5s: panes up to t0+5s close, the rule fires for "good".
  SendMixed(pub, t0 + 5000, 10);
  ASSERT_TRUE(WaitForMetrics(watermark_at_least(t0 + 5000))) << engine_->Log();
  // Late, within the allowed lateness: pane [t0+3s, t0+4s) closed, kept until t0+6s.
  SendMixed(pub, t0 + 3500, 10);
  ASSERT_TRUE(WaitForMetrics([](const std::string& m) {
    return Metric(m, "inferscope_window_late_events_total") >= 2;
  })) << engine_->Log();
  // Beyond the allowed lateness: pane [t0+1s, t0+2s) is gone; dead letters.
  SendMixed(pub, t0 + 1500, 10);
  // A publisher id that is not UTF-8: the whole message is rejected.
  ASSERT_TRUE(bad_pub.Request(Request("good", "m1", 1, t0 + 5000)));
  ASSERT_TRUE(bad_pub.Flush());
  // Closes the panes up to t0+20s.
  SendMixed(pub, t0 + 20'000, 10);

  ASSERT_TRUE(WaitForMetrics([&](const std::string& m) {
    return watermark_at_least(t0 + 20'000)(m) &&
           Metric(m, "inferscope_sink_dead_letters_written_total") >= 2 &&
           Metric(m, "inferscope_source_rejected_total", {{"reason", "bad_envelope"}}) >= 1 &&
           Metric(m, "inferscope_sink_results_total",
                  {{"stage", "alert_store"}, {"kind", "alert"}}) >= 1;
  })) << "the engine "
      << (engine_->process().Running() ? "is running" : "died") << "\n"
      << engine_->Log();

  // A checkpoint after the alert fired (it holds the alert's lifecycle state, names included).
  const double checkpoints = Metric(Metrics(), "inferscope_checkpoints_total");
  ASSERT_TRUE(WaitForMetrics([&](const std::string& m) {
    return Metric(m, "inferscope_checkpoints_total") > checkpoints;
  })) << engine_->Log();
  ASSERT_TRUE(engine_->process().Running()) << engine_->Log();

  // Every rejection counted, by reason and by publisher; every good event kept.
  const std::string m = Metrics();
  EXPECT_EQ(Metric(m, "inferscope_source_rejected_total", {{"reason", "invalid_utf8"}}),
            bad_events_);
  EXPECT_EQ(Metric(m, "inferscope_source_rejected_by_publisher_total", {{"publisher", "utf8-pub"}}),
            bad_events_);
  EXPECT_EQ(Metric(m, "inferscope_source_rejected_total", {{"reason", "bad_envelope"}}), 1);
  EXPECT_EQ(Metric(m, "inferscope_source_events_total"), good_events_);
  EXPECT_EQ(Metric(m, "inferscope_sink_dead_letters_written_total"), 2);  // good request + gauge
  EXPECT_EQ(Metric(m, "inferscope_sink_write_errors_total"), 0) << "no sink failed";

  // The good series' panes, the on-time, the late and the last one, each with its one request.
  json summary;
  ASSERT_TRUE(WaitFor([&] {
    auto res = http_->Get("/v1/instances/good/summary?model=m1&metric=e2e_ms&window=1s&from=" +
                          std::to_string(t0) + "&to=" + std::to_string(t0 + 20'000));
    if (!res || res->status != 200) return false;
    summary = json::parse(res->body, nullptr, false);
    return summary.is_object() && summary["windows"].is_array() && summary["windows"].size() >= 3;
  })) << summary.dump();
  std::map<int64_t, int64_t> counts;  // pane start → count
  for (const json& w : summary["windows"]) {
    if (w["count"].get<int64_t>() > 0) counts[w["start"].get<int64_t>() - t0] = w["count"];
  }
  EXPECT_EQ(counts, (std::map<int64_t, int64_t>{{0, 1}, {3000, 1}, {5000, 1}})) << summary.dump();

  // The alert of the good series fired and is stored; no other instance exists anywhere.
  json list;
  ASSERT_TRUE(WaitFor([&] {
    auto alerts = http_->Get("/v1/alerts");
    list = alerts ? json::parse(alerts->body, nullptr, false) : json();
    return list.is_object() && list["alerts"].is_array() && !list["alerts"].empty();
  })) << list.dump();
  ASSERT_EQ(list["alerts"].size(), 1u) << list.dump();
  EXPECT_EQ(list["alerts"][0]["instance"], "good");
  auto instances = http_->Get("/v1/instances");
  ASSERT_TRUE(instances);
  EXPECT_NE(instances->body.find("\"good\""), std::string::npos) << instances->body;
  EXPECT_EQ(instances->body.find("bad"), std::string::npos) << instances->body;
  EXPECT_EQ(instances->body.find("\\ufffd"), std::string::npos) << instances->body;
  EXPECT_EQ(instances->body.find("\xef\xbf\xbd"), std::string::npos) << instances->body;

  // And it stops cleanly.
  EXPECT_EQ(engine_->Stop(), 0) << engine_->Log();
}

}  // namespace
}  // namespace inferscope
