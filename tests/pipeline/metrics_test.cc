#include "pipeline/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <ctime>
#include <limits>
#include <string>

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
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"0.1\"} 1\n"), std::string::npos) << text;
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
    m.GetCounter("p_total", "Per id", {{"id", std::to_string(i)}})->Inc();
  }
  EXPECT_EQ(m.CounterValue("p_total"), MetricsRegistry::kMaxSeriesPerFamily + 50);
  EXPECT_EQ(m.CounterValue("p_total", {{"overflow", "true"}}), 50u);
}

// Prometheus matches `le` as a string: it must be the shortest form that reads back as the bound.
TEST(MetricsRegistryTest, FormatsDoublesAsTheShortestRoundTrip) {
  EXPECT_EQ(FormatPrometheusDouble(0.1), "0.1");
  EXPECT_EQ(FormatPrometheusDouble(0.25), "0.25");
  EXPECT_EQ(FormatPrometheusDouble(2.5e-3), "0.0025");
  EXPECT_EQ(FormatPrometheusDouble(1e-4), "0.0001");
  EXPECT_EQ(FormatPrometheusDouble(1e-5), "1e-05");
  EXPECT_EQ(FormatPrometheusDouble(1), "1");
  EXPECT_EQ(FormatPrometheusDouble(10), "10");
  EXPECT_EQ(FormatPrometheusDouble(-3.5), "-3.5");
  EXPECT_EQ(FormatPrometheusDouble(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(FormatPrometheusDouble(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatPrometheusDouble(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatPrometheusDouble(std::nan("")), "NaN");
  for (double bound : LatencyBuckets()) {
    const std::string text = FormatPrometheusDouble(bound);
    EXPECT_EQ(std::strtod(text.c_str(), nullptr), bound) << text;
    EXPECT_LE(text.size(), 7u) << text;  // "0.00025", "1e-05": no 17-digit noise
  }
  MetricsRegistry m;
  m.GetHistogram("h_seconds", "H")->Observe(0.2);
  const std::string text = m.RenderPrometheus();
  for (const char* le :
       {"1e-05", "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.1", "0.25", "2.5", "10"}) {
    EXPECT_NE(text.find(std::string("h_seconds_bucket{le=\"") + le + "\"}"), std::string::npos)
        << le << "\n"
        << text;
  }
}

TEST(MetricsRegistryTest, PublisherLabelIsBoundedPerFamilyAndFoldedIntoOther) {
  MetricsRegistry m;
  m.SetMaxPublishersPerFamily(3);
  for (int i = 0; i < 10; ++i) {
    const std::string p = "pub-" + std::to_string(i);
    m.GetCounter("a_total", "A", {{"stage", "in"}, {"publisher", p}})->Inc();
    m.GetCounter("a_total", "A", {{"stage", "out"}, {"publisher", p}})->Inc(2);
    m.GetGauge("g", "G", {{"publisher", p}})->Set(1);
  }
  // The first three publishers keep their series; the other seven share publisher="_other".
  EXPECT_EQ(m.CounterValue("a_total", {{"publisher", "pub-2"}}), 3u);
  EXPECT_EQ(m.CounterValue("a_total", {{"publisher", "pub-3"}}), 0u);
  EXPECT_EQ(m.CounterValue("a_total", {{"stage", "in"}, {"publisher", "_other"}}), 7u);
  EXPECT_EQ(m.CounterValue("a_total", {{"stage", "out"}, {"publisher", "_other"}}), 14u);
  EXPECT_EQ(m.CounterValue("a_total"), 30u);  // nothing lost
  // Each family has its own budget, and every folded lookup is counted, by family.
  EXPECT_EQ(m.CounterValue("inferscope_metrics_publishers_folded_total", {{"family", "a_total"}}),
            14u);
  EXPECT_EQ(m.CounterValue("inferscope_metrics_publishers_folded_total", {{"family", "g"}}), 7u);
  const std::string text = m.RenderPrometheus();
  EXPECT_NE(text.find("g{publisher=\"pub-0\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("g{publisher=\"_other\"} 1\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("pub-3"), std::string::npos) << text;
  // A publisher already tracked stays tracked.
  m.GetCounter("a_total", "A", {{"stage", "new"}, {"publisher", "pub-1"}})->Inc();
  EXPECT_EQ(m.CounterValue("a_total", {{"stage", "new"}, {"publisher", "pub-1"}}), 1u);
  EXPECT_EQ(m.max_publishers_per_family(), 3u);
}

TEST(MetricsRegistryTest, ProcessMetricsAreReadFromProc) {
  MetricsRegistry m;
  EXPECT_EQ(m.RenderPrometheus().find("process_"), std::string::npos);
  m.AddProcessMetrics();
  const std::string text = m.RenderPrometheus();
  for (const char* family : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                             "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                             "process_start_time_seconds"}) {
    const std::string sample = std::string("\n") + family + " ";
    const size_t at = text.find(sample);
    ASSERT_NE(at, std::string::npos) << family << "\n" << text;
    const double value = std::strtod(text.c_str() + at + sample.size(), nullptr);
    // CPU time counts in clock ticks and may still be 0 in a fresh test process.
    if (std::string(family) == "process_cpu_seconds_total") {
      EXPECT_GE(value, 0) << family;
    } else {
      EXPECT_GT(value, 0) << family;
    }
  }
  EXPECT_NE(text.find("# TYPE process_cpu_seconds_total counter\n"), std::string::npos);
  // Started within the last day, in Unix seconds.
  const size_t at = text.find("\nprocess_start_time_seconds ");
  const double start = std::strtod(text.c_str() + at + 28, nullptr);
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_LE(start, now + 1);
  EXPECT_GT(start, now - 86'400);
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
