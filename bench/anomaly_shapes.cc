#include "bench/anomaly_shapes.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <numbers>
#include <random>
#include <sstream>

namespace inferscope::bench {
namespace {

constexpr int64_t kIntervalMs = 60'000;
constexpr int64_t kT0 = 1'700'006'400'000;  // 2023-11-15T00:00:00Z, so daily patterns align
constexpr int64_t kDayPoints = 1440;

using Rng = std::mt19937_64;

double Uniform(Rng& rng) { return std::uniform_real_distribution<double>(0, 1)(rng); }
double Normal(Rng& rng) { return std::normal_distribution<double>(0, 1)(rng); }
int64_t UniformInt(Rng& rng, int64_t lo, int64_t hi) {  // inclusive
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}
double Poisson(Rng& rng, double lambda) {
  if (lambda <= 0) return 0;
  return static_cast<double>(std::poisson_distribution<int64_t>(lambda)(rng));
}
double LogNormal(Rng& rng, double median, double sigma) {
  return median * std::exp(sigma * Normal(rng));
}

// Builder of one series on the 1-minute grid.
struct Builder {
  ShapeSeries s;
  void Init(std::string_view shape, std::string variant, bool anomalous, int64_t n) {
    s.shape = std::string(shape);
    s.variant = std::move(variant);
    s.anomalous = anomalous;
    s.value.assign(static_cast<size_t>(n), 0.0);
    s.time_ms.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) s.time_ms[i] = kT0 + i * kIntervalMs;
  }
  void Window(int64_t start, int64_t end, int64_t tolerance, AnomalyType type, bool persistent) {
    LabelledAnomaly a;
    a.type = type;
    a.start = start;
    a.end = end;
    a.tolerance = tolerance;
    s.windows.push_back(a);
    s.persistent.push_back(persistent);
  }
  int64_t n() const { return static_cast<int64_t>(s.value.size()); }
};

// Anomaly onsets: from point 3000 on (past every warm-up, including 3 daily periods of the
// seasonal daily pattern... which needs 4320), `count` onsets >= `spacing` apart.
std::vector<int64_t> Onsets(Rng& rng, int64_t first, int64_t n, int64_t spacing, int64_t tail) {
  std::vector<int64_t> out;
  for (int64_t at = first + UniformInt(rng, 0, spacing / 4); at + tail < n;
       at += spacing + UniformInt(rng, 0, spacing / 4)) {
    out.push_back(at);
  }
  return out;
}

// ---- shapes ----

void SparseCounts(Builder& b, Rng& rng, int k, bool anomalous) {
  const double start_p[] = {0.005, 0.01, 0.02, 0.04};
  const double p = start_p[k % 4];
  char variant[32];
  std::snprintf(variant, sizeof variant, "burst start p %.3f", p);
  b.Init("sparse_counts", variant, anomalous, b.n());
  int64_t left = 0;
  for (int64_t i = 0; i < b.n(); ++i) {
    if (left == 0 && Uniform(rng) < p) left = UniformInt(rng, 1, 6);
    if (left > 0) {
      b.s.value[i] = static_cast<double>(UniformInt(rng, 1, 9));
      --left;
    }
  }
  if (!anomalous) return;
  for (int64_t at : Onsets(rng, 1500, b.n(), 1500, 100)) {
    const int64_t len = UniformInt(rng, 20, 40);
    for (int64_t i = at; i < at + len; ++i) b.s.value[i] = 20 + Poisson(rng, 25);
    b.Window(at, at + len - 1, 10, AnomalyType::kLevelShift, false);
  }
}

void PoissonLow(Builder& b, Rng& rng, int k, bool anomalous) {
  const double lambdas[] = {0.05, 0.3, 1, 4};
  const double lambda = lambdas[k % 4];
  char variant[32];
  std::snprintf(variant, sizeof variant, "lambda %.2f", lambda);
  b.Init("poisson_low", variant, anomalous, b.n());
  for (int64_t i = 0; i < b.n(); ++i) b.s.value[i] = Poisson(rng, lambda);
  if (!anomalous) return;
  for (int64_t at : Onsets(rng, 1500, b.n(), 1500, 100)) {
    const int64_t len = UniformInt(rng, 20, 40);
    for (int64_t i = at; i < at + len; ++i) b.s.value[i] = Poisson(rng, 8 * lambda + 12);
    b.Window(at, at + len - 1, 10, AnomalyType::kLevelShift, false);
  }
}

// Event counts that go idle (0) for hours and resume: the failure of issue 10 (a score stuck at
// 1.0 after the resumption). Each transition is a persistent change.
void IdleResume(Builder& b, Rng& rng, int k, bool anomalous, int64_t bound) {
  const bool uniform = k % 2 == 0;
  b.Init("idle_resume", uniform ? "active uniform 0-9" : "active poisson 3-6", anomalous, b.n());
  const double lambda = 3 + 3 * Uniform(rng);
  bool active = true;
  int64_t i = 0;
  std::vector<std::pair<int64_t, int64_t>> active_runs;
  while (i < b.n()) {
    const int64_t len = active ? UniformInt(rng, 300, 1500) : UniformInt(rng, 200, 800);
    const int64_t end = std::min(b.n(), i + len);
    if (active) active_runs.push_back({i, end});
    for (int64_t j = i; j < end; ++j) {
      b.s.value[j] = !active   ? 0.0
                     : uniform ? static_cast<double>(UniformInt(rng, 0, 9))
                               : Poisson(rng, lambda);
    }
    if (i > 0) b.Window(i, i, 2 * bound, AnomalyType::kLevelShift, true);
    i = end;
    active = !active;
  }
  if (!anomalous) return;
  for (const auto& [from, to] : active_runs) {
    if (from < 600 || to - from < 200) continue;
    const int64_t at = from + (to - from) / 2;
    for (int64_t j = at; j < at + 20; ++j) b.s.value[j] = 30 + Poisson(rng, 40);
    b.Window(at, at + 19, 10, AnomalyType::kLevelShift, false);
  }
}

// Disk write bytes per minute: often 0, a base load spanning two decades, bursts up to 7e8;
// multiples of 4 KiB.
void BurstyBytes(Builder& b, Rng& rng, int k, bool anomalous) {
  const double base[] = {2e4, 1e5, 5e5, 3e4};
  b.Init("bursty_bytes", "", anomalous, b.n());
  int64_t burst = 0;
  for (int64_t i = 0; i < b.n(); ++i) {
    if (burst == 0 && Uniform(rng) < 0.01) burst = UniformInt(rng, 1, 30);
    double v;
    if (burst > 0) {
      v = std::min(7e8, LogNormal(rng, 5e7, 1.0));
      --burst;
    } else if (Uniform(rng) < 0.3) {
      v = 0;
    } else {
      v = LogNormal(rng, base[k % 4], 1.5);
    }
    b.s.value[i] = std::round(v / 4096) * 4096;
  }
  if (!anomalous) return;
  // Anomaly: a sustained write storm at the device limit, far longer than any normal burst.
  for (int64_t at : Onsets(rng, 1500, b.n(), 1500, 300)) {
    const int64_t len = UniformInt(rng, 100, 200);
    for (int64_t i = at; i < at + len; ++i) {
      b.s.value[i] = std::round(std::min(7e8, LogNormal(rng, 6.5e8, 0.05)) / 4096) * 4096;
    }
    b.Window(at, at + len - 1, 10, AnomalyType::kLevelShift, false);
  }
}

// Server utilisation in integer percent: a mean-reverting load, rounded and clamped.
void QuantisedGauge(Builder& b, Rng& rng, int k, bool anomalous) {
  const double means[] = {3, 20, 45, 80};
  const double sds[] = {0.3, 0.7, 1.5};
  const double m = means[k % 4], sd = sds[k % 3];
  b.Init("quantised_gauge", "", anomalous, b.n());
  double x = m;
  for (int64_t i = 0; i < b.n(); ++i) {
    x += 0.05 * (m - x) + sd * Normal(rng);
    b.s.value[i] = std::clamp(std::round(x), 0.0, 100.0);
  }
  if (!anomalous) return;
  for (int64_t at : Onsets(rng, 1500, b.n(), 1500, 200)) {
    const int64_t len = UniformInt(rng, 60, 120);
    const double up = m < 50 ? 1 : -1;
    for (int64_t i = at; i < at + len; ++i) {
      b.s.value[i] = std::clamp(b.s.value[i] + up * 25, 0.0, 100.0);
    }
    b.Window(at, at + len - 1, 20, AnomalyType::kLevelShift, false);
  }
}

// A gauge that sits flat for hours and moves by one quantisation step now and then (memory in
// MiB, a replica count, a temperature in 0.5 degree steps, a zero error gauge).
void FlatGauge(Builder& b, Rng& rng, int k, bool anomalous) {
  const double steps[] = {1, 0.5, 1024, 1};
  const double levels[] = {37, 21.5, 8 * 1024 * 1024, 0};
  const double step = steps[k % 4];
  double x = levels[k % 4];
  b.Init("flat_gauge", "", anomalous, b.n());
  for (int64_t i = 0; i < b.n(); ++i) {
    if (Uniform(rng) < 0.002) x = std::max(0.0, x + (Uniform(rng) < 0.5 ? -step : step));
    b.s.value[i] = x;
  }
  if (!anomalous) return;
  for (int64_t at : Onsets(rng, 1500, b.n(), 1500, 100)) {
    const int64_t len = UniformInt(rng, 20, 40);
    for (int64_t i = at; i < at + len; ++i) b.s.value[i] += 15 * step;
    b.Window(at, at + len - 1, 10, AnomalyType::kLevelShift, false);
  }
}

enum class Wave { kSine, kSquare, kSawtooth, kDaily };

double WaveAt(Wave w, double phase) {  // phase in [0, 1); output in [0, 1]
  switch (w) {
    case Wave::kSine:
      return 0.5 + 0.5 * std::sin(2 * std::numbers::pi * phase);
    case Wave::kSquare:
      return phase < 0.5 ? 1.0 : 0.0;
    case Wave::kSawtooth:
      return phase;
    case Wave::kDaily: {
      // Night low, morning ramp 06-09, plateau with a lunch dip, evening ramp down 17-20.
      const double h = 24 * phase;
      if (h < 6) return 0.1;
      if (h < 9) return 0.1 + 0.9 * (h - 6) / 3;
      if (h >= 12 && h < 13) return 0.8;
      if (h < 17) return 1.0;
      if (h < 20) return 1.0 - 0.9 * (h - 17) / 3;
      return 0.1;
    }
  }
  return 0;
}

// Noise-free (or near noise-free: 0.1 % of the amplitude) periodic signals, with and without a
// configured season. `k` even: season configured.
void Periodic(Builder& b, Rng& rng, Wave wave, std::string_view name, int k, bool anomalous) {
  const int64_t periods[] = {16, 48, 96, 288, 1440, 60, 144, 720};
  const int64_t period = wave == Wave::kDaily ? kDayPoints : periods[(k / 2) % 8];
  const bool season = k % 2 == 0;
  const bool noisy = (k / 2) % 2 == 1;
  b.Init(name, season ? "season" : "no season", anomalous, b.n());
  if (season) {
    b.s.options.season_ms = period * kIntervalMs;
    b.s.options.season_points = std::min<int64_t>(period, 48);
  }
  b.s.scored_from = 3 * period;
  const double amplitude = 10 + 90 * Uniform(rng);
  const double offset = k % 3 == 0 ? 0 : 50 + 500 * Uniform(rng);
  for (int64_t i = 0; i < b.n(); ++i) {
    const double phase = static_cast<double>(i % period) / static_cast<double>(period);
    b.s.value[i] =
        offset + amplitude * WaveAt(wave, phase) + (noisy ? 1e-3 * amplitude * Normal(rng) : 0.0);
  }
  if (!anomalous) return;
  // A spike of half the amplitude beyond the range, or the pattern frozen for a period (a stuck
  // exporter). Onsets after the seasonal warm-up (3 periods).
  const int64_t first = std::max<int64_t>(1500, 3 * period + 200);
  bool spike = true;
  for (int64_t at : Onsets(rng, first, b.n(), std::max<int64_t>(1000, 2 * period), period + 50)) {
    if (spike) {
      for (int64_t i = at; i < at + 2; ++i) b.s.value[i] = offset + 1.5 * amplitude;
      b.Window(at, at + 1, 10, AnomalyType::kSpike, false);
    } else {
      const int64_t len = std::min<int64_t>(period, 200);
      // Frozen at the mid value.
      for (int64_t i = at; i < at + len; ++i) b.s.value[i] = offset + 0.5 * amplitude + 0.3;
      b.Window(at, at + len - 1, 10, AnomalyType::kSeasonalBreak, false);
    }
    spike = !spike;
  }
}

// A cumulative counter (requests served) that resets to 0 when its process restarts.
void CounterReset(Builder& b, Rng& rng, int k, int64_t bound) {
  const double lambdas[] = {20, 200, 3, 2000};
  b.Init("counter_reset", "", false, b.n());
  double c = 1000 * Uniform(rng);
  int64_t next_reset = UniformInt(rng, 1500, 4000);
  for (int64_t i = 0; i < b.n(); ++i) {
    if (i == next_reset) {
      c = 0;
      b.Window(i, i, 2 * bound, AnomalyType::kLevelShift, true);
      next_reset += UniformInt(rng, 1500, 4000);
    }
    c += Poisson(rng, lambdas[k % 4]);
    b.s.value[i] = c;
  }
}

// A series that changes units or regime: 1e3 (in KB/s, say) becomes 1e8 (in bytes/s) and, in half
// the series, comes back later.
void UnitChange(Builder& b, Rng& rng, int k, int64_t bound) {
  b.Init("unit_change", "", false, b.n());
  const double low = 1e3 * (1 + Uniform(rng)), high = 1e8 * (1 + Uniform(rng));
  const double rel_sd = 0.01 + 0.04 * Uniform(rng);
  const int64_t up = UniformInt(rng, 2000, 5000);
  const int64_t down = k % 2 == 0 ? UniformInt(rng, 6500, 9000) : b.n();
  for (int64_t i = 0; i < b.n(); ++i) {
    const double level = i >= up && i < down ? high : low;
    b.s.value[i] = level * (1 + rel_sd * Normal(rng));
  }
  b.Window(up, up, 2 * bound, AnomalyType::kLevelShift, true);
  if (down < b.n()) b.Window(down, down, 2 * bound, AnomalyType::kLevelShift, true);
}

}  // namespace

