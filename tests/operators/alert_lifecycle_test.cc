#include "operators/alert_lifecycle.h"

#include <gtest/gtest.h>

#include "alerting/silence.h"
#include "state/checkpoint_store.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

Alert Evidence(double value) {
  Alert a;
  a.rule = "r";
  a.instance = "node-1";
  a.model = "m";
  a.metric = "ttft_ms";
  a.stat = "p95";
  a.fingerprint = AlertFingerprint(a.rule, a.instance, a.model, a.metric, a.stat);
  a.type = AnomalyType::kThreshold;
  a.value = value;
  a.message = "p95 = " + std::to_string(value);
  return a;
}

class AlertLifecycleTest : public ::testing::Test {
 protected:
  AlertLifecycleTest() : lifecycle_(AlertLifecycle::Options{}) {
    StageContext ctx;
    ctx.name = "rules";
    ctx.metrics = &metrics_;
    ctx.clock = &clock_;
    lifecycle_.Open(ctx);
  }
  void Observe(Condition c, Severity s, int64_t t) {
    lifecycle_.Observe(Evidence(t), c, s, t, timing_, out_);
  }

  MetricsRegistry metrics_;
  ManualClock clock_{1'000'000};
  AlertTiming timing_;
  AlertLifecycle lifecycle_;
  std::vector<Alert> out_;
};

TEST(AlertFingerprintTest, StableAndSeparatorAware) {
  // FNV-1a is fixed: this value must not change between builds or releases.
  EXPECT_EQ(FingerprintHex(AlertFingerprint("r", "a", "b", "c", "d")),
            FingerprintHex(AlertFingerprint("r", "a", "b", "c", "d")));
  EXPECT_NE(AlertFingerprint("r", "ab", "c", "m", "p95"),
            AlertFingerprint("r", "a", "bc", "m", "p95"));
  EXPECT_EQ(FingerprintHex(AlertFingerprint("", "", "", "", "")).size(), 16u);
  uint64_t fp = AlertFingerprint("high_ttft", "vllm-0", "llama", "ttft_ms", "p95");
  EXPECT_EQ(ParseFingerprintHex(FingerprintHex(fp)), fp);
  EXPECT_FALSE(ParseFingerprintHex("xyz").has_value());
  EXPECT_FALSE(ParseFingerprintHex("00112233445566778").has_value());
}

