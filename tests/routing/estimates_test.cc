#include "routing/estimates.h"

#include <gtest/gtest.h>

#include <random>

#include "routing/learner.h"
#include "routing_test_util.h"

namespace inferscope::routing {
namespace {

TEST(DecayTest, WeightHalvesPerHalfLifeOfEventTime) {
  DecayedMoments m;
  for (int i = 0; i < 10; ++i) m.Add(5.0, 1000, 10'000);
  EXPECT_DOUBLE_EQ(m.Weight(1000, 10'000), 10.0);
  EXPECT_NEAR(m.Weight(11'000, 10'000), 5.0, 1e-9);
  EXPECT_NEAR(m.Weight(31'000, 10'000), 1.25, 1e-9);
  EXPECT_DOUBLE_EQ(m.mean(), 5.0);  // forgetting lowers the weight, not the mean
}

TEST(DecayTest, DecayIsByTimeNotBySampleCount) {
  // Ten samples in one millisecond weigh the same as ten spread over it; a sample a half-life
  // older than the reference counts half.
  DecayedMoments burst, spread;
  for (int i = 0; i < 10; ++i) burst.Add(1.0, 0, 1000);
  for (int i = 0; i < 10; ++i) spread.Add(1.0, i * 100, 1000);
  EXPECT_NEAR(burst.Weight(0, 1000), 10, 1e-9);
  EXPECT_LT(spread.Weight(900, 1000), 10);
  EXPECT_GT(spread.Weight(900, 1000), 6.5);

  DecayedMoments m;
  m.Add(10.0, 2000, 1000);
  m.Add(0.0, 1000, 1000);  // out of order, one half-life older: weight 0.5
  EXPECT_NEAR(m.Weight(2000, 1000), 1.5, 1e-9);
  EXPECT_NEAR(m.mean(), 10.0 / 1.5, 1e-9);
}

TEST(DecayTest, NewEvidenceReplacesOldAfterAFewHalfLives) {
  DecayedMoments m;
  for (int i = 0; i < 100; ++i) m.Add(1.0, i * 100, 1000);          // 10 s of 1.0
  for (int i = 0; i < 50; ++i) m.Add(3.0, 10'000 + i * 100, 1000);  // then 5 s of 3.0
  EXPECT_NEAR(m.mean(), 3.0, 0.1);
}

TEST(PosteriorTest, NarrowsWithEvidenceAndWidensAgainWithAge) {
  RoutingOptions options;
  options.estimator.half_life_ms = 30'000;
  RoutingLearner learner(options);
  std::mt19937_64 rng(7);
  testing::TrueBackend a{.name = "a", .ttft_ms = 100};
  testing::TrueBackend b{.name = "b", .ttft_ms = 200};
  learner.Observe(testing::Draw(a, "m", 0, rng));
  learner.Observe(testing::Draw(b, "m", 0, rng));
  const double sd1 = learner.Estimate("m", "a", 0)->ttft_log_sd;
  for (int i = 1; i < 200; ++i) learner.Observe(testing::Draw(a, "m", i, rng));
  const auto e = learner.Estimate("m", "a", 200);
  ASSERT_TRUE(e.ok());
  EXPECT_LT(e->ttft_log_sd, sd1 / 4);
  EXPECT_NEAR(e->ttft_ms, 100 * std::exp(0.3 * 0.3 / 2), 10);
  EXPECT_NEAR(e->ttft_samples, 200, 1);
  // Ten half-lives without evidence: about 0.2 effective samples left, uncertain again.
  const auto old = learner.Estimate("m", "a", 200 + 300'000);
  EXPECT_LT(old->ttft_samples, 0.25);
  EXPECT_GT(old->ttft_log_sd, sd1 / 1.5);
}

TEST(PosteriorTest, LittleDataIsUncertainNotGoodOrBad) {
  // One sample of a new backend: its estimate sits between its sample and the pooled model
  // estimate of the others.
  RoutingLearner learner(RoutingOptions{});
  std::mt19937_64 rng(3);
  testing::TrueBackend a{.name = "a", .ttft_ms = 100, .sigma = 0.01};
  for (int i = 0; i < 100; ++i) learner.Observe(testing::Draw(a, "m", i, rng));
  Outcome o = testing::Draw(a, "m", 100, rng);
  o.backend = "new";
  o.ttft_ms = 400;
  learner.Observe(o);
  const auto e = learner.Estimate("m", "new", 100);
  ASSERT_TRUE(e.ok());
  EXPECT_GT(e->ttft_ms, 120);
  EXPECT_LT(e->ttft_ms, 380);
  EXPECT_GT(e->ttft_log_sd, learner.Estimate("m", "a", 100)->ttft_log_sd * 3);
}

TEST(PosteriorTest, ErrorRateAndQualityUseTheirOwnHalfLives) {
  RoutingOptions options;
  options.estimator.half_life_ms = 1'000;
  options.estimator.quality_half_life_ms = 100'000;
  RoutingLearner learner(options);
  std::mt19937_64 rng(5);
  testing::TrueBackend a{.name = "a", .error_rate = 0.2, .quality = 0.9};
  for (int i = 0; i < 500; ++i) learner.Observe(testing::Draw(a, "m", i * 2, rng));
  const auto now = learner.Estimate("m", "a", 1000);
  EXPECT_NEAR(now->error_rate, 0.2, 0.08);
  EXPECT_NEAR(now->quality, 0.9, 1e-6);
  const auto later = learner.Estimate("m", "a", 11'000);  // 10 latency half-lives
  EXPECT_LT(later->error_samples, now->error_samples / 500);
  EXPECT_GT(later->quality_samples, now->quality_samples * 0.9);
}

}  // namespace
}  // namespace inferscope::routing
