// Series expiry, per-publisher series shares and name reclamation (issue 8, item 8): a
// cardinality attack from one publisher neither locks other publishers out nor fills the tables
// until a restart.

#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "clients/cpp/publisher.h"
#include "operators/anomaly_detect.h"
#include "operators/sliding_window.h"
#include "operators/window_aggregate.h"
#include "pipeline/checkpoint.h"
#include "pipeline/clock.h"
#include "pipeline/config.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "sources/wire_decoder.h"
#include "state/checkpoint_store.h"
#include "state/state_store.h"
#include "tests/test_util.h"

namespace inferscope {
namespace {

constexpr int64_t kT0 = 1'700'000'000'000;  // aligned to 10 s

std::unique_ptr<WindowAggregateOperator> Make(const std::string& yaml) {
  auto op = WindowAggregateOperator::Create(ConfigNode("t.yaml", YAML::Load(yaml), "options"));
  EXPECT_TRUE(op.ok()) << op.status().ToString();
  return op.ok() ? std::move(*op) : nullptr;
}

// Publishers encode gauges, a real WireDecoder interns and decodes them, the operator runs.
struct Pipeline {
  explicit Pipeline(const std::string& options, size_t max_strings = 100'000)
      : interner(max_strings), decoder(WireDecoderOptions{}, interner, clock, &metrics, "source") {
    ctx.name = "window";
    ctx.interner = &interner;
    ctx.metrics = &metrics;
    ctx.clock = &clock;
    op = Make(options);
    if (op != nullptr) {
      EXPECT_TRUE(op->Open(ctx).ok());
    }
  }

  // Sends one message from `publisher`: one gauge per instance name, at the clock's time.
  OutputBatch Send(client::BatchEncoder& publisher, const std::vector<std::string>& instances) {
    for (const std::string& instance : instances) {
      publisher.AddGauge(instance, "llama-8b", "kv_cache_usage", 0.5, clock.NowMs());
    }
    EventBatch batch;
    const DecodeResult r = decoder.Decode(publisher.Finish(), batch);
    EXPECT_EQ(r.accepted, instances.size()) << r.detail();
    OutputBatch out;
    EXPECT_TRUE(op->Process(batch, out).ok());
    return out;
  }
  uint64_t SeriesRejected(const std::string& publisher) const {
    return metrics.CounterValue(
        "inferscope_window_rejected_by_publisher_total",
        {{"stage", "window"}, {"reason", "series_limit"}, {"publisher", publisher}});
  }

  ManualClock clock{kT0};
  MetricsRegistry metrics;
  Interner interner;
  WireDecoder decoder;
  StageContext ctx;
  std::unique_ptr<WindowAggregateOperator> op;
};

std::vector<std::string> Names(const std::string& prefix, int from, int to) {
  std::vector<std::string> out;
  for (int i = from; i < to; ++i) out.push_back(prefix + std::to_string(i));
  return out;
}

// The attack: one publisher sends 3,000 one-off instances. It gets its share of the series table
// (the rest is refused and counted against it), another publisher's new instance is still
// accepted, and once the attacker's series have been idle for series_ttl of event time they
// expire, the Interner reclaims their names, and the table and string count are back to where
// they were.
TEST(SeriesExpiryTest, CardinalityAttackLeavesRoomThenExpiresAndNamesAreReclaimed) {
  Pipeline p("max_series: 1000\nmax_series_per_publisher: 500\nseries_ttl: 1m\n");
  ASSERT_NE(p.op, nullptr);
  client::BatchEncoder good("good-publisher");
  client::BatchEncoder evil("evil-publisher");
  p.Send(good, {"good-0"});
  const size_t strings_before = p.interner.size();

  std::vector<StringId> attacker_ids;
  for (int i = 0; i < 3000; i += 500) {
    p.clock.Advance(10);
    p.Send(evil, Names("evil-", i, i + 500));
  }
  for (int i = 0; i < 3000; i += 97)
    attacker_ids.push_back(*p.interner.Find("evil-" + std::to_string(i)));
  EXPECT_EQ(p.op->series(), 1 + 500);
  EXPECT_EQ(p.SeriesRejected("evil-publisher"), 2500u);
  EXPECT_EQ(p.metrics.CounterValue("inferscope_window_rejected_events_total",
                                   {{"stage", "window"}, {"reason", "series_limit"}}),
            2500u);

  // Another publisher's new instance still gets a series.
  p.clock.Advance(10);
  p.Send(good, {"good-0", "good-1"});
  EXPECT_EQ(p.op->series(), 1 + 500 + 1);
  EXPECT_EQ(p.SeriesRejected("good-publisher"), 0u);

  // Three minutes of the good publisher only: the attacker's series pass series_ttl.
  uint64_t dead = 0;
  for (int s = 0; s < 180; ++s) {
    p.clock.Advance(1000);
    OutputBatch out = p.Send(good, {"good-0", "good-1"});
    dead += out.Get<kind::DeadLetter>().size();
    out = {};
    ASSERT_TRUE(p.op->OnTimer(p.clock.NowMs(), out).ok());
  }
  EXPECT_EQ(dead, 0u);
  EXPECT_EQ(p.op->series_expired(), 500u);
  EXPECT_EQ(p.metrics.CounterValue("inferscope_window_series_expired_total", {{"stage", "window"}}),
            500u);
  EXPECT_EQ(p.op->series(), 2);

  // Nothing holds the attacker's names now: they are reclaimed once unused for two whole sweep
  // intervals.
  p.interner.Sweep();
  p.interner.Sweep();
  EXPECT_TRUE(p.interner.Find("evil-7").has_value());
  p.interner.Sweep();
  EXPECT_FALSE(p.interner.Find("evil-7").has_value());
  EXPECT_EQ(p.interner.size(), strings_before + 2);  // + good-1, evil-publisher (pinned)
  for (StringId id : attacker_ids) EXPECT_EQ(p.interner.Name(id), "") << id;
  EXPECT_EQ(p.interner.Name(*p.interner.Find("good-1")), "good-1");

  // The names come back as new ids (an old id never names another string), through the decoder's
  // caches too, and the attacker's share is free again.
  p.clock.Advance(1000);
  p.Send(evil, {"evil-7"});
  const std::optional<StringId> again = p.interner.Find("evil-7");
  ASSERT_TRUE(again.has_value());
  for (StringId id : attacker_ids) EXPECT_NE(*again, id);
  EXPECT_EQ(p.interner.Name(*again), "evil-7");
  EXPECT_EQ(p.op->series(), 3);
  EXPECT_EQ(p.SeriesRejected("evil-publisher"), 2500u);
}

// Without an explicit share a publisher may own half of max_series.
TEST(SeriesExpiryTest, DefaultShareIsHalfOfMaxSeries) {
  Pipeline p("max_series: 100\n");
  ASSERT_NE(p.op, nullptr);
  client::BatchEncoder evil("evil-publisher");
  client::BatchEncoder good("good-publisher");
  p.Send(evil, Names("evil-", 0, 200));
  EXPECT_EQ(p.op->series(), 50);
  EXPECT_EQ(p.SeriesRejected("evil-publisher"), 150u);
  p.Send(good, Names("good-", 0, 10));
  EXPECT_EQ(p.op->series(), 60);
}

// Expiry never drops pane data: a series whose pane is still open (here, within the allowed
// lateness) waits; when it does expire its checkpoint records are deleted, so a restore does not
// bring it back.
TEST(SeriesExpiryTest, ExpiryWaitsForOpenPanesAndDeletesTheCheckpointRecords) {
  Pipeline p("series_ttl: 20s\nallowed_lateness: 1m\nidle_timeout: 0\n");
  ASSERT_NE(p.op, nullptr);
  inferscope::testing::TempDir dir;
  StateStoreOptions so;
  so.path = dir.str();
  auto store = StateStore::Open(so, nullptr);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto checkpoint = [&] {
    std::vector<CheckpointRecord> writes;
    CheckpointCollector writer("op", "window", &writes);
    EXPECT_TRUE(p.op->Checkpoint(writer).ok());
    EXPECT_TRUE(WriteCheckpointRecords(**store, writes).ok());
    return writes;
  };
  client::BatchEncoder pub("publisher");
  p.Send(pub, {"short-lived", "steady"});
  checkpoint();

  // 40 s later the watermark is past short-lived's last event + series_ttl, but its pane is
  // open for late events: it stays, and a late event is still applied.
  for (int s = 0; s < 40; ++s) {
    p.clock.Advance(1000);
    p.Send(pub, {"steady"});
    OutputBatch out;
    ASSERT_TRUE(p.op->OnTimer(p.clock.NowMs(), out).ok());
  }
  EXPECT_EQ(p.op->series_expired(), 0u);
  pub.AddGauge("short-lived", "llama-8b", "kv_cache_usage", 0.9, kT0 + 5);
  EventBatch late;
  ASSERT_EQ(p.decoder.Decode(pub.Finish(), late).accepted, 1u);
  OutputBatch out;
  ASSERT_TRUE(p.op->Process(late, out).ok());
  EXPECT_TRUE(out.Get<kind::DeadLetter>().empty());
  ASSERT_EQ(out.Get<kind::PaneSummary>().size(), 1u);  // the update of the fired pane
  EXPECT_TRUE(out.Get<kind::PaneSummary>()[0].update);
  EXPECT_EQ(out.Get<kind::PaneSummary>()[0].agg.count, 2u);

  // Once the lateness has passed the pane is purged and the series expires.
  for (int s = 0; s < 60; ++s) {
    p.clock.Advance(1000);
    p.Send(pub, {"steady"});
    OutputBatch o;
    ASSERT_TRUE(p.op->OnTimer(p.clock.NowMs(), o).ok());
  }
  EXPECT_EQ(p.op->series_expired(), 1u);
  EXPECT_EQ(p.op->series(), 1);
  const std::vector<CheckpointRecord> writes = checkpoint();
  std::string key = CheckpointPrefix("op", "window");
  AppendStr(&key, "short-lived");
  AppendStr(&key, "llama-8b");
  AppendStr(&key, "kv_cache_usage");
  // Its pane's record (the group key and the pane number) is deleted, and nothing of it written.
  size_t deleted = 0;
  for (const CheckpointRecord& w : writes) {
    if (!w.key.starts_with(key)) continue;
    EXPECT_EQ(w.key.size(), key.size() + 8);
    EXPECT_FALSE(w.value.has_value());
    ++deleted;
  }
  EXPECT_EQ(deleted, 1u);

  auto restored = Make("series_ttl: 20s\nallowed_lateness: 1m\nidle_timeout: 0\n");
  ASSERT_TRUE(restored->Open(p.ctx).ok());
  ASSERT_TRUE(restored->Restore(StateCheckpointReader("op", "window", store->get())).ok());
  EXPECT_EQ(restored->series(), 1);
}

WindowSummary Pane(StringId instance, int64_t start_ms, double value) {
  WindowSummary s;
  s.series = {instance, 2, 300};
  s.start_ms = start_ms;
  s.end_ms = start_ms + 10'000;
  s.max_event_time_ms = start_ms + 9'000;
  s.agg.Add(value, start_ms + 9'000);
  s.agg.AddEvent(false);
  return s;
}

// The operators downstream forget idle series too, so an attack's series do not hold their
// tables either: sliding_window once no pane can share a window with the stored ones any more,
// anomaly_detect after series_ttl without points.
TEST(SeriesExpiryTest, SlidingWindowAndDetectorsForgetIdleSeries) {
  MetricsRegistry metrics;
  Interner interner;
  ManualClock clock{kT0};
  StageContext ctx;
  ctx.name = "downstream";
  ctx.interner = &interner;
  ctx.metrics = &metrics;
  ctx.clock = &clock;
  const StringId attacker = interner.Intern("attacker-0");
  const StringId steady = interner.Intern("steady");
  const StringId metric = interner.Intern("kv_cache_usage");

  auto sliding = SlidingWindowOperator::Create(ConfigNode(
      "t.yaml", YAML::Load("windows: [1m]\nallowed_lateness: 0\nseries_ttl: 2m\n"), "options"));
  ASSERT_TRUE(sliding.ok()) << sliding.status().ToString();
  ASSERT_TRUE((*sliding)->Open(ctx).ok());
  auto detect = AnomalyDetectOperator::Create(
      ConfigNode("t.yaml", YAML::Load("metrics: [kv_cache_usage]\nstats: [mean]\nseries_ttl: 2m\n"),
                 "options"));
  ASSERT_TRUE(detect.ok()) << detect.status().ToString();
  ASSERT_TRUE((*detect)->Open(ctx).ok());

  auto feed = [&](const std::vector<WindowSummary>& panes, int64_t watermark) {
    OutputBatch in;
    in.Mutable<kind::PaneSummary>() = panes;
    for (WindowSummary& s : in.Mutable<kind::PaneSummary>()) s.series.metric = metric;
    in.watermark_ms = watermark;
    OutputBatch out;
    EXPECT_TRUE((*sliding)->ProcessResults(in, out).ok());
    OutputBatch alerts;
    EXPECT_TRUE((*detect)->ProcessResults(in, alerts).ok());
    clock.Advance(1000);
    EXPECT_TRUE((*sliding)->OnTimer(clock.NowMs(), out).ok());
    EXPECT_TRUE((*detect)->OnTimer(clock.NowMs(), alerts).ok());
    return out;
  };
  feed({Pane(attacker, kT0, 1), Pane(steady, kT0, 1)}, kT0 + 10'000);
  EXPECT_EQ((*sliding)->series(), 2);
  EXPECT_EQ((*detect)->detectors(), 2u);
  for (int64_t p = 1; p <= 30; ++p) {
    feed({Pane(steady, kT0 + p * 10'000, 1)}, kT0 + (p + 1) * 10'000);
  }
  EXPECT_EQ((*sliding)->series(), 1);
  EXPECT_EQ((*sliding)->series_expired(), 1u);
  EXPECT_EQ((*detect)->detectors(), 1u);
  EXPECT_EQ((*detect)->detectors_expired(), 1u);
  EXPECT_EQ(
      metrics.CounterValue("inferscope_sliding_series_expired_total", {{"stage", "downstream"}}),
      1u);

  // The series comes back: a new series, its first windows are not updates.
  const OutputBatch out = feed({Pane(attacker, kT0 + 310'000, 2)}, kT0 + 320'000);
  EXPECT_EQ((*sliding)->series(), 2);
  bool window = false;
  for (const WindowSummary& s : out.Get<kind::WindowSummary>()) {
    if (s.end_ms - s.start_ms == 60'000) {
      window = true;
      EXPECT_FALSE(s.update);
      EXPECT_EQ(s.agg.count, 1u);
    }
  }
  EXPECT_TRUE(window);
}

}  // namespace
}  // namespace inferscope
