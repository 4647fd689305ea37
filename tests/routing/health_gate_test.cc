#include "routing/health_gate.h"

#include <gtest/gtest.h>

#include <random>

#include "routing/learner.h"
#include "routing_test_util.h"

namespace inferscope::routing {
namespace {

using testing::Draw;
using testing::Shares;
using testing::TrueBackend;

Outcome Ok(std::string_view backend, int64_t t) {
  Outcome o;
  o.backend = backend;
  o.model = "m";
  o.time_ms = t;
  o.ttft_ms = 100;
  o.tpot_ms = 20;
  o.e2e_ms = 4100;
  return o;
}

Outcome Fail(std::string_view backend, int64_t t, ErrorKind kind = ErrorKind::kServerError) {
  Outcome o = Ok(backend, t);
  o.error = kind;
  return o;
}

TEST(HealthGateTest, ConsecutiveErrorsEjectWithGrowingBackOff) {
  HealthGateOptions o;  // Envoy defaults: 5 errors, 30 s base
  HealthGate g;
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(g.Observe(GateVerdict::kFailure, i, true, o), HealthGate::Change::kNone);
  }
  EXPECT_EQ(g.Observe(GateVerdict::kSuccess, 4, true, o), HealthGate::Change::kNone);  // resets
  for (int i = 0; i < 4; ++i) g.Observe(GateVerdict::kFailure, 5 + i, true, o);
  EXPECT_EQ(g.Observe(GateVerdict::kFailure, 10, true, o), HealthGate::Change::kEjected);
  EXPECT_EQ(g.state(), GateState::kEjected);
  EXPECT_EQ(g.reason(), EjectReason::kConsecutiveErrors);
  EXPECT_EQ(g.ejected_until_ms(), 30'010);
  // Late outcomes of requests sent before the ejection change nothing.
  EXPECT_EQ(g.Observe(GateVerdict::kFailure, 20, true, o), HealthGate::Change::kNone);
  EXPECT_FALSE(g.Advance(30'009, o));
  EXPECT_TRUE(g.Advance(30'010, o));
  EXPECT_EQ(g.state(), GateState::kProbing);
  // A failed probe ejects again for 2 × base.
  EXPECT_EQ(g.Observe(GateVerdict::kFailure, 30'100, true, o), HealthGate::Change::kEjected);
  EXPECT_EQ(g.ejected_until_ms(), 30'100 + 60'000);
  EXPECT_EQ(g.ejections(), 2);
  g.Advance(90'100, o);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(g.Observe(GateVerdict::kSuccess, 90'200 + i, true, o), HealthGate::Change::kNone);
  }
  EXPECT_EQ(g.Observe(GateVerdict::kSuccess, 90'300, true, o), HealthGate::Change::kRecovered);
  EXPECT_EQ(g.state(), GateState::kHealthy);
  // The multiplier decreases by one per healthy interval (10 s).
  g.Advance(90'300 + 10'000, o);
  EXPECT_EQ(g.ejections(), 1);
  g.Advance(90'300 + 25'000, o);
  EXPECT_EQ(g.ejections(), 0);
}

TEST(HealthGateTest, BackOffIsCapped) {
  HealthGateOptions o;
  o.consecutive_errors = 1;
  HealthGate g;
  int64_t t = 0;
  for (int i = 0; i < 20; ++i) {
    g.Observe(GateVerdict::kFailure, t, true, o);
    ASSERT_EQ(g.state(), GateState::kEjected);
    EXPECT_LE(g.ejected_until_ms() - t, o.max_ejection_ms);
    t = g.ejected_until_ms();
    g.Advance(t, o);
  }
  EXPECT_EQ(g.ejections(), 20);
}

TEST(HealthGateTest, WhichErrorsCount) {
  EXPECT_EQ(GateVerdictOf(ErrorKind::kServerError), GateVerdict::kFailure);
  EXPECT_EQ(GateVerdictOf(ErrorKind::kTimeout), GateVerdict::kFailure);
  EXPECT_EQ(GateVerdictOf(ErrorKind::kOther), GateVerdict::kFailure);
  EXPECT_EQ(GateVerdictOf(ErrorKind::kClientError), GateVerdict::kSuccess);
  EXPECT_EQ(GateVerdictOf(ErrorKind::kRateLimited), GateVerdict::kIgnore);
  EXPECT_EQ(GateVerdictOf(ErrorKind::kCancelled), GateVerdict::kIgnore);
  HealthGateOptions o;
  HealthGate g;
  for (int i = 0; i < 100; ++i) g.Observe(GateVerdictOf(ErrorKind::kClientError), i, true, o);
  for (int i = 0; i < 100; ++i) g.Observe(GateVerdictOf(ErrorKind::kRateLimited), i, true, o);
  EXPECT_EQ(g.state(), GateState::kHealthy);
}

TEST(HealthGateTest, FailureRateBreachOverMinimumVolume) {
  HealthGateOptions o;
  o.consecutive_errors = 1000;  // only the rate
  o.failure_percentage = 50;
  o.failure_request_volume = 20;
  HealthGate g;
  // Alternating: 50 % failures, never 2 in a row. Ejected once 20 requests are in.
  int i = 0;
  for (; i < 40 && g.state() == GateState::kHealthy; ++i) {
    g.Observe(i % 2 == 0 ? GateVerdict::kSuccess : GateVerdict::kFailure, i, true, o);
  }
  EXPECT_EQ(g.state(), GateState::kEjected);
  EXPECT_EQ(g.reason(), EjectReason::kFailureRate);
  EXPECT_EQ(i, 20);
}

TEST(HealthGateTest, RefusedBeyondMaxEjectionPercent) {
  HealthGateOptions o;
  HealthGate g;
  for (int i = 0; i < 4; ++i) g.Observe(GateVerdict::kFailure, i, false, o);
  EXPECT_EQ(g.Observe(GateVerdict::kFailure, 5, false, o), HealthGate::Change::kRefused);
  EXPECT_EQ(g.state(), GateState::kHealthy);
}

RoutingOptions ThreeBackends() {
  RoutingOptions options;
  options.models.push_back({"m", {testing::Spec("a"), testing::Spec("b"), testing::Spec("c")}});
  return options;
}

TEST(LearnerGateTest, EjectedBackendGetsNoTrafficAtOnceThenProbesThenTrust) {
  RoutingOptions options = ThreeBackends();
  options.estimator.recompute_interval_ms = 1000;  // the ejection must not wait for it
  RoutingLearner learner(options);
  std::mt19937_64 rng(1);
  // a is the best backend by far.
  TrueBackend a{.name = "a", .ttft_ms = 50}, b{.name = "b", .ttft_ms = 200},
      c{.name = "c", .ttft_ms = 220};
  int64_t t = 0;
  for (; t < 300; ++t) {
    for (const TrueBackend* x : {&a, &b, &c}) learner.Observe(Draw(*x, "m", t, rng));
  }
  EXPECT_GT(Shares(learner, "m", {}, Strategy::kLowestLatency, t, 1000)["a"], 0.9);
  for (int i = 0; i < 5; ++i) learner.Observe(Fail("a", t));
  Decision d;
  const auto after = Shares(learner, "m", {}, Strategy::kLowestLatency, t, 2000);
  EXPECT_EQ(after.count("a"), 0u);
  learner.Select("m", {}, Strategy::kLowestLatency, t, &d);
  ASSERT_EQ(d.num_gated, 1u);
  EXPECT_EQ(d.gated[0].name, "a");
  EXPECT_EQ(d.gated[0].reason, EjectReason::kConsecutiveErrors);
  EXPECT_EQ(d.gated[0].until_ms, t + 30'000);
  EXPECT_NE(FormatReasoning(d).find("gated: a ejected (consecutive_errors)"), std::string::npos);
  EXPECT_EQ(learner.stats().ejections, 1u);

  // After 30 s: probing, the probe fraction (2 %) of traffic although it is the best.
  t += 30'000;
  const auto probing = Shares(learner, "m", {}, Strategy::kLowestLatency, t, 20'000);
  EXPECT_NEAR(probing.at("a"), 0.02, 0.006);
  // Three successes: trusted again, and the best again.
  for (int i = 0; i < 3; ++i) learner.Observe(Draw(a, "m", t + i, rng));
  EXPECT_EQ(learner.stats().recoveries, 1u);
  t += 100;
  for (int64_t end = t + 300; t < end; ++t) learner.Observe(Draw(a, "m", t, rng));
  EXPECT_GT(Shares(learner, "m", {}, Strategy::kLowestLatency, t, 1000)["a"], 0.8);
}

TEST(LearnerGateTest, MaxEjectionPercentAllowsAtLeastOne) {
  RoutingLearner learner(ThreeBackends());  // 10 % of 3: still one
  for (int i = 0; i < 5; ++i) learner.Observe(Fail("a", i));
  for (int i = 0; i < 5; ++i) learner.Observe(Fail("b", i));
  Decision d;
  learner.Select("m", {}, Strategy::kBalanced, 10, &d);
  EXPECT_EQ(d.num_gated, 1u);
  EXPECT_EQ(learner.stats().ejections, 1u);
  EXPECT_EQ(learner.stats().ejections_refused, 1u);
}

TEST(LearnerGateTest, PanicRoutesToAllWhenTooFewAreHealthy) {
  RoutingOptions options = ThreeBackends();
  options.gate.max_ejection_percent = 100;
  RoutingLearner learner(options);
  for (int i = 0; i < 5; ++i) learner.Observe(Fail("a", i));
  Decision d;
  learner.Select("m", {}, Strategy::kBalanced, 10, &d);
  EXPECT_FALSE(d.panic);  // 2 of 3 healthy: above 50 %
  for (int i = 0; i < 5; ++i) learner.Observe(Fail("b", i));
  const auto shares = Shares(learner, "m", {}, Strategy::kBalanced, 10, 3000);
  learner.Select("m", {}, Strategy::kBalanced, 10, &d);
  EXPECT_TRUE(d.panic);  // 1 of 3: below 50 %, the gate is ignored
  EXPECT_EQ(d.num_gated, 0u);
  EXPECT_GT(shares.count("a") + shares.count("b"), 0u);
  EXPECT_NE(FormatReasoning(d).find("panic"), std::string::npos);
}

}  // namespace
}  // namespace inferscope::routing