int64_t EpisodeBound(const DetectorOptions& options) { return 2 * options.shift_max_run; }

std::vector<std::string_view> ShapeNames() {
  return {"sparse_counts",   "poisson_low",   "idle_resume",   "bursty_bytes",
          "quantised_gauge", "flat_gauge",    "sine",          "square",
          "sawtooth",        "daily_pattern", "counter_reset", "unit_change"};
}

std::vector<ShapeSeries> GenerateShapeSuite(const ShapeSuiteConfig& config) {
  std::vector<ShapeSeries> suite;
  const int64_t bound = EpisodeBound(DetectorOptions{});
  const auto names = ShapeNames();
  for (size_t shape = 0; shape < names.size(); ++shape) {
    const bool periodic = shape >= 6 && shape <= 9;
    const int per = periodic ? 2 * config.series_per_shape : config.series_per_shape;
    for (int anomalous = 0; anomalous < 2; ++anomalous) {
      if (anomalous && shape >= 10) continue;  // the regime shapes are clean only
      for (int k = 0; k < per; ++k) {
        Rng rng(config.seed * 1000003 + shape * 7919 + static_cast<uint64_t>(anomalous) * 104729 +
                static_cast<uint64_t>(k));
        Builder b;
        b.s.value.resize(static_cast<size_t>(config.length));
        const bool a = anomalous != 0;
        switch (shape) {
          case 0:
            SparseCounts(b, rng, k, a);
            break;
          case 1:
            PoissonLow(b, rng, k, a);
            break;
          case 2:
            IdleResume(b, rng, k, a, bound);
            break;
          case 3:
            BurstyBytes(b, rng, k, a);
            break;
          case 4:
            QuantisedGauge(b, rng, k, a);
            break;
          case 5:
            FlatGauge(b, rng, k, a);
            break;
          case 6:
            Periodic(b, rng, Wave::kSine, "sine", k, a);
            break;
          case 7:
            Periodic(b, rng, Wave::kSquare, "square", k, a);
            break;
          case 8:
            Periodic(b, rng, Wave::kSawtooth, "sawtooth", k, a);
            break;
          case 9:
            Periodic(b, rng, Wave::kDaily, "daily_pattern", k, a);
            break;
          case 10:
            CounterReset(b, rng, k, bound);
            break;
          case 11:
            UnitChange(b, rng, k, bound);
            break;
          default:
            break;
        }
        suite.push_back(std::move(b.s));
      }
    }
  }
  return suite;
}

