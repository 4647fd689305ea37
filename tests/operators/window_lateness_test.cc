// Property tests of WindowAggregateOperator's lateness handling (issue 3): random out-of-order
// streams from several publishers (heavy-tailed lateness, idle publishers, duplicates) checked
// against a brute-force reference of the documented semantics, after every step.

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "clients/cpp/publisher.h"
#include "operators/window_aggregate.h"
#include "pipeline/checkpoint.h"
#include "pipeline/clock.h"
#include "pipeline/coding.h"
#include "pipeline/int_math.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "sources/wire_decoder.h"
#include "state/checkpoint_store.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using Options = WindowAggregateOperator::Options;

constexpr int64_t kT0 = 1'700'000'000'000;  // aligned to 10 s
constexpr int64_t kMaxAbsTimeMs = int64_t{1} << 53;

// instance, model, metric, pane start.
using PaneKey = std::tuple<StringId, StringId, StringId, int64_t>;
// publisher, time, instance, model, metric, value (gauge value or request e2e), ttft.
using DeadKey = std::tuple<StringId, int64_t, StringId, StringId, StringId, double, double>;

PaneKey KeyOf(const WindowSummary& s) {
  return {s.series.instance, s.series.model, s.series.metric, s.start_ms};
}

DeadKey DeadKeyOf(const Event& e) {
  const bool gauge = e.kind == EventKind::kGauge;
  return {e.publisher,
          e.time_ms,
          e.instance,
          e.model,
          gauge ? e.metric : 0,
          gauge ? e.value : e.e2e_ms,
          gauge ? 0.0 : e.ttft_ms};
}

std::string Describe(const PaneKey& k) {
  std::ostringstream s;
  s << "series " << std::get<0>(k) << "/" << std::get<1>(k) << "/" << std::get<2>(k) << " pane "
    << std::get<3>(k);
  return s.str();
}

// The reference's view of one series-pane: every value in arrival order, with its event time.
struct Expected {
  std::vector<std::pair<double, int64_t>> values;
  uint64_t events = 0;
  uint64_t errors = 0;
};

// The brute-force reference: the operator's documented watermark and lateness rules, event by
// event, with plain maps.
class Reference {
 public:
  explicit Reference(const Options& o) : o_(o) {}

  void Process(const EventBatch& batch, int64_t now) {
    if (batch.events.empty()) return;
    Publisher* bp = batch.publisher != 0 ? &publishers_[batch.publisher] : nullptr;
    int64_t batch_max = INT64_MIN;
    const int64_t lag = o_.out_of_orderness_ms + o_.max_publisher_lag_ms;
    for (const Event& e : batch.events) {
      const int64_t t = e.time_ms;
      if (t > kMaxAbsTimeMs || t < -kMaxAbsTimeMs ||
          (e.kind == EventKind::kGauge && e.metric == 0)) {
        ++rejected_;
        continue;
      }
      const StringId pub = bp != nullptr ? batch.publisher : e.publisher;
      Publisher& p = bp != nullptr ? *bp : publishers_[e.publisher];
      if (watermark_ == INT64_MIN) {
        watermark_ = t - lag;
      } else if (t > watermark_ + lag) {
        if (!Supported(pub, p, t, bp != nullptr ? batch_max : INT64_MIN, now)) {
          outliers_.insert(DeadKeyOf(e));
          ++outliers_by_publisher_[pub];
          if (p.outlier_since == INT64_MIN) p.outlier_since = now;
          continue;
        }
        watermark_ = t - lag;
      }
      last_any_ = now;
      max_time_ = std::max(max_time_, t);
      if (bp != nullptr) {
        batch_max = std::max(batch_max, t);
      } else {
        p.max_time = std::max(p.max_time, t);
        p.fresh_max = std::max(p.fresh_max, t);
        p.last_arrival = now;
        p.outlier_since = INT64_MIN;
      }
      const int64_t start = FloorDiv(t, o_.pane_ms) * o_.pane_ms;
      if (start + o_.pane_ms + o_.allowed_lateness_ms <= watermark_) {
        dead_.insert(DeadKeyOf(e));
        ++dead_by_publisher_[pub];
        continue;
      }
      ++applied_;
      Apply(e, start);
    }
    if (bp != nullptr && batch_max != INT64_MIN) {
      bp->max_time = std::max(bp->max_time, batch_max);
      bp->fresh_max = std::max(bp->fresh_max, batch_max);
      bp->last_arrival = now;
      bp->outlier_since = INT64_MIN;
    }
    UpdateWatermark(now);
  }

  void OnTimer(int64_t now) { UpdateWatermark(now); }

  // The expected max_event_time_ms of a series-pane: the latest event of the pane's group for
  // gauges and the request metrics every request carries, the latest value for the optional ones.
  int64_t MaxEventTime(const PaneKey& k, const Expected& x) const {
    const StringId metric = std::get<2>(k);
    if (metric >= kMetricCachedTokens && metric <= kMetricQuality) {
      int64_t t = INT64_MIN;
      for (const auto& [v, vt] : x.values) t = std::max(t, vt);
      return t;
    }
    const StringId group_metric = metric <= kNumWellKnownIds ? 0 : metric;
    return group_max_.at({std::get<0>(k), std::get<1>(k), group_metric, std::get<3>(k)});
  }

  const std::map<PaneKey, Expected>& panes() const { return panes_; }
  const std::multiset<DeadKey>& dead() const { return dead_; }
  const std::map<StringId, uint64_t>& dead_by_publisher() const { return dead_by_publisher_; }
  const std::multiset<DeadKey>& outliers() const { return outliers_; }
  const std::map<StringId, uint64_t>& outliers_by_publisher() const {
    return outliers_by_publisher_;
  }
  uint64_t applied() const { return applied_; }
  uint64_t rejected() const { return rejected_; }
  int64_t watermark() const { return watermark_; }
  // Keys changed since the last call.
  std::set<PaneKey> TakeChanged() { return std::exchange(changed_, {}); }

 private:
  struct Publisher {
    int64_t max_time = INT64_MIN;
    int64_t fresh_max = INT64_MIN;
    int64_t last_arrival = INT64_MIN;
    int64_t outlier_since = INT64_MIN;
  };

  bool Active(const Publisher& p, int64_t now) const {
    return o_.idle_timeout_ms == 0 || p.last_arrival == INT64_MIN ||
           now - p.last_arrival < o_.idle_timeout_ms;
  }

