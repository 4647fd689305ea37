#include "values/rank_test.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <utility>
#include <vector>

namespace inferscope {
namespace {

// The textbook test on raw samples: midranks, tie-corrected variance.
struct Exact {
  double u = 0, z = 0;
};
Exact ExactMannWhitney(const std::vector<double>& x, const std::vector<double>& y) {
  std::vector<std::pair<double, int>> all;
  for (double v : x) all.emplace_back(v, 0);
  for (double v : y) all.emplace_back(v, 1);
  std::sort(all.begin(), all.end());
  const double n = static_cast<double>(all.size());
  double rank_sum_x = 0, tie_sum = 0;
  for (size_t i = 0; i < all.size();) {
    size_t j = i;
    while (j < all.size() && all[j].first == all[i].first) ++j;
    const double midrank = (static_cast<double>(i + j) + 1) / 2;  // ranks i+1 .. j
    for (size_t k = i; k < j; ++k) {
      if (all[k].second == 0) rank_sum_x += midrank;
    }
    const double t = static_cast<double>(j - i);
    tie_sum += t * t * t - t;
    i = j;
  }
  const double nx = static_cast<double>(x.size()), ny = static_cast<double>(y.size());
  Exact e;
  e.u = rank_sum_x - nx * (nx + 1) / 2;
  const double var = nx * ny / 12 * ((n + 1) - tie_sum / (n * (n - 1)));
  e.z = (e.u - nx * ny / 2) / std::sqrt(var);
  return e;
}

DDSketch SketchOf(const std::vector<double>& values) {
  DDSketch s;
  for (double v : values) s.Add(v);
  return s;
}

std::vector<double> LogNormal(std::mt19937_64& rng, size_t n, double median, double sigma) {
  std::lognormal_distribution<double> d(std::log(median), sigma);
  std::vector<double> out(n);
  for (double& v : out) v = d(rng);
  return out;
}

TEST(RankTestTest, MatchesTheExactTestOnIntegersWhereBinsAreExact) {
  // Small integers each get a bin of their own (bins are 2 % wide), so the sketch test is the
  // exact tie-corrected test.
  std::mt19937_64 rng(7);
  std::poisson_distribution<int> px(3.0), py(3.6);
  std::vector<double> x(400), y(300);
  for (double& v : x) v = px(rng);
  for (double& v : y) v = py(rng);
  Result<RankComparison> r = CompareSketches(SketchOf(x), SketchOf(y));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Exact e = ExactMannWhitney(x, y);
  EXPECT_NEAR(r->u, e.u, 1e-6);
  EXPECT_NEAR(r->z, e.z, 1e-9);
  EXPECT_LT(r->z, -2) << "y is larger: x's U is small";
  EXPECT_LT(r->p_less, 0.05);
  EXPECT_GT(r->p_greater, 0.95);
}

TEST(RankTestTest, StaysCloseToTheRawSampleTestOnContinuousData) {
  std::mt19937_64 rng(11);
  for (double shift : {1.0, 1.03, 1.1}) {
    std::vector<double> x = LogNormal(rng, 2000, 200 * shift, 0.5);
    std::vector<double> y = LogNormal(rng, 1500, 200, 0.5);
    Result<RankComparison> r = CompareSketches(SketchOf(x), SketchOf(y));
    ASSERT_TRUE(r.ok());
    Exact e = ExactMannWhitney(x, y);
    // Rounding to 2 % bins moves U by at most the pairs within one bin of each other.
    EXPECT_NEAR(r->z, e.z, 0.1) << shift;
    EXPECT_NEAR(r->auc, e.u / (2000.0 * 1500.0), 0.005) << shift;
  }
}

TEST(RankTestTest, RawSamplesGiveTheExactTest) {
  std::mt19937_64 rng(5);
  std::vector<double> x = LogNormal(rng, 700, 220, 0.5);
  std::vector<double> y = LogNormal(rng, 500, 200, 0.5);
  x.push_back(y[0]);  // a tie across the samples
  std::sort(x.begin(), x.end());
  std::sort(y.begin(), y.end());
  Result<RankComparison> r = CompareSortedSamples(x, y);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Exact e = ExactMannWhitney(x, y);
  EXPECT_NEAR(r->u, e.u, 1e-6);
  EXPECT_NEAR(r->z, e.z, 1e-9);
  EXPECT_EQ(r->n_x, x.size());
  EXPECT_NEAR(r->auc, e.u / (static_cast<double>(x.size()) * static_cast<double>(y.size())), 1e-12);
  // Values each in a bin of their own: the sketch test is the same test, DeLong error included.
  std::vector<double> a, b;
  for (int i = 0; i < 60; ++i) (i % 3 == 0 ? b : a).push_back(std::pow(1.1, i));
  Result<RankComparison> raw = CompareSortedSamples(a, b);
  Result<RankComparison> sketch = CompareSketches(SketchOf(a), SketchOf(b));
  ASSERT_TRUE(raw.ok() && sketch.ok());
  EXPECT_NEAR(raw->u, sketch->u, 1e-9);
  EXPECT_NEAR(raw->z, sketch->z, 1e-9);
  EXPECT_NEAR(raw->auc_se, sketch->auc_se, 1e-12);
  // Unsorted or empty input is refused.
  const std::vector<double> unsorted = {3, 1, 2};
  EXPECT_FALSE(CompareSortedSamples(unsorted, y).ok());
  EXPECT_FALSE(CompareSortedSamples({}, y).ok());
}

TEST(RankTestTest, NullPValuesAreCalibratedAndShiftsAreFound) {
  std::mt19937_64 rng(3);
  int false_alarms = 0, found = 0;
  const int trials = 1000;
  for (int t = 0; t < trials; ++t) {
    DDSketch a = SketchOf(LogNormal(rng, 200, 150, 0.6));
    DDSketch b = SketchOf(LogNormal(rng, 200, 150, 0.6));
    Result<RankComparison> same = CompareSketches(a, b);
    ASSERT_TRUE(same.ok());
    false_alarms += same->p_two_sided < 0.05 ? 1 : 0;
    DDSketch c = SketchOf(LogNormal(rng, 200, 150 * 1.25, 0.6));
    Result<RankComparison> shifted = CompareSketches(c, a);
    found += shifted->p_greater < 0.05 ? 1 : 0;
  }
  // 5 % nominal; the binomial sd over 1000 trials is 0.7 %.
  EXPECT_GE(false_alarms, 30);
  EXPECT_LE(false_alarms, 70);
  // A 25 % shift of the median at n = 200 is found nearly always (power ≈ 0.97).
  EXPECT_GE(found, 900);
}

TEST(RankTestTest, AucStandardErrorMatchesItsSpreadAcrossSamples) {
  std::mt19937_64 rng(5);
  std::vector<double> aucs, ses;
  for (int t = 0; t < 400; ++t) {
    Result<RankComparison> r = CompareSketches(SketchOf(LogNormal(rng, 300, 120, 0.5)),
                                               SketchOf(LogNormal(rng, 250, 100, 0.5)));
    ASSERT_TRUE(r.ok());
    aucs.push_back(r->auc);
    ses.push_back(r->auc_se);
  }
  double mean = 0;
  for (double a : aucs) mean += a / aucs.size();
  double var = 0;
  for (double a : aucs) var += (a - mean) * (a - mean) / (aucs.size() - 1);
  double mean_se = 0;
  for (double s : ses) mean_se += s / ses.size();
  EXPECT_GT(mean, 0.6);  // x's median is 20 % higher
  EXPECT_NEAR(mean_se / std::sqrt(var), 1.0, 0.15);
}

TEST(RankTestTest, EdgeCases) {
  DDSketch empty, one, constant_a, constant_b;
  one.Add(5);
  EXPECT_FALSE(CompareSketches(empty, one).ok());
  EXPECT_FALSE(CompareSketches(one, empty).ok());
  EXPECT_FALSE(CompareSketches(one, DDSketch(0.02)).ok());
  for (int i = 0; i < 50; ++i) {
    constant_a.Add(7);
    constant_b.Add(7);
  }
  Result<RankComparison> tied = CompareSketches(constant_a, constant_b);
  ASSERT_TRUE(tied.ok());
  EXPECT_EQ(tied->auc, 0.5);
  EXPECT_EQ(tied->z, 0);
  EXPECT_EQ(tied->p_two_sided, 1);
  // Zeros and negatives order before positives.
  DDSketch low, high;
  for (double v : {-3.0, 0.0, 0.0, 1.0}) low.Add(v);
  for (double v : {2.0, 4.0, 8.0}) high.Add(v);
  Result<RankComparison> r = CompareSketches(high, low);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->u, 12);  // every pair
  EXPECT_EQ(r->auc, 1);
}

}  // namespace
}  // namespace inferscope