double PointwiseResult::clean_warning_share() const {
  return clean_points > 0 ? double(clean_warning) / double(clean_points) : 0.0;
}
double PointwiseResult::clean_emergency_share() const {
  return clean_points > 0 ? double(clean_emergency) / double(clean_points) : 0.0;
}
double PointwiseResult::precision() const {
  return episodes > 0 ? double(true_episodes) / double(episodes) : 1.0;
}
double PointwiseResult::recall() const {
  return windows > 0 ? double(detected) / double(windows) : 1.0;
}
double PointwiseResult::f1() const {
  const double p = precision(), r = recall();
  return p + r > 0 ? 2 * p * r / (p + r) : 0.0;
}
double PointwiseResult::early_recall() const {
  return windows > 0 ? early_sum / double(windows) : 1.0;
}

namespace {

std::string RowName(const ShapeSeries& s) {
  const bool periodic = s.shape == "sine" || s.shape == "square" || s.shape == "sawtooth" ||
                        s.shape == "daily_pattern";
  return periodic ? s.shape + " (" + s.variant + ")" : s.shape;
}

// Weight of detecting a window at relative position `rel` in [0, 1]: 1 at the start, 0.5 in the
// middle, about 0 at the end.
double EarlyWeight(double rel) {
  auto sigmoid = [](double x) { return 1 / (1 + std::exp(-x)); };
  return sigmoid(-10 * (rel - 0.5)) / sigmoid(5);
}

}  // namespace

