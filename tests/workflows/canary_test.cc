#include "workflows/canary.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace inferscope {
namespace {

// One simulated canary: an instance and three peers, lognormal latencies (σ = 0.5) around a
// median of 200 ms. `effect` multiplies the instance's latencies after the change, `drift` every
// instance's (a fleet-wide load swing during the canary). Looks at 10 evenly spaced fractions.
struct CanaryRun {
  CanaryEvidence last;
  int looks = 0;
};
CanaryRun Simulate(uint64_t seed, double effect, double drift, bool peers, int per_look = 60,
                   int before_n = 600, const CanaryOptions& options = {}) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0, 0.5);
  auto draw = [&](double median) { return median * std::exp(normal(rng)); };
  DDSketch before, after, peers_before, peers_after;
  for (int i = 0; i < before_n; ++i) {
    before.Add(draw(200));
    for (int p = 0; p < 3; ++p) peers_before.Add(draw(200));
  }
  CanaryRun run;
  for (int look = 1; look <= 10; ++look) {
    for (int i = 0; i < per_look; ++i) {
      after.Add(draw(200 * effect * drift));
      for (int p = 0; p < 3; ++p) peers_after.Add(draw(200 * drift));
    }
    CanarySamples s{&before, &after, peers ? &peers_before : nullptr,
                    peers ? &peers_after : nullptr};
    Result<CanaryEvidence> e = JudgeCanary(s, look / 10.0, /*lower_is_better=*/true, options);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    run.last = *e;
    run.looks = look;
    if (e->verdict != CanaryVerdict::kContinue) break;
  }
  return run;
}

TEST(CanaryTest, AClearImprovementOrRegressionStopsEarly) {
  for (bool peers : {false, true}) {
    CanaryRun better = Simulate(1, 0.7, 1.0, peers);
    EXPECT_EQ(better.last.verdict, CanaryVerdict::kImproved) << peers;
    EXPECT_LT(better.looks, 10) << "a 30 % improvement does not wait for the full period";
    EXPECT_LT(better.last.ratio, 0.85);
    EXPECT_LT(better.last.z, -better.last.boundary);
    CanaryRun worse = Simulate(2, 1.4, 1.0, peers);
    EXPECT_EQ(worse.last.verdict, CanaryVerdict::kRegressed) << peers;
    EXPECT_LT(worse.looks, 10);
    EXPECT_GT(worse.last.ratio, 1.2);
    EXPECT_EQ(worse.last.peer_adjusted, peers);
  }
}

TEST(CanaryTest, WrongVerdictsOnNeutralChangesStayBelowAlphaPerDirection) {
  // 400 neutral canaries, 10 looks each: a verdict either way is wrong. alpha (5 %) bounds each
  // direction; 24 of 400 is 5 % plus one binomial standard deviation of slack.
  for (bool peers : {false, true}) {
    int improved = 0, regressed = 0, no_effect = 0;
    for (uint64_t seed = 0; seed < 400; ++seed) {
      CanaryRun r = Simulate(1000 + seed, 1.0, 1.0, peers);
      improved += r.last.verdict == CanaryVerdict::kImproved ? 1 : 0;
      regressed += r.last.verdict == CanaryVerdict::kRegressed ? 1 : 0;
      no_effect += r.last.verdict == CanaryVerdict::kNoEffect ? 1 : 0;
    }
    EXPECT_LE(improved, 24) << "peers: " << peers;
    EXPECT_LE(regressed, 24) << "peers: " << peers;
    EXPECT_EQ(improved + regressed + no_effect, 400);
  }
}

TEST(CanaryTest, PeersKeepAFleetWideSwingFromPassingForTheChange) {
  // Load rises 40 % on every instance during the canary; the change itself does nothing.
  int blamed_alone = 0, blamed_with_peers = 0;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    blamed_alone += Simulate(seed, 1.0, 1.4, false).last.verdict == CanaryVerdict::kRegressed;
    blamed_with_peers += Simulate(seed, 1.0, 1.4, true).last.verdict == CanaryVerdict::kRegressed;
  }
  EXPECT_GE(blamed_alone, 45) << "before/after alone sees the swing";
  EXPECT_LE(blamed_with_peers, 3);
  // And a real improvement still shows through the swing.
  CanaryRun helped = Simulate(77, 0.7, 1.4, true);
  EXPECT_EQ(helped.last.verdict, CanaryVerdict::kImproved);
  EXPECT_NEAR(helped.last.ratio, 0.7, 0.1);
}

TEST(CanaryTest, ASignificantButTinyChangeIsNoEffect) {
  // 2 % slower with lots of data: significant, but below min_effect (5 %).
  CanaryOptions options;
  CanaryRun tiny = Simulate(5, 1.02, 1.0, false, /*per_look=*/3000, /*before_n=*/30000, options);
  EXPECT_EQ(tiny.last.verdict, CanaryVerdict::kNoEffect);
  EXPECT_GT(std::abs(tiny.last.z), tiny.last.boundary) << "the test itself does see it";
  options.min_effect = 0.01;
  CanaryRun counted = Simulate(5, 1.02, 1.0, false, 3000, 30000, options);
  EXPECT_EQ(counted.last.verdict, CanaryVerdict::kRegressed);
}

