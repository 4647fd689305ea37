#include "pipeline/metrics.h"

#include <gtest/gtest.h>

namespace inferscope {
namespace {

TEST(MetricsRegistryTest, RendersCountersGaugesAndHistograms) {
  MetricsRegistry m;
  m.GetCounter("x_total", "Things", {{"stage", "a"}})->Inc(3);
  m.GetCounter("x_total", "Things", {{"stage", "b\"q"}})->Inc();
  m.GetGauge("depth", "Depth")->Set(2.5);
  Histogram* h = m.GetHistogram("lat_seconds", "Latency", {}, {0.1, 1});
  h->Observe(0.05);
  h->Observe(0.5);
  h->Observe(5);
  m.AddCallbackGauge("cb", "Callback", {{"q", "ops"}}, [] { return 7.0; });

  std::string text = m.RenderPrometheus();
  EXPECT_NE(text.find("# TYPE x_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("x_total{stage=\"a\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("x_total{stage=\"b\\\"q\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("depth 2.5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"0.10000000000000001\"} 1\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"1\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_count 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("cb{q=\"ops\"} 7\n"), std::string::npos) << text;
  EXPECT_EQ(m.CounterValue("x_total"), 4u);
  EXPECT_EQ(m.CounterValue("x_total", {{"stage", "a"}}), 3u);
}

TEST(MetricsRegistryTest, SameLabelsSameCounter) {
  MetricsRegistry m;
  Counter* a = m.GetCounter("c_total", "C", {{"k", "v"}});
  Counter* b = m.GetCounter("c_total", "C", {{"k", "v"}});
  EXPECT_EQ(a, b);
}

TEST(MetricsRegistryTest, LabelCardinalityIsBounded) {
  MetricsRegistry m;
  for (size_t i = 0; i < MetricsRegistry::kMaxSeriesPerFamily + 50; ++i) {
    m.GetCounter("p_total", "Per publisher", {{"publisher", std::to_string(i)}})->Inc();
  }
  EXPECT_EQ(m.CounterValue("p_total"), MetricsRegistry::kMaxSeriesPerFamily + 50);
  EXPECT_EQ(m.CounterValue("p_total", {{"overflow", "true"}}), 50u);
}

TEST(MetricsRegistryTest, RemoveCallbacks) {
  MetricsRegistry m;
  int owner = 0;
  m.AddCallbackGauge(
      "cb", "Callback", {}, [] { return 1.0; }, &owner);
  m.RemoveCallbacks(&owner);
  EXPECT_EQ(m.RenderPrometheus().find("cb"), std::string::npos);
}

}  // namespace
}  // namespace inferscope
