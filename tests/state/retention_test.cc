// Storage tiers in the StateStore: rollups (exactness, finality, late upserts) and retention
// against an injected clock (answers and disk). Read planning, tier validation and the topology's
// `state:` section: tests/pipeline/tiers_test.cc.

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <map>
#include <random>
#include <string>
#include <vector>

#include "pipeline/clock.h"
#include "pipeline/tiers.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

constexpr int64_t kSecond = 1'000;
constexpr int64_t kMinute = 60 * kSecond;
constexpr int64_t kHour = 60 * kMinute;
constexpr int64_t kDay = 24 * kHour;
// An hour boundary in 2023, so every tier's buckets are aligned from here.
constexpr int64_t kBase = 472'223 * kHour;

class RetentionTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(Reopen().ok()); }

  Status Reopen() {
    store_.reset();
    StateStoreOptions options;
    options.path = dir_.str();
    options.tiers = tiers_;
    options.rollup_delay_ms = 30 * kSecond;
    options.clock = &clock_;
    Result<std::unique_ptr<StateStore>> opened = StateStore::Open(options, &metrics_);
    if (!opened.ok()) return opened.status();
    store_ = std::move(opened).value();
    return Status::Ok();
  }

  WindowSummary Pane(std::string_view instance, std::string_view metric, int64_t start_ms,
                     const std::vector<double>& values, uint64_t errors = 0) {
    WindowSummary pane;
    pane.series = {interner_.Intern(instance), interner_.Intern("m"), interner_.Intern(metric)};
    pane.start_ms = start_ms;
    pane.end_ms = start_ms + 10 * kSecond;
    pane.max_event_time_ms = start_ms + 10 * kSecond - 1;
    for (size_t i = 0; i < values.size(); ++i) {
      pane.agg.Add(values[i], start_ms + static_cast<int64_t>(i));
      pane.agg.AddEvent(i < errors);
    }
    return pane;
  }

  std::vector<StoredPane> Scan(size_t tier, std::string_view instance, std::string_view metric,
                               int64_t from_ms = 0, int64_t to_ms = INT64_MAX) {
    std::vector<StoredPane> out;
    Status s = store_->ScanTier(tier, instance, "m", metric, from_ms, to_ms,
                                [&out](const StoredPane& pane) {
                                  out.push_back(pane);
                                  return Status::Ok();
                                });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  MaintenanceReport Maintain() {
    Result<MaintenanceReport> report = store_->RunMaintenance();
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    return report.ok() ? *report : MaintenanceReport{};
  }

  // Keys per column family as they are on disk: the store is closed, RocksDB opened read-only
  // (no retention filter in between), then the store is reopened.
  std::map<std::string, size_t> KeysOnDisk() {
    store_.reset();
    std::vector<std::string> names;
    rocksdb::DBOptions db_options;
    EXPECT_TRUE(rocksdb::DB::ListColumnFamilies(db_options, dir_.str(), &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const std::string& name : names)
      descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    std::map<std::string, size_t> keys;
    rocksdb::Status s =
        rocksdb::DB::OpenForReadOnly(db_options, dir_.str(), descriptors, &handles, &raw);
    EXPECT_TRUE(s.ok()) << s.ToString();
    if (s.ok()) {
      for (size_t i = 0; i < handles.size(); ++i) {
        std::unique_ptr<rocksdb::Iterator> it(raw->NewIterator(rocksdb::ReadOptions(), handles[i]));
        size_t n = 0;
        for (it->SeekToFirst(); it->Valid(); it->Next()) ++n;
        keys[names[i]] = n;
        EXPECT_TRUE(raw->DestroyColumnFamilyHandle(handles[i]).ok());
      }
      delete raw;
    }
    EXPECT_TRUE(Reopen().ok());
    return keys;
  }

  // Finest first: 10 s panes kept 1 h, 1 min rollups kept 1 d, 10 min rollups kept 7 d.
  std::vector<TierSpec> tiers_ = {{10 * kSecond, kHour}, {kMinute, kDay}, {10 * kMinute, 7 * kDay}};
  testing::TempDir dir_;
  ManualClock clock_{kBase};
  MetricsRegistry metrics_;
  Interner interner_;
  std::unique_ptr<StateStore> store_;
};

void ExpectSameAggregate(const Aggregate& want, const Aggregate& got, const std::string& where) {
  SCOPED_TRACE(where);
  EXPECT_EQ(got.count, want.count);
  EXPECT_EQ(got.events, want.events);
  EXPECT_EQ(got.errors, want.errors);
  EXPECT_EQ(got.sum, want.sum);  // integer values: exact in any order
  EXPECT_EQ(got.min, want.min);
  EXPECT_EQ(got.max, want.max);
  EXPECT_NEAR(got.mean, want.mean, 1e-9 * std::abs(want.mean));
  EXPECT_NEAR(got.m2, want.m2, 1e-9 * std::abs(want.m2) + 1e-9);
  EXPECT_EQ(got.last, want.last);
  SummaryStats a = Summarize(want, kMinute), b = Summarize(got, kMinute);
  if (want.count > 0) {
    EXPECT_EQ(b.p50, a.p50);
    EXPECT_EQ(b.p90, a.p90);
    EXPECT_EQ(b.p99, a.p99);
  }
}

TEST_F(RetentionTest, RollupEqualsTheMergeOfThePanesItReplaces) {
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<int> count(0, 30), value(1, 5000), coin(0, 4);
  constexpr int64_t kSpan = 30 * kMinute;
  std::vector<WindowSummary> panes;
  for (const char* instance : {"a", "b", "c"}) {
    for (int64_t start = kBase; start < kBase + kSpan; start += 10 * kSecond) {
      if (coin(rng) == 0) continue;  // some panes missing
      std::vector<double> values(static_cast<size_t>(count(rng)));
      for (double& v : values) v = value(rng);
      panes.push_back(Pane(instance, "ttft_ms", start, values, values.size() / 4));
    }
  }
  ASSERT_TRUE(store_->WritePanes(panes, interner_, kBase + kSpan + 30 * kSecond).ok());
  clock_.Set(kBase + kSpan + kMinute);
  MaintenanceReport report = Maintain();
  EXPECT_EQ(report.rolled_through_ms[1], kBase + kSpan);
  EXPECT_EQ(report.rolled_through_ms[2], kBase + kSpan);
  EXPECT_GT(report.rollups_written[1], 0);
  EXPECT_EQ(metrics_.CounterValue("inferscope_state_rollups_written_total"),
            static_cast<uint64_t>(report.rollups_written[1] + report.rollups_written[2]));

  for (size_t tier : {1u, 2u}) {
    const int64_t res = tiers_[tier].resolution_ms;
    for (const char* instance : {"a", "b", "c"}) {
      // The expected buckets, merged straight from the panes as written.
      std::map<int64_t, Aggregate> want;
      for (const WindowSummary& p : panes) {
        if (interner_.Name(p.series.instance) != instance) continue;
        want[(p.start_ms / res) * res].Merge(p.agg);
      }
      std::vector<StoredPane> got = Scan(tier, instance, "ttft_ms");
      ASSERT_EQ(got.size(), want.size()) << "tier " << tier << " instance " << instance;
      for (const StoredPane& bucket : got) {
        ASSERT_TRUE(want.count(bucket.start_ms)) << bucket.start_ms;
        EXPECT_EQ(bucket.end_ms, bucket.start_ms + res);
        ExpectSameAggregate(want[bucket.start_ms], bucket.agg,
                            std::string(instance) + " tier " + std::to_string(tier) + " at " +
                                std::to_string(bucket.start_ms));
      }
    }
  }
  // A second run changes nothing.
  MaintenanceReport again = Maintain();
  EXPECT_EQ(again.rollups_written[1], 0);
  EXPECT_EQ(again.rollups_written[2], 0);
}

TEST_F(RetentionTest, BucketRollsUpOnlyOnceFinalAndReflectsLateUpserts) {
  // Minute [kBase, kBase + 1m); the watermark 20 s past its end is within rollup_delay (30 s).
  ASSERT_TRUE(
      store_
          ->WritePanes({Pane("a", "x", kBase, {1, 2}), Pane("a", "x", kBase + 50 * kSecond, {3})},
                       interner_, kBase + 80 * kSecond)
          .ok());
  clock_.Set(kBase + 2 * kMinute);
  Maintain();
  EXPECT_TRUE(Scan(1, "a", "x").empty());
  EXPECT_LE(store_->RolledThroughMs(1), kBase);

  // A late upsert of the first pane while the bucket is not final replaces it.
  ASSERT_TRUE(
      store_->WritePanes({Pane("a", "x", kBase, {10, 20, 30, 40})}, interner_, kBase + 85 * kSecond)
          .ok());
  Maintain();
  EXPECT_TRUE(Scan(1, "a", "x").empty());

  // Final once the watermark reaches end + rollup_delay.
  ASSERT_TRUE(
      store_
          ->WritePanes({Pane("a", "x", kBase + 60 * kSecond, {7})}, interner_, kBase + 90 * kSecond)
          .ok());
  Maintain();
  EXPECT_EQ(store_->RolledThroughMs(1), kBase + kMinute);
  std::vector<StoredPane> rolled = Scan(1, "a", "x");
  ASSERT_EQ(rolled.size(), 1u);
  EXPECT_EQ(rolled[0].start_ms, kBase);
  EXPECT_EQ(rolled[0].agg.count, 5u);  // 4 from the upserted pane, 1 from the other
  EXPECT_EQ(rolled[0].agg.sum, 103.0);
  EXPECT_EQ(rolled[0].agg.max, 40.0);
  EXPECT_EQ(metrics_.CounterValue("inferscope_state_panes_after_rollup_total"), 0u);

  // An upsert after the rollup (a lateness longer than rollup_delay) is stored but not re-rolled,
  // and is counted.
  ASSERT_TRUE(
      store_->WritePanes({Pane("a", "x", kBase, {1000})}, interner_, kBase + 90 * kSecond).ok());
  Maintain();
  EXPECT_EQ(metrics_.CounterValue("inferscope_state_panes_after_rollup_total"), 1u);
  EXPECT_EQ(Scan(1, "a", "x")[0].agg.count, 5u);

  // The cursor survives a reopen: nothing is rolled twice or lost.
  ASSERT_TRUE(Reopen().ok());
  EXPECT_EQ(store_->RolledThroughMs(1), kBase + kMinute);
}

TEST_F(RetentionTest, ExpiredBucketsLeaveAnswersAtOnceAndDiskAtCompaction) {
  std::vector<WindowSummary> panes;
  for (int64_t start = kBase; start < kBase + 20 * kMinute; start += 10 * kSecond) {
    panes.push_back(Pane("a", "x", start, {1, 2, 3}));
  }
  ASSERT_TRUE(store_->WritePanes(panes, interner_, kBase + 21 * kMinute).ok());
  clock_.Set(kBase + 21 * kMinute);
  Maintain();
  ASSERT_EQ(Scan(0, "a", "x").size(), 120u);
  ASSERT_EQ(Scan(1, "a", "x").size(), 20u);
  ASSERT_EQ(Scan(2, "a", "x").size(), 2u);
  std::map<std::string, size_t> disk = KeysOnDisk();
  EXPECT_EQ(disk["panes"], 120u);
  EXPECT_EQ(disk["rollup_1m"], 20u);
  EXPECT_EQ(disk["rollup_10m"], 2u);

  // 1 h after the end of the first 10 minutes: their panes are past retention. Reads skip them at
  // once, before any compaction; the pane [s, s + 10 s) goes when the clock reaches s + 10 s + 1 h.
  clock_.Set(kBase + 10 * kMinute + kHour);
  EXPECT_EQ(Scan(0, "a", "x").size(), 60u);
  EXPECT_EQ(Scan(0, "a", "x").front().start_ms, kBase + 10 * kMinute - 10 * kSecond + 10 * kSecond);
  clock_.Set(kBase + 10 * kMinute + kHour - 1);
  EXPECT_EQ(Scan(0, "a", "x").size(), 61u);  // [kBase + 9m50s, kBase + 10m) lives 1 ms more
  clock_.Set(kBase + 10 * kMinute + kHour);
  EXPECT_EQ(KeysOnDisk()["panes"], 120u);  // still on disk until compaction
  ASSERT_TRUE(store_->CompactTiers().ok());
  disk = KeysOnDisk();
  EXPECT_EQ(disk["panes"], 60u);
  EXPECT_EQ(disk["rollup_1m"], 20u);
  EXPECT_EQ(disk["rollup_10m"], 2u);
  EXPECT_EQ(metrics_.CounterValue("inferscope_state_buckets_expired_total", {{"tier", "10s"}}),
            60u);

  // A day later the 1 min tier is gone too; the 10 min tier still answers.
  clock_.Set(kBase + 20 * kMinute + kDay);
  EXPECT_TRUE(Scan(0, "a", "x").empty());
  EXPECT_TRUE(Scan(1, "a", "x").empty());
  EXPECT_EQ(Scan(2, "a", "x").size(), 2u);
  Maintain();
  ASSERT_TRUE(store_->CompactTiers().ok());
  disk = KeysOnDisk();
  EXPECT_EQ(disk["panes"], 0u);
  EXPECT_EQ(disk["rollup_1m"], 0u);
  EXPECT_EQ(disk["rollup_10m"], 2u);
  std::vector<SeriesInfo> series;
  ASSERT_TRUE(store_->ListSeries([&](const SeriesInfo& s) { series.push_back(s); }).ok());
  EXPECT_EQ(series.size(), 1u);

  // Past the coarsest retention the series itself goes from the index.
  clock_.Set(kBase + 20 * kMinute + 7 * kDay);
  EXPECT_TRUE(Scan(2, "a", "x").empty());
  MaintenanceReport report = Maintain();
  EXPECT_EQ(report.series_dropped, 1);
  ASSERT_TRUE(store_->CompactTiers().ok());
  disk = KeysOnDisk();
  EXPECT_EQ(disk["rollup_10m"], 0u);
  EXPECT_EQ(disk["series"], 0u);
}

TEST_F(RetentionTest, RollupSkipsPanesAlreadyPastRetention) {
  // Data replayed long after the fact: its panes are expired on arrival, so nothing rolls up from
  // them and nothing answers from them.
  clock_.Set(kBase + 2 * kHour);
  ASSERT_TRUE(
      store_->WritePanes({Pane("a", "x", kBase, {1})}, interner_, kBase + 5 * kMinute).ok());
  Maintain();
  EXPECT_TRUE(Scan(0, "a", "x").empty());
  EXPECT_TRUE(Scan(1, "a", "x").empty());
}

}  // namespace
}  // namespace inferscope