TEST_F(AlertLifecycleTest, PendingBecomesFiringAfterFor) {
  timing_.for_ms = 3000;
  Observe(Condition::kActive, Severity::kWarning, 10'000);
  Observe(Condition::kActive, Severity::kWarning, 12'000);
  EXPECT_TRUE(out_.empty()) << "pending is not published";
  EXPECT_EQ(lifecycle_.tracked(), 1u);
  Observe(Condition::kActive, Severity::kWarning, 13'000);
  ASSERT_EQ(out_.size(), 1u);
  EXPECT_EQ(out_[0].state, AlertState::kFiring);
  EXPECT_EQ(out_[0].severity, Severity::kWarning);
  EXPECT_EQ(out_[0].active_since_ms, 10'000);
  EXPECT_EQ(out_[0].detected_at_ms, 1'000'000);
}

TEST_F(AlertLifecycleTest, CheckpointedStatesSurviveARestart) {
  Observe(Condition::kActive, Severity::kCritical, 10'000);  // fires (for = 0)
  ASSERT_EQ(out_.size(), 1u);
  testing::TempDir dir;
  StateStoreOptions options;
  options.path = dir.str();
  auto store = StateStore::Open(options, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  std::vector<CheckpointRecord> records;
  CheckpointCollector writer("op", "rules", &records);
  ASSERT_TRUE(lifecycle_.Checkpoint(writer).ok());
  ASSERT_EQ(records.size(), 1u);
  ASSERT_TRUE(WriteCheckpointRecords(**store, records).ok());
  // Nothing changed since: the next checkpoint writes nothing.
  records.clear();
  ASSERT_TRUE(lifecycle_.Checkpoint(writer).ok());
  EXPECT_TRUE(records.empty());

  // A restarted operator: the firing alert resolves when the condition clears, and an active
  // evaluation does not fire it a second time.
  AlertLifecycle restarted(AlertLifecycle::Options{});
  StageContext ctx;
  ctx.name = "rules";
  ctx.metrics = &metrics_;
  ctx.clock = &clock_;
  restarted.Open(ctx);
  ASSERT_TRUE(restarted.Restore(StateCheckpointReader("op", "rules", store->get())).ok());
  EXPECT_EQ(restarted.tracked(), 1u);
  std::vector<Alert> out;
  restarted.Observe(Evidence(11'000), Condition::kActive, Severity::kCritical, 11'000, timing_,
                    out);
  EXPECT_TRUE(out.empty()) << "already firing before the restart";
  restarted.Observe(Evidence(12'000), Condition::kClear, Severity::kNone, 12'000, timing_, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].state, AlertState::kResolved);
  EXPECT_EQ(out[0].severity, Severity::kCritical);
  EXPECT_EQ(out[0].active_since_ms, 10'000);

  // Without the checkpoint the clear evaluation means nothing (the alert would stay firing).
  AlertLifecycle fresh(AlertLifecycle::Options{});
  fresh.Open(ctx);
  std::vector<Alert> none;
  fresh.Observe(Evidence(12'000), Condition::kClear, Severity::kNone, 12'000, timing_, none);
  EXPECT_TRUE(none.empty());
}

// Names that are not UTF-8 (the decoder rejects them, but operators must not depend on it) are
// checkpointed with U+FFFD in place of the bad bytes instead of throwing on the operator thread.
TEST_F(AlertLifecycleTest, CheckpointOfANameThatIsNotUtf8DoesNotThrow) {
  Alert a = Evidence(10'000);
  a.instance = "node-\xff";
  a.message = "p95 \xc3";
  lifecycle_.Observe(a, Condition::kActive, Severity::kCritical, 10'000, timing_, out_);
  ASSERT_EQ(out_.size(), 1u);
  std::vector<CheckpointRecord> records;
  CheckpointCollector writer("op", "rules", &records);
  ASSERT_TRUE(lifecycle_.Checkpoint(writer).ok());
  ASSERT_EQ(records.size(), 1u);
  ASSERT_TRUE(records[0].value.has_value());
  EXPECT_NE(records[0].value->find("node-\xef\xbf\xbd"), std::string::npos) << *records[0].value;

  testing::TempDir dir;
  StateStoreOptions options;
  options.path = dir.str();
  auto store = StateStore::Open(options, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE(WriteCheckpointRecords(**store, records).ok());
  AlertLifecycle restarted(AlertLifecycle::Options{});
  StageContext ctx;
  ctx.name = "rules";
  ctx.metrics = &metrics_;
  ctx.clock = &clock_;
  restarted.Open(ctx);
  ASSERT_TRUE(restarted.Restore(StateCheckpointReader("op", "rules", store->get())).ok());
  EXPECT_EQ(restarted.tracked(), 1u);
}

TEST_F(AlertLifecycleTest, PendingIsForgottenWhenTheConditionStops) {
  timing_.for_ms = 3000;
  Observe(Condition::kActive, Severity::kWarning, 10'000);
  Observe(Condition::kHold, Severity::kNone, 11'000);
  EXPECT_EQ(lifecycle_.tracked(), 0u);
  Observe(Condition::kActive, Severity::kWarning, 12'000);
  Observe(Condition::kActive, Severity::kWarning, 14'000);
  EXPECT_TRUE(out_.empty()) << "the for clock restarted at 12000";
  Observe(Condition::kActive, Severity::kWarning, 15'000);
  ASSERT_EQ(out_.size(), 1u);
  EXPECT_EQ(out_[0].active_since_ms, 12'000);
}

TEST_F(AlertLifecycleTest, HysteresisAndKeepFiringForPreventFlapping) {
  timing_.keep_firing_for_ms = 2000;
  Observe(Condition::kActive, Severity::kCritical, 1000);
  ASSERT_EQ(out_.size(), 1u);
  // Noise around the threshold: clear, hold, clear, active... never clear for 2 s.
  Observe(Condition::kClear, Severity::kNone, 2000);
  Observe(Condition::kHold, Severity::kNone, 3000);
  Observe(Condition::kClear, Severity::kNone, 4000);
  Observe(Condition::kActive, Severity::kWarning, 5000);
  Observe(Condition::kClear, Severity::kNone, 6000);
  Observe(Condition::kClear, Severity::kNone, 7000);
  EXPECT_EQ(out_.size(), 1u) << "no flapping inside the hysteresis band";
  Observe(Condition::kClear, Severity::kNone, 8000);
  ASSERT_EQ(out_.size(), 2u);
  EXPECT_EQ(out_[1].state, AlertState::kResolved);
  EXPECT_EQ(out_[1].severity, Severity::kCritical) << "resolved carries the last firing severity";
  EXPECT_EQ(out_[1].fingerprint, out_[0].fingerprint);
  EXPECT_EQ(lifecycle_.tracked(), 0u);
}

TEST_F(AlertLifecycleTest, EscalationIsPublishedDeescalationIsNot) {
  Observe(Condition::kActive, Severity::kWarning, 1000);
  Observe(Condition::kActive, Severity::kCritical, 2000);
  Observe(Condition::kActive, Severity::kWarning, 3000);
  Observe(Condition::kActive, Severity::kEmergency, 4000);
  ASSERT_EQ(out_.size(), 3u);
  EXPECT_EQ(out_[0].severity, Severity::kWarning);
  EXPECT_EQ(out_[1].severity, Severity::kCritical);
  EXPECT_EQ(out_[2].severity, Severity::kEmergency);
  for (const Alert& a : out_) EXPECT_EQ(a.state, AlertState::kFiring);
  EXPECT_EQ(
      metrics_.GetCounter("inferscope_alerts_escalated_total", "", {{"stage", "rules"}})->value(),
      2u);
}

TEST(AlertLifecycleLimitsTest, StatesAreBoundedAndDropsCounted) {
  AlertLifecycle::Options options;
  options.max_states = 2;
  AlertLifecycle lifecycle(options);
  MetricsRegistry metrics;
  StageContext ctx;
  ctx.name = "rules";
  ctx.metrics = &metrics;
  lifecycle.Open(ctx);
  std::vector<Alert> out;
  AlertTiming timing;
  timing.for_ms = 10'000;
  for (int i = 0; i < 5; ++i) {
    Alert a = Evidence(1);
    a.fingerprint = static_cast<uint64_t>(i);
    lifecycle.Observe(a, Condition::kActive, Severity::kWarning, 1000, timing, out);
  }
  EXPECT_EQ(lifecycle.tracked(), 2u);
  EXPECT_EQ(lifecycle.dropped(), 3u);
  EXPECT_EQ(metrics.GetCounter("inferscope_alert_states_dropped_total", "", {{"stage", "rules"}})
                ->value(),
            3u);
}

TEST_F(AlertLifecycleTest, StaleFiringAlertsResolveWithNoData) {
  Observe(Condition::kActive, Severity::kWarning, 1000);
  lifecycle_.Sweep(200'000, out_);
  EXPECT_EQ(out_.size(), 1u) << "within stale_after (5 min)";
  lifecycle_.Sweep(302'000, out_);
  ASSERT_EQ(out_.size(), 2u);
  EXPECT_EQ(out_[1].state, AlertState::kResolved);
  EXPECT_NE(out_[1].message.find("no data"), std::string::npos) << out_[1].message;
}

TEST(AlertLifecycleSilenceTest, SilencedAlertsAreEmittedMarked) {
  ManualClock clock(5000);
  SilenceRegistry silences(nullptr, &clock);
  Silence s;
  s.matchers = {{"instance", "node-*"}, {"rule", "r"}};
  s.starts_at_ms = 0;
  s.ends_at_ms = 10'000;
  ASSERT_TRUE(silences.Add(s).ok());
  MetricsRegistry metrics;
  StageContext ctx;
  ctx.name = "rules";
  ctx.metrics = &metrics;
  ctx.clock = &clock;
  ctx.services.Provide(&silences);
  AlertLifecycle lifecycle(AlertLifecycle::Options{});
  lifecycle.Open(ctx);
  std::vector<Alert> out;
  lifecycle.Observe(Evidence(1), Condition::kActive, Severity::kWarning, 1000, {}, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].silenced);
  clock.Set(20'000);  // the silence has ended
  lifecycle.Observe(Evidence(1), Condition::kClear, Severity::kNone, 2000, {}, out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_FALSE(out[1].silenced);
  EXPECT_EQ(
      metrics.GetCounter("inferscope_alerts_silenced_total", "", {{"stage", "rules"}})->value(),
      1u);
}

}  // namespace
}  // namespace inferscope
