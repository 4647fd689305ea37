#include "pipeline/executor.h"

#include <gtest/gtest.h>

#include <mutex>

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
  Status Process(const EventBatch& batch, OutputBatch& out) override {
    WindowSummary s;
    s.agg.Add(static_cast<double>(batch.events.size()), 0);
    out.summaries.push_back(std::move(s));
    return Status::Ok();
  }
  Status Close(OutputBatch& out) override {
    out.summaries.emplace_back();
    return Status::Ok();
  }
};

// Reads SummingOperator's results and emits each summary's sum doubled, plus one alert per batch.
class DoublingOperator final : public Operator {
 public:
  Status Open(const StageContext&) override { return Status::Ok(); }
  bool ReadsResults() const override { return true; }
  Status Process(const EventBatch&, OutputBatch&) override {
    return Status::Internal("reads results only");
  }
  Status ProcessResults(const OutputBatch& in, OutputBatch& out) override {
    for (const auto& s : in.summaries) {
      WindowSummary d;
      d.agg.Add(2 * s.agg.sum, 0);
      out.summaries.push_back(std::move(d));
    }
    out.alerts.emplace_back();
    return Status::Ok();
  }
};

class CollectingSink final : public Sink {
 public:
  Status Open(const StageContext&) override { return Status::Ok(); }
  Status Write(const OutputBatch& batch) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& s : batch.summaries) {
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
  EXPECT_EQ(metrics.CounterValue("inferscope_stage_alerts_out_total", {{"stage", "double"}}), 21u);
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
    Status Write(const OutputBatch&) override { return Status::Ok(); }
  };
  Interner interner;
  MetricsRegistry metrics;
  StageContext base{"", &interner, &metrics, &SystemClock::Instance(), nullptr};
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
