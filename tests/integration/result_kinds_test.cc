// Issue 9, item 1: a new result kind, its producer and its consumer are declared in this file alone
// and run in a real engine built from topology text; mismatched edges are refused with file:line.
// Nothing in pipeline/, operators/ or sinks/ knows about the kind below.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cli/builtins.h"
#include "cli/engine.h"
#include "pipeline/topology.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

// --- The kind: a value type and its declaration. -------------------------------------------------

// A series whose time to first token was too slow in one pane.
struct Bottleneck {
  SeriesKey series;
  int64_t end_ms = 0;
  double worst_ttft_ms = 0;
};

// The built-in kinds live in namespace inferscope::kind; a kind can be any tag type with these
// three members.
struct TestBottleneckKind {
  using Value = Bottleneck;
  static constexpr std::string_view kName = "test_bottleneck";
  static constexpr std::string_view kDescription = "A pane whose worst TTFT passed a threshold";
};

// --- Its producer: reads window_aggregate's panes, emits bottlenecks. ---------------------------

class BottleneckClassifier final : public Operator {
 public:
  static constexpr std::string_view kName = "test_bottleneck_classifier";
  static constexpr std::string_view kDescription = "Flags panes whose worst TTFT is too slow";
  static Result<std::unique_ptr<BottleneckClassifier>> Create(const ConfigNode& options) {
    INFERSCOPE_RETURN_IF_ERROR(options.CheckKnownFields({"ttft_ms"}));
    Result<double> threshold = options.GetDouble("ttft_ms", 1000.0);
    if (!threshold.ok()) return threshold.status();
    return std::make_unique<BottleneckClassifier>(*threshold);
  }
  explicit BottleneckClassifier(double threshold_ms) : threshold_ms_(threshold_ms) {}

  KindSet Reads() const override { return KindSet::Of<kind::PaneSummary>(); }
  KindSet Emits() const override { return KindSet::Of<TestBottleneckKind>(); }
  Status Open(const StageContext& ctx) override {
    interner_ = ctx.interner;
    return Status::Ok();
  }
  Status Process(const EventBatch&, OutputBatch&) override { return Status::Ok(); }
  Status ProcessResults(const OutputBatch& in, OutputBatch& out) override {
    for (const WindowSummary& pane : in.Get<kind::PaneSummary>()) {
      if (interner_->Name(pane.series.metric) != "ttft_ms" || pane.agg.max <= threshold_ms_) {
        continue;
      }
      out.Add<TestBottleneckKind>({pane.series, pane.end_ms, pane.agg.max});
    }
    return Status::Ok();
  }

 private:
  double threshold_ms_;
  const Interner* interner_ = nullptr;
};

// --- Its consumer: a sink that keeps what it receives. -------------------------------------------

std::mutex g_found_mu;
std::vector<Bottleneck> g_found;  // what every BottleneckCollector received

class BottleneckCollector final : public Sink {
 public:
  static constexpr std::string_view kName = "test_bottleneck_collector";
  static constexpr std::string_view kDescription = "Keeps bottlenecks in memory";
  static Result<std::unique_ptr<BottleneckCollector>> Create(const ConfigNode&) {
    return std::make_unique<BottleneckCollector>();
  }
  KindSet Accepts() const override { return KindSet::Of<TestBottleneckKind>(); }
  Status Open(const StageContext&) override { return Status::Ok(); }
  Status Write(const OutputBatch& batch) override {
    std::lock_guard<std::mutex> lock(g_found_mu);
    for (const Bottleneck& b : batch.Get<TestBottleneckKind>()) g_found.push_back(b);
    return Status::Ok();
  }
};

// --- A source of known requests: one slow instance, one fast. -----------------------------------

std::atomic<bool> g_sent{false};

