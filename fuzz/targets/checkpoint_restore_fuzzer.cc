// libFuzzer target: Restore of window_aggregate and sliding_window from hostile checkpoint records
// (operators/window_aggregate.cc, operators/sliding_window.cc), the pane-record formats included.
//
// The records are valid ones mutated: once per process each operator is fed a fixed stream (gauge
// and request events over several panes, late ones among them; pane summaries for the sliding
// windows) and checkpointed, and its records are also rewritten in the version-1 forms that
// earlier versions wrote (a group's whole ring; a series' ring inside its record). The input then
// picks the operator and the form, and edits the records: flips, truncates and extends keys and
// values, drops, duplicates under another pane number, and adds records of its own bytes. A fresh
// operator restores them (in key order, as RocksDB gives them). When Restore succeeds the
// operator must go on: more events or panes, the timer, a checkpoint, and Close. Besides the
// sanitizers: a failed Restore is Corruption, Unavailable or InvalidArgument, never Internal.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include "operators/sliding_window.h"
#include "operators/window_aggregate.h"
#include "pipeline/checkpoint.h"
#include "pipeline/clock.h"
#include "pipeline/coding.h"
#include "pipeline/int_math.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"

namespace inferscope {
namespace {

constexpr int64_t kT0 = 1'700'000'000'000;  // aligned to 10 s
constexpr int64_t kPane = 10'000;

using Records = std::map<std::string, std::string>;  // key order, as the store gives them

class MapReader final : public CheckpointReader {
 public:
  explicit MapReader(const Records& records) : records_(records) {}
  Status ForEach(
      const std::function<Status(std::string_view, std::string_view)>& fn) const override {
    for (const auto& [key, value] : records_) INFERSCOPE_RETURN_IF_ERROR(fn(key, value));
    return Status::Ok();
  }

 private:
  const Records& records_;
};

// A collector's records without the stage prefix, as Restore reads them.
Records Collect(const std::function<Status(CheckpointWriter&)>& checkpoint) {
  std::vector<CheckpointRecord> out;
  CheckpointCollector writer("op", "s", &out);
  if (!checkpoint(writer).ok()) std::abort();
  const size_t prefix = CheckpointPrefix("op", "s").size();
  Records records;
  for (CheckpointRecord& r : out) {
    if (r.value) records[r.key.substr(prefix)] = std::move(*r.value);
  }
  return records;
}

// Pane records (key = series key + ordered64 pane) grouped back into version-1 ring records:
// `window` writes varint version, num_metrics, panes, then per pane zigzag pane + the pane
// record's rest; sliding writes version, newest, early, slots, then per pane zigzag pane, max
// time, varint length, Aggregate.
Records AsRingRecords(const Records& records, bool window) {
  struct Ring {
    std::string header;  // window: varint num_metrics; sliding: the series record's newest, early
    std::vector<std::string> panes;
  };
  Records out;
  std::map<std::string, Ring> rings;
  for (const auto& [key, value] : records) {
    const size_t series = StrsLength(key, 3);
    if (key.empty() || series == std::string::npos) {
      out[key] = value;
      continue;
    }
    std::string_view v = value;
    uint64_t version = 0;
    GetVarint(&v, &version);
    if (series == key.size()) {  // a sliding series record: newest, early
      rings[key].header = std::string(v);
      continue;
    }
    Ring& ring = rings[key.substr(0, series)];
    std::string slot;
    PutVarint(&slot, ZigZag(ReadOrdered64(key.substr(series))));
    if (window) {
      uint64_t num_metrics = 0;
      GetVarint(&v, &num_metrics);
      ring.header.clear();
      PutVarint(&ring.header, num_metrics);
      slot += v;
    } else {
      uint64_t max_time = 0;
      GetVarint(&v, &max_time);
      PutVarint(&slot, max_time);
      PutVarint(&slot, v.size());
      slot += v;
    }
    ring.panes.push_back(std::move(slot));
  }
  for (const auto& [key, ring] : rings) {
    std::string value;
    PutVarint(&value, 1);
    value += ring.header;
    PutVarint(&value, ring.panes.size());
    for (const std::string& slot : ring.panes) value += slot;
    out[key] = std::move(value);
  }
  return out;
}

// What an operator is opened with (a fresh string table, metrics and a manual clock at `now_ms`),
// and the ids of the names the fixed input uses.
struct Stage {
  explicit Stage(int64_t now_ms) : clock(now_ms) {
    ctx.name = "s";
    ctx.interner = &interner;
    ctx.metrics = &metrics;
    ctx.clock = &clock;
    const char* names[] = {"node-1", "node-2", "llama", "mistral", "kv_cache_usage", "queue_depth"};
    for (int i = 0; i < 6; ++i) ids[i] = interner.Intern(names[i]);
  }
  Interner interner;
  MetricsRegistry metrics;
  ManualClock clock;
  StageContext ctx;
  StringId ids[6];
};

struct Fixture {
  // Events over 6 panes: requests of every kind of field and gauges, some late.
  static EventBatch Events(const StringId* ids, int64_t start_ms) {
    EventBatch batch;
    for (int i = 0; i < 60; ++i) {
      Event e;
      e.time_ms = start_ms + i * 1'000 - (i % 7 == 3 ? 25'000 : 0);
      e.instance = ids[i % 2];
      e.model = ids[2 + (i / 2) % 2];
      e.publisher = ids[0];
      if (i % 3 == 0) {
        e.kind = EventKind::kGauge;
        e.metric = ids[4 + (i / 3) % 2];
        e.value = 0.01 * i;
      } else {
        e.kind = EventKind::kRequest;
        e.present = kHasTtft | kHasTpot | (i % 4 == 0 ? kHasCost : 0);
        e.ttft_ms = 50 + i;
        e.tpot_ms = 10 + i % 5;
        e.cost_usd = 0.001 * i;
        e.error = i % 11 == 0 ? ErrorKind::kServerError : ErrorKind::kNone;
      }
      batch.events.push_back(e);
    }
    return batch;
  }

