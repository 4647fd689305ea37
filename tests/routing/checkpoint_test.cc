// The learner's checkpoint record (RoutingLearner::SnapshotModel / RestoreModel): a restored
// learner has the same estimates, gate state and (within the posterior draws' noise) weights.

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "routing/learner.h"
#include "tests/routing/routing_test_util.h"

namespace inferscope::routing {
namespace {

using testing::Draw;
using testing::TrueBackend;

TEST(CheckpointTest, SnapshotThenRestoreGivesTheSameEstimatesAndWeights) {
  RoutingOptions options;
  options.models.push_back({"m", {testing::Spec("a"), testing::Spec("b"), testing::Spec("c")}});
  RoutingLearner before(options);
  std::mt19937_64 rng(31);
  TrueBackend a{.name = "a", .ttft_ms = 60}, b{.name = "b", .ttft_ms = 120},
      c{.name = "c", .ttft_ms = 90, .error_rate = 1};
  int64_t t = 1'000'000;
  for (int i = 0; i < 3000; ++i, t += 10) {
    before.Observe(Draw(a, "m", t, rng));
    before.Observe(Draw(b, "m", t, rng));
    if (i < 5) before.Observe(Draw(c, "m", t, rng));  // c fails 5 in a row: ejected
    before.ObserveGauge(
        {.backend = "a", .model = "m", .name = "num_requests_running", .value = 3, .time_ms = t});
  }
  // A model and a backend learned from the stream (not in the catalogue) survive too.
  before.Observe(Draw(TrueBackend{.name = "x", .ttft_ms = 70}, "learned", t, rng));
  ASSERT_EQ(before.num_models(), 2u);

  RoutingLearner after(options);
  for (RoutingLearner::ModelId m = 0; m < before.num_models(); ++m) {
    const std::string record = before.SnapshotModel(m);
    ASSERT_FALSE(record.empty());
    ASSERT_TRUE(after.RestoreModel(record).ok());
  }
  ASSERT_EQ(after.num_models(), 2u);
  for (const char* name : {"a", "b", "c"}) {
    auto x = before.Estimate("m", name, t + 5'000);
    auto y = after.Estimate("m", name, t + 5'000);
    ASSERT_TRUE(x.ok() && y.ok()) << name;
    EXPECT_DOUBLE_EQ(x->ttft_ms, y->ttft_ms) << name;
    EXPECT_DOUBLE_EQ(x->e2e_ms, y->e2e_ms) << name;
    EXPECT_DOUBLE_EQ(x->ttft_samples, y->ttft_samples) << name;
    EXPECT_DOUBLE_EQ(x->error_rate, y->error_rate) << name;
    EXPECT_DOUBLE_EQ(x->error_samples, y->error_samples) << name;
    EXPECT_EQ(x->gate, y->gate) << name;
    EXPECT_EQ(x->ejections, y->ejections) << name;
  }
  EXPECT_EQ(after.Estimate("m", "c", t)->gate, GateState::kEjected);
  EXPECT_TRUE(after.Estimate("learned", "x", t).ok());
  // Weights: the same within the posterior draws' noise.
  auto wx = before.Weights("m", Strategy::kLowestLatency, t + 5'000);
  auto wy = after.Weights("m", Strategy::kLowestLatency, t + 5'000);
  ASSERT_TRUE(wx.ok() && wy.ok());
  ASSERT_EQ(wx->backends.size(), wy->backends.size());
  for (size_t i = 0; i < wx->backends.size(); ++i) {
    EXPECT_EQ(wx->backends[i].backend, wy->backends[i].backend);
    EXPECT_NEAR(wx->backends[i].weight, wy->backends[i].weight, 0.05) << wx->backends[i].backend;
  }
  // A second snapshot of the restored learner is the same record.
  EXPECT_EQ(after.SnapshotModel(after.FindModel("m")), before.SnapshotModel(before.FindModel("m")));
}

TEST(CheckpointTest, BadRecordsAreRefused) {
  RoutingLearner learner(RoutingOptions{});
  EXPECT_FALSE(learner.RestoreModel("not json").ok());
  EXPECT_FALSE(learner.RestoreModel(R"({"v": 99, "model": "m"})").ok());
  EXPECT_FALSE(learner.RestoreModel(R"({"v": 1, "model": "m"})").ok());  // fields missing
}

}  // namespace
}  // namespace inferscope::routing
