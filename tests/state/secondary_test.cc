// StateStore in secondary (read-only) mode, the query node's view of the engine's store: a
// primary and secondaries on one directory in one process (RocksDB allows it; the integration test
// runs them as separate processes).

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "state/silence_store.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

constexpr int64_t kPaneMs = 10'000;

class SecondaryTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(OpenPrimary().ok()); }

  Status OpenPrimary() {
    primary_.reset();
    StateStoreOptions options;
    options.path = dir_.str() + "/state";
    options.tiers = {{kPaneMs, 0}, {60'000, 0}};
    Result<std::unique_ptr<StateStore>> opened = StateStore::Open(options, nullptr);
    if (!opened.ok()) return opened.status();
    primary_ = std::move(opened).value();
    return Status::Ok();
  }

  Result<std::unique_ptr<StateStore>> OpenSecondary(const std::string& name,
                                                    std::vector<TierSpec> fallback = {}) {
    StateStoreOptions options;
    options.path = dir_.str() + "/state";
    options.secondary_path = dir_.str() + "/" + name;
    options.tiers = std::move(fallback);
    return StateStore::Open(options, nullptr);
  }

  Status WritePane(int64_t start_ms, double value) {
    WindowSummary pane;
    pane.series = {interner_.Intern("node-1"), interner_.Intern("llama"),
                   interner_.Intern("ttft_ms")};
    pane.start_ms = start_ms;
    pane.end_ms = start_ms + kPaneMs;
    pane.max_event_time_ms = start_ms + kPaneMs - 1;
    pane.agg.Add(value, start_ms);
    pane.agg.AddEvent(false);
    return primary_->WritePanes(std::vector<WindowSummary>{pane}, interner_, start_ms + kPaneMs);
  }

  static int Panes(const StateStore& store) {
    int n = 0;
    Status s = store.ScanPanes("node-1", "llama", "ttft_ms", 0, INT64_MAX, [&](const StoredPane&) {
      ++n;
      return Status::Ok();
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return n;
  }

  testing::TempDir dir_;
  Interner interner_;
  std::unique_ptr<StateStore> primary_;
};

TEST_F(SecondaryTest, SeesCommittedStateAfterCatchUpAndRefusesWrites) {
  ASSERT_TRUE(WritePane(100'000, 5).ok());
  Result<std::unique_ptr<StateStore>> secondary = OpenSecondary("node-a");
  ASSERT_TRUE(secondary.ok()) << secondary.status().ToString();
  StateStore& node = **secondary;
  EXPECT_TRUE(node.read_only());
  EXPECT_EQ(node.Watermark(), 110'000);
  EXPECT_EQ(Panes(node), 1);

  ASSERT_TRUE(WritePane(110'000, 6).ok());
  EXPECT_EQ(Panes(node), 1);  // not before a catch-up
  Result<CatchUpReport> report = node.CatchUp();
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_FALSE(report->reopened);
  EXPECT_EQ(report->watermark_ms, 120'000);
  EXPECT_EQ(node.Watermark(), 120'000);
  EXPECT_EQ(Panes(node), 2);

  // Every write refuses, and says why.
  RecordWrite write{&kSilencesTable, "id", std::string("{}")};
  Status refused = node.WriteRecords(std::span<const RecordWrite>(&write, 1));
  EXPECT_EQ(refused.code(), Status::Code::kFailedPrecondition) << refused.ToString();
  EXPECT_NE(refused.message().find("read-only"), std::string::npos) << refused.ToString();
  EXPECT_EQ(node.RunMaintenance().status().code(), Status::Code::kFailedPrecondition);
  // A registry's retention delete on load does nothing and succeeds; a put is refused.
  StateSilenceStore silences(&node);
  EXPECT_TRUE(silences.Delete("id").ok());
  EXPECT_FALSE(silences.Put("id", "{}").ok());
  EXPECT_EQ(primary_->CatchUp().status().code(), Status::Code::kFailedPrecondition);
}

TEST_F(SecondaryTest, TakesTheTiersTheEngineStoredNotTheFallback) {
  Result<std::unique_ptr<StateStore>> secondary = OpenSecondary("node-a", {{kPaneMs, 0}});
  ASSERT_TRUE(secondary.ok()) << secondary.status().ToString();
  ASSERT_EQ((*secondary)->tiers().size(), 2u);
  EXPECT_EQ((*secondary)->tiers()[1].resolution_ms, 60'000);
}

TEST_F(SecondaryTest, FollowsThePrimaryAcrossItsReopenAndServesSeveralSecondaries) {
  ASSERT_TRUE(WritePane(100'000, 5).ok());
  Result<std::unique_ptr<StateStore>> a = OpenSecondary("node-a");
  Result<std::unique_ptr<StateStore>> b = OpenSecondary("node-b");
  ASSERT_TRUE(a.ok() && b.ok());
  // The primary closes (as a crash would leave it: its log unflushed) and opens again: a new
  // MANIFEST; the secondaries reopen on it and see what it writes next.
  ASSERT_TRUE(OpenPrimary().ok());
  ASSERT_TRUE(WritePane(110'000, 6).ok());
  ASSERT_TRUE(WritePane(120'000, 7).ok());
  for (StateStore* node : {a->get(), b->get()}) {
    Result<CatchUpReport> report = node->CatchUp();
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_TRUE(report->reopened);
    EXPECT_EQ(node->Watermark(), 130'000);
    EXPECT_EQ(Panes(*node), 3);
  }
  ASSERT_TRUE(WritePane(130'000, 8).ok());
  Result<CatchUpReport> report = (*a)->CatchUp();
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->reopened);
  EXPECT_EQ(Panes(**a), 4);
}

TEST_F(SecondaryTest, RefusesADirectoryWithoutAStoreAndItsOwnPathAsSecondary) {
  StateStoreOptions options;
  options.path = dir_.str() + "/none";
  options.secondary_path = dir_.str() + "/node";
  Result<std::unique_ptr<StateStore>> none = StateStore::Open(options, nullptr);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no state store to read"), std::string::npos);
  options.path = dir_.str() + "/state";
  options.secondary_path = options.path;
  EXPECT_EQ(StateStore::Open(options, nullptr).status().code(), Status::Code::kInvalidArgument);
}

// The query node answers /v1/performance/metrics from the fleet rollup: it must see the rows the
// engine wrote with its panes, and the new ones after a catch-up.
TEST_F(SecondaryTest, ReadsTheFleetRollupAndCatchesUpWithIt) {
  auto write_latency = [&](int64_t start_ms, double value) {
    WindowSummary pane;
    pane.series = {interner_.Intern("node-1"), interner_.Intern("llama"),
                   interner_.Intern(kFleetLatencyMetric)};
    pane.start_ms = start_ms;
    pane.end_ms = start_ms + kPaneMs;
    pane.max_event_time_ms = start_ms;
    pane.agg.Add(value, start_ms);
    pane.agg.AddEvent(false);
    return primary_->WritePanes(std::vector<WindowSummary>{pane}, interner_, start_ms + kPaneMs);
  };
  ASSERT_TRUE(write_latency(100'000, 5).ok());
  Result<std::unique_ptr<StateStore>> secondary = OpenSecondary("node-a");
  ASSERT_TRUE(secondary.ok()) << secondary.status().ToString();
  StateStore& node = **secondary;
  EXPECT_EQ(node.FleetFromMs(), 0);
  FleetRead read;
  Result<bool> answered = node.ReadFleet(0, 200'000, &read);
  ASSERT_TRUE(answered.ok()) << answered.status().ToString();
  ASSERT_TRUE(*answered);
  EXPECT_EQ(read.latency.events, 1u);
  EXPECT_EQ(read.active_instances, 1u);

  ASSERT_TRUE(write_latency(110'000, 7).ok());
  ASSERT_TRUE(node.CatchUp().ok());
  ASSERT_TRUE(node.ReadFleet(0, 200'000, &read).ok());
  EXPECT_EQ(read.latency.events, 2u);
  EXPECT_EQ(read.latency.max, 7);
  EXPECT_EQ(read.panes, 2);
}

}  // namespace
}  // namespace inferscope
