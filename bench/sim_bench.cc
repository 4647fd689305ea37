// The serving-model simulator's speed: simulated requests per second of CPU, for an hour of a
// fleet (sim/README.md, "Cost").

#include <benchmark/benchmark.h>

#include "sim/fleet.h"

namespace inferscope {
namespace {

// Counts what the model produces and keeps nothing.
struct CountingSink final : sim::OutcomeSink {
  uint64_t requests = 0, gauges = 0, tokens = 0;
  void OnRequest(const sim::RequestOutcome& o) override {
    ++requests;
    tokens += o.output_tokens;
  }
  void OnGauge(const sim::GaugeSample&) override { ++gauges; }
};

// One simulated hour: `instances` instances of `models` models (StandardFleet), Poisson arrivals
// at `rate` requests/s (prompts median 600, outputs median 180), round robin.
void Run(benchmark::State& state, int instances, int models, double rate) {
  uint64_t requests = 0, steps = 0;
  CountingSink sink;
  for (auto _ : state) {
    sim::PoissonOptions p;
    p.rate_per_s = rate;
    p.wander = 0.05;
    sim::FleetOptions fo;
    fo.duration_ms = 3'600'000;
    auto fleet = sim::Fleet::Create(fo, sim::StandardFleet(instances, models, 42), {},
                                    std::make_unique<sim::PoissonArrivals>(p),
                                    std::make_unique<sim::RoundRobinRouter>(), &sink);
    if (!fleet.ok()) {
      state.SkipWithError(fleet.status().ToString().c_str());
      return;
    }
    (*fleet)->Run();
    requests += (*fleet)->requests();
    for (size_t i = 0; i < (*fleet)->size(); ++i) steps += (*fleet)->instance(i).totals().steps;
  }
  state.counters["sim_requests_per_cpu_s"] =
      benchmark::Counter(static_cast<double>(requests), benchmark::Counter::kIsRate);
  state.counters["steps_per_cpu_s"] =
      benchmark::Counter(static_cast<double>(steps), benchmark::Counter::kIsRate);
  state.counters["requests_per_run"] =
      benchmark::Counter(static_cast<double>(requests), benchmark::Counter::kAvgIterations);
}

// The brief's case: 4 instances (one model each: Llama-8B, Mistral-7B, Qwen-14B, a weak 70B) at
// 50 requests/s, which overloads the 14B and 70B instances (queues up to the timeout).
void BM_SimulateHour4Instances50Rps(benchmark::State& state) { Run(state, 4, 1, 50); }
BENCHMARK(BM_SimulateHour4Instances50Rps)->Unit(benchmark::kMillisecond);

// The demo's fleet (6 instances x 2 models) at its default 30 requests/s: no instance overloaded.
void BM_SimulateHourDemoFleet(benchmark::State& state) { Run(state, 6, 2, 30); }
BENCHMARK(BM_SimulateHourDemoFleet)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace inferscope

BENCHMARK_MAIN();
