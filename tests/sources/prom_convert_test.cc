#include "sources/prom_convert.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "pipeline/interner.h"
#include "sources/prom_mapping.h"

namespace inferscope {
namespace {

class PromConvertTest : public ::testing::Test {
 protected:
  PromConverter Make(PromEngine engine = PromEngine::kAuto, size_t max_series = 10'000) {
    PromConverter::Options o;
    o.engine = engine;
    o.instance = "vllm-0";
    o.max_series = max_series;
    return PromConverter(o, interner_);
  }
  // metric|model → value of the events of one Convert.
  std::map<std::string, double> Run(PromConverter& c, std::string_view page, int64_t t,
                                    PromConvertStats* stats = nullptr) {
    std::vector<Event> events;
    PromConvertStats s = c.Convert(page, t, publisher_, events);
    if (stats != nullptr) *stats = s;
    std::map<std::string, double> out;
    for (const Event& e : events) {
      EXPECT_EQ(e.kind, EventKind::kGauge);
      EXPECT_EQ(e.time_ms, t);
      EXPECT_EQ(e.publisher, publisher_);
      EXPECT_EQ(interner_.Name(e.instance), "vllm-0");
      const std::string key =
          std::string(interner_.Name(e.metric)) + "|" + std::string(interner_.Name(e.model));
      EXPECT_EQ(out.count(key), 0u) << "one event per metric and model: " << key;
      out[key] = e.value;
    }
    return out;
  }
  Interner interner_;
  StringId publisher_ = interner_.Intern("scrape/test");
};

std::string VllmPage(double running, double kv, double preempt, double gen, double ttft_sum,
                     double ttft_count, double hits, double queries) {
  std::ostringstream p;
  p << "# TYPE vllm:num_requests_running gauge\n"
    << "vllm:num_requests_running{engine=\"0\",model_name=\"m\"} " << running << "\n"
    << "vllm:num_requests_running{engine=\"1\",model_name=\"m\"} " << running << "\n"
    << "# TYPE vllm:kv_cache_usage_perc gauge\n"
    << "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} " << kv << "\n"
    << "vllm:kv_cache_usage_perc{engine=\"1\",model_name=\"m\"} " << kv / 2 << "\n"
    << "# TYPE vllm:num_preemptions_total counter\n"
    << "vllm:num_preemptions_total{model_name=\"m\"} " << preempt << "\n"
    << "# TYPE vllm:generation_tokens_total counter\n"
    << "vllm:generation_tokens_total{model_name=\"m\"} " << gen << "\n"
    << "# TYPE vllm:time_to_first_token_seconds histogram\n"
    << "vllm:time_to_first_token_seconds_bucket{le=\"0.1\",model_name=\"m\"} " << ttft_count << "\n"
    << "vllm:time_to_first_token_seconds_bucket{le=\"+Inf\",model_name=\"m\"} " << ttft_count
    << "\n"
    << "vllm:time_to_first_token_seconds_sum{model_name=\"m\"} " << ttft_sum << "\n"
    << "vllm:time_to_first_token_seconds_count{model_name=\"m\"} " << ttft_count << "\n"
    << "# TYPE vllm:prefix_cache_hits counter\n"
    << "vllm:prefix_cache_hits_total{model_name=\"m\"} " << hits << "\n"
    << "# TYPE vllm:prefix_cache_queries counter\n"
    << "vllm:prefix_cache_queries_total{model_name=\"m\"} " << queries << "\n";
  return p.str();
}

TEST_F(PromConvertTest, GaugesFirstThenRatesDeltasAndRatios) {
  PromConverter c = Make();
  PromConvertStats s;
  auto first = Run(c, VllmPage(4, 0.8, 10, 1000, 2.0, 20, 50, 100), 1'000'000, &s);
  // Counters have no previous value yet: only the gauges.
  EXPECT_EQ(first.size(), 2u);
  EXPECT_EQ(first["num_requests_running|m"], 8);     // sum over engines
  EXPECT_DOUBLE_EQ(first["kv_cache_usage|m"], 0.6);  // mean over engines
  EXPECT_EQ(s.not_carried, 2u);                      // the buckets
  EXPECT_EQ(s.unmapped, 0u);
  EXPECT_EQ(s.mapped, 10u);  // 2 + 2 gauges, 2 counters, _sum, _count, hits, queries

  auto second = Run(c, VllmPage(5, 0.9, 13, 1500, 3.0, 30, 80, 140), 1'005'000, &s);
  EXPECT_EQ(second["num_requests_running|m"], 10);
  EXPECT_DOUBLE_EQ(second["num_preemptions|m"], 3);            // per interval
  EXPECT_DOUBLE_EQ(second["generation_tokens_per_s|m"], 100);  // 500 over 5 s
  EXPECT_DOUBLE_EQ(second["ttft_mean_ms|m"], 100);             // 1 s over 10 requests
  EXPECT_DOUBLE_EQ(second["prefix_cache_hit_rate|m"], 0.75);   // 30 / 40
  EXPECT_EQ(s.resets, 0u);

  // A restart: every counter went down. Prometheus' rate counts the new value as the increase.
  auto third = Run(c, VllmPage(1, 0.1, 2, 200, 0.5, 2, 1, 4), 1'010'000, &s);
  EXPECT_EQ(s.resets, 6u);
  EXPECT_DOUBLE_EQ(third["num_preemptions|m"], 2);
  EXPECT_DOUBLE_EQ(third["generation_tokens_per_s|m"], 40);
  EXPECT_DOUBLE_EQ(third["ttft_mean_ms|m"], 250);
  EXPECT_DOUBLE_EQ(third["prefix_cache_hit_rate|m"], 0.25);

  // No requests in the interval: no mean, no hit rate (not a 0).
  auto fourth = Run(c, VllmPage(1, 0.1, 2, 200, 0.5, 2, 1, 4), 1'015'000, &s);
  EXPECT_EQ(fourth.count("ttft_mean_ms|m"), 0u);
  EXPECT_EQ(fourth.count("prefix_cache_hit_rate|m"), 0u);
  EXPECT_DOUBLE_EQ(fourth["generation_tokens_per_s|m"], 0);
}

TEST_F(PromConvertTest, CounterFamiliesMatchWithOrWithoutTotal) {
  // 0.0.4 names the family with _total; OpenMetrics without.
  EXPECT_NE(FindPromMapping(PromEngine::kVllm, "vllm:num_preemptions_total", PromRole::kTotal),
            nullptr);
  EXPECT_EQ(FindPromMapping(PromEngine::kVllm, "vllm:num_preemptions", PromRole::kTotal),
            FindPromMapping(PromEngine::kVllm, "vllm:num_preemptions_total", PromRole::kTotal));
  EXPECT_EQ(FindPromMapping(PromEngine::kVllm, "vllm:num_preemptions", PromRole::kValue), nullptr);
  PromConverter c = Make();
  const char* om = "# TYPE vllm:num_preemptions counter\nvllm:num_preemptions_total 4\n# EOF\n";
  const char* om2 = "# TYPE vllm:num_preemptions counter\nvllm:num_preemptions_total 9\n# EOF\n";
  Run(c, om, 1000);
  auto r = Run(c, om2, 2000);
  EXPECT_DOUBLE_EQ(r["num_preemptions|_"], 5);
}

TEST_F(PromConvertTest, SeriesThatLeaveAreForgottenAndComeBackAsNew) {
  PromConverter c = Make();
  const std::string a =
      "# TYPE vllm:prompt_tokens_total counter\n"
      "vllm:prompt_tokens_total{model_name=\"a\"} 100\n"
      "vllm:prompt_tokens_total{model_name=\"b\"} 100\n";
  const std::string only_a =
      "# TYPE vllm:prompt_tokens_total counter\n"
      "vllm:prompt_tokens_total{model_name=\"a\"} 110\n";
  Run(c, a, 1000);
  EXPECT_EQ(c.series(), 2u);
  auto r = Run(c, only_a, 2000);
  EXPECT_DOUBLE_EQ(r["prompt_tokens_per_s|a"], 10);
  EXPECT_EQ(c.series(), 1u);
  r = Run(c, a, 3000);  // b is new again: no rate for it yet; a went down: a reset
  EXPECT_EQ(r.count("prompt_tokens_per_s|b"), 0u);
  EXPECT_DOUBLE_EQ(r["prompt_tokens_per_s|a"], 100);
}

TEST_F(PromConvertTest, SeriesLimitIsCounted) {
  PromConverter c = Make(PromEngine::kAuto, 1);
  PromConvertStats s;
  Run(c,
      "# TYPE vllm:prompt_tokens_total counter\n"
      "vllm:prompt_tokens_total{model_name=\"a\"} 1\n"
      "vllm:prompt_tokens_total{model_name=\"b\"} 1\n",
      1000, &s);
  EXPECT_EQ(s.series_limit, 1u);
  EXPECT_EQ(c.series(), 1u);
}

TEST_F(PromConvertTest, ModelFromLabelEscapedOrDefaultAndEngineFilter) {
  PromConverter::Options o;
  o.instance = "vllm-0";
  o.engine = PromEngine::kSglang;
  o.default_model = "fallback";
  PromConverter c(o, interner_);
  PromConvertStats s;
  std::vector<Event> events;
  s = c.Convert(
      "sglang:num_running_reqs{model_name=\"a\\\"b\"} 3\n"
      "sglang:num_queue_reqs 4\n"
      "vllm:num_requests_running 5\n",  // another engine's name: not carried for sglang
      1000, publisher_, events);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(interner_.Name(events[0].model), "a\"b");
  EXPECT_EQ(interner_.Name(events[0].metric), "num_requests_running");
  EXPECT_EQ(interner_.Name(events[1].model), "fallback");
  EXPECT_EQ(interner_.Name(events[1].metric), "num_requests_waiting");
  EXPECT_EQ(s.unmapped, 1u);
}

TEST_F(PromConvertTest, UnitConversionsAndInvalidValues) {
  PromConverter c = Make(PromEngine::kDcgm);
  PromConvertStats s;
  auto r = Run(c,
               "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"
               "DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"x\"} 90\n"
               "DCGM_FI_DEV_GPU_UTIL{gpu=\"1\",UUID=\"y\"} 100\n"
               "# TYPE DCGM_FI_DEV_FB_USED gauge\n"
               "DCGM_FI_DEV_FB_USED{gpu=\"0\"} 1024\n"
               "DCGM_FI_DEV_FB_USED{gpu=\"1\"} 1024\n"
               "# TYPE DCGM_FI_DEV_SM_CLOCK gauge\n"
               "DCGM_FI_DEV_SM_CLOCK{gpu=\"0\"} 1410\n"
               "# TYPE DCGM_FI_DEV_POWER_USAGE gauge\n"
               "DCGM_FI_DEV_POWER_USAGE{gpu=\"0\"} NaN\n",
               1000, &s);
  EXPECT_DOUBLE_EQ(r["gpu_utilization|_"], 0.95);
  EXPECT_DOUBLE_EQ(r["gpu_memory_used_bytes|_"], 2048.0 * 1048576);
  EXPECT_DOUBLE_EQ(r["gpu_sm_clock_hz|_"], 1.41e9);
  EXPECT_EQ(r.count("gpu_power_watts|_"), 0u);
  EXPECT_EQ(s.invalid_value, 1u);
  // vLLM v0's -1 "prefix caching off" is not a hit rate.
  PromConverter v = Make();
  r = Run(v,
          "# TYPE vllm:gpu_prefix_cache_hit_rate gauge\n"
          "vllm:gpu_prefix_cache_hit_rate{model_name=\"m\"} -1.0\n",
          1000, &s);
  EXPECT_TRUE(r.empty());
  EXPECT_EQ(s.invalid_value, 1u);
}

// Every row of one inferscope metric converts alike, so one event per metric makes sense; ratio
// metrics have both parts; every row is found by its own lookup; every row is in docs/SOURCES.md.
TEST(PromMappingTest, TableIsConsistentAndDocumented) {
  std::ifstream in(std::string(INFERSCOPE_SOURCE_DIR) + "/docs/SOURCES.md");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  ASSERT_FALSE(doc.empty());
  std::map<size_t, const PromMapping*> first;  // the first non-ratio row of each metric
  std::map<size_t, int> parts;
  for (const PromMapping& m : PromMappings()) {
    SCOPED_TRACE(std::string(m.family));
    EXPECT_EQ(FindPromMapping(PromEngine::kAuto, m.family, m.role), &m);
    EXPECT_EQ(FindPromMapping(m.engine, m.family, m.role), &m);
    const size_t slot = PromMetricSlot(&m);
    EXPECT_EQ(PromMetricNames()[slot], m.metric);
    const bool ratio = m.conversion == PromConversion::kRatioNumerator ||
                       m.conversion == PromConversion::kRatioDenominator;
    if (ratio) {
      parts[slot] |= m.conversion == PromConversion::kRatioNumerator ? 1 : 2;
    } else {
      auto it = first.emplace(slot, &m).first;
      EXPECT_EQ(m.conversion, it->second->conversion);
      EXPECT_EQ(m.combine, it->second->combine);
    }
    // The documentation table row: | `engine` | `family` | role | `metric` | conversion | scale |
    const std::string row = "| " + std::string(PromEngineName(m.engine)) + " | `" +
                            std::string(m.family) + "` | " + std::string(PromRoleName(m.role)) +
                            " | `" + std::string(m.metric) + "` | " +
                            std::string(PromConversionName(m.conversion)) + " |";
    EXPECT_NE(doc.find(row), std::string::npos) << "docs/SOURCES.md lacks: " << row;
  }
  for (const auto& [slot, mask] : parts) EXPECT_EQ(mask, 3) << PromMetricNames()[slot];
}

}  // namespace
}  // namespace inferscope
