// The serving model's behaviour: queueing theory, KV-cache pressure, slot limits, faults,
// timeouts, determinism and the gauges of the metric contract.

#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <tuple>

#include "tests/sim/sim_test_util.h"

namespace inferscope::sim {
namespace {

using testing::ErrorRatio;
using testing::Instance;
using testing::Mean;
using testing::Poisson;
using testing::Quantile;
using testing::Recorder;
using testing::RunFleet;
using testing::Tpots;
using testing::Ttfts;

std::vector<InstanceOptions> One(ServingParams p = {}) { return {Instance("vllm-0", p)}; }

// Little's law: the mean number of requests in the instance (running + waiting, sampled by the
// gauges) equals throughput x mean time in the instance (e2e).
TEST(ServingModelTest, LittlesLawHolds) {
  Recorder rec;
  auto fleet = RunFleet(&rec, One(), std::make_unique<PoissonArrivals>(Poisson(3)), 1800);
  ASSERT_NE(fleet, nullptr);
  const double from = 120'000, to = 1'700'000;
  std::vector<double> running = rec.Gauges(Gauge::kNumRequestsRunning, 0, from, to);
  std::vector<double> waiting = rec.Gauges(Gauge::kNumRequestsWaiting, 0, from, to);
  ASSERT_EQ(running.size(), waiting.size());
  const double in_system = Mean(running) + Mean(waiting);
  std::vector<double> e2e;
  for (const RequestOutcome& o : rec.requests) {
    if (o.arrival_ms >= from && o.arrival_ms < to) e2e.push_back(o.e2e_ms);
  }
  const double throughput = static_cast<double>(rec.Outcomes(0, from, to).size()) / (to - from);
  const double little = throughput * Mean(e2e);
  EXPECT_GT(in_system, 5) << "a loaded instance";
  EXPECT_NEAR(in_system / little, 1.0, 0.08) << in_system << " vs " << little;
  // The gauge samples agree with the exact time integral of the running batch.
  const double exact = fleet->instance(0).totals().running_ms / 1'800'000;
  EXPECT_NEAR(Mean(rec.Gauges(Gauge::kNumRequestsRunning)) / exact, 1.0, 0.05);
}

TEST(ServingModelTest, KvUsageNeverExceedsOneUnderPressure) {
  ServingParams p;
  p.kv_capacity_tokens = 30'000;
  Recorder rec;
  auto fleet = RunFleet(&rec, One(p), std::make_unique<PoissonArrivals>(Poisson(6)), 900,
                        {*ParseFault("kv_cache_small:vllm-0:300s-600s:0.5")});
  ASSERT_NE(fleet, nullptr);
  std::vector<double> kv = rec.Gauges(Gauge::kKvCacheUsage);
  ASSERT_EQ(kv.size(), 899u);
  EXPECT_LE(*std::max_element(kv.begin(), kv.end()), 1.0);
  EXPECT_GT(*std::max_element(kv.begin(), kv.end()), 0.9) << "the cache does fill";
  EXPECT_GT(fleet->instance(0).totals().preemptions, 0u);
}

// A KV cache too small for the load preempts (recompute) and delays first tokens; a large one
// never preempts at the same load.
TEST(ServingModelTest, SmallKvCachePreemptsAndRaisesTtft) {
  ServingParams small;
  small.kv_capacity_tokens = 24'000;
  Recorder rec_small, rec_big;
  auto a = RunFleet(&rec_small, One(small), std::make_unique<PoissonArrivals>(Poisson(3)), 1200);
  auto b = RunFleet(&rec_big, One(), std::make_unique<PoissonArrivals>(Poisson(3)), 1200);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_GT(a->instance(0).totals().preemptions, 50u);
  EXPECT_EQ(b->instance(0).totals().preemptions, 0u);
  double preempted = 0;
  for (double v : rec_small.Gauges(Gauge::kNumPreemptions)) preempted += v;
  // num_preemptions counts per interval: the samples add up to the total but for the last,
  // unsampled, fraction of a second.
  const auto total = static_cast<double>(a->instance(0).totals().preemptions);
  EXPECT_LE(preempted, total);
  EXPECT_GE(preempted, total - 10);
  const double ttft_small = Mean(Ttfts(rec_small.requests));
  const double ttft_big = Mean(Ttfts(rec_big.requests));
  EXPECT_GT(ttft_small, 1.5 * ttft_big) << ttft_small << " vs " << ttft_big;
  EXPECT_GT(Mean(rec_small.Gauges(Gauge::kKvCacheUsage)), 0.6);
  EXPECT_LT(Mean(rec_big.Gauges(Gauge::kKvCacheUsage)), 0.1);
}

TEST(ServingModelTest, LowSlotLimitBuildsAQueueAndRaisesTtft) {
  ServingParams low;
  low.max_num_seqs = 6;
  Recorder rec_low, rec_ok;
  auto a = RunFleet(&rec_low, One(low), std::make_unique<PoissonArrivals>(Poisson(3)), 1200);
  auto b = RunFleet(&rec_ok, One(), std::make_unique<PoissonArrivals>(Poisson(3)), 1200);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_LE(Quantile(rec_low.Gauges(Gauge::kNumRequestsRunning), 1.0), 6);
  const double wait_low = Mean(rec_low.Gauges(Gauge::kNumRequestsWaiting));
  const double wait_ok = Mean(rec_ok.Gauges(Gauge::kNumRequestsWaiting));
  EXPECT_GT(wait_low, 10) << wait_low;
  EXPECT_LT(wait_ok, 1) << wait_ok;
  EXPECT_GT(Quantile(Ttfts(rec_low.requests), 0.5), 5 * Quantile(Ttfts(rec_ok.requests), 0.5));
  EXPECT_EQ(Mean(rec_low.Gauges(Gauge::kMaxNumSeqs)), 6);
}

// A GPU 3x slower makes every step 3x longer: at light load (small batches), tpot rises by about
// the factor, only while the fault lasts.
TEST(ServingModelTest, SlowGpuRaisesTpotByItsFactor) {
  Recorder rec;
  auto fleet = RunFleet(&rec, One(), std::make_unique<PoissonArrivals>(Poisson(0.3)), 3600,
                        {*ParseFault("slow_gpu:vllm-0:20m-40m:3")});
  ASSERT_NE(fleet, nullptr);
  std::vector<RequestOutcome> before, during, after;
  for (const RequestOutcome& o : rec.requests) {
    if (o.time_ms < 1'200'000) before.push_back(o);
    if (o.arrival_ms >= 1'200'000 && o.time_ms < 2'400'000) during.push_back(o);
    if (o.arrival_ms >= 2'400'000) after.push_back(o);
  }
  const double ratio = Quantile(Tpots(during), 0.5) / Quantile(Tpots(before), 0.5);
  EXPECT_GT(ratio, 2.7) << ratio;
  EXPECT_LT(ratio, 3.6) << ratio;
  EXPECT_NEAR(Quantile(Tpots(after), 0.5) / Quantile(Tpots(before), 0.5), 1.0, 0.15);
}

TEST(ServingModelTest, PrefixCacheOffZeroesHitRateAndRaisesTtft) {
  PoissonOptions load = Poisson(1.5);
  load.prompt_median = 2000;
  Recorder rec;
  auto fleet = RunFleet(&rec, One(), std::make_unique<PoissonArrivals>(load), 3600,
                        {*ParseFault("prefix_cache_off:vllm-0:20m-40m")});
  ASSERT_NE(fleet, nullptr);
  std::vector<double> off = rec.Gauges(Gauge::kPrefixCacheHitRate, 0, 1'201'000, 2'400'001);
  std::vector<double> on = rec.Gauges(Gauge::kPrefixCacheHitRate, 0, 0, 1'200'000);
  ASSERT_GT(off.size(), 500u);
  EXPECT_EQ(*std::max_element(off.begin(), off.end()), 0.0);
  EXPECT_NEAR(Mean(on), 0.35, 0.05) << "the configured mean";
  std::vector<RequestOutcome> in, out;
  for (const RequestOutcome& o : rec.requests) {
    (o.arrival_ms >= 1'200'000 && o.arrival_ms < 2'400'000 ? in : out).push_back(o);
  }
  for (const RequestOutcome& o : in) EXPECT_EQ(o.cached_tokens, 0u);
  EXPECT_GT(Mean(Ttfts(in)), 1.3 * Mean(Ttfts(out))) << Mean(Ttfts(in)) << " " << Mean(Ttfts(out));
  EXPECT_GT(Mean(rec.Gauges(Gauge::kPromptTokensPerS, 0, 1'201'000, 2'400'001)),
            1.3 * Mean(rec.Gauges(Gauge::kPromptTokensPerS, 0, 0, 1'200'000)))
      << "more prompt tokens prefilled without the cache";
}

TEST(ServingModelTest, ErrorBurstOnlyInItsIntervalAndOnItsInstance) {
  std::vector<InstanceOptions> fleet_opts = {Instance("vllm-0"), Instance("vllm-1"),
                                             Instance("vllm-2")};
  Recorder rec;
  auto fleet = RunFleet(&rec, fleet_opts, std::make_unique<PoissonArrivals>(Poisson(6)), 1800,
                        {*ParseFault("error_burst:vllm-1:10m-20m:0.5")});
  ASSERT_NE(fleet, nullptr);
  std::vector<RequestOutcome> burst, quiet, others_in_burst;
  for (const RequestOutcome& o : rec.requests) {
    const bool in = o.arrival_ms >= 600'000 && o.arrival_ms < 1'200'000;
    if (o.instance == 1) {
      (in ? burst : quiet).push_back(o);
    } else if (in) {
      others_in_burst.push_back(o);
    }
  }
  EXPECT_NEAR(ErrorRatio(burst), 0.5, 0.06);
  EXPECT_LT(ErrorRatio(quiet), 0.005);
  EXPECT_LT(ErrorRatio(others_in_burst), 0.005);
  for (const RequestOutcome& o : burst) {
    if (!o.ok()) {
      EXPECT_EQ(ErrorName(o.error), "server_error");
      EXPECT_LT(o.ttft_ms, 0) << "no token before the error";
    }
  }
}

TEST(ServingModelTest, TimeoutsOccurUnderOverloadOnly) {
  ServingParams p;
  p.timeout_s = 30;
  Recorder over, light;
  auto a = RunFleet(&over, One(p), std::make_unique<PoissonArrivals>(Poisson(20)), 600);
  auto b = RunFleet(&light, One(p), std::make_unique<PoissonArrivals>(Poisson(1)), 600);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  uint64_t timeouts = 0;
  for (const RequestOutcome& o : over.requests) {
    if (o.error != RequestError::kTimeout) continue;
    ++timeouts;
    EXPECT_GE(o.e2e_ms, 30'000);
    EXPECT_LT(o.e2e_ms, 31'000) << "fails at the first step boundary after its deadline";
  }
  EXPECT_GT(timeouts, 1000u);
  EXPECT_EQ(a->instance(0).totals().timeouts, timeouts);
  EXPECT_EQ(b->instance(0).totals().timeouts, 0u);
  // Overload: the queue is bounded by rate x timeout, not growing without end.
  EXPECT_LT(Quantile(over.Gauges(Gauge::kNumRequestsWaiting), 1.0), 20 * 30 + 50);
}

// Everything a run produces, as comparable tuples.
std::vector<std::tuple<uint32_t, uint64_t, double, double, double, double, uint32_t, int>> Digest(
    const Recorder& rec) {
  std::vector<std::tuple<uint32_t, uint64_t, double, double, double, double, uint32_t, int>> d;
  for (const RequestOutcome& o : rec.requests) {
    d.emplace_back(o.instance, o.id, o.time_ms, o.ttft_ms, o.tpot_ms, o.e2e_ms, o.cached_tokens,
                   static_cast<int>(o.error));
  }
  for (const GaugeSample& g : rec.gauges) {
    d.emplace_back(g.instance, 0, g.time_ms, g.value, 0, 0, 0, static_cast<int>(g.gauge));
  }
  return d;
}

TEST(ServingModelTest, SameSeedSameOutput) {
  auto run = [](uint64_t seed, Recorder* rec) {
    std::vector<Fault> faults = {*ParseFault("kv_cache_small:sglang-1:1m-3m:0.05"),
                                 *ParseFault("error_burst:*:2m-4m:0.1"),
                                 *ParseFault("load_double:vllm-0:1m-2m")};
    PoissonOptions p = Poisson(12, seed);
    p.wander = 0.1;
    return RunFleet(rec, StandardFleet(3, 2, seed), std::make_unique<PoissonArrivals>(p), 300,
                    faults, std::make_unique<RandomRouter>(seed), seed);
  };
  Recorder a, b, c;
  ASSERT_NE(run(5, &a), nullptr);
  ASSERT_NE(run(5, &b), nullptr);
  ASSERT_NE(run(6, &c), nullptr);
  EXPECT_GT(a.requests.size(), 2000u);
  EXPECT_TRUE(Digest(a) == Digest(b));
  EXPECT_FALSE(Digest(a) == Digest(c));
}

// The gauges of the metric contract: every name, the constant ones follow faults, the hit rate
// is left out of intervals that scheduled no prompt.
TEST(ServingModelTest, GaugesFollowTheContract) {
  Recorder rec;
  auto fleet = RunFleet(&rec, One(), std::make_unique<PoissonArrivals>(Poisson(0.2)), 600,
                        {*ParseFault("slot_limit_low:vllm-0:100s-200s"),
                         *ParseFault("kv_cache_small:vllm-0:300s-400s")});
  ASSERT_NE(fleet, nullptr);
  std::set<std::string_view> names;
  for (const GaugeSample& g : rec.gauges) names.insert(GaugeName(g.gauge));
  EXPECT_EQ(names, (std::set<std::string_view>{
                       "num_requests_running", "num_requests_waiting", "kv_cache_usage",
                       "num_preemptions", "prefix_cache_hit_rate", "generation_tokens_per_s",
                       "prompt_tokens_per_s", "max_num_seqs", "kv_cache_capacity_tokens"}));
  EXPECT_EQ(rec.Gauges(Gauge::kNumRequestsRunning).size(), 599u) << "one sample per second";
  EXPECT_LT(rec.Gauges(Gauge::kPrefixCacheHitRate).size(), 300u)
      << "no sample for intervals without a scheduled prompt";
  EXPECT_EQ(Quantile(rec.Gauges(Gauge::kMaxNumSeqs, 0, 0, 100'000), 0), 256);
  EXPECT_EQ(Quantile(rec.Gauges(Gauge::kMaxNumSeqs, 0, 101'000, 200'000), 1), 16);
  EXPECT_EQ(Quantile(rec.Gauges(Gauge::kMaxNumSeqs, 0, 201'000, 1e9), 0), 256);
  EXPECT_EQ(Quantile(rec.Gauges(Gauge::kKvCacheCapacityTokens, 0, 0, 300'000), 0), 400'000);
  EXPECT_EQ(Quantile(rec.Gauges(Gauge::kKvCacheCapacityTokens, 0, 301'000, 400'000), 1), 40'000);
  // Generation tokens per second over the run add up to the tokens generated.
  double generated = 0;
  for (double v : rec.Gauges(Gauge::kGenerationTokensPerS)) generated += v;
  EXPECT_NEAR(generated, static_cast<double>(fleet->instance(0).totals().generated_tokens), 2000)
      << "all but the last second's tokens";
}

TEST(ServingModelTest, OverlongRequestsAreRefused) {
  ServingParams p;
  p.max_model_len = 4096;
  Recorder rec;
  std::vector<TraceRecord> records = {{0, 4000, 200}, {1000, 1000, 10}};
  auto fleet = RunFleet(&rec, One(p), std::make_unique<TraceArrivals>(records), 60);
  ASSERT_NE(fleet, nullptr);
  ASSERT_EQ(rec.requests.size(), 2u);
  EXPECT_EQ(rec.requests[0].error, RequestError::kClientError);
  EXPECT_TRUE(rec.requests[1].ok());
  EXPECT_EQ(rec.requests[1].output_tokens, 10u);
  // A request alone: ttft = one step with its whole (uncached) prefill, tpot = one decode step.
  const RequestOutcome& o = rec.requests[1];
  const double prefill = p.step_base_ms + p.step_per_seq_ms + p.step_per_kv_token_ms * 1000 +
                         p.prefill_per_token_ms * (1000 - o.cached_tokens);
  EXPECT_NEAR(o.ttft_ms, prefill, 0.2);
  EXPECT_NEAR(o.tpot_ms, p.step_base_ms + p.step_per_seq_ms + p.step_per_kv_token_ms * 1005, 0.1);
}

}  // namespace
}  // namespace inferscope::sim