  static WindowAggregateOperator::Options WindowOptions() {
    WindowAggregateOperator::Options o;
    o.pane_ms = kPane;
    o.allowed_lateness_ms = 30'000;
    o.max_series = 200;
    return o;
  }
  static SlidingWindowOperator::Options SlidingOptions() {
    SlidingWindowOperator::Options o;
    o.windows_ms = {20'000, 60'000};
    o.pane_ms = kPane;
    o.allowed_lateness_ms = 20'000;
    o.max_series = 50;
    return o;
  }

  // Pane summaries of `ids`' series for panes [first, first + n), some updates.
  static OutputBatch Panes(const StringId* ids, int64_t first, int n) {
    OutputBatch in;
    for (int64_t p = first; p < first + n; ++p) {
      for (int s = 0; s < 2; ++s) {
        WindowSummary w;
        w.series = {ids[s], ids[2], ids[4]};
        w.start_ms = p * kPane;
        w.end_ms = w.start_ms + kPane;
        w.max_event_time_ms = w.start_ms + 5'000;
        w.agg.Add(1.5 * static_cast<double>(p % 7 + s), w.max_event_time_ms);
        w.update = (p + s) % 4 == 0;
        in.Add<kind::PaneSummary>(w);
      }
    }
    in.watermark_ms = (first + n) * kPane;
    return in;
  }

