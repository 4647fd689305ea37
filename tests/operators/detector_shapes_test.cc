// The detectors on the shapes real metrics have (issue 10): crafted series per shape, the
// no-stuck-alarm property test, the calibration of the real-shape suite and the real request
// traces. The issue-4 targets of the synthetic suite are guarded in detectors_test.cc.

#include <malloc.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "bench/anomaly_shapes.h"
#include "operators/detectors.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

constexpr int64_t kStepMs = 60'000;
constexpr int64_t kT0 = 1'700'006'400'000;

std::vector<Verdict> RunSeries(SeriesDetector& d, const std::vector<double>& v) {
  std::vector<Verdict> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    out.push_back(d.Observe(kT0 + static_cast<int64_t>(i) * kStepMs, v[i]));
  }
  return out;
}

bool Alarm(const Verdict& v) { return v.severity >= Severity::kWarning; }

// Points at >= warning in [from, to).
int64_t AlarmPoints(const std::vector<Verdict>& vs, size_t from, size_t to) {
  int64_t n = 0;
  for (size_t i = from; i < std::min(to, vs.size()); ++i) n += Alarm(vs[i]);
  return n;
}

// The longest run of consecutive points at >= warning.
int64_t LongestEpisode(const std::vector<Verdict>& vs) {
  int64_t longest = 0, run = 0;
  for (const Verdict& v : vs) {
    run = Alarm(v) ? run + 1 : 0;
    longest = std::max(longest, run);
  }
  return longest;
}

// ---- scale floor ----

// The failure of issue 10: a count series at 0 for hours that resumes small values (1, 9, 2, 7,
// ...) scored 1.0 for the rest of the file.
TEST(DetectorShapesTest, CountsResumingAfterHoursOfZerosRaiseOneBoundedEpisode) {
  std::mt19937_64 rng(1);
  std::uniform_int_distribution<int> small(0, 9);
  std::vector<double> v;
  for (int i = 0; i < 500; ++i) v.push_back(small(rng));
  for (int i = 0; i < 3000; ++i) v.push_back(0);
  const size_t resume = v.size();
  for (double x : {1, 9, 2, 7}) v.push_back(x);
  for (int i = 0; i < 8000; ++i) v.push_back(small(rng));
  SeriesDetector d{DetectorOptions{}};
  const std::vector<Verdict> vs = RunSeries(d, v);
  EXPECT_LE(LongestEpisode(vs), d.EpisodeBound());
  // After the resumption has been absorbed, the series is judged as before.
  const size_t settled = resume + 2 * static_cast<size_t>(d.EpisodeBound());
  EXPECT_LE(AlarmPoints(vs, settled, vs.size()), 8) << "of " << vs.size() - settled;
  EXPECT_LT(vs.back().score, 0.7);
}

TEST(DetectorShapesTest, ZerosFromTheStartThenActivityIsBounded) {
  std::vector<double> v(3000, 0.0);
  std::mt19937_64 rng(2);
  std::poisson_distribution<int> counts(5);
  for (int i = 0; i < 5000; ++i) v.push_back(counts(rng));
  SeriesDetector d{DetectorOptions{}};
  const std::vector<Verdict> vs = RunSeries(d, v);
  EXPECT_LE(LongestEpisode(vs), d.EpisodeBound());
  EXPECT_LE(AlarmPoints(vs, 3100, vs.size()), 5);
}

// After a long flat run the first change of one quantisation step is not an infinite z-score:
// the floor comes from the values' own step (integers: 1) or magnitude.
TEST(DetectorShapesTest, FlatGaugeFirstSmallChangeIsFinite) {
  {
    std::vector<double> v(3000, 37.0);
    v.push_back(38.0);
    SeriesDetector d{DetectorOptions{}};
    const std::vector<Verdict> vs = RunSeries(d, v);
    EXPECT_LT(vs.back().score, 0.7);
    EXPECT_GE(d.scale_floor(), 0.5);  // half the integer step
  }
  {
    std::vector<double> v(3000, 8.0 * 1024 * 1024);  // bytes, flat
    v.push_back(v.back() + 4096);
    SeriesDetector d{DetectorOptions{}};
    const std::vector<Verdict> vs = RunSeries(d, v);
    EXPECT_LT(vs.back().score, 0.7);  // the magnitude floor: 1e-3 of 8 MiB
  }
  {
    // A flat gauge in 0.5 steps: once a step has been seen, single steps are normal.
    std::vector<double> v;
    double x = 21.5;
    std::mt19937_64 rng(3);
    std::uniform_real_distribution<double> u(0, 1);
    for (int i = 0; i < 20'000; ++i) {
      if (u(rng) < 0.002) x += u(rng) < 0.5 ? -0.5 : 0.5;
      v.push_back(x);
    }
    SeriesDetector d{DetectorOptions{}};
    const std::vector<Verdict> vs = RunSeries(d, v);
    EXPECT_LE(AlarmPoints(vs, 0, vs.size()), 2);  // at most the very first move
  }
}

