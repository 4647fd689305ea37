// Storage failures are held, not skipped: RocksDB write failures injected through a FileSystem
// wrapper (tests/fault_fs.h) under the real executor, window_aggregate operator, rocksdb_state sink
// and state store; and the real engine's /v1/health while its writes fail.

#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "cli/builtins.h"
#include "cli/engine.h"
#include "clients/cpp/publisher.h"
#include "operators/threshold_rules.h"
#include "operators/window_aggregate.h"
#include "pipeline/checkpoint.h"
#include "pipeline/executor.h"
#include "pipeline/registry.h"
#include "pipeline/topology.h"
#include "state/alert_store.h"
#include "state/checkpoint_store.h"
#include "state/rocksdb_alert_sink.h"
#include "state/rocksdb_state_sink.h"
#include "state/state_result_sink.h"
#include "state/state_store.h"
#include "tests/fault_fs.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

using client::Publisher;
using client::PublisherOptions;
using nlohmann::json;
using testing::FaultFileSystem;
using testing::TempDir;
using testing::WaitFor;

constexpr int64_t kPaneMs = 1000;
constexpr int64_t kCheckpointMs = 1000;
constexpr int64_t kT0 = 1'700'000'000'000;  // pane-aligned event time

// A source the test feeds: each Send becomes one batch with one sequence number of publisher "p".
// It records what OnCheckpointDurable acknowledges and runs `on_ack` at that moment (the sink's
// thread, before the executor goes on).
class ScriptedSource final : public Source {
 public:
  Status Open(const StageContext& ctx) override {
    interner_ = ctx.interner;
    publisher_ = interner_->Intern("p");
    return Status::Ok();
  }
  Status Run(SourceOutput& out, const std::atomic<bool>& stop) override {
    while (!stop.load()) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(5), [&] { return !pending_.empty(); });
      if (pending_.empty()) continue;
      auto [events, seq] = std::move(pending_.front());
      pending_.pop_front();
      lock.unlock();
      EventBatchPtr batch = out.Acquire();
      if (!batch) return Status::Ok();
      batch->events = std::move(events);
      batch->publisher = publisher_;
      AppliedSequence applied;  // fields by name: AppliedSequence grows (incarnations)
      applied.publisher = publisher_;
      applied.seq = seq;
      batch->sequences.push_back(applied);
      if (!out.Emit(std::move(batch))) return Status::Ok();
    }
    return Status::Ok();
  }
  void OnCheckpointDurable(const std::vector<AppliedSequence>& applied) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const AppliedSequence& a : applied) {
      if (a.publisher != publisher_) continue;
      acked_ = std::max(acked_, a.seq);
      if (on_ack) on_ack(a.seq);
    }
  }

  // A gauge "g" of instance "i", model "m" at `time_ms`.
  Event Gauge(int64_t time_ms, double value) const {
    Event e;
    e.kind = EventKind::kGauge;
    e.instance = interner_->Intern("i");
    e.model = interner_->Intern("m");
    e.metric = interner_->Intern("g");
    e.publisher = publisher_;
    e.time_ms = time_ms;
    e.value = value;
    return e;
  }
  void Send(std::vector<Event> events, uint64_t seq) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_.emplace_back(std::move(events), seq);
    }
    cv_.notify_one();
  }
  uint64_t acked() const {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_;
  }

  std::function<void(uint64_t)> on_ack;  // set before Start

 private:
  Interner* interner_ = nullptr;
  StringId publisher_ = 0;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::vector<Event>, uint64_t>> pending_;
  uint64_t acked_ = 0;
};

// Reads the source's events too; its Checkpoint fails while `fail` is set.
class FlakyCheckpointOperator final : public Operator {
 public:
  explicit FlakyCheckpointOperator(std::atomic<bool>* fail) : fail_(fail) {}
  Status Open(const StageContext&) override { return Status::Ok(); }
  KindSet Emits() const override { return {}; }
  Status Process(const EventBatch&, OutputBatch&) override { return Status::Ok(); }
  Status Checkpoint(CheckpointWriter&) override {
    if (fail_->load()) return Status::Internal("injected checkpoint failure");
    return Status::Ok();
  }

