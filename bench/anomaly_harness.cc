#include "bench/anomaly_harness.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numbers>
#include <random>

namespace inferscope::bench {
namespace {

constexpr int64_t kIntervalMs = 60'000;
constexpr int64_t kSeasonGrid = 48;     // seasonal period in grid points
constexpr int64_t kFirstAnomaly = 500;  // grid index; leaves warm-up and tail learning room
constexpr int64_t kAnomalySpacing = 600;
constexpr double kBaseLevel = 100;

struct Scenario {
  const char* name;
  AnomalyType type;
  bool seasonal;
};
constexpr Scenario kScenarios[] = {
    {"spike", AnomalyType::kSpike, false},
    {"dip", AnomalyType::kDip, false},
    {"level_shift", AnomalyType::kLevelShift, false},
    {"drift", AnomalyType::kDrift, false},
    {"seasonal_break", AnomalyType::kSeasonalBreak, true},
    {"rate_of_change", AnomalyType::kRateOfChange, false},
    {"clean", AnomalyType::kNone, false},
    {"clean_seasonal", AnomalyType::kNone, true},
};

// Unit-variance noise of the given kind.
class NoiseSource {
 public:
  NoiseSource(Noise kind, std::mt19937_64& rng) : kind_(kind), rng_(rng) {}
  double Next() {
    switch (kind_) {
      case Noise::kGaussian:
        return normal_(rng_);
      case Noise::kLaplace: {
        double u = uniform_(rng_) - 0.5;
        double b = 1 / std::numbers::sqrt2;
        return -b * (u < 0 ? -1 : 1) * std::log(1 - 2 * std::fabs(u));
      }
      case Noise::kStudentT:
        return student_(rng_) * std::sqrt(3.0 / 5.0);  // df 5 has variance 5/3
      case Noise::kAr1:
        ar_ = 0.5 * ar_ + std::sqrt(1 - 0.25) * normal_(rng_);
        return ar_;
    }
    return 0;
  }