std::vector<PointwiseResult> EvaluatePointwise(const std::vector<ShapeSeries>& suite,
                                               bool clean_only) {
  std::vector<PointwiseResult> results;
  for (const ShapeSeries& s : suite) {
    if (clean_only && s.anomalous) continue;
    const std::string name = RowName(s);
    PointwiseResult* r = nullptr;
    for (PointwiseResult& c : results) {
      if (c.name == name) r = &c;
    }
    if (r == nullptr) {
      results.push_back(PointwiseResult{});
      r = &results.back();
      r->name = name;
    }
    ++r->series;
    const int64_t bound = EpisodeBound(s.options);
    SeriesDetector detector(s.options);
    const size_t nw = s.windows.size();
    std::vector<int64_t> first_alarm(nw, -1);
    std::vector<bool> judged(nw, false);
    int64_t ep_start = -1, ep_len = 0;
    bool ep_in_window = false, ep_persistent = false;
    auto close_episode = [&]() {
      if (ep_start < 0) return;
      ++r->episodes;
      if (ep_in_window) {
        ++r->true_episodes;
      } else {
        r->longest_clean_episode = std::max(r->longest_clean_episode, ep_len);
      }
      if (ep_persistent) {
        r->longest_persistent_episode = std::max(r->longest_persistent_episode, ep_len);
        if (ep_len > bound) ++r->persistent_over_bound;
      }
      ep_start = -1;
      ep_len = 0;
      ep_in_window = ep_persistent = false;
    };
    for (size_t i = 0; i < s.value.size(); ++i) {
      const Verdict v = detector.Observe(s.time_ms[i], s.value[i]);
      if (v.warming_up || static_cast<int64_t>(i) < s.scored_from) continue;
      ++r->points;
      const auto idx = static_cast<int64_t>(i);
      const bool alarm = v.severity >= Severity::kWarning;
      bool in_window = false, in_persistent = false;
      for (size_t w = 0; w < nw; ++w) {
        const LabelledAnomaly& l = s.windows[w];
        if (idx < l.start || idx > l.end + l.tolerance) continue;
        in_window = true;
        in_persistent |= s.persistent[w];
        judged[w] = true;
        if (alarm && first_alarm[w] < 0) first_alarm[w] = idx;
      }
      if (!in_window) {
        ++r->clean_points;
        r->clean_warning += alarm;
        r->clean_emergency += v.score >= 0.95;
      }
      if (alarm) {
        if (ep_start < 0) {
          ep_start = idx;
          ep_persistent = in_persistent;
        }
        ++ep_len;
        ep_in_window |= in_window;
      } else {
        close_episode();
      }
    }
    close_episode();
    for (size_t w = 0; w < nw; ++w) {
      if (!judged[w]) continue;
      if (s.persistent[w]) {
        ++r->persistent_windows;
        continue;
      }
      ++r->windows;
      if (first_alarm[w] < 0) continue;
      ++r->detected;
      const LabelledAnomaly& l = s.windows[w];
      const double span = double(l.end + l.tolerance - l.start + 1);
      r->early_sum += EarlyWeight(double(first_alarm[w] - l.start) / span);
    }
  }
  return results;
}