// ---- counts ----

TEST(DetectorShapesTest, LowRatePoissonCountsRarelyAlarm) {
  for (double lambda : {0.05, 0.3, 1.0, 4.0}) {
    std::mt19937_64 rng(static_cast<uint64_t>(lambda * 1000));
    std::poisson_distribution<int> counts(lambda);
    std::vector<double> v(20'000);
    for (double& x : v) x = counts(rng);
    SeriesDetector d{DetectorOptions{}};
    const std::vector<Verdict> vs = RunSeries(d, v);
    EXPECT_LE(AlarmPoints(vs, 0, vs.size()), 20) << "lambda " << lambda;  // <= 0.1 %
    EXPECT_LE(LongestEpisode(vs), d.EpisodeBound());
  }
}

TEST(DetectorShapesTest, StormOnSparseCountsIsDetected) {
  std::mt19937_64 rng(4);
  std::uniform_real_distribution<double> u(0, 1);
  std::uniform_int_distribution<int> small(1, 9);
  std::vector<double> v(6000, 0.0);
  for (size_t i = 0; i < v.size(); ++i) {
    if (u(rng) < 0.03) v[i] = small(rng);
  }
  for (size_t i = 5000; i < 5030; ++i) v[i] = 40 + small(rng);
  SeriesDetector d{DetectorOptions{}};
  const std::vector<Verdict> vs = RunSeries(d, v);
  EXPECT_GT(AlarmPoints(vs, 5000, 5005), 0);
  EXPECT_LE(LongestEpisode(vs), d.EpisodeBound());
}

// ---- multi-decade bursts ----

std::vector<double> BurstyBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  std::normal_distribution<double> normal(0, 1);
  std::vector<double> v(n);
  int burst = 0;
  for (double& x : v) {
    if (burst == 0 && u(rng) < 0.01) burst = 1 + static_cast<int>(u(rng) * 30);
    if (burst > 0) {
      x = std::min(7e8, 5e7 * std::exp(normal(rng)));
      --burst;
    } else {
      x = u(rng) < 0.3 ? 0 : 1e5 * std::exp(1.5 * normal(rng));
    }
    x = std::round(x / 4096) * 4096;
  }
  return v;
}

TEST(DetectorShapesTest, MultiDecadeBurstsAreJudgedInLogSpace) {
  std::vector<double> v = BurstyBytes(10'000, 5);
  SeriesDetector d{DetectorOptions{}};
  std::vector<Verdict> vs = RunSeries(d, v);
  EXPECT_TRUE(d.log_space());
  EXPECT_LE(LongestEpisode(vs), d.EpisodeBound());
  // Issue-10 target: <= 0.1 % (the CUSUM tail margin: normal long bursts are not drifts).
  EXPECT_LE(AlarmPoints(vs, 0, vs.size()), 10);
  EXPECT_EQ(std::count_if(vs.begin(), vs.end(), [](const Verdict& x) { return x.score >= 0.95; }),
            0);
  // Expected values are reported in value units, not log units, and stay finite.
  EXPECT_GT(vs.back().upper, 1e3);
  for (const Verdict& x : vs) ASSERT_TRUE(std::isfinite(x.upper) && std::isfinite(x.lower));

  // A sustained write storm at the device limit is found once it has lasted longer than the
  // normal bursts (up to 30 points here; the drift margin covers excursions up to 1.5 x the
  // learned 99th percentile of their lengths).
  for (size_t i = 8000; i < 8150; ++i) v[i] = 6.5e8;
  SeriesDetector storm{DetectorOptions{}};
  vs = RunSeries(storm, v);
  EXPECT_GT(AlarmPoints(vs, 8000, 8100), 0);
}

// A series whose level dispersion is small stays in value space (the synthetic harness, gauges).
TEST(DetectorShapesTest, OrdinarySeriesStayInValueSpace) {
  std::mt19937_64 rng(6);
  std::normal_distribution<double> normal(100, 1);
  std::vector<double> v(2000);
  for (double& x : v) x = normal(rng);
  SeriesDetector d{DetectorOptions{}};
  RunSeries(d, v);
  EXPECT_FALSE(d.log_space());
}

// ---- noise-free periodic signals ----

enum class Wave { kSine, kSquare, kSawtooth };

std::vector<double> Periodic(Wave w, int64_t period, size_t n, double noise, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0, 1);
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) {
    const double phase = static_cast<double>(static_cast<int64_t>(i) % period) / double(period);
    double x = 0;
    switch (w) {
      case Wave::kSine:
        x = std::sin(2 * std::numbers::pi * phase);
        break;
      case Wave::kSquare:
        x = phase < 0.5 ? 1 : -1;
        break;
      case Wave::kSawtooth:
        x = 2 * phase - 1;
        break;
    }
    v[i] = 200 + 50 * x + noise * normal(rng);
  }
  return v;
}

