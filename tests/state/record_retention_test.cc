// Retention of time-keyed record tables (state/record_table.h): dead letters and alert history
// expire after their retention; an expiring alert change takes its by-fingerprint copy and a
// long-resolved alert with it, never an alert that is still firing or changed since.

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "alerting/alert_json.h"
#include "pipeline/clock.h"
#include "pipeline/coding.h"
#include "pipeline/json_text.h"
#include "state/alert_store.h"
#include "state/rocksdb_state_sink.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

constexpr int64_t kDay = 24LL * 3600 * 1000;
constexpr int64_t kStart = 1'700'000'000'000;  // a wall-clock time in 2023

class RecordRetentionTest : public ::testing::Test {
 protected:
  std::unique_ptr<StateStore> Open(std::map<std::string, int64_t, std::less<>> retention = {}) {
    StateStoreOptions options;
    options.path = dir_.str() + "/state";
    options.clock = &clock_;
    options.record_retention_ms = std::move(retention);
    Result<std::unique_ptr<StateStore>> store = StateStore::Open(options, &metrics_);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  static void PutDeadLetter(StateStore& store, int64_t at_ms, uint64_t seq) {
    std::string key;
    AppendBigEndian64(&key, static_cast<uint64_t>(at_ms));
    AppendBigEndian64(&key, seq);
    RecordWrite w{&kDeadLetterTable, key, std::string("{}")};
    ASSERT_TRUE(store.WriteRecords(std::span<const RecordWrite>(&w, 1)).ok());
  }

  static size_t Count(const StateStore& store, const RecordTable& table) {
    size_t n = 0;
    EXPECT_TRUE(store
                    .ScanRecords(table, "", "",
                                 [&](std::string_view, std::string_view) {
                                   ++n;
                                   return true;
                                 })
                    .ok());
    return n;
  }

  static Alert MakeAlert(const std::string& instance, AlertState state, int64_t at_ms) {
    Alert a;
    a.rule = "high_ttft";
    a.instance = instance;
    a.model = "llama";
    a.metric = "ttft_ms";
    a.stat = "p95";
    a.fingerprint = AlertFingerprint(a.rule, a.instance, a.model, a.metric, a.stat);
    a.type = AnomalyType::kThreshold;
    a.severity = Severity::kWarning;
    a.state = state;
    a.detected_at_ms = at_ms;
    return a;
  }

  testing::TempDir dir_;
  ManualClock clock_{kStart};
  MetricsRegistry metrics_;
};

TEST_F(RecordRetentionTest, DeadLettersExpireAfterTheirDefaultRetention) {
  std::unique_ptr<StateStore> store = Open();
  ASSERT_NE(store, nullptr);
  PutDeadLetter(*store, kStart - 8 * kDay, 1);  // older than the 7-day default
  PutDeadLetter(*store, kStart - 6 * kDay, 2);
  PutDeadLetter(*store, kStart, 3);
  Result<MaintenanceReport> report = store->RunMaintenance();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->records_expired, 1);
  EXPECT_EQ(Count(*store, kDeadLetterTable), 2u);

  clock_.Advance(kDay + 1);  // the second is now past 7 days too
  report = store->RunMaintenance();
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->records_expired, 1);
  EXPECT_EQ(Count(*store, kDeadLetterTable), 1u);
  EXPECT_NE(metrics_.RenderPrometheus().find(
                "inferscope_state_records_expired_total{table=\"dead_letter\"} 2"),
            std::string::npos);
}