 private:
  std::atomic<bool>* fail_;
};

WindowAggregateOperator::Options WindowOptions() {
  WindowAggregateOperator::Options o;
  o.pane_ms = kPaneMs;
  o.out_of_orderness_ms = 0;
  o.idle_timeout_ms = 0;  // only data moves the watermark
  return o;
}

// The rule of Pipeline's optional alerts: a pane of g whose max is over 10 fires "hot_gauge".
constexpr char kHotGaugeRule[] = R"(rules:
  - name: hot_gauge
    metric: g
    stat: max
    op: ">"
    levels: {warning: 10}
)";

// Retries after 1 ms, at most 20 ms apart.
HeldWriter::Options FastRetry() {
  HeldWriter::Options o;
  o.retry_backoff_ms = 1;
  o.retry_max_backoff_ms = 20;
  return o;
}

// source "src" → window_aggregate "windows" (→ optionally a flaky operator) → rocksdb_state
// "state", optionally with threshold_rules "rules" (kHotGaugeRule) → `alert_sink` "alerts", on a
// store whose WAL writes fail on demand; processing time is a ManualClock, so a checkpoint is taken
// exactly when the test advances it.
class Pipeline {
 public:
  explicit Pipeline(bool flaky_operator = false, std::unique_ptr<Sink> alert_sink = nullptr) {
    StateStoreOptions options;
    options.path = dir_.str() + "/state";
    options.clock = &clock_;
    options.file_system = fs_;
    Result<std::unique_ptr<StateStore>> store = StateStore::Open(options, &metrics_);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();

    EngineSettings settings;
    settings.timer_interval_ms = 5;  // the operator loop polls every 5 ms of real time
    settings.checkpoint_interval_ms = kCheckpointMs;
    StageContext base;
    base.interner = &interner_;
    base.metrics = &metrics_;
    base.clock = &clock_;
    base.state = store_.get();
    checkpoints_ = std::make_unique<StateCheckpointStorage>(store_.get());
    base.checkpoints = checkpoints_.get();
    executor_ = std::make_unique<Executor>(settings, base);
    auto source = std::make_unique<ScriptedSource>();
    source_ = source.get();
    executor_->AddSource("src", std::move(source));
    executor_->AddOperator("windows", std::make_unique<WindowAggregateOperator>(WindowOptions()),
                           {"src"});
    if (flaky_operator) {
      executor_->AddOperator("flaky", std::make_unique<FlakyCheckpointOperator>(&flaky_), {"src"});
    }
    RocksDbStateSink::Options sink_options;
    sink_options.retry = FastRetry();
    executor_->AddSink("state", std::make_unique<RocksDbStateSink>(sink_options), {"windows"});
    if (alert_sink != nullptr) {
      Result<ThresholdRulesOperator::Options> rules = ThresholdRulesOperator::ParseOptions(
          ConfigNode("rules.yaml", YAML::Load(kHotGaugeRule), "options"));
      EXPECT_TRUE(rules.ok()) << rules.status().ToString();
      executor_->AddOperator("rules", std::make_unique<ThresholdRulesOperator>(*rules),
                             {"windows"});
      executor_->AddSink("alerts", std::move(alert_sink), {"rules"});
    }
  }
  ~Pipeline() { executor_->Stop(); }

