#include "operators/detectors.h"

#include <cmath>
#include <limits>
#include <numbers>
#include <random>
#include <vector>

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "bench/anomaly_harness.h"

namespace inferscope {
namespace {

constexpr int64_t kStepMs = 60'000;
constexpr int64_t kT0 = 1'700'000'000'000;

// Gaussian noise around `level` (sd 1), fixed seed.
std::vector<double> Noise(size_t n, uint64_t seed, double level = 100) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0, 1);
  std::vector<double> v(n);
  for (double& x : v) x = level + normal(rng);
  return v;
}

struct Alert {
  int64_t index = -1;
  AnomalyType type = AnomalyType::kNone;
};

// Runs the detector; returns every rising edge to >= warning at or after `from`.
std::vector<Alert> Alerts(SeriesDetector& d, const std::vector<double>& v, size_t from = 0) {
  std::vector<Alert> alerts;
  bool was = false;
  for (size_t i = 0; i < v.size(); ++i) {
    const Verdict verdict = d.Observe(kT0 + static_cast<int64_t>(i) * kStepMs, v[i]);
    const bool alerting = verdict.severity >= Severity::kWarning;
    if (alerting && !was && i >= from) alerts.push_back({static_cast<int64_t>(i), verdict.type});
    was = alerting;
  }
  return alerts;
}

TEST(DetectorsTest, EvidenceToScoreIsMonotoneAndAnchored) {
  EXPECT_DOUBLE_EQ(EvidenceToScore(0), 0);
  EXPECT_NEAR(EvidenceToScore(1), 0.7, 1e-12);
  EXPECT_LT(EvidenceToScore(1.2), EvidenceToScore(1.3));
  EXPECT_LE(EvidenceToScore(100), 1.0);
  DetectorOptions o;
  EXPECT_EQ(SeverityOf(0.69, o), Severity::kInfo);
  EXPECT_EQ(SeverityOf(0.7, o), Severity::kWarning);
  EXPECT_EQ(SeverityOf(0.9, o), Severity::kCritical);
  EXPECT_EQ(SeverityOf(0.99, o), Severity::kEmergency);
  EXPECT_EQ(SeverityOf(0.1, o), Severity::kNone);
}

// SeriesDetector decides the severity from the evidence and computes the score afterwards: the
// decision must be the one of the computed score, also right at the thresholds (default and
// unusual ones, up to an emergency threshold of 1).
TEST(DetectorsTest, SeverityOfEvidenceIsTheSeverityOfTheScore) {
  DetectorOptions unusual;
  unusual.info = 1e-12;
  unusual.warning = 0.3;
  unusual.critical = 0.999999;
  unusual.emergency = 1.0;
  for (const DetectorOptions& options : {DetectorOptions{}, unusual}) {
    const PreparedDetectorOptions prepared(options);
    std::vector<double> evidence = {0.0,
                                    -1.0,
                                    1e-300,
                                    1.0,
                                    5.0,
                                    64.0,
                                    1e300,
                                    std::numeric_limits<double>::infinity(),
                                    std::numeric_limits<double>::quiet_NaN()};
    for (double t : {options.info, options.warning, options.critical, options.emergency}) {
      // The evidence at which the score reaches t, and its neighbours down to the last bits.
      double lo = 0, hi = 64;
      for (int i = 0; i < 200; ++i) {
        const double mid = lo + (hi - lo) / 2;
        (EvidenceToScore(mid) >= t ? hi : lo) = mid;
      }
      double e = hi;
      for (int i = 0; i < 64; ++i) e = std::nextafter(e, 0.0);
      for (int i = 0; i < 128; ++i, e = std::nextafter(e, 100.0)) evidence.push_back(e);
      for (double f = 0.999; f < 1.001; f += 1e-5) evidence.push_back(hi * f);
    }
    std::mt19937_64 rng(5);
    std::uniform_real_distribution<double> u(0, 4);
    for (int i = 0; i < 20000; ++i) evidence.push_back(u(rng));
    for (double e : evidence) {
      ASSERT_EQ(SeverityOfEvidence(e, prepared), SeverityOf(EvidenceToScore(e), options))
          << "evidence " << e;
    }
  }
  // The thresholds are reached: a score of exactly 0.7 at evidence 1 is a warning.
  EXPECT_EQ(SeverityOfEvidence(1.0, PreparedDetectorOptions(DetectorOptions{})),
            SeverityOf(EvidenceToScore(1.0), DetectorOptions{}));
}