TEST_F(RecordRetentionTest, ConfiguredRetentionOverridesTheDefaultAndZeroKeepsForever) {
  {
    std::unique_ptr<StateStore> store = Open({{"dead_letter", 3'600'000}});
    ASSERT_NE(store, nullptr);
    PutDeadLetter(*store, kStart - 2 * 3'600'000, 1);
    PutDeadLetter(*store, kStart - 60'000, 2);
    ASSERT_TRUE(store->RunMaintenance().ok());
    EXPECT_EQ(Count(*store, kDeadLetterTable), 1u);
  }
  std::unique_ptr<StateStore> store = Open({{"dead_letter", 0}});
  ASSERT_NE(store, nullptr);
  PutDeadLetter(*store, kStart - 400 * kDay, 3);
  ASSERT_TRUE(store->RunMaintenance().ok());
  EXPECT_EQ(Count(*store, kDeadLetterTable), 2u);
}

TEST_F(RecordRetentionTest, ABacklogExpiresOverSeveralRunsInBoundedSteps) {
  std::unique_ptr<StateStore> store = Open();
  ASSERT_NE(store, nullptr);
  const int64_t n = StateStore::kMaxRecordsExpiredPerRun + 500;
  std::vector<RecordWrite> writes;
  for (int64_t i = 0; i < n; ++i) {
    std::string key;
    AppendBigEndian64(&key, static_cast<uint64_t>(kStart - 30 * kDay + i));
    AppendBigEndian64(&key, static_cast<uint64_t>(i));
    writes.push_back({&kDeadLetterTable, std::move(key), std::string("{}")});
  }
  ASSERT_TRUE(store->WriteRecords(writes).ok());
  Result<MaintenanceReport> first = store->RunMaintenance();
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->records_expired, StateStore::kMaxRecordsExpiredPerRun);
  Result<MaintenanceReport> second = store->RunMaintenance();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->records_expired, 500);
  EXPECT_EQ(Count(*store, kDeadLetterTable), 0u);
}

TEST_F(RecordRetentionTest, ExpiredAlertChangesTakeTheirCopyAndLongResolvedAlertsWithThem) {
  std::unique_ptr<StateStore> store = Open();
  ASSERT_NE(store, nullptr);
  const int64_t old = kStart - 40 * kDay;
  // Resolved 35 days ago: forgotten.
  Alert gone_firing = MakeAlert("vllm-1", AlertState::kFiring, old);
  Alert gone_resolved = MakeAlert("vllm-1", AlertState::kResolved, old + 5 * kDay);
  // Fired 40 days ago and still firing: its latest state stays, its old change goes.
  Alert still = MakeAlert("vllm-2", AlertState::kFiring, old);
  // Resolved 35 days ago, fired again yesterday: the latest state stays.
  Alert back_resolved = MakeAlert("vllm-3", AlertState::kResolved, old + 5 * kDay);
  Alert back_firing = MakeAlert("vllm-3", AlertState::kFiring, kStart - kDay);
  ASSERT_TRUE(
      StoreAlerts(*store, std::vector<Alert>{gone_firing, gone_resolved, still, back_resolved})
          .ok());
  ASSERT_TRUE(StoreAlerts(*store, std::vector<Alert>{back_firing}).ok());
  EXPECT_EQ(Count(*store, kAlertsTable), 3u);
  EXPECT_EQ(Count(*store, kAlertHistoryTable), 5u);
  EXPECT_EQ(Count(*store, kAlertHistoryByFingerprintTable), 5u);

  Result<MaintenanceReport> report = store->RunMaintenance();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->records_expired, 4);
  EXPECT_EQ(Count(*store, kAlertHistoryTable), 1u);
  EXPECT_EQ(Count(*store, kAlertHistoryByFingerprintTable), 1u);
  Result<std::optional<Alert>> a = LoadAlert(*store, gone_firing.fingerprint);
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(a->has_value());
  Result<std::optional<Alert>> b = LoadAlert(*store, still.fingerprint);
  ASSERT_TRUE(b.ok() && b->has_value());
  EXPECT_EQ((*b)->state, AlertState::kFiring);
  Result<std::optional<Alert>> c = LoadAlert(*store, back_firing.fingerprint);
  ASSERT_TRUE(c.ok() && c->has_value());
  EXPECT_EQ((*c)->state, AlertState::kFiring);
}

