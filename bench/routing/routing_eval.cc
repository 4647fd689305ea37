// routing_eval: every registered routing policy over every scenario, with synthetic heavy-tailed
// arrivals and with the replayed Azure conversation trace; prints the results as Markdown
// (bench/routing/README.md). Fixed seeds: the same command prints the same table.
//
//   routing_eval [--trace conv.csv] [--arrivals synthetic|trace|both] [--scenario NAME]
//                [--policy NAME] [--seed N] [--duration-scale X] [--rate-scale X]
//   INFERSCOPE_ROUTING_DECISIONS=FILE appends every decision with a confidence to FILE (CSV;
//   harness.h, RunOptions::decisions_path). Off when unset.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "bench/routing/harness.h"
#include "bench/routing/registry.h"
#include "sim/trace.h"

namespace {

using namespace inferscope;
using namespace inferscope::bench::routing;

std::string Fmt(double v, const char* format) {
  if (std::isnan(v)) return "—";
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

int Usage() {
  std::fprintf(
      stderr,
      "usage: routing_eval [--trace FILE] [--arrivals synthetic|trace|both] "
      "[--scenario NAME] [--policy NAME] [--seed N] [--duration-scale X] [--rate-scale X]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string trace_path =
      INFERSCOPE_SOURCE_DIR "/../shared/traces/azure-llm-inference-2023/conv.csv";
  std::string arrivals = "both", only_scenario, only_policy;
  RunOptions options;
  // Diagnostic dump of the learner's decisions (harness.h, RunOptions::decisions_path).
  if (const char* dump = std::getenv("INFERSCOPE_ROUTING_DECISIONS"); dump != nullptr) {
    options.decisions_path = dump;
  }
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (i + 1 >= argc) return Usage();
    const char* v = argv[++i];
    if (a == "--trace") {
      trace_path = v;
    } else if (a == "--arrivals") {
      arrivals = v;
    } else if (a == "--scenario") {
      only_scenario = v;
    } else if (a == "--policy") {
      only_policy = v;
    } else if (a == "--seed") {
      options.seed = std::strtoull(v, nullptr, 10);
    } else if (a == "--rate-scale") {
      options.rate_scale = std::strtod(v, nullptr);
      if (!(options.rate_scale > 0)) return Usage();
    } else if (a == "--duration-scale") {
      options.duration_scale = std::strtod(v, nullptr);
      if (!(options.duration_scale > 0)) return Usage();
    } else {
      return Usage();
    }
  }
  if (arrivals != "synthetic" && arrivals != "trace" && arrivals != "both") return Usage();
  std::vector<ArrivalKind> kinds;
  if (arrivals != "trace") kinds.push_back(ArrivalKind::kSynthetic);
  std::vector<sim::TraceRecord> trace;
  if (arrivals != "synthetic") {
    Result<std::vector<sim::TraceRecord>> r = sim::ReadAzureTrace(trace_path);
    if (!r.ok()) {
      std::fprintf(stderr, "routing_eval: %s (pass --trace FILE or --arrivals synthetic)\n",
                   r.status().ToString().c_str());
      return 1;
    }
    trace = std::move(*r);
    options.trace = &trace;
    kinds.push_back(ArrivalKind::kTrace);
  }
  std::vector<std::string_view> policies;
  for (const PolicyInfo& p : Policies()) {
    if (only_policy.empty() || p.name == only_policy) policies.push_back(p.name);
  }
  std::vector<Scenario> scenarios;
  for (Scenario& s : Scenarios()) {
    if (only_scenario.empty() || s.name == only_scenario) scenarios.push_back(std::move(s));
  }
  if (policies.empty() || scenarios.empty()) {
    std::fprintf(stderr, "routing_eval: no such policy or scenario\n");
    return 2;
  }

  const auto start = std::chrono::steady_clock::now();
  // regret[kind][scenario][policy]
  std::map<std::string, std::map<std::string, double>> summary[2];
  std::printf(
      "# Routing evaluation\n\nseed %llu, duration x%.2f, gauges %.0f ms late, quality "
      "feedback for %.0f %% of requests %.0f s late; trace %s (%zu records)\n",
      static_cast<unsigned long long>(options.seed), options.duration_scale, options.gauge_delay_ms,
      options.quality_fraction * 100, options.quality_delay_ms / 1000,
      trace.empty() ? "-" : trace_path.c_str(), trace.size());
  for (ArrivalKind kind : kinds) {
    options.arrivals = kind;
    for (const Scenario& s : scenarios) {
      std::printf("\n### %s, %s arrivals (%s; %.0f req/s, %.0f min, strategy %s)\n\n",
                  s.name.c_str(), std::string(ArrivalKindName(kind)).c_str(), s.description.c_str(),
                  s.rate_per_s, s.duration_s * options.duration_scale / 60,
                  std::string(StrategyName(s.strategy)).c_str());
      std::printf(
          "| policy | regret | ttft p50 ms | ttft p95 ms | e2e p50 ms | e2e p95 ms | success | "
          "cost $ | quality | unhealthy | before det. | after det. | shift s | undetected | "
          "any fault | any fault after det. | cap. viol. | ECE |\n|---|---:|---:|---:|---:|---:|"
          "---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
      for (std::string_view p : policies) {
        Result<PolicyMetrics> m = RunPolicy(s, p, options);
        if (!m.ok()) {
          std::fprintf(stderr, "routing_eval: %s\n", m.status().ToString().c_str());
          return 1;
        }
        summary[kind == ArrivalKind::kTrace][s.name][std::string(p)] = m->mean_regret;
        std::printf(
            "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s "
            "| %llu | %s |\n",
            std::string(p).c_str(), Fmt(m->mean_regret, "%.4f").c_str(),
            Fmt(m->ttft_p50_ms, "%.0f").c_str(), Fmt(m->ttft_p95_ms, "%.0f").c_str(),
            Fmt(m->e2e_p50_ms, "%.0f").c_str(), Fmt(m->e2e_p95_ms, "%.0f").c_str(),
            Fmt(m->success_rate * 100, "%.2f %%").c_str(), Fmt(m->cost_usd, "%.2f").c_str(),
            Fmt(m->mean_quality, "%.3f").c_str(),
            Fmt(m->unhealthy_fraction * 100, "%.1f %%").c_str(),
            Fmt(m->unhealthy_before * 100, "%.1f %%").c_str(),
            Fmt(m->unhealthy_after * 100, "%.2f %%").c_str(),
            Fmt(m->shift_ms / 1000, "%.1f").c_str(),
            m->episodes == 0
                ? "—"
                : (std::to_string(m->undetected) + "/" + std::to_string(m->episodes)).c_str(),
            Fmt(m->failing_fraction * 100, "%.1f %%").c_str(),
            Fmt(m->failing_after * 100, "%.2f %%").c_str(),
            static_cast<unsigned long long>(m->capability_violations), Fmt(m->ece, "%.3f").c_str());
        std::fflush(stdout);
      }
    }
  }
  // Summary: mean regret per scenario, the lowest of the policies other than the oracles in bold.
  for (ArrivalKind kind : kinds) {
    const auto& table = summary[kind == ArrivalKind::kTrace];
    std::printf(
        "\n### Mean regret per decision, %s arrivals (lowest non-oracle in bold)\n\n| policy |",
        std::string(ArrivalKindName(kind)).c_str());
    for (const Scenario& s : scenarios) std::printf(" %s |", s.name.c_str());
    std::printf("\n|---|");
    for (size_t i = 0; i < scenarios.size(); ++i) std::printf("---:|");
    std::printf("\n");
    for (std::string_view p : policies) {
      std::printf("| %s |", std::string(p).c_str());
      for (const Scenario& s : scenarios) {
        const auto& row = table.at(s.name);
        double best = INFINITY;
        for (const auto& [name, r] : row) {
          if (!IsOracle(name) && r < best) best = r;
        }
        const double r = row.at(std::string(p));
        const bool bold = !IsOracle(p) && r == best;
        std::printf(" %s%s%s |", bold ? "**" : "", Fmt(r, "%.4f").c_str(), bold ? "**" : "");
      }
      std::printf("\n");
    }
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("\n%zu runs in %.1f s\n", kinds.size() * scenarios.size() * policies.size(), secs);
  return 0;
}
