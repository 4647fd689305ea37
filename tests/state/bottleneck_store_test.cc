// The bottleneck store (state/bottleneck_store.h) and the rocksdb_bottlenecks sink, over a real
// RocksDB store in a temporary directory.

#include "state/bottleneck_store.h"

#include <gtest/gtest.h>

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

TEST(BottleneckStoreTest, PruneDropsOldHistoryAndOldResolvedRecords) {
  testing::TempDir dir;
  StateStoreOptions options;
  options.path = dir.str();
  auto store = StateStore::Open(options, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Bottleneck active = Make("a", BottleneckType::kErrorSpike, BottleneckSeverity::kLow, true, 1000);
  Bottleneck old_resolved =
      Make("b", BottleneckType::kErrorSpike, BottleneckSeverity::kLow, true, 1000);
  old_resolved.state = BottleneckState::kResolved;
  Bottleneck new_resolved =
      Make("c", BottleneckType::kErrorSpike, BottleneckSeverity::kLow, true, 9000);
  new_resolved.state = BottleneckState::kResolved;
  ASSERT_TRUE(StoreBottlenecks(**store, std::vector{active, old_resolved, new_resolved}).ok());
  Result<size_t> pruned = PruneBottlenecks(**store, 5000);
  ASSERT_TRUE(pruned.ok());
  EXPECT_EQ(*pruned, 3u);  // two history records before 5000, one resolved current record
  std::vector<std::string> current;
  ASSERT_TRUE(ScanBottlenecks(**store, "", [&](std::string_view, const Bottleneck& b) {
                current.push_back(b.instance);
                return true;
              }).ok());
  EXPECT_EQ(current, (std::vector<std::string>{"a", "c"}));
  int history = 0;
  ASSERT_TRUE(ScanBottleneckHistory(**store, 0, [&](const Bottleneck&) {
                ++history;
                return true;
              }).ok());
  EXPECT_EQ(history, 1);
}

TEST(BottleneckStoreTest, SinkStoresTheLatestChangeAndTheHistory) {
  testing::TempDir dir;
  StateStoreOptions options;
  options.path = dir.str();
  auto store = StateStore::Open(options, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  Result<std::unique_ptr<RocksDbBottleneckSink>> sink =
      RocksDbBottleneckSink::Create(ConfigNode("t.yaml", YAML::Load("retention: 1h"), "options"));
  ASSERT_TRUE(sink.ok()) << sink.status().ToString();
  MetricsRegistry metrics;
  ManualClock clock(10'000);
  StageContext ctx;
  ctx.name = "bottleneck_store";
  ctx.metrics = &metrics;
  ctx.clock = &clock;
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
