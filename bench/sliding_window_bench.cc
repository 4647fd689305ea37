// Micro-benchmarks of the sliding_window operator: the cost of one pane arrival (which emits one
// window per configured size, each merged from the panes it spans), the memory per series and
// the bytes a checkpoint writes per pane period.
//
// Workload: 10 s panes of latency-like values (lognormal, 50 values per pane), 1,000 series whose
// rings are full; one iteration = one pane of one series arriving.

#include <malloc.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "operators/sliding_window.h"
#include "pipeline/checkpoint.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/summary.h"

namespace inferscope {
namespace {

constexpr int64_t kPane = 10'000;
constexpr int64_t kP0 = 170'000'000;  // a pane number in 2023
constexpr int kSeries = 1'000;
constexpr int kValuesPerPane = 50;

// A pool of distinct pane aggregates to cycle through.
std::vector<Aggregate> PanePool(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::lognormal_distribution<double> dist(4.0, 1.0);
  std::vector<Aggregate> pool(n);
  for (Aggregate& a : pool) {
    for (int i = 0; i < kValuesPerPane; ++i) {
      a.Add(dist(rng), kP0 * kPane + i);
      a.AddEvent(i == 0);
    }
  }
  return pool;
}

SlidingWindowOperator::Options OptionsFor(int64_t windows) {
  SlidingWindowOperator::Options o;
  o.pane_ms = kPane;
  o.pass_panes = false;
  o.allowed_lateness_ms = 60'000;
  o.windows_ms = {60'000, 300'000, 3'600'000};
  o.windows_ms.resize(static_cast<size_t>(windows));  // 2: [1m, 5m]; 3: [1m, 5m, 1h]
  return o;
}

// Feeds panes [kP0, kP0 + panes) of every series, in pane order. Returns the next pane number.
int64_t Fill(SlidingWindowOperator& op, const std::vector<Aggregate>& pool, int64_t panes,
             int series = kSeries) {
  OutputBatch in;
  in.Mutable<kind::PaneSummary>().resize(1);
  OutputBatch out;
  size_t next = 0;
  for (int64_t p = kP0; p < kP0 + panes; ++p) {
    for (int s = 0; s < series; ++s) {
      WindowSummary& w = in.Mutable<kind::PaneSummary>()[0];
      w.series = {static_cast<StringId>(s + 1), 1, 1};
      w.start_ms = p * kPane;
      w.end_ms = w.start_ms + kPane;
      w.agg = pool[next++ % pool.size()];
      (void)op.ProcessResults(in, out);
      out.Clear();
    }
  }
  return kP0 + panes;
}

// One pane arrival of one series with full rings; reports windows emitted per second.
void BM_SlidingWindowPaneArrival(benchmark::State& state) {
  const std::vector<Aggregate> pool = PanePool(64, 1);
  SlidingWindowOperator op(OptionsFor(state.range(0)));
  int64_t p = Fill(op, pool, static_cast<int64_t>(op.ring_size()));
  OutputBatch in;
  in.Mutable<kind::PaneSummary>().resize(1);
  OutputBatch out;
  size_t next = 0;
  int s = 0;
  for (auto _ : state) {
    WindowSummary& w = in.Mutable<kind::PaneSummary>()[0];
    w.series = {static_cast<StringId>(s + 1), 1, 1};
    w.start_ms = p * kPane;
    w.end_ms = w.start_ms + kPane;
    w.agg = pool[next++ & 63];
    (void)op.ProcessResults(in, out);
    out.Clear();
    if (++s == kSeries) {
      s = 0;
      ++p;
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["windows_per_pane"] = static_cast<double>(state.range(0));
  state.counters["ring_panes"] = static_cast<double>(op.ring_size());
}
BENCHMARK(BM_SlidingWindowPaneArrival)->Arg(2)->Arg(3)->ArgName("windows");

// Heap and object bytes per series once every ring is full (mallinfo2 before and after), and the
// size the same panes would take in their encoded form (Aggregate::EncodeTo), for comparison.
void BM_SlidingWindowMemory(benchmark::State& state) {
  constexpr int kMemorySeries = 100;
  const std::vector<Aggregate> pool = PanePool(64, 2);
  for (auto _ : state) {
    const size_t before = mallinfo2().uordblks;
    auto op = std::make_unique<SlidingWindowOperator>(OptionsFor(state.range(0)));
    Fill(*op, pool, static_cast<int64_t>(op->ring_size()), kMemorySeries);
    const size_t after = mallinfo2().uordblks;
    const auto bytes = static_cast<double>(after - before);
    state.counters["bytes_per_series"] = bytes / kMemorySeries;
    state.counters["bytes_per_pane"] = bytes / static_cast<double>(kMemorySeries * op->ring_size());
    state.counters["ring_panes"] = static_cast<double>(op->ring_size());
  }
  std::string encoded;
  for (const Aggregate& a : pool) a.EncodeTo(&encoded);
  state.counters["encoded_bytes_per_pane"] =
      static_cast<double>(encoded.size()) / static_cast<double>(pool.size());
  state.counters["sizeof_aggregate"] = sizeof(Aggregate);
}
BENCHMARK(BM_SlidingWindowMemory)
    ->Arg(2)
    ->Arg(3)
    ->ArgName("windows")
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

// One pane period with full rings: every series gets its next pane, then a checkpoint. Reports
// the checkpoint's bytes (keys and values) and records per series; the time per iteration is the
// panes' arrival plus the checkpoint.
void BM_SlidingWindowCheckpoint(benchmark::State& state) {
  const std::vector<Aggregate> pool = PanePool(64, 3);
  Interner interner;
  MetricsRegistry metrics;
  StageContext ctx;
  ctx.name = "sliding";
  ctx.interner = &interner;
  ctx.metrics = &metrics;
  SlidingWindowOperator op(OptionsFor(state.range(0)));
  if (!op.Open(ctx).ok()) {
    state.SkipWithError("Open failed");
    return;
  }
  std::vector<SeriesKey> keys;
  const StringId model = interner.Intern("llama-3-8b"), metric = interner.Intern("ttft_ms");
  for (int s = 0; s < kSeries; ++s) {
    keys.push_back({interner.Intern("node-" + std::to_string(s)), model, metric});
  }
  OutputBatch in;
  in.Mutable<kind::PaneSummary>().resize(1);
  OutputBatch out;
  size_t next = 0;
  auto period = [&](int64_t p) {
    for (const SeriesKey& key : keys) {
      WindowSummary& w = in.Mutable<kind::PaneSummary>()[0];
      w.series = key;
      w.start_ms = p * kPane;
      w.end_ms = w.start_ms + kPane;
      w.agg = pool[next++ & 63];
      (void)op.ProcessResults(in, out);
      out.Clear();
    }
  };
  std::vector<CheckpointRecord> records;
  auto checkpoint = [&] {
    records.clear();
    CheckpointCollector writer("op", "sliding", &records);
    (void)op.Checkpoint(writer);
  };
  int64_t p = kP0;
  for (const int64_t end = kP0 + static_cast<int64_t>(op.ring_size()); p < end; ++p) period(p);
  checkpoint();  // the full rings, once
  double bytes = 0, count = 0;
  for (auto _ : state) {
    period(p++);
    checkpoint();
    for (const CheckpointRecord& r : records)
      bytes += r.key.size() + (r.value ? r.value->size() : 0);
    count += static_cast<double>(records.size());
  }
  const double series = static_cast<double>(kSeries) * static_cast<double>(state.iterations());
  state.counters["checkpoint_bytes_per_series"] = bytes / series;
  state.counters["records_per_series"] = count / series;
  state.counters["ring_panes"] = static_cast<double>(op.ring_size());
}
BENCHMARK(BM_SlidingWindowCheckpoint)
    ->Arg(2)
    ->Arg(3)
    ->ArgName("windows")
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace inferscope

BENCHMARK_MAIN();
