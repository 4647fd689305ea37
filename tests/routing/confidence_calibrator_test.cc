// ConfidenceCalibrator: the monotone, time-decayed map from a raw confidence to the accuracy its
// labels show, on streams whose raw confidence is known to be over- or under-confident.

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "routing/calibration.h"

namespace inferscope::routing {
namespace {

// Feeds `n` labels at 10 ms spacing from `t`: raw confidence uniform in [0, 1], right with
// probability truth(raw). Returns the time after the last one.
template <typename Truth>
int64_t Feed(ConfidenceCalibrator* c, int n, int64_t t, Truth truth, std::mt19937_64* rng) {
  std::uniform_real_distribution<double> u(0, 1);
  for (int i = 0; i < n; ++i, t += 10) {
    const double raw = u(*rng);
    c->Add(raw, u(*rng) < truth(raw) ? 1.0 : 0.0, t);
  }
  return t;
}

TEST(ConfidenceCalibratorTest, WithoutLabelsItIsTheIdentity) {
  ConfidenceCalibrator c;
  for (double raw : {0.05, 0.3, 0.5, 0.7, 0.95}) EXPECT_NEAR(c.Map(raw), raw, 1e-9);
}

TEST(ConfidenceCalibratorTest, AnOverConfidentStreamIsMappedDown) {
  ConfidenceCalibrator c(/*half_life_ms=*/1'000'000, /*prior_weight=*/20);
  std::mt19937_64 rng(7);
  Feed(
      &c, 20'000, 0, [](double raw) { return raw * raw; }, &rng);  // right raw² of the time
  for (double raw : {0.3, 0.5, 0.8}) EXPECT_NEAR(c.Map(raw), raw * raw, 0.05) << raw;
}

TEST(ConfidenceCalibratorTest, AnUnderConfidentStreamIsMappedUpAndStaysMonotone) {
  ConfidenceCalibrator c(1'000'000, 20);
  std::mt19937_64 rng(8);
  // Right more often than it says, and not monotonically so (a dip at 0.6-0.7): the map is the
  // isotonic fit, so it pools the dip and never decreases.
  Feed(
      &c, 20'000, 0,
      [](double raw) { return raw >= 0.6 && raw < 0.7 ? 0.5 : std::min(1.0, 0.2 + raw); }, &rng);
  EXPECT_NEAR(c.Map(0.3), 0.5, 0.05);
  double last = 0;
  for (double raw = 0; raw <= 1.0; raw += 0.01) {
    EXPECT_GE(c.Map(raw), last - 1e-12) << raw;
    last = c.Map(raw);
  }
}

TEST(ConfidenceCalibratorTest, OldLabelsAreForgottenWithTheHalfLife) {
  ConfidenceCalibrator c(/*half_life_ms=*/10'000, 20);
  std::mt19937_64 rng(9);
  int64_t t = Feed(
      &c, 5'000, 0, [](double) { return 0.0; }, &rng);  // always wrong
  EXPECT_LT(c.Map(0.9), 0.2);
  t = Feed(
      &c, 5'000, t + 100'000, [](double) { return 1.0; }, &rng);  // then always right
  EXPECT_GT(c.Map(0.5), 0.9);
  // The weight is bounded by the half-life: ~ one label per 10 ms over 10 s / ln 2.
  EXPECT_LT(c.weight(), 1'500);
}

TEST(ConfidenceCalibratorTest, LoadRestoresTheMap) {
  ConfidenceCalibrator c(1'000'000, 20), d(1'000'000, 20);
  std::mt19937_64 rng(10);
  Feed(
      &c, 5'000, 0, [](double raw) { return raw * raw; }, &rng);
  d.Load(c.label_sums(), c.counts(), c.as_of_ms());
  for (double raw = 0; raw <= 1.0; raw += 0.05) EXPECT_DOUBLE_EQ(d.Map(raw), c.Map(raw));
}

}  // namespace
}  // namespace inferscope::routing
