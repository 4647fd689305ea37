// Micro-benchmarks of the window aggregation hot path: sketch inserts, sketch merges and the
// window operator's Process over many series.

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "operators/window_aggregate.h"
#include "pipeline/clock.h"
#include "pipeline/metrics.h"
#include "values/sketch.h"

namespace inferscope {
namespace {

std::vector<double> Latencies(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::lognormal_distribution<double> dist(4.0, 1.0);  // median ~55 ms, p99 ~560 ms
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

// One sketch, values spread like latencies (bins stay in cache).
void BM_DDSketchAdd(benchmark::State& state) {
  const std::vector<double> values = Latencies(1 << 16, 1);
  DDSketch sketch;
  size_t i = 0;
  for (auto _ : state) {
    sketch.Add(values[i]);
    i = (i + 1) & (values.size() - 1);
  }
  benchmark::DoNotOptimize(sketch.count());
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DDSketchAdd);

// Inserts spread over 10,000 sketches in random order (cache misses, as across series).
void BM_DDSketchAddSpread10k(benchmark::State& state) {
  constexpr size_t kSketches = 10'000;
  const std::vector<double> values = Latencies(1 << 16, 2);
  std::vector<DDSketch> sketches(kSketches);
  for (size_t s = 0; s < kSketches; ++s) {
    for (int k = 0; k < 200; ++k) sketches[s].Add(values[(s * 200 + k) & 0xffff]);
  }
  std::mt19937_64 rng(3);
  std::vector<uint32_t> order(1 << 16);
  for (uint32_t& o : order) o = static_cast<uint32_t>(rng() % kSketches);
  size_t i = 0;
  for (auto _ : state) {
    sketches[order[i]].Add(values[i]);
    i = (i + 1) & 0xffff;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DDSketchAddSpread10k);

// Merge of two sketches of ~1000 bins each (log-uniform values over e^0 .. e^20).
void BM_DDSketchMerge1000Bins(benchmark::State& state) {
  std::mt19937_64 rng(4);
  std::uniform_real_distribution<double> exponent(0.0, 20.0);
  DDSketch a;
  DDSketch b;
  for (int i = 0; i < 100'000; ++i) {
    a.Add(std::exp(exponent(rng)));
    b.Add(std::exp(exponent(rng)));
  }
  for (auto _ : state) {
    benchmark::DoNotOptimize(a.Merge(b));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DDSketchMerge1000Bins);

// WindowAggregateOperator::Process on reused batches of 256 request events (ttft, tpot, e2e,
// prompt and output tokens present; range(1): also cached tokens, cost, quality) over range(0)
// (instance, model) pairs, event time advancing 1 ms per range(2) events (2,000: 2 M events/s;
// 20: panes close 100x as often, a close-heavy load), so panes close and slots are reused as in
// production. Up to 4 M events are processed before timing starts.
void BM_WindowProcess(benchmark::State& state) {
  const auto series = static_cast<uint32_t>(state.range(0));
  const bool all_fields = state.range(1) != 0;
  const int64_t events_per_ms = state.range(2);
  WindowAggregateOperator::Options options;
  options.early_slice_ms = state.range(3);  // 0: off; early summaries of the open pane
  constexpr size_t kBatch = 256;
  constexpr size_t kBatches = 256;
  ManualClock clock(1'700'000'000'000);
  MetricsRegistry metrics;
  StageContext ctx;
  ctx.name = "bench";
  ctx.metrics = &metrics;
  ctx.clock = &clock;
  WindowAggregateOperator op{options};
  if (!op.Open(ctx).ok()) state.SkipWithError("Open failed");

  std::mt19937_64 rng(5);
  std::lognormal_distribution<double> latency(4.0, 1.0);
  std::vector<EventBatch> batches(kBatches);
  std::vector<int64_t> jitter(kBatch * kBatches);
  for (size_t b = 0; b < kBatches; ++b) {
    for (size_t i = 0; i < kBatch; ++i) {
      Event e;
      e.kind = EventKind::kRequest;
      const auto s = static_cast<uint32_t>(rng() % series);
      e.instance = 1000 + s / 4;
      e.model = 100 + s % 4;
      e.present = kHasTtft | kHasTpot | kHasE2e | kHasPromptTokens | kHasOutputTokens;
      if (all_fields) e.present |= kHasCachedTokens | kHasCost | kHasQuality;
      e.error = rng() % 50 == 0 ? ErrorKind::kTimeout : ErrorKind::kNone;
      e.ttft_ms = latency(rng);
      e.tpot_ms = latency(rng) / 20;
      e.e2e_ms = latency(rng) * 20;
      e.prompt_tokens = static_cast<uint32_t>(latency(rng) * 10);
      e.output_tokens = static_cast<uint32_t>(latency(rng) * 3);
      e.cached_tokens = e.prompt_tokens / 2;
      e.cost_usd = e.prompt_tokens * 1e-6;
      e.quality = 0.5 + latency(rng) / 1000;
      batches[b].events.push_back(e);
      jitter[b * kBatch + i] = -static_cast<int64_t>(rng() % 500);  // up to 0.5 s out of order
    }
  }
  int64_t events = 0;
  const int64_t t0 = 1'700'000'000'000;
  OutputBatch out;
  size_t b = 0;
  auto step = [&] {
    EventBatch& batch = batches[b];
    const int64_t base = t0 + events / events_per_ms;
    for (size_t i = 0; i < kBatch; ++i) batch.events[i].time_ms = base + jitter[b * kBatch + i];
    out.Clear();
    if (!op.Process(batch, out).ok()) state.SkipWithError("Process failed");
    events += kBatch;
    b = (b + 1) % kBatches;
  };
  // Warm up: two 10 s panes, or 4 M events (~400 per series: bins established), if fewer.
  while (events < std::min<int64_t>(2 * 10'000 * events_per_ms, 4'000'000)) step();
  const int64_t warm_events = events;
  int64_t summaries = 0;
  int64_t early = 0;
  for (auto _ : state) {
    step();
    summaries += static_cast<int64_t>(out.Get<kind::PaneSummary>().size());
    early += static_cast<int64_t>(out.Get<kind::EarlySummary>().size());
  }
  events -= warm_events;
  state.SetItemsProcessed(events);
  state.counters["ns_per_event"] = benchmark::Counter(
      static_cast<double>(events), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["summaries"] = static_cast<double>(summaries);
  state.counters["early_summaries"] = static_cast<double>(early);
  state.counters["open_panes"] = static_cast<double>(op.open_panes());
}
BENCHMARK(BM_WindowProcess)
    ->Args({10'000, 0, 2000, 0})
    ->Args({10'000, 1, 2000, 0})
    ->Args({10'000, 0, 20, 0})
    ->Args({100, 0, 2000, 0})
    // The same with early summaries every second (early_slice: 1s), for the cost of early alerts.
    ->Args({10'000, 0, 2000, 1000})
    ->Args({10'000, 0, 20, 1000})
    ->Iterations(40'000);  // fixed: the warm-up is not repeated while calibrating

}  // namespace
}  // namespace inferscope

BENCHMARK_MAIN();
