#include "operators/sliding_window.h"

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "operators/register.h"
#include "pipeline/checkpoint.h"
#include "pipeline/coding.h"
#include "pipeline/int_math.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/registry.h"
#include "state/checkpoint_store.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using Options = SlidingWindowOperator::Options;

constexpr int64_t kPane = 10'000;
constexpr int64_t kT0 = 1'700'000'000'000;  // aligned to 10 s
constexpr int64_t kP0 = kT0 / kPane;        // pane number of kT0

SeriesKey Key(StringId instance, StringId metric = 1) { return {instance, 7, metric}; }

// A pane summary of `series` for pane number `pane` with a few random values and events.
WindowSummary MakePane(const SeriesKey& series, int64_t pane, std::mt19937_64& rng) {
  WindowSummary s;
  s.series = series;
  s.start_ms = pane * kPane;
  s.end_ms = s.start_ms + kPane;
  std::lognormal_distribution<double> value(3.0, 1.0);
  std::uniform_int_distribution<int> n_values(0, 20);
  std::uniform_int_distribution<int64_t> offset(0, kPane - 1);
  const int n = n_values(rng);
  s.max_event_time_ms = s.start_ms;
  for (int i = 0; i < n; ++i) {
    const int64_t t = s.start_ms + offset(rng);
    s.agg.Add(value(rng) * (i % 7 == 3 ? -1 : 1), t);
    s.agg.AddEvent(i % 5 == 0);
    s.max_event_time_ms = std::max(s.max_event_time_ms, t);
  }
  s.agg.AddEvent(true);  // an event without a value
  return s;
}

// The brute-force result: the panes of `series` in [q - panes + 1, q] merged newest first.
struct Expected {
  Aggregate agg;
  int64_t max_event_time_ms = INT64_MIN;
};
using PaneMap = std::map<std::tuple<StringId, StringId, StringId, int64_t>, WindowSummary>;
Expected BruteForce(const PaneMap& panes, const SeriesKey& series, int64_t q, int64_t n) {
  Expected e;
  for (int64_t r = q; r > q - n; --r) {
    auto it = panes.find({series.instance, series.model, series.metric, r});
    if (it == panes.end()) continue;
    e.agg.Merge(it->second.agg);
    e.max_event_time_ms = std::max(e.max_event_time_ms, it->second.max_event_time_ms);
  }
  return e;
}

void ExpectSameAggregate(const Aggregate& got, const Aggregate& want, const std::string& where) {
  EXPECT_EQ(got.count, want.count) << where;
  EXPECT_EQ(got.events, want.events) << where;
  EXPECT_EQ(got.errors, want.errors) << where;
  EXPECT_EQ(got.sum, want.sum) << where;
  EXPECT_EQ(got.min, want.min) << where;
  EXPECT_EQ(got.max, want.max) << where;
  EXPECT_EQ(got.last, want.last) << where;
  EXPECT_NEAR(got.mean, want.mean, 1e-9 * (1 + std::abs(want.mean))) << where;
  EXPECT_NEAR(got.m2, want.m2, 1e-9 * (1 + std::abs(want.m2))) << where;
  EXPECT_TRUE(got.sketch == want.sketch) << where;
  for (double q : {0.0, 0.5, 0.9, 0.99, 1.0}) {
    const double a = got.sketch.Quantile(q);
    const double b = want.sketch.Quantile(q);
    if (std::isnan(b)) {
      EXPECT_TRUE(std::isnan(a)) << where;
    } else {
      EXPECT_EQ(a, b) << where << " q=" << q;
    }
  }
}

std::string Where(const WindowSummary& w) {
  return "series " + std::to_string(w.series.instance) + " [" + std::to_string(w.start_ms) + ", " +
         std::to_string(w.end_ms) + ") update=" + std::to_string(w.update);
}