std::string FormatPointwiseMarkdown(const std::vector<PointwiseResult>& results) {
  std::string out =
      "| shape | series | judged points | clean points at >= warning | episodes | precision | "
      "recall | F1 | early recall | longest false episode | persistent changes | longest "
      "episode after one |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  char line[512];
  for (const PointwiseResult& r : results) {
    std::string quality = "- | - | - | -";
    if (r.windows > 0) {
      char q[128];
      std::snprintf(q, sizeof q, "%.3f | %.3f | %.3f | %.3f", r.precision(), r.recall(), r.f1(),
                    r.early_recall());
      quality = q;
    }
    std::string persistent = "- | -";
    if (r.persistent_windows > 0) {
      char p[64];
      std::snprintf(p, sizeof p, "%lld | %lld", static_cast<long long>(r.persistent_windows),
                    static_cast<long long>(r.longest_persistent_episode));
      persistent = p;
    }
    std::snprintf(line, sizeof line, "| %s | %lld | %lld | %.3f %% | %lld | %s | %lld | %s |\n",
                  r.name.c_str(), static_cast<long long>(r.series),
                  static_cast<long long>(r.points), 100 * r.clean_warning_share(),
                  static_cast<long long>(r.episodes), quality.c_str(),
                  static_cast<long long>(r.longest_clean_episode), persistent.c_str());
    out += line;
  }
  return out;
}

