#include "state/results_store.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "state/alert_store.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

constexpr int64_t kPaneMs = 10'000;

// ApplyResults: what a query node materialising the results stream writes, in one batch.
class ResultsStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StateStoreOptions options;
    options.path = dir_.str();
    Result<std::unique_ptr<StateStore>> opened = StateStore::Open(options, &metrics_);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    store_ = std::move(opened).value();
  }

  WindowSummary Pane(std::string_view instance, std::string_view metric, int64_t start_ms,
                     std::vector<double> values) {
    WindowSummary pane;
    pane.series = {names_.Intern(instance), names_.Intern("m"), names_.Intern(metric)};
    pane.start_ms = start_ms;
    pane.end_ms = start_ms + kPaneMs;
    pane.max_event_time_ms = start_ms + kPaneMs - 1;
    for (size_t i = 0; i < values.size(); ++i) {
      pane.agg.Add(values[i], start_ms + static_cast<int64_t>(i));
      pane.agg.AddEvent(false);
    }
    return pane;
  }

  ApplyReport Apply(const ResultsBatch& batch) {
    Result<ApplyReport> report = ApplyResults(*store_, names_, batch);
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    return report.ok() ? *report : ApplyReport{};
  }

  uint64_t StoredCount(std::string_view instance, std::string_view metric, int64_t start) {
    uint64_t count = 0;
    EXPECT_TRUE(store_
                    ->ScanPanes(instance, "m", metric, start, start + 1,
                                [&](const StoredPane& p) {
                                  count = p.agg.count;
                                  return Status::Ok();
                                })
                    .ok());
    return count;
  }

  FleetRead Fleet() {
    FleetRead got;
    Result<bool> read = store_->ReadFleet(0, 100 * kPaneMs, &got);
    EXPECT_TRUE(read.ok() && *read);
    return got;
  }

  testing::TempDir dir_;
  MetricsRegistry metrics_;
  Interner names_;
  std::unique_ptr<StateStore> store_;
};

