// JudgeProportion: the sequential look for an error ratio (two proportions, or a difference in
// differences with peers).

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "workflows/canary.h"

namespace inferscope {
namespace {

ProportionCounts Draw(std::mt19937_64& rng, uint64_t n, double p) {
  std::binomial_distribution<uint64_t> errors(n, p);
  return {n, errors(rng)};
}

TEST(JudgeProportionTest, ARiseOfErrorsRegressesAndAFallImproves) {
  std::mt19937_64 rng(1);
  CanaryOptions o;
  ProportionSamples s;
  s.before = Draw(rng, 5000, 0.01);
  s.after = Draw(rng, 3000, 0.03);
  Result<CanaryEvidence> e = JudgeProportion(s, 0.5, /*lower_is_better=*/true, o);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->verdict, CanaryVerdict::kRegressed);
  EXPECT_GT(e->z, e->boundary);
  EXPECT_NEAR(e->after_q, 0.03, 0.01);
  EXPECT_GT(e->ratio, 2);
  EXPECT_FALSE(e->peer_adjusted);

  s.after = Draw(rng, 3000, 0.001);
  e = JudgeProportion(s, 0.5, true, o);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->verdict, CanaryVerdict::kImproved);
}

TEST(JudgeProportionTest, FewSamplesWaitAndNoChangeEndsInNoEffect) {
  CanaryOptions o;
  ProportionSamples s;
  s.before = {50, 1};
  s.after = {50, 10};
  EXPECT_EQ(JudgeProportion(s, 0.5, true, o)->verdict, CanaryVerdict::kContinue)
      << "fewer than min_samples";
  EXPECT_EQ(JudgeProportion(s, 1.0, true, o)->verdict, CanaryVerdict::kNoEffect);
  s.before = {1000, 0};
  s.after = {1000, 0};
  Result<CanaryEvidence> e = JudgeProportion(s, 1.0, true, o);
  EXPECT_EQ(e->verdict, CanaryVerdict::kNoEffect) << "no errors at all: z = 0";
  EXPECT_EQ(e->z, 0);
}

TEST(JudgeProportionTest, ErrorsFromNoneAreAnEffect) {
  CanaryOptions o;
  ProportionSamples s;
  s.before = {2000, 0};
  s.after = {2000, 40};
  Result<CanaryEvidence> e = JudgeProportion(s, 1.0, true, o);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->verdict, CanaryVerdict::kRegressed);
  EXPECT_TRUE(std::isfinite(e->ratio));
}

TEST(JudgeProportionTest, PeersAbsorbAFleetWideRise) {
  std::mt19937_64 rng(2);
  CanaryOptions o;
  ProportionSamples s;
  s.before = Draw(rng, 4000, 0.01);
  s.after = Draw(rng, 4000, 0.04);  // everyone's errors rose (a bad upstream), not the change
  ProportionCounts pb = Draw(rng, 12000, 0.01), pa = Draw(rng, 12000, 0.04);
  EXPECT_EQ(JudgeProportion(s, 1.0, true, o)->verdict, CanaryVerdict::kRegressed)
      << "without peers the swing looks like the change";
  s.peers_before = &pb;
  s.peers_after = &pa;
  Result<CanaryEvidence> e = JudgeProportion(s, 1.0, true, o);
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(e->peer_adjusted);
  EXPECT_EQ(e->verdict, CanaryVerdict::kNoEffect) << "z " << e->z << " ratio " << e->ratio;
  s.peers_after = nullptr;
  EXPECT_FALSE(JudgeProportion(s, 1.0, true, o).ok()) << "both peer periods or neither";
}

// Under no effect, continuous looks (20 per canary) give a wrong verdict in each direction at
// most about alpha.
TEST(JudgeProportionTest, WrongVerdictsUnderTheNullStayNearAlpha) {
  std::mt19937_64 rng(3);
  CanaryOptions o;
  int regressed = 0, improved = 0;
  constexpr int kTrials = 400;
  for (int trial = 0; trial < kTrials; ++trial) {
    ProportionSamples s;
    s.before = Draw(rng, 6000, 0.02);
    for (int look = 1; look <= 20; ++look) {
      ProportionCounts more = Draw(rng, 300, 0.02);
      s.after.events += more.events;
      s.after.errors += more.errors;
      CanaryVerdict v = JudgeProportion(s, look / 20.0, true, o)->verdict;
      if (v == CanaryVerdict::kRegressed) ++regressed;
      if (v == CanaryVerdict::kImproved) ++improved;
      if (v != CanaryVerdict::kContinue) break;
    }
  }
  EXPECT_LE(regressed, kTrials * 0.05 * 1.6) << regressed;
  EXPECT_LE(improved, kTrials * 0.05 * 1.6) << improved;
}

}  // namespace
}  // namespace inferscope
