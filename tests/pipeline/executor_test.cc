#include "pipeline/executor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace inferscope {
namespace {

// A source that emits `batches` batches of `per_batch` gauge events, then idles until stopped.
class CountingSource final : public Source {
 public:
  CountingSource(int batches, int per_batch) : batches_(batches), per_batch_(per_batch) {}
  Status Open(const StageContext& ctx) override {
    metric_ = ctx.interner->Intern("m");
    return Status::Ok();
  }
  Status Run(SourceOutput& out, const std::atomic<bool>& stop) override {
    for (int b = 0; b < batches_; ++b) {
      EventBatchPtr batch = out.Acquire();
      if (!batch) return Status::Ok();
      for (int i = 0; i < per_batch_; ++i) {
        Event e;
        e.kind = EventKind::kGauge;
        e.metric = metric_;
        e.value = 1;
        e.time_ms = b;
        batch->events.push_back(e);
      }
      if (!out.Emit(std::move(batch))) return Status::Ok();
    }
    while (!stop.load()) std::this_thread::yield();
    return Status::Ok();
  }

 private:
  int batches_, per_batch_;
  StringId metric_ = 0;
};

// Emits one summary per batch (value = number of events) and one more on Close.
class SummingOperator final : public Operator {
 public:
  Status Open(const StageContext&) override { return Status::Ok(); }
  KindSet Emits() const override { return KindSet::Of<kind::PaneSummary>(); }
  Status Process(const EventBatch& batch, OutputBatch& out) override {
    WindowSummary s;
    s.agg.Add(static_cast<double>(batch.events.size()), 0);
    out.Add<kind::PaneSummary>(std::move(s));
    return Status::Ok();
  }
  Status Close(OutputBatch& out) override {
    out.Emplace<kind::PaneSummary>();
    return Status::Ok();
  }
};

// Reads SummingOperator's results and emits each summary's sum doubled, plus one alert per batch.
class DoublingOperator final : public Operator {
 public:
  Status Open(const StageContext&) override { return Status::Ok(); }
  KindSet Reads() const override { return KindSet::Of<kind::PaneSummary>(); }
  KindSet Emits() const override { return KindSet::Of<kind::PaneSummary, kind::Alert>(); }
  Status Process(const EventBatch&, OutputBatch&) override {
    return Status::Internal("reads results only");
  }
  Status ProcessResults(const OutputBatch& in, OutputBatch& out) override {
    for (const auto& s : in.Get<kind::PaneSummary>()) {
      WindowSummary d;
      d.agg.Add(2 * s.agg.sum, 0);
      out.Add<kind::PaneSummary>(std::move(d));
    }
    out.Emplace<kind::Alert>();
    return Status::Ok();
  }
};

class CollectingSink final : public Sink {
 public:
  Status Open(const StageContext&) override { return Status::Ok(); }
  KindSet Accepts() const override { return KindSet::Of<kind::PaneSummary>(); }
  Status Write(const OutputBatch& batch) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& s : batch.Get<kind::PaneSummary>()) {
      ++summaries_;
      total_ += s.agg.sum;
    }
    return Status::Ok();
  }
  Status Flush() override {
    flushed_ = true;
    return Status::Ok();
  }
  int summaries() const {
    std::lock_guard<std::mutex> lock(mu_);
    return summaries_;
  }
  double total() const {
    std::lock_guard<std::mutex> lock(mu_);
    return total_;
  }
  bool flushed() const { return flushed_; }

 private:
  mutable std::mutex mu_;
  int summaries_ = 0;
  double total_ = 0;
  std::atomic<bool> flushed_{false};
};

// One gauge per batch, each for a new instance name (interned here, as a decoder would).
class NamingSource final : public Source {
 public:
  explicit NamingSource(int batches) : batches_(batches) {}
  Status Open(const StageContext& ctx) override {
    interner_ = ctx.interner;
    return Status::Ok();
  }
  Status Run(SourceOutput& out, const std::atomic<bool>& stop) override {
    for (int b = 0; b < batches_; ++b) {
      EventBatchPtr batch = out.Acquire();
      if (!batch) return Status::Ok();
      Event e;
      e.kind = EventKind::kGauge;
      e.instance = interner_->Intern("instance-" + std::to_string(b));
      e.metric = e.instance;
      batch->events.push_back(e);
      if (!out.Emit(std::move(batch))) return Status::Ok();
    }
    while (!stop.load()) std::this_thread::yield();
    return Status::Ok();
  }