TEST(DetectorShapesTest, NoiseFreePeriodicSignalsWithSeasonDoNotAlarm) {
  for (Wave w : {Wave::kSine, Wave::kSquare, Wave::kSawtooth}) {
    for (int64_t period : {16, 60, 288}) {
      for (double noise : {0.0, 0.05}) {
        DetectorOptions o;
        o.season_ms = period * kStepMs;
        o.season_points = std::min<int64_t>(period, 48);
        SeriesDetector d(o);
        const std::vector<Verdict> vs = RunSeries(d, Periodic(w, period, 6000, noise, 7));
        EXPECT_EQ(AlarmPoints(vs, 0, vs.size()), 0)
            << "wave " << static_cast<int>(w) << " period " << period << " noise " << noise;
      }
    }
  }
}

TEST(DetectorShapesTest, NoiseFreePeriodicSignalsWithoutSeasonStopAlarmingAfterAFewPeriods) {
  for (Wave w : {Wave::kSine, Wave::kSquare, Wave::kSawtooth}) {
    for (int64_t period : {16, 60, 288}) {
      SeriesDetector d{DetectorOptions{}};
      const std::vector<Verdict> vs = RunSeries(d, Periodic(w, period, 6000, 0.0, 8));
      EXPECT_LE(LongestEpisode(vs), d.EpisodeBound());
      EXPECT_EQ(AlarmPoints(vs, static_cast<size_t>(3 * period), vs.size()), 0)
          << "wave " << static_cast<int>(w) << " period " << period;
    }
  }
}

// ---- automatic period ----

// Without a configured season, a noise-free square wave with a long period (the transitions are
// full-amplitude level shifts) is learned as a period: no alarm once 3 periods were seen, and the
// detector reports the detected period.
TEST(DetectorShapesTest, SquareWaveWithoutSeasonLocksAPeriod) {
  for (int64_t period : {60, 288, 720}) {
    for (double noise : {0.0, 0.05}) {
      SeriesDetector d{DetectorOptions{}};
      const std::vector<Verdict> vs =
          RunSeries(d, Periodic(Wave::kSquare, period, 8000, noise, 12));
      EXPECT_EQ(AlarmPoints(vs, static_cast<size_t>(3 * period), vs.size()), 0)
          << "period " << period << " noise " << noise;
      EXPECT_EQ(d.detected_period_ms(), period * kStepMs) << "period " << period;
    }
  }
}