TEST(SpikeDetectorTest, FlagsATenSigmaSpikeAndDipAtOnce) {
  std::vector<double> v = Noise(1500, 1);
  v[700] += 10;
  v[1100] -= 10;
  SeriesDetector d{DetectorOptions{}};
  std::vector<Alert> alerts = Alerts(d, v);
  ASSERT_EQ(alerts.size(), 2u);
  EXPECT_EQ(alerts[0].index, 700);
  EXPECT_EQ(alerts[0].type, AnomalyType::kSpike);
  EXPECT_EQ(alerts[1].index, 1100);
  EXPECT_EQ(alerts[1].type, AnomalyType::kDip);
}

TEST(SpikeDetectorTest, ScaleIsRobustToOutliers) {
  DetectorOptions o;
  SpikeDetector s(o);
  std::vector<double> v = Noise(2000, 2, 0);
  for (size_t i = 0; i < v.size(); ++i) {
    const double r = i % 100 == 50 ? 50.0 : v[i];  // 1% gross outliers
    s.Learn(r, i < 30, s.Score(r).evidence >= 1);
  }
  EXPECT_NEAR(s.scale(), 1.0, 0.2);
}

TEST(ChangePointDetectorTest, LevelShiftDetectedWithinFivePoints) {
  std::vector<double> v = Noise(1500, 3);
  for (size_t i = 800; i < v.size(); ++i) v[i] += 4.5;  // below the spike threshold
  SeriesDetector d{DetectorOptions{}};
  std::vector<Alert> alerts = Alerts(d, v);
  ASSERT_FALSE(alerts.empty());
  EXPECT_GE(alerts[0].index, 800);
  EXPECT_LE(alerts[0].index, 805);
  EXPECT_EQ(alerts[0].type, AnomalyType::kLevelShift);
  // Re-baselined: nothing more after the shift has been absorbed.
  for (size_t i = 1; i < alerts.size(); ++i) EXPECT_LT(alerts[i].index, 830);
  EXPECT_NEAR(d.level(), 104.5, 0.5);
}

TEST(ChangePointDetectorTest, SlowDriftCaughtLongBeforeAStaticThreshold) {
  std::vector<double> v = Noise(2000, 4);
  const double slope = 0.03;  // sd per point: 5 sd are reached after 167 points
  for (size_t i = 800; i < v.size(); ++i) v[i] += slope * static_cast<double>(i - 800);
  SeriesDetector d{DetectorOptions{}};
  std::vector<Alert> alerts = Alerts(d, v);
  ASSERT_FALSE(alerts.empty());
  EXPECT_GE(alerts[0].index, 800);
  EXPECT_LT(alerts[0].index, 800 + 120);  // a static 5-sd threshold fires at ~967
  EXPECT_EQ(alerts[0].type, AnomalyType::kDrift);
}

// A pattern with period 48, amplitude 6 sd.
std::vector<double> Seasonal(size_t n, uint64_t seed) {
  std::vector<double> v = Noise(n, seed);
  for (size_t i = 0; i < n; ++i) v[i] += 6 * std::sin(2 * std::numbers::pi * double(i) / 48);
  return v;
}