  // The documented support rule for an event beyond the horizon.
  bool Supported(StringId pub, const Publisher& p, int64_t t, int64_t batch_max, int64_t now) {
    std::vector<int64_t> others;
    for (const auto& [id, q] : publishers_) {
      if (id != pub && q.fresh_max != INT64_MIN && Active(q, now)) others.push_back(q.fresh_max);
    }
    if (!others.empty()) {
      others.push_back(now);
      std::sort(others.begin(), others.end());
      return t <= others[others.size() / 2] + o_.max_publisher_lag_ms;
    }
    int64_t own = batch_max;
    if (p.fresh_max != INT64_MIN && Active(p, now)) own = std::max(own, p.fresh_max);
    if (own != INT64_MIN && t <= own + o_.max_publisher_lag_ms) return true;
    if (t <= now + o_.out_of_orderness_ms + o_.max_publisher_lag_ms) return true;
    const int64_t reanchor = o_.idle_timeout_ms > 0 ? o_.idle_timeout_ms : 5000;
    return p.outlier_since != INT64_MIN && now - p.outlier_since >= reanchor;
  }

  void Apply(const Event& e, int64_t start) {
    const bool request_group = e.kind == EventKind::kRequest || e.metric <= kNumWellKnownIds;
    int64_t& gmax =
        group_max_
            .try_emplace({e.instance, e.model, request_group ? 0 : e.metric, start}, INT64_MIN)
            .first->second;
    gmax = std::max(gmax, e.time_ms);
    auto touch = [&](StringId metric, bool has_value, double value) {
      const PaneKey key{e.instance, e.model, metric, start};
      Expected& x = panes_[key];
      if (has_value) x.values.emplace_back(value, e.time_ms);
      ++x.events;
      x.errors += e.ok() ? 0 : 1;
      changed_.insert(key);
    };
    if (e.kind == EventKind::kGauge) {
      touch(e.metric, true, e.value);
      return;
    }
    touch(kMetricTtft, e.Has(kHasTtft), e.ttft_ms);
    touch(kMetricTpot, e.Has(kHasTpot), e.tpot_ms);
    touch(kMetricE2e, e.Has(kHasE2e), e.e2e_ms);
    touch(kMetricPromptTokens, e.Has(kHasPromptTokens), e.prompt_tokens);
    touch(kMetricOutputTokens, e.Has(kHasOutputTokens), e.output_tokens);
    if (e.Has(kHasCachedTokens)) touch(kMetricCachedTokens, true, e.cached_tokens);
    if (e.Has(kHasCost)) touch(kMetricCost, true, e.cost_usd);
    if (e.Has(kHasQuality)) touch(kMetricQuality, true, e.quality);
  }

  void UpdateWatermark(int64_t now) {
    if (max_time_ == INT64_MIN) return;
    int64_t wm = INT64_MAX;
    for (const auto& [id, p] : publishers_) {
      if (Active(p, now) && p.max_time != INT64_MIN) {
        wm = std::min(wm, p.max_time - o_.out_of_orderness_ms);
      }
    }
    if (wm == INT64_MAX) {
      if (o_.idle_timeout_ms == 0 || last_any_ == INT64_MIN) return;
      const int64_t idle = now - last_any_;
      if (idle < o_.idle_timeout_ms) return;
      wm = max_time_ + idle - o_.out_of_orderness_ms;
    }
    watermark_ = std::max(watermark_, wm);
  }

  Options o_;
  std::map<StringId, Publisher> publishers_;
  int64_t max_time_ = INT64_MIN;
  int64_t watermark_ = INT64_MIN;
  int64_t last_any_ = INT64_MIN;
  std::map<PaneKey, Expected> panes_;
  std::map<PaneKey, int64_t> group_max_;  // metric 0 for the request group of (instance, model)
  std::set<PaneKey> changed_;
  std::multiset<DeadKey> dead_;
  std::map<StringId, uint64_t> dead_by_publisher_;
  std::multiset<DeadKey> outliers_;
  std::map<StringId, uint64_t> outliers_by_publisher_;
  uint64_t applied_ = 0;
  uint64_t rejected_ = 0;
};

// Empty when `a` is the aggregate of `x` (exact count, events, errors, sum in arrival order, min,
// max, last; mean and variance within 1e-9 relative; quantiles within the sketch's 1%), else what
// differs.
std::string Mismatch(const Expected& x, const Aggregate& a) {
  std::ostringstream why;
  if (a.count != x.values.size()) why << " count " << a.count << " != " << x.values.size();
  if (a.events != x.events) why << " events " << a.events << " != " << x.events;
  if (a.errors != x.errors) why << " errors " << a.errors << " != " << x.errors;
  if (!why.str().empty() || x.values.empty()) return why.str();
  std::vector<double> sorted;
  double sum = 0;
  double last = 0;
  int64_t last_time = INT64_MIN;
  for (const auto& [v, t] : x.values) {
    sorted.push_back(v);
    sum += v;  // in arrival order, as the operator adds
    if (t > last_time || (t == last_time && v > last)) {
      last = v;
      last_time = t;
    }
  }
  std::sort(sorted.begin(), sorted.end());
  const auto n = static_cast<double>(sorted.size());
  const double mean = sum / n;
  double m2 = 0;
  for (double v : sorted) m2 += (v - mean) * (v - mean);
  const double variance = m2 / n;
  if (a.sum != sum) why << " sum " << a.sum << " != " << sum;
  if (a.min != sorted.front()) why << " min " << a.min << " != " << sorted.front();
  if (a.max != sorted.back()) why << " max " << a.max << " != " << sorted.back();
  if (a.last != last || a.last_time_ms != last_time) why << " last " << a.last << " != " << last;
  if (std::abs(a.mean - mean) > 1e-9 * std::abs(mean) + 1e-12) {
    why << " mean " << a.mean << " != " << mean;
  }
  if (std::abs(a.variance() - variance) > 1e-9 * variance + 1e-9) {
    why << " variance " << a.variance() << " != " << variance;
  }
  for (double q : {0.0, 0.5, 0.9, 0.95, 0.99, 1.0}) {
    const double exact = sorted[static_cast<size_t>(q * (n - 1))];
    const double got = a.sketch.Quantile(q);
    if (!(std::abs(got - exact) <= 0.01 * (1 + 1e-9) * std::abs(exact))) {
      why << " p" << q * 100 << " " << got << " vs exact " << exact;
    }
  }
  return why.str();
}

// ---- Random streams ----

struct Part {
  size_t publisher = 0;  // index into Scenario::publishers
  std::vector<Event> events;
};

// One step of a stream: set the clock, then either OnTimer or one batch made of `parts` (one
// part: a single-publisher batch; several: a mixed batch).
struct Step {
  int64_t now = 0;
  bool timer = false;
  std::vector<Part> parts;
};