std::string FormatCalibrationMarkdown(const std::vector<PointwiseResult>& results) {
  std::string out =
      "| shape (clean series) | series | clean points | score >= 0.7 | score >= 0.95 | longest "
      "false episode |\n|---|---:|---:|---:|---:|---:|\n";
  char line[256];
  for (const PointwiseResult& r : results) {
    std::snprintf(line, sizeof line, "| %s | %lld | %lld | %.3f %% | %.4f %% | %lld |\n",
                  r.name.c_str(), static_cast<long long>(r.series),
                  static_cast<long long>(r.clean_points), 100 * r.clean_warning_share(),
                  100 * r.clean_emergency_share(), static_cast<long long>(r.longest_clean_episode));
    out += line;
  }
  return out;
}

bool MeetsShapeTargets(const std::vector<PointwiseResult>& clean,
                       std::vector<std::string>* failures) {
  bool ok = true;
  char msg[256];
  auto fail = [&]() {
    ok = false;
    if (failures != nullptr) failures->push_back(msg);
  };
  for (const PointwiseResult& r : clean) {
    if (r.clean_warning_share() > 0.001) {
      std::snprintf(msg, sizeof msg, "%s: %.3f %% of clean points at >= warning > 0.1 %%",
                    r.name.c_str(), 100 * r.clean_warning_share());
      fail();
    }
    if (r.clean_emergency_share() > 0.0001) {
      std::snprintf(msg, sizeof msg, "%s: %.4f %% of clean points at >= 0.95 > 0.01 %%",
                    r.name.c_str(), 100 * r.clean_emergency_share());
      fail();
    }
    if (r.persistent_over_bound > 0) {
      std::snprintf(msg, sizeof msg,
                    "%s: %lld persistent changes raised an episode longer than the bound "
                    "(longest %lld points)",
                    r.name.c_str(), static_cast<long long>(r.persistent_over_bound),
                    static_cast<long long>(r.longest_persistent_episode));
      fail();
    }
  }
  return ok;
}