TEST(SeasonalBaselineTest, CleanSeasonalSeriesRaisesNothingAfterWarmup) {
  DetectorOptions o;
  o.season_points = 48;
  SeriesDetector d(o);
  std::vector<Alert> alerts = Alerts(d, Seasonal(10'000, 5));
  EXPECT_TRUE(alerts.empty()) << "first alert at " << alerts[0].index;
  EXPECT_FALSE(d.warming_up());
}

TEST(SeasonalBaselineTest, BreakOfThePatternDetectedWithinAPeriod) {
  DetectorOptions o;
  o.season_points = 48;
  SeriesDetector d(o);
  std::vector<double> v = Seasonal(3000, 6);
  for (size_t i = 2000; i < 2048; ++i) v[i] -= 6 * std::sin(2 * std::numbers::pi * double(i) / 48);
  std::vector<Alert> alerts = Alerts(d, v);
  ASSERT_FALSE(alerts.empty());
  EXPECT_GE(alerts[0].index, 2000);
  EXPECT_LT(alerts[0].index, 2048);
  // The break CUSUM sees it too (at info or above within the period). Since the CUSUM tail
  // margins (issue 10) the alerts of this particular vanished pattern are reported as level
  // shifts first: the break evidence reaches 0.6, not warning (type attribution is informative,
  // see docs/DETECTORS.md; the harness's seasonal-break type match is 0.86).
  SeriesDetector again(o);
  bool saw_break = false;
  for (size_t i = 0; i < v.size(); ++i) {
    const Verdict x = again.Observe(kT0 + static_cast<int64_t>(i) * kStepMs, v[i]);
    saw_break |= i >= 2000 && i < 2048 && x.type == AnomalyType::kSeasonalBreak;
  }
  EXPECT_TRUE(saw_break);
}

TEST(SeasonalBaselineTest, TimeBasedPhaseSurvivesGaps) {
  DetectorOptions o;
  o.season_ms = 48 * kStepMs;
  o.season_points = 48;
  SeriesDetector d(o);
  std::vector<double> v = Seasonal(8000, 7);
  std::mt19937_64 rng(8);
  std::uniform_real_distribution<double> u(0, 1);
  bool was = false;
  int alerts = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    if (u(rng) < 0.1 || (i >= 3000 && i < 3100)) continue;  // 10% missing + an outage
    const Verdict verdict = d.Observe(kT0 + static_cast<int64_t>(i) * kStepMs, v[i]);
    const bool alerting = verdict.severity >= Severity::kWarning;
    alerts += alerting && !was;
    was = alerting;
  }
  EXPECT_EQ(alerts, 0);
}

TEST(RateOfChangeDetectorTest, SteepRampOnASmoothSeries) {
  DetectorOptions o;
  RateOfChangeDetector r(o);
  std::vector<double> v = Noise(600, 9, 0);
  for (size_t i = 500; i < 600; ++i) v[i] += 5.0 * static_cast<double>(i - 500);
  int64_t first = -1;
  for (size_t i = 0; i < v.size(); ++i) {
    auto reading = r.Observe(kT0 + static_cast<int64_t>(i) * kStepMs, v[i], i < 30, true);
    if (i < 500) {
      EXPECT_LT(reading.evidence, 1) << i;
    }
    if (first < 0 && reading.evidence >= 1) first = static_cast<int64_t>(i);
  }
  ASSERT_GE(first, 500);
  EXPECT_LE(first, 505);
}

TEST(SeriesDetectorTest, NanAndInfAreIgnoredWithoutChangingState) {
  std::vector<double> v = Noise(800, 10);
  v[600] += 12;
  SeriesDetector clean{DetectorOptions{}};
  SeriesDetector dirty{DetectorOptions{}};
  for (size_t i = 0; i < v.size(); ++i) {
    const int64_t t = kT0 + static_cast<int64_t>(i) * kStepMs;
    if (i % 7 == 3) {
      for (double bad :
           {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
            -std::numeric_limits<double>::infinity()}) {
        const Verdict skipped = dirty.Observe(t, bad);
        EXPECT_EQ(skipped.severity, Severity::kNone);
        EXPECT_EQ(skipped.type, AnomalyType::kNone);
      }
    }
    const Verdict a = clean.Observe(t, v[i]);
    const Verdict b = dirty.Observe(t, v[i]);
    ASSERT_EQ(a.score, b.score) << i;
    ASSERT_EQ(a.severity, b.severity) << i;
    ASSERT_EQ(a.expected, b.expected) << i;
  }
  EXPECT_EQ(dirty.points(), clean.points());
  EXPECT_GT(dirty.ignored(), 0);
}

TEST(SeriesDetectorTest, OutOfOrderPointsAreIgnored) {
  SeriesDetector d{DetectorOptions{}};
  d.Observe(kT0 + 1000, 1);
  const Verdict v = d.Observe(kT0, 500);
  EXPECT_EQ(v.severity, Severity::kNone);
  EXPECT_EQ(d.points(), 1);
  EXPECT_EQ(d.ignored(), 1);
}

TEST(SeriesDetectorTest, WarmupIsRespected) {
  DetectorOptions o;
  o.warmup_points = 100;
  SeriesDetector d(o);
  std::vector<double> v = Noise(300, 11);
  v[60] += 50;
  v[200] += 50;
  for (size_t i = 0; i < v.size(); ++i) {
    const Verdict verdict = d.Observe(kT0 + static_cast<int64_t>(i) * kStepMs, v[i]);
    if (i < 99) {
      EXPECT_TRUE(verdict.warming_up) << i;
      EXPECT_EQ(verdict.severity, Severity::kNone) << i;
    }
    if (i == 200) {
      EXPECT_FALSE(verdict.warming_up);
      EXPECT_GE(verdict.severity, Severity::kCritical);
      EXPECT_EQ(verdict.type, AnomalyType::kSpike);
      EXPECT_LT(verdict.expected + 10, v[200]);
      EXPECT_GT(verdict.upper, verdict.expected);
      EXPECT_LT(verdict.lower, verdict.expected);
    }
  }
}

TEST(SeriesDetectorTest, ResetForgetsEverything) {
  SeriesDetector d{DetectorOptions{}};
  std::vector<double> v = Noise(200, 12);
  for (size_t i = 0; i < v.size(); ++i) d.Observe(kT0 + static_cast<int64_t>(i), v[i]);
  d.Reset();
  EXPECT_EQ(d.points(), 0);
  EXPECT_TRUE(d.warming_up());
  EXPECT_TRUE(d.Observe(kT0, 5).warming_up);
}

TEST(SeriesDetectorTest, MemoryPerSeriesIsSmall) {
  DetectorOptions o;
  // 696 bytes before the issue-10 safeguards, 840 with the first ones (scale floor, judged space,
  // episode bound), 968 with the automatic period, the CUSUM tail margins and the informative
  // warm-up; 512 (8 cache lines, aligned to one) once the options are shared and the seasonal
  // state is out of line (docs/DETECTORS.md, memory per series).
  EXPECT_LE(sizeof(SeriesDetector), 512u);
  EXPECT_EQ(alignof(SeriesDetector), 64u);
  // Without a configured season: the automatic period's out-of-line state, its profile and spread
  // (2 x 48 floats) included, at most 256 bytes beside them.
  const size_t automatic = SeriesDetector(o).heap_bytes();
  EXPECT_GE(automatic, 2 * 48 * sizeof(float));
  EXPECT_LE(automatic, 2 * 48 * sizeof(float) + 256);
  DetectorOptions off = o;
  off.auto_season = false;
  EXPECT_EQ(SeriesDetector(off).heap_bytes(), 0u);
  // A configured season: the same out-of-line state with a profile and per-bucket spread of 96.
  o.season_points = 96;
  EXPECT_EQ(SeriesDetector(o).heap_bytes(), automatic + 2 * (96 - 48) * sizeof(float));
  // A copy owns its seasonal state: feeding the original does not change the copy's verdicts.
  SeriesDetector a(o), fresh(o);
  SeriesDetector b = a;
  auto value = [](int i) { return 100.0 + (i % 96 < 48 ? 10 : 0) + 0.1 * (i % 7); };
  for (int i = 0; i < 500; ++i) a.Observe(i * 1000, value(i) + 50);
  EXPECT_EQ(b.points(), 0);
  for (int i = 0; i < 500; ++i) {
    const Verdict x = b.Observe(i * 1000, value(i)), y = fresh.Observe(i * 1000, value(i));
    ASSERT_EQ(x.score, y.score) << i;
    ASSERT_EQ(x.expected, y.expected) << i;
  }
}

ConfigNode Node(const std::string& yaml) {
  return ConfigNode("detector.yaml", YAML::Load(yaml), "");
}

TEST(DetectorOptionsTest, ParsesFieldsAndDurations) {
  Result<DetectorOptions> o =
      ParseDetectorOptions(Node("warmup_points: 50\nseason_period: 1d\nseason_points: 96\n"
                                "warning: 0.75\nadaptive_thresholds: false\nspike_z: 5\n"));
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->warmup_points, 50);
  EXPECT_EQ(o->season_ms, 86'400'000);
  EXPECT_EQ(o->season_points, 96);
  EXPECT_DOUBLE_EQ(o->warning, 0.75);
  EXPECT_FALSE(o->adaptive_thresholds);
  EXPECT_DOUBLE_EQ(o->spike_z, 5);
}