TEST(CanaryTest, TooFewSamplesWaitThenEndWithoutEffect) {
  CanaryOptions options;
  options.min_samples = 1000;
  DDSketch before, after;
  for (int i = 0; i < 500; ++i) {
    before.Add(100);
    after.Add(300);
  }
  CanarySamples s{&before, &after, nullptr, nullptr};
  Result<CanaryEvidence> mid = JudgeCanary(s, 0.5, true, options);
  ASSERT_TRUE(mid.ok());
  EXPECT_EQ(mid->verdict, CanaryVerdict::kContinue);
  Result<CanaryEvidence> end = JudgeCanary(s, 1.0, true, options);
  ASSERT_TRUE(end.ok());
  EXPECT_EQ(end->verdict, CanaryVerdict::kNoEffect);
  // Higher is better (throughput): the same move is an improvement.
  options.min_samples = 100;
  Result<CanaryEvidence> up = JudgeCanary(s, 0.5, /*lower_is_better=*/false, options);
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(up->verdict, CanaryVerdict::kImproved);
}

TEST(CanaryTest, RefusesIncompleteInputAndBadOptions) {
  DDSketch a, b;
  a.Add(1);
  b.Add(2);
  EXPECT_FALSE(JudgeCanary({&a, nullptr, nullptr, nullptr}, 1, true, {}).ok());
  EXPECT_FALSE(JudgeCanary({&a, &b, &a, nullptr}, 1, true, {}).ok());
  CanaryOptions bad;
  bad.alpha = 0.7;
  EXPECT_FALSE(JudgeCanary({&a, &b, nullptr, nullptr}, 1, true, bad).ok());
  bad = {};
  bad.quantile = 1;
  EXPECT_FALSE(bad.Validate().ok());
}

TEST(CanaryTest, NormalQuantileInvertsTheTail) {
  for (double p : {1e-10, 0.001, 0.025, 0.3, 0.5, 0.9, 0.975, 0.999999}) {
    EXPECT_NEAR(NormalUpperTail(-NormalQuantile(p)), p, p * 1e-9) << p;
  }
  EXPECT_NEAR(NormalQuantile(0.975), 1.959963984540054, 1e-12);
}

// JudgeCanaryRaw is JudgeCanary's method on raw values: on values whose sketch bins are exact
// (each value in a bin of its own, quantiles the values themselves) the two give the same
// statistic and verdict; on continuous data the same verdict for a clear effect.
TEST(CanaryTest, RawSamplesAreJudgedByTheSameMethod) {
  auto sorted = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  auto sketch = [](const std::vector<double>& v) {
    DDSketch s;
    for (double x : v) s.Add(x);
    return s;
  };
  // Powers of 1.05 lie in distinct 2 % bins, each represented by a value within 1 %: the bins
  // order the values exactly, so the rank statistics agree to rounding.
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<int> exponent(0, 60);
  auto draw = [&](int n, int shift) {
    std::vector<double> v;
    for (int i = 0; i < n; ++i) v.push_back(std::pow(1.05, exponent(rng) + shift) * 100);
    return sorted(v);
  };
  const std::vector<double> before = draw(300, 0), after = draw(200, 6);
  const std::vector<double> peers_before = draw(900, 0), peers_after = draw(600, 0);
  const DDSketch sb = sketch(before), sa = sketch(after), spb = sketch(peers_before),
                 spa = sketch(peers_after);
  for (bool peers : {false, true}) {
    RawCanarySamples raw{
        before, after, peers ? std::span<const double>(peers_before) : std::span<const double>(),
        peers ? std::span<const double>(peers_after) : std::span<const double>(), peers};
    CanarySamples sk{&sb, &sa, peers ? &spb : nullptr, peers ? &spa : nullptr};
    Result<CanaryEvidence> r = JudgeCanaryRaw(raw, 0.5, true, {});
    Result<CanaryEvidence> s = JudgeCanary(sk, 0.5, true, {});
    ASSERT_TRUE(r.ok() && s.ok()) << r.status().ToString() << s.status().ToString();
    EXPECT_EQ(r->verdict, CanaryVerdict::kRegressed) << peers;
    EXPECT_EQ(s->verdict, r->verdict) << peers;
    EXPECT_EQ(r->peer_adjusted, peers);
    EXPECT_NEAR(s->z, r->z, 1e-6 * std::abs(r->z)) << peers;
    EXPECT_NEAR(s->ratio, r->ratio, 0.03) << "quantiles within the sketch's accuracy";
    EXPECT_EQ(r->n_before, before.size());
  }
  // Continuous data: a 30 % improvement is found by both.
  std::lognormal_distribution<double> base(std::log(200), 0.4), better(std::log(140), 0.4);
  std::vector<double> b2, a2;
  for (int i = 0; i < 400; ++i) b2.push_back(base(rng));
  for (int i = 0; i < 200; ++i) a2.push_back(better(rng));
  b2 = sorted(b2);
  a2 = sorted(a2);
  const DDSketch sb2 = sketch(b2), sa2 = sketch(a2);
  Result<CanaryEvidence> r = JudgeCanaryRaw({b2, a2, {}, {}, false}, 0.3, true, {});
  Result<CanaryEvidence> s = JudgeCanary({&sb2, &sa2, nullptr, nullptr}, 0.3, true, {});
  ASSERT_TRUE(r.ok() && s.ok());
  EXPECT_EQ(r->verdict, CanaryVerdict::kImproved);
  EXPECT_EQ(s->verdict, CanaryVerdict::kImproved);
  EXPECT_NEAR(s->z, r->z, 0.1);
  // Unsorted raw samples are refused; too few values continue.
  const std::vector<double> unsorted = {3, 1, 2};
  EXPECT_FALSE(JudgeCanaryRaw({unsorted, a2, {}, {}, false}, 0.5, true, {}).ok());
  Result<CanaryEvidence> few = JudgeCanaryRaw({b2, {}, {}, {}, false}, 0.5, true, {});
  ASSERT_TRUE(few.ok());
  EXPECT_EQ(few->verdict, CanaryVerdict::kContinue);
}

