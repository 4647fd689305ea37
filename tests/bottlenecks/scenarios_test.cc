// Bottleneck scenarios driven by the serving model: the `sim` fleet produces request outcomes and
// gauges in virtual time, they go through the real window_aggregate and bottleneck_classify
// operators (as the engine chains them), and each test checks what the classifier says about the
// faulty instance and about the healthy ones. An hour of simulated time runs in well under a
// second. Results and delays are recorded in docs/BOTTLENECKS.md ("Scenarios").

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "bottlenecks/bottleneck.h"
#include "operators/bottleneck_classify.h"
#include "operators/window_aggregate.h"
#include "pipeline/clock.h"
#include "pipeline/config.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "sim/events.h"
#include "sim/faults.h"
#include "sim/fleet.h"
#include "sim/trace.h"

namespace inferscope {
namespace {

constexpr int64_t kT0 = 1'700'000'000'000;  // event time of simulated time 0 (aligned to 10 s)
constexpr double kWarmupS = 120;            // simulated, not fed to the operators
constexpr char kModel[] = "llama-3.1-8b-instruct";

ConfigNode Parse(const std::string& yaml) {
  return ConfigNode("topology.yaml", YAML::Load(yaml), "options");
}

// Four healthy Llama-3.1-8B vLLM instances with the serving model's defaults (no injected errors,
// each a little different, as StandardFleet makes them). StandardFleet itself mixes models and
// has a weak node every fourth instance (1.8x slower, 3 % errors): a real difference the
// classifier flags (it is a peer-relative outlier), so "healthy" would not be healthy there.
std::vector<sim::InstanceOptions> FourInstances(int n = 4) {
  std::vector<sim::InstanceOptions> v;
  for (int i = 0; i < n; ++i) {
    sim::InstanceOptions o;
    o.name = "vllm-" + std::to_string(i);
    o.model = kModel;
    o.engine = "vllm";
    o.seed = 100 + static_cast<uint64_t>(i);
    const double spread = 0.95 + 0.1 * i / std::max(1, n - 1);  // 0.95 .. 1.05
    o.params.step_base_ms *= spread;
    o.params.prefill_per_token_ms *= spread;
    v.push_back(std::move(o));
  }
  return v;
}

struct Scenario {
  std::vector<sim::InstanceOptions> instances = FourInstances();
  double rate_per_s = 12;  // whole fleet: 3 requests/s per instance (about 20 running each)
  double wander = 0;
  std::unique_ptr<sim::ArrivalSource> arrivals;  // overrides the Poisson rate
  std::vector<std::string> faults;               // --fault specs, times from the end of warm-up
  double duration_s = 1200;                      // simulated, after warm-up
  std::string classify_yaml = "{}";
  uint64_t seed = 7;
};

// What the classifier emitted, with the event times relative to the end of the warm-up.
struct Outcome {
  std::vector<Bottleneck> changes;
  uint64_t requests = 0;
  double seconds = 0;  // simulated, fed to the operators
  int instances = 0;
  std::vector<double> kv_pane_means;  // vllm-1's (instance 1's) kv_cache_usage per 10 s pane