  Fixture() {
    Stage stage(kT0);
    WindowAggregateOperator window(WindowOptions());
    if (!window.Open(stage.ctx).ok()) std::abort();
    OutputBatch out;
    for (int step = 0; step < 3; ++step) {
      stage.clock.Set(kT0 + step * 20'000);
      (void)window.Process(Events(stage.ids, kT0 + step * 20'000), out);
      out.Clear();
    }
    window_records = Collect([&](CheckpointWriter& w) { return window.Checkpoint(w); });
    window_ring_records = AsRingRecords(window_records, true);

    SlidingWindowOperator sliding(SlidingOptions());
    if (!sliding.Open(stage.ctx).ok()) std::abort();
    (void)sliding.ProcessResults(Panes(stage.ids, kT0 / kPane, 9), out);
    sliding_records = Collect([&](CheckpointWriter& w) { return sliding.Checkpoint(w); });
    sliding_ring_records = AsRingRecords(sliding_records, false);
  }

  Records window_records, window_ring_records, sliding_records, sliding_ring_records;
};

void Mutate(FuzzedDataProvider& in, Records* records) {
  const int edits = in.ConsumeIntegralInRange(0, 8);
  for (int i = 0; i < edits && !records->empty(); ++i) {
    auto it = records->begin();
    std::advance(it, in.ConsumeIntegralInRange<size_t>(0, records->size() - 1));
    std::string key = it->first;
    std::string value = it->second;
    switch (in.ConsumeIntegralInRange(0, 7)) {
      case 0:  // flip a value byte
        if (!value.empty())
          value[in.ConsumeIntegralInRange<size_t>(0, value.size() - 1)] ^=
              static_cast<char>(in.ConsumeIntegral<uint8_t>() | 1);
        break;
      case 1:  // flip a key byte
        if (!key.empty())
          key[in.ConsumeIntegralInRange<size_t>(0, key.size() - 1)] ^=
              static_cast<char>(in.ConsumeIntegral<uint8_t>() | 1);
        break;
      case 2:  // truncate the value
        value.resize(in.ConsumeIntegralInRange<size_t>(0, value.size()));
        break;
      case 3:  // truncate the key
        key.resize(in.ConsumeIntegralInRange<size_t>(0, key.size()));
        break;
      case 4:  // append bytes to the value
        value += in.ConsumeBytesAsString(in.ConsumeIntegralInRange<size_t>(0, 16));
        break;
      case 5:  // drop it
        records->erase(it);
        continue;
      case 6: {  // the same record under another pane number (or a be64 suffix added)
        const size_t series = StrsLength(key, 3);
        if (series == std::string::npos) break;
        key.resize(series);
        AppendBigEndian64(&key, in.ConsumeIntegral<uint64_t>());
        (*records)[key] = value;
        continue;
      }
      default:  // a record of the input's own bytes, under a key sharing this one's series
        key = key.substr(0, in.ConsumeIntegralInRange<size_t>(0, key.size())) +
              in.ConsumeBytesAsString(in.ConsumeIntegralInRange<size_t>(0, 12));
        value = in.ConsumeBytesAsString(in.ConsumeIntegralInRange<size_t>(0, 64));
        (*records)[key] = value;
        continue;
    }
    records->erase(it);
    (*records)[key] = value;
  }
}

void CheckFailure(const Status& st) {
  if (st.code() == Status::Code::kInternal) std::abort();
}

}  // namespace
}  // namespace inferscope

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace inferscope;
  static const Fixture fixture;
  FuzzedDataProvider in(data, size);
  const bool window = in.ConsumeBool();
  const bool ring = in.ConsumeBool();
  Records records = window ? (ring ? fixture.window_ring_records : fixture.window_records)
                           : (ring ? fixture.sliding_ring_records : fixture.sliding_records);
  Mutate(in, &records);

  Stage stage(kT0 + 80'000);
  OutputBatch out;
  auto checkpoint = [&](Operator& op) {
    std::vector<CheckpointRecord> writes;
    CheckpointCollector writer("op", "s", &writes);
    CheckFailure(op.Checkpoint(writer));
  };
  if (window) {
    WindowAggregateOperator op(Fixture::WindowOptions());
    if (!op.Open(stage.ctx).ok()) std::abort();
    const Status st = op.Restore(MapReader(records));
    if (!st.ok()) {
      CheckFailure(st);
      return 0;
    }
    (void)op.Process(Fixture::Events(stage.ids, kT0 + 60'000), out);
    out.Clear();
    checkpoint(op);
    stage.clock.Set(kT0 + 200'000);
    (void)op.OnTimer(stage.clock.NowMs(), out);
    out.Clear();
    checkpoint(op);
    (void)op.Close(out);
  } else {
    SlidingWindowOperator op(Fixture::SlidingOptions());
    if (!op.Open(stage.ctx).ok()) std::abort();
    const Status st = op.Restore(MapReader(records));
    if (!st.ok()) {
      CheckFailure(st);
      return 0;
    }
    (void)op.ProcessResults(Fixture::Panes(stage.ids, kT0 / kPane + 5, 8), out);
    out.Clear();
    checkpoint(op);
    (void)op.OnTimer(kT0 + 10'000'000, out);
    checkpoint(op);
    (void)op.Close(out);
  }
  return 0;
}