// Values that come in pane-sized clusters (every request of a pane on the instance shares a
// random slowdown, as a burst or a queueing episode makes them) break the rank test's
// independence: neutral canaries then roll back far more often than alpha. The dispersion
// estimated on the baseline's panes (DispersionOf) brings the rate back under alpha per direction.
TEST(CanaryTest, BaselineDispersionKeepsClusteredNeutralCanariesCalibrated) {
  EXPECT_EQ(DispersionOf(std::vector<double>{3, -3}), 1.0) << "too few panes";
  std::mt19937_64 rng(17);
  std::normal_distribution<double> normal(0, 1);
  std::vector<double> independent(200);
  for (double& z : independent) z = normal(rng);
  EXPECT_NEAR(DispersionOf(independent), 1.0, 0.25);
  constexpr int kPanes = 30, kPerPane = 15, kCanaries = 150;
  int wrong_plain = 0, wrong_adjusted = 0;
  for (int c = 0; c < kCanaries; ++c) {
    DDSketch before, peers_before;
    std::vector<DDSketch> after_panes, peer_after_panes;
    std::vector<double> pane_z;
    auto pane = [&](DDSketch* inst, DDSketch* peers) {
      const double cluster = 0.4 * normal(rng);  // the instance's pane shares it
      DDSketch pi, pp;
      for (int i = 0; i < kPerPane; ++i) pi.Add(200 * std::exp(0.3 * normal(rng) + cluster));
      for (int i = 0; i < 3 * kPerPane; ++i) {
        pp.Add(200 * std::exp(0.3 * normal(rng) + 0.4 / std::sqrt(3.0) * normal(rng)));
      }
      EXPECT_TRUE(inst->Merge(pi).ok() && peers->Merge(pp).ok());
      return CompareSketches(pi, pp)->z;
    };
    for (int p = 0; p < kPanes; ++p) pane_z.push_back(pane(&before, &peers_before));
    const double dispersion = DispersionOf(pane_z);
    EXPECT_GT(dispersion, 1.0);
    DDSketch after, peers_after;
    bool plain_done = false, adjusted_done = false;
    for (int look = 1; look <= kPanes; ++look) {
      pane(&after, &peers_after);
      for (bool adjusted : {false, true}) {
        bool& done = adjusted ? adjusted_done : plain_done;
        if (done) continue;
        CanarySamples s{&before, &after, &peers_before, &peers_after, adjusted ? dispersion : 1};
        Result<CanaryEvidence> e =
            JudgeCanary(s, static_cast<double>(look) / kPanes, true, {.min_samples = 50});
        ASSERT_TRUE(e.ok());
        if (e->verdict == CanaryVerdict::kContinue) continue;
        done = true;
        if (e->verdict == CanaryVerdict::kRegressed) ++(adjusted ? wrong_adjusted : wrong_plain);
        if (adjusted) {
          EXPECT_DOUBLE_EQ(e->dispersion, dispersion);
        }
      }
    }
  }
  std::printf("[canary] clustered neutral canaries: %d/%d regressed plain, %d adjusted\n",
              wrong_plain, kCanaries, wrong_adjusted);
  EXPECT_GT(wrong_plain, kCanaries * 0.1) << "the clusters do break the plain test";
  EXPECT_LE(wrong_adjusted, kCanaries * 0.05 + 3);
}

}  // namespace
}  // namespace inferscope
