// Histogram bucket deltas from two scrapes (PromConverter with a histogram buffer, and the
// standalone PromHistogramDeltaOf the remote-write receiver uses), over the real fixture pages.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "pipeline/interner.h"
#include "sources/prom_convert.h"

namespace inferscope {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::string ReadFixture(const std::string& name) {
  std::ifstream in(std::string(INFERSCOPE_SOURCE_DIR) + "/tests/data/prometheus/" + name);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The page with every histogram sample (_bucket, _sum, _count) multiplied by `factor`.
std::string ScaleHistograms(const std::string& page, double factor) {
  std::istringstream in(page);
  std::ostringstream out;
  std::string line;
  static const std::regex kHist(R"(^([a-zA-Z0-9_:]+_(bucket|sum|count)(\{.*\})?) (\S+)$)");
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, kHist)) {
      std::ostringstream v;
      v.precision(17);
      v << std::stod(m[4].str()) * factor;
      out << m[1].str() << " " << v.str() << "\n";
    } else {
      out << line << "\n";
    }
  }
  return out.str();
}

// name{labels} → value for the _bucket samples of `family` (cumulative, as on the page).
std::vector<std::pair<double, double>> Buckets(const std::string& page, const std::string& family) {
  std::vector<std::pair<double, double>> out;
  std::istringstream in(page);
  std::string line;
  const std::regex re("^" + family + R"re(_bucket\{le="([^"]+)"[^}]*\} (\S+)$)re");
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, re)) {
      const double le = m[1].str() == "+Inf" ? kInf : std::stod(m[1].str());
      out.emplace_back(le, std::stod(m[2].str()));
    }
  }
  return out;
}

class PromHistogramTest : public ::testing::Test {
 protected:
  struct Out {
    std::vector<Event> events;
    std::vector<HistogramDelta> histograms;
    PromConvertStats stats;
    // metric name → the histogram of its one event
    std::map<std::string, const HistogramDelta*> by_metric;
  };
  void Run(PromConverter& c, const std::string& page, int64_t t, Out& o) {
    o.events.clear();
    o.histograms.clear();
    o.by_metric.clear();
    o.stats = c.Convert(page, t, publisher_, o.events, &o.histograms);
    for (const Event& e : o.events) {
      if (e.kind != EventKind::kHistogram) continue;
      ASSERT_LT(e.histogram, o.histograms.size());
      const std::string name(interner_.Name(e.metric));
      EXPECT_EQ(o.by_metric.count(name), 0u) << name;
      o.by_metric[name] = &o.histograms[e.histogram];
      EXPECT_EQ(e.value, o.histograms[e.histogram].total);
      EXPECT_EQ(e.time_ms, t);
    }
  }
  PromConverter Make(PromEngine engine) {
    PromConverter::Options o;
    o.engine = engine;
    o.instance = "i0";
    return PromConverter(o, interner_);
  }
  // Expects `h` to be the non-cumulative form of `cumulative` (bounds × 1000: seconds → ms).
  static void ExpectDeltas(const HistogramDelta& h,
                           const std::vector<std::pair<double, double>>& cumulative) {
    ASSERT_EQ(h.buckets, cumulative.size());
    double below = 0;
    double total = 0;
    for (size_t i = 0; i < cumulative.size(); ++i) {
      const double le = cumulative[i].first;
      EXPECT_EQ(h.upper[i], std::isinf(le) ? le : le * 1000) << i;
      EXPECT_DOUBLE_EQ(h.count[i], cumulative[i].second - below) << i;
      EXPECT_GE(h.count[i], 0);
      below = cumulative[i].second;
      total += h.count[i];
    }
    EXPECT_DOUBLE_EQ(h.total, total);
  }
  Interner interner_;
  StringId publisher_ = interner_.Intern("scrape/test");
};

