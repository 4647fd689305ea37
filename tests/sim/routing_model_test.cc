// The serving model's routing extensions: the down, flapping, latency_drift, brownout,
// price_change and quality_drop faults, categories and quality, capabilities, the oracle's
// expectation, and the feedback the fleet gives its router (outcomes, delayed gauges, sparse
// delayed quality).

#include <gtest/gtest.h>

#include <cmath>

#include "tests/sim/sim_test_util.h"

namespace inferscope::sim {
namespace {

using testing::Instance;
using testing::Mean;
using testing::Poisson;
using testing::Recorder;
using testing::Tpots;

Fault MakeFault(FaultKind kind, std::string instance, double start_s, double end_s, double factor) {
  Fault f;
  f.kind = kind;
  f.instance = std::move(instance);
  f.start_ms = start_s * 1000;
  f.end_ms = end_s * 1000;
  f.factor = factor;
  return f;
}

std::unique_ptr<Fleet> RunWith(Recorder* rec, std::vector<InstanceOptions> instances,
                               std::vector<Fault> faults, double rate, double duration_s,
                               FleetOptions fo = {}, std::unique_ptr<Router> router = nullptr) {
  fo.duration_ms = duration_s * 1000;
  if (router == nullptr) router = std::make_unique<RoundRobinRouter>();
  Result<std::unique_ptr<Fleet>> fleet =
      Fleet::Create(fo, std::move(instances), std::move(faults),
                    std::make_unique<PoissonArrivals>(Poisson(rate)), std::move(router), rec);
  EXPECT_TRUE(fleet.ok()) << fleet.status().ToString();
  if (!fleet.ok()) return nullptr;
  (*fleet)->Run();
  return std::move(*fleet);
}

TEST(RoutingFaultTest, ParsesTheNewKinds) {
  Result<Fault> f = ParseFault("down:a:1m-2m");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->kind, FaultKind::kDown);
  EXPECT_FALSE(ParseFault("down:a:1m-2m:2").ok());
  f = ParseFault("flapping:a:0s-60s:20");
  ASSERT_TRUE(f.ok());
  EXPECT_DOUBLE_EQ(f->factor, 20);
  EXPECT_EQ(ParseFault("latency_drift:a:0s-1s")->factor, 4);
  EXPECT_EQ(ParseFault("brownout:a:0s-1s")->factor, 0.1);
  EXPECT_FALSE(ParseFault("brownout:a:0s-1s:1.5").ok());
  EXPECT_EQ(ParseFault("price_change:a:0s-1s")->factor, 3);
  EXPECT_EQ(ParseFault("quality_drop:a:0s-1s")->factor, 0.5);
}

TEST(RoutingFaultTest, FlappingIsDownInTheFirstHalfOfEachPeriod) {
  Fault f = MakeFault(FaultKind::kFlapping, "a", 100, 200, 30);
  EXPECT_FALSE(f.DownAt(99'999));
  EXPECT_TRUE(f.DownAt(100'000));
  EXPECT_TRUE(f.DownAt(114'999));
  EXPECT_FALSE(f.DownAt(115'000));
  EXPECT_TRUE(f.DownAt(130'000));
  EXPECT_FALSE(f.DownAt(200'000));
}

TEST(RoutingFaultTest, DownFailsEveryRequestFastAndRecovers) {
  Recorder rec;
  auto fleet = RunWith(&rec, {Instance("a")}, {MakeFault(FaultKind::kDown, "a", 20, 40, 1)}, 3, 80);
  ASSERT_NE(fleet, nullptr);
  int during = 0, after = 0, after_ok = 0;
  for (const RequestOutcome& o : rec.requests) {
    if (o.arrival_ms >= 20'000 && o.arrival_ms < 40'000) {
      ++during;
      EXPECT_EQ(o.error, RequestError::kServerError);
      EXPECT_DOUBLE_EQ(o.e2e_ms, 5);
      EXPECT_EQ(o.cost_usd, 0);
    }
    if (o.arrival_ms >= 41'000) {
      ++after;
      after_ok += o.ok() ? 1 : 0;
    }
  }
  EXPECT_GT(during, 30);
  EXPECT_GT(after, 60);
  EXPECT_GE(after_ok, after - 2);
  // Requests in flight when it went down failed then (connection reset), not later.
  for (const RequestOutcome& o : rec.requests) {
    if (o.arrival_ms < 20'000 && o.time_ms >= 20'000) {
      EXPECT_EQ(o.error, RequestError::kServerError);
      EXPECT_LT(o.time_ms, 20'200);
    }
  }
  // No gauge is sampled while it is down (the scrape fails).
  EXPECT_TRUE(rec.Gauges(Gauge::kNumRequestsRunning, 0, 20'000, 40'000).empty());
  EXPECT_FALSE(rec.Gauges(Gauge::kNumRequestsRunning, 0, 40'000, 80'000).empty());
}

TEST(RoutingFaultTest, LatencyDriftRampsTheStepTime) {
  Recorder rec;
  auto fleet =
      RunWith(&rec, {Instance("a")}, {MakeFault(FaultKind::kLatencyDrift, "a", 0, 300, 4)}, 1, 300);
  ASSERT_NE(fleet, nullptr);
  const double early = Mean(Tpots(rec.Outcomes(0, 0, 60'000)));
  const double late = Mean(Tpots(rec.Outcomes(0, 240'000, 300'000)));
  // At 1/10 of the ramp the factor is ~1.3; in the last fifth it is 3.4..4.
  EXPECT_GT(late / early, 2.4) << early << " " << late;
  EXPECT_LT(late / early, 4.2) << early << " " << late;
}

TEST(RoutingFaultTest, BrownoutErrorsAndSlows) {
  Recorder rec;
  auto fleet =
      RunWith(&rec, {Instance("a")}, {MakeFault(FaultKind::kBrownout, "a", 100, 200, 0.2)}, 4, 300);
  ASSERT_NE(fleet, nullptr);
  std::vector<RequestOutcome> before, during;
  for (const RequestOutcome& o : rec.requests) {
    if (o.arrival_ms < 100'000) before.push_back(o);
    if (o.arrival_ms >= 110'000 && o.arrival_ms < 190'000) during.push_back(o);
  }
  EXPECT_LT(testing::ErrorRatio(before), 0.01);
  EXPECT_NEAR(testing::ErrorRatio(during), 0.2, 0.05);
  EXPECT_GT(Mean(Tpots(during)), 2.5 * Mean(Tpots(before)));  // x3 step times
}

TEST(RoutingFaultTest, PriceChangeMultipliesTheBill) {
  InstanceOptions a = Instance("a");
  a.input_price_per_1k = 0.001;
  a.output_price_per_1k = 0.002;
  Recorder rec;
  auto fleet = RunWith(&rec, {a}, {MakeFault(FaultKind::kPriceChange, "a", 100, 200, 5)}, 2, 200);
  ASSERT_NE(fleet, nullptr);
  int checked = 0;
  for (const RequestOutcome& o : rec.requests) {
    if (!o.ok()) continue;
    const double list = (o.prompt_tokens * 0.001 + o.output_tokens * 0.002) / 1000;
    EXPECT_NEAR(o.cost_usd, o.time_ms >= 100'000 ? 5 * list : list, 1e-12);
    ++checked;
  }
  EXPECT_GT(checked, 300);
}

TEST(RoutingModelTest, CategoriesQualityAndQualityDrop) {
  InstanceOptions a = Instance("a");
  a.quality = {0.9, 0.6, 0.3};
  FleetOptions fo;
  fo.category_weights = {0.5, 0.3, 0.2};
  Recorder rec;
  auto fleet =
      RunWith(&rec, {a}, {MakeFault(FaultKind::kQualityDrop, "a", 300, 600, 0.5)}, 3, 600, fo);
  ASSERT_NE(fleet, nullptr);
  double n[3] = {0, 0, 0};
  std::vector<double> q[3], dropped;
  for (const RequestOutcome& o : rec.requests) {
    const auto c = static_cast<size_t>(o.category);
    n[c] += 1;
    if (!o.ok()) {
      EXPECT_LT(o.quality, 0);
      continue;
    }
    EXPECT_GE(o.quality, 0);
    EXPECT_LE(o.quality, 1);
    if (o.time_ms < 300'000) q[c].push_back(o.quality);
    if (o.time_ms >= 300'000 && o.category == Category::kChat) dropped.push_back(o.quality);
  }
  const double total = n[0] + n[1] + n[2];
  EXPECT_NEAR(n[0] / total, 0.5, 0.04);
  EXPECT_NEAR(n[1] / total, 0.3, 0.04);
  EXPECT_NEAR(n[2] / total, 0.2, 0.04);
  EXPECT_NEAR(Mean(q[0]), 0.9, 0.02);
  EXPECT_NEAR(Mean(q[1]), 0.6, 0.03);
  EXPECT_NEAR(Mean(q[2]), 0.3, 0.03);
  EXPECT_NEAR(Mean(dropped), 0.45, 0.03);
}

TEST(RoutingModelTest, VisionToAnIncapableBackendIsACountedViolation) {
  InstanceOptions a = Instance("a"), b = Instance("b");
  b.vision = false;
  FleetOptions fo;
  fo.category_weights = {0, 0, 1};
  Recorder rec;
  auto fleet = RunWith(&rec, {a, b}, {}, 2, 100, fo);  // round robin: half to b
  ASSERT_NE(fleet, nullptr);
  uint64_t violations = 0;
  for (const RequestOutcome& o : rec.requests) {
    EXPECT_EQ(o.category, Category::kVision);
    if (o.instance == 1) {
      EXPECT_TRUE(o.capability_violation);
      EXPECT_EQ(o.error, RequestError::kClientError);
      ++violations;
    } else {
      EXPECT_FALSE(o.capability_violation);
    }
  }
  EXPECT_GT(violations, 80u);
  EXPECT_EQ(fleet->instance(1).totals().capability_violations, violations);
}

TEST(RoutingModelTest, ExpectationSeesLoadFaultsAndCapability) {
  InstanceOptions a = Instance("a");
  a.vision = false;
  a.input_price_per_1k = 0.001;
  ServingInstance inst(a, 0, nullptr);
  Request r;
  r.prompt_tokens = 1000;
  r.output_tokens = 100;
  Expectation idle = inst.Expect(r, 0);
  EXPECT_EQ(idle.p_ok, 1);
  EXPECT_NEAR(idle.cost_usd, 0.001, 1e-12);
  // Idle: about the prefill (1,000 x 0.65 x 0.08 ms) plus a step, then 99 steps of ~22 ms.
  EXPECT_NEAR(idle.ttft_ms, 52 + 22, 5);
  EXPECT_NEAR(idle.e2e_ms, idle.ttft_ms + 99 * 22.2, 30);
  for (uint64_t i = 0; i < 300; ++i) {
    Request x = r;
    x.id = i;
    inst.Arrive(x);  // 300 at once: 256 run, 44 wait
  }
  Expectation loaded = inst.Expect(r, 0);
  EXPECT_GT(loaded.ttft_ms, 10 * idle.ttft_ms);
  EXPECT_GT(loaded.e2e_ms, idle.e2e_ms);
  r.needs_vision = true;
  EXPECT_EQ(inst.Expect(r, 0).p_ok, 0);
  EXPECT_FALSE(inst.Expect(r, 0).capable);
}

// Records what the fleet delivers, and when.
class FeedbackRecorder final : public Router {
 public:
  std::string_view Name() const override { return "feedback_recorder"; }
  size_t Pick(const Request& r, std::span<const InstanceView>) override {
    EXPECT_GE(r.expected_output_tokens, 1u);
    return 0;
  }
  void OnOutcome(const RequestOutcome& o) override {
    ++outcomes;
    EXPECT_LT(o.quality, 0);  // not known yet
    EXPECT_DOUBLE_EQ(fleet->now_ms(), o.time_ms);
  }
  void OnGauge(const GaugeSample& g) override {
    ++gauges;
    EXPECT_DOUBLE_EQ(fleet->now_ms(), g.time_ms + 2500);
  }
  void OnQuality(const QualityFeedback& q) override {
    ++quality;
    EXPECT_DOUBLE_EQ(q.time_ms, q.completed_ms + 60'000);
    EXPECT_DOUBLE_EQ(fleet->now_ms(), q.time_ms);
    EXPECT_GE(q.quality, 0);
  }
  const Fleet* fleet = nullptr;
  int outcomes = 0, gauges = 0, quality = 0;
};

TEST(RoutingModelTest, RouterGetsOutcomesAtOnceGaugesAndSparseQualityLate) {
  FleetOptions fo;
  fo.duration_ms = 600'000;
  fo.gauge_delay_ms = 2500;
  fo.quality_feedback_fraction = 0.1;
  fo.quality_feedback_delay_ms = 60'000;
  auto router = std::make_unique<FeedbackRecorder>();
  FeedbackRecorder* seen = router.get();
  Recorder rec;
  Result<std::unique_ptr<Fleet>> fleet =
      Fleet::Create(fo, {Instance("a")}, {}, std::make_unique<PoissonArrivals>(Poisson(3)),
                    std::move(router), &rec);
  ASSERT_TRUE(fleet.ok());
  seen->fleet = fleet->get();
  (*fleet)->Run();
  EXPECT_EQ(static_cast<size_t>(seen->outcomes), rec.requests.size());
  // Gauges sampled in the last 2.5 s are not delivered yet.
  EXPECT_GT(seen->gauges, 0);
  EXPECT_LT(static_cast<size_t>(seen->gauges), rec.gauges.size());
  size_t ok_before = 0;
  for (const RequestOutcome& o : rec.requests) ok_before += o.ok() && o.time_ms < 540'000 ? 1 : 0;
  EXPECT_NEAR(seen->quality, 0.1 * static_cast<double>(ok_before),
              5 * std::sqrt(0.1 * static_cast<double>(ok_before)));
}

TEST(RoutingModelTest, DefaultFeaturesChangeNoDrawOfTheSimulation) {
  // The feature and feedback streams are separate: with and without quality feedback, the same
  // outcomes.
  Recorder a, b;
  FleetOptions fo;
  auto f1 = RunWith(&a, {Instance("a"), Instance("b")}, {}, 6, 60, fo);
  fo.quality_feedback_fraction = 0.5;
  fo.expected_output_sigma = 0;
  auto f2 = RunWith(&b, {Instance("a"), Instance("b")}, {}, 6, 60, fo);
  ASSERT_EQ(a.requests.size(), b.requests.size());
  for (size_t i = 0; i < a.requests.size(); ++i) {
    EXPECT_EQ(a.requests[i].id, b.requests[i].id);
    EXPECT_EQ(a.requests[i].e2e_ms, b.requests[i].e2e_ms);
  }
}

}  // namespace
}  // namespace inferscope::sim