  std::vector<Bottleneck> Of(const std::string& instance) const {
    std::vector<Bottleneck> out;
    for (const Bottleneck& b : changes) {
      if (b.instance == instance) out.push_back(b);
    }
    return out;
  }
  std::vector<Bottleneck> Except(const std::string& instance) const {
    std::vector<Bottleneck> out;
    for (const Bottleneck& b : changes) {
      if (b.instance != instance) out.push_back(b);
    }
    return out;
  }
  // The first change of `instance` with `type` and `change` (nullptr if none).
  const Bottleneck* First(const std::string& instance, BottleneckType type,
                          BottleneckChange change) const {
    for (const Bottleneck& b : changes) {
      if (b.instance == instance && b.type == type && b.change == change) return &b;
    }
    return nullptr;
  }
  int Count(const std::string& instance, BottleneckType type, BottleneckChange change) const {
    int n = 0;
    for (const Bottleneck& b : changes) {
      n += b.instance == instance && b.type == type && b.change == change ? 1 : 0;
    }
    return n;
  }
};

// Seconds after the end of warm-up of an event time.
double Rel(int64_t event_ms) { return static_cast<double>(event_ms - kT0) / 1000.0 - kWarmupS; }

std::string Dump(const std::vector<Bottleneck>& changes) {
  std::string out;
  for (const Bottleneck& b : changes) {
    char line[64];
    std::snprintf(line, sizeof line, "@%.0fs ", Rel(b.window_end_ms));
    out += line + b.instance + " " + std::string(BottleneckTypeName(b.type)) + "/" +
           std::string(BottleneckSeverityName(b.severity)) + " " +
           std::string(BottleneckChangeName(b.change)) + (b.primary ? " primary" : "") + ": " +
           b.description + "\n";
  }
  return out;
}

// Feeds a fleet's outcomes and gauges, as `inferscope simulate` publishes them, into the two
// operators: every simulated second, the events of that second go through window_aggregate and
// the panes it emits (with its watermark) through bottleneck_classify.
class Pipeline final : public sim::OutcomeSink {
 public:
  explicit Pipeline(const std::string& classify_yaml) {
    ctx_.name = "scenario";
    ctx_.interner = &interner_;
    ctx_.metrics = &metrics_;
    ctx_.clock = &clock_;
    auto window = WindowAggregateOperator::Create(Parse("{idle_timeout: 0s}"));
    EXPECT_TRUE(window.ok()) << window.status().ToString();
    window_ = std::move(window).value();
    EXPECT_TRUE(window_->Open(ctx_).ok());
    auto classify = BottleneckClassifyOperator::Create(Parse(classify_yaml));
    EXPECT_TRUE(classify.ok()) << classify.status().ToString();
    classify_ = std::move(classify).value();
    EXPECT_TRUE(classify_->Open(ctx_).ok());
    publisher_ = interner_.Intern("sim");
    model_ = interner_.Intern(kModel);
    for (size_t g = 0; g < static_cast<size_t>(sim::Gauge::kCount); ++g) {
      gauge_ids_.push_back(interner_.Intern(sim::GaugeName(static_cast<sim::Gauge>(g))));
    }
  }

  void Bind(const sim::Fleet* fleet) {
    for (size_t i = 0; i < fleet->size(); ++i) {
      names_.push_back(interner_.Intern(fleet->instance(i).options().name));
      models_.push_back(interner_.Intern(fleet->instance(i).options().model));
    }
  }

  void OnRequest(const sim::RequestOutcome& o) override {
    if (o.time_ms < kWarmupS * 1000) return;
    batch_.events.push_back(
        sim::RequestEvent(o, kT0, {names_[o.instance], models_[o.instance], publisher_}));
    ++requests_;
  }

