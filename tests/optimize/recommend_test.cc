// Recommendations validated against the serving model: a sim fleet runs with a fault on one
// instance, the classifier judges the instances' windows, the recommendation is asked for, then
// the recommended change is applied in the simulator (same seed, the fault replaced by the
// recommended parameter) and the measured effect is compared with the predicted one. Results are
// recorded in docs/BOTTLENECKS.md ("Recommendations").

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "bottlenecks/classify.h"
#include "optimize/optimize.h"
#include "sim/faults.h"
#include "sim/fleet.h"

namespace inferscope::optimize {
namespace {

constexpr char kModel[] = "llama-3.1-8b-instruct";
constexpr double kWarmupS = 120;

// What one instance produced over [from, to) of simulated time, with exact quantiles.
struct Recorder final : public sim::OutcomeSink {
  struct Values {
    std::vector<double> ttft, tpot, e2e, prompt, cached, output;
    uint64_t requests = 0, errors = 0;
    std::array<double, static_cast<size_t>(sim::Gauge::kCount)> gauge_sum{};
    std::array<double, static_cast<size_t>(sim::Gauge::kCount)> gauge_last{};
    std::array<uint64_t, static_cast<size_t>(sim::Gauge::kCount)> gauge_n{};
  };
  Recorder(size_t instances, double from_s, double to_s)
      : per(instances), from_ms(from_s * 1000), to_ms(to_s * 1000) {}

  void OnRequest(const sim::RequestOutcome& o) override {
    if (o.time_ms < from_ms || o.time_ms >= to_ms) return;
    Values& v = per[o.instance];
    ++v.requests;
    v.errors += o.ok() ? 0 : 1;
    v.e2e.push_back(o.e2e_ms);
    if (o.ttft_ms >= 0) v.ttft.push_back(o.ttft_ms);
    if (o.tpot_ms >= 0) v.tpot.push_back(o.tpot_ms);
    v.prompt.push_back(o.prompt_tokens);
    v.cached.push_back(o.cached_tokens);
    v.output.push_back(o.output_tokens);
  }
  void OnGauge(const sim::GaugeSample& g) override {
    if (g.time_ms < from_ms || g.time_ms >= to_ms) return;
    Values& v = per[g.instance];
    const auto k = static_cast<size_t>(g.gauge);
    v.gauge_sum[k] += g.value;
    v.gauge_last[k] = g.value;
    ++v.gauge_n[k];
  }