TEST_F(ResultsStoreTest, StoresRowsPositionAndTheFleetWatermarkTogether) {
  ResultsBatch batch;
  batch.panes = {Pane("a", "e2e_ms", 0, {10, 20}), Pane("b", "e2e_ms", 0, {30})};
  Alert alert;
  alert.fingerprint = 42;
  alert.rule = "r";
  alert.instance = "a";
  alert.detected_at_ms = 5;
  batch.alerts = {alert};
  batch.node_watermarks = {{"node-a", 30'000}, {"node-b", 20'000}};
  batch.position_key = "q1";
  batch.position = 7;
  const ApplyReport report = Apply(batch);
  EXPECT_EQ(report.panes_written, 2u);
  EXPECT_EQ(report.watermark_ms, 20'000);  // the slowest node's
  EXPECT_EQ(store_->Watermark(), 20'000);
  Result<std::optional<uint64_t>> position = LoadResultsPosition(*store_, "q1");
  ASSERT_TRUE(position.ok());
  EXPECT_EQ(position->value_or(0), 7u);
  Result<std::optional<Alert>> stored = LoadAlert(*store_, 42);
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ((*stored)->rule, "r");
  EXPECT_EQ(Fleet().latency.events, 3u);

  // A node's later watermark raises its own; the fleet's follows the minimum.
  ResultsBatch next;
  next.node_watermarks = {{"node-b", 40'000}};
  next.position_key = "q1";
  next.position = 8;
  EXPECT_EQ(Apply(next).watermark_ms, 30'000);
  Result<std::map<std::string, int64_t, std::less<>>> nodes = LoadNodeWatermarks(*store_);
  ASSERT_TRUE(nodes.ok());
  EXPECT_EQ(nodes->at("node-a"), 30'000);
  EXPECT_EQ(nodes->at("node-b"), 40'000);
}

// A slot taken over replays from its checkpoint and emits an alert's transitions again with new
// detection times: a replayed older transition arriving after a newer one goes to the history but
// does not replace the current row.
TEST_F(ResultsStoreTest, AnOlderAlertTransitionArrivingLateDoesNotReplaceTheCurrentRow) {
  Alert firing;
  firing.fingerprint = 7;
  firing.rule = "slow";
  firing.state = AlertState::kFiring;
  firing.window_start_ms = 475'000;
  firing.window_end_ms = 476'000;
  firing.detected_at_ms = 1'000;
  Alert resolved = firing;
  resolved.state = AlertState::kResolved;
  resolved.window_start_ms = 479'000;
  resolved.window_end_ms = 480'000;
  resolved.detected_at_ms = 2'000;
  ResultsBatch first;
  first.alerts = {firing, resolved};
  Apply(first);
  Alert replayed = firing;
  replayed.detected_at_ms = 9'000;  // the new owner's detection
  ResultsBatch late;
  late.alerts = {replayed};
  Apply(late);
  Result<std::optional<Alert>> stored = LoadAlert(*store_, 7);
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ((*stored)->state, AlertState::kResolved);
  EXPECT_EQ((*stored)->window_end_ms, 480'000);
  int history = 0;
  ASSERT_TRUE(store_
                  ->ScanRecords(kAlertHistoryTable, "", "",
                                [&](std::string_view, std::string_view) {
                                  ++history;
                                  return true;
                                })
                  .ok());
  EXPECT_EQ(history, 3);
  // A later transition still replaces it.
  Alert again = firing;
  again.window_start_ms = 490'000;
  again.window_end_ms = 491'000;
  again.detected_at_ms = 10'000;
  ResultsBatch next;
  next.alerts = {again};
  Apply(next);
  stored = LoadAlert(*store_, 7);
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ((*stored)->state, AlertState::kFiring);
  EXPECT_EQ((*stored)->window_end_ms, 491'000);
}

TEST_F(ResultsStoreTest, APaneAppliedTwiceIsCountedOnceAndASmallerVersionIsSkipped) {
  ResultsBatch batch;
  batch.panes = {Pane("a", "e2e_ms", 0, {10, 20, 30}), Pane("b", "e2e_ms", 0, {5})};
  Apply(batch);
  Apply(batch);  // the same results again (an engine's replay outside the duplicate window)
  EXPECT_EQ(Fleet().latency.events, 4u);
  EXPECT_EQ(Fleet().active_instances, 2u);

  // An earlier, smaller version of a pane re-emitted after a restart must not replace the final.
  ResultsBatch smaller;
  smaller.panes = {Pane("a", "e2e_ms", 0, {10, 20})};
  EXPECT_EQ(Apply(smaller).panes_skipped, 1u);
  EXPECT_EQ(StoredCount("a", "e2e_ms", 0), 3u);
  EXPECT_EQ(Fleet().latency.events, 4u);

  // A larger one (late events) replaces it, and the rollup follows.
  ResultsBatch larger;
  larger.panes = {Pane("a", "e2e_ms", 0, {10, 20, 30, 40})};
  EXPECT_EQ(Apply(larger).panes_written, 1u);
  EXPECT_EQ(StoredCount("a", "e2e_ms", 0), 4u);
  EXPECT_EQ(Fleet().latency.events, 5u);
  EXPECT_EQ(Fleet().latency.max, 40);
}

TEST_F(ResultsStoreTest, TheLastVersionInABatchWins) {
  ResultsBatch batch;
  batch.panes = {Pane("a", "e2e_ms", 0, {1, 2, 3}), Pane("a", "e2e_ms", 0, {1, 2, 3, 4, 5})};
  const ApplyReport report = Apply(batch);
  EXPECT_EQ(report.panes_written, 1u);
  EXPECT_EQ(report.panes_skipped, 1u);
  EXPECT_EQ(StoredCount("a", "e2e_ms", 0), 5u);
  EXPECT_EQ(Fleet().latency.events, 5u);
}

}  // namespace
}  // namespace inferscope