  Status Start() { return executor_->Start(); }
  // One checkpoint interval of processing time.
  void AdvanceClock() { clock_.Advance(kCheckpointMs); }
  // Waits until every checkpoint taken is durable (the clock is not advanced: none is taken).
  bool WaitNoCheckpointInFlight() {
    Histogram* taken = metrics_.GetHistogram("inferscope_checkpoint_build_seconds", "");
    Counter* durable = metrics_.GetCounter("inferscope_checkpoints_total", "");
    return WaitFor([&] { return taken->count() == durable->value(); });
  }
  // Lets a checkpoint interval pass until `seq` is acknowledged (false after 10 s).
  bool WaitAcked(uint64_t seq) {
    return WaitFor(
        [&] {
          clock_.Advance(kCheckpointMs);
          return source_->acked() >= seq;
        },
        std::chrono::seconds(10));
  }
  // Lets checkpoint intervals pass for `wait`: true when `seq` was not acknowledged meanwhile.
  bool StaysUnacked(uint64_t seq, std::chrono::milliseconds wait) {
    return !WaitFor(
        [&] {
          clock_.Advance(kCheckpointMs);
          return source_->acked() >= seq;
        },
        wait);
  }
  // The stored panes of series (i, m, g): start → sum.
  std::map<int64_t, double> StoredPanes() {
    std::map<int64_t, double> panes;
    Status s = store_->ScanPanes("i", "m", "g", 0, INT64_MAX, [&](const StoredPane& p) {
      panes[p.start_ms] = p.agg.sum;
      return Status::Ok();
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return panes;
  }
  // What a restart would restore from the last durable checkpoint: a fresh window operator
  // restored from the store, then closed, emits every open pane (start → sum).
  std::map<int64_t, double> RestoredOpenPanes() {
    WindowAggregateOperator restored(WindowOptions());
    StageContext ctx;
    ctx.name = "windows";
    ctx.interner = &interner_;
    ctx.metrics = &restore_metrics_;
    ctx.clock = &clock_;
    EXPECT_TRUE(restored.Open(ctx).ok());
    Status s = restored.Restore(StateCheckpointReader("op", "windows", store_.get()));
    EXPECT_TRUE(s.ok()) << s.ToString();
    OutputBatch out;
    EXPECT_TRUE(restored.Close(out).ok());
    std::map<int64_t, double> panes;
    for (const WindowSummary& w : out.Get<kind::PaneSummary>()) panes[w.start_ms] = w.agg.sum;
    return panes;
  }

  // The stored alerts (their latest states).
  size_t StoredAlerts() {
    size_t n = 0;
    Status s = ScanAlerts(*store_, [&](const Alert&) {
      ++n;
      return true;
    });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return n;
  }

  FaultFileSystem& fs() { return *fs_; }
  ScriptedSource& source() { return *source_; }
  StateStore& store() { return *store_; }
  MetricsRegistry& metrics() { return metrics_; }
  std::atomic<bool>& flaky() { return flaky_; }

 private:
  TempDir dir_;
  std::shared_ptr<FaultFileSystem> fs_ = std::make_shared<FaultFileSystem>();
  ManualClock clock_{kT0};
  Interner interner_;
  MetricsRegistry metrics_;
  MetricsRegistry restore_metrics_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<StateCheckpointStorage> checkpoints_;
  std::unique_ptr<Executor> executor_;
  ScriptedSource* source_ = nullptr;
  std::atomic<bool> flaky_{false};
};

// (a) On main a failed checkpoint write left the checkpoint "in flight" forever: no checkpoint and
// no acknowledgement ever again.
TEST(StorageFailureTest, OneFailedCheckpointWriteDoesNotStopLaterCheckpointsAndAcks) {
  Pipeline p;
  ASSERT_TRUE(p.Start().ok());
  ScriptedSource& src = p.source();
  src.Send({src.Gauge(kT0 + 10, 1)}, 1);
  ASSERT_TRUE(p.WaitAcked(1));

  p.fs().FailWalSyncs(1);  // only checkpoints sync the WAL: the next checkpoint write fails once
  src.Send({src.Gauge(kT0 + 20, 2)}, 2);
  ASSERT_TRUE(p.WaitAcked(2)) << "the checkpoint after the failed write never became durable";
  EXPECT_EQ(p.fs().injected(), 1);
  src.Send({src.Gauge(kT0 + 30, 3)}, 3);
  ASSERT_TRUE(p.WaitAcked(3)) << "no checkpoint after the failed one";
  EXPECT_TRUE(p.store().BackgroundError().ok()) << p.store().BackgroundError().ToString();
  EXPECT_GE(p.metrics().GetCounter("inferscope_state_write_errors_total", "")->value(), 1u);
}

// (b) On main a failed pane write was only logged: the checkpoint behind it acknowledged messages
// whose panes were never stored.
TEST(StorageFailureTest, CheckpointAfterFailedPaneWriteIsNotAcknowledgedUntilThePanesAreStored) {
  Pipeline p;
  // At each acknowledgement, the panes that the acknowledged messages closed must be stored.
  std::map<uint64_t, bool> stored_at_ack;
  p.source().on_ack = [&](uint64_t seq) { stored_at_ack[seq] = p.StoredPanes().count(kT0) == 1; };
  ASSERT_TRUE(p.Start().ok());
  ScriptedSource& src = p.source();
  src.Send({src.Gauge(kT0 + 10, 5)}, 1);
  ASSERT_TRUE(p.WaitAcked(1));
  ASSERT_TRUE(p.WaitNoCheckpointInFlight());

  p.fs().FailWalAppends(-1);  // every write fails until healed (a full disk)
  // Closes pane kT0: its write fails.
  src.Send({src.Gauge(kT0 + kPaneMs + 10, 7)}, 2);
  ASSERT_TRUE(WaitFor([&] { return p.fs().injected() >= 1; }));
  // Checkpoint intervals pass while the write fails: a checkpoint is taken (behind the failed
  // write, or held itself) and later ones are skipped; nothing is acknowledged.
  Histogram* taken = p.metrics().GetHistogram("inferscope_checkpoint_build_seconds", "");
  Counter* skipped = p.metrics().GetCounter("inferscope_checkpoints_skipped_total", "");
  const uint64_t taken_before = taken->count();
  const uint64_t skipped_before = skipped->value();
  ASSERT_TRUE(WaitFor([&] {
    p.AdvanceClock();
    return taken->count() > taken_before || skipped->value() > skipped_before;
  }));
  EXPECT_TRUE(p.StaysUnacked(2, std::chrono::milliseconds(200)));
  EXPECT_EQ(src.acked(), 1u);
  EXPECT_TRUE(p.StoredPanes().empty());

  p.fs().Heal();
  ASSERT_TRUE(p.WaitAcked(2)) << "no acknowledgement after the store recovered";
  ASSERT_EQ(stored_at_ack.count(2), 1u);
  EXPECT_TRUE(stored_at_ack[2]) << "seq 2 was acknowledged before the pane it closed was stored";
  EXPECT_EQ(p.StoredPanes(), (std::map<int64_t, double>{{kT0, 5}}));
  EXPECT_TRUE(p.store().BackgroundError().ok()) << p.store().BackgroundError().ToString();
}

// (b2) On main the result sinks (rocksdb_alerts, rocksdb_bottlenecks, rocksdb_routing) logged a
// failed write and went on, and checkpoints did not wait for them: the alert was lost for good
// (the rules operator does not raise it again) while the message that raised it was acknowledged.
TEST(StorageFailureTest, AFailedAlertWriteIsHeldAndItsMessageIsNotAcknowledgedBeforeIt) {
  Pipeline p(/*flaky_operator=*/false, std::make_unique<RocksDbAlertSink>(FastRetry()));
  std::map<uint64_t, size_t> alerts_at_ack;
  p.source().on_ack = [&](uint64_t seq) { alerts_at_ack[seq] = p.StoredAlerts(); };
  ASSERT_TRUE(p.Start().ok());
  ScriptedSource& src = p.source();
  src.Send({src.Gauge(kT0 + 10, 50)}, 1);
  ASSERT_TRUE(p.WaitAcked(1));
  ASSERT_TRUE(p.WaitNoCheckpointInFlight());
  EXPECT_EQ(p.StoredAlerts(), 0u);

  // The alert's records only: the rules operator's checkpoint record ("lifecycle") holds the
  // alert too, and when its write failed first the store reported the state sink (once in a full
  // ctest).
  p.fs().FailWalAppendsContaining("hot_gauge", "lifecycle");
  // Closes pane kT0 (max 50): the rule fires and the alert's write fails, again and again.
  src.Send({src.Gauge(kT0 + kPaneMs + 10, 1)}, 2);
  Counter* errors =
      p.metrics().GetCounter("inferscope_sink_write_errors_total", "", {{"stage", "alerts"}});
  ASSERT_TRUE(WaitFor([&] { return errors->value() >= 3; }));
  // Checkpoint intervals pass while the alert cannot be stored: nothing is acknowledged.
  EXPECT_TRUE(p.StaysUnacked(2, std::chrono::milliseconds(300)));
  EXPECT_EQ(src.acked(), 1u);
  EXPECT_EQ(p.StoredAlerts(), 0u);
  const Status held = p.store().BackgroundError();
  EXPECT_NE(held.message().find("sink 'alerts'"), std::string::npos) << held.ToString();

  p.fs().Heal();
  ASSERT_TRUE(p.WaitAcked(2)) << "no acknowledgement after the store recovered";
  EXPECT_EQ(alerts_at_ack[2], 1u) << "seq 2 was acknowledged before the alert it raised was stored";
  EXPECT_EQ(p.StoredAlerts(), 1u);
  ASSERT_TRUE(WaitFor([&] { return p.store().BackgroundError().ok(); }))
      << p.store().BackgroundError().ToString();
}

// A sink like rocksdb_alerts (the same base) whose writes wait until `open`: a slow disk, or a sink
// thread behind on its queue.
class GatedAlertSink final : public StateResultSink {
 public:
  explicit GatedAlertSink(const std::atomic<bool>* open)
      : StateResultSink({"gated_alerts", "alert state changes", "test_gated_alerts_written_total",
                         "Alerts the gated sink stored"},
                        FastRetry()),
        open_(open) {}
  KindSet Accepts() const override { return KindSet::Of<kind::Alert>(); }

 private:
  size_t Count(const OutputBatch& batch) const override { return batch.Get<kind::Alert>().size(); }
  Status Store(StateStore& state, const OutputBatch& batch) const override {
    while (!open_->load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return StoreAlerts(state, batch.Get<kind::Alert>());
  }

  const std::atomic<bool>* open_;
};

// (b3) On main a checkpoint did not wait for the result sinks: one taken while the alert sink was
// still writing acknowledged the message that raised the alert, and a crash then lost the alert
// for good (the restored rules operator does not raise it again).
TEST(StorageFailureTest, AMessageIsNotAcknowledgedBeforeTheAlertItRaisedIsStored) {
  std::atomic<bool> open{false};
  Pipeline p(/*flaky_operator=*/false, std::make_unique<GatedAlertSink>(&open));
  std::map<uint64_t, size_t> alerts_at_ack;
  p.source().on_ack = [&](uint64_t seq) { alerts_at_ack[seq] = p.StoredAlerts(); };
  ASSERT_TRUE(p.Start().ok());
  ScriptedSource& src = p.source();
  src.Send({src.Gauge(kT0 + 10, 50)}, 1);
  ASSERT_TRUE(p.WaitAcked(1));
  src.Send({src.Gauge(kT0 + kPaneMs + 10, 1)}, 2);  // closes pane kT0: the rule fires
  ASSERT_TRUE(WaitFor([&] { return p.StoredPanes().count(kT0) == 1; }));
  EXPECT_TRUE(p.StaysUnacked(2, std::chrono::milliseconds(300)));
  EXPECT_EQ(src.acked(), 1u);

  open = true;
  ASSERT_TRUE(p.WaitAcked(2));
  EXPECT_EQ(alerts_at_ack[2], 1u) << "seq 2 was acknowledged before the alert it raised was stored";
}

// (c) On main the operators' "changed" marks were cleared when a checkpoint was taken: when it was
// never durable, those changes were missing from every later checkpoint.
TEST(StorageFailureTest, ChangesBeforeAFailedCheckpointWriteAreInTheNextDurableCheckpoint) {
  Pipeline p;
  ASSERT_TRUE(p.Start().ok());
  ScriptedSource& src = p.source();
  src.Send({src.Gauge(kT0 + 10, 1)}, 1);
  ASSERT_TRUE(p.WaitAcked(1));
  EXPECT_EQ(p.RestoredOpenPanes(), (std::map<int64_t, double>{{kT0, 1}}));

  p.fs().FailWalSyncs(1);
  src.Send({src.Gauge(kT0 + 20, 2)}, 2);  // changes the open pane; its checkpoint write fails
  ASSERT_TRUE(p.WaitAcked(2));
  EXPECT_EQ(p.fs().injected(), 1);
  EXPECT_EQ(p.RestoredOpenPanes(), (std::map<int64_t, double>{{kT0, 3}}));
}

TEST(StorageFailureTest, ChangesBeforeAFailedOperatorCheckpointAreInTheNextDurableCheckpoint) {
  Pipeline p(/*flaky_operator=*/true);
  ASSERT_TRUE(p.Start().ok());
  ScriptedSource& src = p.source();
  src.Send({src.Gauge(kT0 + 10, 1)}, 1);
  ASSERT_TRUE(p.WaitAcked(1));

  // The window operator writes its changed pane, then the next operator fails: no checkpoint.
  p.flaky() = true;
  src.Send({src.Gauge(kT0 + 20, 2)}, 2);
  Counter* processed = p.metrics().GetCounter("inferscope_operator_queue_batches_total", "");
  ASSERT_TRUE(WaitFor([&] { return processed->value() >= 2; }));
  Counter* failed =
      p.metrics().GetCounter("inferscope_stage_errors_total", "", {{"stage", "flaky"}});
  const uint64_t failed_before = failed->value();
  ASSERT_TRUE(WaitFor([&] {
    p.AdvanceClock();
    return failed->value() > failed_before;
  }));
  EXPECT_EQ(src.acked(), 1u);
  p.flaky() = false;
  ASSERT_TRUE(p.WaitAcked(2));
  EXPECT_EQ(p.RestoredOpenPanes(), (std::map<int64_t, double>{{kT0, 3}}));
}

// The real engine (windows → rocksdb_state, the query API on a free port) on a state store in
// `dir` whose writes go through `fs`; nullptr (with a test failure) when it does not start.
std::unique_ptr<Engine> StartEngine(const TempDir& dir, std::shared_ptr<FaultFileSystem> fs) {
  constexpr char kTopology[] = R"(name: storage
state:
  path: STATE
query:
  listen: 127.0.0.1:0
sources:
  - name: ingest
    type: zmq
    options:
      endpoint: tcp://127.0.0.1:*
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options:
      pane: 1s
      out_of_orderness: 0s
      idle_timeout: 0
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
    options:
      retry_backoff: 5ms
      retry_max_backoff: 50ms
)";
  std::string yaml = kTopology;
  yaml.replace(yaml.find("STATE"), 5, dir.str() + "/state");
  Result<TopologySpec> spec = ParseTopology(yaml, "<test>");
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  if (!spec.ok()) return nullptr;
  Registry registry;
  RegisterBuiltins(registry);
  Result<std::unique_ptr<Engine>> built = Engine::Build(*spec, registry);
  EXPECT_TRUE(built.ok()) << built.status().ToString();
  if (!built.ok()) return nullptr;
  std::unique_ptr<Engine> engine = std::move(built).value();
  engine->SetStateFileSystem(std::move(fs));
  Status started = engine->Start();
  EXPECT_TRUE(started.ok()) << started.ToString();
  return started.ok() ? std::move(engine) : nullptr;
}

// (d) The engine's /v1/health says "degraded" with the reason while a state write fails, and "ok"
// once it succeeded; the sticky-error gauge follows.
TEST(StorageFailureTest, HealthIsDegradedWhileStateWritesFailAndOkAfter) {
  TempDir dir;
  auto fs = std::make_shared<FaultFileSystem>();
  std::unique_ptr<Engine> engine = StartEngine(dir, fs);
  ASSERT_NE(engine, nullptr);
  httplib::Client http(engine->HttpUrl());
  auto health = [&] {
    auto res = http.Get("/v1/health");
    return res ? json::parse(res->body, nullptr, false) : json();
  };
  ASSERT_EQ(health()["status"], "ok");
  Gauge* sticky = engine->metrics().GetGauge("inferscope_state_background_error", "");
  EXPECT_EQ(sticky->value(), 0);

  PublisherOptions options;
  options.endpoint = engine->Endpoint("ingest");
  options.publisher_id = "pub";
  Publisher pub(options);
  ASSERT_TRUE(pub.Connect());
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const int64_t t0 = (now - 60'000) / 1000 * 1000;
  ASSERT_TRUE(pub.Gauge("i", "m", "g", 1, t0 + 10));
  ASSERT_TRUE(pub.Flush());

  fs->FailWalAppends(-1);
  ASSERT_TRUE(pub.Gauge("i", "m", "g", 2, t0 + 1010));  // closes pane t0: its write fails
  ASSERT_TRUE(pub.Flush());
  json degraded;
  ASSERT_TRUE(WaitFor([&] {
    degraded = health();
    return degraded["status"] == "degraded";
  })) << degraded.dump();
  ASSERT_TRUE(degraded["reason"].is_string());
  const std::string reason = degraded["reason"];
  EXPECT_NE(reason.find("sink 'state'"), std::string::npos) << reason;
  EXPECT_NE(reason.find("injected by FaultFileSystem"), std::string::npos) << reason;
  EXPECT_EQ(sticky->value(), 1);
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("inferscope_state_background_error 1"), std::string::npos);
  EXPECT_TRUE(engine->state()
                  ->ScanPanes("i", "m", "g", 0, INT64_MAX,
                              [](const StoredPane&) {
                                return Status::Internal(
                                    "no pane may be stored while the write fails");
                              })
                  .ok());

  fs->Heal();
  json recovered;
  ASSERT_TRUE(WaitFor([&] {
    recovered = health();
    return recovered["status"] == "ok";
  })) << recovered.dump();
  EXPECT_FALSE(recovered.contains("reason"));
  EXPECT_EQ(sticky->value(), 0);
  int panes = 0;
  ASSERT_TRUE(engine->state()
                  ->ScanPanes("i", "m", "g", 0, INT64_MAX,
                              [&](const StoredPane& pane) {
                                EXPECT_EQ(pane.start_ms, t0);
                                EXPECT_EQ(pane.agg.sum, 1);
                                ++panes;
                                return Status::Ok();
                              })
                  .ok());
  EXPECT_EQ(panes, 1);
  engine->Stop();
}

// (e) A silence written through the API is not held: a failed write answers its request with an
// error and adds nothing. On main the store then refused every later write until a sink's retry
// reopened it, so on an idle engine every later silence failed too, the disk healed or not. Now
// the write reopens the store and tries once more, so a transient failure costs nothing.
TEST(StorageFailureTest, AFailedSilenceWriteIsAnErrorAndTheNextOneSucceedsOnceTheDiskIsBack) {
  TempDir dir;
  auto fs = std::make_shared<FaultFileSystem>();
  std::unique_ptr<Engine> engine = StartEngine(dir, fs);
  ASSERT_NE(engine, nullptr);
  httplib::Client http(engine->HttpUrl());
  constexpr char kSilence[] = R"({"matchers": {"instance": "vllm-1"}, "duration": "1h"})";
  auto silences = [&] {
    auto res = http.Get("/v1/silences");
    return res ? json::parse(res->body, nullptr, false)["silences"].size() : size_t{999};
  };

  fs->FailWalAppends(2);  // the write and its retry fail
  auto failed = http.Post("/v1/silences", kSilence, "application/json");
  ASSERT_TRUE(failed);
  EXPECT_EQ(failed->status, 500) << failed->body;
  json error = json::parse(failed->body, nullptr, false);
  EXPECT_TRUE(error["error"]["message"].is_string()) << failed->body;
  EXPECT_EQ(fs->injected(), 2);
  EXPECT_EQ(silences(), 0u);

  // The disk is back. Nothing else writes (no data flows): the API write gets the store going.
  auto added = http.Post("/v1/silences", kSilence, "application/json");
  ASSERT_TRUE(added);
  EXPECT_EQ(added->status, 201) << added->body;
  EXPECT_EQ(silences(), 1u);

  fs->FailWalAppends(1);  // one transient failure: the retry succeeds
  auto transient = http.Post("/v1/silences", kSilence, "application/json");
  ASSERT_TRUE(transient);
  EXPECT_EQ(transient->status, 201) << transient->body;
  EXPECT_EQ(fs->injected(), 3);
  EXPECT_EQ(silences(), 2u);
  engine->Stop();
}

}  // namespace
}  // namespace inferscope
