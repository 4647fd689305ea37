#include "operators/window_aggregate.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <tuple>
#include <vector>

#include <atomic>
#include <cstdlib>
#include <new>

#include <gtest/gtest.h>

#include "operators/register.h"
#include "pipeline/clock.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/registry.h"

// Counts heap allocations while `g_count_allocations` is set (the whole test binary's operator
// new goes through here). GCC cannot see that the replaced new and delete pair malloc and free.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
// Not in an anonymous namespace: other tests of this binary (early_alerts_test.cc) count too.
namespace inferscope_test_alloc {
std::atomic<bool> g_count_allocations{false};
std::atomic<uint64_t> g_allocations{0};
}  // namespace inferscope_test_alloc
using inferscope_test_alloc::g_allocations;
using inferscope_test_alloc::g_count_allocations;

void* operator new(std::size_t size) {
  if (g_count_allocations.load(std::memory_order_relaxed)) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace inferscope {
namespace {

using Options = WindowAggregateOperator::Options;

constexpr int64_t kT0 = 1'700'000'000'000;  // a plausible epoch time, aligned to 10 s

// Everything a test needs to open an operator with injected time and metrics.
struct Harness {
  Interner interner;
  MetricsRegistry metrics;
  ManualClock clock{kT0};
  StageContext ctx;

  Harness() {
    ctx.name = "window";
    ctx.interner = &interner;
    ctx.metrics = &metrics;
    ctx.clock = &clock;
  }
  uint64_t Counter(std::string_view name, const Labels& labels = {}) const {
    return metrics.CounterValue(name, labels);
  }
};

Event Request(int64_t t, StringId instance, StringId model, double ttft, bool error = false) {
  Event e;
  e.kind = EventKind::kRequest;
  e.time_ms = t;
  e.instance = instance;
  e.model = model;
  e.error = error ? ErrorKind::kTimeout : ErrorKind::kNone;
  e.present = kHasTtft | kHasE2e | kHasOutputTokens;
  e.ttft_ms = ttft;
  e.e2e_ms = ttft * 10;
  e.output_tokens = 100;
  return e;
}

Event Gauge(int64_t t, StringId instance, StringId model, StringId metric, double value) {
  Event e;
  e.kind = EventKind::kGauge;
  e.time_ms = t;
  e.instance = instance;
  e.model = model;
  e.metric = metric;
  e.value = value;
  return e;
}

// Key of one series-pane in the reference.
using PaneKey =
    std::tuple<StringId, StringId, StringId, int64_t>;  // instance, model, metric, start

struct Expected {
  std::vector<double> values;
  uint64_t events = 0;
  uint64_t errors = 0;
  int64_t max_time = INT64_MIN;
};

// The brute-force reference: the operator's documented semantics, event by event.
class Reference {
 public:
  explicit Reference(const Options& o) : o_(o) {}

  // One publisher, no idle timeout: the watermark trails the largest event time by
  // out_of_orderness after each batch, and by at most out_of_orderness + max_publisher_lag at
  // every event.
  void Apply(const Event& e) {
    if (e.time_ms > max_time_) {
      max_time_ = e.time_ms;
      watermark_ =
          std::max(watermark_, max_time_ - o_.out_of_orderness_ms - o_.max_publisher_lag_ms);
    }
    const int64_t start = (e.time_ms / o_.pane_ms) * o_.pane_ms;  // times are positive
    if (start + o_.pane_ms <= watermark_) {
      ++late_;
      return;
    }
    auto touch = [&](StringId metric, bool has_value, double value, bool counts_event) {
      Expected& x = panes_[{e.instance, e.model, metric, start}];
      if (has_value) x.values.push_back(value);
      if (counts_event) {
        ++x.events;
        x.errors += e.ok() ? 0 : 1;
      }
      x.max_time = std::max(x.max_time, e.time_ms);
    };
    if (e.kind == EventKind::kGauge) {
      touch(e.metric, true, e.value, true);
      return;
    }
    touch(kMetricTtft, e.Has(kHasTtft), e.ttft_ms, true);
    touch(kMetricTpot, e.Has(kHasTpot), e.tpot_ms, true);
    touch(kMetricE2e, e.Has(kHasE2e), e.e2e_ms, true);
    touch(kMetricPromptTokens, e.Has(kHasPromptTokens), e.prompt_tokens, true);
    touch(kMetricOutputTokens, e.Has(kHasOutputTokens), e.output_tokens, true);
    if (e.Has(kHasCachedTokens)) touch(kMetricCachedTokens, true, e.cached_tokens, true);
    if (e.Has(kHasCost)) touch(kMetricCost, true, e.cost_usd, true);
    if (e.Has(kHasQuality)) touch(kMetricQuality, true, e.quality, true);
  }

  void EndBatch() { watermark_ = std::max(watermark_, max_time_ - o_.out_of_orderness_ms); }

  const std::map<PaneKey, Expected>& panes() const { return panes_; }
  uint64_t late() const { return late_; }
  int64_t watermark() const { return watermark_; }

 private:
  Options o_;
  int64_t max_time_ = INT64_MIN;
  int64_t watermark_ = INT64_MIN;
  uint64_t late_ = 0;
  std::map<PaneKey, Expected> panes_;
};

PaneKey KeyOf(const WindowSummary& s) {
  return {s.series.instance, s.series.model, s.series.metric, s.start_ms};
}

void ExpectMatches(const Expected& x, const WindowSummary& s) {
  const Aggregate& a = s.agg;
  ASSERT_EQ(a.count, x.values.size());
  EXPECT_EQ(a.events, x.events);
  EXPECT_EQ(a.errors, x.errors);
  EXPECT_EQ(s.max_event_time_ms, x.max_time);
  if (x.values.empty()) return;
  std::vector<double> sorted = x.values;
  std::sort(sorted.begin(), sorted.end());
  double sum = 0;
  for (double v : x.values) sum += v;  // in arrival order, as the operator adds
  EXPECT_EQ(a.sum, sum);
  EXPECT_EQ(a.min, sorted.front());
  EXPECT_EQ(a.max, sorted.back());
  const double mean = sum / static_cast<double>(sorted.size());
  double m2 = 0;
  for (double v : sorted) m2 += (v - mean) * (v - mean);
  const double variance = m2 / static_cast<double>(sorted.size());
  EXPECT_NEAR(a.mean, mean, 1e-9 * std::abs(mean) + 1e-12);
  EXPECT_NEAR(a.variance(), variance, 1e-9 * variance + 1e-9);
  for (double q : {0.5, 0.9, 0.95, 0.99}) {
    const double exact = sorted[static_cast<size_t>(q * static_cast<double>(sorted.size() - 1))];
    EXPECT_LE(std::abs(a.sketch.Quantile(q) - exact), 0.01 * (1 + 1e-9) * std::abs(exact)) << q;
  }
}

TEST(WindowAggregateTest, RandomOutOfOrderStreamMatchesBruteForce) {
  Harness h;
  Options o;
  o.pane_ms = 1000;
  o.out_of_orderness_ms = 1500;
  o.idle_timeout_ms = 0;
  WindowAggregateOperator op(o);
  ASSERT_TRUE(op.Open(h.ctx).ok());
  Reference ref(o);

  std::mt19937_64 rng(2024);
  std::lognormal_distribution<double> latency(4.0, 0.8);
  std::uniform_int_distribution<int> instance(100, 139);  // 40 instances
  std::uniform_int_distribution<int> model(200, 202);     // x 3 models
  std::uniform_int_distribution<int> gauge_metric(300, 303);
  std::exponential_distribution<double> delay(1.0 / 400);  // mostly < out_of_orderness, some late

  std::map<PaneKey, WindowSummary> emitted;
  int64_t previous_watermark = INT64_MIN;
  auto collect = [&](const OutputBatch& out, bool check_watermark) {
    int64_t previous_end = INT64_MIN;
    for (const WindowSummary& s : out.Get<kind::PaneSummary>()) {
      EXPECT_GE(s.end_ms, previous_end) << "emitted out of pane order";
      previous_end = s.end_ms;
      if (check_watermark) {
        EXPECT_LE(s.end_ms, out.watermark_ms);
      }
      EXPECT_TRUE(emitted.emplace(KeyOf(s), s).second) << "pane emitted twice";
    }
    EXPECT_GE(out.watermark_ms, previous_watermark);
    previous_watermark = out.watermark_ms;
  };

  int64_t now = kT0;
  uint64_t total_events = 0;
  uint64_t dead_letters = 0;
  EventBatch batch;
  for (int b = 0; b < 400; ++b) {
    batch.Clear();
    const int n = 1 + static_cast<int>(rng() % 300);
    for (int i = 0; i < n; ++i) {
      now += static_cast<int64_t>(rng() % 3);
      const int64_t t = now - static_cast<int64_t>(delay(rng));
      const auto inst = static_cast<StringId>(instance(rng));
      const auto mdl = static_cast<StringId>(model(rng));
      if (rng() % 4 == 0) {
        batch.events.push_back(
            Gauge(t, inst, mdl, static_cast<StringId>(gauge_metric(rng)), latency(rng) / 100));
      } else {
        Event e = Request(t, inst, mdl, latency(rng), rng() % 17 == 0);
        if (rng() % 3 == 0) {
          e.present |= kHasCost | kHasPromptTokens;
          e.cost_usd = latency(rng) * 1e-5;
          e.prompt_tokens = static_cast<uint32_t>(latency(rng) * 10);
        }
        if (rng() % 5 == 0) e.present &= static_cast<uint16_t>(~kHasTtft);
        batch.events.push_back(e);
      }
      ref.Apply(batch.events.back());
    }
    ref.EndBatch();
    total_events += batch.events.size();
    OutputBatch out;
    ASSERT_TRUE(op.Process(batch, out).ok());
    dead_letters += out.Get<kind::DeadLetter>().size();
    EXPECT_EQ(out.watermark_ms, ref.watermark());
    collect(out, true);
  }
  ASSERT_GT(ref.late(), 100u);
  EXPECT_EQ(dead_letters, ref.late());
  EXPECT_EQ(h.Counter("inferscope_window_dead_letters_total",
                      {{"stage", "window"}, {"publisher", "unknown"}}),
            ref.late());

  // Before Close: exactly the reference panes that end at or before the watermark.
  size_t closed = 0;
  for (const auto& [key, x] : ref.panes()) {
    if (std::get<3>(key) + o.pane_ms <= ref.watermark()) {
      ++closed;
      EXPECT_TRUE(emitted.count(key)) << "missing closed pane";
    }
  }
  EXPECT_EQ(emitted.size(), closed);
  EXPECT_GT(op.open_panes(), 0);

  OutputBatch last;
  ASSERT_TRUE(op.Close(last).ok());
  collect(last, false);
  EXPECT_EQ(op.open_panes(), 0);
  ASSERT_EQ(emitted.size(), ref.panes().size());
  for (const auto& [key, x] : ref.panes()) {
    auto it = emitted.find(key);
    ASSERT_NE(it, emitted.end());
    SCOPED_TRACE(testing::Message() << "series " << std::get<0>(key) << "/" << std::get<1>(key)
                                    << "/" << std::get<2>(key) << " pane " << std::get<3>(key));
    EXPECT_EQ(it->second.end_ms, it->second.start_ms + o.pane_ms);
    ExpectMatches(x, it->second);
  }
  EXPECT_EQ(h.Counter("inferscope_window_summaries_total"), ref.panes().size());
  EXPECT_EQ(h.Counter("inferscope_window_events_total"), total_events);
}

TEST(WindowAggregateTest, ClosesPaneWhenWatermarkPassesItsEnd) {
  Harness h;
  Options o;  // 10 s panes, 2 s out-of-orderness
  WindowAggregateOperator op(o);
  ASSERT_TRUE(op.Open(h.ctx).ok());
  EventBatch batch;
  batch.events = {Request(kT0 + 1000, 1000, 2000, 50), Request(kT0 + 9999, 1000, 2000, 70)};
  OutputBatch out;
  ASSERT_TRUE(op.Process(batch, out).ok());
  EXPECT_TRUE(out.Get<kind::PaneSummary>().empty());
  EXPECT_EQ(out.watermark_ms, kT0 + 9999 - 2000);

  batch.events = {Request(kT0 + 11'999, 1000, 2000, 60)};  // watermark 9999: not yet
  out = {};
  ASSERT_TRUE(op.Process(batch, out).ok());
  EXPECT_TRUE(out.Get<kind::PaneSummary>().empty());

  batch.events = {Request(kT0 + 12'000, 1000, 2000, 60)};  // watermark reaches the pane end
  out = {};
  ASSERT_TRUE(op.Process(batch, out).ok());
  // ttft, tpot, e2e, prompt_tokens, output_tokens: every request counts as an event of each.
  ASSERT_EQ(out.Get<kind::PaneSummary>().size(), 5u);
  std::set<StringId> metrics;
  for (const WindowSummary& s : out.Get<kind::PaneSummary>()) {
    metrics.insert(s.series.metric);
    EXPECT_EQ(s.start_ms, kT0);
    EXPECT_EQ(s.end_ms, kT0 + 10'000);
    EXPECT_EQ(s.agg.events, 2u);
    EXPECT_EQ(s.max_event_time_ms, kT0 + 9999);
    if (s.series.metric == kMetricTtft) {
      EXPECT_EQ(s.agg.count, 2u);
      EXPECT_EQ(s.agg.sum, 120);
      EXPECT_EQ(s.agg.last, 70);
    }
    if (s.series.metric == kMetricTpot) {
      EXPECT_EQ(s.agg.count, 0u);
    }
  }
  EXPECT_EQ(metrics, (std::set<StringId>{kMetricTtft, kMetricTpot, kMetricE2e, kMetricPromptTokens,
                                         kMetricOutputTokens}));

  // A late event for the closed pane (no allowed lateness) is a dead letter, not applied.
  batch.events = {Request(kT0 + 5000, 1000, 2000, 60)};
  out = {};
  ASSERT_TRUE(op.Process(batch, out).ok());
  EXPECT_TRUE(out.Get<kind::PaneSummary>().empty());
  ASSERT_EQ(out.Get<kind::DeadLetter>().size(), 1u);
  EXPECT_EQ(out.Get<kind::DeadLetter>()[0].event.time_ms, kT0 + 5000);
  EXPECT_EQ(out.Get<kind::DeadLetter>()[0].reason, "too_late");
  EXPECT_EQ(h.Counter("inferscope_window_dead_letters_total",
                      {{"stage", "window"}, {"publisher", "unknown"}}),
            1u);
}

TEST(WindowAggregateTest, IdleInputAdvancesWatermarkWithTheClock) {
  Harness h;
  Options o;  // idle_timeout 5 s
  WindowAggregateOperator op(o);
  ASSERT_TRUE(op.Open(h.ctx).ok());
  EventBatch batch;
  batch.events = {Gauge(kT0 + 3000, 1000, 2000, 500, 0.5), Gauge(kT0 + 4000, 1000, 2000, 500, 0.7)};
  OutputBatch out;
  ASSERT_TRUE(op.Process(batch, out).ok());  // arrival noted at clock kT0

  out = {};
  ASSERT_TRUE(op.OnTimer(kT0 + 4999, out).ok());  // not idle long enough
  EXPECT_TRUE(out.Get<kind::PaneSummary>().empty());
  EXPECT_EQ(op.watermark_ms(), kT0 + 2000);

  out = {};
  ASSERT_TRUE(op.OnTimer(kT0 + 5000, out).ok());  // watermark 4000 + 5000 - 2000 = 7000
  EXPECT_TRUE(out.Get<kind::PaneSummary>().empty());
  EXPECT_EQ(out.watermark_ms, kT0 + 7000);

  out = {};
  ASSERT_TRUE(op.OnTimer(kT0 + 8000, out).ok());  // watermark 10000: the pane closes
  ASSERT_EQ(out.Get<kind::PaneSummary>().size(), 1u);
  EXPECT_EQ(out.Get<kind::PaneSummary>()[0].series, (SeriesKey{1000, 2000, 500}));
  EXPECT_EQ(out.Get<kind::PaneSummary>()[0].agg.count, 2u);
  EXPECT_EQ(out.Get<kind::PaneSummary>()[0].agg.last, 0.7);
  EXPECT_EQ(op.open_panes(), 0);

  // After new input the idle clock restarts from the new arrival.
  h.clock.Set(kT0 + 20'000);
  batch.events = {Gauge(kT0 + 10'500, 1000, 2000, 500, 0.1)};
  out = {};
  ASSERT_TRUE(op.Process(batch, out).ok());
  EXPECT_EQ(op.watermark_ms(), kT0 + 10'000);  // monotonic: not pulled back to 8500
  out = {};
  ASSERT_TRUE(op.OnTimer(kT0 + 24'000, out).ok());
  EXPECT_TRUE(out.Get<kind::PaneSummary>().empty());
  ASSERT_TRUE(op.OnTimer(kT0 + 31'500, out).ok());  // 10500 + 11500 - 2000 = 20000
  EXPECT_EQ(out.Get<kind::PaneSummary>().size(), 1u);
}

// Once every series has expired the operator asks for a timer a second after its previous one (the
// idle watermark must keep reaching the alerting operators downstream), and that timer comes due:
// an answer of "now + 1 s" at every look would never be reached.
TEST(WindowAggregateTest, WithoutSeriesTheTimerComesDueASecondLater) {
  Harness h;
  Options o;  // idle_timeout 5 s
  o.series_ttl_ms = 20'000;
  WindowAggregateOperator op(o);
  ASSERT_TRUE(op.Open(h.ctx).ok());
  EventBatch batch;
  batch.events = {Gauge(kT0 + 3000, 1000, 2000, 500, 0.5)};
  OutputBatch out;
  ASSERT_TRUE(op.Process(batch, out).ok());
  int64_t now = kT0;
  for (int i = 0; i < 600 && op.series() > 0; ++i) {
    now += 1000;
    out = {};
    ASSERT_TRUE(op.OnTimer(now, out).ok());
  }
  ASSERT_EQ(op.series(), 0);
  EXPECT_GT(op.NextTimerMs(now), now);                // not again at once
  EXPECT_EQ(op.NextTimerMs(now + 999), now + 1000);   // a fixed time, not one that moves on
  EXPECT_LE(op.NextTimerMs(now + 1000), now + 1000);  // due a second after the last one
  const int64_t watermark = op.watermark_ms();
  out = {};
  ASSERT_TRUE(op.OnTimer(now + 1000, out).ok());
  EXPECT_GT(op.watermark_ms(), watermark);
  EXPECT_GT(op.NextTimerMs(now + 1000), now + 1000);
}

TEST(WindowAggregateTest, IdleTimeoutZeroDisables) {
  Harness h;
  Options o;
  o.idle_timeout_ms = 0;
  WindowAggregateOperator op(o);
  ASSERT_TRUE(op.Open(h.ctx).ok());
  EventBatch batch;
  batch.events = {Gauge(kT0 + 1, 1000, 2000, 500, 1)};
  OutputBatch out;
  ASSERT_TRUE(op.Process(batch, out).ok());
  ASSERT_TRUE(op.OnTimer(kT0 + 3'600'000, out).ok());
  EXPECT_TRUE(out.Get<kind::PaneSummary>().empty());
}

TEST(WindowAggregateTest, FlushOnClose) {
  for (bool flush : {true, false}) {
    Harness h;
    Options o;
    o.flush_on_close = flush;
    WindowAggregateOperator op(o);
    ASSERT_TRUE(op.Open(h.ctx).ok());
    EventBatch batch;
    batch.events = {Gauge(kT0 + 1, 1000, 2000, 500, 1), Gauge(kT0 + 10'001, 1000, 2000, 500, 2),
                    Request(kT0 + 10'002, 1000, 2000, 3)};
    OutputBatch out;
    ASSERT_TRUE(op.Process(batch, out).ok());
    EXPECT_TRUE(out.Get<kind::PaneSummary>().empty());
    out = {};
    ASSERT_TRUE(op.Close(out).ok());
    EXPECT_EQ(out.Get<kind::PaneSummary>().size(), flush ? 2u + 5u : 0u);
    for (size_t i = 1; i < out.Get<kind::PaneSummary>().size(); ++i) {
      EXPECT_LE(out.Get<kind::PaneSummary>()[i - 1].end_ms, out.Get<kind::PaneSummary>()[i].end_ms);
    }
  }
}

TEST(WindowAggregateTest, SeriesLimitRejectsAndCounts) {
  Harness h;
  Options o;
  o.max_series = 9;  // one request group (8 series) and one gauge series
  o.max_series_per_publisher = 9;
  WindowAggregateOperator op(o);
  ASSERT_TRUE(op.Open(h.ctx).ok());
  EventBatch batch;
  batch.events = {Request(kT0, 1, 1, 5), Gauge(kT0, 1, 1, 50, 1), Request(kT0, 2, 1, 5),
                  Gauge(kT0, 1, 1, 51, 1), Gauge(kT0, 1, 1, 50, 2)};
  OutputBatch out;
  ASSERT_TRUE(op.Process(batch, out).ok());
  EXPECT_EQ(op.series(), 9);
  EXPECT_EQ(h.Counter("inferscope_window_rejected_events_total", {{"reason", "series_limit"}}), 2u);
}

TEST(WindowAggregateTest, RejectsAbsurdTimesAndGaugesWithoutMetric) {
  Harness h;
  WindowAggregateOperator op(Options{});
  ASSERT_TRUE(op.Open(h.ctx).ok());
  EventBatch batch;
  batch.events = {Gauge(INT64_MAX, 1, 1, 50, 1), Gauge(INT64_MIN, 1, 1, 50, 1),
                  Gauge(kT0, 1, 1, 0, 1)};
  OutputBatch out;
  ASSERT_TRUE(op.Process(batch, out).ok());
  EXPECT_EQ(h.Counter("inferscope_window_rejected_events_total", {{"reason", "bad_time"}}), 2u);
  EXPECT_EQ(h.Counter("inferscope_window_rejected_events_total", {{"reason", "no_metric"}}), 1u);
  EXPECT_EQ(op.watermark_ms(), INT64_MIN);
}

TEST(WindowAggregateTest, GaugeNamedLikeRequestMetricJoinsThatSeries) {
  Harness h;
  WindowAggregateOperator op(Options{});
  ASSERT_TRUE(op.Open(h.ctx).ok());
  EventBatch batch;
  batch.events = {Request(kT0, 1, 1, 5), Gauge(kT0, 1, 1, kMetricTtft, 7)};
  OutputBatch out;
  ASSERT_TRUE(op.Process(batch, out).ok());
  ASSERT_TRUE(op.Close(out).ok());
  int ttft = 0;
  for (const WindowSummary& s : out.Get<kind::PaneSummary>()) {
    if (s.series.metric != kMetricTtft) continue;
    ++ttft;
    EXPECT_EQ(s.agg.count, 2u);
  }
  EXPECT_EQ(ttft, 1);
}

TEST(WindowAggregateTest, SteadyStateReusesPaneSlots) {
  Harness h;
  Options o;
  o.pane_ms = 100;
  o.out_of_orderness_ms = 0;
  WindowAggregateOperator op(o);
  ASSERT_TRUE(op.Open(h.ctx).ok());
  EventBatch batch;
  OutputBatch out;
  for (int pane = 0; pane < 1000; ++pane) {
    batch.events.clear();
    for (int s = 0; s < 10; ++s) {
      batch.events.push_back(Request(kT0 + pane * 100 + s, 1 + s, 1, 10 + s));
    }
    ASSERT_TRUE(op.Process(batch, out).ok());
  }
  EXPECT_EQ(out.Get<kind::PaneSummary>().size(), 999u * 10 * 5);
  EXPECT_EQ(op.open_panes(), 10);
}

// Once its series, panes and bin ranges exist, applying events allocates nothing.
TEST(WindowAggregateTest, SteadyStateProcessDoesNotAllocate) {
  Harness h;
  WindowAggregateOperator op{Options{}};
  ASSERT_TRUE(op.Open(h.ctx).ok());
  std::mt19937_64 rng(17);
  std::lognormal_distribution<double> latency(4.0, 1.0);
  EventBatch batch;
  for (int i = 0; i < 1024; ++i) {
    Event e = Request(kT0 + 1000 + i % 500, 1 + i % 300, 1 + i % 3, latency(rng), i % 50 == 0);
    e.present |= kHasTpot | kHasPromptTokens | kHasCachedTokens | kHasCost | kHasQuality;
    e.tpot_ms = latency(rng) / 20;
    e.prompt_tokens = static_cast<uint32_t>(latency(rng) * 10);
    e.cached_tokens = e.prompt_tokens / 2;
    e.cost_usd = e.prompt_tokens * 1e-6;
    e.quality = 0.5;
    batch.events.push_back(e);
  }
  batch.events.push_back(Gauge(kT0 + 1200, 7, 1, 900, 3.5));
  batch.events.push_back(Gauge(kT0 + 1200, 7, 1, kMetricTtft, 3.5));
  OutputBatch out;
  ASSERT_TRUE(op.Process(batch, out).ok());  // creates series, panes and bins
  g_allocations = 0;
  g_count_allocations = true;
  for (int round = 0; round < 10; ++round) {
    if (!op.Process(batch, out).ok()) break;
  }
  g_count_allocations = false;
  EXPECT_EQ(g_allocations.load(), 0u);
  EXPECT_EQ(out.Get<kind::PaneSummary>().size(), 0u);
  EXPECT_EQ(h.Counter("inferscope_window_events_total", {{"stage", "window"}}), 11u * 1026);
}

TEST(WindowAggregateTest, OptionsValidation) {
  EXPECT_TRUE(Options{}.Validate().ok());
  Options o;
  o.pane_ms = 50;
  EXPECT_EQ(o.Validate().code(), Status::Code::kInvalidArgument);
  o = {};
  o.out_of_orderness_ms = -1;
  EXPECT_FALSE(o.Validate().ok());
  o = {};
  o.out_of_orderness_ms = 7'200'000;  // 720 panes of ring per series: refused
  EXPECT_FALSE(o.Validate().ok());
  o = {};
  o.allowed_lateness_ms = 6'000'000;  // with the default lag, 603 panes: refused
  EXPECT_FALSE(o.Validate().ok());
  o = {};
  o.idle_timeout_ms = -5;
  EXPECT_FALSE(o.Validate().ok());
  o = {};
  o.max_series = 0;
  EXPECT_FALSE(o.Validate().ok());
}

TEST(WindowAggregateTest, CreateReadsOptions) {
  auto parse = [](const std::string& yaml) {
    return WindowAggregateOperator::Create(ConfigNode("t.yaml", YAML::Load(yaml), "options"));
  };
  auto op = parse(
      "pane: 5s\nout_of_orderness: 500ms\nidle_timeout: 0\nflush_on_close: false\n"
      "max_series: 1000\nallowed_lateness: 30s\nmax_publisher_lag: 1m\n");
  ASSERT_TRUE(op.ok()) << op.status().ToString();
  EXPECT_EQ((*op)->options().pane_ms, 5000);
  EXPECT_EQ((*op)->options().out_of_orderness_ms, 500);
  EXPECT_EQ((*op)->options().idle_timeout_ms, 0);
  EXPECT_FALSE((*op)->options().flush_on_close);
  EXPECT_EQ((*op)->options().max_series, 1000);
  EXPECT_EQ((*op)->options().allowed_lateness_ms, 30'000);
  EXPECT_EQ((*op)->options().max_publisher_lag_ms, 60'000);

  auto defaults = WindowAggregateOperator::Create(ConfigNode());
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ((*defaults)->options().pane_ms, 10'000);

  for (const char* bad :
       {"pain: 5s\n", "pane: 50ms\n", "pane: soon\n", "max_series: -1\n", "flush_on_close: maybe\n",
        "out_of_orderness: 2h\n", "allowed_lateness: -1s\n", "max_publisher_lag: 3h\n"}) {
    auto r = parse(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
    EXPECT_NE(r.status().message().find("t.yaml"), std::string::npos) << r.status().message();
  }
}

TEST(WindowAggregateTest, RegisteredByName) {
  Registry registry;
  RegisterOperators(registry);
  EXPECT_TRUE(registry.HasOperator("window_aggregate"));
  auto op = registry.CreateOperator("window_aggregate", ConfigNode());
  EXPECT_TRUE(op.ok());
}

}  // namespace
}  // namespace inferscope
