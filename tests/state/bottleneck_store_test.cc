// The bottleneck store (state/bottleneck_store.h) and the rocksdb_bottlenecks sink, over a real
// RocksDB store in a temporary directory.

#include "state/bottleneck_store.h"

#include <gtest/gtest.h>

#include "pipeline/clock.h"
#include "pipeline/summary.h"
#include "state/rocksdb_bottleneck_sink.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

Bottleneck Make(const std::string& instance, BottleneckType type, BottleneckSeverity severity,
                bool primary, int64_t detected_at) {
  Bottleneck b;
  b.instance = instance;
  b.model = std::string("llama");
  b.engine = std::string("vllm");
  b.type = type;
  b.severity = severity;
  b.primary = primary;
  b.root = primary ? type : BottleneckType::kMemoryPressure;
  b.chain = {b.root};
  if (!primary) b.chain.push_back(type);
  b.metric = std::string("m");
  b.stat = std::string("mean");
  b.value = 1;
  b.threshold = 0.5;
  b.peer_median = NAN;
  b.window_start_ms = 0;
  b.window_end_ms = 30'000;
  b.detected_at_ms = detected_at;
  b.description = std::string("d");
  return b;
}

size_t Count(const StateStore& store, const RecordTable& table) {
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

TEST(BottleneckStoreTest, HistoryExpiresAndTakesOldResolutionsWithIt) {
  constexpr int64_t kDay = 24LL * 3600 * 1000;
  constexpr int64_t kStart = 1'700'000'000'000;
  testing::TempDir dir;
  ManualClock clock(kStart);
  StateStoreOptions options;
  options.path = dir.str();
  options.clock = &clock;
  auto store = StateStore::Open(options, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE(kBottleneckHistoryTable.time_keyed());
  // "a" raised long ago and still active; "b" raised and resolved long ago; "c" resolved recently.
  Bottleneck active =
      Make("a", BottleneckType::kErrorSpike, BottleneckSeverity::kLow, true, kStart);
  Bottleneck b_raised =
      Make("b", BottleneckType::kErrorSpike, BottleneckSeverity::kLow, true, kStart);
  Bottleneck b_resolved = b_raised;
  b_resolved.state = BottleneckState::kResolved;
  b_resolved.change = BottleneckChange::kResolved;
  b_resolved.detected_at_ms = kStart + 1000;
  Bottleneck c_resolved =
      Make("c", BottleneckType::kErrorSpike, BottleneckSeverity::kLow, true, kStart + 7 * kDay);
  c_resolved.state = BottleneckState::kResolved;
  c_resolved.change = BottleneckChange::kResolved;
  // "d" raised early and retracted long ago (bottleneck_classify `early: true`): stored and
  // expired like a resolution.
  Bottleneck d_raised =
      Make("d", BottleneckType::kErrorSpike, BottleneckSeverity::kLow, true, kStart);
  d_raised.early = true;
  Bottleneck d_retracted = d_raised;
  d_retracted.state = BottleneckState::kRetracted;
  d_retracted.change = BottleneckChange::kRetracted;
  d_retracted.detected_at_ms = kStart + 1000;
  ASSERT_TRUE(StoreBottlenecks(**store, std::vector{active, b_raised, b_resolved, c_resolved,
                                                    d_raised, d_retracted})
                  .ok());
  EXPECT_EQ(Count(**store, kBottleneckHistoryTable), 6u);

  clock.Set(kStart + 7 * kDay + 2000);  // the default retention (7 d) has passed for a and b
  ASSERT_TRUE((*store)->RunMaintenance().ok());
  EXPECT_EQ(Count(**store, kBottleneckHistoryTable), 1u);  // c's resolution is recent
  std::vector<std::string> current;
  ASSERT_TRUE(ScanBottlenecks(**store, "", [&](std::string_view, const Bottleneck& b) {
                current.push_back(b.instance);
                return true;
              }).ok());
  EXPECT_EQ(current, (std::vector<std::string>{"a", "c"}))
      << "b was resolved and d retracted 7 d ago: forgotten";
}

// One bottleneck raised, resolved and raised again within a millisecond of wall-clock time (a
// backlog closing many panes in one step) keeps every change; on main they shared history keys.
TEST(BottleneckStoreTest, ChangesInTheSameMillisecondAreAllKept) {
  testing::TempDir dir;
  StateStoreOptions options;
  options.path = dir.str();
  Result<std::unique_ptr<StateStore>> store = StateStore::Open(options, nullptr);
  ASSERT_TRUE(store.ok());
  std::vector<Bottleneck> changes;
  for (int i = 0; i < 4; ++i) {
    Bottleneck b = Make("vllm-1", BottleneckType::kHighLatency, BottleneckSeverity::kHigh, true,
                        1'800'000'000'000);
    b.change = i % 2 == 0 ? BottleneckChange::kRaised : BottleneckChange::kResolved;
    b.window_start_ms = i * 30'000;
    b.window_end_ms = b.window_start_ms + 30'000;
    changes.push_back(b);
  }
  ASSERT_TRUE(StoreBottlenecks(**store, changes).ok());
  std::vector<int64_t> history;
  ASSERT_TRUE(ScanBottleneckHistory(**store, 0, [&](const Bottleneck& b) {
                history.push_back(b.window_start_ms);
                return true;
              }).ok());
  EXPECT_EQ(history, (std::vector<int64_t>{0, 30'000, 60'000, 90'000}));
}

TEST(BottleneckStoreTest, SinkStoresTheLatestChangeAndTheHistory) {
  testing::TempDir dir;
  StateStoreOptions options;
  options.path = dir.str();
  auto store = StateStore::Open(options, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Result<std::unique_ptr<RocksDbBottleneckSink>> sink = RocksDbBottleneckSink::Create(ConfigNode());
  ASSERT_TRUE(sink.ok()) << sink.status().ToString();
  MetricsRegistry metrics;
  StageContext ctx;
  ctx.name = "bottleneck_store";
  ctx.metrics = &metrics;
  EXPECT_FALSE((*sink)->Open(ctx).ok()) << "no state store";
  ctx.state = store->get();
  ASSERT_TRUE((*sink)->Open(ctx).ok());
  Bottleneck raised =
      Make("vllm-1", BottleneckType::kQueueBuildup, BottleneckSeverity::kHigh, true, 5000);
  Bottleneck resolved = raised;
  resolved.state = BottleneckState::kResolved;
  resolved.change = BottleneckChange::kResolved;
  resolved.detected_at_ms = 6000;
  OutputBatch batch;
  batch.Mutable<kind::Bottleneck>() = {raised, resolved};
  ASSERT_TRUE((*sink)->Write(batch).ok());
  std::vector<Bottleneck> current;
  ASSERT_TRUE(ScanBottlenecks(**store, "", [&](std::string_view, const Bottleneck& b) {
                current.push_back(b);
                return true;
              }).ok());
  ASSERT_EQ(current.size(), 1u);
  EXPECT_EQ(current[0].state, BottleneckState::kResolved);
  int history = 0;
  ASSERT_TRUE(ScanBottleneckHistory(**store, 0, [&](const Bottleneck&) {
                ++history;
                return true;
              }).ok());
  EXPECT_EQ(history, 2);
  EXPECT_FALSE(
      RocksDbBottleneckSink::Create(ConfigNode("t.yaml", YAML::Load("retention: 1s"), "options"))
          .ok());
}

}  // namespace
}  // namespace inferscope