// Noise does not lock a period (its crossings are irregular and its last cycle predicts
// nothing), and a locked period is dropped when the pattern stops.
TEST(DetectorShapesTest, AutomaticPeriodIsNotFooledByNoiseAndIsDropped) {
  std::mt19937_64 rng(13);
  std::normal_distribution<double> normal(100, 1);
  std::student_t_distribution<double> heavy(5);
  SeriesDetector gaussian{DetectorOptions{}}, student{DetectorOptions{}};
  int64_t locked = 0;
  for (int i = 0; i < 50'000; ++i) {
    const int64_t t = kT0 + i * kStepMs;
    gaussian.Observe(t, normal(rng));
    student.Observe(t, 100 + heavy(rng));
    locked += gaussian.detected_period_ms() > 0 || student.detected_period_ms() > 0;
  }
  EXPECT_EQ(locked, 0);
  // A square wave that becomes flat noise: the period is dropped after a few missed cycles.
  std::vector<double> v = Periodic(Wave::kSquare, 60, 3000, 0.0, 14);
  for (int i = 0; i < 3000; ++i) v.push_back(normal(rng));
  SeriesDetector d{DetectorOptions{}};
  RunSeries(d, std::vector<double>(v.begin(), v.begin() + 3000));
  EXPECT_EQ(d.detected_period_ms(), 60 * kStepMs);
  for (size_t i = 3000; i < v.size(); ++i) d.Observe(kT0 + static_cast<int64_t>(i) * kStepMs, v[i]);
  EXPECT_EQ(d.detected_period_ms(), 0);
  // auto_season: false keeps the old behaviour (no profile allocated).
  DetectorOptions off;
  off.auto_season = false;
  SeriesDetector plain(off);
  RunSeries(plain, std::vector<double>(v.begin(), v.begin() + 3000));
  EXPECT_EQ(plain.detected_period_ms(), 0);
  EXPECT_EQ(plain.heap_bytes(), 0u);
}

// ---- per-bucket seasonal spread ----

// A noise-free business-day shape with a configured daily season of 48 buckets: the ramps move
// inside each 30-minute bucket, which the per-bucket spread makes normal at those phases.
TEST(DetectorShapesTest, DailyRampsInsideBucketsDoNotAlarm) {
  std::vector<double> v;
  for (int i = 0; i < 10 * 1440; ++i) {
    const double h = (i % 1440) / 60.0;
    double x = 0.1;
    if (h >= 6 && h < 9) x = 0.1 + 0.9 * (h - 6) / 3;
    if (h >= 9 && h < 17) x = 1.0;
    if (h >= 17 && h < 20) x = 1.0 - 0.9 * (h - 17) / 3;
    v.push_back(200 + 80 * x);
  }
  DetectorOptions o;
  o.season_ms = 86'400'000;
  SeriesDetector d(o);
  const std::vector<Verdict> vs = RunSeries(d, v);
  EXPECT_LE(AlarmPoints(vs, 3 * 1440, vs.size()), 2) << "of " << vs.size() - 3 * 1440;
  // A spike of half the amplitude at noon is still found.
  v[8 * 1440 + 720] += 40;
  SeriesDetector again(o);
  const std::vector<Verdict> vs2 = RunSeries(again, v);
  EXPECT_TRUE(Alarm(vs2[8 * 1440 + 720]));
}

// ---- sparse counts: informative warm-up, tail learned from changes ----

