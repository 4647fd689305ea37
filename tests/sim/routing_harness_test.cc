// The routing evaluation harness (bench/routing/): the metric definitions (regret, unhealthy
// sends and detection, calibration), the oracle and the policy registry, on real runs of the
// serving model.

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench/routing/harness.h"
#include "bench/routing/metrics.h"
#include "bench/routing/registry.h"
#include "tests/test_util.h"

namespace inferscope::bench::routing {
namespace {

Scenario Find(const std::string& name) {
  for (Scenario& s : Scenarios()) {
    if (s.name == name) return s;
  }
  ADD_FAILURE() << "no scenario " << name;
  return {};
}

RunOptions Short() {
  RunOptions o;
  o.duration_scale = 0.1;  // 90 s of each scenario
  return o;
}

// Always the candidate named `name`.
class Always final : public sim::Router {
 public:
  explicit Always(std::string name) : name_(std::move(name)) {}
  std::string_view Name() const override { return "always"; }
  size_t Pick(const sim::Request&, std::span<const sim::InstanceView> c) override {
    for (size_t i = 0; i < c.size(); ++i) {
      if (c[i].name == name_) return i;
    }
    return 0;
  }

 private:
  std::string name_;
};

TEST(RoutingHarnessTest, OracleHasZeroRegretAndOthersDoNot) {
  Scenario s = Find("failure");
  s.faults[0].start_ms = 30'000;  // within the short run
  s.faults[0].end_ms = 60'000;
  Result<PolicyMetrics> oracle = RunPolicy(s, "oracle", Short());
  ASSERT_TRUE(oracle.ok()) << oracle.status().ToString();
  EXPECT_GT(oracle->decisions, 500u);
  EXPECT_EQ(oracle->mean_regret, 0);
  EXPECT_EQ(oracle->unhealthy_fraction, 0);
  EXPECT_TRUE(std::isnan(oracle->ece));  // reports no confidence
  Result<PolicyMetrics> rr = RunPolicy(s, "round_robin", Short());
  ASSERT_TRUE(rr.ok());
  EXPECT_GT(rr->mean_regret, 0.05);
  EXPECT_NEAR(rr->unhealthy_fraction, 0.25, 0.01);  // one of four, in turn
  EXPECT_EQ(rr->undetected, 1u);
  EXPECT_GT(oracle->success_rate, rr->success_rate);
}

TEST(RoutingHarnessTest, AlwaysPickingADownBackendIsUnhealthyFractionOne) {
  Scenario s = Find("failure");
  s.faults[0].start_ms = 0;
  s.faults[0].end_ms = 1e9;
  Result<PolicyMetrics> m = RunRouter(s, std::make_unique<Always>("a-fast"), nullptr, Short());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->unhealthy_fraction, 1);
  EXPECT_EQ(m->unhealthy_before, 1);
  EXPECT_TRUE(std::isnan(m->unhealthy_after));
  EXPECT_EQ(m->episodes, 1u);
  EXPECT_EQ(m->undetected, 1u);
  EXPECT_EQ(m->success_rate, 0);
  EXPECT_GT(m->mean_regret, 0.5);
}

TEST(RoutingHarnessTest, AvoidingTheFailingBackendIsDetectedAtOnce) {
  Scenario s = Find("failure");
  s.faults[0].start_ms = 30'000;
  s.faults[0].end_ms = 60'000;
  Result<PolicyMetrics> m = RunRouter(s, std::make_unique<Always>("b-mid"), nullptr, Short());
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->unhealthy_fraction, 0);
  EXPECT_EQ(m->unhealthy_after, 0);
  EXPECT_EQ(m->episodes, 1u);
  EXPECT_EQ(m->undetected, 0u);
  EXPECT_EQ(m->shift_ms, 0);
}

TEST(RoutingHarnessTest, ScorerDetectionSplitsBeforeAndAfter) {
  Scorer::Options o;
  o.window = 4;
  o.detect_share = 0.25;
  Scorer scorer(o);
  const uint32_t candidates[] = {0, 1};
  const uint8_t failing[] = {1, 0};
  // 4 sends to the failing backend, then 6 elsewhere: the window [1, 0, 0, 0] (share 1/4) is the
  // first that qualifies; it starts at the 4th decision (t = 3).
  for (int t = 0; t < 10; ++t) {
    scorer.OnDecision(t, candidates, failing, failing, t < 4 ? 0 : 1, 0, true, -1);
  }
  PolicyMetrics m = scorer.Finish();
  EXPECT_DOUBLE_EQ(m.failing_after, 1.0 / 7);  // the wider definition, the same flags here
  EXPECT_EQ(m.episodes, 1u);
  EXPECT_EQ(m.undetected, 0u);
  EXPECT_DOUBLE_EQ(m.shift_ms, 3);
  EXPECT_DOUBLE_EQ(m.unhealthy_before, 1);       // 3 of 3
  EXPECT_DOUBLE_EQ(m.unhealthy_after, 1.0 / 7);  // 1 of 7
  EXPECT_DOUBLE_EQ(m.unhealthy_fraction, 0.4);   // 4 of 10
}