 private:
  Noise kind_;
  std::mt19937_64& rng_;
  std::normal_distribution<double> normal_{0, 1};
  std::uniform_real_distribution<double> uniform_{0, 1};
  std::student_t_distribution<double> student_{5};
  double ar_ = 0;
};

double SeasonalShape(double phase) {  // phase in [0, 1)
  const double x = 2 * std::numbers::pi * phase;
  return std::sin(x) + 0.5 * std::sin(2 * x + 1);
}

LabelledSeries MakeSeries(const Scenario& sc, int k, const SuiteConfig& config) {
  LabelledSeries s;
  s.scenario = sc.type;
  s.seasonal = sc.seasonal;
  s.noise = static_cast<Noise>(k % 4);
  s.sampling = static_cast<Sampling>((k / 4) % 3);
  std::mt19937_64 rng(config.seed * 1000003 + static_cast<uint64_t>(sc.type) * 7919 +
                      (sc.seasonal ? 104729 : 0) + static_cast<uint64_t>(k));
  std::uniform_real_distribution<double> u(0, 1);
  NoiseSource noise(s.noise, rng);
  const int64_t n = config.length;

  // The clean signal on the grid.
  std::vector<double> base(n, kBaseLevel);
  std::vector<double> season(n, 0);
  const double amplitude = 4 + 4 * u(rng);
  const double phase0 = u(rng);
  if (sc.seasonal) {
    for (int64_t i = 0; i < n; ++i) {
      season[i] = amplitude * SeasonalShape(std::fmod(phase0 + double(i) / kSeasonGrid, 1.0));
    }
    s.options.season_ms = kSeasonGrid * kIntervalMs;
    s.options.season_points = kSeasonGrid;
  }
  std::vector<double> add(n, 0);  // anomaly component
  struct GridLabel {
    int64_t start, end, tolerance;
  };
  std::vector<GridLabel> labels;
  if (sc.type != AnomalyType::kNone) {
    double level = 0;  // permanent offset from earlier shifts / drifts
    for (int64_t start = kFirstAnomaly + static_cast<int64_t>(u(rng) * 50); start + 400 < n;
         start += kAnomalySpacing + static_cast<int64_t>(u(rng) * 100)) {
      const double sign = u(rng) < 0.5 ? -1 : 1;
      GridLabel g{start, start, 10};
      switch (sc.type) {
        case AnomalyType::kSpike:
        case AnomalyType::kDip: {
          const int64_t len = u(rng) < 0.7 ? 1 : 2;
          const double m = (sc.type == AnomalyType::kSpike ? 1 : -1) * (8 + 6 * u(rng));
          for (int64_t i = start; i < start + len; ++i) add[i] += m;
          g.end = start + len - 1;
          break;
        }
        case AnomalyType::kLevelShift: {
          level += sign * (4 + 4 * u(rng));
          for (int64_t i = start; i < n; ++i) add[i] = level;
          g.tolerance = 20;
          break;
        }
        case AnomalyType::kDrift: {
          const int64_t len = 100 + static_cast<int64_t>(150 * u(rng));
          const double total = sign * (4 + 4 * u(rng));
          for (int64_t i = start; i < n; ++i) {
            add[i] = level + total * std::min(1.0, double(i - start + 1) / double(len));
          }
          level += total;
          g.end = start + len - 1;
          g.tolerance = 20;
          break;
        }
        case AnomalyType::kSeasonalBreak: {
          const bool invert = u(rng) < 0.5;
          for (int64_t i = start; i < start + kSeasonGrid; ++i) {
            add[i] = invert ? -2 * season[i] : -season[i];
          }
          g.end = start + kSeasonGrid - 1;
          g.tolerance = 10;
          break;
        }
        case AnomalyType::kRateOfChange: {
          const int64_t len = 8;
          const double total = sign * (10 + 6 * u(rng));
          for (int64_t i = start; i < n; ++i) {
            add[i] = level + total * std::min(1.0, double(i - start + 1) / double(len));
          }
          level += total;
          g.end = start + len - 1;
          g.tolerance = 10;
          break;
        }
        default:
          break;
      }
      labels.push_back(g);
    }
  }

  // Sampling: which grid points exist and when.
  std::vector<bool> keep(n, true);
  if (s.sampling == Sampling::kMissing) {
    for (int64_t i = 1; i < n; ++i) keep[i] = u(rng) >= 0.05;
    for (int gap = 0; gap < 3; ++gap) {  // a few outages of 10-30 points
      const int64_t at = 100 + static_cast<int64_t>(u(rng) * double(n - 200));
      const int64_t len = 10 + static_cast<int64_t>(u(rng) * 20);
      for (int64_t i = at; i < std::min(n, at + len); ++i) keep[i] = false;
    }
    for (const GridLabel& g : labels) keep[g.start] = true;  // the onset itself is observed
  }
  std::vector<int64_t> point_of(n, -1);
  for (int64_t i = 0; i < n; ++i) {
    const double x = base[i] + season[i] + add[i] + noise.Next();
    if (!keep[i]) continue;
    int64_t t = i * kIntervalMs;
    if (s.sampling == Sampling::kIrregular) t += static_cast<int64_t>((u(rng) - 0.5) * 50'000);
    point_of[i] = static_cast<int64_t>(s.value.size());
    s.time_ms.push_back(1'700'000'000'000 + t);
    s.value.push_back(x);
  }
  for (const GridLabel& g : labels) {
    LabelledAnomaly a;
    a.type = sc.type;
    a.start = point_of[g.start];
    int64_t end = g.end;
    while (end > g.start && point_of[end] < 0) --end;
    a.end = point_of[end];
    a.tolerance = g.tolerance;
    s.anomalies.push_back(a);
  }
  return s;
}

}  // namespace

std::string_view NoiseName(Noise noise) {
  switch (noise) {
    case Noise::kGaussian:
      return "gaussian";
    case Noise::kLaplace:
      return "laplace";
    case Noise::kStudentT:
      return "student_t5";
    case Noise::kAr1:
      return "ar1_0.5";
  }
  return "?";
}

std::string_view SamplingName(Sampling sampling) {
  switch (sampling) {
    case Sampling::kRegular:
      return "regular";
    case Sampling::kIrregular:
      return "irregular";
    case Sampling::kMissing:
      return "missing";
  }
  return "?";
}

std::vector<LabelledSeries> GenerateSuite(const SuiteConfig& config) {
  std::vector<LabelledSeries> suite;
  for (const Scenario& sc : kScenarios) {
    for (int k = 0; k < config.series_per_scenario; ++k) suite.push_back(MakeSeries(sc, k, config));
  }
  return suite;
}

double ScenarioResult::precision() const {
  return alerts > 0 ? double(true_alerts) / double(alerts) : 1.0;
}
double ScenarioResult::recall() const {
  return anomalies > 0 ? double(detected) / double(anomalies) : 1.0;
}
double ScenarioResult::f1() const {
  const double p = precision(), r = recall();
  return p + r > 0 ? 2 * p * r / (p + r) : 0.0;
}
double ScenarioResult::mean_delay() const {
  return detected > 0 ? delay_sum / double(detected) : 0.0;
}
double ScenarioResult::false_alerts_per_10k() const {
  return points > 0 ? 1e4 * double(alerts - true_alerts) / double(points) : 0.0;
}

const ScenarioResult* EvalReport::Find(std::string_view name) const {
  for (const ScenarioResult& r : scenarios) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

EvalReport Evaluate(const std::vector<LabelledSeries>& suite) {
  EvalReport report;
  for (const Scenario& sc : kScenarios) {
    ScenarioResult r;
    r.name = sc.name;
    r.type = sc.type;
    r.seasonal = sc.seasonal;
    report.scenarios.push_back(r);
  }
  for (const LabelledSeries& s : suite) {
    ScenarioResult* r = nullptr;
    for (ScenarioResult& c : report.scenarios) {
      if (c.type == s.scenario && c.seasonal == s.seasonal) r = &c;
    }
    if (r == nullptr) continue;
    ++r->series;
    SeriesDetector detector(s.options);
    std::vector<int64_t> first_alert(s.anomalies.size(), -1);
    std::vector<bool> matched(s.anomalies.size(), false);
    bool was_alerting = false;
    for (size_t i = 0; i < s.value.size(); ++i) {
      const Verdict v = detector.Observe(s.time_ms[i], s.value[i]);
      if (v.warming_up) continue;
      ++r->points;
      const bool alerting = v.severity >= Severity::kWarning;
      const bool rising = alerting && !was_alerting;
      was_alerting = alerting;
      const auto idx = static_cast<int64_t>(i);
      bool in_window = false;
      for (size_t a = 0; a < s.anomalies.size(); ++a) {
        const LabelledAnomaly& l = s.anomalies[a];
        if (idx < l.start || idx > l.end + l.tolerance) continue;
        in_window = true;
        if (rising && first_alert[a] < 0) first_alert[a] = idx;
        if (alerting && v.type == l.type) matched[a] = true;
      }
      if (rising) {
        ++r->alerts;
        if (in_window) {
          ++r->true_alerts;
        } else {
          ++r->false_by_type[static_cast<int>(v.type)];
        }
      }
    }
    for (size_t a = 0; a < s.anomalies.size(); ++a) {
      ++r->anomalies;
      if (first_alert[a] < 0) continue;
      ++r->detected;
      r->delay_sum += double(first_alert[a] - s.anomalies[a].start);
      if (matched[a]) ++r->type_matched;
    }
  }
  return report;
}

std::string FormatMarkdown(const EvalReport& report) {
  std::string out =
      "| scenario | series | anomalies | precision | recall | F1 | mean delay (points) | type "
      "match "
      "| false alerts / 10k points |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  char line[512];
  for (const ScenarioResult& r : report.scenarios) {
    if (r.type == AnomalyType::kNone) {
      std::snprintf(line, sizeof line, "| %s | %lld | - | - | - | - | - | - | %.2f |\n",
                    r.name.c_str(), static_cast<long long>(r.series), r.false_alerts_per_10k());
    } else {
      std::snprintf(
          line, sizeof line, "| %s | %lld | %lld | %.3f | %.3f | %.3f | %.2f | %.2f | %.2f |\n",
          r.name.c_str(), static_cast<long long>(r.series), static_cast<long long>(r.anomalies),
          r.precision(), r.recall(), r.f1(), r.mean_delay(),
          r.detected > 0 ? double(r.type_matched) / double(r.detected) : 0.0,
          r.false_alerts_per_10k());
    }
    out += line;
  }
  return out;
}

bool MeetsTargets(const EvalReport& report, std::vector<std::string>* failures) {
  bool ok = true;
  auto fail = [&](std::string msg) {
    ok = false;
    if (failures != nullptr) failures->push_back(std::move(msg));
  };
  auto f1_at_least = [&](const char* name, double target) {
    const ScenarioResult* r = report.Find(name);
    if (r == nullptr || r->f1() < target) {
      fail(std::string(name) + ": F1 " + std::to_string(r ? r->f1() : 0.0) + " < " +
           std::to_string(target));
    }
  };
  f1_at_least("spike", 0.9);
  f1_at_least("level_shift", 0.9);
  f1_at_least("drift", 0.8);
  f1_at_least("seasonal_break", 0.8);
  if (const ScenarioResult* r = report.Find("level_shift"); r == nullptr || r->mean_delay() > 5) {
    fail("level_shift: mean delay " + std::to_string(r ? r->mean_delay() : 0.0) + " > 5 points");
  }
  for (const char* name : {"clean", "clean_seasonal"}) {
    const ScenarioResult* r = report.Find(name);
    if (r == nullptr || r->false_alerts_per_10k() > 1.0) {
      fail(std::string(name) + ": " + std::to_string(r ? r->false_alerts_per_10k() : 0.0) +
           " false alerts per 10k points > 1");
    }
  }
  return ok;
}

}  // namespace inferscope::bench