Options SmallOptions() {
  Options o;
  o.windows_ms = {30'000, 60'000, 20'000};
  o.pane_ms = kPane;
  o.allowed_lateness_ms = 0;
  return o;
}

// Feeds one pane and returns what the operator emitted.
OutputBatch Feed(SlidingWindowOperator& op, const WindowSummary& pane) {
  OutputBatch in;
  in.Add<kind::PaneSummary>(pane);
  OutputBatch out;
  EXPECT_TRUE(op.ProcessResults(in, out).ok());
  return out;
}

std::vector<WindowSummary> WindowsOnly(const OutputBatch& out) {
  std::vector<WindowSummary> w;
  for (const WindowSummary& s : out.Get<kind::WindowSummary>()) w.push_back(s);
  return w;
}

TEST(SlidingWindowTest, WindowsEqualMergeOfPanesInOrder) {
  Options o = SmallOptions();
  SlidingWindowOperator op(o);
  ASSERT_TRUE(op.Open(StageContext{}).ok());
  std::mt19937_64 rng(42);
  std::bernoulli_distribution present(0.7);
  PaneMap panes;
  uint64_t windows = 0;
  uint64_t pane_count = 0;
  for (int64_t p = kP0; p < kP0 + 40; ++p) {
    OutputBatch in;
    in.watermark_ms = (p + 1) * kPane;
    for (StringId i = 1; i <= 5; ++i) {
      if (!present(rng)) continue;
      WindowSummary pane = MakePane(Key(i), p, rng);
      panes[{pane.series.instance, pane.series.model, pane.series.metric, p}] = pane;
      in.Add<kind::PaneSummary>(pane);
      ++pane_count;
    }
    std::vector<WindowSummary>& in_panes = in.Mutable<kind::PaneSummary>();
    std::shuffle(in_panes.begin(), in_panes.end(), rng);
    OutputBatch out;
    ASSERT_TRUE(op.ProcessResults(in, out).ok());
    EXPECT_EQ(out.watermark_ms, in.watermark_ms);
    for (const WindowSummary& s : out.Get<kind::PaneSummary>()) {
      EXPECT_EQ(s.end_ms - s.start_ms, kPane);  // forwarded
    }
    for (const WindowSummary& s : out.Get<kind::WindowSummary>()) {
      ++windows;
      EXPECT_FALSE(s.update);
      EXPECT_EQ(s.end_ms, (p + 1) * kPane);
      const int64_t n = (s.end_ms - s.start_ms) / kPane;
      Expected e = BruteForce(panes, s.series, p, n);
      ExpectSameAggregate(s.agg, e.agg, Where(s));
      EXPECT_EQ(s.max_event_time_ms, e.max_event_time_ms) << Where(s);
    }
    // pass_panes defaults to true
    EXPECT_EQ(out.Get<kind::PaneSummary>().size(), in.Get<kind::PaneSummary>().size());
  }
  EXPECT_EQ(windows, pane_count * 3);
  EXPECT_EQ(op.windows_emitted(), windows);
  EXPECT_EQ(op.updates_emitted(), 0u);
  EXPECT_EQ(op.series(), 5);
}

// Panes arrive in random order within the allowed lateness, some of them twice (updates): the
// last result emitted for every window equals the merge of the final panes, and every window that
// contains a pane is (re-)emitted after it.
TEST(SlidingWindowTest, RandomArrivalConvergesToMergeOfFinalPanes) {
  Options o = SmallOptions();
  o.allowed_lateness_ms = 80'000;  // 8 panes
  o.pass_panes = false;
  SlidingWindowOperator op(o);
  ASSERT_TRUE(op.Open(StageContext{}).ok());
  std::mt19937_64 rng(7);
  std::bernoulli_distribution present(0.6);
  // Arrival order: pane p of a series arrives at "time" p + jitter (jitter < 8), updates later.
  std::vector<std::pair<double, WindowSummary>> arrivals;
  PaneMap final_panes;
  std::uniform_real_distribution<double> jitter(0, 7.9);
  for (StringId i = 1; i <= 4; ++i) {
    for (int64_t p = kP0; p < kP0 + 60; ++p) {
      if (!present(rng)) continue;
      WindowSummary pane = MakePane(Key(i), p, rng);
      const double at = static_cast<double>(p - kP0) + jitter(rng);
      if (present(rng)) {
        WindowSummary fixed = MakePane(Key(i), p, rng);
        fixed.update = true;
        arrivals.emplace_back(at + jitter(rng) * 0.1, fixed);
        final_panes[{i, 7, 1, p}] = fixed;
        arrivals.emplace_back(at, pane);
      } else {
        final_panes[{i, 7, 1, p}] = pane;
        arrivals.emplace_back(at, pane);
      }
    }
  }
  std::stable_sort(arrivals.begin(), arrivals.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::map<std::tuple<StringId, int64_t, int64_t>, WindowSummary> last;  // (series, start, end)
  for (const auto& [at, pane] : arrivals) {
    for (const WindowSummary& w : WindowsOnly(Feed(op, pane))) {
      last[{w.series.instance, w.start_ms, w.end_ms}] = w;
    }
  }
  EXPECT_EQ(op.panes_ignored(), 0u);
  EXPECT_EQ(op.windows_unrecomputable(), 0u);
  EXPECT_GT(op.updates_emitted(), 0u);
  size_t checked = 0;
  for (const auto& [key, pane] : final_panes) {
    const SeriesKey series = Key(std::get<0>(key));
    const int64_t q = std::get<3>(key);
    for (int64_t n : {2, 3, 6}) {
      auto it = last.find({series.instance, (q + 1 - n) * kPane, (q + 1) * kPane});
      ASSERT_NE(it, last.end()) << "no window of " << n << " panes ending at pane " << q;
      Expected e = BruteForce(final_panes, series, q, n);
      ExpectSameAggregate(it->second.agg, e.agg, Where(it->second));
      ++checked;
    }
  }
  EXPECT_EQ(checked, final_panes.size() * 3);
  EXPECT_EQ(last.size(), checked);  // no window at an end where the series had no pane
}

TEST(SlidingWindowTest, UpdateReemitsExactlyTheWindowsContainingThePane) {
  Options o;
  o.windows_ms = {20'000, 40'000};
  o.pane_ms = kPane;
  o.allowed_lateness_ms = 30'000;
  SlidingWindowOperator op(o);
  ASSERT_TRUE(op.Open(StageContext{}).ok());
  std::mt19937_64 rng(3);
  PaneMap panes;
  for (int64_t p = kP0; p < kP0 + 6; ++p) {
    WindowSummary pane = MakePane(Key(1), p, rng);
    panes[{1, 7, 1, p}] = pane;
    EXPECT_EQ(WindowsOnly(Feed(op, pane)).size(), 2u);
  }
  WindowSummary fixed = MakePane(Key(1), kP0 + 2, rng);
  fixed.agg.Add(1e6, fixed.start_ms);  // make the correction visible
  fixed.update = true;
  panes[{1, 7, 1, kP0 + 2}] = fixed;
  const OutputBatch out = Feed(op, fixed);
  ASSERT_EQ(out.Get<kind::PaneSummary>().size(), 1u);
  EXPECT_TRUE(out.Get<kind::PaneSummary>()[0].update);  // the pane itself, forwarded
  EXPECT_EQ(out.Get<kind::WindowSummary>().size(), 6u);
  // (end pane, panes): windows ending at panes 2..5 that contain pane 2.
  const std::vector<std::pair<int64_t, int64_t>> want = {{2, 2}, {2, 4}, {3, 2},
                                                         {3, 4}, {4, 4}, {5, 4}};
  std::vector<WindowSummary> got = WindowsOnly(out);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const auto [q, n] = want[i];
    const WindowSummary& w = got[i];
    EXPECT_TRUE(w.update) << Where(w);
    EXPECT_EQ(w.end_ms, (kP0 + q + 1) * kPane) << i;
    EXPECT_EQ(w.end_ms - w.start_ms, n * kPane) << i;
    EXPECT_EQ(w.agg.max, 1e6) << Where(w);
    ExpectSameAggregate(w.agg, BruteForce(panes, Key(1), kP0 + q, n).agg, Where(w));
  }
  EXPECT_EQ(op.updates_emitted(), 6u);
  EXPECT_EQ(op.windows_emitted(), 12u);
}

TEST(SlidingWindowTest, PanesOlderThanTheRingAreIgnored) {
  Options o;
  o.windows_ms = {20'000};
  o.pane_ms = kPane;
  o.allowed_lateness_ms = 0;  // ring of 2 panes
  o.pass_panes = false;
  SlidingWindowOperator op(o);
  ASSERT_TRUE(op.Open(StageContext{}).ok());
  EXPECT_EQ(op.ring_size(), 2u);
  std::mt19937_64 rng(5);
  Feed(op, MakePane(Key(1), kP0 + 5, rng));
  EXPECT_TRUE(WindowsOnly(Feed(op, MakePane(Key(1), kP0 + 3, rng))).empty());
  EXPECT_EQ(op.panes_too_old(), 1u);
  // Pane 4 is still in the ring: the window ending at 5 that contains it is re-emitted; its own
  // window would need pane 3, which has left the ring.
  std::vector<WindowSummary> w = WindowsOnly(Feed(op, MakePane(Key(1), kP0 + 4, rng)));
  ASSERT_EQ(w.size(), 1u);
  EXPECT_TRUE(w[0].update);
  EXPECT_EQ(w[0].end_ms, (kP0 + 6) * kPane);
  EXPECT_EQ(op.windows_unrecomputable(), 1u);
  // A pane of another length is not used.
  WindowSummary odd = MakePane(Key(1), kP0 + 6, rng);
  odd.end_ms += 1;
  EXPECT_TRUE(WindowsOnly(Feed(op, odd)).empty());
  EXPECT_EQ(op.panes_ignored(), 2u);
}

TEST(SlidingWindowTest, EarlyEmitsTheWindowEndingAtThePaneInProgress) {
  Options o;
  o.windows_ms = {20'000};
  o.pane_ms = kPane;
  o.emit = SlidingWindowOperator::Emit::kEarly;
  o.pass_panes = false;
  SlidingWindowOperator op(o);
  ASSERT_TRUE(op.Open(StageContext{}).ok());
  std::mt19937_64 rng(11);
  PaneMap panes;
  auto feed = [&](int64_t p) {
    WindowSummary pane = MakePane(Key(1), kP0 + p, rng);
    panes[{1, 7, 1, kP0 + p}] = pane;
    return WindowsOnly(Feed(op, pane));
  };
  // Pane 0: final window ending at pane 0, early window ending at pane 1 (pane 0 only so far).
  std::vector<WindowSummary> w = feed(0);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_FALSE(w[0].update);
  EXPECT_EQ(w[0].end_ms, (kP0 + 1) * kPane);
  EXPECT_FALSE(w[1].update);
  EXPECT_EQ(w[1].end_ms, (kP0 + 2) * kPane);
  ExpectSameAggregate(w[1].agg, BruteForce(panes, Key(1), kP0 + 1, 2).agg, Where(w[1]));
  // Pane 1 replaces the early window ending there, and starts the next one.
  w = feed(1);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_TRUE(w[0].update);
  EXPECT_EQ(w[0].end_ms, (kP0 + 2) * kPane);
  ExpectSameAggregate(w[0].agg, BruteForce(panes, Key(1), kP0 + 1, 2).agg, Where(w[0]));
  EXPECT_FALSE(w[1].update);
  EXPECT_EQ(w[1].end_ms, (kP0 + 3) * kPane);
  // No pane 2: the early window ending at pane 2 stands; pane 3 is new at its end.
  w = feed(3);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_FALSE(w[0].update);
  EXPECT_EQ(w[0].end_ms, (kP0 + 4) * kPane);
  ExpectSameAggregate(w[0].agg, BruteForce(panes, Key(1), kP0 + 3, 2).agg, Where(w[0]));
  EXPECT_EQ(w[1].end_ms, (kP0 + 5) * kPane);
  EXPECT_EQ(op.windows_emitted(), 5u);
  EXPECT_EQ(op.updates_emitted(), 1u);
}

TEST(SlidingWindowTest, SeriesLimitIsCounted) {
  Options o = SmallOptions();
  o.max_series = 2;
  SlidingWindowOperator op(o);
  MetricsRegistry metrics;
  StageContext ctx;
  ctx.name = "sliding";
  ctx.metrics = &metrics;
  ASSERT_TRUE(op.Open(ctx).ok());
  std::mt19937_64 rng(1);
  for (StringId i = 1; i <= 3; ++i) Feed(op, MakePane(Key(i), kP0, rng));
  EXPECT_EQ(op.series(), 2);
  EXPECT_EQ(op.panes_series_limit(), 1u);
  EXPECT_EQ(metrics
                .GetCounter("inferscope_sliding_ignored_panes_total", "",
                            {{"stage", "sliding"}, {"reason", "series_limit"}})
                ->value(),
            1u);
  EXPECT_EQ(
      metrics.GetCounter("inferscope_sliding_windows_total", "", {{"stage", "sliding"}})->value(),
      6u);
  EXPECT_EQ(metrics.GetGauge("inferscope_sliding_series", "", {{"stage", "sliding"}})->value(),
            2.0);
}

TEST(SlidingWindowTest, LearnsThePaneFromTheFirstSummary) {
  Options o;
  o.windows_ms = {60'000};
  SlidingWindowOperator op(o);
  ASSERT_TRUE(op.Open(StageContext{}).ok());
  std::mt19937_64 rng(2);
  EXPECT_EQ(WindowsOnly(Feed(op, MakePane(Key(1), kP0, rng))).size(), 1u);
  EXPECT_EQ(op.pane_ms(), kPane);
  EXPECT_EQ(op.ring_size(), 12u);  // 6 panes + 1 m allowed lateness

  Options bad;
  bad.windows_ms = {25'000};
  SlidingWindowOperator mismatch(bad);
  ASSERT_TRUE(mismatch.Open(StageContext{}).ok());
  OutputBatch in;
  in.Add<kind::PaneSummary>(MakePane(Key(1), kP0, rng));
  OutputBatch out;
  Status st = mismatch.ProcessResults(in, out);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("not a multiple"), std::string::npos) << st.message();
  EXPECT_TRUE(mismatch.ProcessResults(in, out).ok());  // reported once, then counted
  EXPECT_EQ(mismatch.panes_ignored(), 2u);
  EXPECT_EQ(out.Get<kind::PaneSummary>().size(), 2u);  // the panes are still forwarded
}

Result<std::unique_ptr<SlidingWindowOperator>> FromYaml(const std::string& yaml) {
  return SlidingWindowOperator::Create(ConfigNode("t.yaml", YAML::Load(yaml), "options"));
}

TEST(SlidingWindowTest, OptionsFromConfig) {
  auto op = FromYaml(
      "windows: [1m, 5m]\npane: 10s\nemit: early\npass_panes: false\n"
      "allowed_lateness: 30s\nmax_series: 10\n");
  ASSERT_TRUE(op.ok()) << op.status().message();
  const Options& o = (*op)->options();
  EXPECT_EQ(o.windows_ms, (std::vector<int64_t>{60'000, 300'000}));
  EXPECT_EQ(o.pane_ms, kPane);
  EXPECT_EQ(o.emit, SlidingWindowOperator::Emit::kEarly);
  EXPECT_FALSE(o.pass_panes);
  EXPECT_EQ(o.allowed_lateness_ms, 30'000);
  EXPECT_EQ(o.max_series, 10);
  EXPECT_EQ((*op)->ring_size(), 33u);

  auto defaults = SlidingWindowOperator::Create(ConfigNode());
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ((*defaults)->options().windows_ms, (std::vector<int64_t>{60'000, 300'000, 3'600'000}));
  EXPECT_EQ((*defaults)->options().emit, SlidingWindowOperator::Emit::kFinal);
  EXPECT_TRUE((*defaults)->options().pass_panes);
}

TEST(SlidingWindowTest, OptionErrorsNameFileLineAndField) {
  struct Case {
    std::string yaml;
    std::string location;  // file:line of the field
    std::string field;
    std::string text;
  };
  const std::vector<Case> cases = {
      {"pane: 10s\nwindows: [1m, 25s]\n", "t.yaml:2:", "options.windows", "not a multiple"},
      {"windows: [1m]\npane: 7s\n", "t.yaml:1:", "options.windows", "not a multiple"},
      {"windows: [1m]\npane: 50ms\n", "t.yaml:2:", "options.pane", "at least 100ms"},
      {"windows: [1m]\nemit: sometimes\n", "t.yaml:2:", "options.emit", "'final' or 'early'"},
      {"windows: [1m, soon]\n", "t.yaml:1:", "options.windows", "soon"},
      {"windows: 1m\n", "t.yaml:1:", "options.windows", "list"},
      {"windows: [1m, 1m]\n", "t.yaml:1:", "options.windows", "distinct"},
      {"windows: [1m]\nwindow: [5m]\n", "t.yaml:2:", "window", "unknown"},
      {"max_series: 0\n", "t.yaml:1:", "options.max_series", ""},
  };
  for (const Case& c : cases) {
    auto r = FromYaml(c.yaml);
    ASSERT_FALSE(r.ok()) << c.yaml;
    const std::string message(r.status().message());
    EXPECT_NE(message.find(c.location), std::string::npos) << message;
    EXPECT_NE(message.find(c.field), std::string::npos) << message;
    EXPECT_NE(message.find(c.text), std::string::npos) << message;
  }
}

TEST(SlidingWindowTest, RegisteredByName) {
  Registry registry;
  RegisterOperators(registry);
  auto op = registry.CreateOperator("sliding_window", ConfigNode());
  ASSERT_TRUE(op.ok()) << op.status().message();
  EXPECT_TRUE((*op)->ReadsResults());
  EXPECT_EQ((*op)->Reads(), KindSet::Of<kind::PaneSummary>());
  // Windows are their own kind; the panes read are forwarded too by default (pass_panes).
  EXPECT_EQ((*op)->Emits(), (KindSet::Of<kind::WindowSummary, kind::PaneSummary>()));
  auto windows_only = registry.CreateOperator(
      "sliding_window", ConfigNode("t.yaml", YAML::Load("pass_panes: false"), "options"));
  ASSERT_TRUE(windows_only.ok()) << windows_only.status().message();
  EXPECT_EQ((*windows_only)->Emits(), KindSet::Of<kind::WindowSummary>());
}

// Everything a window says, as bytes, so two runs' outputs compare exactly.
std::string Fingerprint(const WindowSummary& w) {
  std::string out = std::to_string(w.series.instance) + "/" + std::to_string(w.series.model) + "/" +
                    std::to_string(w.series.metric) + " [" + std::to_string(w.start_ms) + ", " +
                    std::to_string(w.end_ms) + ") " + std::to_string(w.max_event_time_ms) +
                    (w.update ? " update " : " ");
  w.agg.EncodeTo(&out);
  return out;
}

// Panes arriving out of order with updates, fed to one operator without interruption and to
// another that is checkpointed (to a real RocksDB store), destroyed and restored at four points:
// both emit exactly the same windows, the first ones after each restore included. Both emit
// policies, and a pane learned from the input (restored from the checkpoint).
// The stage's checkpoint records in `store`: series records (a key of three str()s) and pane
// records (the series key and a be64 pane number); the operator record is neither.
struct StoredRecords {
  size_t series = 0;
  size_t panes = 0;
};
StoredRecords CountRecords(const StateStore& store) {
  StoredRecords n;
  const Status st = StateCheckpointReader("op", "sliding", &store)
                        .ForEach([&](std::string_view key, std::string_view) {
                          if (key.empty()) return Status::Ok();
                          ++(StrsLength(key, 3) == key.size() ? n.series : n.panes);
                          return Status::Ok();
                        });
  EXPECT_TRUE(st.ok()) << st.ToString();
  return n;
}

// Rewrites the stage's series and pane records in `store` as the version-1 series records
// earlier versions wrote (the ring inside the series record).
void RewriteAsRingRecords(StateStore& store) {
  struct Ring {
    std::string header;  // newest, early
    std::vector<std::string> panes;
  };
  std::map<std::string, Ring> rings;
  std::vector<CheckpointRecord> records;
  CheckpointCollector writer("op", "sliding", &records);
  const Status st =
      StateCheckpointReader("op", "sliding", &store)
          .ForEach([&](std::string_view key, std::string_view value) {
            if (key.empty()) return Status::Ok();
            const std::string_view rest = key.substr(StrsLength(key, 3));
            uint64_t version = 0;
            EXPECT_TRUE(GetVarint(&value, &version));
            EXPECT_EQ(version, 2u);
            if (rest.empty()) {
              rings[std::string(key)].header = value;
              return Status::Ok();
            }
            const int64_t pane = ReadOrdered64(rest);
            uint64_t max_time = 0;
            EXPECT_TRUE(GetVarint(&value, &max_time));
            std::string slot;
            PutVarint(&slot, ZigZag(pane));
            PutVarint(&slot, max_time);
            PutVarint(&slot, value.size());
            slot += value;
            rings[std::string(key.substr(0, key.size() - 8))].panes.push_back(std::move(slot));
            writer.Delete(key);
            return Status::Ok();
          });
  EXPECT_TRUE(st.ok()) << st.ToString();
  for (auto& [key, ring] : rings) {
    std::string value;
    PutVarint(&value, 1);
    value += ring.header;
    PutVarint(&value, ring.panes.size());
    for (const std::string& slot : ring.panes) value += slot;
    writer.Put(key, std::move(value));
  }
  EXPECT_TRUE(WriteCheckpointRecords(store, records).ok());
}

enum class CheckpointMode {
  kRestoreEach,  // every checkpoint is followed by a restart
  kIncremental,  // checkpoints after about a third of the arrivals, restarts at a few of them
  kRingRecords,  // like kRestoreEach, from the version-1 records of the same state
};

// Checkpoints and restarts at random points: the windows equal an uninterrupted run's, and after
// every checkpoint the store holds one record per series and one per pane in a ring (nothing
// stale, nothing missing).
void CheckpointRun(CheckpointMode mode) {
  for (const bool early : {false, true}) {
    SCOPED_TRACE(early ? "early" : "final");
    Options o = SmallOptions();
    o.pane_ms = early ? kPane : 0;  // final: learned from the first pane, then restored
    o.emit = early ? SlidingWindowOperator::Emit::kEarly : SlidingWindowOperator::Emit::kFinal;
    o.allowed_lateness_ms = 50'000;
    o.pass_panes = false;
    Interner interner;
    StageContext ctx;
    ctx.interner = &interner;
    std::vector<SeriesKey> keys;
    for (const char* instance : {"node-1", "node-2", "node-3", "node-4"}) {
      keys.push_back(
          {interner.Intern(instance), interner.Intern("llama"), interner.Intern("ttft_ms")});
    }
    std::mt19937_64 rng(early ? 11 : 12);
    std::bernoulli_distribution present(0.6);
    std::uniform_real_distribution<double> jitter(0, 4.9);
    std::vector<std::pair<double, WindowSummary>> arrivals;
    for (const SeriesKey& key : keys) {
      for (int64_t p = kP0; p < kP0 + 50; ++p) {
        if (!present(rng)) continue;
        WindowSummary pane = MakePane(key, p, rng);
        const double at = static_cast<double>(p - kP0) + jitter(rng);
        arrivals.emplace_back(at, pane);
        if (present(rng)) {
          WindowSummary fixed = MakePane(key, p, rng);
          fixed.update = true;
          arrivals.emplace_back(at + jitter(rng), fixed);
        }
      }
    }
    std::stable_sort(arrivals.begin(), arrivals.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    auto feed = [](SlidingWindowOperator& op, const WindowSummary& pane,
                   std::vector<std::string>* out) {
      OutputBatch in;
      in.Add<kind::PaneSummary>(pane);
      in.watermark_ms = pane.start_ms;
      OutputBatch result;
      EXPECT_TRUE(op.ProcessResults(in, result).ok());
      for (const WindowSummary& w : result.Get<kind::WindowSummary>()) {
        out->push_back(Fingerprint(w));
      }
    };

    SlidingWindowOperator uninterrupted(o);
    ASSERT_TRUE(uninterrupted.Open(ctx).ok());
    std::vector<std::string> want;
    for (const auto& [at, pane] : arrivals) feed(uninterrupted, pane, &want);
    ASSERT_GT(uninterrupted.updates_emitted(), 0u);

    testing::TempDir dir;
    StateStoreOptions so;
    so.path = dir.str();
    auto store = StateStore::Open(so, nullptr);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    std::set<size_t> points, checkpoints;
    while (points.size() < 4) points.insert(1 + rng() % (arrivals.size() - 1));
    checkpoints = points;
    if (mode == CheckpointMode::kIncremental) {
      for (size_t i = 1; i < arrivals.size(); ++i) {
        if (rng() % 3 == 0) checkpoints.insert(i);
      }
    }
    auto op = std::make_unique<SlidingWindowOperator>(o);
    ASSERT_TRUE(op->Open(ctx).ok());
    std::vector<std::string> got;
    for (size_t i = 0; i < arrivals.size(); ++i) {
      if (checkpoints.count(i) != 0) {
        std::vector<CheckpointRecord> writes;
        CheckpointCollector writer("op", "sliding", &writes);
        ASSERT_TRUE(op->Checkpoint(writer).ok());
        ASSERT_TRUE(WriteCheckpointRecords(**store, writes).ok());
        if (op->held_series() == 0) {
          const StoredRecords stored = CountRecords(**store);
          EXPECT_EQ(static_cast<int64_t>(stored.series), op->series());
          EXPECT_EQ(static_cast<int64_t>(stored.panes), op->ring_panes());
        }
      }
      if (points.count(i) != 0) {
        if (mode == CheckpointMode::kRingRecords) {
          RewriteAsRingRecords(**store);
          EXPECT_EQ(CountRecords(**store).panes, 0u);
        }
        const int64_t series = op->series() + op->held_series();
        const int64_t panes = op->ring_panes();
        op = std::make_unique<SlidingWindowOperator>(o);
        ASSERT_TRUE(op->Open(ctx).ok());
        const Status restored = op->Restore(StateCheckpointReader("op", "sliding", store->get()));
        ASSERT_TRUE(restored.ok()) << restored.ToString();
        // A learned pane: the records wait for the first pane summary (the upstream's pane may
        // have changed since the checkpoint).
        EXPECT_EQ(op->series() + op->held_series(), series);
        EXPECT_EQ(op->pane_ms(), o.pane_ms);
        if (op->held_series() == 0) {
          EXPECT_EQ(op->ring_panes(), panes);
        }
        // Nothing changed since the restore: the checkpoint writes nothing (from version-1
        // records, held or not: their rewrite as series and pane records).
        std::vector<CheckpointRecord> writes;
        CheckpointCollector writer("op", "sliding", &writes);
        ASSERT_TRUE(op->Checkpoint(writer).ok());
        if (mode != CheckpointMode::kRingRecords) {
          EXPECT_TRUE(writes.empty()) << writes.size() << " records";
        } else if (op->held_series() == 0) {
          EXPECT_EQ(static_cast<int64_t>(writes.size()), series + panes);
        }
        ASSERT_TRUE(WriteCheckpointRecords(**store, writes).ok());
      }
      feed(*op, arrivals[i].second, &got);
    }
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i]) << "window " << i;
  }
}

TEST(SlidingWindowTest, CheckpointRestoreIsEquivalentToAnUninterruptedRun) {
  CheckpointRun(CheckpointMode::kRestoreEach);
}

// Checkpoints write the series and panes that changed since the previous one and delete the
// records of panes that left the ring: many of them between restarts leave exactly the rings.
TEST(SlidingWindowTest, IncrementalCheckpointsRestoreToAnUninterruptedRun) {
  CheckpointRun(CheckpointMode::kIncremental);
}

// A state directory of an earlier version holds each ring in its series record: it restores
// (held or not), and the next checkpoint rewrites it as series and pane records.
TEST(SlidingWindowTest, RingRecordsOfEarlierVersionsRestoreAndAreRewritten) {
  CheckpointRun(CheckpointMode::kRingRecords);
}

// Without a restore the rings start empty: a window spanning panes from before the "restart" then
// differs, which is what the checkpoint prevents (the test above would fail without Restore).
TEST(SlidingWindowTest, WithoutRestoreTheFirstWindowsDiffer) {
  Options o = SmallOptions();
  Interner interner;
  StageContext ctx;
  ctx.interner = &interner;
  const SeriesKey key{interner.Intern("node-1"), interner.Intern("m"), interner.Intern("ttft_ms")};
  std::mt19937_64 rng(5);
  SlidingWindowOperator before(o);
  ASSERT_TRUE(before.Open(ctx).ok());
  for (int64_t p = kP0; p < kP0 + 3; ++p) Feed(before, MakePane(key, p, rng));
  std::vector<CheckpointRecord> writes;
  CheckpointCollector writer("op", "sliding", &writes);
  ASSERT_TRUE(before.Checkpoint(writer).ok());
  ASSERT_EQ(writes.size(), 5u);  // the operator record, the series and its 3 panes
  testing::TempDir dir;
  StateStoreOptions so;
  so.path = dir.str();
  auto store = StateStore::Open(so, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE(WriteCheckpointRecords(**store, writes).ok());

  const WindowSummary next = MakePane(key, kP0 + 3, rng);
  SlidingWindowOperator restored(o), fresh(o);
  ASSERT_TRUE(restored.Open(ctx).ok());
  ASSERT_TRUE(fresh.Open(ctx).ok());
  ASSERT_TRUE(restored.Restore(StateCheckpointReader("op", "sliding", store->get())).ok());
  const std::vector<WindowSummary> a = WindowsOnly(Feed(before, next));
  const std::vector<WindowSummary> b = WindowsOnly(Feed(restored, next));
  const std::vector<WindowSummary> c = WindowsOnly(Feed(fresh, next));
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 3u);
  ASSERT_EQ(c.size(), 3u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(Fingerprint(b[i]), Fingerprint(a[i])) << i;
    EXPECT_NE(Fingerprint(c[i]), Fingerprint(a[i])) << i;  // only the newest pane
  }
}

// A pane summary of `series` for pane number `pane` of `pane_ms`, holding the value 1.
WindowSummary PaneOf(const SeriesKey& series, int64_t pane, int64_t pane_ms) {
  WindowSummary s;
  s.series = series;
  s.start_ms = pane * pane_ms;
  s.end_ms = s.start_ms + pane_ms;
  s.max_event_time_ms = s.start_ms;
  s.agg.Add(1, s.start_ms);
  return s;
}

// Writes `op`'s checkpoint to `store`; returns the keys it deleted.
std::vector<std::string> CheckpointTo(SlidingWindowOperator& op, StateStore& store) {
  std::vector<CheckpointRecord> writes;
  CheckpointCollector writer("op", "sliding", &writes);
  EXPECT_TRUE(op.Checkpoint(writer).ok());
  EXPECT_TRUE(WriteCheckpointRecords(store, writes).ok());
  std::vector<std::string> deleted;
  for (const CheckpointRecord& r : writes) {
    if (!r.value) deleted.push_back(r.key);
  }
  return deleted;
}

// The pane learned from the upstream changed (10 s -> 5 s) between runs: the checkpoint's rings in
// 10 s units are dropped and deleted, the new pane is used (not rejected as "bad_pane" because the
// checkpoint named 10 s), and a later restart restores the 5 s state only.
TEST(SlidingWindowTest, LearnedPaneChangeAcrossARestartStartsAfresh) {
  Options o = SmallOptions();
  o.pane_ms = 0;
  Interner interner;
  StageContext ctx;
  ctx.interner = &interner;
  const SeriesKey a{interner.Intern("node-1"), interner.Intern("m"), interner.Intern("ttft_ms")};
  const SeriesKey b{interner.Intern("node-2"), a.model, a.metric};
  testing::TempDir dir;
  StateStoreOptions so;
  so.path = dir.str();
  auto store = StateStore::Open(so, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  {
    SlidingWindowOperator before(o);
    ASSERT_TRUE(before.Open(ctx).ok());
    for (int64_t p = kP0; p < kP0 + 3; ++p) Feed(before, PaneOf(a, p, kPane));
    Feed(before, PaneOf(b, kP0, kPane));
    ASSERT_EQ(before.pane_ms(), kPane);
    EXPECT_TRUE(CheckpointTo(before, **store).empty());
  }
  constexpr int64_t kHalf = kPane / 2;
  for (int restart = 0; restart < 2; ++restart) {
    SCOPED_TRACE(restart);
    SlidingWindowOperator op(o);
    ASSERT_TRUE(op.Open(ctx).ok());
    ASSERT_TRUE(op.Restore(StateCheckpointReader("op", "sliding", store->get())).ok());
    EXPECT_EQ(op.held_series(), restart == 0 ? 2 : 1);
    const int64_t q0 = 2 * (kP0 + 10) + 10 * restart;
    std::vector<WindowSummary> last;
    for (int64_t q = q0; q < q0 + 4; ++q) last = WindowsOnly(Feed(op, PaneOf(a, q, kHalf)));
    EXPECT_EQ(op.pane_ms(), kHalf);
    EXPECT_EQ(op.panes_ignored(), 0u);
    EXPECT_EQ(op.held_series(), 0);
    EXPECT_EQ(op.series(), 1);  // node-2's 10 s ring is gone; node-1 restarted in 5 s panes
    ASSERT_EQ(last.size(), 3u);
    // 20 s, 30 s and 60 s windows of 5 s panes holding 1 each: only panes since the restart
    // (restart 1 restored restart 0's, 10 panes = 50 s before, outside every window).
    EXPECT_EQ(last[0].agg.count, 4);
    EXPECT_EQ(last[0].end_ms - last[0].start_ms, 20'000);
    EXPECT_EQ(last[1].agg.count, 4);
    EXPECT_EQ(last[2].agg.count, restart == 0 ? 4 : 6);
    const std::vector<std::string> deleted = CheckpointTo(op, **store);
    // Restart 0 deletes both 10 s series records and their 4 pane records (node-1's series is
    // then written anew); restart 1 the records of restart 0's first 2 panes, which have left
    // the ring of 12 (its newest pane is 13 panes after them).
    EXPECT_EQ(deleted.size(), restart == 0 ? 6u : 2u);
  }
}

// A configured pane that differs from the checkpoint's skips the restore and deletes the old
// records, so that the next run (whose checkpoint header then names the new pane) does not
// restore 10 s rings as 5 s ones.
TEST(SlidingWindowTest, ConfiguredPaneChangeDeletesTheOldRecords) {
  Interner interner;
  StageContext ctx;
  ctx.interner = &interner;
  const SeriesKey a{interner.Intern("node-1"), interner.Intern("m"), interner.Intern("ttft_ms")};
  const SeriesKey b{interner.Intern("node-2"), a.model, a.metric};
  const SeriesKey c{interner.Intern("node-3"), a.model, a.metric};
  testing::TempDir dir;
  StateStoreOptions so;
  so.path = dir.str();
  auto store = StateStore::Open(so, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  constexpr int64_t kHalf = kPane / 2;
  Options ten = SmallOptions();
  Options five = SmallOptions();
  five.pane_ms = kHalf;
  {
    SlidingWindowOperator before(ten);
    ASSERT_TRUE(before.Open(ctx).ok());
    for (int64_t p = kP0; p < kP0 + 3; ++p) {
      Feed(before, PaneOf(a, p, kPane));
      Feed(before, PaneOf(b, p, kPane));
    }
    CheckpointTo(before, **store);
  }
  {
    SlidingWindowOperator changed(five);
    ASSERT_TRUE(changed.Open(ctx).ok());
    ASSERT_TRUE(changed.Restore(StateCheckpointReader("op", "sliding", store->get())).ok());
    EXPECT_EQ(changed.series(), 0);
    for (int64_t q = 2 * kP0 + 8; q < 2 * kP0 + 10; ++q) Feed(changed, PaneOf(c, q, kHalf));
    EXPECT_EQ(CheckpointTo(changed, **store).size(), 8u);  // 2 series and their 6 panes
  }
  Options learned = SmallOptions();
  learned.pane_ms = 0;
  SlidingWindowOperator after(learned);
  ASSERT_TRUE(after.Open(ctx).ok());
  ASSERT_TRUE(after.Restore(StateCheckpointReader("op", "sliding", store->get())).ok());
  EXPECT_EQ(after.held_series(), 1);
  Feed(after, PaneOf(a, 2 * kP0 + 10, kHalf));
  EXPECT_EQ(after.series(), 2);  // node-3 restored, node-1 new; node-2 not restored
  EXPECT_EQ(after.panes_ignored(), 0u);
}

// Moves the operator's watermark to `watermark_ms` (no panes).
void AdvanceWatermark(SlidingWindowOperator& op, int64_t watermark_ms) {
  OutputBatch in;
  in.watermark_ms = watermark_ms;
  OutputBatch out;
  EXPECT_TRUE(op.ProcessResults(in, out).ok());
}

// The series' names are referenced while it lives: upstream expiry (interner sweeps) cannot
// reclaim them, so the expired series' record is deleted under the key it was written with
// (not a key of empty names, which would leave the record for ever).
TEST(SlidingWindowTest, ExpiredSeriesRecordIsDeletedAfterInternerSweeps) {
  Options o = SmallOptions();
  o.series_ttl_ms = 60'000;
  Interner interner;
  StageContext ctx;
  ctx.interner = &interner;
  const SeriesKey key{interner.Intern("node-1"), interner.Intern("m"), interner.Intern("ttft_ms")};
  testing::TempDir dir;
  StateStoreOptions so;
  so.path = dir.str();
  auto store = StateStore::Open(so, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  SlidingWindowOperator op(o);
  ASSERT_TRUE(op.Open(ctx).ok());
  Feed(op, PaneOf(key, kP0, kPane));
  std::vector<CheckpointRecord> writes;
  CheckpointCollector writer("op", "sliding", &writes);
  ASSERT_TRUE(op.Checkpoint(writer).ok());
  ASSERT_EQ(writes.size(), 3u);  // the operator record, the series and its pane
  const std::vector<std::string> written = {writes[1].key, writes[2].key};
  ASSERT_FALSE(written[0].empty());
  for (int i = 0; i < 4; ++i) interner.Sweep();
  EXPECT_EQ(interner.Name(key.instance), "node-1");
  AdvanceWatermark(op, kT0 + 3'600'000);
  op.ExpireIdleSeries();
  ASSERT_EQ(op.series_expired(), 1u);
  EXPECT_EQ(CheckpointTo(op, **store), written);
  // Released: the names can now be reclaimed.
  for (int i = 0; i < 4; ++i) interner.Sweep();
  EXPECT_EQ(interner.Name(key.instance), "");
  // A pane naming a reclaimed id is not tracked (its record could never be keyed).
  Feed(op, PaneOf(key, kP0 + 400, kPane));
  EXPECT_EQ(op.series(), 0);
  EXPECT_EQ(op.panes_stale_name(), 1u);
}

// Without checkpoints nothing is stored, so expiring series queues no deletions (the queue used
// to grow by one key per expired series for ever); with one checkpoint, at most one per record.
TEST(SlidingWindowTest, PendingDeletesAreBoundedByStoredRecords) {
  Options o = SmallOptions();
  o.series_ttl_ms = 60'000;
  Interner interner;
  StageContext ctx;
  ctx.interner = &interner;
  SlidingWindowOperator op(o);
  ASSERT_TRUE(op.Open(ctx).ok());
  const StringId model = interner.Intern("m"), metric = interner.Intern("ttft_ms");
  int64_t p = kP0;
  for (int round = 0; round < 20; ++round, p += 1000) {
    for (int i = 0; i < 50; ++i) {
      const SeriesKey key{interner.Intern("node-" + std::to_string(i)), model, metric};
      Feed(op, PaneOf(key, p, kPane));
    }
    if (round == 10) {
      std::vector<CheckpointRecord> writes;
      CheckpointCollector writer("op", "sliding", &writes);
      ASSERT_TRUE(op.Checkpoint(writer).ok());  // 100 records, never written to a store here
    }
    AdvanceWatermark(op, (p + 500) * kPane);
    op.ExpireIdleSeries();
  }
  EXPECT_EQ(op.series_expired(), 20u * 50u);
  EXPECT_EQ(op.pending_deletes(), 100u);  // the records of the one checkpoint: 50 series, 50 panes
}

// Writes a hand-made checkpoint: the operator record with `pane_ms` and one series record.
void WriteRawCheckpoint(StateStore& store, int64_t pane_ms, int64_t newest, int64_t early) {
  std::string header, key, value;
  PutVarint(&header, 1);
  PutVarint(&header, static_cast<uint64_t>(pane_ms));
  PutVarint(&header, ZigZag(kT0));
  AppendStr(&key, "node-1");
  AppendStr(&key, "m");
  AppendStr(&key, "ttft_ms");
  PutVarint(&value, 1);
  PutVarint(&value, ZigZag(newest));
  PutVarint(&value, ZigZag(early));
  PutVarint(&value, 0);
  std::vector<CheckpointRecord> records = {{"", header}, {key, value}};
  std::vector<CheckpointRecord> prefixed;
  CheckpointCollector writer("op", "sliding", &prefixed);
  for (CheckpointRecord& r : records) writer.Put(r.key, std::move(*r.value));
  ASSERT_TRUE(WriteCheckpointRecords(store, prefixed).ok());
}

// Pane numbers that would overflow `newest - ring` or `(newest + 1) * pane` are corruption.
TEST(SlidingWindowTest, HostilePaneNumbersInACheckpointAreCorruption) {
  for (const auto& [newest, early] :
       {std::pair{INT64_MIN + 1, INT64_MIN}, std::pair{INT64_MAX / 2, INT64_MIN},
        std::pair{INT64_MAX / kPane - 1, INT64_MIN}, std::pair{kP0, INT64_MAX - 1}}) {
    SCOPED_TRACE(std::to_string(newest) + " " + std::to_string(early));
    Interner interner;
    StageContext ctx;
    ctx.interner = &interner;
    testing::TempDir dir;
    StateStoreOptions so;
    so.path = dir.str();
    auto store = StateStore::Open(so, nullptr);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    WriteRawCheckpoint(**store, kPane, newest, early);
    SlidingWindowOperator op(SmallOptions());
    ASSERT_TRUE(op.Open(ctx).ok());
    const Status st = op.Restore(StateCheckpointReader("op", "sliding", store->get()));
    EXPECT_EQ(st.code(), Status::Code::kCorruption) << st.ToString();
  }
  // A sane record restores.
  Interner interner;
  StageContext ctx;
  ctx.interner = &interner;
  testing::TempDir dir;
  StateStoreOptions so;
  so.path = dir.str();
  auto store = StateStore::Open(so, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  WriteRawCheckpoint(**store, kPane, kP0, kP0 + 1);
  SlidingWindowOperator op(SmallOptions());
  ASSERT_TRUE(op.Open(ctx).ok());
  ASSERT_TRUE(op.Restore(StateCheckpointReader("op", "sliding", store->get())).ok());
  EXPECT_EQ(op.series(), 1);
}

// Series beyond a lowered max_series are not restored, and their records are deleted.
TEST(SlidingWindowTest, SeriesOverALoweredLimitAreDeletedOnRestore) {
  Interner interner;
  StageContext ctx;
  ctx.interner = &interner;
  testing::TempDir dir;
  StateStoreOptions so;
  so.path = dir.str();
  auto store = StateStore::Open(so, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  const StringId model = interner.Intern("m"), metric = interner.Intern("ttft_ms");
  {
    SlidingWindowOperator before(SmallOptions());
    ASSERT_TRUE(before.Open(ctx).ok());
    for (int i = 0; i < 3; ++i) {
      Feed(before,
           PaneOf({interner.Intern("node-" + std::to_string(i)), model, metric}, kP0, kPane));
    }
    CheckpointTo(before, **store);
  }
  Options one = SmallOptions();
  one.max_series = 1;
  SlidingWindowOperator op(one);
  ASSERT_TRUE(op.Open(ctx).ok());
  ASSERT_TRUE(op.Restore(StateCheckpointReader("op", "sliding", store->get())).ok());
  EXPECT_EQ(op.series(), 1);
  EXPECT_EQ(op.panes_series_limit(), 2u);
  EXPECT_EQ(CheckpointTo(op, **store).size(), 4u);  // 2 series records and their pane records
  SlidingWindowOperator again(one);
  ASSERT_TRUE(again.Open(ctx).ok());
  ASSERT_TRUE(again.Restore(StateCheckpointReader("op", "sliding", store->get())).ok());
  EXPECT_EQ(again.series(), 1);
  EXPECT_EQ(again.panes_series_limit(), 0u);
}

// The timer only expires idle series, and only a moving watermark can make one idle: an idle
// operator asks for no timer; after the watermark moves, one pass at most once a second; an
// expired series' checkpoint record is deleted.
TEST(SlidingWindowTest, IdleOperatorAsksForNoTimer) {
  Options o = SmallOptions();
  o.series_ttl_ms = 60'000;
  Interner interner;
  StageContext ctx;
  ctx.interner = &interner;
  SlidingWindowOperator op(o);
  ASSERT_TRUE(op.Open(ctx).ok());
  EXPECT_EQ(op.NextTimerMs(1'000), Operator::kNoTimer) << "no series";
  const SeriesKey key{interner.Intern("node-1"), interner.Intern("m"), interner.Intern("ttft_ms")};
  std::mt19937_64 rng(9);
  auto feed = [&](const WindowSummary& pane, int64_t watermark_ms) {
    OutputBatch in;
    in.Add<kind::PaneSummary>(pane);
    in.watermark_ms = watermark_ms;
    OutputBatch out;
    ASSERT_TRUE(op.ProcessResults(in, out).ok());
  };
  auto tick = [&](int64_t now_ms) {
    OutputBatch out;
    ASSERT_TRUE(op.OnTimer(now_ms, out).ok());
  };
  feed(MakePane(key, kP0, rng), kT0 + kPane);
  EXPECT_LE(op.NextTimerMs(1'000), 1'000) << "the watermark moved: a pass is due";
  tick(1'000);
  EXPECT_EQ(op.series(), 1);
  EXPECT_EQ(op.NextTimerMs(1'100), Operator::kNoTimer) << "nothing can change until input";
  EXPECT_EQ(op.NextTimerMs(50'000), Operator::kNoTimer);
  // The watermark moves far on (another series' pane): one pass, a second after the last.
  const SeriesKey other{interner.Intern("node-2"), key.model, key.metric};
  feed(MakePane(other, kP0 + 100, rng), kT0 + 101 * kPane);
  EXPECT_EQ(op.NextTimerMs(1'200), 2'000);
  std::vector<CheckpointRecord> writes;
  CheckpointCollector writer("op", "sliding", &writes);
  ASSERT_TRUE(op.Checkpoint(writer).ok());
  tick(2'000);
  EXPECT_EQ(op.series(), 1) << "node-1 expired";
  EXPECT_EQ(op.series_expired(), 1u);
  EXPECT_EQ(op.NextTimerMs(2'100), Operator::kNoTimer);
  writes.clear();
  ASSERT_TRUE(op.Checkpoint(writer).ok());
  ASSERT_EQ(writes.size(), 2u);  // node-1's series record and its one pane's record
  EXPECT_FALSE(writes[0].value.has_value()) << "node-1's record deleted";
  EXPECT_FALSE(writes[1].value.has_value()) << "node-1's pane record deleted";

  Options forever = o;
  forever.series_ttl_ms = 0;
  SlidingWindowOperator keep(forever);
  ASSERT_TRUE(keep.Open(ctx).ok());
  OutputBatch in, out;
  in.Add<kind::PaneSummary>(MakePane(key, kP0, rng));
  in.watermark_ms = kT0 + kPane;
  ASSERT_TRUE(keep.ProcessResults(in, out).ok());
  EXPECT_EQ(keep.NextTimerMs(1'000), Operator::kNoTimer) << "series_ttl 0: nothing expires";
}

}  // namespace
}  // namespace inferscope
