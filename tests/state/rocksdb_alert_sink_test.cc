#include "state/rocksdb_alert_sink.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "state/alert_store.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

// The sink against a real StateStore in a temporary directory.
class RocksDbAlertSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StateStoreOptions options;
    options.path = dir_.str();
    Result<std::unique_ptr<StateStore>> opened = StateStore::Open(options, &metrics_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();
    ctx_.name = "alerts";
    ctx_.metrics = &metrics_;
    ctx_.clock = &clock_;
    ctx_.state = store_.get();
  }

  static Alert MakeAlert(std::string_view instance, AlertState state, int64_t detected_at_ms) {
    Alert a;
    a.rule = "high_ttft";
    a.instance = std::string(instance);
    a.model = "llama";
    a.metric = "ttft_ms";
    a.stat = "p95";
    a.fingerprint = AlertFingerprint(a.rule, a.instance, a.model, a.metric, a.stat);
    a.state = state;
    a.type = AnomalyType::kThreshold;
    a.severity = Severity::kWarning;
    a.value = 900;
    a.detected_at_ms = detected_at_ms;
    return a;
  }

  uint64_t Counter(std::string_view name) {
    return metrics_.GetCounter(name, "", {{"stage", "alerts"}})->value();
  }

  testing::TempDir dir_;
  MetricsRegistry metrics_;
  ManualClock clock_{1'000'000};
  std::unique_ptr<StateStore> store_;
  StageContext ctx_;
};

TEST_F(RocksDbAlertSinkTest, CreateTakesOnlyTheRetryOptions) {
  EXPECT_TRUE(RocksDbAlertSink::Create(ConfigNode()).ok());
  ConfigNode typo("<test>", YAML::Load("retention: 1d"), "sinks[0].options");
  EXPECT_EQ(RocksDbAlertSink::Create(typo).status().code(), Status::Code::kInvalidArgument);
  ConfigNode retry("<test>", YAML::Load("{retry_backoff: 10ms, retry_max_backoff: 1s}"),
                   "sinks[0].options");
  EXPECT_TRUE(RocksDbAlertSink::Create(retry).ok());
  ConfigNode inverted("t.yaml", YAML::Load("{retry_backoff: 1s, retry_max_backoff: 10ms}"),
                      "sinks[0].options");
  Status s = RocksDbAlertSink::Create(inverted).status();
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("t.yaml"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("retry_max_backoff"), std::string::npos) << s.ToString();
}

TEST_F(RocksDbAlertSinkTest, OpenFailsWithoutAStateStore) {
  auto sink = RocksDbAlertSink::Create(ConfigNode());
  ASSERT_TRUE(sink.ok());
  ctx_.state = nullptr;
  Status s = (*sink)->Open(ctx_);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("needs a state store"), std::string::npos) << s.ToString();
}

TEST_F(RocksDbAlertSinkTest, StoresLatestStateAndHistoryAndCountsThem) {
  auto made = RocksDbAlertSink::Create(ConfigNode());
  ASSERT_TRUE(made.ok());
  std::unique_ptr<RocksDbAlertSink> sink = std::move(made).value();
  ASSERT_TRUE(sink->Open(ctx_).ok());

  OutputBatch first;
  first.Mutable<kind::Alert>() = {MakeAlert("node-1", AlertState::kFiring, 100),
                                  MakeAlert("node-2", AlertState::kFiring, 100)};
  ASSERT_TRUE(sink->Write(first).ok());
  OutputBatch nothing;  // batches without alerts write nothing
  ASSERT_TRUE(sink->Write(nothing).ok());
  OutputBatch second;
  Alert resolved = MakeAlert("node-1", AlertState::kResolved, 200);
  resolved.silenced = true;
  second.Add<kind::Alert>(resolved);
  ASSERT_TRUE(sink->Write(second).ok());

  Result<std::optional<Alert>> latest = LoadAlert(*store_, resolved.fingerprint);
  ASSERT_TRUE(latest.ok()) << latest.status().ToString();
  ASSERT_TRUE(latest->has_value());
  EXPECT_EQ((*latest)->state, AlertState::kResolved);
  EXPECT_TRUE((*latest)->silenced) << "silenced alerts are stored, marked";

  int alerts = 0;
  ASSERT_TRUE(ScanAlerts(*store_, [&](const Alert&) {
                ++alerts;
                return true;
              }).ok());
  EXPECT_EQ(alerts, 2);
  std::vector<std::pair<std::string, AlertState>> history;
  ASSERT_TRUE(ScanAlertHistory(*store_, 0, [&](const Alert& a) {
                history.emplace_back(a.instance, a.state);
                return true;
              }).ok());
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(history.back(), std::make_pair(std::string("node-1"), AlertState::kResolved));
  EXPECT_EQ(Counter("inferscope_sink_alerts_written_total"), 3u);
  EXPECT_EQ(Counter("inferscope_sink_write_errors_total"), 0u);
}

TEST_F(RocksDbAlertSinkTest, WriteBeforeOpenIsAnError) {
  auto sink = RocksDbAlertSink::Create(ConfigNode());
  ASSERT_TRUE(sink.ok());
  OutputBatch batch;
  batch.Mutable<kind::Alert>() = {MakeAlert("node-1", AlertState::kFiring, 100)};
  EXPECT_EQ((*sink)->Write(batch).code(), Status::Code::kInternal);
}

}  // namespace
}  // namespace inferscope
