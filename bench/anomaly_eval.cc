// anomaly_eval: runs the streaming detectors over the labelled synthetic suite of
// bench/anomaly_harness.h (per-scenario table, issue 4), the real-shape suite of
// bench/anomaly_shapes.h (point-wise table and calibration per shape, issue 10) and the per-minute
// series derived from the real request traces. --check exits 1 when a target is missed.
//
//   anomaly_eval [--series N] [--length N] [--seed N] [--check] [--by-noise]
//                [--traces DIR] [--write-trace-data FILE]
//
// --traces DIR reads DIR/conv.csv and DIR/code.csv (default /work/shared/traces/
// azure-llm-inference-2023; the table is skipped when they are missing) and judges their
// per-minute, per-10-second and per-second series; --write-trace-data FILE writes the per-minute
// and per-10-second series (the committed tests/data/azure_llm_2023_series.csv) and exits.

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/anomaly_harness.h"
#include "bench/anomaly_shapes.h"

namespace {

using namespace inferscope::bench;

std::vector<TraceSeries> LoadTraces(const std::string& dir, int64_t bucket_ms,
                                    const std::string& suffix) {
  std::vector<TraceSeries> all;
  for (const char* service : {"conv", "code"}) {
    std::vector<TraceSeries> s =
        LoadTraceSeries(dir + "/" + service + ".csv", std::string(service) + suffix, bucket_ms);
    all.insert(all.end(), s.begin(), s.end());
  }
  return all;
}

}  // namespace

int main(int argc, char** argv) {
  SuiteConfig config;
  ShapeSuiteConfig shape_config;
  bool check = false;
  bool by_noise = false;
  std::string traces = "/work/shared/traces/azure-llm-inference-2023";
  std::string write_trace_data;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--series") {
      config.series_per_scenario = std::atoi(next());
    } else if (arg == "--length") {
      config.length = std::atoll(next());
    } else if (arg == "--seed") {
      config.seed = std::strtoull(next(), nullptr, 10);
      shape_config.seed = config.seed;
    } else if (arg == "--check") {
      check = true;
    } else if (arg == "--by-noise") {
      by_noise = true;
    } else if (arg == "--traces") {
      traces = next();
    } else if (arg == "--write-trace-data") {
      write_trace_data = next();
    } else {
      std::fprintf(stderr,
                   "usage: anomaly_eval [--series N] [--length N] [--seed N] [--check] "
                   "[--by-noise] [--traces DIR] [--write-trace-data FILE]\n");
      return 2;
    }
  }
  if (config.series_per_scenario < 1 || config.length < 1500) {
    std::fprintf(stderr, "--series must be >= 1 and --length >= 1500\n");
    return 2;
  }
  if (!write_trace_data.empty()) {
    std::vector<TraceSeries> series = LoadTraces(traces, 60'000, "");
    std::vector<TraceSeries> fine = LoadTraces(traces, 10'000, " 10s");
    series.insert(series.end(), fine.begin(), fine.end());
    if (series.empty() || !WriteTraceSeriesCsv(series, write_trace_data)) {
      std::fprintf(stderr, "cannot derive %s from %s\n", write_trace_data.c_str(), traces.c_str());
      return 2;
    }
    return 0;
  }

  // 1. The synthetic suite (issue 4).
  const std::vector<LabelledSeries> suite = GenerateSuite(config);
  std::printf("## Synthetic suite\n\nseed %llu, %d series per scenario, %lld grid points each\n\n",
              static_cast<unsigned long long>(config.seed), config.series_per_scenario,
              static_cast<long long>(config.length));
  const EvalReport report = Evaluate(suite);
  std::printf("%s", FormatMarkdown(report).c_str());
  if (by_noise) {
    for (Noise noise : {Noise::kGaussian, Noise::kLaplace, Noise::kStudentT, Noise::kAr1}) {
      std::vector<LabelledSeries> part;
      for (const LabelledSeries& s : suite) {
        if (s.noise == noise) part.push_back(s);
      }
      const EvalReport sub = Evaluate(part);
      std::printf("\nnoise %s:\n\n%s", std::string(NoiseName(noise)).c_str(),
                  FormatMarkdown(sub).c_str());
      for (const ScenarioResult& r : sub.scenarios) {
        std::printf("  %s false alerts by type:", r.name.c_str());
        for (int t = 0; t < inferscope::kNumAnomalyTypes; ++t) {
          if (r.false_by_type[t] > 0) {
            std::printf(
                " %s=%lld",
                std::string(inferscope::AnomalyTypeName(static_cast<inferscope::AnomalyType>(t)))
                    .c_str(),
                static_cast<long long>(r.false_by_type[t]));
          }
        }
        std::printf("\n");
      }
    }
  }
  std::vector<std::string> failures;
  bool ok = MeetsTargets(report, &failures);

  // 2. The real-shape suite (issue 10): point-wise, then calibration on the clean series.
  const std::vector<ShapeSeries> shapes = GenerateShapeSuite(shape_config);
  std::printf(
      "\n## Real-shape suite (point-wise)\n\n%d clean + %d anomalous series per shape (twice as "
      "many for the periodic shapes, half with a configured season), %lld points each at 60 s\n\n",
      shape_config.series_per_shape, shape_config.series_per_shape,
      static_cast<long long>(shape_config.length));
  std::printf("%s", FormatPointwiseMarkdown(EvaluatePointwise(shapes)).c_str());
  const std::vector<PointwiseResult> clean = EvaluatePointwise(shapes, /*clean_only=*/true);
  std::printf("\n## Calibration (clean series of every shape)\n\n%s",
              FormatCalibrationMarkdown(clean).c_str());
  ok &= MeetsShapeTargets(clean, &failures);

  // 3. The real request traces, as per-minute (and finer) series.
  const struct {
    int64_t bucket_ms;
    const char* suffix;
  } buckets[] = {{60'000, ""}, {10'000, " 10s"}, {1'000, " 1s"}};
  for (const auto& b : buckets) {
    const std::vector<TraceSeries> series = LoadTraces(traces, b.bucket_ms, b.suffix);
    if (series.empty()) {
      std::printf("\n(traces not found in %s: trace table skipped)\n", traces.c_str());
      break;
    }
    for (int64_t warmup : {int64_t{30}, int64_t{10}}) {
      if (b.bucket_ms != 60'000 && warmup != 30) continue;
      inferscope::DetectorOptions options;
      options.warmup_points = warmup;
      const std::vector<TraceResult> results = EvaluateTraces(series, options);
      std::printf("\n## Traces, %lld ms buckets, warm-up %lld points\n\n%s",
                  static_cast<long long>(b.bucket_ms), static_cast<long long>(warmup),
                  FormatTraceMarkdown(results).c_str());
      int64_t points = 0, warning = 0;
      for (const TraceResult& r : results) points += r.points, warning += r.warning;
      if (points > 0 && double(warning) > 0.005 * double(points)) {
        ok = false;
        char msg[160];
        std::snprintf(msg, sizeof msg, "traces (%lld ms, warm-up %lld): %.2f %% flagged > 0.5 %%",
                      static_cast<long long>(b.bucket_ms), static_cast<long long>(warmup),
                      100.0 * double(warning) / double(points));
        failures.push_back(msg);
      }
    }
  }

  std::printf("\ntargets: %s\n", ok ? "met" : "MISSED");
  for (const std::string& f : failures) std::printf("  %s\n", f.c_str());
  return check && !ok ? 1 : 0;
}
