// The routing weights store (state/routing_store.h) and the rocksdb_routing sink, over a real
// RocksDB store in a temporary directory.

#include "state/routing_store.h"

#include <gtest/gtest.h>

#include "pipeline/summary.h"
#include "routing/published.h"
#include "state/rocksdb_routing_sink.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using routing::Strategy;

routing::RoutingWeights Make(const std::string& model, Strategy s, double w0, int64_t t) {
  routing::RoutingWeights w;
  w.model = model;
  w.strategy = s;
  w.time_ms = t;
  w.backends = {{"a", w0, w0, routing::GateState::kHealthy},
                {"b", 1 - w0, 1 - w0, routing::GateState::kHealthy}};
  return w;
}

TEST(RoutingStoreTest, SinkKeepsTheLatestPerModelAndStrategy) {
  testing::TempDir dir;
  StateStoreOptions options;
  options.path = dir.str();
  MetricsRegistry metrics;
  auto store = StateStore::Open(options, &metrics);
  ASSERT_TRUE(store.ok()) << store.status().ToString();

  auto sink = RocksDbRoutingSink::Create(ConfigNode());
  ASSERT_TRUE(sink.ok());
  StageContext ctx;
  ctx.name = "routing_store";
  ctx.metrics = &metrics;
  ASSERT_FALSE((*sink)->Open(ctx).ok()) << "no state store: refused";
  ctx.state = store->get();
  ASSERT_TRUE((*sink)->Open(ctx).ok());

  OutputBatch first;
  first.Mutable<kind::RoutingWeights>() = {Make("llama", Strategy::kBalanced, 0.5, 1),
                                           Make("llama", Strategy::kLowestLatency, 0.6, 1),
                                           Make("llama-2", Strategy::kBalanced, 0.7, 1)};
  ASSERT_TRUE((*sink)->Write(first).ok());
  OutputBatch second;
  second.Mutable<kind::RoutingWeights>() = {Make("llama", Strategy::kBalanced, 0.9, 2)};
  ASSERT_TRUE((*sink)->Write(second).ok());

  auto got = GetRoutingWeights(**store, "llama", Strategy::kBalanced);
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->time_ms, 2);
  EXPECT_DOUBLE_EQ((*got)->backends[0].weight, 0.9);
  auto none = GetRoutingWeights(**store, "llama", Strategy::kAdaptive);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());

  // A model's scan does not reach another model whose name it prefixes ("llama" vs "llama-2").
  std::vector<std::string> seen;
  ASSERT_TRUE(ScanRoutingWeights(**store, "llama", [&](const routing::RoutingWeights& w) {
                seen.push_back(w.model + "/" + std::string(routing::StrategyName(w.strategy)));
                return true;
              }).ok());
  EXPECT_EQ(seen, (std::vector<std::string>{"llama/lowest_latency", "llama/balanced"}));
  size_t all = 0;
  ASSERT_TRUE(ScanRoutingWeights(**store, "", [&](const routing::RoutingWeights&) {
                ++all;
                return true;
              }).ok());
  EXPECT_EQ(all, 3u);
  EXPECT_EQ(metrics
                .GetCounter("inferscope_sink_routing_weights_written_total", "",
                            {{"stage", "routing_store"}})
                ->value(),
            4u);
}

}  // namespace
}  // namespace inferscope
