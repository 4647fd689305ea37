#include "operators/bottleneck_classify.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "state/checkpoint_store.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

ConfigNode Parse(const std::string& yaml, const std::string& file = "topology.yaml") {
  return ConfigNode(file, YAML::Load(yaml), "options");
}

constexpr int64_t kPaneMs = 10'000;
constexpr char kModel[] = "llama";

// What one instance reports during one 10 s pane: request outcomes and one gauge sample per
// second (the metric contract of docs/BOTTLENECKS.md). Defaults are a healthy instance.
struct PaneSpec {
  int requests = 100;
  int errors = 0;
  double ttft_ms = 200;
  double tpot_ms = 20;
  double e2e_ms = 2000;
  double prompt_tokens = 1000;
  double cached_tokens = 500;
  double running = 16;
  double waiting = 0;
  double kv = 0.5;
  double preemptions = 0;  // per gauge sample (per second)
  double hit_rate = 0.5;
  double gen_tps = 16 * 40;  // 40 tokens/s per running request
  double max_num_seqs = 64;
  std::map<std::string, double> extra;  // further gauges (gpu_utilization, ...)
};

class BottleneckClassifyTest : public ::testing::Test {
 protected:
  void SetUp() override { Make(""); }

  void Make(const std::string& yaml) {
    Result<std::unique_ptr<BottleneckClassifyOperator>> op =
        BottleneckClassifyOperator::Create(Parse(yaml.empty() ? "{}" : yaml));
    ASSERT_TRUE(op.ok()) << op.status().ToString();
    op_ = std::move(op).value();
    ASSERT_TRUE(op_->Open(Context()).ok());
  }

  StageContext Context() {
    StageContext ctx;
    ctx.name = "bottlenecks";
    ctx.interner = &interner_;
    ctx.metrics = &metrics_;
    ctx.clock = &clock_;
    return ctx;
  }

  WindowSummary Summary(const std::string& instance, const std::string& metric, int64_t start,
                        const std::string& model = kModel) {
    WindowSummary s;
    s.series = {interner_.Intern(instance), interner_.Intern(model), interner_.Intern(metric)};
    s.start_ms = start;
    s.end_ms = start + kPaneMs;
    s.max_event_time_ms = start + kPaneMs - 1;
    return s;
  }

