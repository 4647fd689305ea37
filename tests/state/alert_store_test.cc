#include "state/alert_store.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "alerting/alert_json.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

// A warning of rule `rule` on vllm-1/llama, statistic `stat` of `metric`.
Alert MakeAlert(const std::string& rule, const std::string& metric, const std::string& stat) {
  Alert a;
  a.fingerprint = AlertFingerprint(rule, "vllm-1", "llama", metric, stat);
  a.rule = rule;
  a.instance = "vllm-1";
  a.model = "llama";
  a.metric = metric;
  a.stat = stat;
  a.type = AnomalyType::kThreshold;
  a.severity = Severity::kWarning;
  return a;
}

TEST(AlertStoreTest, LatestAndHistoryRoundTrip) {
  testing::TempDir dir;
  StateStoreOptions options;
  options.path = dir.str() + "/state";
  Result<std::unique_ptr<StateStore>> store = StateStore::Open(options, nullptr);
  ASSERT_TRUE(store.ok());
  Alert a = MakeAlert("high_ttft", "ttft_ms", "p95");
  a.value = 2500;
  a.lower = std::nan("");
  a.detected_at_ms = 100;
  Alert resolved = a;
  resolved.state = AlertState::kResolved;
  resolved.detected_at_ms = 200;
  resolved.silenced = true;
  std::vector<Alert> both = {a, resolved};
  ASSERT_TRUE(StoreAlerts(**store, both).ok());
  Result<std::optional<Alert>> latest = LoadAlert(**store, a.fingerprint);
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->state, AlertState::kResolved);
  EXPECT_TRUE((*latest)->silenced);
  EXPECT_EQ((*latest)->value, 2500);
  EXPECT_TRUE(std::isnan((*latest)->lower));
  std::vector<AlertState> history;
  ASSERT_TRUE(ScanAlertHistory(**store, 0, [&](const Alert& x) {
                history.push_back(x.state);
                return true;
              }).ok());
  EXPECT_EQ(history, (std::vector<AlertState>{AlertState::kFiring, AlertState::kResolved}));
  int count = 0;
  ASSERT_TRUE(ScanAlerts(**store, [&](const Alert&) { return ++count > 0; }).ok());
  EXPECT_EQ(count, 1);
}

// A backlog (a restart catching up, a publisher resending its spool) closes many panes in one
// step: one alert can fire, resolve and fire again within a millisecond of wall-clock time. On
// main such changes had the same history key and all but the last of each state were lost.
TEST(AlertStoreTest, ChangesOfOneAlertInTheSameMillisecondAreAllKeptInOrder) {
  testing::TempDir dir;
  StateStoreOptions options;
  options.path = dir.str() + "/state";
  Result<std::unique_ptr<StateStore>> store = StateStore::Open(options, nullptr);
  ASSERT_TRUE(store.ok());
  std::vector<Alert> changes;
  for (int i = 0; i < 4; ++i) {
    Alert a = MakeAlert("kv_full", "kv_cache_usage", "max");
    a.state = i % 2 == 0 ? AlertState::kFiring : AlertState::kResolved;
    a.window_start_ms = 1'700'000'000'000 + i * 1000;
    a.window_end_ms = a.window_start_ms + 1000;
    a.detected_at_ms = 1'800'000'000'000;  // all in one millisecond
    changes.push_back(a);
  }
  ASSERT_TRUE(StoreAlerts(**store, changes).ok());
  std::vector<int64_t> history;
  ASSERT_TRUE(ScanAlertHistory(**store, 0, [&](const Alert& x) {
                history.push_back(x.window_start_ms);
                return true;
              }).ok());
  const std::vector<int64_t> want = {changes[0].window_start_ms, changes[1].window_start_ms,
                                     changes[2].window_start_ms, changes[3].window_start_ms};
  EXPECT_EQ(history, want);
  std::vector<int64_t> by_fingerprint;
  ASSERT_TRUE((*store)
                  ->ScanRecords(kAlertHistoryByFingerprintTable, "", "",
                                [&](std::string_view, std::string_view value) {
                                  Result<Alert> a =
                                      AlertFromJson(nlohmann::json::parse(value, nullptr, false));
                                  EXPECT_TRUE(a.ok());
                                  if (a.ok()) by_fingerprint.push_back(a->window_start_ms);
                                  return true;
                                })
                  .ok());
  EXPECT_EQ(by_fingerprint, want);
}

}  // namespace
}  // namespace inferscope