// ---- traces ----

namespace {

int64_t DaysFromCivil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

// "2023-11-16 18:15:46.6805900" (UTC) in epoch milliseconds; -1 when malformed.
int64_t ParseTraceTime(const std::string& s) {
  int y, mo, d, h, mi, sec;
  if (s.size() < 19 ||
      std::sscanf(s.c_str(), "%4d-%2d-%2d %2d:%2d:%2d", &y, &mo, &d, &h, &mi, &sec) != 6) {
    return -1;
  }
  int64_t ms = ((DaysFromCivil(y, mo, d) * 24 + h) * 60 + mi) * 60'000 + sec * 1000;
  if (s.size() > 20 && s[19] == '.') {
    int64_t scale = 100;
    for (size_t i = 20; i < s.size() && scale > 0 && s[i] >= '0' && s[i] <= '9'; ++i) {
      ms += (s[i] - '0') * scale;
      scale /= 10;
    }
  }
  return ms;
}

double P95(std::vector<double>& v) {
  const size_t k = static_cast<size_t>(std::ceil(0.95 * double(v.size()))) - 1;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

}  // namespace

std::vector<TraceSeries> LoadTraceSeries(const std::string& path, const std::string& label,
                                         int64_t bucket_ms) {
  std::ifstream in(path);
  if (!in) return {};
  std::map<int64_t, std::pair<std::vector<double>, std::vector<double>>> buckets;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t c1 = line.find(',');
    const size_t c2 = line.find(',', c1 + 1);
    if (c1 == std::string::npos || c2 == std::string::npos) continue;
    const int64_t t = ParseTraceTime(line.substr(0, c1));
    if (t < 0) continue;  // the header
    auto& b = buckets[t / bucket_ms];
    b.first.push_back(std::atof(line.c_str() + c1 + 1));
    b.second.push_back(std::atof(line.c_str() + c2 + 1));
  }
  if (buckets.size() < 3) return {};
  // The first and last buckets cover the trace only partly: dropped.
  const int64_t first = buckets.begin()->first + 1, last = buckets.rbegin()->first - 1;
  std::vector<TraceSeries> out(5);
  const char* names[] = {"request_rate", "prompt_tokens", "generated_tokens", "prompt_tokens_p95",
                         "generated_tokens_p95"};
  for (size_t i = 0; i < out.size(); ++i) out[i].name = label + " " + names[i];
  for (int64_t b = first; b <= last; ++b) {
    const int64_t t = (b + 1) * bucket_ms;  // the bucket's end, as a window summary reports it
    auto it = buckets.find(b);
    double count = 0, prompt = 0, generated = 0;
    if (it != buckets.end()) {
      count = static_cast<double>(it->second.first.size());
      for (double x : it->second.first) prompt += x;
      for (double x : it->second.second) generated += x;
    }
    const double sums[] = {count, prompt, generated};
    for (size_t i = 0; i < 3; ++i) {
      out[i].time_ms.push_back(t);
      out[i].value.push_back(sums[i]);
    }
    if (it != buckets.end()) {
      out[3].time_ms.push_back(t);
      out[3].value.push_back(P95(it->second.first));
      out[4].time_ms.push_back(t);
      out[4].value.push_back(P95(it->second.second));
    }
  }
  return out;
}