TEST_F(PromHistogramTest, SglangFixtureTwoScrapesGiveBucketDeltasAndResetIsNotNegative) {
  const std::string page = ReadFixture("sglang-metrics.txt");
  ASSERT_FALSE(page.empty());
  PromConverter c = Make(PromEngine::kSglang);
  Out o;
  Run(c, page, 10'000, o);
  EXPECT_TRUE(o.by_metric.empty()) << "the first scrape has no interval";
  EXPECT_EQ(o.stats.histogram_events, 0u);

  // Second scrape: every histogram doubled, so the interval's deltas are the first page's counts.
  Run(c, ScaleHistograms(page, 2), 15'000, o);
  EXPECT_EQ(o.stats.histogram_resets, 0u);
  const std::map<std::string, std::string> families = {
      {"ttft_ms", "sglang:time_to_first_token_seconds"},
      {"e2e_ms", "sglang:e2e_request_latency_seconds"},
      {"tpot_ms", "sglang:time_per_output_token_seconds"}};
  for (const auto& [metric, family] : families) {
    ASSERT_EQ(o.by_metric.count(metric), 1u)
        << metric << " errors " << o.stats.histogram_errors[1] << o.stats.histogram_errors[2]
        << o.stats.histogram_errors[3] << o.stats.histogram_errors[4];
    ExpectDeltas(*o.by_metric[metric], Buckets(page, family));
  }
  // The exact sum delta (in ms) of TTFT.
  EXPECT_NEAR(o.by_metric["ttft_ms"]->sum, 2.3518979474117756e+06 * 1000,
              2.3518979474117756e+09 * 1e-12);
  // func_latency is not a latency the mapping carries.
  EXPECT_EQ(o.by_metric.size(), families.size() + (o.by_metric.count("queue_time_ms") ? 1 : 0));
  // Mean gauges are still emitted next to the buckets.
  bool has_mean = false;
  for (const Event& e : o.events) has_mean |= interner_.Name(e.metric) == "ttft_mean_ms";
  EXPECT_TRUE(has_mean);

  // Third scrape: back to the original counts (the server restarted): a reset, whose increase is
  // the new cumulative counts — never a negative delta.
  Run(c, page, 20'000, o);
  EXPECT_GE(o.stats.histogram_resets, 3u);
  ASSERT_EQ(o.by_metric.count("ttft_ms"), 1u);
  ExpectDeltas(*o.by_metric["ttft_ms"], Buckets(page, "sglang:time_to_first_token_seconds"));
}

TEST_F(PromHistogramTest, VllmFixturesTtftBucketsWithoutSumOrInf) {
  for (const char* file : {"vllm-metrics.txt", "vllm-metrics-v0-engine.txt"}) {
    SCOPED_TRACE(file);
    const std::string page = ReadFixture(file);
    const auto ttft = Buckets(page, "vllm:time_to_first_token_seconds");
    if (ttft.empty()) continue;
    PromConverter c = Make(PromEngine::kVllm);
    Out o;
    Run(c, page, 1'000, o);
    Run(c, ScaleHistograms(page, 3), 6'000, o);
    ASSERT_EQ(o.by_metric.count("ttft_ms"), 1u);
    const HistogramDelta& h = *o.by_metric["ttft_ms"];
    ASSERT_EQ(h.buckets, ttft.size());
    double below = 0;
    for (size_t i = 0; i < ttft.size(); ++i) {
      EXPECT_DOUBLE_EQ(h.count[i], 2 * (ttft[i].second - below));
      below = ttft[i].second;
    }
    for (int i = 0; i < 4; ++i) EXPECT_EQ(o.stats.histogram_errors[i + 1], 0u);
  }
}

PromHistogramSnapshot Snap(std::vector<std::pair<double, double>> buckets, double sum,
                           double count) {
  PromHistogramSnapshot s;
  for (auto [le, c] : buckets)
    EXPECT_EQ(PromHistogramAddBucket(s, le, c), PromHistogramError::kNone);
  s.sum = sum;
  s.count = count;
  s.has_sum = s.has_count = true;
  return s;
}

TEST(PromHistogramDeltaTest, DeltasResetsAndValidation) {
  // Buckets out of order on input are sorted.
  const PromHistogramSnapshot a = Snap({{kInf, 10}, {0.1, 4}, {0.5, 9}}, 2.0, 10);
  ASSERT_EQ(a.buckets, 3u);
  EXPECT_EQ(a.le[0], 0.1);
  EXPECT_EQ(a.le[2], kInf);
  const PromHistogramSnapshot b = Snap({{0.1, 5}, {0.5, 12}, {kInf, 16}}, 3.5, 16);
  HistogramDelta d;
  bool reset = true;
  ASSERT_EQ(PromHistogramDeltaOf(a, b, 1000, &d, &reset), PromHistogramError::kNone);
  EXPECT_FALSE(reset);
  EXPECT_EQ(d.buckets, 3u);
  EXPECT_EQ(d.upper[0], 100);
  EXPECT_EQ(d.upper[1], 500);
  EXPECT_EQ(d.upper[2], kInf);
  EXPECT_EQ(d.count[0], 1);
  EXPECT_EQ(d.count[1], 2);
  EXPECT_EQ(d.count[2], 3);
  EXPECT_EQ(d.total, 6);
  EXPECT_DOUBLE_EQ(d.sum, 1500);
  // b → a: a decrease is a reset, the increase is a itself.
  ASSERT_EQ(PromHistogramDeltaOf(b, a, 1, &d, &reset), PromHistogramError::kNone);
  EXPECT_TRUE(reset);
  EXPECT_EQ(d.count[0], 4);
  EXPECT_EQ(d.count[1], 5);
  EXPECT_EQ(d.count[2], 1);
  EXPECT_EQ(d.sum, 2.0);
  // A different layout.
  const PromHistogramSnapshot c = Snap({{0.2, 5}, {0.5, 12}, {kInf, 16}}, 3.5, 16);
  EXPECT_EQ(PromHistogramDeltaOf(a, c, 1, &d), PromHistogramError::kLayoutChanged);
  // Validation on input.
  PromHistogramSnapshot s;
  EXPECT_EQ(PromHistogramAddBucket(s, std::nan(""), 1), PromHistogramError::kBadBound);
  EXPECT_EQ(PromHistogramAddBucket(s, -kInf, 1), PromHistogramError::kBadBound);
  EXPECT_EQ(PromHistogramAddBucket(s, 1, -1), PromHistogramError::kBadCount);
  EXPECT_EQ(PromHistogramAddBucket(s, 1, std::nan("")), PromHistogramError::kBadCount);
  EXPECT_EQ(PromHistogramAddBucket(s, 1, kInf), PromHistogramError::kBadCount);
  EXPECT_EQ(PromHistogramAddBucket(s, 1, 2), PromHistogramError::kNone);
  EXPECT_EQ(PromHistogramAddBucket(s, 1, 3), PromHistogramError::kBadBound);  // repeated
  // Not cumulative.
  PromHistogramSnapshot nc = Snap({{1, 5}, {2, 3}}, 0, 5);
  EXPECT_EQ(PromHistogramDeltaOf(nc, nc, 1, &d), PromHistogramError::kBadCount);
  // The bucket limit.
  PromHistogramSnapshot big;
  for (uint32_t i = 0; i < HistogramDelta::kMaxBuckets; ++i) {
    ASSERT_EQ(PromHistogramAddBucket(big, i + 1, i), PromHistogramError::kNone);
  }
  EXPECT_EQ(PromHistogramAddBucket(big, 1e9, 1e9), PromHistogramError::kTooManyBuckets);
}

TEST_F(PromHistogramTest, TooManyBucketsIsCountedNotEmitted) {
  auto page = [](double f) {
    std::ostringstream p;
    p << "# TYPE vllm:e2e_request_latency_seconds histogram\n";
    for (uint32_t i = 0; i <= HistogramDelta::kMaxBuckets; ++i) {
      p << "vllm:e2e_request_latency_seconds_bucket{le=\"" << i + 1 << "\",model_name=\"m\"} "
        << f * i << "\n";
    }
    p << "vllm:e2e_request_latency_seconds_bucket{le=\"+Inf\",model_name=\"m\"} "
      << f * (HistogramDelta::kMaxBuckets + 1) << "\n";
    return p.str();
  };
  PromConverter c = Make(PromEngine::kVllm);
  Out o;
  Run(c, page(1), 1000, o);
  Run(c, page(2), 2000, o);
  EXPECT_TRUE(o.by_metric.empty());
  EXPECT_EQ(o.stats.histogram_errors[static_cast<size_t>(PromHistogramError::kTooManyBuckets)], 1u);
}

}  // namespace
}  // namespace inferscope