TEST(RoutingHarnessTest, ScorerKeepsTheTwoDefinitionsApart) {
  Scorer::Options o;
  o.window = 4;
  o.detect_share = 0.25;
  Scorer scorer(o);
  const uint32_t candidates[] = {0, 1};
  const uint8_t unhealthy[] = {0, 0};  // e.g. a brownout: failing, not unhealthy
  const uint8_t failing[] = {1, 0};
  for (int t = 0; t < 10; ++t) {
    scorer.OnDecision(t, candidates, unhealthy, failing, t < 4 ? 0 : 1, 0, true, -1);
  }
  PolicyMetrics m = scorer.Finish();
  EXPECT_EQ(m.episodes, 0u);
  EXPECT_TRUE(std::isnan(m.unhealthy_fraction));
  EXPECT_TRUE(std::isnan(m.unhealthy_after));
  EXPECT_DOUBLE_EQ(m.failing_before, 1);
  EXPECT_DOUBLE_EQ(m.failing_after, 1.0 / 7);
  EXPECT_DOUBLE_EQ(m.failing_fraction, 0.4);
}

TEST(RoutingHarnessTest, CalibratedReporterHasEceNearZero) {
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<double> conf;
  std::vector<uint8_t> correct, overconfident;
  for (int i = 0; i < 200'000; ++i) {
    const double c = u(rng);
    conf.push_back(c);
    correct.push_back(u(rng) < c ? 1 : 0);          // right with probability c
    overconfident.push_back(u(rng) < 0.5 ? 1 : 0);  // right half the time whatever it says
  }
  EXPECT_LT(ExpectedCalibrationError(conf, correct), 0.01);
  // |0.5 - c| averaged over uniform c: 0.25.
  EXPECT_NEAR(ExpectedCalibrationError(conf, overconfident), 0.25, 0.01);
  EXPECT_EQ(ExpectedCalibrationError({}, {}), 0);
}

TEST(RoutingHarnessTest, VisionViolationsAreCounted) {
  Scenario s = Find("vision");
  Result<PolicyMetrics> rr = RunPolicy(s, "round_robin", Short());
  Result<PolicyMetrics> oracle = RunPolicy(s, "oracle", Short());
  ASSERT_TRUE(rr.ok() && oracle.ok());
  EXPECT_GT(rr->capability_violations, 50u);  // ~20 % vision x half to c and d
  EXPECT_EQ(oracle->capability_violations, 0u);
}

TEST(RoutingHarnessTest, InferscopeFollowsAFailureWithoutViolationsAndReportsConfidence) {
  // The learner policy (learner_policy.h): a down backend, vision requests only two backends
  // serve. It stops sending to the down one (detected, nothing sent after detection: the probes
  // wait for its gauges), never sends a vision request to a backend without vision, reports a
  // confidence, and beats round robin.
  Scenario s = Find("vision");
  s.faults[0].start_ms = 20'000;
  s.faults[0].end_ms = 70'000;
  Result<PolicyMetrics> m = RunPolicy(s, "inferscope", Short());
  Result<PolicyMetrics> rr = RunPolicy(s, "round_robin", Short());
  ASSERT_TRUE(m.ok() && rr.ok());
  EXPECT_EQ(m->capability_violations, 0u);
  EXPECT_EQ(m->episodes, 1u);
  EXPECT_EQ(m->undetected, 0u);
  EXPECT_EQ(m->unhealthy_after, 0);
  EXPECT_FALSE(std::isnan(m->ece));
  EXPECT_LT(m->ece, 0.15);
  EXPECT_LT(m->mean_regret, rr->mean_regret);
  EXPECT_GT(m->success_rate, rr->success_rate);
}

TEST(RoutingHarnessTest, TheDecisionsDumpHoldsEveryConfidentDecisionAndItsLabel) {
  // RunOptions::decisions_path (INFERSCOPE_ROUTING_DECISIONS in routing_eval): the learner's
  // decisions are appended one per line, with the label the ECE uses; a policy without a
  // confidence adds nothing; the ECE recomputed from the file is the scorer's.
  testing::TempDir dir;
  RunOptions o = Short();
  o.decisions_path = dir.str() + "/decisions.csv";
  const Scenario s = Find("flapping");
  Result<PolicyMetrics> m = RunPolicy(s, "inferscope", o);
  Result<PolicyMetrics> rr = RunPolicy(s, "round_robin", o);
  ASSERT_TRUE(m.ok() && rr.ok());
  std::ifstream in(o.decisions_path);
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_EQ(line, "scenario,arrivals,policy,seed,time_ms,confidence,chosen,best,correct");
  std::vector<double> confidence;
  std::vector<uint8_t> correct;
  size_t wrong_label = 0, correct_but_not_best = 0;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    ASSERT_EQ(f.size(), 9u) << line;
    wrong_label += f[0] != "flapping" || f[1] != "synthetic" || f[2] != "inferscope" || f[3] != "1";
    confidence.push_back(std::stod(f[5]));
    correct.push_back(f[8] == "1" ? 1 : 0);
    correct_but_not_best += f[8] == "1" && f[6] != f[7] ? 1 : 0;
  }
  EXPECT_EQ(wrong_label, 0u);
  EXPECT_EQ(confidence.size(), m->decisions);
  EXPECT_LE(correct_but_not_best, confidence.size() / 100);  // ties only
  EXPECT_NEAR(ExpectedCalibrationError(confidence, correct), m->ece, 1e-4);
  // Off by default: no file named, nothing written.
  RunOptions off = Short();
  EXPECT_TRUE(off.decisions_path.empty());
  // A file that cannot be opened is an error, not a silent skip.
  o.decisions_path = dir.str() + "/no/such/dir/decisions.csv";
  Result<PolicyMetrics> bad = RunPolicy(s, "inferscope", o);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().ToString().find("decisions file"), std::string::npos);
}