struct Scenario {
  Options options;
  std::vector<StringId> publishers;
  std::vector<Step> steps;
  size_t events = 0;
};

struct Names {
  std::vector<StringId> publishers, instances, models, gauges;
};

Names InternNames(Interner& interner) {
  Names n;
  for (int i = 0; i < 5; ++i) n.publishers.push_back(interner.Intern("pub-" + std::to_string(i)));
  for (int i = 0; i < 6; ++i) n.instances.push_back(interner.Intern("inst-" + std::to_string(i)));
  for (const char* m : {"llama-8b", "qwen-32b"}) n.models.push_back(interner.Intern(m));
  for (const char* g : {"kv_cache_usage", "num_requests_waiting", "gpu_util"}) {
    n.gauges.push_back(interner.Intern(g));
  }
  n.gauges.push_back(kMetricQuality);  // a gauge that joins the request group
  return n;
}

// A stream from 3-5 publishers with different constant delays and heavy-tailed (Pareto) per-event
// lateness; publishers drop out for longer than idle_timeout (buffering what they produce, sent
// late when they return), and sometimes all of them pause while timers fire. `invalid` adds a few
// events the operator rejects (not representable on the wire).
Scenario MakeScenario(uint64_t seed, const Options& o, const Names& names, int steps,
                      bool invalid) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };
  std::lognormal_distribution<double> latency(4.0, 0.9);
  Scenario s;
  s.options = o;
  const size_t num_publishers = static_cast<size_t>(uniform(3, 5));
  struct Pub {
    int64_t delay;
    double scale;
    int64_t offline_until = 0;
    std::vector<Event> backlog;
  };
  const int64_t delays[] = {0, 150, 700, 2500, 5500};
  std::vector<Pub> pubs;
  for (size_t p = 0; p < num_publishers; ++p) {
    s.publishers.push_back(names.publishers[p]);
    pubs.push_back({delays[p], std::uniform_real_distribution<double>(60, 500)(rng), 0, {}});
  }
  auto make_event = [&](size_t p, int64_t now) {
    const double u = std::uniform_real_distribution<double>(1e-9, 1)(rng);
    const auto late =
        static_cast<int64_t>(std::min(60'000.0, pubs[p].scale * (std::pow(u, -1 / 1.3) - 1)));
    Event e;
    e.time_ms = now - pubs[p].delay - late;
    e.publisher = s.publishers[p];
    e.instance = names.instances[static_cast<size_t>(uniform(0, 5))];
    e.model = names.models[static_cast<size_t>(uniform(0, 1))];
    if (chance(0.3)) {
      e.kind = EventKind::kGauge;
      e.metric = names.gauges[static_cast<size_t>(uniform(0, 3))];
      e.value = e.metric == kMetricQuality ? std::uniform_real_distribution<double>(0, 1)(rng)
                                           : latency(rng) / 10;
      if (invalid && chance(0.01)) e.metric = 0;
    } else {
      e.kind = EventKind::kRequest;
      e.error = chance(0.07) ? ErrorKind::kTimeout : ErrorKind::kNone;
      e.present = kHasE2e;
      e.e2e_ms = latency(rng) * 10;
      if (chance(0.8)) {
        e.present |= kHasTtft;
        e.ttft_ms = latency(rng);
      }
      if (chance(0.5)) {
        e.present |= kHasTpot;
        e.tpot_ms = latency(rng) / 20;
      }
      if (chance(0.5)) {
        e.present |= kHasPromptTokens;
        e.prompt_tokens = static_cast<uint32_t>(latency(rng) * 10);
      }
      if (chance(0.7)) {
        e.present |= kHasOutputTokens;
        e.output_tokens = static_cast<uint32_t>(latency(rng) * 3);
      }
      if (chance(0.2)) {
        e.present |= kHasCachedTokens;
        e.cached_tokens = static_cast<uint32_t>(uniform(0, 2000));
      }
      if (chance(0.3)) {
        e.present |= kHasCost;
        e.cost_usd = latency(rng) * 1e-5;
      }
    }
    if (invalid && chance(0.005)) e.time_ms = kMaxAbsTimeMs + uniform(1, 1000);
    return e;
  };

  int64_t now = kT0 + 20'000;
  const int64_t idle = std::max<int64_t>(o.idle_timeout_ms, 1000);
  for (int i = 0; i < steps; ++i) {
    now += uniform(10, 150);
    if (chance(0.012)) {
      // Everyone pauses: timers advance the watermark with the clock.
      for (Pub& p : pubs)
        p.offline_until = std::max(p.offline_until, now + uniform(idle, 3 * idle));
    }
    std::vector<size_t> online;
    for (size_t p = 0; p < pubs.size(); ++p) {
      if (pubs[p].offline_until > now) {
        if (chance(0.3)) pubs[p].backlog.push_back(make_event(p, now));
      } else if (chance(0.01)) {
        pubs[p].offline_until = now + uniform(idle + 100, 3 * idle);
      } else {
        online.push_back(p);
      }
    }
    Step step;
    step.now = now;
    if (online.empty() || chance(0.08)) {
      step.timer = true;
      if (online.empty()) now += uniform(200, 900);
      step.now = now;
      s.steps.push_back(std::move(step));
      continue;
    }
    std::shuffle(online.begin(), online.end(), rng);
    const size_t num_parts = online.size() > 1 && chance(0.1) ? 2 : 1;
    for (size_t k = 0; k < num_parts; ++k) {
      const size_t p = online[k];
      Part part{p, std::move(pubs[p].backlog)};
      pubs[p].backlog.clear();
      const int64_t n = uniform(1, 30);
      for (int64_t j = 0; j < n; ++j) part.events.push_back(make_event(p, now));
      s.events += part.events.size();
      step.parts.push_back(std::move(part));
    }
    s.steps.push_back(std::move(step));
  }
  return s;
}

EventBatch BatchOf(const Step& step, const Scenario& s) {
  EventBatch batch;
  batch.publisher = step.parts.size() == 1 ? s.publishers[step.parts[0].publisher] : 0;
  for (const Part& part : step.parts) {
    batch.events.insert(batch.events.end(), part.events.begin(), part.events.end());
  }
  return batch;
}

// ---- The operator under test, its outputs and their checks ----

class Driver {
 public:
  Driver(const Options& o, Interner& interner, const std::string& stage = "window")
      : options_(o), interner_(interner), ref_(o) {
    ctx_.name = stage;
    ctx_.interner = &interner_;
    ctx_.metrics = &metrics_;
    ctx_.clock = &clock_;
    op_ = std::make_unique<WindowAggregateOperator>(o);
    EXPECT_TRUE(op_->Open(ctx_).ok());
  }

  // Feeds `batch` to the operator at the step's time; `ref_batch` (the same events, unless they
  // went through the wire) to the reference.
  void Process(int64_t now, const EventBatch& batch, const EventBatch& ref_batch) {
    clock_.Set(now);
    fed_ += batch.events.size();

    OutputBatch out;
    ASSERT_TRUE(op_->Process(batch, out).ok());
    ref_.Process(ref_batch, now);
    Check(out, false);
  }

  void OnTimer(int64_t now) {
    clock_.Set(now);
    OutputBatch out;
    const int64_t before = op_->watermark_ms();

    ASSERT_TRUE(op_->OnTimer(now, out).ok());
    timer_advances_ += op_->watermark_ms() > before ? 1 : 0;
    ref_.OnTimer(now);
    Check(out, false);
  }

  void Close() {
    OutputBatch out;
    ASSERT_TRUE(op_->Close(out).ok());
    Check(out, true);
    EXPECT_EQ(op_->open_panes(), 0);
  }

  void Run(const Scenario& s) {
    for (const Step& step : s.steps) {
      if (step.timer) {
        OnTimer(step.now);
      } else {
        const EventBatch batch = BatchOf(step, s);
        Process(step.now, batch, batch);
      }
      if (::testing::Test::HasFailure()) return;
    }
  }

  // After Close: every reference pane emitted and equal, every dead letter accounted for, nothing
  // lost.
  void CheckFinal(const Scenario& s) {
    EXPECT_EQ(last_.size(), ref_.panes().size());
    for (const auto& [key, x] : ref_.panes()) {
      auto it = last_.find(key);
      if (it == last_.end()) {
        ADD_FAILURE() << "never emitted: " << Describe(key);
        return;
      }
    }
    EXPECT_EQ(dead_, ref_.dead());
    EXPECT_EQ(outliers_, ref_.outliers());
    for (StringId p : s.publishers) {
      auto it = ref_.dead_by_publisher().find(p);
      EXPECT_EQ(metrics_.CounterValue(
                    "inferscope_window_dead_letters_total",
                    {{"stage", ctx_.name}, {"publisher", std::string(interner_.Name(p))}}),
                it == ref_.dead_by_publisher().end() ? 0u : it->second)
          << interner_.Name(p);
      auto o = ref_.outliers_by_publisher().find(p);
      EXPECT_EQ(metrics_.CounterValue("inferscope_window_rejected_by_publisher_total",
                                      {{"stage", ctx_.name},
                                       {"reason", "future_outlier"},
                                       {"publisher", std::string(interner_.Name(p))}}),
                o == ref_.outliers_by_publisher().end() ? 0u : o->second)
          << interner_.Name(p);
    }
    // Every applied event is in exactly one event count: gauges in their series, requests in
    // tpot (no gauge feeds tpot), quality gauges in quality (no request carries quality).
    uint64_t applied = 0;
    for (const auto& [key, summary] : last_) {
      const StringId metric = std::get<2>(key);
      if (metric > kNumWellKnownIds || metric == kMetricTpot || metric == kMetricQuality) {
        applied += summary.agg.events;
      }
    }
    uint64_t rejected = 0;
    for (const char* reason : {"series_limit", "bad_time", "no_metric"}) {
      rejected += metrics_.CounterValue("inferscope_window_rejected_events_total",
                                        {{"stage", ctx_.name}, {"reason", reason}});
    }
    EXPECT_EQ(applied, ref_.applied());
    EXPECT_EQ(rejected, ref_.rejected());
    EXPECT_EQ(applied + dead_.size() + outliers_.size() + rejected, fed_);
    EXPECT_EQ(metrics_.CounterValue("inferscope_window_events_total", {{"stage", ctx_.name}}),
              fed_);
  }

  uint64_t Counter(std::string_view name) const {
    return metrics_.CounterValue(name, {{"stage", ctx_.name}});
  }
  // OnTimer calls that advanced the watermark (every publisher idle).
  uint64_t timer_advances() const { return timer_advances_; }
  WindowAggregateOperator& op() { return *op_; }
  std::unique_ptr<WindowAggregateOperator>& op_ptr() { return op_; }
  const StageContext& ctx() const { return ctx_; }
  Reference& ref() { return ref_; }
  ManualClock& clock() { return clock_; }
  const std::map<PaneKey, WindowSummary>& last() const { return last_; }
  const std::multiset<DeadKey>& dead() const { return dead_; }
  const std::multiset<DeadKey>& outliers() const { return outliers_; }
  // When set, every emitted summary is written (upserted) to it.
  StateStore* store = nullptr;

 private:
  void Check(const OutputBatch& out, bool closing) {
    if (store != nullptr && !out.Get<kind::PaneSummary>().empty()) {
      const Status st =
          store->WritePanes(out.Get<kind::PaneSummary>(), interner_, out.watermark_ms);
      EXPECT_TRUE(st.ok()) << st.ToString();
    }
    EXPECT_GE(out.watermark_ms, previous_watermark_) << "watermark moved back";
    previous_watermark_ = out.watermark_ms;
    EXPECT_EQ(op_->watermark_ms(), ref_.watermark());

    std::set<PaneKey> touched = ref_.TakeChanged();
    for (const WindowSummary& s : out.Get<kind::PaneSummary>()) {
      const PaneKey key = KeyOf(s);
      const bool seen = last_.count(key) != 0;
      // update=true replaces an earlier result (summary.h); a first result is not an update.
      EXPECT_EQ(s.update, seen) << Describe(key)
                                << (seen ? " emitted twice as new" : " update before any result");
      EXPECT_EQ(s.end_ms, s.start_ms + options_.pane_ms);
      if (!closing) {
        EXPECT_LE(s.end_ms, out.watermark_ms) << Describe(key) << " emitted early";
      }
      last_[key] = s;
      touched.insert(key);
    }
    for (const DeadLetter& d : out.Get<kind::DeadLetter>()) {
      if (d.reason == "future_outlier") {
        outliers_.insert(DeadKeyOf(d.event));
        continue;
      }
      EXPECT_EQ(d.reason, "too_late");
      dead_.insert(DeadKeyOf(d.event));
    }
    for (const PaneKey& key : touched) {
      auto it = last_.find(key);
      if (it == last_.end()) continue;  // not fired yet
      auto x = ref_.panes().find(key);
      if (x == ref_.panes().end()) {
        ADD_FAILURE() << "emitted a pane the reference does not have: " << Describe(key);
        continue;
      }
      const std::string why = Mismatch(x->second, it->second.agg);
      EXPECT_EQ(why, "") << Describe(key);
      EXPECT_EQ(it->second.max_event_time_ms, ref_.MaxEventTime(key, x->second)) << Describe(key);
    }
    if (closing) return;
    // Emitted so far: exactly the reference panes whose end the watermark has passed.
    size_t due = 0;
    for (const auto& [key, x] : ref_.panes()) {
      due += std::get<3>(key) + options_.pane_ms <= ref_.watermark() ? 1 : 0;
    }
    EXPECT_EQ(last_.size(), due);
  }

  Options options_;
  Interner& interner_;
  MetricsRegistry metrics_;
  ManualClock clock_{kT0};
  StageContext ctx_;
  std::unique_ptr<WindowAggregateOperator> op_;
  Reference ref_;
  std::map<PaneKey, WindowSummary> last_;
  std::multiset<DeadKey> dead_;
  std::multiset<DeadKey> outliers_;
  int64_t previous_watermark_ = INT64_MIN;
  uint64_t fed_ = 0;
  uint64_t timer_advances_ = 0;
};

// Configurations the seeds cycle through: with and without allowed lateness and idle timeout.
Options OptionsFor(uint64_t seed) {
  Options o;
  o.pane_ms = 1000;
  o.out_of_orderness_ms = 500;
  o.idle_timeout_ms = seed % 4 == 3 ? 0 : 3000;
  o.allowed_lateness_ms = seed % 3 == 2 ? 0 : 2000;
  o.max_publisher_lag_ms = 4000;
  return o;
}

TEST(WindowLatenessTest, RandomMultiPublisherStreamsMatchReference) {
  uint64_t dead = 0, late = 0, updates = 0, timer_advances = 0;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Interner interner;
    const Names names = InternNames(interner);
    const Options o = OptionsFor(seed);
    const Scenario s = MakeScenario(seed, o, names, 400, /*invalid=*/true);
    Driver d(o, interner);
    d.Run(s);
    if (HasFailure()) return;
    d.Close();
    d.CheckFinal(s);
    if (HasFailure()) return;
    dead += d.dead().size();
    late += d.Counter("inferscope_window_late_events_total");
    updates += d.Counter("inferscope_window_updates_total");
    timer_advances += d.timer_advances();
  }
  // The streams exercise every path: dead letters, late updates, idle advances.
  EXPECT_GT(dead, 100u);
  EXPECT_GT(late, 100u);
  EXPECT_GT(updates, 50u);
  EXPECT_GT(timer_advances, 5u);
}