TEST_F(RecordRetentionTest, LongRetractedAlertsAreForgottenLikeResolvedOnes) {
  std::unique_ptr<StateStore> store = Open();
  ASSERT_NE(store, nullptr);
  const int64_t old = kStart - 40 * kDay;
  // An early firing retracted 40 days ago ends the alert, as a resolution does.
  Alert fired = MakeAlert("vllm-1", AlertState::kFiring, old);
  fired.early = true;
  Alert retracted = MakeAlert("vllm-1", AlertState::kRetracted, old + 1000);
  retracted.early = true;
  ASSERT_TRUE(StoreAlerts(*store, std::vector<Alert>{fired, retracted}).ok());
  Result<std::optional<Alert>> before = LoadAlert(*store, fired.fingerprint);
  ASSERT_TRUE(before.ok() && before->has_value());
  EXPECT_EQ((*before)->state, AlertState::kRetracted);
  EXPECT_TRUE((*before)->early) << "stored with the flag";

  Result<MaintenanceReport> report = store->RunMaintenance();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  Result<std::optional<Alert>> after = LoadAlert(*store, fired.fingerprint);
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->has_value());
  EXPECT_EQ(Count(*store, kAlertsTable), 0u);
}

// Stores written before 2026-12-07 keyed history without the window start (18 bytes): such a
// change still expires, takes its by-fingerprint copy and forgets the long-resolved alert.
TEST_F(RecordRetentionTest, HistoryKeysOfEarlierVersionsExpireAlike) {
  std::unique_ptr<StateStore> store = Open();
  ASSERT_NE(store, nullptr);
  const Alert resolved = MakeAlert("vllm-1", AlertState::kResolved, kStart - 40 * kDay);
  std::string history;  // be64(detected_at) be64(fingerprint) u8(state) u8(severity)
  AppendBigEndian64(&history, static_cast<uint64_t>(resolved.detected_at_ms));
  AppendBigEndian64(&history, resolved.fingerprint);
  history.push_back(static_cast<char>(resolved.state));
  history.push_back(static_cast<char>(resolved.severity));
  std::string by_fp = AlertKey(resolved.fingerprint);
  by_fp.append(history.substr(0, 8));
  by_fp.append(history.substr(16));
  const std::string value = ToJsonText(AlertToJson(resolved));
  const std::vector<RecordWrite> writes = {{&kAlertsTable, AlertKey(resolved.fingerprint), value},
                                           {&kAlertHistoryTable, history, value},
                                           {&kAlertHistoryByFingerprintTable, by_fp, value}};
  ASSERT_TRUE(store->WriteRecords(writes).ok());

  Result<MaintenanceReport> report = store->RunMaintenance();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->records_expired, 1);
  EXPECT_EQ(Count(*store, kAlertHistoryTable), 0u);
  EXPECT_EQ(Count(*store, kAlertHistoryByFingerprintTable), 0u);
  EXPECT_EQ(Count(*store, kAlertsTable), 0u);
}

TEST_F(RecordRetentionTest, OnlyTimeKeyedTablesCanBeGivenARetention) {
  EXPECT_TRUE(CheckRecordRetention("alert_history", 1000).ok());
  Status not_keyed = CheckRecordRetention("alerts", 1000);
  EXPECT_FALSE(not_keyed.ok());
  EXPECT_NE(not_keyed.message().find("alert_history"), std::string::npos) << not_keyed.message();
  EXPECT_NE(not_keyed.message().find("dead_letter"), std::string::npos);
  EXPECT_FALSE(CheckRecordRetention("no_such_table", 1000).ok());
  EXPECT_FALSE(CheckRecordRetention("dead_letter", -1).ok());
  StateStoreOptions options;
  options.path = dir_.str() + "/x";
  options.record_retention_ms = {{"silences", 1000}};
  EXPECT_FALSE(options.Validate().ok());
}

}  // namespace
}  // namespace inferscope