TEST(RoutingHarnessTest, EveryPolicyRunsAndTheRunIsDeterministic) {
  Scenario s = Find("brownout");
  s.faults[0].start_ms = 30'000;
  s.faults[0].end_ms = 60'000;
  for (const PolicyInfo& p : Policies()) {
    Result<PolicyMetrics> a = RunPolicy(s, p.name, Short());
    Result<PolicyMetrics> b = RunPolicy(s, p.name, Short());
    ASSERT_TRUE(a.ok() && b.ok()) << p.name;
    EXPECT_GT(a->decisions, 500u) << p.name;
    EXPECT_EQ(a->decisions, b->decisions) << p.name;
    EXPECT_EQ(a->mean_regret, b->mean_regret) << p.name;
    EXPECT_EQ(a->e2e_p95_ms, b->e2e_p95_ms) << p.name;
  }
  EXPECT_FALSE(MakePolicy("nope", PolicyContext{}).ok());
  EXPECT_FALSE(MakePolicy("oracle", PolicyContext{}).ok());  // needs the utility
  EXPECT_FALSE(MakePolicy("oracle_late_quality", PolicyContext{}).ok());
}

// The oracle that sees quality only as late as the feedback: perfect (regret 0, ECE 0 at
// confidence 1) while nothing changes unseen, wrong for as long as a quality regression is
// hidden by the feedback's delay — the calibration a router can reach there without expecting
// the change.
TEST(RoutingHarnessTest, TheLateQualityOracleIsWrongOnlyWhileARegressionIsUnseen) {
  RunOptions o = Short();
  o.quality_delay_ms = 30'000;
  Scenario s = Find("quality_regression");
  s.faults[0].start_ms = 300'000;  // after the short run: nothing changes
  Result<PolicyMetrics> steady = RunPolicy(s, "oracle_late_quality", o);
  ASSERT_TRUE(steady.ok()) << steady.status().ToString();
  EXPECT_EQ(steady->mean_regret, 0);
  EXPECT_EQ(steady->ece, 0);

  s.faults[0].start_ms = 30'000;  // a-fast (the best) regresses; feedback shows it from 60 s
  Result<PolicyMetrics> late = RunPolicy(s, "oracle_late_quality", o);
  Result<PolicyMetrics> now = RunPolicy(s, "oracle", o);
  ASSERT_TRUE(late.ok() && now.ok());
  EXPECT_EQ(now->mean_regret, 0);
  EXPECT_GT(late->mean_regret, 0);
  // Wrong on most decisions of the 30 s of 90 in which a-fast is worse than the feedback says,
  // at confidence 1: ECE = its error rate.
  EXPECT_GT(late->ece, 0.15);
  EXPECT_LT(late->ece, 1.0 / 3);

  o.quality_delay_ms = 0;  // no lag: the oracle itself, no confidence
  Result<PolicyMetrics> prompt = RunPolicy(s, "oracle_late_quality", o);
  ASSERT_TRUE(prompt.ok());
  EXPECT_EQ(prompt->mean_regret, 0);
  EXPECT_TRUE(std::isnan(prompt->ece));
}

TEST(RoutingHarnessTest, TraceArrivalsReachTheTargetRate) {
  std::vector<sim::TraceRecord> trace;
  for (int i = 0; i < 2000; ++i) {
    sim::TraceRecord r;
    r.time_us = static_cast<int64_t>(i) * 500'000;  // 2 req/s
    r.context_tokens = 800;
    r.generated_tokens = 100;
    trace.push_back(r);
  }
  RunOptions o = Short();
  o.arrivals = ArrivalKind::kTrace;
  o.trace = &trace;
  Scenario s = Find("herding");
  s.rate_per_s = 10;
  Result<PolicyMetrics> m = RunPolicy(s, "least_busy", o);
  ASSERT_TRUE(m.ok());
  EXPECT_NEAR(static_cast<double>(m->decisions), 10 * 90, 2);  // 90 s at 10 req/s
}

}  // namespace
}  // namespace inferscope::bench::routing
