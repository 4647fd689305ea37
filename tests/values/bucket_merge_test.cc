// Histogram buckets merged into a pane's quantile sketch (DDSketch::AddUniform,
// Aggregate::AddBuckets) against Prometheus' histogram_quantile computed here.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "values/aggregate.h"
#include "values/sketch.h"

namespace inferscope {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Prometheus' histogram_quantile (promql/quantile.go, bucketQuantile) over non-cumulative counts:
// rank = q * total; the bucket holding it; linear interpolation inside it (the first bucket's
// lower bound is 0 when its upper bound is positive); the +Inf bucket returns the highest finite
// bound.
double HistogramQuantile(double q, const std::vector<double>& upper,
                         const std::vector<double>& counts) {
  double total = 0;
  for (double c : counts) total += c;
  const double rank = q * total;
  double cum = 0;
  for (size_t i = 0; i < upper.size(); ++i) {
    const double before = cum;
    cum += counts[i];
    if (cum >= rank && counts[i] > 0) {
      if (std::isinf(upper[i])) return upper[i - 1];
      const double lo = i == 0 ? 0 : upper[i - 1];
      return lo + (upper[i] - lo) * (rank - before) / counts[i];
    }
  }
  return upper[upper.size() - 2];
}

// The width of the bucket holding quantile q (the error bound of a bucket-bounded quantile).
double BucketWidthAt(double q, const std::vector<double>& upper,
                     const std::vector<double>& counts) {
  const double v = HistogramQuantile(q, upper, counts);
  for (size_t i = 0; i < upper.size(); ++i) {
    if (v <= upper[i]) return std::isinf(upper[i]) ? 0 : upper[i] - (i == 0 ? 0 : upper[i - 1]);
  }
  return 0;
}

TEST(BucketMergeTest, AddUniformPlacesExactlyTheCountInsideTheBucket) {
  DDSketch s;
  s.AddUniform(100, 200, 1000);
  EXPECT_EQ(s.count(), 1000u);
  uint64_t seen = 0;
  s.ForEachBin([&](double v, uint64_t n) {
    EXPECT_GE(v, 100 * 0.98);
    EXPECT_LE(v, 200 * 1.02);
    seen += n;
  });
  EXPECT_EQ(seen, 1000u);
  // Uniform: the median of (100, 200] is 150, within the sketch's 1 % and one bin's rounding.
  EXPECT_NEAR(s.Quantile(0.5), 150, 150 * 0.03);
  EXPECT_NEAR(s.Quantile(0.9), 190, 190 * 0.03);
}

TEST(BucketMergeTest, AddUniformEdgeCases) {
  DDSketch s;
  s.AddUniform(0, 10, 0);
  EXPECT_TRUE(s.empty());
  s.AddUniform(5, 1, 3);  // hi < lo
  s.AddUniform(0, kInf, 3);
  s.AddUniform(std::nan(""), 1, 3);
  EXPECT_TRUE(s.empty());
  s.AddUniform(-5, 0, 4);  // non-positive: the zero bin
  EXPECT_EQ(s.count(), 4u);
  EXPECT_EQ(s.Quantile(0.5), 0);
  s.AddUniform(0, 1e-3, 1'000'000);  // first bucket from 0: ends within max_bins
  EXPECT_EQ(s.count(), 1'000'004u);
  s.AddUniform(7, 7, 70'000);  // a point mass, with counts past 16 bits
  EXPECT_EQ(s.count(), 1'070'004u);
  EXPECT_NEAR(s.Quantile(1.0), 7, 7 * 0.01);
}

// A vLLM-style TTFT layout (seconds × 1000 = ms) and a skewed distribution over it.
const std::vector<double> kUpper = {1,   5,   10,   20,   40,   60,   80,    100, 250,
                                    500, 750, 1000, 2500, 5000, 7500, 10000, kInf};
const std::vector<double> kCounts = {0,  2,  11, 130, 840, 260, 150, 20, 310,
                                     95, 40, 12, 9,   3,   1,   0,   2};

TEST(BucketMergeTest, QuantilesEqualHistogramQuantileWithinTheBucketWidth) {
  Aggregate agg;
  double sum = 0;
  for (size_t i = 0; i < kUpper.size(); ++i) {
    const double lo = i == 0 ? 0 : kUpper[i - 1];
    const double hi = std::isinf(kUpper[i]) ? kUpper[i - 1] : kUpper[i];
    sum += kCounts[i] * 0.5 * (lo + hi);
  }
  agg.AddBuckets(kUpper.data(), kCounts.data(), static_cast<uint32_t>(kUpper.size()), sum, 1000);
  EXPECT_TRUE(agg.bucket_bounded);
  uint64_t total = 0;
  for (double c : kCounts) total += static_cast<uint64_t>(c);
  EXPECT_EQ(agg.count, total);
  EXPECT_EQ(agg.events, total);
  EXPECT_EQ(agg.sketch.count(), total);
  EXPECT_DOUBLE_EQ(agg.sum, sum);  // exact sum: exact mean
  EXPECT_DOUBLE_EQ(agg.mean, sum / static_cast<double>(total));
  EXPECT_EQ(agg.min, 1);      // lower bound of the lowest non-empty bucket
  EXPECT_EQ(agg.max, 10000);  // +Inf clamps to the highest finite bound
  for (double q : {0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999}) {
    const double expected = HistogramQuantile(q, kUpper, kCounts);
    const double width = BucketWidthAt(q, kUpper, kCounts);
    const double got = agg.Quantile(q);
    // The sketch's rank is q·(n-1), Prometheus' q·n; both interpolate uniformly in the bucket. In a
    // sparse tail the two ranks can fall in different buckets: either reading is within its
    // bucket's width.
    const double n = static_cast<double>(total);
    const double q2 = q * (n - 1) / n;
    const double expected2 = HistogramQuantile(q2, kUpper, kCounts);
    const double width2 = BucketWidthAt(q2, kUpper, kCounts);
    EXPECT_TRUE(std::abs(got - expected) <= width + expected * 0.01 ||
                std::abs(got - expected2) <= width2 + expected2 * 0.01)
        << "q=" << q << " got " << got << " histogram_quantile " << expected << " / " << expected2;
    // And much closer than the bound for interior quantiles of well-filled buckets.
    if (q == 0.5) {
      EXPECT_NEAR(got, expected, expected * 0.03);
    }
  }
}

TEST(BucketMergeTest, MergingPanesKeepsBucketBoundedAndCounts) {
  Aggregate a;
  Aggregate b;
  a.AddBuckets(kUpper.data(), kCounts.data(), static_cast<uint32_t>(kUpper.size()), std::nan(""),
               1000);
  b.Add(42, 2000);
  EXPECT_FALSE(b.bucket_bounded);
  b.Merge(a);
  EXPECT_TRUE(b.bucket_bounded);
  EXPECT_EQ(b.count, a.count + 1);
  EXPECT_EQ(b.sketch.count(), b.count);
  b.Clear();
  EXPECT_FALSE(b.bucket_bounded);
}

TEST(BucketMergeTest, EncodingIsVersionedAndOldRecordsStayReadable) {
  Aggregate plain;
  plain.Add(3, 10);
  std::string v1;
  plain.EncodeTo(&v1);
  ASSERT_EQ(static_cast<uint8_t>(v1[0]), 1);  // unchanged bytes for aggregates without buckets
  Aggregate back;
  ASSERT_TRUE(Aggregate::DecodeFrom(v1, &back).ok());
  EXPECT_FALSE(back.bucket_bounded);
  EXPECT_EQ(back.count, 1u);

  Aggregate bucketed;
  bucketed.AddBuckets(kUpper.data(), kCounts.data(), static_cast<uint32_t>(kUpper.size()),
                      std::nan(""), 1000);
  std::string v2;
  bucketed.EncodeTo(&v2);
  ASSERT_EQ(static_cast<uint8_t>(v2[0]), 2);
  ASSERT_TRUE(Aggregate::DecodeFrom(v2, &back).ok());
  EXPECT_TRUE(back.bucket_bounded);
  EXPECT_EQ(back.count, bucketed.count);
  EXPECT_EQ(back.Quantile(0.9), bucketed.Quantile(0.9));
  std::string bad = v2;
  bad[1] = 0x7f;  // unknown flags
  EXPECT_FALSE(Aggregate::DecodeFrom(bad, &back).ok());
  EXPECT_FALSE(Aggregate::DecodeFrom(std::string_view(v2.data(), 1), &back).ok());
}

TEST(BucketMergeTest, InvalidBucketCountsAreIgnored) {
  const double upper[] = {10, 20, kInf};
  const double counts[] = {-3, std::nan(""), 5};
  Aggregate a;
  a.AddBuckets(upper, counts, 3, std::nan(""), 1);
  EXPECT_EQ(a.count, 5u);
  EXPECT_EQ(a.min, 20);
  EXPECT_EQ(a.max, 20);
  EXPECT_EQ(a.Quantile(0.5), 20);
}

}  // namespace
}  // namespace inferscope
