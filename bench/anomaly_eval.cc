// anomaly_eval: runs the streaming detectors over the labelled suite of bench/anomaly_harness.h and
// prints the per-scenario Markdown table. --check exits 1 when an issue-4 target is missed.
//
//   anomaly_eval [--series N] [--length N] [--seed N] [--check] [--by-noise]

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/anomaly_harness.h"

int main(int argc, char** argv) {
  using namespace inferscope::bench;
  SuiteConfig config;
  bool check = false;
  bool by_noise = false;
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
    } else if (arg == "--check") {
      check = true;
    } else if (arg == "--by-noise") {
      by_noise = true;
    } else {
      std::fprintf(
          stderr,
          "usage: anomaly_eval [--series N] [--length N] [--seed N] [--check] [--by-noise]\n");
      return 2;
    }
  }
  if (config.series_per_scenario < 1 || config.length < 1500) {
    std::fprintf(stderr, "--series must be >= 1 and --length >= 1500\n");
    return 2;
  }
  const std::vector<LabelledSeries> suite = GenerateSuite(config);
  std::printf("seed %llu, %d series per scenario, %lld grid points each\n\n",
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
  const bool ok = MeetsTargets(report, &failures);
  std::printf("\ntargets: %s\n", ok ? "met" : "MISSED");
  for (const std::string& f : failures) std::printf("  %s\n", f.c_str());
  return check && !ok ? 1 : 0;
}