  void OnGauge(const sim::GaugeSample& g) override {
    if (g.time_ms < kWarmupS * 1000) return;
    batch_.events.push_back(sim::GaugeEvent(g, kT0,
                                            {names_[g.instance], models_[g.instance], publisher_},
                                            gauge_ids_[static_cast<size_t>(g.gauge)]));
    if (g.instance == 1 && g.gauge == sim::Gauge::kKvCacheUsage) {
      const size_t pane = static_cast<size_t>((g.time_ms - kWarmupS * 1000) / 10'000);
      if (kv_sum_.size() <= pane) kv_sum_.resize(pane + 1), kv_n_.resize(pane + 1);
      kv_sum_[pane] += g.value;
      ++kv_n_[pane];
    }
  }

  std::vector<double> KvPaneMeans() const {
    std::vector<double> out;
    for (size_t i = 0; i < kv_sum_.size(); ++i) out.push_back(kv_n_[i] ? kv_sum_[i] / kv_n_[i] : 0);
    return out;
  }

  // Runs the events collected so far through both operators.
  void Flush() {
    batch_.publisher = publisher_;
    OutputBatch panes;
    ASSERT_TRUE(window_->Process(batch_, panes).ok());
    batch_.Clear();
    OutputBatch out;
    ASSERT_TRUE(classify_->ProcessResults(panes, out).ok());
    const auto changes = out.Get<kind::Bottleneck>();
    changes_.insert(changes_.end(), changes.begin(), changes.end());
  }

  std::vector<Bottleneck>& changes() { return changes_; }
  uint64_t requests() const { return requests_; }
  const MetricsRegistry& metrics() const { return metrics_; }

 private:
  Interner interner_;
  MetricsRegistry metrics_;
  ManualClock clock_{kT0};
  StageContext ctx_;
  std::unique_ptr<WindowAggregateOperator> window_;
  std::unique_ptr<BottleneckClassifyOperator> classify_;
  StringId publisher_ = 0, model_ = 0;
  std::vector<StringId> gauge_ids_, names_, models_;
  EventBatch batch_;
  std::vector<Bottleneck> changes_;
  uint64_t requests_ = 0;
  std::vector<double> kv_sum_;
  std::vector<int> kv_n_;
};

Outcome Simulate(Scenario s) {
  Outcome result;
  std::vector<sim::Fault> faults;
  for (const std::string& spec : s.faults) {
    Result<sim::Fault> f = sim::ParseFault(spec);
    EXPECT_TRUE(f.ok()) << spec << ": " << f.status().ToString();
    if (!f.ok()) return result;
    f->start_ms += kWarmupS * 1000;  // as `inferscope simulate`: times from the end of warm-up
    f->end_ms += kWarmupS * 1000;
    faults.push_back(*f);
  }
  if (s.arrivals == nullptr) {
    sim::PoissonOptions p;
    p.rate_per_s = s.rate_per_s;
    p.wander = s.wander;
    p.seed = s.seed;
    s.arrivals = std::make_unique<sim::PoissonArrivals>(p);
  }
  Pipeline pipeline(s.classify_yaml);
  sim::FleetOptions fo;
  fo.duration_ms = (kWarmupS + s.duration_s) * 1000;
  fo.seed = s.seed;
  result.instances = static_cast<int>(s.instances.size());
  auto fleet =
      sim::Fleet::Create(fo, std::move(s.instances), std::move(faults), std::move(s.arrivals),
                         std::make_unique<sim::RoundRobinRouter>(), &pipeline);
  EXPECT_TRUE(fleet.ok()) << fleet.status().ToString();
  if (!fleet.ok()) return result;
  pipeline.Bind(fleet->get());
  for (double t = 1000; (*fleet)->RunUntil(t); t += 1000) pipeline.Flush();
  pipeline.Flush();
  result.changes = std::move(pipeline.changes());
  result.requests = pipeline.requests();
  result.kv_pane_means = pipeline.KvPaneMeans();
  result.seconds = s.duration_s;
  return result;
}

// The delay from `from_s` (after warm-up) to the end of the window that carried `b`.
double DelayS(const Bottleneck& b, double from_s) { return Rel(b.window_end_ms) - from_s; }

// Documented bounds (docs/BOTTLENECKS.md, "Scenarios"): evidence 30 s + for 20 s + a pane.
constexpr double kMaxRaiseS = 70;
constexpr double kMaxClearS = 90;
// An overload leaves a backlog (up to the 120 s client timeout's worth of arrivals) that the
// instance drains at its full batch first: latency stays above the SLO until it has.
constexpr double kMaxClearAfterOverloadS = 180;

// A fault on vllm-1 from 300 s to 900 s of a 1200 s run: vllm-1 gets `root` raised, as its
// primary, at `severity` or worse within kMaxRaiseS, and every one of its bottlenecks resolves
// within kMaxClearS of the fault's end; the three other instances get nothing at all.
void ExpectFaultFound(const Outcome& r, BottleneckType root, BottleneckSeverity min_severity,
                      double max_clear_s = kMaxClearS, double fault_start_s = 300,
                      double fault_end_s = 900) {
  EXPECT_GT(r.requests, 1000u);
  EXPECT_TRUE(r.Except("vllm-1").empty()) << "healthy instances flagged";
  const Bottleneck* raised = r.First("vllm-1", root, BottleneckChange::kRaised);
  ASSERT_NE(raised, nullptr);
  EXPECT_GE(DelayS(*raised, fault_start_s), 0) << "raised before the fault";
  EXPECT_LE(DelayS(*raised, fault_start_s), kMaxRaiseS);
  std::printf("[scenario] %s raised %s after %.0f s\n", BottleneckTypeName(root).data(),
              BottleneckSeverityName(raised->severity).data(), DelayS(*raised, fault_start_s));
  // Its severity over the fault (the highest published) and whether it was the primary.
  BottleneckSeverity worst = BottleneckSeverity::kNone;
  bool primary_at_end = false;
  for (const Bottleneck& b : r.Of("vllm-1")) {
    if (b.type == root && b.state == BottleneckState::kActive) {
      worst = std::max(worst, b.severity);
      primary_at_end = b.primary;
    }
    // Once the root is raised it is the primary until the fault ends (a symptom may be raised
    // first: the evidence window shows a queue before the mean KV usage crosses its level).
    if (b.state == BottleneckState::kActive && b.primary &&
        b.window_end_ms >= raised->window_end_ms && Rel(b.window_end_ms) < fault_end_s) {
      EXPECT_EQ(b.type, root) << "another primary during the fault: " << b.description;
    }
  }
  EXPECT_GE(worst, min_severity);
  EXPECT_TRUE(primary_at_end);
  EXPECT_EQ(r.Count("vllm-1", root, BottleneckChange::kRaised), 1) << "one episode";
  // Everything resolves after the fault ends, and nothing is raised once it has.
  double last_resolve = fault_end_s;
  for (const Bottleneck& b : r.Of("vllm-1")) {
    EXPECT_FALSE(b.change == BottleneckChange::kRaised && Rel(b.window_end_ms) > fault_end_s)
        << "raised after the fault: " << b.description;
    if (b.change == BottleneckChange::kResolved) {
      last_resolve = std::max(last_resolve, Rel(b.window_end_ms));
    }
  }
  EXPECT_LE(last_resolve - fault_end_s, max_clear_s);
  std::printf("[scenario] %s cleared after %.0f s\n", BottleneckTypeName(root).data(),
              last_resolve - fault_end_s);
  // Nothing left active.
  for (int t = 0; t < static_cast<int>(kNumBottleneckTypes); ++t) {
    const auto type = static_cast<BottleneckType>(t);
    EXPECT_EQ(r.Count("vllm-1", type, BottleneckChange::kRaised),
              r.Count("vllm-1", type, BottleneckChange::kResolved))
        << BottleneckTypeName(type);
  }
  if (::testing::Test::HasFailure()) std::printf("%s", Dump(r.changes).c_str());
}

TEST(BottleneckScenarioTest, HealthyFleetGetsNothingForAnHour) {
  Scenario s;
  s.duration_s = 3600;
  s.wander = 0.15;  // the load wanders (x 0.2 .. 2 around the mean)
  const Outcome r = Simulate(std::move(s));
  EXPECT_GT(r.requests, 30'000u);
  EXPECT_TRUE(r.changes.empty()) << Dump(r.changes);
}

TEST(BottleneckScenarioTest, KvCacheSmallIsMemoryPressure) {
  Scenario s;
  s.faults = {"kv_cache_small:vllm-1:300s-900s:0.03"};
  ExpectFaultFound(Simulate(std::move(s)), BottleneckType::kMemoryPressure,
                   BottleneckSeverity::kMedium, kMaxClearAfterOverloadS);
}

TEST(BottleneckScenarioTest, SlotLimitLowIsQueueBuildupWithHighLatencyAsItsSymptom) {
  Scenario s;
  s.faults = {"slot_limit_low:vllm-1:300s-900s:0.03"};  // 256 -> 7 slots
  const Outcome r = Simulate(std::move(s));
  ExpectFaultFound(r, BottleneckType::kQueueBuildup, BottleneckSeverity::kCritical,
                   kMaxClearAfterOverloadS);
  const Bottleneck* latency =
      r.First("vllm-1", BottleneckType::kHighLatency, BottleneckChange::kRaised);
  ASSERT_NE(latency, nullptr) << Dump(r.changes);
  EXPECT_FALSE(latency->primary);
  EXPECT_EQ(latency->root, BottleneckType::kQueueBuildup);
}

TEST(BottleneckScenarioTest, SlowGpuIsLowThroughput) {
  Scenario s;
  s.faults = {"slow_gpu:vllm-1:300s-900s:10"};
  ExpectFaultFound(Simulate(std::move(s)), BottleneckType::kLowThroughput,
                   BottleneckSeverity::kCritical, kMaxClearAfterOverloadS);
}

TEST(BottleneckScenarioTest, PrefixCacheOffIsCacheInefficiency) {
  Scenario s;
  s.faults = {"prefix_cache_off:vllm-1:300s-900s"};
  ExpectFaultFound(Simulate(std::move(s)), BottleneckType::kCacheInefficiency,
                   BottleneckSeverity::kCritical);
}

TEST(BottleneckScenarioTest, ErrorBurstIsErrorSpike) {
  Scenario s;
  s.faults = {"error_burst:vllm-1:300s-900s:0.3"};
  ExpectFaultFound(Simulate(std::move(s)), BottleneckType::kErrorSpike, BottleneckSeverity::kHigh);
}

// Twice its share on one instance (5/s -> 10/s, just beyond what an 8B instance serves): the
// model first grows the batch (decode slows, ttft and tpot rise against the peers: HIGH_LATENCY,
// peer basis), and only once all 256 slots are busy does a queue build; then QUEUE_BUILDUP is
// raised and becomes the root of the latency (and of the timeouts that follow).
TEST(BottleneckScenarioTest, LoadDoubleOnOneInstanceIsHighLatencyThenQueueBuildup) {
  Scenario s;
  s.rate_per_s = 20;
  s.faults = {"load_double:vllm-1:300s-900s"};
  const Outcome r = Simulate(std::move(s));
  EXPECT_TRUE(r.Except("vllm-1").empty()) << "healthy instances flagged";
  const Bottleneck* latency =
      r.First("vllm-1", BottleneckType::kHighLatency, BottleneckChange::kRaised);
  ASSERT_NE(latency, nullptr);
  EXPECT_LE(DelayS(*latency, 300), kMaxRaiseS);
  EXPECT_GE(DelayS(*latency, 300), 0);
  const Bottleneck* queue =
      r.First("vllm-1", BottleneckType::kQueueBuildup, BottleneckChange::kRaised);
  ASSERT_NE(queue, nullptr);
  EXPECT_LE(DelayS(*queue, 300), 300) << "the batch fills in about 200 s";
  std::printf("[scenario] load_double: HIGH_LATENCY after %.0f s, QUEUE_BUILDUP after %.0f s\n",
              DelayS(*latency, 300), DelayS(*queue, 300));
  double last_resolve = 0;
  BottleneckSeverity worst_queue = BottleneckSeverity::kNone;
  for (const Bottleneck& b : r.Of("vllm-1")) {
    if (b.state == BottleneckState::kActive && b.primary &&
        b.window_end_ms >= queue->window_end_ms && Rel(b.window_end_ms) < 900) {
      EXPECT_EQ(b.type, BottleneckType::kQueueBuildup) << b.description;
    }
    if (b.type == BottleneckType::kQueueBuildup && b.state == BottleneckState::kActive) {
      worst_queue = std::max(worst_queue, b.severity);
    }
    if (b.change == BottleneckChange::kResolved) {
      last_resolve = std::max(last_resolve, Rel(b.window_end_ms) - 900);
    }
    EXPECT_FALSE(b.change == BottleneckChange::kRaised && Rel(b.window_end_ms) > 900 &&
                 b.type != BottleneckType::kErrorSpike)
        << b.description;
  }
  EXPECT_GE(worst_queue, BottleneckSeverity::kHigh);
  // The backlog of 600 s of overload drains first.
  EXPECT_LE(last_resolve, 240);
  std::printf("[scenario] load_double: cleared after %.0f s\n", last_resolve);
  for (int t = 0; t < static_cast<int>(kNumBottleneckTypes); ++t) {
    const auto type = static_cast<BottleneckType>(t);
    EXPECT_EQ(r.Count("vllm-1", type, BottleneckChange::kRaised),
              r.Count("vllm-1", type, BottleneckChange::kResolved));
  }
  if (HasFailure()) std::printf("%s", Dump(r.changes).c_str());
}

TEST(BottleneckScenarioTest, PeerRelativeOnlyTheTwiceSlowerInstanceIsFlagged) {
  Scenario s;
  s.faults = {"slow_gpu:vllm-1:300s-900s:2"};
  const Outcome r = Simulate(std::move(s));
  SCOPED_TRACE(Dump(r.changes));
  EXPECT_TRUE(r.Except("vllm-1").empty());
  const std::vector<Bottleneck> mine = r.Of("vllm-1");
  ASSERT_FALSE(mine.empty());
  for (const Bottleneck& b : mine) {
    // (A primary_changed re-publication carries the current window's verdict, which may be
    // between exit and enter on the absolute basis: only raises and severity changes count.)
    if (b.change != BottleneckChange::kRaised && b.change != BottleneckChange::kSeverityChanged) {
      continue;
    }
    EXPECT_EQ(b.basis, BottleneckBasis::kPeer) << b.description;  // within the absolute SLOs
  }
}

// A constant load at which vllm-1's KV cache (6.5 % of its size) is full about half the time:
// per-pane kv means on both sides of the 0.85 enter level, preemptions in bursts, the noise the
// model's own (arrivals, token counts, prefix hits). The hover test of the issue: at most one
// MEMORY_PRESSURE episode over the 20 minutes, as the kv hysteresis (clear at kv_exit 0.70 only)
// gives. With `quiet_clears` (a 30 s window without a preemption clears, the earlier rule) the
// same run gave 3 episodes: checked too, so the test can fail.
TEST(BottleneckScenarioTest, KvUsageHoveringAtTheEnterLevelIsOneEpisode) {
  auto run = [](const std::string& classify_yaml) {
    Scenario s;
    s.faults = {"kv_cache_small:vllm-1:300s-1500s:0.065"};
    s.duration_s = 1800;
    s.classify_yaml = classify_yaml;
    return Simulate(std::move(s));
  };
  const Outcome r = run("{}");
  // The load really hovers at the level: during the fault, panes on both sides of it.
  int above = 0, below = 0;
  for (size_t i = 31; i < 150 && i < r.kv_pane_means.size(); ++i) {
    (r.kv_pane_means[i] >= 0.85 ? above : below) += 1;
  }
  const int episodes =
      r.Count("vllm-1", BottleneckType::kMemoryPressure, BottleneckChange::kRaised);
  std::printf("[scenario] hover: %d panes with kv mean >= 0.85, %d below; %d episodes\n", above,
              below, episodes);
  EXPECT_GE(above, 20);
  EXPECT_GE(below, 20);
  EXPECT_TRUE(r.Except("vllm-1").empty()) << Dump(r.changes);
  EXPECT_EQ(episodes, 1) << Dump(r.changes);
  // It resolves once the fault ends (the cache is back to its size: kv far below kv_exit).
  const Bottleneck* resolved =
      r.First("vllm-1", BottleneckType::kMemoryPressure, BottleneckChange::kResolved);
  ASSERT_NE(resolved, nullptr) << Dump(r.changes);
  EXPECT_GE(Rel(resolved->window_end_ms), 1500) << Dump(r.changes);
  EXPECT_LE(Rel(resolved->window_end_ms) - 1500, kMaxClearS) << Dump(r.changes);

  const Outcome quiet = run("{memory_pressure: {quiet_clears: true}}");
  const int quiet_episodes =
      quiet.Count("vllm-1", BottleneckType::kMemoryPressure, BottleneckChange::kRaised);
  std::printf("[scenario] hover with quiet_clears: %d episodes\n", quiet_episodes);
  EXPECT_GT(quiet_episodes, 1) << "the signal does hover: the earlier rule splits it";
}

// The fleet `make demo` simulates (StandardFleet: 6 instances x 2 models, 30 requests/s, seed 42,
// load wandering 5 %) with the fault scripts/demo.sh injects: vllm-0's KV cache at 2 % from 60 s.
// The demo table shows vllm-0's primary bottleneck; this checks what it can show.
TEST(BottleneckScenarioTest, DemoFleetShowsTheInjectedFault) {
  Scenario s;
  s.instances = sim::StandardFleet(6, 2, 42);
  s.rate_per_s = 30;
  s.wander = 0.05;
  s.seed = 42;
  s.faults = {"kv_cache_small:vllm-0:60s-600s:0.02"};
  s.duration_s = 300;
  const Outcome r = Simulate(std::move(s));
  const Bottleneck* raised =
      r.First("vllm-0", BottleneckType::kMemoryPressure, BottleneckChange::kRaised);
  ASSERT_NE(raised, nullptr) << Dump(r.changes);
  EXPECT_LE(DelayS(*raised, 60), kMaxRaiseS) << Dump(r.changes);
  std::printf("[scenario] demo fleet: MEMORY_PRESSURE/%s on vllm-0 after %.0f s\n",
              BottleneckSeverityName(raised->severity).data(), DelayS(*raised, 60));
  // The other instances: StandardFleet's weak node (vllm-3: 1.8x slower, 3 % errors) may be
  // flagged against its peers; the others are healthy.
  for (const Bottleneck& b : r.Except("vllm-0")) {
    EXPECT_EQ(b.instance, "vllm-3") << Dump(r.changes);
  }
  std::printf("%s", Dump(r.changes).c_str());
}

// The demo's fleet without a fault, at the demo's rate: ~2.5 requests/s per instance and model,
// so a 30 s evidence window carries ~75 requests and its prefix hit rate is noisy. The TGI
// instances' true rate (0.25) sits just above LOW's level (0.5 x the peers' median 0.35); before
// the confidence bound (BottleneckOptions::confidence_z) the noise flagged them now and then (once
// in DemoTest, under a loaded machine). Several seeds, 20 simulated minutes each.
TEST(BottleneckScenarioTest, DemoFleetNoiseIsNoCacheInefficiency) {
  auto raises = [](const std::string& yaml) {
    int n = 0;
    std::string dump;
    for (uint64_t seed = 1; seed <= 4; ++seed) {
      Scenario s;
      s.instances = sim::StandardFleet(6, 2, seed);
      s.rate_per_s = 30;
      s.wander = 0.05;
      s.seed = seed;
      s.duration_s = 1200;
      s.classify_yaml = yaml;
      const Outcome r = Simulate(std::move(s));
      for (const Bottleneck& b : r.changes) {
        if (b.type == BottleneckType::kCacheInefficiency && b.change == BottleneckChange::kRaised) {
          ++n;
          dump += "seed " + std::to_string(seed) + ": " + Dump({b});
        }
      }
    }
    return std::pair{n, dump};
  };
  const auto [with_bound, dump] = raises("{}");
  const auto [without, unused] = raises("{cache_inefficiency: {confidence_z: 0}}");
  std::printf(
      "[scenario] demo fleet noise: CACHE_INEFFICIENCY raised %d times (%d without the "
      "confidence bound), 4 x 20 min\n",
      with_bound, without);
  EXPECT_EQ(with_bound, 0) << dump;
  EXPECT_GT(without, 0) << "the scenario no longer carries the noise this test is about";
}

TEST(BottleneckScenarioTest, AzureTraceReplayRaisesNothing) {
  const std::filesystem::path trace =
      std::filesystem::path(INFERSCOPE_SOURCE_DIR) / "tests/data/azure_conv_2023_head2000.csv";
  auto records = sim::ReadAzureTrace(trace.string());
  ASSERT_TRUE(records.ok()) << records.status().ToString();
  Scenario s;
  s.arrivals = std::make_unique<sim::TraceArrivals>(std::move(records).value());
  s.duration_s = 600;
  const Outcome r = Simulate(std::move(s));
  EXPECT_GT(r.requests, 1000u);
  EXPECT_TRUE(r.changes.empty()) << Dump(r.changes);
}

}  // namespace
}  // namespace inferscope
