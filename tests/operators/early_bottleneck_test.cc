// Early evaluation of bottleneck_classify (issue 15 item 3): the open pane's early summaries are
// judged with the closed panes before it, a bottleneck that would be raised is published early,
// and the closed pane confirms (no second "raised") or retracts it (published and stored).

#include <gtest/gtest.h>

#include <functional>

#include "bottlenecks/bottleneck_json.h"
#include "operators/bottleneck_classify.h"
#include "operators/window_aggregate.h"
#include "pipeline/clock.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "state/bottleneck_store.h"
#include "state/checkpoint_store.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

constexpr int64_t kT0 = 1'700'000'000'000;  // aligned to 10 s
constexpr int64_t kPane = 10'000;
// The pane the latency spike starts in: [kSpike, kSpike + 10 s).
constexpr int64_t kSpike = 5 * kPane;

ConfigNode Parse(const std::string& yaml) {
  return ConfigNode("test.yaml", YAML::Load(yaml), "options");
}

// Absolute ttft SLO 1000 ms (p95 of 3000 ms is HIGH), two panes of evidence.
std::string Options(bool early, const std::string& for_ = "0s") {
  return "{evidence: 20s, for: " + for_ + ", min_requests: 20, " +
         "high_latency: {ttft_p95_ms: 1000, tpot_p95_ms: 0, e2e_p95_ms: 0}, early: " +
         (early ? "true" : "false") + "}";
}

// A real window_aggregate (10 s panes, 2 s out-of-orderness, 1 s early slices) feeding a real
// bottleneck_classify, with injected time. One instance "vllm-1", model "m".
class Pipeline {
 public:
  explicit Pipeline(const std::string& options) {
    auto window = WindowAggregateOperator::Create(
        Parse("{pane: 10s, out_of_orderness: 2s, early_slice: 1s}"));
    EXPECT_TRUE(window.ok()) << window.status().ToString();
    window_ = std::move(window).value();
    EXPECT_TRUE(window_->Open(Context("windows")).ok());
    Reopen(options);
  }

  void Reopen(const std::string& options) {
    auto op = BottleneckClassifyOperator::Create(Parse(options));
    EXPECT_TRUE(op.ok()) << op.status().ToString();
    op_ = std::move(op).value();
    EXPECT_TRUE(op_->Open(Context("bottlenecks")).ok());
  }

  StageContext Context(const std::string& name) {
    StageContext ctx;
    ctx.name = name;
    ctx.interner = &interner_;
    ctx.metrics = &metrics_;
    ctx.clock = &clock_;
    return ctx;
  }

  // `per_step(t)` requests at every 100 ms step of [from, to) (offsets from kT0), TTFT `ttft(t)`;
  // returns the changes emitted, each with the offset of the step that emitted it in *at.
  std::vector<Bottleneck> Feed(int64_t from, int64_t to, const std::function<double(int64_t)>& ttft,
                               const std::function<int(int64_t)>& per_step = nullptr,
                               std::vector<int64_t>* at = nullptr) {
    std::vector<Bottleneck> changes;
    for (int64_t t = from; t < to; t += 100) {
      EventBatch batch;
      batch.publisher = interner_.Intern("gw");
      const int n = per_step ? per_step(t) : 1;
      for (int i = 0; i < n; ++i) {
        Event e;
        e.kind = EventKind::kRequest;
        e.time_ms = kT0 + t;
        e.instance = interner_.Intern("vllm-1");
        e.model = interner_.Intern("m");
        e.present = kHasTtft;
        e.ttft_ms = ttft(t) * (1 + 0.01 * (i % 7));
        batch.events.push_back(e);
      }
      clock_.Set(kT0 + t);
      OutputBatch windows;
      EXPECT_TRUE(window_->Process(batch, windows).ok());
      early_summaries_ += windows.Get<kind::EarlySummary>().size();
      OutputBatch out;
      EXPECT_TRUE(op_->ProcessResults(windows, out).ok());
      for (const Bottleneck& b : out.Get<kind::Bottleneck>()) {
        changes.push_back(b);
        if (at != nullptr) at->push_back(t);
      }
    }
    return changes;
  }

