#include "state/state_store.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <set>
#include <string>
#include <vector>

#include "pipeline/names.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

// Record tables of this test alone: a table is a declaration beside its owner
// (state/record_table.h).
const RecordTable kTestTable("test_records");
const RecordTable kOtherTestTable("test_other_records");

constexpr int64_t kPaneMs = 10'000;

class StateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(Reopen().ok()); }

  Status Reopen() {
    store_.reset();
    StateStoreOptions options;
    options.path = dir_.str();
    Result<std::unique_ptr<StateStore>> opened = StateStore::Open(options, &metrics_);
    if (!opened.ok()) return opened.status();
    store_ = std::move(opened).value();
    return Status::Ok();
  }

  // A pane of `values` (all at the pane's start) with `events` requests of which `errors` failed.
  WindowSummary Pane(std::string_view instance, std::string_view model, std::string_view metric,
                     int64_t start_ms, std::vector<double> values, uint64_t errors = 0) {
    WindowSummary pane;
    pane.series = {interner_.Intern(instance), interner_.Intern(model), interner_.Intern(metric)};
    pane.start_ms = start_ms;
    pane.end_ms = start_ms + kPaneMs;
    pane.max_event_time_ms = start_ms + kPaneMs - 1;
    for (size_t i = 0; i < values.size(); ++i) {
      pane.agg.Add(values[i], start_ms + static_cast<int64_t>(i));
      pane.agg.AddEvent(i < errors);
    }
    return pane;
  }

  std::vector<StoredPane> Scan(std::string_view instance, std::string_view model,
                               std::string_view metric, int64_t from_ms, int64_t to_ms) {
    std::vector<StoredPane> out;
    Status s =
        store_->ScanPanes(instance, model, metric, from_ms, to_ms, [&out](const StoredPane& pane) {
          out.push_back(pane);
          return Status::Ok();
        });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  std::vector<SeriesInfo> Series() {
    std::vector<SeriesInfo> out;
    Status s = store_->ListSeries([&out](const SeriesInfo& info) { out.push_back(info); });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  testing::TempDir dir_;
  MetricsRegistry metrics_;
  Interner interner_;
  std::unique_ptr<StateStore> store_;
};

TEST_F(StateStoreTest, OptionsRequireAPath) {
  StateStoreOptions options;
  EXPECT_EQ(options.Validate().code(), Status::Code::kInvalidArgument);
  Result<std::unique_ptr<StateStore>> opened = StateStore::Open(options, nullptr);
  EXPECT_EQ(opened.status().code(), Status::Code::kInvalidArgument);
}

TEST_F(StateStoreTest, RoundTripsPanes) {
  std::vector<WindowSummary> panes = {Pane("node-1", "llama", "ttft_ms", 20'000, {1, 2, 3}, 1),
                                      Pane("node-1", "llama", "ttft_ms", 30'000, {4.5})};
  ASSERT_TRUE(store_->WritePanes(panes, interner_, 40'000).ok());

  std::vector<StoredPane> got = Scan("node-1", "llama", "ttft_ms", 0, 100'000);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].start_ms, 20'000);
  EXPECT_EQ(got[0].end_ms, 30'000);
  EXPECT_EQ(got[0].agg.count, 3u);
  EXPECT_EQ(got[0].agg.events, 3u);
  EXPECT_EQ(got[0].agg.errors, 1u);
  EXPECT_DOUBLE_EQ(got[0].agg.sum, 6);
  EXPECT_DOUBLE_EQ(got[0].agg.min, 1);
  EXPECT_DOUBLE_EQ(got[0].agg.max, 3);
  EXPECT_TRUE(got[0].agg.sketch == panes[0].agg.sketch);
  EXPECT_EQ(got[1].start_ms, 30'000);
  EXPECT_DOUBLE_EQ(got[1].agg.last, 4.5);
  EXPECT_EQ(store_->Watermark(), 40'000);
  EXPECT_EQ(metrics_.CounterValue("inferscope_state_panes_written_total"), 2u);
  EXPECT_EQ(metrics_.CounterValue("inferscope_state_write_errors_total"), 0u);
}

TEST_F(StateStoreTest, UpsertReplacesAStoredPane) {
  ASSERT_TRUE(store_->WritePanes({Pane("n", "m", "e2e_ms", 10'000, {1, 2})}, interner_, 0).ok());
  ASSERT_TRUE(store_->WritePanes({Pane("n", "m", "e2e_ms", 10'000, {7, 8, 9})}, interner_, 0).ok());
  std::vector<StoredPane> got = Scan("n", "m", "e2e_ms", 0, 1'000'000);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].agg.count, 3u);
  EXPECT_DOUBLE_EQ(got[0].agg.sum, 24);
}

TEST_F(StateStoreTest, ScanIsBoundedByTheSeriesAndTheRangeAndOrderedByTime) {
  std::vector<WindowSummary> panes;
  // Written out of order; neighbours whose keys share a byte prefix must not leak into the scan.
  for (int64_t start : {40'000, 0, 30'000, 10'000, 20'000}) {
    panes.push_back(Pane("a", "m", "ttft_ms", start, {static_cast<double>(start)}));
  }
  panes.push_back(Pane("a", "m2", "ttft_ms", 10'000, {1}));
  panes.push_back(Pane("ab", "m", "ttft_ms", 10'000, {1}));
  panes.push_back(Pane("a", "m", "ttft_ms_x", 10'000, {1}));
  panes.push_back(Pane("a", "m", "tpot_ms", 10'000, {1}));
  ASSERT_TRUE(store_->WritePanes(panes, interner_, 50'000).ok());

  std::vector<StoredPane> got = Scan("a", "m", "ttft_ms", 10'000, 40'000);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].start_ms, 10'000);
  EXPECT_EQ(got[1].start_ms, 20'000);
  EXPECT_EQ(got[2].start_ms, 30'000);
  EXPECT_DOUBLE_EQ(got[2].agg.sum, 30'000);

  EXPECT_EQ(Scan("a", "m", "ttft_ms", 0, INT64_MAX).size(), 5u);
  EXPECT_EQ(Scan("a", "m", "ttft_ms", 40'001, INT64_MAX).size(), 0u);
  EXPECT_EQ(Scan("a", "m", "ttft_ms", 30'000, 30'000).size(), 0u);
  EXPECT_EQ(Scan("a", "m", "ttft_ms", 30'000, 30'001).size(), 1u);
  EXPECT_EQ(Scan("a", "m", "missing", 0, INT64_MAX).size(), 0u);
  EXPECT_EQ(Scan("a", "", "ttft_ms", 0, INT64_MAX).size(), 0u);
}

TEST_F(StateStoreTest, ScanStopsAtTheFirstError) {
  ASSERT_TRUE(store_
                  ->WritePanes({Pane("n", "m", "x", 0, {1}), Pane("n", "m", "x", 10'000, {1})},
                               interner_, 0)
                  .ok());
  int calls = 0;
  Status s = store_->ScanPanes("n", "m", "x", 0, INT64_MAX, [&calls](const StoredPane&) {
    ++calls;
    return Status::Internal("stop");
  });
  EXPECT_EQ(s.code(), Status::Code::kInternal);
  EXPECT_EQ(calls, 1);
}

TEST_F(StateStoreTest, SeriesIndexMergesFirstAndLastSeen) {
  ASSERT_TRUE(
      store_
          ->WritePanes({Pane("b", "m", "ttft_ms", 50'000, {1}), Pane("ab", "m", "e2e_ms", 0, {1}),
                        Pane("a", "z", "e2e_ms", 0, {1}), Pane("a", "m", "ttft_ms", 20'000, {1})},
                       interner_, 60'000)
          .ok());
  // An older and a newer pane of one series, in separate batches.
  ASSERT_TRUE(store_->WritePanes({Pane("b", "m", "ttft_ms", 10'000, {1})}, interner_, 60'000).ok());
  ASSERT_TRUE(
      store_->WritePanes({Pane("b", "m", "ttft_ms", 90'000, {1})}, interner_, 100'000).ok());

  std::vector<SeriesInfo> series = Series();
  // Ordered by (instance, model, metric), not by key length.
  ASSERT_EQ(series.size(), 4u);
  EXPECT_EQ(series[0].instance, "a");
  EXPECT_EQ(series[0].model, "m");
  EXPECT_EQ(series[1].instance, "a");
  EXPECT_EQ(series[1].model, "z");
  EXPECT_EQ(series[1].metric, "e2e_ms");
  EXPECT_EQ(series[2].instance, "ab");
  EXPECT_EQ(series[3].instance, "b");
  EXPECT_EQ(series[3].first_seen_ms, 10'000);
  EXPECT_EQ(series[3].last_seen_ms, 90'000 + kPaneMs - 1);
}

TEST_F(StateStoreTest, WatermarkNeverMovesBack) {
  EXPECT_EQ(store_->Watermark(), 0);
  ASSERT_TRUE(store_->WritePanes(std::vector<WindowSummary>{}, interner_, 100).ok());
  ASSERT_TRUE(store_->WritePanes(std::vector<WindowSummary>{}, interner_, 50).ok());
  EXPECT_EQ(store_->Watermark(), 100);
}

TEST_F(StateStoreTest, ReopenKeepsPanesSeriesAndWatermark) {
  ASSERT_TRUE(
      store_->WritePanes({Pane("n", "m", "ttft_ms", 30'000, {5, 6})}, interner_, 40'000).ok());
  ASSERT_TRUE(Reopen().ok());
  EXPECT_EQ(store_->Watermark(), 40'000);
  std::vector<StoredPane> got = Scan("n", "m", "ttft_ms", 0, INT64_MAX);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_DOUBLE_EQ(got[0].agg.sum, 11);

  // The reloaded index is merged with, not replaced by, new writes.
  ASSERT_TRUE(store_->WritePanes({Pane("n", "m", "ttft_ms", 10'000, {1})}, interner_, 40'000).ok());
  std::vector<SeriesInfo> series = Series();
  ASSERT_EQ(series.size(), 1u);
  EXPECT_EQ(series[0].first_seen_ms, 10'000);
  EXPECT_EQ(series[0].last_seen_ms, 30'000 + kPaneMs - 1);
}

TEST_F(StateStoreTest, RecordTablesPutDeleteScanAndSurviveReopen) {
  std::vector<RecordWrite> writes = {{&kTestTable, "b", "2"},
                                     {&kTestTable, "a", "1"},
                                     {&kTestTable, "c", "3"},
                                     {&kOtherTestTable, "a", "other table"}};
  ASSERT_TRUE(store_->WriteRecords(writes).ok());
  std::vector<RecordWrite> remove = {{&kTestTable, "c", std::nullopt}};
  ASSERT_TRUE(store_->WriteRecords(remove).ok());
  ASSERT_TRUE(Reopen().ok());

  Result<std::optional<std::string>> a = store_->GetRecord(kTestTable, "a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->value_or("missing"), "1");
  Result<std::optional<std::string>> c = store_->GetRecord(kTestTable, "c");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->has_value());

  std::vector<std::string> seen;
  auto collect = [&seen](std::string_view k, std::string_view v) {
    seen.push_back(std::string(k) + "=" + std::string(v));
    return true;
  };
  ASSERT_TRUE(store_->ScanRecords(kTestTable, "", "", collect).ok());
  EXPECT_EQ(seen, (std::vector<std::string>{"a=1", "b=2"}));
  seen.clear();
  ASSERT_TRUE(store_->ScanRecords(kTestTable, "b", "", collect).ok());
  EXPECT_EQ(seen, (std::vector<std::string>{"b=2"}));
  seen.clear();
  ASSERT_TRUE(store_->ScanRecords(kOtherTestTable, "", "b", collect).ok());
  EXPECT_EQ(seen, (std::vector<std::string>{"a=other table"}));
  EXPECT_EQ(kTestTable.name(), "test_records");
}

// A table declared after the store opened has no column family in it: its reads and writes are
// refused with an error naming it, and the next store that opens has it.
TEST_F(StateStoreTest, RecordTableDeclaredAfterOpenIsRefusedUntilReopen) {
  static const RecordTable late("test_declared_late");
  Result<std::optional<std::string>> read = store_->GetRecord(late, "k");
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find("test_declared_late"), std::string::npos)
      << read.status().ToString();
  std::vector<RecordWrite> write = {{&late, "k", "v"}};
  EXPECT_FALSE(store_->WriteRecords(write).ok());
  ASSERT_TRUE(Reopen().ok());
  ASSERT_TRUE(store_->WriteRecords(write).ok());
  read = store_->GetRecord(late, "k");
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->value_or("missing"), "v");
}

TEST_F(StateStoreTest, RejectsNamesLongerThan255BytesAndWritesNothing) {
  std::string long_name(256, 'x');
  Status s = store_->WritePanes({Pane("ok", "m", "x", 0, {1}), Pane(long_name, "m", "x", 0, {1})},
                                interner_, 10);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_TRUE(Series().empty());
  EXPECT_EQ(store_->Watermark(), 0);
  EXPECT_EQ(
      store_->ScanPanes(long_name, "m", "x", 0, 1, [](const StoredPane&) { return Status::Ok(); })
          .code(),
      Status::Code::kInvalidArgument);
  // 255 bytes is fine.
  EXPECT_TRUE(
      store_->WritePanes({Pane(std::string(255, 'y'), "m", "x", 0, {1})}, interner_, 10).ok());
}

TEST_F(StateStoreTest, CorruptStoredValuesAreReportedAsCorruption) {
  ASSERT_TRUE(store_->WritePanes({Pane("n", "m", "x", 0, {1})}, interner_, 10).ok());
  store_.reset();
  {
    // Damage the stored values behind the store's back.
    rocksdb::DBOptions options;
    std::vector<std::string> names;
    ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(options, dir_.str(), &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const auto& name : names) families.emplace_back(name, rocksdb::ColumnFamilyOptions());
    ASSERT_EQ(names[1], "panes");
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(options, dir_.str(), families, &handles, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    ASSERT_TRUE(db->Put({}, handles[1], PaneKey("n", "m", "x", 0), "short").ok());
    ASSERT_TRUE(db->Put({}, handles[1], PaneKey("n", "m", "x", 10'000),
                        std::string(8, '\0') + "garbage that is no aggregate")
                    .ok());
    for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  }
  ASSERT_TRUE(Reopen().ok());
  auto ok = [](const StoredPane&) { return Status::Ok(); };
  EXPECT_EQ(store_->ScanPanes("n", "m", "x", 0, 10'000, ok).code(), Status::Code::kCorruption);
  EXPECT_EQ(store_->ScanPanes("n", "m", "x", 10'000, 20'000, ok).code(), Status::Code::kCorruption);
}

TEST_F(StateStoreTest, KeyEncodingIsLengthPrefixedAndBigEndian) {
  std::string key = PaneKey("ab", "", "c", 0x0102);
  EXPECT_EQ(key, std::string("\x02"
                             "ab\x00\x01"
                             "c\x00\x00\x00\x00\x00\x00\x01\x02",
                             14));
}

// FindSeries reads only the instance's own series (and the model's, when given) and tells an
// unknown instance from an unknown model; names that are prefixes of others, or end in 0xff bytes
// (the scan's upper bound carries), are kept apart.
TEST_F(StateStoreTest, FindSeriesScansOneInstance) {
  const std::string ff = "n\xff\xff";
  ASSERT_TRUE(
      store_
          ->WritePanes(
              {Pane("node", "m2", "ttft_ms", 0, {1}), Pane("node", "m10", "ttft_ms", 0, {1}),
               Pane("node", "m1", "e2e_ms", 0, {1}), Pane("node", "m", "ttft_ms", 0, {1}),
               Pane("node-2", "m1", "ttft_ms", 0, {1}), Pane("nod", "m1", "ttft_ms", 0, {1}),
               Pane(ff, "m", "ttft_ms", 0, {1}), Pane("n\xff\xff\x01", "x", "ttft_ms", 0, {1})},
              interner_, 0)
          .ok());
  Result<SeriesMatch> all = store_->FindSeries("node", nullptr, "ttft_ms");
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_TRUE(all->instance_known);
  EXPECT_TRUE(all->model_known);
  EXPECT_EQ(all->models, (std::vector<std::string>{"m", "m10", "m2"}));  // sorted by name

  const std::string m1 = "m1";
  Result<SeriesMatch> one = store_->FindSeries("node", &m1, "ttft_ms");
  ASSERT_TRUE(one.ok());
  EXPECT_TRUE(one->model_known);     // m1 has a series (e2e_ms) ...
  EXPECT_TRUE(one->models.empty());  // ... but not of ttft_ms
  const std::string m3 = "m3";
  Result<SeriesMatch> unknown_model = store_->FindSeries("node", &m3, "ttft_ms");
  ASSERT_TRUE(unknown_model.ok());
  EXPECT_TRUE(unknown_model->instance_known);
  EXPECT_FALSE(unknown_model->model_known);
  Result<SeriesMatch> unknown = store_->FindSeries("no", &m1, "ttft_ms");
  ASSERT_TRUE(unknown.ok());
  EXPECT_FALSE(unknown->instance_known);
  EXPECT_FALSE(unknown->model_known);

  Result<SeriesMatch> high = store_->FindSeries(ff, nullptr, "ttft_ms");
  ASSERT_TRUE(high.ok());
  EXPECT_EQ(high->models, std::vector<std::string>{"m"});
  EXPECT_FALSE(store_->FindSeries(std::string(kMaxNameBytes + 1, 'x'), nullptr, "ttft_ms").ok());
}

// ReadWindows merges every model's buckets into windows of the step, from the tier the plan picks.
TEST_F(StateStoreTest, ReadWindowsMergesModelsIntoWindows) {
  ASSERT_TRUE(store_
                  ->WritePanes({Pane("node", "a", "ttft_ms", 0, {1, 2}),
                                Pane("node", "a", "ttft_ms", kPaneMs, {3}),
                                Pane("node", "b", "ttft_ms", kPaneMs, {4}),
                                Pane("node", "b", "ttft_ms", 3 * kPaneMs, {5}),
                                Pane("node", "c", "ttft_ms", 0, {100})},
                               interner_, 4 * kPaneMs)
                  .ok());
  const std::vector<std::string> models = {"a", "b"};
  WindowsRequest request;
  request.instance = "node";
  request.models = models;
  request.metric = "ttft_ms";
  request.from_ms = 0;
  request.window_ms = 2 * kPaneMs;
  request.num_windows = 3;
  WindowsRead read;
  Status s = store_->ReadWindows(request, &read);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_EQ(read.windows.size(), 3u);
  EXPECT_EQ(read.windows[0].count, 4u);  // a: 1, 2, 3; b: 4
  EXPECT_EQ(read.windows[0].sum, 10);
  EXPECT_EQ(read.windows[1].count, 1u);  // b: 5
  EXPECT_EQ(read.windows[2].count, 0u);
  ASSERT_EQ(read.plan.size(), 1u);
  EXPECT_EQ(read.plan[0].tier, 0u);
  EXPECT_EQ(read.plan[0].from_ms, 0);
  EXPECT_EQ(read.plan[0].to_ms, 6 * kPaneMs);
  EXPECT_EQ(read.complete_from_ms, 0);
  EXPECT_FALSE(read.mismatched_bucket_ms.has_value());

  // A window that is no multiple of the stored panes.
  request.window_ms = 15'000;
  request.num_windows = 2;
  EXPECT_EQ(store_->ReadWindows(request, &read).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(read.mismatched_bucket_ms, kPaneMs);
  // Windows must be aligned to their length.
  request.from_ms = 5'000;
  EXPECT_EQ(store_->ReadWindows(request, &read).code(), Status::Code::kInvalidArgument);
}

// The fleet rollup against what a pass over every series reads (the per-series path of
// GET /v1/performance/metrics): the same panes, merged.
FleetRead FleetPerSeries(const StateStore& store, int64_t from_ms, int64_t to_ms) {
  FleetRead out;
  std::set<std::string> active;
  Status s = store.ListSeries([&](const SeriesInfo& info) {
    Status scanned = store.ScanPanes(info.instance, info.model, info.metric, from_ms, to_ms,
                                     [&](const StoredPane& pane) {
                                       if (info.metric == kFleetLatencyMetric) {
                                         out.latency.Merge(pane.agg);
                                         if (pane.agg.events > 0) active.insert(info.instance);
                                       } else if (info.metric == kFleetCachedMetric) {
                                         out.cached_tokens += pane.agg.sum;
                                       } else if (info.metric == kFleetPromptMetric) {
                                         out.prompt_tokens += pane.agg.sum;
                                       }
                                       return Status::Ok();
                                     });
    EXPECT_TRUE(scanned.ok()) << scanned.ToString();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  out.active_instances = active.size();
  return out;
}

void ExpectSameFleet(const FleetRead& got, const FleetRead& want, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(got.latency.count, want.latency.count);
  EXPECT_EQ(got.latency.events, want.latency.events);
  EXPECT_EQ(got.latency.errors, want.latency.errors);
  EXPECT_NEAR(got.latency.sum, want.latency.sum, 1e-9);
  EXPECT_EQ(got.latency.min, want.latency.min);
  EXPECT_EQ(got.latency.max, want.latency.max);
  if (want.latency.count > 0) {
    EXPECT_EQ(got.latency.Quantile(0.5), want.latency.Quantile(0.5));
    EXPECT_EQ(got.latency.Quantile(0.99), want.latency.Quantile(0.99));
  }
  EXPECT_NEAR(got.cached_tokens, want.cached_tokens, 1e-9);
  EXPECT_NEAR(got.prompt_tokens, want.prompt_tokens, 1e-9);
  EXPECT_EQ(got.active_instances, want.active_instances);
}

TEST_F(StateStoreTest, FleetRollupMatchesAPassOverEverySeries) {
  // Three pane starts; instance "a" with two models, "b" with one, "c" with gauges and a request
  // series without events; an instance's panes split over two batches.
  std::vector<WindowSummary> first = {
      Pane("a", "m1", "e2e_ms", 0, {10, 20, 30}, 1),
      Pane("a", "m1", "cached_tokens", 0, {5}),
      Pane("a", "m1", "prompt_tokens", 0, {40}),
      Pane("a", "m1", "ttft_ms", 0, {1000}),  // not a fleet metric
      Pane("b", "m1", "e2e_ms", 0, {50}),
      Pane("c", "m1", "e2e_ms", 0, {}),
  };
  ASSERT_TRUE(store_->WritePanes(first, interner_, 10'000).ok());
  std::vector<WindowSummary> second = {
      Pane("a", "m2", "e2e_ms", 0, {15}),
      Pane("a", "m2", "prompt_tokens", 0, {60}),
      Pane("a", "m1", "e2e_ms", kPaneMs, {11, 12}),
      Pane("b", "m1", "e2e_ms", kPaneMs, {7}, 1),
      Pane("b", "m1", "cached_tokens", kPaneMs, {3}),
      Pane("a", "m1", "e2e_ms", 2 * kPaneMs, {99}),
  };
  ASSERT_TRUE(store_->WritePanes(second, interner_, 30'000).ok());
  auto check = [&](const std::string& what) {
    for (auto [from, to] : {std::pair<int64_t, int64_t>{0, 30'000},
                            {0, 10'000},
                            {10'000, 20'000},
                            {10'000, 30'000},
                            {20'000, 40'000},
                            {30'000, 40'000}}) {
      FleetRead got;
      Result<bool> read = store_->ReadFleet(from, to, &got);
      ASSERT_TRUE(read.ok()) << read.status().ToString();
      ASSERT_TRUE(*read);
      ExpectSameFleet(got, FleetPerSeries(*store_, from, to),
                      what + " [" + std::to_string(from) + ", " + std::to_string(to) + ")");
    }
  };
  check("first emissions");
  FleetRead all;
  ASSERT_TRUE(store_->ReadFleet(0, 30'000, &all).ok());
  EXPECT_EQ(all.latency.events, 3u + 1 + 1 + 2 + 1 + 1);
  EXPECT_EQ(all.active_instances, 2u);  // "c" had no request in its pane
  EXPECT_EQ(all.panes, 3);

  // Late events replace a stored pane (update): counted once, with the new value.
  WindowSummary late = Pane("a", "m1", "e2e_ms", 0, {10, 20, 30, 500}, 2);
  late.update = true;
  WindowSummary late_c = Pane("c", "m1", "e2e_ms", 0, {8});
  late_c.update = true;
  ASSERT_TRUE(store_->WritePanes(std::vector<WindowSummary>{late, late_c}, interner_, 30'000).ok());
  check("after updates");
  ASSERT_TRUE(store_->ReadFleet(0, 10'000, &all).ok());
  EXPECT_EQ(all.latency.max, 500);
  EXPECT_EQ(all.active_instances, 3u);

  // A restarted engine emitting again, without `update`, panes it had written before it stopped:
  // recomputed, not added twice.
  ASSERT_TRUE(Reopen().ok());
  std::vector<WindowSummary> again = {Pane("b", "m1", "e2e_ms", kPaneMs, {7}, 1),
                                      Pane("a", "m1", "e2e_ms", 3 * kPaneMs, {1})};
  ASSERT_TRUE(store_->WritePanes(again, interner_, 40'000).ok());
  check("after a restart");

  // A range before the rollup's start is not answered from it.
  EXPECT_EQ(store_->FleetFromMs(), 0);
  FleetRead unused;
  Result<bool> before = store_->ReadFleet(-kPaneMs, 10'000, &unused);
  ASSERT_TRUE(before.ok());
  EXPECT_FALSE(*before);
}

TEST_F(StateStoreTest, FleetRollupCountsAPaneFiredAgainAfterARestartOnce) {
  // flush_on_close stores the open pane at shutdown (its end is past the stored watermark); the
  // restarted engine restores it and fires it again, complete and not marked `update`.
  std::vector<WindowSummary> partial = {Pane("a", "m1", "e2e_ms", 0, {10, 20}),
                                        Pane("b", "m1", "e2e_ms", 0, {5})};
  ASSERT_TRUE(store_->WritePanes(partial, interner_, 0).ok());
  ASSERT_TRUE(Reopen().ok());
  WindowSummary complete = Pane("a", "m1", "e2e_ms", 0, {10, 20, 30});
  ASSERT_FALSE(complete.update);
  ASSERT_TRUE(store_->WritePanes(std::vector<WindowSummary>{complete}, interner_, 0).ok());
  // The same pane twice in one batch: the batch stores the later one, and so counts the rollup.
  std::vector<WindowSummary> twice = {Pane("b", "m1", "e2e_ms", 0, {5, 6}),
                                      Pane("b", "m1", "e2e_ms", 0, {5, 6, 7})};
  ASSERT_TRUE(store_->WritePanes(twice, interner_, 0).ok());
  FleetRead got;
  Result<bool> read = store_->ReadFleet(0, 10'000, &got);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  ASSERT_TRUE(*read);
  ExpectSameFleet(got, FleetPerSeries(*store_, 0, 10'000), "after the restart");
  EXPECT_EQ(got.latency.events, 3u + 3);
  EXPECT_EQ(got.latency.max, 30);
  EXPECT_EQ(got.active_instances, 2u);
}

}  // namespace
}  // namespace inferscope