bool WriteTraceSeriesCsv(const std::vector<TraceSeries>& series, const std::string& path) {
  std::ofstream out(path);
  if (!out) return false;
  out << "series,timestamp_ms,value\n";
  for (const TraceSeries& s : series) {
    for (size_t i = 0; i < s.value.size(); ++i) {
      char v[64];
      std::snprintf(v, sizeof v, "%.17g", s.value[i]);
      out << s.name << ',' << s.time_ms[i] << ',' << v << '\n';
    }
  }
  return static_cast<bool>(out);
}

std::vector<TraceSeries> ReadTraceSeriesCsv(const std::string& path) {
  std::ifstream in(path);
  std::vector<TraceSeries> out;
  std::string line;
  while (std::getline(in, line)) {
    const size_t c1 = line.find(',');
    const size_t c2 = line.find(',', c1 + 1);
    if (c1 == std::string::npos || c2 == std::string::npos || line.rfind("series,", 0) == 0) {
      continue;
    }
    const std::string name = line.substr(0, c1);
    if (out.empty() || out.back().name != name) {
      out.push_back(TraceSeries{});
      out.back().name = name;
    }
    out.back().time_ms.push_back(std::atoll(line.c_str() + c1 + 1));
    out.back().value.push_back(std::atof(line.c_str() + c2 + 1));
  }
  return out;
}

std::vector<TraceResult> EvaluateTraces(const std::vector<TraceSeries>& series,
                                        const DetectorOptions& options) {
  std::vector<TraceResult> out;
  for (const TraceSeries& s : series) {
    TraceResult r;
    r.name = s.name;
    SeriesDetector detector(options);
    for (size_t i = 0; i < s.value.size(); ++i) {
      const Verdict v = detector.Observe(s.time_ms[i], s.value[i]);
      if (v.warming_up) continue;
      ++r.points;
      r.warning += v.severity >= Severity::kWarning;
      r.emergency += v.score >= 0.95;
    }
    out.push_back(r);
  }
  return out;
}

std::string FormatTraceMarkdown(const std::vector<TraceResult>& results) {
  std::string out =
      "| series | judged points | at >= warning | share | score >= 0.95 |\n"
      "|---|---:|---:|---:|---:|\n";
  char line[256];
  int64_t points = 0, warning = 0, emergency = 0;
  for (const TraceResult& r : results) {
    std::snprintf(line, sizeof line, "| %s | %lld | %lld | %.2f %% | %lld |\n", r.name.c_str(),
                  static_cast<long long>(r.points), static_cast<long long>(r.warning),
                  100 * r.warning_share(), static_cast<long long>(r.emergency));
    out += line;
    points += r.points;
    warning += r.warning;
    emergency += r.emergency;
  }
  std::snprintf(line, sizeof line, "| **all** | %lld | %lld | %.2f %% | %lld |\n",
                static_cast<long long>(points), static_cast<long long>(warning),
                points > 0 ? 100.0 * double(warning) / double(points) : 0.0,
                static_cast<long long>(emergency));
  out += line;
  return out;
}

}  // namespace inferscope::bench