class KnownRequests final : public Source {
 public:
  static constexpr std::string_view kName = "test_known_requests";
  static constexpr std::string_view kDescription = "Emits 100 requests, then idles";
  static Result<std::unique_ptr<KnownRequests>> Create(const ConfigNode&) {
    return std::make_unique<KnownRequests>();
  }
  Status Open(const StageContext& ctx) override {
    interner_ = ctx.interner;
    clock_ = ctx.clock;
    return Status::Ok();
  }
  Status Run(SourceOutput& out, const std::atomic<bool>& stop) override {
    EventBatchPtr batch = out.Acquire();
    if (!batch) return Status::Ok();
    const StringId publisher = interner_->Intern("pub");
    interner_->Pin(publisher);
    const StringId slow = interner_->Intern("slow-1"), fast = interner_->Intern("fast-1");
    const StringId model = interner_->Intern("llama");
    // All 100 in one 10 s pane: a second pane (1 run in 100 when the 100 ms straddled a pane
    // boundary) would be judged too.
    int64_t t0 = clock_->NowMs() - 1000;
    t0 -= std::max<int64_t>(0, t0 % 10'000 - 9'900);
    for (int i = 0; i < 100; ++i) {
      Event e;
      e.kind = EventKind::kRequest;
      e.time_ms = t0 + i;
      e.instance = i % 2 == 0 ? slow : fast;
      e.model = model;
      e.publisher = publisher;
      e.present = kHasTtft;
      e.ttft_ms = i % 2 == 0 ? 4000 + i : 100 + i;
      batch->events.push_back(e);
    }
    const bool emitted = out.Emit(std::move(batch));
    g_sent = emitted;
    while (!stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return Status::Ok();
  }

 private:
  Interner* interner_ = nullptr;
  const Clock* clock_ = nullptr;
};

Registry TestRegistry() {
  Registry registry;
  RegisterBuiltins(registry);
  registry.AddSource<KnownRequests>();
  registry.AddOperator<BottleneckClassifier>();
  registry.AddSink<BottleneckCollector>();
  return registry;
}

constexpr char kTopology[] = R"(name: bottlenecks
engine:
  checkpoint_interval: 0s
sources:
  - name: in
    type: test_known_requests
operators:
  - name: windows
    type: window_aggregate
    inputs: [in]
    options:
      pane: 10s
      flush_on_close: true
  - name: bottlenecks
    type: test_bottleneck_classifier
    inputs: [windows]
    options:
      ttft_ms: 1000
sinks:
  - name: found
    type: test_bottleneck_collector
    inputs: [bottlenecks]
)";

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return text.replace(at, from.size(), to);
}

Status Check(const std::string& text, const std::string& file = "kinds.yaml") {
  Result<TopologySpec> spec = ParseTopology(text, file);
  if (!spec.ok()) return spec.status();
  return ValidateTopology(*spec, TestRegistry());
}

TEST(ResultKindsTest, NewKindFlowsFromItsOperatorToItsSink) {
  Result<TopologySpec> spec = ParseTopology(kTopology, "kinds.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  Registry registry = TestRegistry();
  Result<std::unique_ptr<Engine>> engine = Engine::Build(*spec, registry);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  ASSERT_TRUE((*engine)->Start().ok());
  ASSERT_TRUE(testing::WaitFor([] { return g_sent.load(); }));
  (*engine)->Stop();  // drains: the window operator flushes its pane, the classifier judges it

  {
    std::lock_guard<std::mutex> lock(g_found_mu);
    ASSERT_EQ(g_found.size(), 1u);
    EXPECT_EQ((*engine)->interner().Name(g_found[0].series.instance), "slow-1");
    EXPECT_EQ(g_found[0].worst_ttft_ms, 4098);
    EXPECT_EQ(g_found[0].end_ms % 10'000, 0);
  }
  // One counter family per direction, labelled by the kind's declared name.
  MetricsRegistry& m = (*engine)->metrics();
  EXPECT_EQ(m.CounterValue("inferscope_stage_results_out_total",
                           {{"stage", "bottlenecks"}, {"kind", "test_bottleneck"}}),
            1u);
  EXPECT_EQ(m.CounterValue("inferscope_sink_results_total",
                           {{"stage", "found"}, {"kind", "test_bottleneck"}}),
            1u);
  EXPECT_GE(m.CounterValue("inferscope_stage_results_out_total",
                           {{"stage", "windows"}, {"kind", "pane_summary"}}),
            2u);  // ttft_ms of both instances (and other metrics)
}

TEST(ResultKindsTest, SinkThatAcceptsNoKindItsInputEmitsIsRejectedWithFileAndLine) {
  ASSERT_TRUE(Check(kTopology).ok());
  // Line 22, column 14: the `windows` in the sink's inputs.
  Status st = Check(Replace(kTopology, "inputs: [bottlenecks]", "inputs: [windows]"));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(st.message().find("kinds.yaml:22:14: sinks[0].inputs[0]: operator 'windows' "
                              "(window_aggregate) emits pane_summary, dead_letter; sink 'found' "
                              "(test_bottleneck_collector) accepts test_bottleneck"),
            std::string::npos)
      << st.message();

  // The same through Engine::Build (what `run` and `check-topology` do).
  Result<TopologySpec> spec =
      ParseTopology(Replace(kTopology, "inputs: [bottlenecks]", "inputs: [windows]"), "k.yaml");
  ASSERT_TRUE(spec.ok());
  Registry registry = TestRegistry();
  Result<std::unique_ptr<Engine>> engine = Engine::Build(*spec, registry);
  ASSERT_FALSE(engine.ok());
  EXPECT_NE(engine.status().message().find("k.yaml:22:14: sinks[0].inputs[0]"), std::string::npos)
      << engine.status().message();
}

TEST(ResultKindsTest, OperatorThatReadsNoKindItsInputEmitsIsRejectedWithFileAndLine) {
  // The classifier reads pane summaries, not events.
  Status st = Check(Replace(kTopology, "inputs: [windows]\n    options:\n      ttft_ms",
                            "inputs: [in]\n    options:\n      ttft_ms"));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("kinds.yaml:16:14: operators[1].inputs[0]: operator 'bottlenecks' "
                              "(test_bottleneck_classifier) reads pane_summary, not the events "
                              "source 'in' emits"),
            std::string::npos)
      << st.message();
  // A second operator behind the classifier that reads pane summaries: nothing it reads arrives.
  st = Check(Replace(kTopology, "sinks:\n",
                     "  - name: rules\n    type: threshold_rules\n    inputs: bottlenecks\n"
                     "    options: {rules: [{name: r, metric: ttft_ms, stat: max, op: \">\", "
                     "levels: {warning: 1}}]}\nsinks:\n"));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("kinds.yaml:21:13: operators[2].inputs: operator 'bottlenecks' "
                              "(test_bottleneck_classifier) emits test_bottleneck; operator "
                              "'rules' (threshold_rules) reads pane_summary, window_summary"),
            std::string::npos)
      << st.message();
}

