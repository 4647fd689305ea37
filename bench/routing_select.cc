// Micro-benchmark of the routing learner (routing/): select decision latency (p50/p99) and
// decisions per second on one thread, and the cost of an update (one outcome; one gauge; a
// posterior redraw). Prints a Markdown table. Every figure is from this run; the baseline row is
// a seeded uniform random pick among the same backends (std::mt19937_64), the cheapest policy
// there is, measured the same way.
//
//   build/bench/routing_select [--selects N]

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "routing/learner.h"

namespace {

using inferscope::ErrorKind;
using namespace inferscope::routing;
using Clock = std::chrono::steady_clock;

constexpr int kBackends = 8;
const char* const kNames[kBackends] = {"vllm-0", "vllm-1", "sglang-2", "sglang-3",
                                       "tgi-4",  "tgi-5",  "openai",   "anthropic"};

double Ns(Clock::duration d) { return std::chrono::duration<double, std::nano>(d).count(); }

// A learner with one model of 8 backends, 2,000 outcomes each (ttft, tpot, cost, some quality
// and errors) and fresh gauges.
std::unique_ptr<RoutingLearner> MakeLearner(std::mt19937_64& rng) {
  RoutingOptions options;
  ModelSpec model;
  model.name = "llama-3.1-8b-instruct";
  for (int b = 0; b < kBackends; ++b) {
    BackendSpec s;
    s.name = kNames[b];
    s.capabilities = (b % 2 == 0 ? static_cast<uint32_t>(kVision) : 0u) | kCode;
    s.price_per_1k_input = 0.0001 * (b + 1);
    s.price_per_1k_output = 0.0003 * (b + 1);
    model.backends.push_back(s);
  }
  options.models.push_back(model);
  auto learner = std::make_unique<RoutingLearner>(options);
  std::normal_distribution<double> z;
  for (int i = 0; i < 2000; ++i) {
    for (int b = 0; b < kBackends; ++b) {
      Outcome o;
      o.backend = kNames[b];
      o.model = "llama-3.1-8b-instruct";
      o.time_ms = i;
      o.ttft_ms = (80 + 10 * b) * std::exp(0.3 * z(rng));
      o.tpot_ms = (15 + b) * std::exp(0.2 * z(rng));
      o.e2e_ms = o.ttft_ms + 200 * o.tpot_ms;
      o.prompt_tokens = 600;
      o.output_tokens = 200;
      o.cost_usd = (0.0001 * 600 + 0.0003 * 200) * (b + 1) / 1000;
      if (i % 10 == 0) o.quality = 0.6 + 0.04 * b;
      if (i % 100 == b) o.error = ErrorKind::kServerError;
      learner->Observe(o);
    }
  }
  for (int b = 0; b < kBackends; ++b) {
    for (const char* name :
         {"max_num_seqs", "num_requests_running", "num_requests_waiting", "kv_cache_usage"}) {
      const double v = std::strcmp(name, "max_num_seqs") == 0     ? 256
                       : std::strcmp(name, "kv_cache_usage") == 0 ? 0.5
                                                                  : 20.0 * b;
      learner->ObserveGauge({.backend = kNames[b],
                             .model = "llama-3.1-8b-instruct",
                             .name = name,
                             .value = v,
                             .time_ms = 2000});
    }
  }
  return learner;
}

struct Row {
  std::string name;
  double per_s = 0;
  double p50_ns = 0, p99_ns = 0;
  std::string note;
};

void Print(const std::vector<Row>& rows, double timer_ns) {
  std::printf("| workload | per second (1 thread) | p50 ns | p99 ns | notes |\n");
  std::printf("|---|---:|---:|---:|---|\n");
  for (const Row& r : rows) {
    std::printf("| %s | %.0f | %.0f | %.0f | %s |\n", r.name.c_str(), r.per_s, r.p50_ns, r.p99_ns,
                r.note.c_str());
  }
  std::printf(
      "\np50/p99 time each call with steady_clock; they include its overhead, %.0f ns "
      "per reading pair on this machine. per second is measured without per-call "
      "timing.\n",
      timer_ns);
}

// Times `n` calls of `fn(i)`: throughput without per-call timing, then p50/p99 with.
template <typename Fn>
Row Measure(std::string name, int n, Fn&& fn) {
  Row row;
  row.name = std::move(name);
  const auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) fn(i);
  row.per_s = n / (Ns(Clock::now() - t0) / 1e9);
  std::vector<float> lat(static_cast<size_t>(n / 4));
  for (size_t i = 0; i < lat.size(); ++i) {
    const auto a = Clock::now();
    fn(static_cast<int>(i));
    lat[i] = static_cast<float>(Ns(Clock::now() - a));
  }
  std::sort(lat.begin(), lat.end());
  row.p50_ns = lat[lat.size() / 2];
  row.p99_ns = lat[lat.size() * 99 / 100];
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  int n = 4'000'000;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--selects") == 0) n = std::atoi(argv[i + 1]);
  }
  std::mt19937_64 rng(42);
  std::unique_ptr<RoutingLearner> learner = MakeLearner(rng);
  const RoutingLearner::ModelId model = learner->FindModel("llama-3.1-8b-instruct");
  const int64_t now = 2000;
  Decision d;
  uint64_t sink = 0;

  // Timer overhead.
  double timer_ns;
  {
    std::vector<float> t(100'000);
    for (float& x : t) {
      const auto a = Clock::now();
      x = static_cast<float>(Ns(Clock::now() - a));
    }
    std::sort(t.begin(), t.end());
    timer_ns = t[t.size() / 2];
  }

  std::vector<Row> rows;
  // Baseline: a uniform random pick among the backends.
  {
    std::mt19937_64 r(1);
    std::uniform_int_distribution<int> pick(0, kBackends - 1);
    Row row = Measure("baseline: uniform random pick (mt19937_64)", n,
                      [&](int) { sink += static_cast<uint64_t>(pick(r)); });
    rows.push_back(row);
  }
  const double baseline = rows[0].per_s;

  // Same features every time (one table): the steady-state hot path.
  learner->Select(model, {}, Strategy::kBalanced, now, &d);
  rows.push_back(Measure("select, one table (balanced, typical request)", n, [&](int) {
    learner->Select(model, {}, Strategy::kBalanced, now, &d);
    sink += d.backend;
  }));
  // Mixed features: 5 strategies × 4 prompt lengths × 3 output lengths × vision or not = 120
  // tables, more than the 32 the cache keeps: misses rebuild a table (M × backends scores).
  std::vector<RequestFeatures> features;
  std::vector<Strategy> strategies;
  for (int s = 0; s < 5; ++s) {
    for (uint32_t p : {100u, 1000u, 4000u, 16000u}) {
      for (uint32_t o : {50u, 300u, 2000u}) {
        for (uint32_t c : {0u, static_cast<uint32_t>(kVision)}) {
          features.push_back({p, o, c});
          strategies.push_back(static_cast<Strategy>(s));
        }
      }
    }
  }
  std::vector<uint32_t> order(1 << 16);
  for (uint32_t& x : order) x = static_cast<uint32_t>(rng() % features.size());
  // Skewed: 90 % of requests from 8 feature combinations, 10 % from all 120.
  std::vector<uint32_t> skewed(1 << 16);
  for (uint32_t& x : skewed) {
    x = rng() % 10 == 0 ? static_cast<uint32_t>(rng() % features.size())
                        : static_cast<uint32_t>(rng() % 8) * 15;
  }
  rows.push_back(
      Measure("select, skewed features (90 % in 8 tables, 10 % over 120)", n / 4, [&](int i) {
        const uint32_t k = skewed[static_cast<size_t>(i) & 0xFFFF];
        learner->Select(model, features[k], strategies[k], now, &d);
        sink += d.backend;
      }));
  rows.push_back(
      Measure("select, uniform over 120 feature tables (cache thrash)", n / 40, [&](int i) {
        const uint32_t k = order[static_cast<size_t>(i) & 0xFFFF];
        learner->Select(model, features[k], strategies[k], now, &d);
        sink += d.backend;
      }));

  // Updates.
  std::vector<Outcome> outcomes(1 << 14);
  std::normal_distribution<double> z;
  for (size_t i = 0; i < outcomes.size(); ++i) {
    Outcome& o = outcomes[i];
    const int b = static_cast<int>(i % kBackends);
    o.backend = kNames[b];
    o.model = "llama-3.1-8b-instruct";
    o.ttft_ms = (80 + 10 * b) * std::exp(0.3 * z(rng));
    o.tpot_ms = (15 + b) * std::exp(0.2 * z(rng));
    o.e2e_ms = o.ttft_ms + 200 * o.tpot_ms;
    o.prompt_tokens = 600;
    o.output_tokens = 200;
  }
  int64_t t = now;
  rows.push_back(
      Measure("observe one outcome (estimates + gate; redraw deferred)", n / 4, [&](int i) {
        Outcome& o = outcomes[static_cast<size_t>(i) & 0x3FFF];
        o.time_ms = t;
        learner->Observe(o);
      }));
  rows.push_back(Measure("observe one gauge", n / 4, [&](int i) {
    learner->ObserveGauge({.backend = kNames[i % kBackends],
                           .model = "llama-3.1-8b-instruct",
                           .name = "num_requests_running",
                           .value = static_cast<double>(i % 100),
                           .time_ms = t + i});
  }));
  // A full posterior redraw of 8 backends (256 draws each) and one table rebuild: what a select
  // pays once per refresh interval (and, for the changed backends, per recompute interval).
  {
    int64_t tick = t + 1'000'000;
    Row row = Measure("select after a full redraw (8 backends × 256 draws) + table build", 2000,
                      [&](int) {
                        tick += 1001;  // past the 1 s refresh interval every time
                        learner->Select(model, {}, Strategy::kBalanced, tick, &d);
                        sink += d.backend;
                      });
    rows.push_back(row);
    t = tick;
  }
  // A router at 1,000 requests/s of event time: every request one select, one NoteSent and one
  // outcome; redraws of changed backends every 5 ms, a full one every second.
  {
    int64_t tick_us = t * 1000;
    Row row = Measure("router loop at 1k req/s event time: select + NoteSent + observe", n / 20,
                      [&](int i) {
                        tick_us += 1000;
                        const int64_t ms = tick_us / 1000;
                        learner->Select(model, {}, Strategy::kBalanced, ms, &d);
                        learner->NoteSent(model, d.backend, ms);
                        Outcome& o = outcomes[static_cast<size_t>(i) & 0x3FFF];
                        o.backend = d.backend_name;
                        o.time_ms = ms;
                        learner->Observe(o);
                      });
    rows.push_back(row);
  }
  for (size_t i = 1; i < rows.size(); ++i) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.2f× the baseline's rate", rows[i].per_s / baseline);
    rows[i].note = buf;
  }
  Print(rows, timer_ns);
  const LearnerStats& s = learner->stats();
  std::printf("\nlearner: %" PRIu64 " recomputes, %" PRIu64 " table builds (sink %" PRIu64 ")\n",
              s.recomputes, s.table_builds, sink % 7);
  return 0;
}
