// Cost per point of the streaming detectors (operators/detectors.h). BM_EwmaBaseline is a plain
// EWMA mean/variance update: the floor the figures are stated against (see docs/DETECTORS.md).

#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "operators/detectors.h"

namespace inferscope {
namespace {

constexpr size_t kPoints = 1 << 16;

const std::vector<double>& Values() {
  static const std::vector<double> values = [] {
    std::mt19937_64 rng(1);
    std::normal_distribution<double> normal(100, 1);
    std::vector<double> v(kPoints);
    for (double& x : v) x = normal(rng);
    return v;
  }();
  return values;
}

// Options that outlive every detector of a benchmark (the component detectors keep a pointer).
const DetectorOptions& Defaults() {
  static const DetectorOptions options;
  return options;
}

void BM_EwmaBaseline(benchmark::State& state) {
  const std::vector<double>& v = Values();
  double mean = 100, var = 1;
  size_t i = 0;
  for (auto _ : state) {
    const double r = v[i] - mean;
    mean += 0.02 * r;
    var += 0.01 * (r * r - var);
    benchmark::DoNotOptimize(mean);
    benchmark::DoNotOptimize(var);
    i = (i + 1) & (kPoints - 1);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EwmaBaseline);

void BM_SpikeDetector(benchmark::State& state) {
  const std::vector<double>& v = Values();
  SpikeDetector d{Defaults()};
  size_t i = 0;
  for (auto _ : state) {
    const double r = v[i] - 100;
    const SpikeDetector::Reading reading = d.Score(r);
    d.Learn(r, false, reading.evidence >= 1);
    benchmark::DoNotOptimize(reading);
    i = (i + 1) & (kPoints - 1);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SpikeDetector);

void BM_ChangePointDetector(benchmark::State& state) {
  const std::vector<double>& v = Values();
  ChangePointDetector d{Defaults()};
  size_t i = 0;
  for (auto _ : state) {
    const double r = v[i] - 100;
    const ChangePointDetector::Reading reading = d.Observe(r, r);
    d.Learn(r, false);
    benchmark::DoNotOptimize(reading);
    i = (i + 1) & (kPoints - 1);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ChangePointDetector);

void BM_RateOfChangeDetector(benchmark::State& state) {
  const std::vector<double>& v = Values();
  RateOfChangeDetector d{Defaults()};
  size_t i = 0;
  int64_t t = 0;
  for (auto _ : state) {
    t += 1000;
    benchmark::DoNotOptimize(d.Observe(t, v[i], false, true));
    i = (i + 1) & (kPoints - 1);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RateOfChangeDetector);

// The combined detector on one series; arg = season_points (0 = no seasonal component).
void BM_SeriesDetector(benchmark::State& state) {
  const std::vector<double>& v = Values();
  DetectorOptions o;
  o.season_points = state.range(0);
  SeriesDetector d(o);
  size_t i = 0;
  int64_t t = 0;
  for (auto _ : state) {
    t += 1000;
    benchmark::DoNotOptimize(d.Observe(t, v[i]));
    i = (i + 1) & (kPoints - 1);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SeriesDetector)->Arg(0)->Arg(48);

// The combined detector on a bursty multi-decade series (0 to 7e8, like disk write bytes), which
// it judges in log1p space (issue 10): one log1p and three expm1 per point more.
void BM_SeriesDetectorBursty(benchmark::State& state) {
  static const std::vector<double> values = [] {
    std::mt19937_64 rng(2);
    std::uniform_real_distribution<double> u(0, 1);
    std::normal_distribution<double> normal(0, 1);
    std::vector<double> v(kPoints);
    for (double& x : v) {
      x = u(rng) < 0.3 ? 0 : (u(rng) < 0.1 ? 5e7 : 1e5) * std::exp(1.5 * normal(rng));
    }
    return v;
  }();
  SeriesDetector d{DetectorOptions{}};
  size_t i = 0;
  int64_t t = 0;
  for (auto _ : state) {
    t += 1000;
    benchmark::DoNotOptimize(d.Observe(t, values[i]));
    i = (i + 1) & (kPoints - 1);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SeriesDetectorBursty);

// The combined detector on a near noise-free square wave (period 60 points) without a configured
// season: the automatic period locks after a few cycles and the seasonal profile is used from
// then on (issue 10).
void BM_SeriesDetectorAutoPeriod(benchmark::State& state) {
  static const std::vector<double> values = [] {
    std::mt19937_64 rng(3);
    std::normal_distribution<double> normal(0, 0.05);
    std::vector<double> v(kPoints);
    for (size_t i = 0; i < v.size(); ++i) v[i] = (i % 60 < 30 ? 150.0 : 100.0) + normal(rng);
    return v;
  }();
  SeriesDetector d{DetectorOptions{}};
  size_t i = 0;
  int64_t t = 0;
  for (auto _ : state) {
    t += 1000;
    benchmark::DoNotOptimize(d.Observe(t, values[i]));
    i = (i + 1) % kPoints;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SeriesDetectorAutoPeriod);

// 100k series fed round-robin: every point touches a detector that is not in cache.
void BM_SeriesDetector100k(benchmark::State& state) {
  const std::vector<double>& v = Values();
  constexpr size_t kSeries = 100'000;
  DetectorOptions o;
  o.season_points = state.range(0);
  std::vector<SeriesDetector> detectors(kSeries, SeriesDetector(o));
  size_t s = 0, i = 0;
  int64_t t = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(detectors[s].Observe(t, v[i]));
    if (++s == kSeries) {
      s = 0;
      t += 1000;
    }
    i = (i + 1) & (kPoints - 1);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["bytes_per_series"] =
      static_cast<double>(sizeof(SeriesDetector) + detectors[0].heap_bytes());
}
BENCHMARK(BM_SeriesDetector100k)->Arg(0)->Arg(48);

// The same with a fixed life: one iteration is one round over the 100k series, 150 rounds (30
// warm-up points, 120 judged ones per detector), so that two builds do the same work whatever their
// speed (BM_SeriesDetector100k runs as many points as fit in its minimum time, ~30 per detector,
// i.e. mostly warm-up). Args: season_points, series. The 10k-series variant is the run to count
// instructions per point with callgrind (the same life per detector, a tenth of the points).
void BM_SeriesDetector100kRounds(benchmark::State& state) {
  const std::vector<double>& v = Values();
  const auto series = static_cast<size_t>(state.range(1));
  DetectorOptions o;
  o.season_points = state.range(0);
  std::vector<SeriesDetector> detectors(series, SeriesDetector(o));
  size_t i = 0;
  int64_t t = 0;
  for (auto _ : state) {
    for (SeriesDetector& d : detectors) {
      benchmark::DoNotOptimize(d.Observe(t, v[i]));
      i = (i + 1) & (kPoints - 1);
    }
    t += 1000;
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(series));
  state.counters["bytes_per_series"] =
      static_cast<double>(sizeof(SeriesDetector) + detectors[0].heap_bytes());
}
BENCHMARK(BM_SeriesDetector100kRounds)->Args({0, 100'000})->Args({0, 10'000})->Iterations(150);

}  // namespace
}  // namespace inferscope

BENCHMARK_MAIN();