// A count that is 0 except for rare short bursts of small integers: the warm-up lasts until the
// bursts have been seen (changes of the value), so the first bursts after it are not alarms.
TEST(DetectorShapesTest, RareBurstsOfSmallCountsAreLearned) {
  int64_t alarms = 0, points = 0;
  for (uint64_t seed = 20; seed < 26; ++seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(0, 1);
    std::vector<double> v(10'000, 0.0);
    int left = 0;
    for (double& x : v) {
      if (left == 0 && u(rng) < 0.005) left = 1 + static_cast<int>(u(rng) * 6);
      if (left > 0) {
        x = 1 + static_cast<int>(u(rng) * 9);
        --left;
      }
    }
    SeriesDetector d{DetectorOptions{}};
    const std::vector<Verdict> vs = RunSeries(d, v);
    for (const Verdict& x : vs) {
      if (x.warming_up) continue;
      ++points;
      alarms += Alarm(x);
    }
    EXPECT_LE(LongestEpisode(vs), d.EpisodeBound());
  }
  // The shape suite (burst start probabilities 0.5-4 %) meets the issue-10 target of 0.1 %; this
  // rarest case alone (0.5 %, six seeds) is at ~0.12 %: the first bursts after a warm-up that saw
  // only a few of them (docs/DETECTORS.md, "not met"). Guarded at 0.15 %.
  EXPECT_LE(double(alarms), 0.0015 * double(points)) << alarms << " of " << points;
  EXPECT_GT(points, 50'000);  // the informative warm-up is bounded (30 x warmup_points)
}

// A short series that switches to log1p space is still judged: the new model is seeded from
// shadow statistics (a third of the warm-up remains), not restarted from scratch.
TEST(DetectorShapesTest, ShortSeriesThatSwitchesToLogSpaceIsJudged) {
  const std::vector<double> v = BurstyBytes(60, 15);
  SeriesDetector d{DetectorOptions{}};
  const std::vector<Verdict> vs = RunSeries(d, v);
  ASSERT_TRUE(d.log_space());
  const auto judged =
      std::count_if(vs.begin(), vs.end(), [](const Verdict& x) { return !x.warming_up; });
  EXPECT_GE(judged, 15);
}

// ---- no stuck alarm, ever ----

// Random step / ramp / burst sequences on random noise kinds and magnitudes (1e-3 to 1e9): every
// alarm episode ends within the bound, and once a change has been absorbed the detector is quiet
// again (re-baselined level and scale).
TEST(DetectorShapesTest, NoStuckAlarmProperty) {
  constexpr int kSequences = 60;
  constexpr size_t kLength = 6000;
  int64_t settled_points = 0, settled_alarms = 0;
  for (int seq = 0; seq < kSequences; ++seq) {
    std::mt19937_64 rng(1000 + static_cast<uint64_t>(seq));
    std::uniform_real_distribution<double> u(0, 1);
    std::normal_distribution<double> normal(0, 1);
    const double sd = std::pow(10.0, -3 + 6 * u(rng));
    double level = u(rng) < 0.3 ? 0 : sd * std::pow(10.0, 3 * u(rng));
    const int noise_kind = seq % 3;  // gaussian, integer counts, quantised gauge
    std::vector<double> v(kLength);
    std::vector<std::pair<size_t, size_t>> settled;  // [from, to) after each change
    size_t i = 0;
    size_t next_change = 500;
    while (i < kLength) {
      if (i == next_change) {
        const size_t segment = 400 + static_cast<size_t>(u(rng) * 600);
        const double magnitude = sd * std::pow(10.0, 6 * u(rng)) * (u(rng) < 0.5 ? -1 : 1);
        const int kind = static_cast<int>(u(rng) * 3);
        size_t ramp = 0;
        if (kind == 0) {
          level = std::max(0.0, level + magnitude);  // step
        } else if (kind == 1) {
          ramp = 20 + static_cast<size_t>(u(rng) * 280);  // ramp, then hold
        } else {
          const size_t burst = 1 + static_cast<size_t>(u(rng) * 30);  // burst, then back
          for (size_t j = i; j < std::min(kLength, i + burst); ++j) {
            v[j] = std::fabs(level + magnitude);
          }
          i = std::min(kLength, i + burst);
        }
        const double from = level, to = std::max(0.0, level + magnitude);
        for (size_t j = 0; j < ramp && i < kLength; ++j, ++i) {
          v[i] = from + (to - from) * double(j + 1) / double(ramp);
        }
        if (ramp > 0) level = to;
        settled.push_back({std::min(kLength, i + 150), std::min(kLength, next_change + segment)});
        next_change += segment;
        continue;
      }
      double x = level;
      if (noise_kind == 0) x += sd * normal(rng);
      if (noise_kind == 1) x = std::poisson_distribution<int64_t>(std::min(level / sd, 1e6))(rng);
      if (noise_kind == 2) x = std::round((level + sd * normal(rng)) / sd) * sd;
      v[i++] = x;
    }
    SeriesDetector d{DetectorOptions{}};
    const std::vector<Verdict> vs = RunSeries(d, v);
    ASSERT_LE(LongestEpisode(vs), d.EpisodeBound()) << "sequence " << seq;
    for (const auto& [from, to] : settled) {
      if (from >= to) continue;
      settled_points += static_cast<int64_t>(to - from);
      settled_alarms += AlarmPoints(vs, from, to);
    }
  }
  // Quiet after every absorbed change (no permanent alarm): <= 0.5 % of the settled points.
  EXPECT_LE(double(settled_alarms), 0.005 * double(settled_points))
      << settled_alarms << " of " << settled_points;
}

// Counter resets and a change of units: one bounded episode each, then quiet.
TEST(DetectorShapesTest, CounterResetAndUnitChangeAreBounded) {
  std::mt19937_64 rng(9);
  std::poisson_distribution<int> inc(50);
  std::normal_distribution<double> normal(0, 1);
  std::vector<double> counter;
  double c = 0;
  for (int i = 0; i < 6000; ++i) {
    if (i == 3000) c = 0;
    c += inc(rng);
    counter.push_back(c);
  }
  std::vector<double> units;
  for (int i = 0; i < 6000; ++i) units.push_back((i < 3000 ? 1e3 : 1e8) * (1 + 0.02 * normal(rng)));
  for (const std::vector<double>* v : {&counter, &units}) {
    SeriesDetector d{DetectorOptions{}};
    const std::vector<Verdict> vs = RunSeries(d, *v);
    EXPECT_LE(LongestEpisode(vs), d.EpisodeBound());
    EXPECT_LE(AlarmPoints(vs, 3000 + 2 * static_cast<size_t>(d.EpisodeBound()), vs.size()), 3);
  }
}

// ---- suites ----

// The real-shape suite of bench/anomaly_eval (issue 10): per shape, the share of clean points at
// warning or above (target <= 0.1 %) and at >= 0.95 (<= 0.01 %), and the episode after each
// persistent change within the bound.
TEST(DetectorShapesTest, ShapeSuiteCalibration) {
  bench::ShapeSuiteConfig config;
  config.series_per_shape = 4;
  const std::vector<bench::PointwiseResult> clean =
      bench::EvaluatePointwise(bench::GenerateShapeSuite(config), /*clean_only=*/true);
  for (const bench::PointwiseResult& r : clean) {
    SCOPED_TRACE(r.name);
    EXPECT_EQ(r.persistent_over_bound, 0) << "longest " << r.longest_persistent_episode;
    EXPECT_LE(r.clean_warning_share(), 0.001);
    EXPECT_LE(r.clean_emergency_share(), 0.0001);
  }
}

// The per-minute and per-10-second series of the real request traces (tests/data/README.md):
// target <= 0.5 % of points at warning or above.
TEST(DetectorShapesTest, RealTracesRarelyFlagged) {
  const std::vector<bench::TraceSeries> all =
      bench::ReadTraceSeriesCsv(testing::SourceDir() + "/tests/data/azure_llm_2023_series.csv");
  ASSERT_EQ(all.size(), 20u);
  std::vector<bench::TraceSeries> minute, ten_seconds;
  for (const bench::TraceSeries& s : all) {
    (s.name.find(" 10s ") != std::string::npos ? ten_seconds : minute).push_back(s);
  }
  auto share = [](const std::vector<bench::TraceResult>& results) {
    int64_t points = 0, flagged = 0;
    for (const bench::TraceResult& r : results) points += r.points, flagged += r.warning;
    return points > 0 ? double(flagged) / double(points) : 1.0;
  };
  DetectorOptions options;
  EXPECT_LE(share(bench::EvaluateTraces(ten_seconds, options)), 0.005);
  // 58-minute traces at the default warm-up (series that switch to log1p space are seeded there,
  // so they are still judged) and with `--warmup 10`, matching their length.
  EXPECT_LE(share(bench::EvaluateTraces(minute, options)), 0.005);
  options.warmup_points = 10;
  EXPECT_LE(share(bench::EvaluateTraces(minute, options)), 0.005);
}

// ---- cost ----

TEST(DetectorShapesTest, ObserveDoesNotAllocate) {
  DetectorOptions o;
  o.season_points = 48;
  SeriesDetector seasonal(o);
  SeriesDetector plain{DetectorOptions{}};
  SeriesDetector bytes{DetectorOptions{}};
  const std::vector<double> noise = Periodic(Wave::kSine, 48, 20'000, 1.0, 10);
  const std::vector<double> bursty = BurstyBytes(20'000, 11);
  const size_t before = mallinfo2().uordblks;
  double sink = 0;
  for (size_t i = 0; i < noise.size(); ++i) {
    const int64_t t = kT0 + static_cast<int64_t>(i) * kStepMs;
    sink += seasonal.Observe(t, noise[i]).score + plain.Observe(t, noise[i]).score +
            bytes.Observe(t, bursty[i]).score;
  }
  EXPECT_EQ(mallinfo2().uordblks, before);
  EXPECT_GE(sink, 0);
  EXPECT_TRUE(bytes.log_space());
}

}  // namespace
}  // namespace inferscope