std::string Bytes(const Aggregate& a) {
  std::string out;
  a.EncodeTo(&out);
  return out;
}

// Adds `count` future outliers to `s` (issue 8, item 5): events 1-4 minutes ahead of the clock
// from publishers that are sending anyway, each placed first in its part so that the
// publisher's on-time events of the same batch follow it.
Scenario WithOutliers(Scenario s, uint64_t seed, int count, std::multiset<DeadKey>* injected) {
  std::mt19937_64 rng(seed * 7919);
  std::vector<size_t> candidates;
  for (size_t i = 60; i < s.steps.size(); ++i) {
    if (!s.steps[i].timer) candidates.push_back(i);
  }
  std::shuffle(candidates.begin(), candidates.end(), rng);
  for (int k = 0; k < count && k < static_cast<int>(candidates.size()); ++k) {
    Step& step = s.steps[candidates[static_cast<size_t>(k)]];
    Part& part = step.parts[rng() % step.parts.size()];
    Event e = part.events.back();
    e.time_ms = step.now + 60'000 + static_cast<int64_t>(rng() % 180'000);
    part.events.insert(part.events.begin(), e);
    injected->insert(DeadKeyOf(e));
    ++s.events;
  }
  return s;
}

// Issue 8, item 5: the reported case. Three publishers send on time; one event 4 minutes ahead
// (inside the decoder's max_future_skew) from one of them is a future outlier, and the 500
// on-time events that follow are all applied: none is a dead letter.
TEST(WindowLatenessTest, OneFutureEventDoesNotMakeOtherPublishersLate) {
  Interner interner;
  const Names names = InternNames(interner);
  Options o;  // defaults: 10 s panes, 2 s out-of-orderness, 10 s max publisher lag
  Driver d(o, interner);
  int64_t now = kT0 + 60'000;
  auto send = [&](size_t publisher, int64_t time_ms) {
    EventBatch batch;
    batch.publisher = names.publishers[publisher];
    Event e;
    e.kind = EventKind::kGauge;
    e.publisher = batch.publisher;
    e.instance = names.instances[publisher];
    e.model = names.models[0];
    e.metric = names.gauges[0];
    e.value = 1;
    e.time_ms = time_ms;
    batch.events.push_back(e);
    d.Process(now, batch, batch);
  };
  for (int i = 0; i < 30; ++i) {
    now += 100;
    for (size_t p = 0; p < 3; ++p) send(p, now - 50);
  }
  const int64_t watermark = d.op().watermark_ms();
  send(1, now + 240'000);  // 4 minutes ahead
  EXPECT_LE(d.op().watermark_ms(), now);
  EXPECT_EQ(d.op().watermark_ms(), watermark);
  for (int i = 0; i < 500; ++i) {
    now += 20;
    send(static_cast<size_t>(i % 3), now - 50);
  }
  d.Close();
  EXPECT_EQ(d.dead().size(), 0u) << "on-time events were dead-lettered";
  EXPECT_EQ(d.outliers().size(), 1u);
  uint64_t applied = 0;
  for (const auto& [key, summary] : d.last()) applied += summary.agg.events;
  EXPECT_EQ(applied, 90u + 500u);
  EXPECT_EQ(d.Counter("inferscope_window_events_total"), 591u);
}

// Property (issue 8, item 5): random multi-publisher streams with one or several future outliers
// injected. The outliers are dead letters ("future_outlier") and nothing else changes: every
// other event has exactly the fate it has in the same stream without them (no on-time event
// becomes late, no pane differs), and the operator still matches the reference throughout.
TEST(WindowLatenessTest, FutureOutliersDoNotChangeOtherEventsFate) {
  uint64_t outliers = 0;
  for (uint64_t seed = 41; seed <= 44; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Interner interner;
    const Names names = InternNames(interner);
    const Options o = OptionsFor(seed);
    const Scenario clean = MakeScenario(seed, o, names, 400, /*invalid=*/false);
    Driver baseline(o, interner);
    baseline.Run(clean);
    baseline.Close();
    baseline.CheckFinal(clean);
    if (HasFailure()) return;

    std::multiset<DeadKey> injected;
    const Scenario dirty =
        WithOutliers(clean, seed, seed % 2 == 0 ? 1 : 1 + static_cast<int>(seed % 7), &injected);
    Driver d(o, interner);
    d.Run(dirty);
    d.Close();
    d.CheckFinal(dirty);
    if (HasFailure()) return;
    EXPECT_EQ(d.outliers(), injected);
    EXPECT_EQ(d.dead(), baseline.dead());
    ASSERT_EQ(d.last().size(), baseline.last().size());
    for (const auto& [key, a] : baseline.last()) {
      auto b = d.last().find(key);
      ASSERT_NE(b, d.last().end()) << Describe(key);
      EXPECT_EQ(Bytes(b->second.agg), Bytes(a.agg)) << Describe(key);
    }
    outliers += d.outliers().size();
  }
  EXPECT_GE(outliers, 4u);
}

// A publisher whose clock is ahead for good (beyond max_publisher_lag): while others are active
// its events are future outliers, the watermark follows the others and the ring stays bounded.
// Alone, it re-anchors the watermark after idle_timeout of nothing but outliers.
TEST(WindowLatenessTest, PublisherAheadForGoodNeitherDragsNorStalls) {
  Interner interner;
  const Names names = InternNames(interner);
  Options o;
  o.pane_ms = 1000;
  o.out_of_orderness_ms = 500;
  o.max_publisher_lag_ms = 4000;
  o.idle_timeout_ms = 3000;
  Driver d(o, interner);
  int64_t now = kT0 + 60'000;
  auto send = [&](size_t publisher, int64_t time_ms) {
    EventBatch batch;
    batch.publisher = names.publishers[publisher];
    Event e;
    e.kind = EventKind::kGauge;
    e.publisher = batch.publisher;
    e.instance = names.instances[publisher];
    e.model = names.models[0];
    e.metric = names.gauges[0];
    e.value = 1;
    e.time_ms = time_ms;
    batch.events.push_back(e);
    d.Process(now, batch, batch);
  };
  for (int i = 0; i < 600; ++i) {
    now += 50;
    send(static_cast<size_t>(i % 4), i % 4 == 3 ? now + 30'000 : now - 100);
    ASSERT_LE(d.op().watermark_ms(), now - 100 - o.out_of_orderness_ms);
    ASSERT_LE(d.op().open_panes(), 3 * 10);  // 3 series x the ring
    if (HasFailure()) return;
  }
  EXPECT_EQ(d.dead().size(), 0u);
  EXPECT_EQ(d.outliers().size(), 150u);
  EXPECT_GE(d.op().watermark_ms(), now - 100 - o.out_of_orderness_ms - 1000);
  // The others stop: after idle_timeout of outliers only, the publisher ahead re-anchors.
  for (int i = 0; i < 100; ++i) {
    now += 100;
    send(3, now + 30'000);
  }
  EXPECT_GE(d.op().watermark_ms(), now + 30'000 - 100 - o.out_of_orderness_ms - 4000);
  EXPECT_LT(d.outliers().size(), 150u + 100u);
  d.Close();
}

void Encode(const Event& e, const Interner& names, client::BatchEncoder& encoder) {
  if (e.kind == EventKind::kGauge) {
    encoder.AddGauge(names.Name(e.instance), names.Name(e.model), names.Name(e.metric), e.value,
                     e.time_ms);
    return;
  }
  client::RequestOutcome r;
  r.instance = names.Name(e.instance);
  r.model = names.Name(e.model);
  r.e2e_ms = e.e2e_ms;
  if (e.Has(kHasTtft)) r.ttft_ms = e.ttft_ms;
  if (e.Has(kHasTpot)) r.tpot_ms = e.tpot_ms;
  if (e.Has(kHasPromptTokens)) r.prompt_tokens = e.prompt_tokens;
  if (e.Has(kHasOutputTokens)) r.output_tokens = e.output_tokens;
  if (e.Has(kHasCachedTokens)) r.cached_tokens = e.cached_tokens;
  if (e.Has(kHasCost)) r.cost_usd = e.cost_usd;
  r.error = e.ok() ? "" : "timeout";
  r.time_ms = e.time_ms;
  encoder.AddRequest(r);
}

// Publishers retrying: earlier payloads are sent again; the decoder drops them by sequence number
// and the operator's results count every original event once.
TEST(WindowLatenessTest, DuplicatesThroughTheWireDecoderAreAppliedOnce) {
  for (uint64_t seed = 11; seed <= 13; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Interner interner;
    const Names names = InternNames(interner);
    const Options o = OptionsFor(seed);
    const Scenario s = MakeScenario(seed, o, names, 300, /*invalid=*/false);
    Driver d(o, interner);
    WireDecoder decoder(WireDecoderOptions{}, interner, d.clock(), nullptr, "source");
    std::vector<std::unique_ptr<client::BatchEncoder>> encoders;
    for (StringId p : s.publishers) {
      encoders.push_back(std::make_unique<client::BatchEncoder>(std::string(interner.Name(p))));
    }
    std::vector<std::string> sent;
    std::mt19937_64 rng(seed);
    uint64_t resent = 0;
    for (const Step& step : s.steps) {
      if (step.timer) {
        d.OnTimer(step.now);
        continue;
      }
      d.clock().Set(step.now);  // the decoder checks event times against the clock
      while (!sent.empty() && rng() % 4 == 0) {
        EventBatch dup;
        const DecodeResult r = decoder.Decode(sent[rng() % sent.size()], dup);
        EXPECT_EQ(r.sequence, SequenceVerdict::kDuplicate);
        // A source emits no empty batch; a duplicate let through would be counted twice.
        if (!dup.events.empty()) d.Process(step.now, dup, EventBatch{});
        ++resent;
      }
      EventBatch batch;
      for (const Part& part : step.parts) {
        client::BatchEncoder& encoder = *encoders[part.publisher];
        for (const Event& e : part.events) Encode(e, interner, encoder);
        sent.emplace_back(encoder.Finish());
        const DecodeResult r = decoder.Decode(sent.back(), batch);
        EXPECT_EQ(r.accepted, part.events.size()) << r.detail();
        EXPECT_EQ(r.rejected, 0u) << r.detail();
      }
      const EventBatch original = BatchOf(step, s);
      EXPECT_EQ(batch.publisher, original.publisher);
      d.Process(step.now, batch, original);
      if (HasFailure()) return;
    }
    d.Close();
    d.CheckFinal(s);
    EXPECT_GT(resent, 50u);
    EXPECT_EQ(decoder.duplicates(), resent);
    if (HasFailure()) return;
  }
}

// Every emitted summary upserted into a real StateStore: what is stored at the end is the
// reference's result for every series-pane.
TEST(WindowLatenessTest, StoredResultsMatchReference) {
  for (uint64_t seed = 21; seed <= 21; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    inferscope::testing::TempDir dir;
    StateStoreOptions so;
    so.path = dir.str();
    auto store = StateStore::Open(so, nullptr);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    Interner interner;
    const Names names = InternNames(interner);
    const Options o = OptionsFor(seed);
    const Scenario s = MakeScenario(seed, o, names, 400, /*invalid=*/false);
    Driver d(o, interner);
    d.store = store->get();
    d.Run(s);
    d.Close();
    d.CheckFinal(s);
    if (HasFailure()) return;

    std::vector<SeriesInfo> series;
    ASSERT_TRUE((*store)->ListSeries([&](const SeriesInfo& info) { series.push_back(info); }).ok());
    size_t stored = 0;
    for (const SeriesInfo& info : series) {
      const auto instance = interner.Find(info.instance);
      const auto model = interner.Find(info.model);
      const auto metric = interner.Find(info.metric);
      ASSERT_TRUE(instance && model && metric) << info.instance << "/" << info.model;
      Status st = (*store)->ScanPanes(
          info.instance, info.model, info.metric, 0, INT64_MAX, [&](const StoredPane& p) {
            const PaneKey key{*instance, *model, *metric, p.start_ms};
            auto x = d.ref().panes().find(key);
            if (x == d.ref().panes().end()) {
              ADD_FAILURE() << "stored pane the reference does not have: " << Describe(key);
              return Status::Ok();
            }
            EXPECT_EQ(p.end_ms, p.start_ms + o.pane_ms);
            EXPECT_EQ(Mismatch(x->second, p.agg), "") << Describe(key);
            ++stored;
            return Status::Ok();
          });
      ASSERT_TRUE(st.ok()) << st.ToString();
    }
    EXPECT_EQ(stored, d.ref().panes().size());
  }
}

// The stage's checkpoint records in `store`: their number, and how many are pane records (a key
// of three str()s and a be64 pane number).
struct StoredRecords {
  size_t total = 0;
  size_t panes = 0;
};
StoredRecords CountRecords(const StateStore& store) {
  StoredRecords n;
  const Status st = StateCheckpointReader("op", "window", &store)
                        .ForEach([&](std::string_view key, std::string_view) {
                          ++n.total;
                          const size_t series = StrsLength(key, 3);
                          n.panes += series != std::string_view::npos && key.size() == series + 8;
                          return Status::Ok();
                        });
  EXPECT_TRUE(st.ok()) << st.ToString();
  return n;
}

// Rewrites the stage's pane records in `store` as the version-1 group records earlier versions
// wrote (one per group: its whole ring); returns how many group records were written.
size_t RewriteAsGroupRecords(StateStore& store) {
  std::map<std::string, std::pair<uint64_t, std::vector<std::string>>> groups;
  std::vector<CheckpointRecord> records;
  CheckpointCollector writer("op", "window", &records);
  const Status st =
      StateCheckpointReader("op", "window", &store)
          .ForEach([&](std::string_view key, std::string_view value) {
            if (key.empty()) return Status::Ok();
            const std::string group(key.substr(0, key.size() - 8));
            const int64_t pane = ReadOrdered64(key.substr(key.size() - 8));
            uint64_t version = 0, num_metrics = 0;
            EXPECT_TRUE(GetVarint(&value, &version) && GetVarint(&value, &num_metrics));
            auto& [metrics, panes] = groups[group];
            metrics = num_metrics;
            std::string encoded;
            PutVarint(&encoded, ZigZag(pane));
            encoded += value;  // max event time, dirty, aggregates
            panes.push_back(std::move(encoded));
            writer.Delete(key);
            return Status::Ok();
          });
  EXPECT_TRUE(st.ok()) << st.ToString();
  for (auto& [key, group] : groups) {
    std::string value;
    PutVarint(&value, 1);
    PutVarint(&value, group.first);
    PutVarint(&value, group.second.size());
    for (const std::string& pane : group.second) value += pane;
    writer.Put(key, std::move(value));
  }
  EXPECT_TRUE(WriteCheckpointRecords(store, records).ok());
  return groups.size();
}

enum class CheckpointMode {
  kRestoreEach,   // every checkpoint is followed by a restart
  kIncremental,   // checkpoints at about a third of the steps, restarts at a few of them
  kGroupRecords,  // like kRestoreEach, from the version-1 group records of the same state
};

// Checkpoints and restarts (a fresh operator restored from the store) at random points: the
// results are those of an uninterrupted run, exactly, and after every checkpoint the store holds
// one record per open pane besides the operator record (nothing stale, nothing missing).
void CheckpointRun(CheckpointMode mode) {
  uint64_t restores = 0;
  for (uint64_t seed = 31; seed <= 33; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Interner interner;
    const Names names = InternNames(interner);
    const Options o = OptionsFor(seed);
    const Scenario s = MakeScenario(seed, o, names, 400, /*invalid=*/false);
    Driver uninterrupted(o, interner);
    uninterrupted.Run(s);
    uninterrupted.Close();
    uninterrupted.CheckFinal(s);
    if (::testing::Test::HasFailure()) return;

    inferscope::testing::TempDir dir;
    StateStoreOptions so;
    so.path = dir.str();
    auto store = StateStore::Open(so, nullptr);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    std::mt19937_64 rng(seed);
    std::set<size_t> restart_points, checkpoint_points;
    while (restart_points.size() < 4) restart_points.insert(1 + rng() % (s.steps.size() - 1));
    checkpoint_points = restart_points;
    if (mode == CheckpointMode::kIncremental) {
      for (size_t i = 1; i < s.steps.size(); ++i) {
        if (rng() % 3 == 0) checkpoint_points.insert(i);
      }
    }
    Driver d(o, interner);
    size_t checkpoints = 0;
    for (size_t i = 0; i < s.steps.size(); ++i) {
      if (checkpoint_points.count(i) != 0) {
        std::vector<CheckpointRecord> writes;
        CheckpointCollector writer("op", "window", &writes);
        ASSERT_TRUE(d.op().Checkpoint(writer).ok());
        ASSERT_TRUE(WriteCheckpointRecords(**store, writes).ok());
        ++checkpoints;
        StoredRecords stored = CountRecords(**store);
        EXPECT_EQ(stored.panes, static_cast<size_t>(d.op().open_panes()));
        EXPECT_EQ(stored.total, stored.panes + 1);
      }
      if (restart_points.count(i) != 0) {
        size_t group_records = 0;
        if (mode == CheckpointMode::kGroupRecords) {
          group_records = RewriteAsGroupRecords(**store);
          EXPECT_EQ(CountRecords(**store).panes, 0u);
        }
        const int64_t watermark = d.op().watermark_ms();
        const int64_t open_panes = d.op().open_panes();
        d.op_ptr() = std::make_unique<WindowAggregateOperator>(o);
        ASSERT_TRUE(d.op().Open(d.ctx()).ok());
        const Status restored = d.op().Restore(StateCheckpointReader("op", "window", store->get()));
        ASSERT_TRUE(restored.ok()) << restored.ToString();
        EXPECT_EQ(d.op().watermark_ms(), watermark);
        EXPECT_EQ(d.op().open_panes(), open_panes);
        // Nothing changed since the restore: only the operator record is written, or (from group
        // records) the deletion of each group record and its panes' records.
        std::vector<CheckpointRecord> writes;
        CheckpointCollector writer("op", "window", &writes);
        ASSERT_TRUE(d.op().Checkpoint(writer).ok());
        const size_t rewritten = mode == CheckpointMode::kGroupRecords ? open_panes : 0;
        ASSERT_EQ(writes.size(), 1 + group_records + rewritten);
        EXPECT_EQ(writes[0].key, CheckpointPrefix("op", "window"));
        ASSERT_TRUE(WriteCheckpointRecords(**store, writes).ok());
        StoredRecords stored = CountRecords(**store);
        EXPECT_EQ(stored.panes, static_cast<size_t>(open_panes));
        EXPECT_EQ(stored.total, stored.panes + 1);
        ++restores;
      }
      const Step& step = s.steps[i];
      if (step.timer) {
        d.OnTimer(step.now);
      } else {
        const EventBatch batch = BatchOf(step, s);
        d.Process(step.now, batch, batch);
      }
      if (::testing::Test::HasFailure()) return;
    }
    d.Close();
    d.CheckFinal(s);
    ASSERT_EQ(d.last().size(), uninterrupted.last().size());
    for (const auto& [key, a] : uninterrupted.last()) {
      auto b = d.last().find(key);
      ASSERT_NE(b, d.last().end()) << Describe(key);
      EXPECT_EQ(Bytes(b->second.agg), Bytes(a.agg)) << Describe(key);
      EXPECT_EQ(b->second.max_event_time_ms, a.max_event_time_ms) << Describe(key);
    }
    EXPECT_EQ(d.dead(), uninterrupted.dead());
    if (::testing::Test::HasFailure()) return;
    if (mode == CheckpointMode::kIncremental) {
      EXPECT_GT(checkpoints, 100u);
    }
  }
  EXPECT_EQ(restores, 12u);
}

TEST(WindowLatenessTest, CheckpointRestoreIsEquivalentToAnUninterruptedRun) {
  CheckpointRun(CheckpointMode::kRestoreEach);
}

// Checkpoints write only the panes that changed since the previous one (and delete the purged
// ones' records): many of them between restarts leave the store exactly the operator's state.
TEST(WindowLatenessTest, IncrementalCheckpointsRestoreToAnUninterruptedRun) {
  CheckpointRun(CheckpointMode::kIncremental);
}

// A state directory of an earlier version holds one record per group (its whole ring): it
// restores, and the next checkpoint replaces each with pane records.
TEST(WindowLatenessTest, GroupRecordsOfEarlierVersionsRestoreAndAreReplaced) {
  CheckpointRun(CheckpointMode::kGroupRecords);
}

// Hostile or corrupt pane records are Corruption, never an index past a group's aggregates: the
// metric count must match the group's kind (a request group holds every well-known metric, a
// gauge group one), pane numbers must be in range, keys well formed.
TEST(WindowLatenessTest, HostileCheckpointRecordsAreCorruption) {
  auto key_of = [](std::string_view metric, std::string_view suffix) {
    std::string key;
    AppendStr(&key, "node-1");
    AppendStr(&key, "llama");
    AppendStr(&key, metric);
    key += suffix;
    return key;
  };
  auto pane_key = [&](std::string_view metric, int64_t pane) {
    std::string be;
    AppendOrdered64(&be, pane);
    return key_of(metric, be);
  };
  auto value_of = [](uint64_t num_metrics, uint64_t aggregates) {
    std::string value;
    PutVarint(&value, 1);
    PutVarint(&value, num_metrics);
    PutVarint(&value, ZigZag(kT0));
    value.push_back(0);
    std::string agg;
    Aggregate().EncodeTo(&agg);
    for (uint64_t m = 0; m < aggregates; ++m) {
      PutVarint(&value, agg.size());
      value += agg;
    }
    return value;
  };
  const int64_t pane = kT0 / 10'000;
  const std::vector<std::pair<std::string, std::vector<std::pair<std::string, std::string>>>>
      cases = {
          {"request group with one metric", {{pane_key("", pane), value_of(1, 1)}}},
          {"gauge group with every metric",
           {{pane_key("queue_depth", pane), value_of(kNumWellKnownIds, kNumWellKnownIds)}}},
          {"a well-known metric as a gauge group", {{pane_key("ttft_ms", pane), value_of(1, 1)}}},
          {"the panes of one group disagree",
           {{pane_key("queue_depth", pane), value_of(1, 1)},
            {pane_key("queue_depth", pane + 1), value_of(kNumWellKnownIds, kNumWellKnownIds)}}},
          {"pane number out of range", {{pane_key("", INT64_MAX / 2), value_of(9, 9)}}},
          // Live panes lie within one ring of each other; these, in different slots, would make
          // Close step through every pane number between them (found by the fuzzer).
          {"panes further apart than the ring",
           {{pane_key("", pane), value_of(9, 9)},
            {pane_key("", pane + 1'000'000'001), value_of(9, 9)}}},
          {"key of 5 extra bytes", {{key_of("", "abcde"), value_of(9, 9)}}},
          {"truncated aggregates", {{pane_key("", pane), value_of(9, 3)}}},
      };
  Interner interner;
  for (const auto& [what, records] : cases) {
    SCOPED_TRACE(what);
    inferscope::testing::TempDir dir;
    StateStoreOptions so;
    so.path = dir.str();
    auto store = StateStore::Open(so, nullptr);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    std::vector<CheckpointRecord> writes;
    CheckpointCollector writer("op", "window", &writes);
    for (const auto& [key, value] : records) writer.Put(key, value);
    ASSERT_TRUE(WriteCheckpointRecords(**store, writes).ok());
    Driver d(OptionsFor(31), interner);
    const Status st = d.op().Restore(StateCheckpointReader("op", "window", store->get()));
    EXPECT_EQ(st.code(), Status::Code::kCorruption) << st.ToString();
  }
}

}  // namespace
}  // namespace inferscope
