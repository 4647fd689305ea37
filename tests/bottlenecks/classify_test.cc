#include "bottlenecks/classify.h"

#include <gtest/gtest.h>

#include "bottlenecks/bottleneck_json.h"

namespace inferscope {
namespace {

// An evidence window of 30 s where every metric is a constant per sample, as the operator
// merges it from panes.
InstanceWindow Window() {
  InstanceWindow w;
  w.start_ms = 0;
  w.end_ms = 30'000;
  auto set = [&](WindowMetric m, double value, uint64_t count, uint64_t events = 0,
                 uint64_t errors = 0) {
    MetricWindow& mw = w.Mutable(m);
    mw.count = count;
    mw.events = events;
    mw.errors = errors;
    mw.sum = value * static_cast<double>(count);
    mw.mean = mw.max = mw.last = mw.first_mean = mw.last_mean = value;
    mw.p50 = mw.p95 = mw.p99 = value;
  };
  set(WindowMetric::kTtft, 200, 300, 300);
  set(WindowMetric::kTpot, 20, 300, 300);
  set(WindowMetric::kE2e, 2000, 300, 300);
  set(WindowMetric::kPromptTokens, 1000, 300, 300);
  set(WindowMetric::kCachedTokens, 500, 300, 300);
  set(WindowMetric::kRunning, 16, 30);
  set(WindowMetric::kWaiting, 0, 30);
  set(WindowMetric::kKvUsage, 0.5, 30);
  set(WindowMetric::kPreemptions, 0, 30);
  set(WindowMetric::kPrefixHitRate, 0.5, 30);
  set(WindowMetric::kGenTokensPerS, 640, 30);
  set(WindowMetric::kMaxNumSeqs, 64, 30);
  return w;
}

RuleVerdicts Classify(const InstanceWindow& w, const PeerView& peers = {},
                      const BottleneckOptions& o = {}) {
  RuleVerdicts v;
  ClassifyInstance(w, peers, o, &v);
  return v;
}

const RuleVerdict& Of(const RuleVerdicts& v, BottleneckType t) { return v[static_cast<size_t>(t)]; }

TEST(ClassifyTest, HealthyWindowHasNoActiveVerdict) {
  const RuleVerdicts v = Classify(Window());
  for (size_t i = 0; i < kNumBottleneckTypes; ++i) {
    EXPECT_NE(v[i].judgement, Judgement::kActive)
        << BottleneckTypeName(static_cast<BottleneckType>(i));
  }
  EXPECT_EQ(Of(v, BottleneckType::kMemoryPressure).judgement, Judgement::kClear);
  EXPECT_EQ(Of(v, BottleneckType::kQueueBuildup).judgement, Judgement::kClear);
  // Not configured and not reported: not judged.
  EXPECT_EQ(Of(v, BottleneckType::kResourceSaturation).judgement, Judgement::kNotJudged);
  // No peers and no configured expectation: prompts are not known to repeat.
  EXPECT_EQ(Of(v, BottleneckType::kCacheInefficiency).judgement, Judgement::kClear);
}

TEST(ClassifyTest, SeverityLevelsAndHysteresis) {
  InstanceWindow w = Window();
  MetricWindow& waiting = w.Mutable(WindowMetric::kWaiting);
  auto judge = [&](double per_running) {
    waiting.mean = 16 * per_running;
    waiting.first_mean = waiting.last_mean = waiting.mean;
    return Of(Classify(w), BottleneckType::kQueueBuildup);
  };
  EXPECT_EQ(judge(0.3).severity, BottleneckSeverity::kLow);
  EXPECT_EQ(judge(0.6).severity, BottleneckSeverity::kMedium);
  EXPECT_EQ(judge(1.2).severity, BottleneckSeverity::kHigh);
  EXPECT_EQ(judge(2.5).severity, BottleneckSeverity::kCritical);
  EXPECT_EQ(judge(0.2).judgement, Judgement::kHold);    // between exit 0.1 and enter 0.25
  EXPECT_EQ(judge(0.05).judgement, Judgement::kClear);  // below min_waiting / 2 as well
}

TEST(ClassifyTest, MemoryPressureNeedsPreemptions) {
  InstanceWindow w = Window();
  w.Mutable(WindowMetric::kKvUsage).mean = 0.97;
  EXPECT_NE(Of(Classify(w), BottleneckType::kMemoryPressure).judgement, Judgement::kActive)
      << "a full cache that does not preempt is well used, not a bottleneck";
  MetricWindow& pre = w.Mutable(WindowMetric::kPreemptions);
  pre.sum = 30 * 6;  // 6/s
  const RuleVerdict v = Of(Classify(w), BottleneckType::kMemoryPressure);
  EXPECT_EQ(v.judgement, Judgement::kActive);
  EXPECT_EQ(v.severity, BottleneckSeverity::kCritical);
  EXPECT_DOUBLE_EQ(v.aux, 6);
}

TEST(ClassifyTest, TooFewRequestsAreNotJudged) {
  InstanceWindow w = Window();
  for (WindowMetric m : {WindowMetric::kTtft, WindowMetric::kTpot, WindowMetric::kE2e,
                         WindowMetric::kPromptTokens, WindowMetric::kCachedTokens}) {
    MetricWindow& mw = w.Mutable(m);
    mw.count = mw.events = 2;
    mw.errors = 2;
    mw.p95 = 1e6;
  }
  const RuleVerdicts v = Classify(w);
  EXPECT_EQ(Of(v, BottleneckType::kHighLatency).judgement, Judgement::kNotJudged);
  EXPECT_EQ(Of(v, BottleneckType::kErrorSpike).judgement, Judgement::kNotJudged);
  EXPECT_EQ(Of(v, BottleneckType::kCacheInefficiency).judgement, Judgement::kNotJudged);
}

// The false flag DemoTest once saw: a TGI instance whose true hit rate (0.25) sits just above
// LOW's level (0.5 x the peers' 0.35) dipped below it over a window of ~75 requests. A hit rate
// below the level is a flag only when it is below it beyond its noise.
TEST(ClassifyTest, CacheInefficiencyNeedsEvidenceBeyondTheHitRatesNoise) {
  BottleneckOptions o;
  o.expected_hit_rate = 0.35;
  auto judge = [&](double hit, uint64_t requests) {
    InstanceWindow w = Window();
    for (WindowMetric m : {WindowMetric::kTtft, WindowMetric::kTpot, WindowMetric::kE2e}) {
      w.Mutable(m).count = w.Mutable(m).events = requests;
    }
    w.Mutable(WindowMetric::kPrefixHitRate).mean = hit;
    return Of(Classify(w, {}, o), BottleneckType::kCacheInefficiency);
  };
  // 0.16 / 0.35 = 0.46 <= LOW's 0.5, but hit + 2 se = 0.16 + 2 x 0.042 = 0.24 is not.
  EXPECT_EQ(judge(0.16, 75).judgement, Judgement::kHold);
  // The same rate over 3,000 requests is evidence (se 0.007).
  const RuleVerdict many = judge(0.16, 3000);
  EXPECT_EQ(many.judgement, Judgement::kActive);
  EXPECT_EQ(many.severity, BottleneckSeverity::kLow);
  // A cache that hits nothing is flagged at min_requests already, at the severity of the rate
  // itself (0 / 0.35: CRITICAL), not of its bound.
  const RuleVerdict off = judge(0, 20);
  EXPECT_EQ(off.judgement, Judgement::kActive);
  EXPECT_EQ(off.severity, BottleneckSeverity::kCritical);
  // confidence_z 0: the rate alone, as before.
  o.confidence_z = 0;
  EXPECT_EQ(judge(0.16, 75).judgement, Judgement::kActive);
}

TEST(ClassifyTest, PeerViewsAreMediansOfTheOthers) {
  std::vector<PeerSample> samples(4);
  samples[0].ttft_p50 = 100;
  samples[1].ttft_p50 = 200;
  samples[2].ttft_p50 = 110;
  samples[3].ttft_p50 = NAN;  // not judged itself, still gets its peers' median
  std::vector<PeerView> views(4);
  std::vector<std::pair<double, uint32_t>> scratch;
  ComputePeerViews(samples, views, scratch);
  EXPECT_DOUBLE_EQ(views[0].ttft_p50.median, 155);  // {110, 200}
  EXPECT_EQ(views[0].ttft_p50.peers, 2);
  EXPECT_DOUBLE_EQ(views[1].ttft_p50.median, 105);  // {100, 110}
  EXPECT_DOUBLE_EQ(views[2].ttft_p50.median, 150);  // {100, 200}
  EXPECT_DOUBLE_EQ(views[3].ttft_p50.median, 110);  // {100, 110, 200}
  EXPECT_EQ(views[3].ttft_p50.peers, 3);
  EXPECT_EQ(views[0].hit_rate.peers, 0);
}

TEST(ClassifyTest, PeerRelativeLatencyWithinTheSlo) {
  InstanceWindow w = Window();
  w.Mutable(WindowMetric::kTtft).p50 = 400;  // peers compare medians (p95 is too noisy)
  PeerView peers;
  peers.ttft_p50 = {200, 3};
  RuleVerdict v = Of(Classify(w, peers), BottleneckType::kHighLatency);
  EXPECT_EQ(v.judgement, Judgement::kActive);
  EXPECT_EQ(v.basis, BottleneckBasis::kPeer);
  EXPECT_EQ(v.severity, BottleneckSeverity::kMedium);  // 2x: the medium level
  peers.ttft_p50 = {200, 1};                           // one peer is not enough
  EXPECT_NE(Of(Classify(w, peers), BottleneckType::kHighLatency).judgement, Judgement::kActive);
  peers.ttft_p50 = {2, 3};  // 4 ms vs 2 ms: below the minimum difference
  w.Mutable(WindowMetric::kTtft).p50 = 4;
  EXPECT_NE(Of(Classify(w, peers), BottleneckType::kHighLatency).judgement, Judgement::kActive);
}

TEST(ClassifyTest, CausalOrderNamesTheRoot) {
  using T = BottleneckType;
  auto bit = [](T t) { return uint32_t{1} << static_cast<int>(t); };
  std::array<BottleneckSeverity, kNumBottleneckTypes> sev{};
  sev.fill(BottleneckSeverity::kLow);
  std::array<CausalPath, kNumBottleneckTypes> paths;
  uint32_t mask = bit(T::kMemoryPressure) | bit(T::kQueueBuildup) | bit(T::kHighLatency);
  EXPECT_EQ(CausalOrder(mask, sev, &paths), T::kMemoryPressure);
  const CausalPath& hl = paths[static_cast<size_t>(T::kHighLatency)];
  EXPECT_EQ(hl.root, T::kMemoryPressure);
  ASSERT_EQ(hl.length, 3);
  EXPECT_EQ(hl.chain[1], T::kQueueBuildup);
  // Saturation → low throughput → queueing → latency.
  mask = bit(T::kResourceSaturation) | bit(T::kLowThroughput) | bit(T::kQueueBuildup) |
         bit(T::kHighLatency);
  EXPECT_EQ(CausalOrder(mask, sev, &paths), T::kResourceSaturation);
  EXPECT_EQ(paths[static_cast<size_t>(T::kHighLatency)].length, 4);
  // Cache inefficiency → ttft.
  mask = bit(T::kCacheInefficiency) | bit(T::kHighLatency);
  EXPECT_EQ(CausalOrder(mask, sev, &paths), T::kCacheInefficiency);
  // Errors cause nothing: with latency two roots, the more severe is primary.
  mask = bit(T::kErrorSpike) | bit(T::kHighLatency);
  sev[static_cast<size_t>(T::kErrorSpike)] = BottleneckSeverity::kCritical;
  EXPECT_EQ(CausalOrder(mask, sev, &paths), T::kErrorSpike);
  EXPECT_EQ(paths[static_cast<size_t>(T::kHighLatency)].root, T::kHighLatency);
  EXPECT_EQ(paths[static_cast<size_t>(T::kErrorSpike)].length, 1);
  // A queue that holds requests past their deadline causes timeouts: errors with a queue are
  // its symptom, even when more severe.
  mask = bit(T::kErrorSpike) | bit(T::kQueueBuildup) | bit(T::kHighLatency);
  EXPECT_EQ(CausalOrder(mask, sev, &paths), T::kQueueBuildup);
  EXPECT_EQ(paths[static_cast<size_t>(T::kErrorSpike)].root, T::kQueueBuildup);
  EXPECT_EQ(paths[static_cast<size_t>(T::kHighLatency)].root, T::kQueueBuildup);
  EXPECT_TRUE(Causes(T::kQueueBuildup, T::kErrorSpike));
  EXPECT_FALSE(Causes(T::kErrorSpike, T::kHighLatency));
  EXPECT_FALSE(Causes(T::kHighLatency, T::kQueueBuildup));
}

TEST(ClassifyTest, OptionsValidate) {
  BottleneckOptions o;
  EXPECT_TRUE(o.Validate().ok());
  o.queue.exit = 0.5;  // above the enter level
  EXPECT_NE(o.Validate().message().find("queue_buildup.levels: exit must be below low"),
            std::string::npos);
  o = {};
  o.cache.medium = 0.9;  // lower is worse: must not increase
  EXPECT_FALSE(o.Validate().ok());
  o = {};
  o.saturation.resize(9, o.saturation[0]);
  EXPECT_FALSE(o.Validate().ok());
}

TEST(BottleneckJsonTest, RoundTrips) {
  Bottleneck b;
  b.instance = "vllm-1";
  b.model = "llama-3.1-8b";
  b.engine = "vllm";
  b.type = BottleneckType::kHighLatency;
  b.severity = BottleneckSeverity::kHigh;
  b.change = BottleneckChange::kPrimaryChanged;
  b.root = BottleneckType::kMemoryPressure;
  b.chain = {BottleneckType::kMemoryPressure, BottleneckType::kHighLatency};
  b.metric = "ttft_ms";
  b.stat = "p95";
  b.value = 3100.5;
  b.threshold = 3000;
  b.peer_median = NAN;
  b.window_start_ms = 10;
  b.window_end_ms = 30'010;
  b.active_since_ms = 5;
  b.detected_at_ms = 7;
  b.description = "x";
  const nlohmann::json j = BottleneckToJson(b);
  EXPECT_TRUE(j["peer_median"].is_null());
  EXPECT_EQ(j["type"], "HIGH_LATENCY");
  EXPECT_EQ(j["chain"][0], "MEMORY_PRESSURE");
  Result<Bottleneck> back = BottleneckFromJson(j);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->chain, b.chain);
  EXPECT_EQ(back->change, b.change);
  EXPECT_EQ(back->window_end_ms, 30'010);
  EXPECT_TRUE(std::isnan(back->peer_median));
  nlohmann::json broken = j;
  broken.erase("severity");
  EXPECT_FALSE(BottleneckFromJson(broken).ok());
  EXPECT_EQ(BottleneckId("a", "b", BottleneckType::kErrorSpike),
            BottleneckId("a", "b", BottleneckType::kErrorSpike));
  EXPECT_NE(BottleneckId("a", "b", BottleneckType::kErrorSpike),
            BottleneckId("ab", "", BottleneckType::kErrorSpike));
}

}  // namespace
}  // namespace inferscope