 private:
  int batches_;
  Interner* interner_ = nullptr;
};

// Emits one summary per event, for the event's instance; holds no name.
class EchoOperator final : public Operator {
 public:
  Status Open(const StageContext&) override { return Status::Ok(); }
  KindSet Emits() const override { return KindSet::Of<kind::PaneSummary>(); }
  Status Process(const EventBatch& batch, OutputBatch& out) override {
    for (const Event& e : batch.events) {
      WindowSummary& s = out.Emplace<kind::PaneSummary>();
      s.series = {e.instance, e.instance, e.metric};
    }
    return Status::Ok();
  }
};

// A slow sink that checks every summary's names can still be read when it writes them.
class NameCheckingSink final : public Sink {
 public:
  explicit NameCheckingSink(const Interner& interner) : interner_(interner) {}
  Status Open(const StageContext&) override { return Status::Ok(); }
  KindSet Accepts() const override { return KindSet::Of<kind::PaneSummary>(); }
  Status Write(const OutputBatch& batch) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // a backlog across sweeps
    for (const WindowSummary& s : batch.Get<kind::PaneSummary>()) {
      if (interner_.Name(s.series.instance).empty()) ++missing_;
      ++written_;
    }
    return Status::Ok();
  }
  int written() const { return written_.load(); }
  int missing() const { return missing_.load(); }

 private:
  const Interner& interner_;
  std::atomic<int> written_{0};
  std::atomic<int> missing_{0};
};