  std::vector<Values> per;
  double from_ms, to_ms;
};

double Q(std::vector<double> v, double q) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

MetricWindow Values(const std::vector<double>& v, uint64_t events, uint64_t errors) {
  MetricWindow m;
  m.count = v.size();
  m.events = events;
  m.errors = errors;
  for (double x : v) m.sum += x;
  m.mean = v.empty() ? 0 : m.sum / static_cast<double>(v.size());
  m.p50 = Q(v, 0.5);
  m.p95 = Q(v, 0.95);
  m.p99 = Q(v, 0.99);
  m.first_mean = m.last_mean = m.mean;
  return m;
}

// The classifier's window of one instance (what window_aggregate's panes merge to).
InstanceWindow WindowOf(const Recorder& r, size_t i) {
  const Recorder::Values& v = r.per[i];
  InstanceWindow w;
  w.start_ms = static_cast<int64_t>(r.from_ms);
  w.end_ms = static_cast<int64_t>(r.to_ms);
  w.Mutable(WindowMetric::kTtft) = Values(v.ttft, v.requests, v.errors);
  w.Mutable(WindowMetric::kTpot) = Values(v.tpot, v.requests, v.errors);
  w.Mutable(WindowMetric::kE2e) = Values(v.e2e, v.requests, v.errors);
  w.Mutable(WindowMetric::kPromptTokens) = Values(v.prompt, v.requests, v.errors);
  w.Mutable(WindowMetric::kCachedTokens) = Values(v.cached, v.requests, v.errors);
  auto gauge = [&](WindowMetric m, sim::Gauge g) {
    const auto k = static_cast<size_t>(g);
    if (v.gauge_n[k] == 0) return;
    MetricWindow& out = w.Mutable(m);
    out.count = v.gauge_n[k];
    out.sum = v.gauge_sum[k];
    out.mean = out.sum / static_cast<double>(out.count);
    out.last = v.gauge_last[k];
    out.first_mean = out.last_mean = out.mean;
  };
  gauge(WindowMetric::kRunning, sim::Gauge::kNumRequestsRunning);
  gauge(WindowMetric::kWaiting, sim::Gauge::kNumRequestsWaiting);
  gauge(WindowMetric::kKvUsage, sim::Gauge::kKvCacheUsage);
  gauge(WindowMetric::kPreemptions, sim::Gauge::kNumPreemptions);
  gauge(WindowMetric::kPrefixHitRate, sim::Gauge::kPrefixCacheHitRate);
  gauge(WindowMetric::kGenTokensPerS, sim::Gauge::kGenerationTokensPerS);
  gauge(WindowMetric::kPromptTokensPerS, sim::Gauge::kPromptTokensPerS);
  gauge(WindowMetric::kMaxNumSeqs, sim::Gauge::kMaxNumSeqs);
  gauge(WindowMetric::kKvCapacity, sim::Gauge::kKvCacheCapacityTokens);
  return w;
}

// Four instances of one model and engine, each a little different (as the scenario tests).
std::vector<sim::InstanceOptions> Fleet(const std::string& engine) {
  std::vector<sim::InstanceOptions> v;
  for (int i = 0; i < 4; ++i) {
    sim::InstanceOptions o;
    o.name = engine + "-" + std::to_string(i);
    o.model = kModel;
    o.engine = engine;
    o.seed = 100 + static_cast<uint64_t>(i);
    o.params = sim::WithEngineDefaults(sim::FindModel(kModel)->params, engine);
    const double spread = 0.95 + 0.1 * i / 3.0;
    o.params.step_base_ms *= spread;
    o.params.prefill_per_token_ms *= spread;
    v.push_back(std::move(o));
  }
  return v;
}

// Runs the fleet (12 requests/s, seed 7) with `faults`, recording [from_s, to_s) after warm-up.
Recorder RunFleet(std::vector<sim::InstanceOptions> instances,
                  const std::vector<std::string>& faults, double from_s, double to_s) {
  std::vector<sim::Fault> parsed;
  for (const std::string& spec : faults) {
    Result<sim::Fault> f = sim::ParseFault(spec);
    EXPECT_TRUE(f.ok()) << spec;
    if (f.ok()) parsed.push_back(*f);
  }
  sim::PoissonOptions arrivals;
  arrivals.rate_per_s = 12;
  arrivals.duration_s = kWarmupS + to_s;
  arrivals.seed = 7;
  sim::FleetOptions options;
  options.duration_ms = (kWarmupS + to_s) * 1000;
  Recorder recorder(instances.size(), kWarmupS + from_s, kWarmupS + to_s);
  auto fleet = sim::Fleet::Create(options, std::move(instances), std::move(parsed),
                                  std::make_unique<sim::PoissonArrivals>(arrivals),
                                  std::make_unique<sim::RoundRobinRouter>(), &recorder);
  EXPECT_TRUE(fleet.ok()) << fleet.status().ToString();
  if (fleet.ok()) (*fleet)->Run();
  return recorder;
}

struct Judged {
  Observation obs;
  RuleVerdicts verdicts;
};

// Instance 1's observation and verdicts, judged against its three peers.
Judged Judge(const Recorder& r, const std::string& engine) {
  std::vector<InstanceWindow> windows;
  std::vector<PeerSample> samples;
  BottleneckOptions options;
  for (size_t i = 0; i < r.per.size(); ++i) {
    windows.push_back(WindowOf(r, i));
    samples.push_back(PeerSampleOf(windows.back(), options));
  }
  std::vector<PeerView> views(samples.size());
  std::vector<std::pair<double, uint32_t>> scratch;
  ComputePeerViews(samples, views, scratch);
  Judged j;
  j.obs.instance = engine + "-1";
  j.obs.model = kModel;
  EXPECT_TRUE(ParseEngine(engine, &j.obs.engine));
  j.obs.window = windows[1];
  j.obs.output_tokens = Values(r.per[1].output, r.per[1].requests, r.per[1].errors);
  j.obs.peer_hit_rate = views[1].hit_rate.median;
  ClassifyInstance(windows[1], views[1], options, &j.verdicts);
  return j;
}

// Applies a recommended configuration to an instance's serving parameters.
void Apply(const EngineConfig& c, sim::ServingParams* p) {
  p->max_num_seqs = c.max_num_seqs;
  p->max_num_batched_tokens = c.max_num_batched_tokens;
  p->kv_capacity_tokens = c.kv_capacity_tokens;
  p->prefix_caching = c.prefix_caching;
  ASSERT_FALSE(c.kv_fp8 || c.weights_fp8 || c.replicas != 1) << "not applicable in the simulator";
}

double Measured(const Recorder& r, std::string_view metric) {
  const Recorder::Values& v = r.per[1];
  if (metric == "ttft_p50_ms") return Q(v.ttft, 0.5);
  if (metric == "ttft_p95_ms") return Q(v.ttft, 0.95);
  if (metric == "tpot_p50_ms") return Q(v.tpot, 0.5);
  if (metric == "tpot_p95_ms") return Q(v.tpot, 0.95);
  return Q(v.e2e, 0.95);
}

struct Case {
  std::string engine;
  std::string fault;  // on <engine>-1 from the start
  RecommendationType type;
  std::string option;
};

// The validation: fault -> windows -> recommendation (type, option) -> apply -> measured effect
// within kTolerance of the predicted value (relative), and a real improvement.
constexpr double kTolerance = 0.30;

void Validate(const Case& c) {
  SCOPED_TRACE(c.engine + " " + c.fault);
  const std::string fault =
      c.fault + ":" + c.engine + "-1:0s-2h" + (c.fault == "prefix_cache_off" ? "" : ":0.03");
  // The windows the recommendation reads: 60 s, 3 to 4 minutes into the fault.
  const Recorder faulty = RunFleet(Fleet(c.engine), {fault}, 180, 240);
  Judged j = Judge(faulty, c.engine);
  OptimizeOptions options;
  const auto t0 = std::chrono::steady_clock::now();
  Result<RecommendResult> r = Recommend(j.obs, j.verdicts, options);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_FALSE(r->recommendations.empty());
  const Recommendation& first = r->recommendations.front();
  EXPECT_EQ(RecommendationTypeName(first.type), RecommendationTypeName(c.type));
  ASSERT_FALSE(first.options.empty());
  EXPECT_EQ(first.options.front().first, c.option);
  EXPECT_GE(first.improvement, 0.05);

  // Apply it: the same fleet and seed, instance 1 configured as recommended instead of faulty.
  std::vector<sim::InstanceOptions> fixed = Fleet(c.engine);
  Apply(first.config, &fixed[1].params);
  if (c.fault == "prefix_cache_off") fixed[1].params.prefix_hit_mean = r->workload.hit_fraction;
  const Recorder after = RunFleet(std::move(fixed), {}, 0, 900);
  const double measured = Measured(after, first.metric);
  const double before = Measured(faulty, first.metric);
  std::printf(
      "[recommend] %s %s: %s %s=%s; %s observed %.1f, predicted now %.1f, predicted %.1f, "
      "measured after %.1f (error %+.0f%%), factor %.3f, %d runs, %.0f ms\n",
      c.engine.c_str(), c.fault.c_str(), std::string(RecommendationTypeName(first.type)).c_str(),
      first.options.front().first.c_str(), first.options.front().second.c_str(),
      first.metric.c_str(), before, first.current, first.predicted, measured,
      100 * (first.predicted / measured - 1), r->calibration.speed_factor, r->model_runs, ms);
  EXPECT_LT(measured, before) << "the change must help";
  EXPECT_NEAR(first.predicted / measured, 1.0, kTolerance);
}

TEST(RecommendTest, KvCacheSmallGetsMoreKvMemory) {
  Validate({"vllm", "kv_cache_small", RecommendationType::kKvCache, "--gpu-memory-utilization"});
}

TEST(RecommendTest, SlotLimitLowGetsMoreSlots) {
  Validate({"vllm", "slot_limit_low", RecommendationType::kBatching, "--max-num-seqs"});
}

TEST(RecommendTest, PrefixCacheOffGetsPrefixCaching) {
  Validate(
      {"vllm", "prefix_cache_off", RecommendationType::kPrefixCaching, "--enable-prefix-caching"});
}

TEST(RecommendTest, SglangNamesItsOptions) {
  Validate({"sglang", "kv_cache_small", RecommendationType::kKvCache, "--mem-fraction-static"});
  Validate({"sglang", "slot_limit_low", RecommendationType::kBatching, "--max-running-requests"});
}

TEST(RecommendTest, TgiNamesItsOptions) {
  Validate({"tgi", "kv_cache_small", RecommendationType::kKvCache, "--max-batch-total-tokens"});
  Validate({"tgi", "slot_limit_low", RecommendationType::kBatching, "--max-concurrent-requests"});
}

TEST(RecommendTest, HealthyInstanceGetsNoHighPriorityRecommendation) {
  for (const std::string engine : {"vllm", "sglang", "tgi"}) {
    const Recorder healthy = RunFleet(Fleet(engine), {}, 180, 240);
    Judged j = Judge(healthy, engine);
    Result<RecommendResult> r = Recommend(j.obs, j.verdicts, OptimizeOptions{});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    for (const Recommendation& rec : r->recommendations) {
      EXPECT_NE(rec.priority, Priority::kHigh) << engine << ": " << rec.description;
    }
  }
}

// Every option name per engine, for a configuration that changes everything.
TEST(RecommendTest, OptionNamesPerEngine) {
  EngineConfig cur;
  cur.prefix_caching = false;
  EngineConfig all = cur;
  all.max_num_seqs = 512;
  all.max_num_batched_tokens = 4096;
  all.memory_fraction = 0.95;
  all.kv_capacity_tokens = 450'000;
  all.prefix_caching = true;
  all.kv_fp8 = true;
  all.weights_fp8 = true;
  all.replicas = 2;
  auto names = [&](Engine e) {
    std::vector<std::string> out;
    for (const auto& [name, value] : OptionChanges(e, cur, all, sim::ServingParams{})) {
      out.push_back(name);
    }
    return out;
  };
  EXPECT_EQ(names(Engine::kVllm),
            (std::vector<std::string>{"--max-num-seqs", "--max-num-batched-tokens",
                                      "--gpu-memory-utilization", "--enable-prefix-caching",
                                      "--kv-cache-dtype", "--quantization", "replicas"}));
  EXPECT_EQ(names(Engine::kSglang),
            (std::vector<std::string>{"--max-running-requests", "--chunked-prefill-size",
                                      "--mem-fraction-static", "--disable-radix-cache",
                                      "--kv-cache-dtype", "--quantization", "replicas"}));
  EXPECT_EQ(names(Engine::kTgi),
            (std::vector<std::string>{"--max-concurrent-requests", "--max-batch-prefill-tokens",
                                      "--max-batch-total-tokens", "PREFIX_CACHING",
                                      "--kv-cache-dtype", "--quantize", "replicas"}));
}

TEST(OptimizeTest, FindsAConfigurationMeetingTheConstraintOrSaysNone) {
  const Recorder faulty = RunFleet(Fleet("vllm"), {"slot_limit_low:vllm-1:0s-2h:0.03"}, 180, 240);
  Judged j = Judge(faulty, "vllm");
  Constraints c;
  c.p95_ttft_ms = 2000;
  Result<OptimizeResult> r = Optimize(j.obs, Goal::kMinimizeP95Ttft, c, OptimizeOptions{});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->current_meets);
  ASSERT_GE(r->best, 0);
  const Candidate& best = r->candidates[static_cast<size_t>(r->best)];
  EXPECT_LE(best.prediction.ttft_p95, 2000);
  EXPECT_LT(best.prediction.ttft_p95, r->current.prediction.ttft_p95);
  EXPECT_LE(r->candidates.size(), OptimizeOptions{}.max_candidates);
  // An impossible constraint: no candidate meets it, and the answer says so.
  c.p95_ttft_ms = 1;
  r = Optimize(j.obs, Goal::kMinimizeP95Ttft, c, OptimizeOptions{});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->best, -1);
  EXPECT_FALSE(r->keep_current);
}

TEST(OptimizeTest, RefusesAWindowWithoutRequestsAndBadOptions) {
  Observation obs;
  obs.window.end_ms = 30'000;
  EXPECT_FALSE(Optimize(obs, Goal::kMinimizeP95Ttft, {}, OptimizeOptions{}).ok());
  OptimizeOptions bad;
  bad.max_requests = 5;
  EXPECT_FALSE(bad.Validate().ok());
}

}  // namespace
}  // namespace inferscope::optimize