  // The pane summaries of one instance for the pane starting at `start`.
  void AddPane(OutputBatch& in, const std::string& instance, const PaneSpec& p, int64_t start,
               const std::string& model = kModel) {
    auto request = [&](const char* metric, double value) {
      WindowSummary s = Summary(instance, metric, start, model);
      for (int i = 0; i < p.requests; ++i) {
        // Values spread over ±10 % so that quantiles differ from the mean.
        const double v = value * (0.9 + 0.2 * i / std::max(1, p.requests - 1));
        s.agg.Add(v, start + i);
        s.agg.AddEvent(i < p.errors);
      }
      in.Add<kind::PaneSummary>(std::move(s));
    };
    request("ttft_ms", p.ttft_ms);
    request("tpot_ms", p.tpot_ms);
    request("e2e_ms", p.e2e_ms);
    request("prompt_tokens", p.prompt_tokens);
    request("cached_tokens", p.cached_tokens);
    auto gauge = [&](const std::string& metric, double value) {
      WindowSummary s = Summary(instance, metric, start, model);
      for (int i = 0; i < 10; ++i) s.agg.Add(value, start + i * 1000);
      in.Add<kind::PaneSummary>(std::move(s));
    };
    gauge("num_requests_running", p.running);
    gauge("num_requests_waiting", p.waiting);
    gauge("kv_cache_usage", p.kv);
    gauge("num_preemptions", p.preemptions);
    gauge("prefix_cache_hit_rate", p.hit_rate);
    gauge("generation_tokens_per_s", p.gen_tps);
    gauge("prompt_tokens_per_s", 1000);
    gauge("max_num_seqs", p.max_num_seqs);
    gauge("kv_cache_capacity_tokens", 100'000);
    for (const auto& [name, value] : p.extra) gauge(name, value);
  }

  // One pane of every instance; returns what the operator emitted.
  std::vector<Bottleneck> Step(const std::map<std::string, PaneSpec>& fleet) {
    OutputBatch in;
    for (const auto& [instance, spec] : fleet) AddPane(in, instance, spec, next_start_);
    next_start_ += kPaneMs;
    in.watermark_ms = next_start_;
    OutputBatch out;
    EXPECT_TRUE(op_->ProcessResults(in, out).ok());
    const auto changes = out.Get<kind::Bottleneck>();
    std::vector<Bottleneck> result(changes.begin(), changes.end());
    all_.insert(all_.end(), result.begin(), result.end());
    return result;
  }

  // Four instances of one model; `faulty` (vllm-1) reports `fault`, the others are healthy.
  std::map<std::string, PaneSpec> Fleet(const PaneSpec& fault) {
    return {
        {"vllm-0", PaneSpec{}}, {"vllm-1", fault}, {"sglang-2", PaneSpec{}}, {"tgi-3", PaneSpec{}}};
  }

  std::vector<Bottleneck> Run(const std::map<std::string, PaneSpec>& fleet, int panes) {
    std::vector<Bottleneck> changes;
    for (int i = 0; i < panes; ++i) {
      std::vector<Bottleneck> step = Step(fleet);
      changes.insert(changes.end(), step.begin(), step.end());
    }
    return changes;
  }

  static std::vector<Bottleneck> Of(const std::vector<Bottleneck>& changes, BottleneckChange c) {
    std::vector<Bottleneck> out;
    for (const Bottleneck& b : changes) {
      if (b.change == c) out.push_back(b);
    }
    return out;
  }

  // Runs `fault` on vllm-1 until it is raised, then healthy until it resolves; checks that only
  // vllm-1 gets exactly `type` (at `severity`) raised once and resolved once.
  void ExpectRaisedAndCleared(const PaneSpec& fault, BottleneckType type,
                              BottleneckSeverity severity) {
    SCOPED_TRACE(std::string(BottleneckTypeName(type)));
    Run(Fleet(PaneSpec{}), 4);  // healthy history
    EXPECT_TRUE(all_.empty());
    const std::vector<Bottleneck> during = Run(Fleet(fault), 8);
    const std::vector<Bottleneck> raised = Of(during, BottleneckChange::kRaised);
    ASSERT_EQ(raised.size(), 1u) << Dump(during);
    EXPECT_EQ(raised[0].instance, "vllm-1");
    EXPECT_EQ(raised[0].model, kModel);
    EXPECT_EQ(raised[0].engine, "vllm");
    EXPECT_EQ(raised[0].type, type);
    EXPECT_EQ(raised[0].severity, severity) << raised[0].description;
    EXPECT_EQ(raised[0].state, BottleneckState::kActive);
    EXPECT_TRUE(raised[0].primary);
    EXPECT_EQ(raised[0].root, type);
    EXPECT_EQ(raised[0].window_end_ms - raised[0].window_start_ms, 30'000);
    EXPECT_EQ(raised[0].detected_at_ms, 42);
    EXPECT_FALSE(raised[0].description.empty());
    // Detection delay: the evidence window must carry the fault, then `for` (20 s).
    EXPECT_LE(raised[0].window_end_ms - fault_start(), 60'000);
    EXPECT_EQ(Of(during, BottleneckChange::kResolved).size(), 0u) << Dump(during);
    const std::vector<Bottleneck> after = Run(Fleet(PaneSpec{}), 10);
    const std::vector<Bottleneck> resolved = Of(after, BottleneckChange::kResolved);
    ASSERT_EQ(resolved.size(), 1u) << Dump(after);
    EXPECT_EQ(resolved[0].type, type);
    EXPECT_EQ(resolved[0].instance, "vllm-1");
    EXPECT_EQ(resolved[0].state, BottleneckState::kResolved);
    EXPECT_TRUE(op_->Active("vllm-1", kModel).empty());
    for (const Bottleneck& b : all_) EXPECT_EQ(b.instance, "vllm-1") << b.description;
  }

  int64_t fault_start() const { return 4 * kPaneMs; }

  static std::string Dump(const std::vector<Bottleneck>& changes) {
    std::string out;
    for (const Bottleneck& b : changes) {
      out += b.instance + " " + std::string(BottleneckTypeName(b.type)) + " " +
             std::string(BottleneckSeverityName(b.severity)) + " " +
             std::string(BottleneckChangeName(b.change)) + " @" + std::to_string(b.window_end_ms) +
             ": " + b.description + "\n";
    }
    return out;
  }

  Interner interner_;
  MetricsRegistry metrics_;
  ManualClock clock_{42};
  std::unique_ptr<BottleneckClassifyOperator> op_;
  int64_t next_start_ = 0;
  std::vector<Bottleneck> all_;
};

TEST_F(BottleneckClassifyTest, HealthyFleetGetsNothing) {
  EXPECT_TRUE(Run(Fleet(PaneSpec{}), 20).empty());
  EXPECT_EQ(op_->tracked(), 4u);
}

TEST_F(BottleneckClassifyTest, MemoryPressure) {
  PaneSpec p;
  p.kv = 0.97;
  p.preemptions = 2;  // 2/s: HIGH (>= 1/s, < 5/s)
  ExpectRaisedAndCleared(p, BottleneckType::kMemoryPressure, BottleneckSeverity::kHigh);
}

TEST_F(BottleneckClassifyTest, HighLatencyAbsolute) {
  PaneSpec p;
  p.ttft_ms = 3500;  // p95 ~3800 ms: 1.9x the 2 s SLO → MEDIUM
  ExpectRaisedAndCleared(p, BottleneckType::kHighLatency, BottleneckSeverity::kMedium);
  const Bottleneck raised = Of(all_, BottleneckChange::kRaised).at(0);
  EXPECT_EQ(raised.metric, "ttft_ms");
  EXPECT_EQ(raised.stat, "p95");
  EXPECT_EQ(raised.basis, BottleneckBasis::kAbsolute);
  EXPECT_NEAR(raised.value, 3850, 3850 * 0.03);
  EXPECT_EQ(raised.threshold, 3000);  // the MEDIUM level: 1.5 x the SLO
}

TEST_F(BottleneckClassifyTest, LowThroughput) {
  PaneSpec p;
  p.gen_tps = 16 * 1.5;  // 1.5 tokens/s per running request: MEDIUM (<= 2, > 1)
  ExpectRaisedAndCleared(p, BottleneckType::kLowThroughput, BottleneckSeverity::kMedium);
}

TEST_F(BottleneckClassifyTest, QueueBuildup) {
  PaneSpec p;
  p.waiting = 20;  // 1.25 per running request: HIGH (>= 1, < 2)
  ExpectRaisedAndCleared(p, BottleneckType::kQueueBuildup, BottleneckSeverity::kHigh);
}

TEST_F(BottleneckClassifyTest, CacheInefficiencyAgainstPeers) {
  PaneSpec p;
  p.hit_rate = 0.05;  // peers reach 0.5: 0.1 of it → HIGH (<= 0.2, > 0.05)
  ExpectRaisedAndCleared(p, BottleneckType::kCacheInefficiency, BottleneckSeverity::kHigh);
  const Bottleneck raised = Of(all_, BottleneckChange::kRaised).at(0);
  EXPECT_EQ(raised.basis, BottleneckBasis::kPeer);
  EXPECT_DOUBLE_EQ(raised.peer_median, 0.5);
}

TEST_F(BottleneckClassifyTest, ErrorSpike) {
  PaneSpec p;
  p.errors = 12;  // 12 % of 100 requests: MEDIUM (>= 10 %, < 20 %)
  ExpectRaisedAndCleared(p, BottleneckType::kErrorSpike, BottleneckSeverity::kMedium);
}

TEST_F(BottleneckClassifyTest, ResourceSaturation) {
  PaneSpec p;
  p.extra["gpu_utilization"] = 0.995;  // HIGH (>= 0.99, < 1.0)
  ExpectRaisedAndCleared(p, BottleneckType::kResourceSaturation, BottleneckSeverity::kHigh);
}

// The host source's gauges carry model "_": they count for every model served on that instance
// (and for no other instance), so each of them gets RESOURCE_SATURATION when the host saturates.
TEST_F(BottleneckClassifyTest, HostGaugesWithoutModelSaturateEveryModelOfTheirInstance) {
  Make(
      "resource_saturation:\n"
      "  - {metric: cpu_utilization, levels: {low: 0.9, medium: 0.95, high: 0.98, critical: 1.0, "
      "exit: 0.8}}\n");
  auto step = [&](double cpu) {
    OutputBatch in;
    AddPane(in, "node-1", PaneSpec{}, next_start_, "llama");
    AddPane(in, "node-1", PaneSpec{}, next_start_, "qwen");
    AddPane(in, "node-2", PaneSpec{}, next_start_, "llama");
    for (const char* node : {"node-1", "node-2"}) {
      WindowSummary h = Summary(node, "cpu_utilization", next_start_, "_");
      const double v = std::string(node) == "node-1" ? cpu : 0.5;
      for (int i = 0; i < 10; ++i) h.agg.Add(v, next_start_ + i * 1000);
      in.Add<kind::PaneSummary>(std::move(h));
    }
    next_start_ += kPaneMs;
    in.watermark_ms = next_start_;
    OutputBatch out;
    EXPECT_TRUE(op_->ProcessResults(in, out).ok());
    const auto changes = out.Get<kind::Bottleneck>();
    all_.insert(all_.end(), changes.begin(), changes.end());
  };
  for (int i = 0; i < 4; ++i) step(0.5);
  EXPECT_TRUE(all_.empty()) << Dump(all_);
  for (int i = 0; i < 8; ++i) step(0.96);  // MEDIUM (>= 0.95, < 0.98)
  std::set<std::pair<std::string, std::string>> raised;
  for (const Bottleneck& b : Of(all_, BottleneckChange::kRaised)) {
    EXPECT_EQ(b.type, BottleneckType::kResourceSaturation) << b.description;
    EXPECT_EQ(b.severity, BottleneckSeverity::kMedium) << b.description;
    EXPECT_EQ(b.instance, "node-1") << b.description;
    raised.emplace(b.instance, b.model);
  }
  EXPECT_TRUE(raised.count({"node-1", "llama"})) << Dump(all_);
  EXPECT_TRUE(raised.count({"node-1", "qwen"})) << Dump(all_);
  EXPECT_TRUE(op_->Active("node-2", "llama").empty());
  // A model's own value for the gauge wins over the host's.
  for (int i = 0; i < 10; ++i) {
    OutputBatch in;
    AddPane(in, "node-1", PaneSpec{.extra = {{"cpu_utilization", 0.5}}}, next_start_, "llama");
    AddPane(in, "node-1", PaneSpec{}, next_start_, "qwen");
    WindowSummary h = Summary("node-1", "cpu_utilization", next_start_, "_");
    for (int j = 0; j < 10; ++j) h.agg.Add(0.96, next_start_ + j * 1000);
    in.Add<kind::PaneSummary>(std::move(h));
    next_start_ += kPaneMs;
    in.watermark_ms = next_start_;
    OutputBatch out;
    EXPECT_TRUE(op_->ProcessResults(in, out).ok());
  }
  EXPECT_TRUE(op_->Active("node-1", "llama").empty());
  EXPECT_FALSE(op_->Active("node-1", "qwen").empty());
}

TEST_F(BottleneckClassifyTest, AnIdleInstanceIsNotJudged) {
  PaneSpec idle;
  idle.requests = 2;
  idle.errors = 2;        // 100 % errors, but of two requests
  idle.ttft_ms = 50'000;  // and awful latency
  idle.running = 0;
  idle.gen_tps = 0;
  idle.hit_rate = 0;
  EXPECT_TRUE(Run(Fleet(idle), 12).empty()) << Dump(all_);
}

TEST_F(BottleneckClassifyTest, PeerRelativeOnlyTheSlowInstanceIsFlagged) {
  PaneSpec slow;
  slow.ttft_ms = 400;  // 2x the peers, far within the 2 s SLO
  slow.tpot_ms = 40;
  const std::vector<Bottleneck> changes = Run(Fleet(slow), 10);
  const std::vector<Bottleneck> raised = Of(changes, BottleneckChange::kRaised);
  ASSERT_EQ(raised.size(), 1u) << Dump(changes);
  EXPECT_EQ(raised[0].instance, "vllm-1");
  EXPECT_EQ(raised[0].type, BottleneckType::kHighLatency);
  EXPECT_EQ(raised[0].basis, BottleneckBasis::kPeer);
  EXPECT_GE(raised[0].severity, BottleneckSeverity::kLow);
  EXPECT_NEAR(raised[0].value / raised[0].peer_median, 2.0, 0.1);
}

TEST_F(BottleneckClassifyTest, PeersNeedAtLeastTwoOthers) {
  PaneSpec slow;
  slow.ttft_ms = 400;
  slow.tpot_ms = 40;
  // Two instances: one peer each, not enough to judge relative to.
  EXPECT_TRUE(Run({{"vllm-0", PaneSpec{}}, {"vllm-1", slow}}, 10).empty()) << Dump(all_);
}

TEST_F(BottleneckClassifyTest, CausalPrimaryIsTheRootNotTheSymptom) {
  PaneSpec p;
  p.kv = 0.97;
  p.preemptions = 2;
  p.waiting = 20;
  p.ttft_ms = 3500;
  const std::vector<Bottleneck> changes = Run(Fleet(p), 10);
  const std::vector<Bottleneck> raised = Of(changes, BottleneckChange::kRaised);
  ASSERT_EQ(raised.size(), 3u) << Dump(changes);
  std::map<BottleneckType, Bottleneck> by_type;
  for (const Bottleneck& b : raised) by_type[b.type] = b;
  ASSERT_TRUE(by_type.count(BottleneckType::kMemoryPressure));
  ASSERT_TRUE(by_type.count(BottleneckType::kQueueBuildup));
  ASSERT_TRUE(by_type.count(BottleneckType::kHighLatency));
  EXPECT_TRUE(by_type[BottleneckType::kMemoryPressure].primary);
  EXPECT_FALSE(by_type[BottleneckType::kQueueBuildup].primary);
  EXPECT_FALSE(by_type[BottleneckType::kHighLatency].primary);
  const Bottleneck& latency = by_type[BottleneckType::kHighLatency];
  EXPECT_EQ(latency.root, BottleneckType::kMemoryPressure);
  EXPECT_EQ(FormatChain(latency.chain), "MEMORY_PRESSURE > QUEUE_BUILDUP > HIGH_LATENCY");
  EXPECT_NE(latency.description.find("caused by"), std::string::npos);
  // Once the memory pressure goes (the others remain), the queue becomes the primary.
  PaneSpec queue_only = p;
  queue_only.kv = 0.5;
  queue_only.preemptions = 0;
  const std::vector<Bottleneck> later = Run(Fleet(queue_only), 6);
  const std::vector<Bottleneck> moved = Of(later, BottleneckChange::kPrimaryChanged);
  ASSERT_EQ(Of(later, BottleneckChange::kResolved).size(), 1u) << Dump(later);
  bool queue_primary = false;
  for (const Bottleneck& b : moved) {
    if (b.type == BottleneckType::kQueueBuildup) queue_primary = b.primary;
    if (b.type == BottleneckType::kHighLatency) {
      EXPECT_EQ(b.root, BottleneckType::kQueueBuildup);
    }
  }
  EXPECT_TRUE(queue_primary) << Dump(later);
}

TEST_F(BottleneckClassifyTest, HoveringAtAThresholdYieldsAtMostOneEpisode) {
  std::mt19937_64 rng(7);
  std::normal_distribution<double> noise(0, 0.1);
  auto hover = [&] {
    std::map<BottleneckType, int> raised;
    for (int i = 0; i < 100; ++i) {
      PaneSpec p;
      const double wave = 0.15 * std::sin(i * 0.9) + noise(rng);
      p.waiting = 16 * 0.25 * (1 + wave);
      p.ttft_ms = 2000 / 1.1 * (1 + wave);
      for (const Bottleneck& b : Step(Fleet(p))) {
        if (b.change == BottleneckChange::kRaised) ++raised[b.type];
      }
    }
    return raised;
  };
  std::map<BottleneckType, int> raised = hover();
  EXPECT_LE(raised[BottleneckType::kQueueBuildup], 1) << Dump(all_);
  EXPECT_LE(raised[BottleneckType::kHighLatency], 1) << Dump(all_);
  EXPECT_TRUE(Of(all_, BottleneckChange::kResolved).empty()) << Dump(all_);
  // The same signal without `for` and with a hair-thin band flaps: the test can fail.
  all_.clear();
  Make(
      "for: 0s\nqueue_buildup: {levels: {exit: 0.2499}}\n"
      "high_latency: {levels: {exit: 0.9999}}\n");
  raised = hover();
  EXPECT_GT(raised[BottleneckType::kQueueBuildup] + raised[BottleneckType::kHighLatency], 4)
      << Dump(all_);
}

// Every type with an enter level, its value oscillating around that level with noise on the
// faulty instance: value = enter + (enter − exit) × (0.5 sin(0.9 i) + N(0, 0.3)) per pane, so
// about half the panes are beyond the enter level and some halfway back to the exit level. Each
// type yields at most one episode (and at least one: the test is not vacuous). Rules whose peer
// judgement would keep the type active regardless (the instance far from its peers) are judged
// with the peer rule off (`min_peers: 10`).
TEST_F(BottleneckClassifyTest, HoveringAtEachEnterLevelYieldsAtMostOneEpisode) {
  struct Case {
    BottleneckType type;
    std::string yaml;
    double enter, exit;
    std::function<void(PaneSpec&, double)> set;
  };
  const std::vector<Case> cases = {
      {BottleneckType::kMemoryPressure, "", 0.85, 0.50,
       [](PaneSpec& p, double v) {
         p.kv = std::min(v, 1.0);
         p.preemptions = v >= 0.85 ? 1 : 0;  // in bursts, with the cache above the level
       }},
      {BottleneckType::kHighLatency, "peer: {min_peers: 10}", 1.0, 0.8,
       [](PaneSpec& p, double v) { p.ttft_ms = 2000 * v / 1.08; }},  // p95 = 1.08 x the value
      {BottleneckType::kHighLatency, "", 1.6, 1.3,
       [](PaneSpec& p, double v) { p.ttft_ms = 200 * v; }},  // peer: p50 / the peers' 200
      {BottleneckType::kLowThroughput, "peer: {min_peers: 10}", 3.0, 5.0,
       [](PaneSpec& p, double v) { p.gen_tps = p.running * std::max(v, 0.0); }},
      {BottleneckType::kQueueBuildup, "", 0.25, 0.1,
       [](PaneSpec& p, double v) { p.waiting = p.running * std::max(v, 0.0); }},
      // The hysteresis alone: the confidence bound (tested in ClassifyTest and the scenarios)
      // would move the effective enter level of 300 requests' hit rate to ~0.4 of the expected.
      {BottleneckType::kCacheInefficiency, "cache_inefficiency: {confidence_z: 0}", 0.5, 0.7,
       [](PaneSpec& p, double v) { p.hit_rate = 0.5 * std::clamp(v, 0.0, 1.0); }},
      {BottleneckType::kErrorSpike, "", 0.05, 0.02,
       [](PaneSpec& p, double v) {
         p.errors = static_cast<int>(std::lround(p.requests * std::clamp(v, 0.0, 1.0)));
       }},
      {BottleneckType::kResourceSaturation, "", 0.95, 0.85,
       [](PaneSpec& p, double v) { p.extra["gpu_utilization"] = std::min(v, 1.0); }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(BottleneckTypeName(c.type)) + " " + c.yaml);
    Make(c.yaml);
    all_.clear();
    std::mt19937_64 rng(11);
    std::normal_distribution<double> noise(0, 0.3);
    Run(Fleet(PaneSpec{}), 4);  // a healthy history
    int beyond = 0, back = 0;
    for (int i = 0; i < 120; ++i) {
      const double v = c.enter + (c.enter - c.exit) * (0.5 * std::sin(i * 0.9) + noise(rng));
      const bool higher_is_worse = c.enter > c.exit;
      beyond += (higher_is_worse ? v >= c.enter : v <= c.enter) ? 1 : 0;
      back += (c.enter - v) / (c.enter - c.exit) >= 0.5 ? 1 : 0;  // halfway back to exit
      PaneSpec p;
      c.set(p, v);
      Step(Fleet(p));
    }
    EXPECT_GE(beyond, 40);
    EXPECT_GE(back, 10) << "some panes are halfway back to the exit level";
    int raised = 0;
    for (const Bottleneck& b : all_) {
      EXPECT_EQ(b.instance, "vllm-1") << Dump(all_);
      raised += b.type == c.type && b.change == BottleneckChange::kRaised ? 1 : 0;
    }
    EXPECT_EQ(raised, 1) << Dump(all_);
  }
  // MEMORY_PRESSURE with the earlier clear rule (a window without preemptions clears): the same
  // signal gives several episodes — the test above can fail.
  Make("memory_pressure: {quiet_clears: true}");
  all_.clear();
  std::mt19937_64 rng(11);
  std::normal_distribution<double> noise(0, 0.3);
  Run(Fleet(PaneSpec{}), 4);
  for (int i = 0; i < 120; ++i) {
    PaneSpec p;
    p.kv = 0.85 + 0.15 * (0.5 * std::sin(i * 0.9) + noise(rng));
    p.preemptions = p.kv >= 0.85 ? 1 : 0;
    Step(Fleet(p));
  }
  EXPECT_GT(Of(all_, BottleneckChange::kRaised).size(), 1u) << Dump(all_);
}

TEST_F(BottleneckClassifyTest, SeverityChangesAreHeldBeforeTheyArePublished) {
  PaneSpec p;
  p.waiting = 20;  // HIGH
  Run(Fleet(p), 8);
  ASSERT_EQ(Of(all_, BottleneckChange::kRaised).size(), 1u);
  p.waiting = 40;  // 2.5 per running request: CRITICAL
  const std::vector<Bottleneck> up = Run(Fleet(p), 6);
  const std::vector<Bottleneck> changed = Of(up, BottleneckChange::kSeverityChanged);
  ASSERT_EQ(changed.size(), 1u) << Dump(up);
  EXPECT_EQ(changed[0].severity, BottleneckSeverity::kCritical);
}

TEST_F(BottleneckClassifyTest, RestartRestoresStateWithoutADuplicateRaise) {
  testing::TempDir dir;
  StateStoreOptions store_options;
  store_options.path = dir.str();
  auto store = StateStore::Open(store_options, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();

  PaneSpec p;
  p.kv = 0.97;
  p.preemptions = 2;
  Run(Fleet(p), 8);
  ASSERT_EQ(Of(all_, BottleneckChange::kRaised).size(), 1u);
  const int64_t active_since = Of(all_, BottleneckChange::kRaised)[0].active_since_ms;
  std::vector<CheckpointRecord> records;
  CheckpointCollector writer("op", "bottlenecks", &records);
  ASSERT_TRUE(op_->Checkpoint(writer).ok());
  ASSERT_FALSE(records.empty());
  ASSERT_TRUE(WriteCheckpointRecords(**store, records).ok());
  records.clear();
  ASSERT_TRUE(op_->Checkpoint(writer).ok());
  EXPECT_TRUE(records.empty()) << "nothing changed since";

  // A new operator (the engine restarted) restores the raised state.
  all_.clear();
  Make("");
  ASSERT_TRUE(op_->Restore(StateCheckpointReader("op", "bottlenecks", store->get())).ok());
  ASSERT_EQ(op_->Active("vllm-1", kModel).size(), 1u);
  EXPECT_EQ(op_->Active("vllm-1", kModel)[0].second, BottleneckSeverity::kHigh);
  EXPECT_TRUE(Run(Fleet(p), 8).empty()) << "already raised before the restart:\n" << Dump(all_);
  const std::vector<Bottleneck> after = Run(Fleet(PaneSpec{}), 10);
  const std::vector<Bottleneck> resolved = Of(after, BottleneckChange::kResolved);
  ASSERT_EQ(resolved.size(), 1u) << Dump(after);
  EXPECT_EQ(resolved[0].type, BottleneckType::kMemoryPressure);
  EXPECT_EQ(resolved[0].active_since_ms, active_since);
  // Resolved and idle again: the next checkpoint deletes the record.
  records.clear();
  ASSERT_TRUE(op_->Checkpoint(writer).ok());
  bool deleted = false;
  for (const CheckpointRecord& r : records) deleted |= !r.value.has_value();
  EXPECT_TRUE(deleted);
}

TEST_F(BottleneckClassifyTest, TableIsBoundedAndIdlePairsExpire) {
  Make("max_instances: 3\nidle_expiry: 1m\n");
  PaneSpec p;
  p.waiting = 20;
  Run({{"a-0", p}, {"a-1", p}, {"a-2", p}, {"a-3", p}}, 8);  // four instances, room for three
  EXPECT_EQ(op_->tracked(), 3u);
  EXPECT_GT(op_->dropped(), 0u);
  // The three tracked ones are raised, and resolved "no data" once their panes stop for
  // idle_expiry.
  const size_t raised = Of(all_, BottleneckChange::kRaised).size();
  EXPECT_EQ(raised, 3u);
  const std::vector<Bottleneck> after = Run({{"other-9", PaneSpec{}}}, 8);
  EXPECT_EQ(Of(after, BottleneckChange::kResolved).size(), raised) << Dump(after);
  EXPECT_EQ(op_->expired(), 3u);
  EXPECT_EQ(op_->tracked(), 1u);
}

TEST_F(BottleneckClassifyTest, PaneUpdatesReplaceTheirContribution) {
  // Three bad panes for vllm-1, each corrected by a late update to healthy values before the next
  // pane is judged: nothing may be raised from the replaced values.
  PaneSpec bad;
  bad.errors = 50;
  for (int i = 0; i < 10; ++i) {
    OutputBatch in;
    for (const auto& [instance, spec] : Fleet(bad)) AddPane(in, instance, spec, next_start_);
    // The update for the same pane arrives in the same step, healthy.
    OutputBatch fix;
    AddPane(fix, "vllm-1", PaneSpec{}, next_start_);
    for (WindowSummary s : fix.Get<kind::PaneSummary>()) {
      s.update = true;
      in.Add<kind::PaneSummary>(std::move(s));
    }
    next_start_ += kPaneMs;
    in.watermark_ms = next_start_;
    OutputBatch out;
    ASSERT_TRUE(op_->ProcessResults(in, out).ok());
    EXPECT_TRUE(out.Get<kind::Bottleneck>().empty());
  }
}

TEST_F(BottleneckClassifyTest, EnginesOptionMapsInstances) {
  Make("engines: {\"gpu-a*\": sglang, \"*\": vllm}\n");
  EXPECT_EQ(op_->EngineOf("gpu-a1"), "sglang");
  EXPECT_EQ(op_->EngineOf("tgi-3"), "vllm");
  Make("");
  EXPECT_EQ(op_->EngineOf("tgi-3"), "tgi");
  EXPECT_EQ(op_->EngineOf("plain"), "plain");
}

TEST_F(BottleneckClassifyTest, MetricsCountActiveAndTransitions) {
  PaneSpec p;
  p.waiting = 20;
  Run(Fleet(p), 8);
  const std::string text = metrics_.RenderPrometheus();
  EXPECT_NE(
      text.find("inferscope_bottlenecks_active{stage=\"bottlenecks\",type=\"QUEUE_BUILDUP\"} 1"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("inferscope_bottleneck_transitions_total{stage=\"bottlenecks\",change="
                      "\"raised\"} 1"),
            std::string::npos);
}

TEST(BottleneckClassifyParseTest, ErrorsNameFileLineAndField) {
  auto error = [](const std::string& yaml) {
    Result<std::unique_ptr<BottleneckClassifyOperator>> op =
        BottleneckClassifyOperator::Create(Parse(yaml, "fleet.yaml"));
    return op.ok() ? std::string("OK") : op.status().message();
  };
  EXPECT_EQ(error("{}"), "OK");
  EXPECT_NE(error("evidnce: 30s\n").find("fleet.yaml:1:1"), std::string::npos);
  EXPECT_NE(error("evidnce: 30s\n").find("evidnce"), std::string::npos);
  EXPECT_NE(error("for: soon\n").find("fleet.yaml:1:6: options.for"), std::string::npos)
      << error("for: soon\n");
  EXPECT_NE(error("queue_buildup:\n  levels: {low: 1, medium: 0.5}\n")
                .find("fleet.yaml:2:11: options.queue_buildup.levels"),
            std::string::npos)
      << error("queue_buildup:\n  levels: {low: 1, medium: 0.5}\n");
  EXPECT_NE(error("low_throughput:\n  levels: {exit: 2}\n").find("exit must be above low"),
            std::string::npos);
  EXPECT_NE(error("memory_pressure:\n  kv_enter: 0.5\n  kv_exit: 0.6\n")
                .find("fleet.yaml:3:12: options.memory_pressure.kv_exit"),
            std::string::npos)
      << error("memory_pressure:\n  kv_enter: 0.5\n  kv_exit: 0.6\n");
  EXPECT_EQ(error("memory_pressure: {quiet_clears: true}\n"), "OK");
  EXPECT_NE(error("memory_pressure:\n  quiet_clears: sometimes\n")
                .find("fleet.yaml:2:17: options.memory_pressure.quiet_clears"),
            std::string::npos)
      << error("memory_pressure:\n  quiet_clears: sometimes\n");
  EXPECT_NE(error("resource_saturation:\n  - {metric: gpu_utilization, stat: p99}\n")
                .find("options.resource_saturation[0].stat"),
            std::string::npos);
  EXPECT_NE(error("max_instances: 0\n").find("options.max_instances"), std::string::npos);
  EXPECT_NE(error("engines: [vllm]\n").find("options.engines"), std::string::npos);
  EXPECT_NE(error("peer:\n  levels: {low: 1.6, exit: 0.5}\n").find("exit must be >= 1"),
            std::string::npos);
}

}  // namespace
}  // namespace inferscope
