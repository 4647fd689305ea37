// detector_verdicts: writes every verdict of SeriesDetector over the evaluation suites (the
// synthetic suite of bench/anomaly_harness.h, the real-shape suite of bench/anomaly_shapes.h and
// the committed trace-derived series), one line per point, so that two builds of the detectors
// can be compared verdict by verdict (scripts/compare_verdicts.py). Used to show that a change
// meant to be numerically neutral (a cost change) changes no verdict beyond floating-point noise.
//
//   detector_verdicts [--trace-data FILE] [--traces DIR] > verdicts.txt
//
// Line format: `S <suite> <series index> <name>` starts a series; each point is
// `<index> <warming 0/1> <severity> <type> <score %.9g> <expected %.9g>`.

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "bench/anomaly_harness.h"
#include "bench/anomaly_shapes.h"

namespace {

using namespace inferscope;
using namespace inferscope::bench;

void Run(const char* suite, size_t index, const std::string& name, const DetectorOptions& options,
         const std::vector<int64_t>& time_ms, const std::vector<double>& value) {
  std::printf("S %s %zu %s\n", suite, index, name.c_str());
  SeriesDetector detector(options);
  for (size_t i = 0; i < value.size(); ++i) {
    const Verdict v = detector.Observe(time_ms[i], value[i]);
    std::printf("%zu %d %d %d %.9g %.9g\n", i, v.warming_up ? 1 : 0, static_cast<int>(v.severity),
                static_cast<int>(v.type), v.score, v.expected);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string trace_data =
      std::string(INFERSCOPE_SOURCE_DIR) + "/tests/data/azure_llm_2023_series.csv";
  std::string traces_dir = "/work/shared/traces/azure-llm-inference-2023";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--trace-data" && i + 1 < argc) {
      trace_data = argv[++i];
    } else if (arg == "--traces" && i + 1 < argc) {
      traces_dir = argv[++i];
    } else {
      std::fprintf(stderr, "usage: detector_verdicts [--trace-data FILE] [--traces DIR]\n");
      return 2;
    }
  }
  const std::vector<LabelledSeries> synthetic = GenerateSuite(SuiteConfig{});
  for (size_t i = 0; i < synthetic.size(); ++i) {
    const LabelledSeries& s = synthetic[i];
    Run("synthetic", i, std::string(AnomalyTypeName(s.scenario)), s.options, s.time_ms, s.value);
  }
  const std::vector<ShapeSeries> shapes = GenerateShapeSuite(ShapeSuiteConfig{});
  for (size_t i = 0; i < shapes.size(); ++i) {
    const ShapeSeries& s = shapes[i];
    Run("shape", i, s.shape, s.options, s.time_ms, s.value);
  }
  std::vector<TraceSeries> traces = ReadTraceSeriesCsv(trace_data);
  if (traces.empty()) std::fprintf(stderr, "no trace series in %s\n", trace_data.c_str());
  // Per-second series from the raw traces when they are present (not committed: 10^5 points).
  for (const char* service : {"conv", "code"}) {
    const std::vector<TraceSeries> s =
        LoadTraceSeries(traces_dir + "/" + service + ".csv", std::string(service) + " 1s", 1000);
    traces.insert(traces.end(), s.begin(), s.end());
  }
  for (size_t i = 0; i < traces.size(); ++i) {
    std::string name = traces[i].name;
    for (char& c : name) c = c == ' ' ? '_' : c;
    Run("trace", i, name, DetectorOptions{}, traces[i].time_ms, traces[i].value);
  }
  // The rarest sparse-count case of tests/operators/detector_shapes_test.cc
  // (RareBurstsOfSmallCountsAreLearned): zeros with bursts of small integers starting with
  // probability 0.5 %, six seeds.
  for (uint64_t seed = 20; seed < 26; ++seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(0, 1);
    std::vector<double> v(10'000, 0.0);
    std::vector<int64_t> t(v.size());
    int left = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      t[i] = 1'700'006'400'000 + static_cast<int64_t>(i) * 60'000;
      if (left == 0 && u(rng) < 0.005) left = 1 + static_cast<int>(u(rng) * 6);
      if (left > 0) {
        v[i] = 1 + static_cast<int>(u(rng) * 9);
        --left;
      }
    }
    Run("rare_bursts", seed, "sparse_counts_0.5%", DetectorOptions{}, t, v);
  }
  return 0;
}