// Issue 8, item 8: the executor sweeps the Interner every string_sweep_interval, so names nothing
// holds are reclaimed while the engine runs, but never a name in results a sink has not written
// yet (the sweep waits for the sinks), even with a sink much slower than the sweeps.
TEST(ExecutorTest, StringSweepsReclaimUnheldNamesButNeverAheadOfTheSinks) {
  Interner interner;
  MetricsRegistry metrics;
  StageContext base;
  base.interner = &interner;
  base.metrics = &metrics;
  base.clock = &SystemClock::Instance();
  EngineSettings settings;
  settings.queue_capacity = 2;
  settings.batch_pool = 3;
  settings.sink_queue_capacity = 8;
  settings.timer_interval_ms = 1;
  settings.checkpoint_interval_ms = 0;
  settings.string_sweep_interval_ms = 50;
  Executor exec(settings, base);
  constexpr int kBatches = 200;
  exec.AddSource("src", std::make_unique<NamingSource>(kBatches));
  exec.AddOperator("op", std::make_unique<EchoOperator>(), {"src"});
  auto sink = std::make_unique<NameCheckingSink>(interner);
  NameCheckingSink* checking = sink.get();
  exec.AddSink("sink", std::move(sink), {"op"});
  ASSERT_TRUE(exec.Start().ok());
  for (int i = 0; i < 20000 && (checking->written() < kBatches ||
                                interner.Find("instance-" + std::to_string(kBatches - 1)));
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  exec.Stop();
  EXPECT_EQ(checking->written(), kBatches);
  EXPECT_EQ(checking->missing(), 0);
  EXPECT_GE(interner.reclaimed(), static_cast<uint64_t>(kBatches));
  EXPECT_FALSE(interner.Find("instance-0").has_value());
  EXPECT_EQ(interner.size(), static_cast<size_t>(kNumWellKnownIds));
}

TEST(ExecutorTest, EveryEventReachesOperatorsAndResultsReachEverySink) {
  Interner interner;
  MetricsRegistry metrics;
  StageContext base;
  base.interner = &interner;
  base.metrics = &metrics;
  base.clock = &SystemClock::Instance();
  EngineSettings settings;
  settings.queue_capacity = 2;  // tiny queue and pool: the source must block and resume
  settings.batch_pool = 3;
  settings.sink_queue_capacity = 1;
  Executor exec(settings, base);
  exec.AddSource("src", std::make_unique<CountingSource>(500, 10));
  exec.AddOperator("op", std::make_unique<SummingOperator>(), {"src"});
  auto sink_a = std::make_unique<CollectingSink>();
  auto sink_b = std::make_unique<CollectingSink>();
  CollectingSink* a = sink_a.get();
  CollectingSink* b = sink_b.get();
  exec.AddSink("a", std::move(sink_a), {"op"});
  exec.AddSink("b", std::move(sink_b), {"op"});
  ASSERT_TRUE(exec.Start().ok());
  // Wait until the operator has consumed all 5000 events.
  for (int i = 0;
       i < 10000 && metrics.CounterValue("inferscope_operator_queue_events_total") < 5000; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  exec.Stop();
  EXPECT_EQ(metrics.CounterValue("inferscope_operator_queue_events_total"), 5000u);
  EXPECT_EQ(a->summaries(), 501);  // one per batch + the one from Close
  EXPECT_EQ(b->summaries(), 501);
  EXPECT_EQ(a->total(), 5000);
  EXPECT_TRUE(a->flushed());
  EXPECT_EQ(metrics.CounterValue("inferscope_stage_events_in_total", {{"stage", "op"}}), 5000u);
  EXPECT_NE(metrics.RenderPrometheus().find("inferscope_sink_write_seconds_count{stage=\"a\"}"),
            std::string::npos);
}

// Counts OnTimer calls; asks for a timer (at the next tick) only while `wants_timer` is set, and
// records whether it ever ran while it had not asked.
class TimerOperator final : public Operator {
 public:
  Status Open(const StageContext&) override { return Status::Ok(); }
  KindSet Emits() const override { return KindSet::Of<kind::PaneSummary>(); }
  Status Process(const EventBatch& batch, OutputBatch&) override {
    events_ += batch.events.size();
    return Status::Ok();
  }
  Status OnTimer(int64_t, OutputBatch&) override {
    if (!wants_timer.load()) unasked_.store(true);
    timers_.fetch_add(1);
    return Status::Ok();
  }
  int64_t NextTimerMs(int64_t now_ms) const override {
    return wants_timer.load() ? now_ms : kNoTimer;
  }
  int timers() const { return timers_.load(); }
  bool ran_unasked() const { return unasked_.load(); }
  std::atomic<bool> wants_timer{false};

 private:
  size_t events_ = 0;
  std::atomic<int> timers_{0};
  std::atomic<bool> unasked_{false};
};

TEST(ExecutorTest, TimersRunOnlyWhenAnOperatorAsksAndWakeMakesTheThreadLook) {
  Interner interner;
  MetricsRegistry metrics;
  StageContext base;
  base.interner = &interner;
  base.metrics = &metrics;
  base.clock = &SystemClock::Instance();
  EngineSettings settings;
  settings.timer_interval_ms = 1;  // every step may run timers: none must run unasked
  settings.checkpoint_interval_ms = 0;
  settings.string_sweep_interval_ms = 0;
  Executor exec(settings, base);
  exec.AddSource("src", std::make_unique<CountingSource>(300, 5));
  auto op = std::make_unique<TimerOperator>();
  TimerOperator* timer = op.get();
  exec.AddOperator("op", std::move(op), {"src"});
  ASSERT_TRUE(exec.Start().ok());
  for (int i = 0;
       i < 10000 && metrics.CounterValue("inferscope_operator_queue_events_total") < 1500; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(metrics.CounterValue("inferscope_operator_queue_events_total"), 1500u);
  EXPECT_EQ(timer->timers(), 0);  // 300 steps, no timer asked for
  // The thread now sleeps with no deadline (no timer, no checkpoint, no sweep): only Wake makes
  // it ask the operator again.
  timer->wants_timer.store(true);
  exec.Wake();
  for (int i = 0; i < 10000 && timer->timers() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_GT(timer->timers(), 0);
  exec.Stop();
  EXPECT_FALSE(timer->ran_unasked());
}

TEST(ExecutorTest, ChainedOperatorReadsUpstreamResultsIncludingCloseFlush) {
  Interner interner;
  MetricsRegistry metrics;
  StageContext base;
  base.interner = &interner;
  base.metrics = &metrics;
  base.clock = &SystemClock::Instance();
  Executor exec(EngineSettings{}, base);
  exec.AddSource("src", std::make_unique<CountingSource>(20, 5));
  exec.AddOperator("sum", std::make_unique<SummingOperator>(), {"src"});
  exec.AddOperator("double", std::make_unique<DoublingOperator>(), {"sum"});
  auto sink = std::make_unique<CollectingSink>();
  CollectingSink* collected = sink.get();
  exec.AddSink("out", std::move(sink), {"double"});
  ASSERT_TRUE(exec.Start().ok());
  for (int i = 0; i < 10000 && metrics.CounterValue("inferscope_operator_queue_events_total") < 100;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  exec.Stop();
  EXPECT_EQ(collected->summaries(), 21);  // 20 batches + SummingOperator's Close summary
  EXPECT_EQ(collected->total(), 200);
  EXPECT_EQ(metrics.CounterValue("inferscope_stage_results_out_total",
                                 {{"stage", "double"}, {"kind", "alert"}}),
            21u);
  EXPECT_EQ(metrics.CounterValue("inferscope_stage_results_out_total",
                                 {{"stage", "double"}, {"kind", "pane_summary"}}),
            21u);
  EXPECT_EQ(metrics.CounterValue("inferscope_stage_results_out_total",
                                 {{"stage", "sum"}, {"kind", "pane_summary"}}),
            21u);
  // The sink accepts pane summaries only: it counts those, not the alerts that pass it by.
  EXPECT_EQ(metrics.CounterValue("inferscope_sink_results_total",
                                 {{"stage", "out"}, {"kind", "pane_summary"}}),
            21u);
  EXPECT_EQ(
      metrics.CounterValue("inferscope_sink_results_total", {{"stage", "out"}, {"kind", "alert"}}),
      0u);
}

TEST(ExecutorTest, OperatorThatCannotReadResultsIsRejectedAtStart) {
  Interner interner;
  MetricsRegistry metrics;
  StageContext base;
  base.interner = &interner;
  base.metrics = &metrics;
  base.clock = &SystemClock::Instance();
  Executor exec(EngineSettings{}, base);
  exec.AddSource("src", std::make_unique<CountingSource>(1, 1));
  exec.AddOperator("sum", std::make_unique<SummingOperator>(), {"src"});
  exec.AddOperator("sum2", std::make_unique<SummingOperator>(), {"sum"});
  Status st = exec.Start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.ToString().find("cannot read the results of operator 'sum'"), std::string::npos)
      << st.ToString();
  EXPECT_FALSE(exec.running());
}

TEST(ExecutorTest, FailedOpenLeavesNothingRunning) {
  struct FailingSink final : Sink {
    Status Open(const StageContext&) override { return Status::IOError("disk on fire"); }
    KindSet Accepts() const override { return KindSet::Of<kind::PaneSummary>(); }
    Status Write(const OutputBatch&) override { return Status::Ok(); }
  };
  Interner interner;
  MetricsRegistry metrics;
  StageContext base;
  base.interner = &interner;
  base.metrics = &metrics;
  base.clock = &SystemClock::Instance();
  Executor exec(EngineSettings{}, base);
  exec.AddSource("src", std::make_unique<CountingSource>(1, 1));
  exec.AddOperator("op", std::make_unique<SummingOperator>(), {"src"});
  exec.AddSink("bad", std::make_unique<FailingSink>(), {"op"});
  Status st = exec.Start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("opening stage 'bad': disk on fire"), std::string::npos)
      << st.message();
  EXPECT_FALSE(exec.running());
}

}  // namespace
}  // namespace inferscope

namespace inferscope {
namespace {

// SummingOperator that writes a checkpoint record whenever it processed a batch since the last one.
class CheckpointingOperator final : public Operator {
 public:
  Status Open(const StageContext&) override { return Status::Ok(); }
  KindSet Emits() const override { return KindSet::Of<kind::PaneSummary>(); }
  Status Process(const EventBatch& batch, OutputBatch& out) override {
    ++batches_;
    out.Emplace<kind::PaneSummary>().agg.Add(static_cast<double>(batch.events.size()), 0);
    return Status::Ok();
  }
  Status Checkpoint(CheckpointWriter& writer) override {
    if (batches_ != checkpointed_) writer.Put("n", std::to_string(batches_));
    checkpointed_ = batches_;
    return Status::Ok();
  }

 private:
  int batches_ = 0;
  int checkpointed_ = 0;
};

// The checkpoint writer: counts the checkpoints that reach it and reports them durable.
class CheckpointCountingSink final : public Sink {
 public:
  Status Open(const StageContext&) override { return Status::Ok(); }
  KindSet Accepts() const override { return KindSet::Of<kind::PaneSummary>(); }
  bool WritesCheckpoints() const override { return true; }
  Status Write(const OutputBatch& batch) override {
    if (batch.checkpoint != nullptr) {
      checkpoints.fetch_add(1);
      for (const CheckpointRecord& r : batch.checkpoint->records)
        bytes.fetch_add(r.key.size() + (r.value ? r.value->size() : 0));
      batch.checkpoint->on_durable(*batch.checkpoint);
    }
    return Status::Ok();
  }
  std::atomic<int> checkpoints{0};
  std::atomic<uint64_t> bytes{0};  // of the records received
};

// A sink that must deliver before checkpoints: its writes wait for `open` (or fail with `fail`).
class GatedSink final : public Sink {
 public:
  Status Open(const StageContext&) override { return Status::Ok(); }
  KindSet Accepts() const override { return KindSet::Of<kind::PaneSummary>(); }
  bool NeedsCheckpointBarrier() const override { return true; }
  Status Write(const OutputBatch&) override {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return open_ || interrupted_; });
    writes.fetch_add(1);
    return fail.load() ? Status::IOError("refused") : Status::Ok();
  }
  void Interrupt() override {
    std::lock_guard<std::mutex> lock(mu_);
    interrupted_ = true;
    cv_.notify_all();
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  std::atomic<bool> fail{false};
  std::atomic<int> writes{0};

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  bool interrupted_ = false;
};

// Checkpoints collected so far (the count of inferscope_checkpoint_build_seconds).
int CheckpointsTaken(const MetricsRegistry& metrics) {
  const std::string text = metrics.RenderPrometheus();
  const std::string name = "inferscope_checkpoint_build_seconds_count ";
  const size_t at = text.find(name);
  return at == std::string::npos ? 0 : std::stoi(text.substr(at + name.size()));
}

bool Eventually(const std::function<bool()>& done) {
  for (int i = 0; i < 5000 && !done(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return done();
}

TEST(ExecutorTest, ACheckpointWaitsForTheSinksThatMustDeliverFirst) {
  Interner interner;
  MetricsRegistry metrics;
  StageContext base;
  base.interner = &interner;
  base.metrics = &metrics;
  base.clock = &SystemClock::Instance();
  EngineSettings settings;
  settings.checkpoint_interval_ms = 5;
  Executor exec(settings, base);
  exec.AddSource("src", std::make_unique<CountingSource>(20, 5));
  exec.AddOperator("op", std::make_unique<CheckpointingOperator>(), {"src"});
  auto state = std::make_unique<CheckpointCountingSink>();
  auto gated = std::make_unique<GatedSink>();
  CheckpointCountingSink* s = state.get();
  GatedSink* g = gated.get();
  exec.AddSink("state", std::move(state), {"op"});
  exec.AddSink("results", std::move(gated), {"op"});
  ASSERT_TRUE(exec.Start().ok());
  // A checkpoint is taken, but it cannot be written while the gated sink has not delivered what
  // was routed before it.
  ASSERT_TRUE(Eventually([&] { return CheckpointsTaken(metrics) > 0; }));
  EXPECT_EQ(s->checkpoints.load(), 0);
  g->Release();
  ASSERT_TRUE(Eventually([&] { return s->checkpoints.load() > 0; }));
  EXPECT_GT(g->writes.load(), 0);
  exec.Stop();
  EXPECT_GT(metrics.CounterValue("inferscope_checkpoints_total"), 0u);
  // Every record's bytes are counted once, when collected.
  EXPECT_GT(s->bytes.load(), 0u);
  EXPECT_EQ(metrics.CounterValue("inferscope_checkpoint_bytes_total"), s->bytes.load());
}

TEST(ExecutorTest, NoCheckpointIsWrittenAfterAFailedDeliveryOfASinkThatMustDeliverFirst) {
  Interner interner;
  MetricsRegistry metrics;
  StageContext base;
  base.interner = &interner;
  base.metrics = &metrics;
  base.clock = &SystemClock::Instance();
  EngineSettings settings;
  settings.checkpoint_interval_ms = 5;
  Executor exec(settings, base);
  exec.AddSource("src", std::make_unique<CountingSource>(20, 5));
  exec.AddOperator("op", std::make_unique<CheckpointingOperator>(), {"src"});
  auto state = std::make_unique<CheckpointCountingSink>();
  auto gated = std::make_unique<GatedSink>();
  CheckpointCountingSink* s = state.get();
  gated->fail.store(true);
  gated->Release();
  exec.AddSink("state", std::move(state), {"op"});
  exec.AddSink("results", std::move(gated), {"op"});
  ASSERT_TRUE(exec.Start().ok());
  ASSERT_TRUE(
      Eventually([&] { return metrics.CounterValue("inferscope_checkpoints_failed_total") > 0; }));
  exec.Stop();
  EXPECT_EQ(s->checkpoints.load(), 0);
  EXPECT_EQ(metrics.CounterValue("inferscope_checkpoints_total"), 0u);
}

}  // namespace
}  // namespace inferscope
