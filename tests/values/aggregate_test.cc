#include "values/aggregate.h"

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "pipeline/coding.h"
#include "pipeline/int_math.h"

namespace inferscope {
namespace {

// Lognormal values rounded to multiples of 1/1024, so that every partial sum is exact and sums
// can be compared with ==.
std::vector<double> DyadicValues(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::lognormal_distribution<double> dist(4.0, 1.0);
  std::vector<double> v(n);
  for (double& x : v) x = std::round(dist(rng) * 1024) / 1024;
  return v;
}

void ExpectRelativeNear(double expected, double actual, double rel) {
  EXPECT_LE(std::abs(expected - actual), rel * std::abs(expected)) << expected << " vs " << actual;
}

TEST(AggregateTest, MergeMatchesOnePass) {
  const std::vector<double> values = DyadicValues(100'000, 21);
  Aggregate one_pass;
  for (size_t i = 0; i < values.size(); ++i) {
    one_pass.Add(values[i], static_cast<int64_t>(i));
    one_pass.AddEvent(i % 13 == 0);
  }
  // Uneven parts, merged in a scrambled order.
  std::vector<Aggregate> parts(7);
  for (size_t i = 0; i < values.size(); ++i) {
    Aggregate& part = parts[(i * i + 3 * i) % parts.size()];
    part.Add(values[i], static_cast<int64_t>(i));
    part.AddEvent(i % 13 == 0);
  }
  Aggregate merged;
  for (size_t k : {3, 0, 6, 1, 5, 2, 4}) merged.Merge(parts[k]);

  EXPECT_EQ(merged.count, one_pass.count);
  EXPECT_EQ(merged.events, one_pass.events);
  EXPECT_EQ(merged.errors, one_pass.errors);
  EXPECT_EQ(merged.sum, one_pass.sum);
  EXPECT_EQ(merged.min, one_pass.min);
  EXPECT_EQ(merged.max, one_pass.max);
  EXPECT_EQ(merged.last, one_pass.last);
  EXPECT_EQ(merged.last_time_ms, one_pass.last_time_ms);
  ExpectRelativeNear(one_pass.mean, merged.mean, 1e-9);
  ExpectRelativeNear(one_pass.variance(), merged.variance(), 1e-9);
  EXPECT_TRUE(merged.sketch == one_pass.sketch);

  // Against a two-pass computation.
  double mean = 0;
  for (double v : values) mean += v;
  mean /= static_cast<double>(values.size());
  double m2 = 0;
  for (double v : values) m2 += (v - mean) * (v - mean);
  ExpectRelativeNear(mean, merged.mean, 1e-9);
  ExpectRelativeNear(m2 / static_cast<double>(values.size()), merged.variance(), 1e-9);
}

TEST(AggregateTest, LastIsLatestEventTimeTiesTakeLargerValue) {
  Aggregate a;
  a.Add(5, 100);
  a.Add(3, 50);  // older: ignored for last
  EXPECT_EQ(a.last, 5);
  a.Add(4, 100);  // tie, smaller
  EXPECT_EQ(a.last, 5);
  a.Add(7, 100);  // tie, larger
  EXPECT_EQ(a.last, 7);

  Aggregate b;
  b.Add(9, 100);
  Aggregate c;
  c.Add(8, 100);
  Aggregate bc = b;
  bc.Merge(c);
  Aggregate cb = c;
  cb.Merge(b);
  EXPECT_EQ(bc.last, 9);
  EXPECT_EQ(cb.last, 9);
  Aggregate newer;
  newer.Add(1, 200);
  bc.Merge(newer);
  EXPECT_EQ(bc.last, 1);
  EXPECT_EQ(bc.last_time_ms, 200);
}

TEST(AggregateTest, MergeWithEmptyAndEventOnly) {
  Aggregate a;
  a.Add(2, 1);
  a.Add(4, 2);
  Aggregate events_only;
  events_only.AddEvent(true);
  events_only.AddEvent(false);
  a.Merge(events_only);
  EXPECT_EQ(a.count, 2u);
  EXPECT_EQ(a.events, 2u);
  EXPECT_EQ(a.errors, 1u);
  EXPECT_EQ(a.mean, 3);
  EXPECT_EQ(a.variance(), 1);
  EXPECT_EQ(a.last, 4);
  Aggregate empty;
  empty.Merge(a);
  EXPECT_EQ(empty.mean, 3);
  EXPECT_EQ(empty.min, 2);
  EXPECT_EQ(empty.max, 4);
}

TEST(AggregateTest, NonFiniteValuesIgnored) {
  Aggregate a;
  a.Add(std::nan(""), 1);
  a.Add(INFINITY, 1);
  EXPECT_EQ(a.count, 0u);
  a.Add(1, 1);
  EXPECT_EQ(a.count, a.sketch.count());
}

TEST(AggregateTest, ClearReturnsToEmpty) {
  Aggregate a;
  for (double v : DyadicValues(1000, 1)) a.Add(v, 5);
  a.AddEvent(true);
  a.Clear();
  std::string cleared;
  std::string fresh;
  a.EncodeTo(&cleared);
  Aggregate().EncodeTo(&fresh);
  EXPECT_EQ(cleared, fresh);
}

TEST(AggregateTest, EncodeDecodeRoundTrip) {
  Aggregate a;
  for (double v : DyadicValues(5000, 2)) a.Add(v, 77);
  a.Add(-3, 78);
  a.AddEvent(false);
  a.AddEvent(true);
  for (const Aggregate& original : {Aggregate(), a}) {
    std::string bytes;
    original.EncodeTo(&bytes);
    Aggregate decoded;
    ASSERT_TRUE(Aggregate::DecodeFrom(bytes, &decoded).ok());
    std::string again;
    decoded.EncodeTo(&again);
    EXPECT_EQ(again, bytes);
    EXPECT_EQ(decoded.count, original.count);
    EXPECT_EQ(decoded.events, original.events);
    EXPECT_EQ(decoded.errors, original.errors);
    EXPECT_EQ(decoded.last_time_ms, original.last_time_ms);
    EXPECT_TRUE(decoded.sketch == original.sketch);
  }
}

// An empty aggregate (a request's optional metric no event of the pane carried) is one byte; the
// 76-byte version-1 form of earlier versions still decodes to it, and anything with data is not
// mistaken for it.
TEST(AggregateTest, EmptyAggregateIsOneByteAndReadsItsEarlierForm) {
  std::string bytes;
  Aggregate().EncodeTo(&bytes);
  EXPECT_EQ(bytes, std::string(1, '\x03'));
  Aggregate decoded;
  decoded.Add(5, 1);
  ASSERT_TRUE(Aggregate::DecodeFrom(bytes, &decoded).ok());
  std::string again;
  decoded.EncodeTo(&again);
  EXPECT_EQ(again, bytes);
  EXPECT_EQ(decoded.count, 0u);
  EXPECT_EQ(decoded.min, std::numeric_limits<double>::infinity());
  EXPECT_EQ(Aggregate::DecodeFrom(bytes + "x", &decoded).code(), Status::Code::kCorruption);

  std::string version1(1, '\x01');
  for (int i = 0; i < 3; ++i) PutVarint(&version1, 0);  // count, events, errors
  const double inf = std::numeric_limits<double>::infinity();
  for (double d : {0.0, inf, -inf, 0.0, 0.0, 0.0}) PutDouble(&version1, d);
  PutVarint(&version1, ZigZag(std::numeric_limits<int64_t>::min()));
  DDSketch().EncodeTo(&version1);
  EXPECT_EQ(version1.size(), 76u);
  ASSERT_TRUE(Aggregate::DecodeFrom(version1, &decoded).ok());
  again.clear();
  decoded.EncodeTo(&again);
  EXPECT_EQ(again, bytes);

  Aggregate events_only;  // a request without this metric's value: counted, so not empty
  events_only.AddEvent(false);
  Aggregate timed;  // no value, but a time: not Aggregate{}
  timed.last_time_ms = 7;
  for (const Aggregate& a : {events_only, timed}) {
    std::string encoded;
    a.EncodeTo(&encoded);
    EXPECT_GT(encoded.size(), 1u);
    Aggregate back;
    ASSERT_TRUE(Aggregate::DecodeFrom(encoded, &back).ok());
    EXPECT_EQ(back.events, a.events);
    EXPECT_EQ(back.last_time_ms, a.last_time_ms);
  }
}

TEST(AggregateTest, GarbageIsCorruption) {
  Aggregate a;
  for (double v : DyadicValues(2000, 3)) a.Add(v, 1);
  std::string valid;
  a.EncodeTo(&valid);
  for (size_t n = 0; n < valid.size(); ++n) {
    Aggregate out;
    EXPECT_EQ(Aggregate::DecodeFrom(std::string_view(valid.data(), n), &out).code(),
              Status::Code::kCorruption)
        << n;
  }
  EXPECT_EQ(Aggregate::DecodeFrom(valid + "x", &a).code(), Status::Code::kCorruption);
  std::string wrong_version = valid;
  wrong_version[0] = 9;
  EXPECT_EQ(Aggregate::DecodeFrom(wrong_version, &a).code(), Status::Code::kCorruption);

  std::mt19937_64 rng(5);
  for (int iter = 0; iter < 20'000; ++iter) {
    std::string bytes = valid;
    for (int k = 0; k < 2; ++k) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    Aggregate out;
    const Status st = Aggregate::DecodeFrom(bytes, &out);
    if (!st.ok()) {
      EXPECT_EQ(st.code(), Status::Code::kCorruption);
    } else {
      EXPECT_EQ(out.count, out.sketch.count());
      (void)Summarize(out, 1000);
    }
  }
}

TEST(AggregateTest, SummarizeEmptyHasNaNQuantiles) {
  const SummaryStats s = Summarize(Aggregate(), 10'000);
  EXPECT_EQ(s.count, 0u);
  EXPECT_TRUE(std::isnan(s.p50));
  EXPECT_TRUE(std::isnan(s.p99));
  EXPECT_EQ(s.rate_per_s, 0);
}

TEST(AggregateTest, SummarizeComputesRateAndQuantiles) {
  Aggregate a;
  for (int i = 1; i <= 100; ++i) {
    a.Add(i, i);
    a.AddEvent(i % 10 == 0);
  }
  const SummaryStats s = Summarize(a, 10'000);
  EXPECT_EQ(s.count, 100u);
  EXPECT_EQ(s.sum, 5050);
  EXPECT_EQ(s.min, 1);
  EXPECT_EQ(s.max, 100);
  EXPECT_DOUBLE_EQ(s.mean, 50.5);
  EXPECT_DOUBLE_EQ(s.rate_per_s, 10.0);
  EXPECT_DOUBLE_EQ(s.error_ratio, 0.1);
  EXPECT_EQ(s.last, 100);
  EXPECT_NEAR(s.p50, 50, 0.5);  // rank 49.5 -> the 50th value
  EXPECT_NEAR(s.p99, 99, 0.99);
}

}  // namespace
}  // namespace inferscope

namespace inferscope {
namespace {

// A sketch bin's value is within the relative accuracy of the values in it, on either side, so
// the sketch's top quantile can exceed the largest value; Aggregate::Quantile clamps it. Among
// single values 1..1000 some bins' values lie above their value (the unclamped case this guards).
TEST(AggregateTest, QuantilesAreClampedToMinAndMax) {
  int beyond_max = 0;
  for (int v = 1; v <= 1000; ++v) {
    Aggregate agg;
    agg.Add(v, 0);
    agg.Add(v / 2.0, 1);
    if (agg.sketch.Quantile(1.0) > agg.max) ++beyond_max;
    for (double q : {0.0, 0.5, 0.9, 0.99, 1.0}) {
      EXPECT_LE(agg.Quantile(q), agg.max) << v << " q " << q;
      EXPECT_GE(agg.Quantile(q), agg.min) << v << " q " << q;
    }
    // Rank q * (n - 1), the lower neighbour: with two values p99 is the smaller one.
    EXPECT_NEAR(agg.Quantile(1.0), v, v * 0.01);
    EXPECT_NEAR(agg.Quantile(0.99), v / 2.0, v / 2.0 * 0.01);
    const SummaryStats s = Summarize(agg, 1000);
    EXPECT_LE(s.p99, s.max);
    EXPECT_LE(agg.Quantile(1.0), agg.max);
    EXPECT_GE(s.p50, s.min);
  }
  EXPECT_GT(beyond_max, 0) << "the sketch never overshot: the clamp is untested";
  EXPECT_TRUE(std::isnan(Aggregate().Quantile(0.5)));
}

}  // namespace
}  // namespace inferscope