  std::vector<Bottleneck> FeedHealthy(int64_t from, int64_t to) {
    return Feed(from, to, [](int64_t) { return 200.0; });
  }

  uint64_t Transitions(std::string_view change) const {
    return metrics_.CounterValue("inferscope_bottleneck_transitions_total",
                                 {{"stage", "bottlenecks"}, {"change", std::string(change)}});
  }

  Interner interner_;
  MetricsRegistry metrics_;
  ManualClock clock_{kT0};
  std::unique_ptr<WindowAggregateOperator> window_;
  std::unique_ptr<BottleneckClassifyOperator> op_;
  size_t early_summaries_ = 0;
};

double Spike(int64_t) { return 3000.0; }

TEST(EarlyBottleneckTest, OptionIsParsedAndOffByDefault) {
  auto plain = BottleneckClassifyOperator::ParseOptions(Parse("{}"));
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_FALSE(plain->early);
  BottleneckClassifyOperator off(*plain);
  EXPECT_FALSE(off.Reads().Has<kind::EarlySummary>());
  auto early = BottleneckClassifyOperator::ParseOptions(Parse("{early: true}"));
  ASSERT_TRUE(early.ok()) << early.status().ToString();
  EXPECT_TRUE(early->early);
  BottleneckClassifyOperator on(*early);
  EXPECT_TRUE(on.Reads().Has<kind::EarlySummary>());
  auto bad = BottleneckClassifyOperator::ParseOptions(Parse("{early: sometimes}"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("early"), std::string::npos) << bad.status().ToString();
}

// A sustained spike: raised early from the open pane (once it holds min_requests = 20 requests,
// 2 s in), long before the pane closes (10 s + 2 s of out-of-orderness); the closed pane confirms
// it with a `confirmed` change, never a second `raised`.
TEST(EarlyBottleneckTest, FiresEarlyAndTheClosedPaneConfirmsWithoutASecondRaise) {
  Pipeline p(Options(true));
  ASSERT_TRUE(p.FeedHealthy(0, kSpike).empty());
  ASSERT_GT(p.early_summaries_, 0u);
  std::vector<int64_t> at;
  std::vector<Bottleneck> changes = p.Feed(kSpike, kSpike + 3 * kPane, Spike, nullptr, &at);
  ASSERT_EQ(changes.size(), 2u);
  const Bottleneck& raised = changes[0];
  EXPECT_EQ(raised.type, BottleneckType::kHighLatency);
  EXPECT_EQ(raised.change, BottleneckChange::kRaised);
  EXPECT_EQ(raised.state, BottleneckState::kActive);
  EXPECT_TRUE(raised.early);
  EXPECT_EQ(raised.severity, BottleneckSeverity::kHigh);
  EXPECT_NE(raised.description.find("open pane"), std::string::npos) << raised.description;
  // Judged at the first slice boundary with 20 requests of the open pane: 2 s into it.
  EXPECT_GE(at[0], kSpike + 2'000);
  EXPECT_LT(at[0], kSpike + 3'000);
  EXPECT_EQ(raised.window_end_ms, kT0 + kSpike + 2'000);  // observed up to the slice boundary
  EXPECT_EQ(raised.window_start_ms, kT0 + kSpike + kPane - 20'000);

  const Bottleneck& confirmed = changes[1];
  EXPECT_EQ(confirmed.change, BottleneckChange::kConfirmed);
  EXPECT_EQ(confirmed.state, BottleneckState::kActive);
  EXPECT_FALSE(confirmed.early);
  EXPECT_EQ(confirmed.type, BottleneckType::kHighLatency);
  EXPECT_EQ(confirmed.window_end_ms, kT0 + kSpike + kPane);  // the closed pane
  EXPECT_GE(at[1], kSpike + kPane + 2'000);                  // when the watermark passed it
  EXPECT_EQ(p.Transitions("raised"), 1u);
  EXPECT_EQ(p.Transitions("confirmed"), 1u);
  EXPECT_EQ(p.Transitions("retracted"), 0u);
  auto active = p.op_->Active("vllm-1", "m");
  ASSERT_EQ(active.size(), 1u);
  EXPECT_EQ(active[0].first, BottleneckType::kHighLatency);

  // The same feed without `early`: raised once, by the closed pane, 10 s later; the closed-pane
  // state is the same (active_since not moved by early evidence).
  Pipeline off(Options(false));
  ASSERT_TRUE(off.FeedHealthy(0, kSpike).empty());
  std::vector<int64_t> off_at;
  std::vector<Bottleneck> off_changes =
      off.Feed(kSpike, kSpike + 3 * kPane, Spike, nullptr, &off_at);
  ASSERT_EQ(off_changes.size(), 1u);
  EXPECT_EQ(off_changes[0].change, BottleneckChange::kRaised);
  EXPECT_FALSE(off_changes[0].early);
  EXPECT_EQ(off_at[0], at[1]);
  EXPECT_EQ(off_changes[0].active_since_ms, confirmed.active_since_ms);
  EXPECT_EQ(off_changes[0].severity, confirmed.severity);
  EXPECT_GT(off_at[0] - at[0], 9'000);
}

// `for` counts from the closed panes: early evidence neither starts nor moves it. With `for: 5s`
// the spike's closed pane makes the condition pending (since its end); the next open pane raises
// it early once 5 s have passed since then, with that active_since, and its close confirms it.
TEST(EarlyBottleneckTest, ForCountsFromClosedPanesAndEarlyEvidenceDoesNotMoveIt) {
  Pipeline p(Options(true, "5s"));
  ASSERT_TRUE(p.FeedHealthy(0, kSpike).empty());
  std::vector<int64_t> at;
  std::vector<Bottleneck> changes = p.Feed(kSpike, kSpike + 4 * kPane, Spike, nullptr, &at);
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_TRUE(changes[0].early);
  EXPECT_EQ(changes[0].change, BottleneckChange::kRaised);
  EXPECT_EQ(changes[0].active_since_ms, kT0 + kSpike + kPane);  // the closed pane's end
  EXPECT_GE(at[0], kSpike + kPane + 5'000);
  EXPECT_LT(at[0], kSpike + 2 * kPane);  // before the second spiked pane closed
  EXPECT_EQ(changes[1].change, BottleneckChange::kConfirmed);
  EXPECT_EQ(changes[1].active_since_ms, kT0 + kSpike + kPane);

  Pipeline off(Options(false, "5s"));
  ASSERT_TRUE(off.FeedHealthy(0, kSpike).empty());
  std::vector<Bottleneck> off_changes = off.Feed(kSpike, kSpike + 4 * kPane, Spike);
  ASSERT_EQ(off_changes.size(), 1u);
  EXPECT_EQ(off_changes[0].active_since_ms, changes[1].active_since_ms);
}

// A transient: 2 s of slow requests at the start of a pane raise early; the rest of the pane is
// busy and healthy (800 fast requests), so the closed pane's p95 is healthy and retracts it. The
// retraction is published (state and change `retracted`, `early` true) and
// stored like a resolution (GET /v1/bottlenecks?state=retracted reads the current record).
TEST(EarlyBottleneckTest, ATransientIsRetractedPublishedAndStored) {
  Pipeline p(Options(true));
  ASSERT_TRUE(p.FeedHealthy(0, kSpike).empty());
  auto transient = [](int64_t t) { return t < kSpike + 2'000 ? 3000.0 : 200.0; };
  auto busy = [](int64_t t) { return t < kSpike + 2'000 ? 1 : 10; };
  std::vector<Bottleneck> changes = p.Feed(kSpike, kSpike + 3 * kPane, transient, busy);
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0].change, BottleneckChange::kRaised);
  EXPECT_TRUE(changes[0].early);
  const Bottleneck& retracted = changes[1];
  EXPECT_EQ(retracted.change, BottleneckChange::kRetracted);
  EXPECT_EQ(retracted.state, BottleneckState::kRetracted);
  EXPECT_TRUE(retracted.early);
  EXPECT_EQ(retracted.severity, BottleneckSeverity::kHigh);  // what was published early
  EXPECT_LT(retracted.value, 1000);                          // the closed pane's evidence
  EXPECT_EQ(retracted.description.rfind("retracted: ", 0), 0u) << retracted.description;
  EXPECT_EQ(p.Transitions("retracted"), 1u);
  EXPECT_TRUE(p.op_->Active("vllm-1", "m").empty());
  // Nothing raises again while healthy.
  EXPECT_TRUE(p.FeedHealthy(kSpike + 3 * kPane, kSpike + 6 * kPane).empty());

  // The record's JSON (store, API) carries both.
  const nlohmann::json json = BottleneckToJson(retracted);
  EXPECT_EQ(json["state"], "retracted");
  EXPECT_EQ(json["change"], "retracted");
  EXPECT_EQ(json["early"], true);

  // Stored like a resolution: the current record is the retraction, the history has both.
  testing::TempDir dir;
  StateStoreOptions options;
  options.path = dir.str();
  auto store = StateStore::Open(options, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE(StoreBottlenecks(**store, changes).ok());
  std::vector<Bottleneck> current;
  ASSERT_TRUE(ScanBottlenecks(**store, "", [&](std::string_view, const Bottleneck& b) {
                current.push_back(b);
                return true;
              }).ok());
  ASSERT_EQ(current.size(), 1u);
  EXPECT_EQ(current[0].state, BottleneckState::kRetracted);
  EXPECT_TRUE(current[0].early);
  std::vector<Bottleneck> history;
  ASSERT_TRUE(ScanBottleneckHistory(**store, 0, [&](const Bottleneck& b) {
                history.push_back(b);
                return true;
              }).ok());
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].change, BottleneckChange::kRaised);
  EXPECT_TRUE(history[0].early);
  EXPECT_EQ(history[1].change, BottleneckChange::kRetracted);

  // Default off: the same feed raises nothing at all.
  Pipeline off(Options(false));
  ASSERT_TRUE(off.FeedHealthy(0, kSpike).empty());
  EXPECT_TRUE(off.Feed(kSpike, kSpike + 6 * kPane, transient, busy).empty());
}

// Before any pane has closed the operator learns the pane length from the early summaries: a
// fault present from the first pane is raised early in it.
TEST(EarlyBottleneckTest, RaisesEarlyBeforeAnyPaneHasClosed) {
  Pipeline p(Options(true));
  std::vector<int64_t> at;
  std::vector<Bottleneck> changes = p.Feed(0, 3 * kPane, Spike, nullptr, &at);
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_TRUE(changes[0].early);
  EXPECT_LT(at[0], kPane);
  EXPECT_EQ(changes[1].change, BottleneckChange::kConfirmed);
}

// Out-of-orderness (2 s) longer than the early slice (1 s): at 100 requests/s the open pane holds
// min_requests after 200 ms, but the pane before it closes only 2 s into it. No early judgement
// runs before then (it would count the open pane's first second alone over the 20 s evidence
// window); they are skipped and counted, and the raise comes once the previous pane is in.
TEST(EarlyBottleneckTest, NoEarlyJudgementBeforeThePreviousPaneHasClosed) {
  Pipeline p(Options(true));
  auto busy = [](int64_t) { return 10; };
  ASSERT_TRUE(p.Feed(
                   0, kSpike, [](int64_t) { return 200.0; }, busy)
                  .empty());
  std::vector<int64_t> at;
  std::vector<Bottleneck> changes = p.Feed(kSpike, kSpike + 3 * kPane, Spike, busy, &at);
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_TRUE(changes[0].early);
  EXPECT_EQ(changes[0].change, BottleneckChange::kRaised);
  EXPECT_GE(at[0], kSpike + 2'000);  // the pane [kSpike - 10 s, kSpike) closed at kSpike + 2 s
  EXPECT_LT(at[0], kSpike + kPane);
  EXPECT_GE(changes[0].window_end_ms, kT0 + kSpike + 2'000);
  EXPECT_GT(p.op_->early_skipped(), 0u);
  EXPECT_EQ(changes[1].change, BottleneckChange::kConfirmed);
}

// Hand-built summaries fed straight to the operator (several instances, gauges).
class Direct {
 public:
  explicit Direct(const std::string& options) {
    auto op = BottleneckClassifyOperator::Create(Parse(options));
    EXPECT_TRUE(op.ok()) << op.status().ToString();
    op_ = std::move(op).value();
    StageContext ctx;
    ctx.name = "bottlenecks";
    ctx.interner = &interner_;
    ctx.metrics = &metrics_;
    ctx.clock = &clock_;
    EXPECT_TRUE(op_->Open(ctx).ok());
  }

  // `n` values of `metric` for the pane starting at `start` (an early summary observed up to
  // `observed` when observed > 0), each with a request event when `requests`.
  void Add(OutputBatch& in, const std::string& instance, const std::string& metric, int64_t start,
           double value, int n, bool requests, int64_t observed = 0) {
    WindowSummary s;
    s.series = {interner_.Intern(instance), interner_.Intern("m"), interner_.Intern(metric)};
    s.start_ms = kT0 + start;
    s.end_ms = kT0 + start + kPane;
    s.max_event_time_ms = kT0 + start;
    for (int i = 0; i < n; ++i) {
      s.agg.Add(value * (0.95 + 0.1 * i / std::max(1, n - 1)), kT0 + start + i);
      if (requests) s.agg.AddEvent(false);
    }
    if (observed > 0) {
      s.observed_until_ms = kT0 + observed;
      in.Add<kind::EarlySummary>(std::move(s));
    } else {
      in.Add<kind::PaneSummary>(std::move(s));
    }
  }

  std::vector<Bottleneck> Run(OutputBatch& in, int64_t watermark) {
    in.watermark_ms = kT0 + watermark;
    OutputBatch out;
    EXPECT_TRUE(op_->ProcessResults(in, out).ok());
    const auto changes = out.Get<kind::Bottleneck>();
    return {changes.begin(), changes.end()};
  }

  Interner interner_;
  MetricsRegistry metrics_;
  ManualClock clock_{kT0};
  std::unique_ptr<BottleneckClassifyOperator> op_;
};

// An early raise never takes primary from a raised type: HIGH_LATENCY is raised (primary) by the
// closed panes, then preemptions in the open pane raise MEMORY_PRESSURE early — its cause in the
// causal order, but published with primary = false; the pair keeps one primary.
TEST(EarlyBottleneckTest, AnEarlyRaiseDoesNotTakePrimaryFromARaisedType) {
  Direct d(Options(true));
  auto pane = [&](OutputBatch& in, int64_t start, double preemptions, int64_t observed) {
    d.Add(in, "vllm-1", "ttft_ms", start, 3000, 50, true, observed);
    d.Add(in, "vllm-1", "kv_cache_usage", start, 0.95, 10, false, observed);
    d.Add(in, "vllm-1", "num_preemptions", start, preemptions, 10, false, observed);
  };
  std::vector<Bottleneck> raised;
  for (int64_t start = 0; start < 2 * kPane; start += kPane) {
    OutputBatch in;
    pane(in, start, 0, 0);
    for (const Bottleneck& b : d.Run(in, start + kPane)) raised.push_back(b);
  }
  ASSERT_EQ(raised.size(), 1u);
  EXPECT_EQ(raised[0].type, BottleneckType::kHighLatency);
  EXPECT_TRUE(raised[0].primary);
  OutputBatch in;
  pane(in, 2 * kPane, 3, 2 * kPane + 5'000);
  std::vector<Bottleneck> early = d.Run(in, 2 * kPane);
  ASSERT_EQ(early.size(), 1u);
  EXPECT_EQ(early[0].type, BottleneckType::kMemoryPressure);
  EXPECT_TRUE(early[0].early);
  EXPECT_FALSE(early[0].primary);
}

// Peer-relative rules are not judged early: vllm-1's ttft p50 is 3x its three peers' (no SLO
// breached) in the open pane; nothing is raised early, the closed pane raises it.
TEST(EarlyBottleneckTest, PeerRelativeRulesWaitForTheClosedPane) {
  Direct d(
      "{evidence: 20s, for: 0s, min_requests: 20, "
      "high_latency: {ttft_p95_ms: 0, tpot_p95_ms: 0, e2e_p95_ms: 0}, early: true}");
  const std::vector<std::string> fleet = {"vllm-0", "vllm-1", "vllm-2", "vllm-3"};
  auto ttft = [](const std::string& instance, int64_t start) {
    return instance == "vllm-1" && start >= 2 * kPane ? 600.0 : 200.0;
  };
  for (int64_t start = 0; start < 2 * kPane; start += kPane) {
    OutputBatch in;
    for (const auto& i : fleet) d.Add(in, i, "ttft_ms", start, ttft(i, start), 50, true);
    ASSERT_TRUE(d.Run(in, start + kPane).empty());
  }
  OutputBatch open;
  for (const auto& i : fleet) {
    d.Add(open, i, "ttft_ms", 2 * kPane, ttft(i, 2 * kPane), 100, true, 2 * kPane + 5'000);
  }
  EXPECT_TRUE(d.Run(open, 2 * kPane).empty());
  OutputBatch closed;
  for (const auto& i : fleet) d.Add(closed, i, "ttft_ms", 2 * kPane, ttft(i, 2 * kPane), 100, true);
  std::vector<Bottleneck> changes = d.Run(closed, 3 * kPane);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].instance, "vllm-1");
  EXPECT_EQ(changes[0].type, BottleneckType::kHighLatency);
  EXPECT_FALSE(changes[0].early);
}

// Default off: an operator without `early` ignores early summaries in its input completely.
TEST(EarlyBottleneckTest, DefaultOffIgnoresEarlySummaries) {
  Pipeline p(Options(false));
  ASSERT_TRUE(p.FeedHealthy(0, kSpike).empty());
  std::vector<int64_t> at;
  std::vector<Bottleneck> changes = p.Feed(kSpike, kSpike + 3 * kPane, Spike, nullptr, &at);
  ASSERT_GT(p.early_summaries_, 0u);  // they were in its input
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_FALSE(changes[0].early);
  EXPECT_EQ(changes[0].change, BottleneckChange::kRaised);
  EXPECT_GE(at[0], kSpike + kPane + 2'000);
  EXPECT_EQ(p.Transitions("confirmed"), 0u);
}

// The unconfirmed early state is checkpointed: after a restart the closed pane confirms it
// (no second "raised").
TEST(EarlyBottleneckTest, AnEarlyRaiseSurvivesARestartAndIsConfirmed) {
  Pipeline p(Options(true));
  ASSERT_TRUE(p.FeedHealthy(0, kSpike).empty());
  std::vector<Bottleneck> early = p.Feed(kSpike, kSpike + 3'000, Spike);
  ASSERT_EQ(early.size(), 1u);
  ASSERT_TRUE(early[0].early);

  testing::TempDir dir;
  StateStoreOptions store_options;
  store_options.path = dir.str();
  auto store = StateStore::Open(store_options, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  std::vector<CheckpointRecord> records;
  CheckpointCollector writer("op", "bottlenecks", &records);
  ASSERT_TRUE(p.op_->Checkpoint(writer).ok());
  ASSERT_FALSE(records.empty());
  ASSERT_TRUE(WriteCheckpointRecords(**store, records).ok());

  p.Reopen(Options(true));
  ASSERT_TRUE(p.op_->Restore(StateCheckpointReader("op", "bottlenecks", store->get())).ok());
  ASSERT_EQ(p.op_->Active("vllm-1", "m").size(), 1u);
  std::vector<Bottleneck> rest = p.Feed(kSpike + 3'000, kSpike + 3 * kPane, Spike);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].change, BottleneckChange::kConfirmed);
  EXPECT_FALSE(rest[0].early);
}

}  // namespace
}  // namespace inferscope