// The built-in kinds: sliding windows are window_summary, not pane_summary, so the state store
// (which keys a summary by series and pane start) cannot be wired behind them.
TEST(ResultKindsTest, StateSinkBehindSlidingWindowsIsRejected) {
  const std::string path = testing::SourceDir() + "/topologies/sliding-windows.yaml";
  const std::string shipped = testing::ReadFile(path);
  ASSERT_FALSE(shipped.empty());
  ASSERT_TRUE(Check(shipped, path).ok()) << Check(shipped, path).message();

  const std::string wired = Replace(shipped, "    type: rocksdb_state\n    inputs: [windows]",
                                    "    type: rocksdb_state\n    inputs: [sliding]");
  Status st = Check(wired, "sliding.yaml");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("sliding.yaml:"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("sinks[0].inputs[0]: operator 'sliding' (sliding_window) emits "
                              "window_summary; sink 'state' (rocksdb_state) accepts "
                              "pane_summary, dead_letter"),
            std::string::npos)
      << st.message();

  // With pass_panes the operator forwards the pane summaries too: the state sink stores those
  // (and never sees a window); the stream sink and the alert operators read both kinds.
  EXPECT_TRUE(Check(Replace(wired, "pass_panes: false", "pass_panes: true")).ok());
  // Alerts are their own kind: an alert sink behind the window operator reads nothing.
  const std::string fleet =
      testing::ReadFile(testing::SourceDir() + "/topologies/inference-fleet.yaml");
  ASSERT_TRUE(Check(fleet).ok()) << Check(fleet).message();
  st = Check(Replace(
      fleet, "inputs: [rules, anomalies]\n    options:", "inputs: [rules, windows]\n    options:"));
  EXPECT_NE(
      st.message().find("sinks[3].inputs[1]: operator 'windows' (window_aggregate) emits "
                        "pane_summary, dead_letter; sink 'alerts' (zmq_alerts) accepts alert"),
      std::string::npos)
      << st.message();
}

TEST(ResultKindsTest, KindsAreDenseAndNamedOnce) {
  const KindId pane = KindOf<kind::PaneSummary>();
  EXPECT_EQ(KindOf<kind::PaneSummary>(), pane);
  EXPECT_NE(KindOf<kind::WindowSummary>(), pane);
  EXPECT_LT(KindOf<TestBottleneckKind>(), kMaxResultKinds);
  EXPECT_EQ(KindName(KindOf<TestBottleneckKind>()), "test_bottleneck");
  EXPECT_EQ((KindSet::Of<kind::Alert, kind::DeadLetter>().size()), 2u);

  // OutputBatch: one typed vector per kind; copies and moves keep each kind apart.
  OutputBatch batch;
  EXPECT_TRUE(batch.empty());
  batch.Add<TestBottleneckKind>({SeriesKey{1, 2, 3}, 10'000, 5000});
  batch.Emplace<kind::WindowSummary>().end_ms = 60'000;
  EXPECT_FALSE(batch.empty());
  EXPECT_EQ(batch.kinds(), (KindSet::Of<TestBottleneckKind, kind::WindowSummary>()));
  EXPECT_TRUE(batch.Get<kind::PaneSummary>().empty());
  OutputBatch copy = batch;
  OutputBatch moved = std::move(batch);
  EXPECT_EQ(copy.Get<TestBottleneckKind>()[0].worst_ttft_ms, 5000);
  EXPECT_EQ(moved.Get<kind::WindowSummary>()[0].end_ms, 60'000);
  EXPECT_EQ(moved.Count(KindOf<TestBottleneckKind>()), 1u);
  moved.Clear();
  EXPECT_TRUE(moved.empty());
  EXPECT_EQ(copy.kinds().size(), 2u);
}

}  // namespace
}  // namespace inferscope
