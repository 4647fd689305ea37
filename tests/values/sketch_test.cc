#include "values/sketch.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace inferscope {
namespace {

constexpr double kQuantiles[] = {0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0};
// The bound is exact in real arithmetic; allow for rounding in log/pow.
constexpr double kTolerance = 0.01 * (1 + 1e-9);

std::vector<double> LogNormal(size_t n, uint64_t seed, double mu = 3.0, double sigma = 1.0) {
  std::mt19937_64 rng(seed);
  std::lognormal_distribution<double> dist(mu, sigma);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

// Pareto(x_m = 1, alpha) by inverse transform: heavy-tailed like queueing delays.
std::vector<double> Pareto(size_t n, uint64_t seed, double alpha = 1.2) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> v(n);
  for (double& x : v) x = std::pow(1.0 - u(rng), -1.0 / alpha);
  return v;
}

DDSketch SketchOf(const std::vector<double>& values, int max_bins = DDSketch::kDefaultMaxBins) {
  DDSketch s(DDSketch::kDefaultRelativeAccuracy, max_bins);
  for (double v : values) s.Add(v);
  return s;
}

void ExpectWithinRelativeError(const std::vector<double>& values, const DDSketch& sketch) {
  std::vector<double> sorted = values;
  std::sort(sorted.begin(), sorted.end());
  for (double q : kQuantiles) {
    const double exact = sorted[static_cast<size_t>(std::floor(q * (sorted.size() - 1)))];
    const double got = sketch.Quantile(q);
    EXPECT_LE(std::abs(got - exact), kTolerance * std::abs(exact))
        << "q=" << q << " exact=" << exact << " got=" << got;
  }
}

TEST(DDSketchTest, LogNormalQuantilesWithinOnePercent) {
  const std::vector<double> values = LogNormal(200'000, 42);
  const DDSketch sketch = SketchOf(values);
  EXPECT_EQ(sketch.count(), values.size());
  ExpectWithinRelativeError(values, sketch);
}

TEST(DDSketchTest, ParetoQuantilesWithinOnePercent) {
  const std::vector<double> values = Pareto(200'000, 7);
  ExpectWithinRelativeError(values, SketchOf(values));
}

TEST(DDSketchTest, WideLogNormalQuantilesWithinOnePercent) {
  const std::vector<double> values = LogNormal(100'000, 3, 0.0, 4.0);  // ~1e-7 .. 1e7
  ExpectWithinRelativeError(values, SketchOf(values));
}

TEST(DDSketchTest, NegativeZeroAndPositiveValues) {
  std::mt19937_64 rng(11);
  std::normal_distribution<double> dist(0.0, 100.0);
  std::vector<double> values(100'000);
  for (double& v : values) v = dist(rng);
  for (int i = 0; i < 5000; ++i) values.push_back(0.0);
  ExpectWithinRelativeError(values, SketchOf(values));
}

// A hostile histogram delta can ask for counts near 2^64 (valid, finite, non-decreasing buckets):
// the sketch holds at most kMaxCount values, so no bin widens past 64 bits and nothing wraps.
TEST(DDSketchTest, HugeCountsStopAtTheMaximumInsteadOfOverflowing) {
  DDSketch s;
  const uint64_t huge = uint64_t{9} << 60;  // 9e18-ish, three of them pass 2^64
  for (int i = 0; i < 3; ++i) s.AddUniform(1.0, 1.0, huge);
  EXPECT_EQ(s.count(), DDSketch::kMaxCount);
  EXPECT_NEAR(s.Quantile(0.5), 1.0, 0.01);
  s.AddUniform(2.0, 3.0, huge);  // full: nothing more
  EXPECT_EQ(s.count(), DDSketch::kMaxCount);
  DDSketch merged;
  ASSERT_TRUE(merged.Merge(s).ok());
  EXPECT_FALSE(merged.Merge(s).ok());  // would pass the maximum: refused, nothing added
  EXPECT_EQ(merged.count(), DDSketch::kMaxCount);
  std::string bytes;
  s.EncodeTo(&bytes);
  DDSketch back;
  std::string_view in(bytes);
  ASSERT_TRUE(DDSketch::DecodeFrom(&in, &back).ok());
  EXPECT_EQ(back.count(), DDSketch::kMaxCount);
}

TEST(DDSketchTest, EmptyAndInvalidInput) {
  DDSketch s;
  EXPECT_TRUE(s.empty());
  EXPECT_TRUE(std::isnan(s.Quantile(0.5)));
  s.Add(std::nan(""));
  s.Add(INFINITY);
  s.Add(-INFINITY);
  EXPECT_TRUE(s.empty());
  s.Add(5.0);
  EXPECT_TRUE(std::isnan(s.Quantile(-0.1)));
  EXPECT_TRUE(std::isnan(s.Quantile(1.1)));
  EXPECT_NEAR(s.Quantile(0.5), 5.0, 0.05);
  s.Add(1e-320);  // below the indexable range: counts as zero
  EXPECT_EQ(s.count(), 2u);
  EXPECT_EQ(s.Quantile(0.0), 0.0);
}

TEST(DDSketchTest, MergeEqualsSketchOfUnion) {
  const std::vector<double> a = LogNormal(60'000, 1);
  std::vector<double> b = Pareto(60'000, 2);
  for (size_t i = 0; i < b.size(); i += 10) b[i] = -b[i];
  std::vector<double> all = a;
  all.insert(all.end(), b.begin(), b.end());

  DDSketch merged = SketchOf(a);
  ASSERT_TRUE(merged.Merge(SketchOf(b)).ok());
  const DDSketch whole = SketchOf(all);
  EXPECT_TRUE(merged == whole);
  for (double q : kQuantiles) EXPECT_EQ(merged.Quantile(q), whole.Quantile(q)) << q;
  ExpectWithinRelativeError(all, merged);

  // Order does not matter.
  DDSketch other_way = SketchOf(b);
  ASSERT_TRUE(other_way.Merge(SketchOf(a)).ok());
  EXPECT_TRUE(other_way == whole);
}

TEST(DDSketchTest, MergeIntoEmptyAndFromEmpty) {
  const DDSketch full = SketchOf(LogNormal(1000, 5));
  DDSketch empty;
  ASSERT_TRUE(empty.Merge(full).ok());
  EXPECT_TRUE(empty == full);
  DDSketch copy = full;
  ASSERT_TRUE(copy.Merge(DDSketch()).ok());
  EXPECT_TRUE(copy == full);
}

TEST(DDSketchTest, MergeRejectsDifferentAccuracy) {
  DDSketch a(0.01);
  DDSketch b(0.02);
  b.Add(1.0);
  EXPECT_EQ(a.Merge(b).code(), Status::Code::kInvalidArgument);
}

TEST(DDSketchTest, BinsAreBoundedAndUpperQuantilesStayAccurate) {
  constexpr int kMaxBins = 64;
  // 1e-6 .. 1e6 needs ~1400 bins at 1%; only the top 64 survive.
  std::mt19937_64 rng(9);
  std::uniform_real_distribution<double> exponent(-6.0, 6.0);
  std::vector<double> values(50'000);
  for (double& v : values) v = std::pow(10.0, exponent(rng));
  const DDSketch sketch = SketchOf(values, kMaxBins);

  std::string encoded;
  sketch.EncodeTo(&encoded);
  EXPECT_LT(encoded.size(), 20u + 2u * 5u * kMaxBins);  // at most kMaxBins (index, count) pairs
  std::string_view in = encoded;
  DDSketch decoded;
  ASSERT_TRUE(DDSketch::DecodeFrom(&in, &decoded).ok());  // the decoder enforces the span
  EXPECT_TRUE(decoded == sketch);

  std::vector<double> sorted = values;
  std::sort(sorted.begin(), sorted.end());
  for (double q : {0.999, 1.0}) {
    const double exact = sorted[static_cast<size_t>(q * (sorted.size() - 1))];
    EXPECT_LE(std::abs(sketch.Quantile(q) - exact), kTolerance * exact) << q;
  }
  // Collapsed low values are reported at the lowest kept bin: never below the true value.
  EXPECT_GE(sketch.Quantile(0.0), sorted.front());

  // Collapsing commutes with merging.
  std::vector<double> low(values.begin(), values.begin() + 25'000);
  std::vector<double> high(values.begin() + 25'000, values.end());
  DDSketch merged = SketchOf(low, kMaxBins);
  ASSERT_TRUE(merged.Merge(SketchOf(high, kMaxBins)).ok());
  EXPECT_TRUE(merged == sketch);
}

TEST(DDSketchTest, ClearKeepsWorking) {
  DDSketch s = SketchOf(LogNormal(10'000, 4));
  s.Clear();
  EXPECT_TRUE(s.empty());
  EXPECT_TRUE(s == DDSketch());
  const std::vector<double> values = Pareto(10'000, 8);
  for (double v : values) s.Add(v);
  EXPECT_TRUE(s == SketchOf(values));
}

// Bin counts start 8 bits wide and widen to 16, 32 and 64 bits; the width never shows.
TEST(DDSketchTest, CountsWidenPastSixteenAndThirtyTwoBits) {
  DDSketch a;
  DDSketch narrow;  // the same values, counts kept below 2^16 per bin until merged
  for (int i = 0; i < 70'000; ++i) {
    a.Add(5.0);
    a.Add(7.0 + (i % 3));
  }
  for (int part = 0; part < 2; ++part) {
    DDSketch half;
    for (int i = 0; i < 35'000; ++i) {
      half.Add(5.0);
      half.Add(7.0 + ((part * 35'000 + i) % 3));
    }
    ASSERT_TRUE(narrow.Merge(half).ok());
  }
  EXPECT_EQ(a.count(), 140'000u);
  EXPECT_TRUE(a == narrow);
  EXPECT_NEAR(a.Quantile(0.25), 5.0, 0.05);
  EXPECT_NEAR(a.Quantile(0.75), 8.0, 0.08);

  // Merging a sketch into a copy of itself doubles every count: past 2^32 after 16 rounds.
  DDSketch big = a;
  for (int round = 0; round < 20; ++round) {
    const DDSketch copy = big;
    ASSERT_TRUE(big.Merge(copy).ok());
  }
  EXPECT_EQ(big.count(), 140'000ull << 20);
  for (double q : kQuantiles) EXPECT_EQ(big.Quantile(q), a.Quantile(q)) << q;
  big.Add(5.0);  // an increment of a 64-bit count
  EXPECT_EQ(big.count(), (140'000ull << 20) + 1);

  std::string bytes;
  big.EncodeTo(&bytes);
  std::string_view in = bytes;
  DDSketch decoded;
  ASSERT_TRUE(DDSketch::DecodeFrom(&in, &decoded).ok());
  EXPECT_TRUE(decoded == big);

  // A merge of narrow bins into wide ones and the other way round give equal sketches.
  DDSketch wide_into_narrow = SketchOf({5.0, 6.0});
  ASSERT_TRUE(wide_into_narrow.Merge(big).ok());
  DDSketch narrow_into_wide = big;
  ASSERT_TRUE(narrow_into_wide.Merge(SketchOf({5.0, 6.0})).ok());
  EXPECT_TRUE(wide_into_narrow == narrow_into_wide);

  // Clear goes back to narrow counts and the sketch keeps working.
  big.Clear();
  EXPECT_TRUE(big == DDSketch());
  const std::vector<double> values = LogNormal(10'000, 21);
  for (double v : values) big.Add(v);
  EXPECT_TRUE(big == SketchOf(values));
}

// Memory per series (issue 15): the object is 40 bytes; a pane of a few nearby values keeps its
// bins inside it; negative values get their store only when one arrives; zeros need no storage.
TEST(DDSketchTest, SmallSketchesKeepTheirBinsInline) {
  EXPECT_EQ(sizeof(DDSketch), 40u);
  DDSketch s;
  EXPECT_EQ(s.HeapBytes(), 0u);
  for (double v : {0.71, 0.72, 0.73, 0.74, 0.0, 0.0}) s.Add(v);  // bins span < 8
  EXPECT_EQ(s.HeapBytes(), 0u);
  EXPECT_EQ(s.count(), 6u);
  EXPECT_EQ(s.Quantile(0), 0);
  EXPECT_NEAR(s.Quantile(1), 0.74, 0.74 * kTolerance);
  // 255 values in one bin still fit 8 bits; the 256th widens the counts (and leaves the inline
  // bytes) without changing what the sketch says.
  DDSketch one;
  for (int i = 0; i < 255; ++i) one.Add(42);
  EXPECT_EQ(one.HeapBytes(), 0u);
  one.Add(42);
  EXPECT_GT(one.HeapBytes(), 0u);
  EXPECT_EQ(one.count(), 256u);
  EXPECT_NEAR(one.Quantile(0.5), 42, 42 * kTolerance);
  // A wide pane goes to the heap; bins are at most 1 byte each until a count passes 255.
  DDSketch wide = SketchOf(LogNormal(50, 3));
  EXPECT_GT(wide.HeapBytes(), 0u);
  EXPECT_LE(wide.HeapBytes(), 2 * static_cast<size_t>(std::log(1e3) / std::log(1.0202)) + 24);
  // The first negative value allocates the negative store; Clear keeps it and it keeps working.
  DDSketch neg = SketchOf({1, 2, 3});
  const size_t before = neg.HeapBytes();
  neg.Add(-5);
  EXPECT_GT(neg.HeapBytes(), before);
  EXPECT_NEAR(neg.Quantile(0), -5, 5 * kTolerance);
  neg.Clear();
  EXPECT_TRUE(neg == DDSketch());
  neg.Add(-1);
  neg.Add(0);
  neg.Add(1);
  EXPECT_NEAR(neg.Quantile(0), -1, kTolerance);
  EXPECT_EQ(neg.Quantile(0.5), 0);
  EXPECT_NEAR(neg.Quantile(1), 1, kTolerance);
}

// Zeros are implied by the count: merges, copies and encodings keep them.
TEST(DDSketchTest, ZerosSurviveMergeCopyAndEncoding) {
  DDSketch a = SketchOf({0, 0, 0, 5, -2});
  DDSketch b = SketchOf({0, 7});
  ASSERT_TRUE(a.Merge(b).ok());
  EXPECT_EQ(a.count(), 7u);
  std::vector<std::pair<double, uint64_t>> bins;
  a.ForEachBin([&](double v, uint64_t n) { bins.emplace_back(v, n); });
  ASSERT_EQ(bins.size(), 4u);
  EXPECT_EQ(bins[1], std::make_pair(0.0, uint64_t{4}));
  EXPECT_EQ(a.Quantile(0.5), 0);  // ranks 1..4 of 0..6 are zeros
  std::string bytes;
  a.EncodeTo(&bytes);
  std::string_view in = bytes;
  DDSketch decoded;
  ASSERT_TRUE(DDSketch::DecodeFrom(&in, &decoded).ok());
  EXPECT_TRUE(decoded == a);
  const DDSketch copy = a;
  EXPECT_TRUE(copy == a);
  for (double q : kQuantiles) EXPECT_EQ(copy.Quantile(q), a.Quantile(q)) << q;
}

// A moved-from sketch is empty with the default parameters and usable; a sketch with other
// parameters keeps them through copies and moves.
TEST(DDSketchTest, MovedFromIsEmptyAndParametersFollowCopies) {
  DDSketch custom(0.02, 64);
  for (double v : LogNormal(1000, 9)) custom.Add(v);
  const DDSketch copy = custom;
  EXPECT_EQ(copy.relative_accuracy(), 0.02);
  EXPECT_TRUE(copy == custom);
  DDSketch moved = std::move(custom);
  EXPECT_EQ(moved.relative_accuracy(), 0.02);
  EXPECT_TRUE(moved == copy);
  EXPECT_TRUE(custom.empty());  // NOLINT(bugprone-use-after-move): documented state
  EXPECT_EQ(custom.relative_accuracy(), DDSketch::kDefaultRelativeAccuracy);
  custom.Add(3);
  EXPECT_EQ(custom.count(), 1u);
  DDSketch assigned;
  assigned = copy;
  EXPECT_TRUE(assigned == copy);
  EXPECT_FALSE(assigned.Merge(DDSketch()).ok());  // parameters differ
}

TEST(DDSketchTest, PrefetchBinChangesNothing) {
  DDSketch s = SketchOf(LogNormal(1000, 22));
  const DDSketch before = s;
  for (double v : {0.0, -1.0, 1e-320, 1e300, 55.0, std::nan(""), HUGE_VAL}) s.PrefetchBin(v);
  EXPECT_TRUE(s == before);
}

TEST(DDSketchTest, EncodeDecodeRoundTrip) {
  std::vector<double> values = LogNormal(20'000, 12);
  for (size_t i = 0; i < values.size(); i += 7) values[i] = -values[i];
  values.push_back(0.0);
  for (const DDSketch& original : {DDSketch(), SketchOf(values), SketchOf({42.0})}) {
    std::string bytes = "prefix";
    original.EncodeTo(&bytes);
    bytes += "suffix";
    std::string_view in(bytes);
    in.remove_prefix(6);
    DDSketch decoded(0.05, 10);
    ASSERT_TRUE(DDSketch::DecodeFrom(&in, &decoded).ok());
    EXPECT_EQ(in, "suffix");
    EXPECT_TRUE(decoded == original);
    if (original.empty()) continue;
    for (double q : kQuantiles) EXPECT_EQ(decoded.Quantile(q), original.Quantile(q));
  }
  // Compact: a few bytes per occupied bin.
  std::string bytes;
  SketchOf(values).EncodeTo(&bytes);
  EXPECT_LT(bytes.size(), 2000u);
}

TEST(DDSketchTest, GarbageIsCorruptionNeverACrash) {
  std::string valid;
  SketchOf(LogNormal(5000, 13)).EncodeTo(&valid);
  // Every truncation.
  for (size_t n = 0; n < valid.size(); ++n) {
    std::string_view in(valid.data(), n);
    DDSketch s;
    EXPECT_EQ(DDSketch::DecodeFrom(&in, &s).code(), Status::Code::kCorruption) << n;
  }
  // Random bytes, and valid bytes with random damage: either decodes or reports Corruption.
  std::mt19937_64 rng(99);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int iter = 0; iter < 20'000; ++iter) {
    std::string bytes;
    if (iter % 2 == 0) {
      bytes.resize(static_cast<size_t>(rng() % 64));
      for (char& c : bytes) c = static_cast<char>(byte(rng));
      if (!bytes.empty() && iter % 4 == 0) bytes[0] = 1;  // get past the version check
    } else {
      bytes = valid;
      for (int k = 0; k < 3; ++k) bytes[rng() % bytes.size()] = static_cast<char>(byte(rng));
    }
    std::string_view in(bytes);
    DDSketch s;
    const Status st = DDSketch::DecodeFrom(&in, &s);
    if (st.ok()) {
      (void)s.Quantile(0.5);
      std::string again;
      s.EncodeTo(&again);
    } else {
      EXPECT_EQ(st.code(), Status::Code::kCorruption);
    }
  }
}

// A scratch sketch reused with Clear() and Merge() (bottleneck_classify's evidence window does
// this at every judgement) whose bins pass 255: Clear keeps the buffer and resets the count width,
// and widening used to size the new buffer from the old one's bytes as if they were 8-bit counts,
// doubling it at every cycle until the capacity table was read past its end (a crash after ~20
// cycles). Widening now happens in place when the buffer has room.
TEST(DDSketchTest, ReusedScratchWithWideCountsStaysBounded) {
  DDSketch wide;
  for (int i = 0; i < 1000; ++i) wide.Add(200);  // one bin of 1000: 16-bit counts
  for (int i = 0; i < 20; ++i) wide.Add(3000);
  DDSketch scratch;
  size_t heap = 0;
  for (int cycle = 0; cycle < 200; ++cycle) {
    scratch.Clear();
    DDSketch narrow;
    narrow.Add(210);
    ASSERT_TRUE(scratch.Merge(narrow).ok());
    ASSERT_TRUE(scratch.Merge(wide).ok());
    ASSERT_EQ(scratch.count(), 1021u);
    EXPECT_NEAR(scratch.Quantile(0.5), 200, 200 * DDSketch::kDefaultRelativeAccuracy * 2);
    if (cycle == 1) heap = scratch.HeapBytes();
    if (cycle > 1) {
      ASSERT_EQ(scratch.HeapBytes(), heap) << "cycle " << cycle;
    }
  }
}

}  // namespace
}  // namespace inferscope