TEST(DetectorOptionsTest, UnknownFieldNamesFileAndLine) {
  Result<DetectorOptions> o = ParseDetectorOptions(Node("warmup_points: 50\nspikez: 5\n"));
  ASSERT_FALSE(o.ok());
  EXPECT_NE(o.status().message().find("detector.yaml:2"), std::string::npos)
      << o.status().message();
  EXPECT_NE(o.status().message().find("spikez"), std::string::npos);
}

TEST(DetectorOptionsTest, RejectsBadValues) {
  EXPECT_FALSE(ParseDetectorOptions(Node("warning: 0.9\ncritical: 0.8\n")).ok());
  EXPECT_FALSE(ParseDetectorOptions(Node("season_points: 1\n")).ok());
  EXPECT_FALSE(ParseDetectorOptions(Node("level_alpha: 1.5\n")).ok());
  EXPECT_FALSE(ParseDetectorOptions(Node("warmup_points: abc\n")).ok());
  DetectorOptions o;
  EXPECT_TRUE(o.Validate().ok());
  o.info = 0.8;
  EXPECT_FALSE(o.Validate().ok());
}

// The evaluation harness at its default seed and size (what bench/anomaly_eval reports; it takes
// well under a second) guarding the issue-4 targets in CI.
TEST(AnomalyHarnessTest, ReducedSuiteMeetsTargets) {
  bench::SuiteConfig config;
  const bench::EvalReport report = bench::Evaluate(bench::GenerateSuite(config));
  std::vector<std::string> failures;
  const bool ok = bench::MeetsTargets(report, &failures);
  std::string all;
  for (const std::string& f : failures) all += f + "\n";
  EXPECT_TRUE(ok) << all << bench::FormatMarkdown(report);
}

TEST(AnomalyHarnessTest, ScorerCountsAlertsAgainstLabels) {
  // A hand-made series: one labelled spike that the detector must find, checked through the
  // scorer, and a clean copy that must produce no alert.
  bench::LabelledSeries s;
  s.scenario = AnomalyType::kSpike;
  std::vector<double> v = Noise(1000, 13);
  v[700] += 15;
  for (size_t i = 0; i < v.size(); ++i) {
    s.time_ms.push_back(kT0 + static_cast<int64_t>(i) * kStepMs);
    s.value.push_back(v[i]);
  }
  s.anomalies.push_back({AnomalyType::kSpike, 700, 700, 10});
  const bench::EvalReport report = bench::Evaluate({s});
  const bench::ScenarioResult* r = report.Find("spike");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->anomalies, 1);
  EXPECT_EQ(r->detected, 1);
  EXPECT_EQ(r->alerts, 1);
  EXPECT_DOUBLE_EQ(r->f1(), 1.0);
  EXPECT_DOUBLE_EQ(r->mean_delay(), 0.0);
}

}  // namespace
}  // namespace inferscope
