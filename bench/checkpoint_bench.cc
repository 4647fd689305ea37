// Checkpoint, restore, memory-per-series and acknowledged-mode benchmark (issue 3, fourth "Done
// when" point). Prints Markdown tables.
//
//   1. Checkpoint cost vs open series (1k, 10k, 100k, 1M): a WindowAggregateOperator with the
//      default options gets one event per series; then the time of Checkpoint() (collecting the
//      records), of StateStore::WriteRecords(sync = true) into a real RocksDB under /tmp, record
//      count and bytes; then an incremental checkpoint after touching 1% of the series; then
//      Restore() into a fresh operator (fresh interner, as after a restart).
//      Two layouts: gauge series (one series per group) and request groups (8 series per group).
//   2. Memory per active series: RSS before and after loading N series (several 10 s panes, so
//      every ring slot and its sketch bins are populated), in a forked child so each figure starts
//      from a clean heap. Broken down into the big arrays (mmapped) and small heap blocks (mostly
//      the DDSketch bins).
//   3. Acknowledged vs fire-and-forget throughput in the same run: an in-process engine
//      (zmq source -> window_aggregate -> rocksdb_state, checkpoints every 1 s), phase A a PULL
//      source fed by client::Publisher, phase B a `mode: router` source fed by
//      client::AckedPublisher until everything is acknowledged. Median of R runs each.
//
// Usage: checkpoint_bench [--series-max N] [--quick] [--events M] [--runs R] [--skip-engine]
//                         [--skip-memory] [--skip-checkpoint]

#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_child.h"
#include "cli/engine.h"
#include "clients/cpp/acked_publisher.h"
#include "clients/cpp/publisher.h"
#include "operators/window_aggregate.h"
#include "pipeline/checkpoint.h"
#include "pipeline/clock.h"
#include "pipeline/interner.h"
#include "pipeline/topology.h"
#include "state/checkpoint_store.h"
#include "state/state_store.h"

namespace inferscope {
namespace {

using SteadyClock = std::chrono::steady_clock;

double Seconds(SteadyClock::time_point a, SteadyClock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct Args {
  int64_t series_max = 1'000'000;
  bool quick = false;
  uint64_t events = 0;  // engine phases; 0 = default for the mode
  int runs = 3;
  bool engine = true;
  bool memory = true;
  bool checkpoint = true;
};

std::string TempRoot() {
  static const std::string root =
      (std::filesystem::temp_directory_path() / ("inferscope-ckbench-" + std::to_string(getpid())))
          .string();
  return root;
}

int64_t RssBytes() {
  std::ifstream f("/proc/self/statm");
  int64_t size = 0, resident = 0;
  f >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

std::string CpuModel() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(colon + 2);
    }
  }
  return "unknown";
}

// Deterministic pseudo-random in [0, 1).
double Unit(uint64_t x) {
  x ^= x >> 33;
  x *= 0xFF51AFD7ED558CCDULL;
  x ^= x >> 33;
  x *= 0xC4CEB9FE1A85EC53ULL;
  x ^= x >> 33;
  return static_cast<double>(x >> 11) * (1.0 / 9007199254740992.0);
}

// ---------------------------------------------------------------------------------------------
// Series layouts fed straight into the operator.

enum class Layout { kGauge, kRequest };
const char* LayoutName(Layout l) { return l == Layout::kGauge ? "gauge" : "request"; }

// Names for `series` series: gauges are (instance, model, metric) with 100 metrics x 4 models per
// instance; request groups are (instance, model) with 4 models per instance, 8 series each.
class SeriesSet {
 public:
  SeriesSet(Layout layout, int64_t series, Interner& interner) : layout_(layout) {
    groups_ = layout == Layout::kGauge ? series : series / kNumWellKnownIds;
    const int64_t per_instance = layout == Layout::kGauge ? 400 : 4;
    const int64_t instances = (groups_ + per_instance - 1) / per_instance;
    for (int64_t i = 0; i < instances; ++i)
      instance_.push_back(interner.Intern("node-" + std::to_string(i)));
    for (int m = 0; m < 4; ++m) model_.push_back(interner.Intern("model-" + std::to_string(m)));
    if (layout == Layout::kGauge) {
      for (int m = 0; m < 100; ++m)
        metric_.push_back(interner.Intern("gauge_" + std::to_string(m)));
    }
    publisher_ = interner.Intern("bench-publisher");
  }
  int64_t groups() const { return groups_; }
  int64_t series() const {
    return layout_ == Layout::kGauge ? groups_ : groups_ * kNumWellKnownIds;
  }
  StringId publisher() const { return publisher_; }

  // The event of group `g` at `time_ms`; `salt` varies the values.
  Event Make(int64_t g, int64_t time_ms, uint64_t salt) const {
    Event e;
    e.time_ms = time_ms;
    e.publisher = publisher_;
    const double u = Unit(static_cast<uint64_t>(g) * 1'000'003 + salt);
    if (layout_ == Layout::kGauge) {
      e.kind = EventKind::kGauge;
      e.metric = metric_[g % 100];
      e.model = model_[(g / 100) % 4];
      e.instance = instance_[g / 400];
      e.value = 0.3 + 0.4 * u;  // a utilisation-like gauge
      return e;
    }
    e.kind = EventKind::kRequest;
    e.model = model_[g % 4];
    e.instance = instance_[g / 4];
    e.present = kHasTtft | kHasTpot | kHasE2e | kHasPromptTokens | kHasOutputTokens |
                kHasCachedTokens | kHasCost | kHasQuality;
    const double v = Unit(salt * 31 + static_cast<uint64_t>(g));
    e.ttft_ms = 150 * std::exp(0.6 * (u - 0.5) * 3);
    e.tpot_ms = 25 * std::exp(0.3 * (v - 0.5) * 3);
    e.output_tokens = static_cast<uint32_t>(50 + 500 * v);
    e.prompt_tokens = static_cast<uint32_t>(100 + 2000 * u);
    e.cached_tokens = e.prompt_tokens / 2;
    e.e2e_ms = e.ttft_ms + e.tpot_ms * e.output_tokens;
    e.cost_usd = 1e-4 * (e.prompt_tokens + e.output_tokens);
    e.quality = 0.5 + 0.5 * v;
    return e;
  }

 private:
  Layout layout_;
  int64_t groups_ = 0;
  std::vector<StringId> instance_, model_, metric_;
  StringId publisher_ = 0;
};

// Feeds events in batches of 4096; counts dead letters.
class Feeder {
 public:
  Feeder(WindowAggregateOperator& op, StringId publisher) : op_(op) {
    batch_.publisher = publisher;
    batch_.events.reserve(kBatch);
  }
  ~Feeder() { Flush(); }
  void Add(const Event& e) {
    batch_.events.push_back(e);
    if (batch_.events.size() == kBatch) Flush();
  }
  void Flush() {
    if (batch_.events.empty()) return;
    OutputBatch out;  // dropped at once: summaries are not what is measured
    Status st = op_.Process(batch_, out);
    if (!st.ok()) {
      std::fprintf(stderr, "Process: %s\n", st.ToString().c_str());
      std::exit(1);
    }
    dead_letters_ += out.Get<kind::DeadLetter>().size();
    batch_.events.clear();
  }
  uint64_t dead_letters() const { return dead_letters_; }

 private:
  static constexpr size_t kBatch = 4096;
  WindowAggregateOperator& op_;
  EventBatch batch_;
  uint64_t dead_letters_ = 0;
};

// An aligned pane start comfortably in the past.
int64_t BaseTimeMs() {
  const int64_t now = client::NowMs() - 3'600'000;
  return now - now % 10'000;
}

// Default options but for max_series_per_publisher: the benchmark feeds every series from one
// publisher, whose default share (half of max_series) would leave half of 1M series untracked.
std::unique_ptr<WindowAggregateOperator> OpenOperator(Interner& interner, const Clock& clock) {
  WindowAggregateOperator::Options options;
  options.max_series_per_publisher = options.max_series;
  auto op = std::make_unique<WindowAggregateOperator>(options);
  StageContext ctx;
  ctx.name = "windows";
  ctx.interner = &interner;
  ctx.clock = &clock;
  Status st = op->Open(ctx);
  if (!st.ok()) {
    std::fprintf(stderr, "Open: %s\n", st.ToString().c_str());
    std::exit(1);
  }
  return op;
}

// The ring size window_aggregate.cc computes from the options (slots per group).
int64_t RingSlots(const WindowAggregateOperator::Options& o) {
  return (o.out_of_orderness_ms + o.allowed_lateness_ms + o.max_publisher_lag_ms) / o.pane_ms + 2;
}

// ---------------------------------------------------------------------------------------------
// 1. Checkpoint cost and restore.

struct CheckpointRow {
  Layout layout;
  int64_t series = 0, groups = 0;
  double collect_s = 0, write_s = 0;
  size_t records = 0, bytes = 0;
  double incr_collect_s = 0, incr_write_s = 0;
  size_t incr_records = 0, incr_bytes = 0;
  double restore_s = 0;
  int64_t restored_series = 0;
};

size_t RecordBytes(const std::vector<CheckpointRecord>& recs) {
  size_t bytes = 0;
  for (const CheckpointRecord& w : recs) bytes += w.key.size() + (w.value ? w.value->size() : 0);
  return bytes;
}

CheckpointRow RunCheckpoint(Layout layout, int64_t series) {
  CheckpointRow row;
  row.layout = layout;
  const int64_t base = BaseTimeMs() + 100;
  ManualClock clock(base + 5'000);
  Interner interner;
  SeriesSet set(layout, series, interner);
  row.series = set.series();
  row.groups = set.groups();
  auto op = OpenOperator(interner, clock);
  {
    Feeder feed(*op, set.publisher());
    for (int64_t g = 0; g < set.groups(); ++g) feed.Add(set.Make(g, base + g % 1000, 1));
    feed.Flush();
    if (feed.dead_letters() != 0 || op->series() != row.series) {
      std::fprintf(stderr, "load: %ld series tracked of %ld, %lu dead letters\n",
                   static_cast<long>(op->series()), static_cast<long>(row.series),
                   static_cast<unsigned long>(feed.dead_letters()));
    }
  }
  const std::string dir = TempRoot() + "/ck-" + LayoutName(layout) + "-" + std::to_string(series);
  std::filesystem::remove_all(dir);
  StateStoreOptions so;
  so.path = dir;
  Result<std::unique_ptr<StateStore>> store = StateStore::Open(so, nullptr);
  if (!store.ok()) {
    std::fprintf(stderr, "StateStore::Open: %s\n", store.status().ToString().c_str());
    std::exit(1);
  }
  auto checkpoint = [&](double* collect_s, double* write_s, size_t* records, size_t* bytes) {
    std::vector<CheckpointRecord> recs;
    CheckpointCollector writer("op", "windows", &recs);
    auto t0 = SteadyClock::now();
    Status st = op->Checkpoint(writer);
    auto t1 = SteadyClock::now();
    if (st.ok()) st = WriteCheckpointRecords(**store, recs, /*sync=*/true);
    auto t2 = SteadyClock::now();
    if (!st.ok()) {
      std::fprintf(stderr, "checkpoint: %s\n", st.ToString().c_str());
      std::exit(1);
    }
    *collect_s = Seconds(t0, t1);
    *write_s = Seconds(t1, t2);
    *records = recs.size();
    *bytes = RecordBytes(recs);
  };
  checkpoint(&row.collect_s, &row.write_s, &row.records, &row.bytes);
  {
    // Touch 1% of the series (groups), in the same pane.
    Feeder feed(*op, set.publisher());
    for (int64_t g = 0; g < set.groups(); g += 100)
      feed.Add(set.Make(g, base + 1000 + g % 1000, 2));
  }
  checkpoint(&row.incr_collect_s, &row.incr_write_s, &row.incr_records, &row.incr_bytes);
  op.reset();
  {
    // Restore into a fresh operator with a fresh interner, as a restarted process would.
    Interner fresh;
    auto restored = OpenOperator(fresh, clock);
    StateCheckpointReader reader("op", "windows", store->get());
    auto t0 = SteadyClock::now();
    Status st = restored->Restore(reader);
    row.restore_s = Seconds(t0, SteadyClock::now());
    if (!st.ok()) {
      std::fprintf(stderr, "Restore: %s\n", st.ToString().c_str());
      std::exit(1);
    }
    row.restored_series = restored->series();
  }
  store->reset();
  std::filesystem::remove_all(dir);
  return row;
}

std::string Count(int64_t n) {
  if (n >= 1'000'000 && n % 1'000'000 == 0) return std::to_string(n / 1'000'000) + "M";
  if (n >= 1'000 && n % 1'000 == 0) return std::to_string(n / 1'000) + "k";
  return std::to_string(n);
}

void PrintCheckpointTable(const std::vector<CheckpointRow>& rows) {
  std::printf(
      "\n### 1. Checkpoint cost vs open series (default window_aggregate options but "
      "max_series_per_publisher, RocksDB, "
      "sync)\n\n");
  std::printf(
      "Every series has one event in the open pane; the incremental checkpoint follows one event "
      "in "
      "1%% of the groups. Restore: a fresh operator and interner reading the store.\n\n");
  std::printf(
      "| layout | series | groups | full: collect ms | full: write ms (sync) | records | MB | "
      "B/series | incr: collect ms | incr: write ms | incr records | incr KB | restore ms | "
      "restored series |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const CheckpointRow& r : rows) {
    std::printf(
        "| %s | %s | %ld | %.1f | %.1f | %zu | %.1f | %.0f | %.2f | %.2f | %zu | %.1f | %.1f | %ld "
        "|\n",
        LayoutName(r.layout), Count(r.series).c_str(), static_cast<long>(r.groups),
        r.collect_s * 1e3, r.write_s * 1e3, r.records, static_cast<double>(r.bytes) / 1e6,
        static_cast<double>(r.bytes) / static_cast<double>(r.series), r.incr_collect_s * 1e3,
        r.incr_write_s * 1e3, r.incr_records, static_cast<double>(r.incr_bytes) / 1e3,
        r.restore_s * 1e3, static_cast<long>(r.restored_series));
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Memory per active series.

struct MemoryResult {
  int64_t series = 0, groups = 0;
  int64_t events = 0;
  int64_t rss_before = 0, rss_after = 0, rss_after_trim = 0;
  int64_t arena_delta = 0;  // small heap blocks (mallinfo2 uordblks)
  int64_t mmap_delta = 0;   // big blocks (mallinfo2 hblkhd): the operator's arrays, by capacity
  int64_t open_panes = 0;
  double load_s = 0;
};

// Loads `series` series with `per_pane` events per series per 10 s pane over `panes` panes.
MemoryResult MeasureMemory(Layout layout, int64_t series, int per_pane, int panes) {
  MemoryResult r;
  const int64_t base = BaseTimeMs();
  ManualClock clock(base);
  Interner interner;
  SeriesSet set(layout, series, interner);
  r.series = set.series();
  r.groups = set.groups();
  malloc_trim(0);
  r.rss_before = RssBytes();
  const struct mallinfo2 m0 = mallinfo2();
  auto t0 = SteadyClock::now();
  auto op = OpenOperator(interner, clock);
  {
    Feeder feed(*op, set.publisher());
    const int64_t step = 10'000 / per_pane;
    for (int p = 0; p < panes; ++p) {
      for (int j = 0; j < per_pane; ++j) {
        const int64_t t = base + p * 10'000 + j * step;
        clock.Set(t + 2'000);
        for (int64_t g = 0; g < set.groups(); ++g) {
          feed.Add(
              set.Make(g, t + g * step / set.groups(), static_cast<uint64_t>(p * per_pane + j)));
          ++r.events;
        }
      }
    }
    feed.Flush();
    if (feed.dead_letters() != 0)
      std::fprintf(stderr, "memory: %lu dead letters\n",
                   static_cast<unsigned long>(feed.dead_letters()));
  }
  r.load_s = Seconds(t0, SteadyClock::now());
  r.rss_after = RssBytes();
  const struct mallinfo2 m1 = mallinfo2();
  r.arena_delta = static_cast<int64_t>(m1.uordblks) - static_cast<int64_t>(m0.uordblks);
  r.mmap_delta = static_cast<int64_t>(m1.hblkhd) - static_cast<int64_t>(m0.hblkhd);
  malloc_trim(0);
  r.rss_after_trim = RssBytes();
  r.open_panes = op->open_panes();
  if (op->series() != r.series)
    std::fprintf(stderr, "memory: %ld series tracked\n", static_cast<long>(op->series()));
  return r;
}

// Runs MeasureMemory in a child process (a clean heap for every figure).
MemoryResult MeasureMemoryForked(Layout layout, int64_t series, int per_pane, int panes) {
  int fds[2];
  if (pipe(fds) != 0) std::exit(1);
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    MemoryResult r = MeasureMemory(layout, series, per_pane, panes);
    ssize_t w = write(fds[1], &r, sizeof r);
    _exit(w == sizeof r ? 0 : 1);
  }
  close(fds[1]);
  MemoryResult r;
  ssize_t n = read(fds[0], &r, sizeof r);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (n != sizeof r) {
    std::fprintf(stderr, "memory child failed (status %d)\n", status);
    std::exit(1);
  }
  return r;
}

// Heap bytes of one DDSketch holding `values` values (measured with mallinfo2).
int64_t SketchHeapBytes(int values, bool request_like) {
  Aggregate agg;  // on the stack: the heap delta is the sketch's bins only
  const struct mallinfo2 m0 = mallinfo2();
  for (int i = 0; i < values; ++i) {
    const double u = Unit(static_cast<uint64_t>(i) * 7 + 3);
    agg.Add(request_like ? 150 * std::exp(0.6 * (u - 0.5) * 3) : 0.3 + 0.4 * u, 1000 + i);
  }
  const struct mallinfo2 m1 = mallinfo2();
  return static_cast<int64_t>(m1.uordblks) - static_cast<int64_t>(m0.uordblks);
}

void RunMemory(const Args& args) {
  const int64_t n = args.series_max;
  const int panes = 5;
  struct Case {
    Layout layout;
    int per_pane;
    const char* load;
  };
  std::vector<Case> cases = {{Layout::kGauge, 1, "1 event / 10 s pane"},
                             {Layout::kGauge, 10, "1 event / s"},
                             {Layout::kRequest, 10, "1 request / s per group"}};
  if (args.quick) cases.resize(2);
  std::printf(
      "\n### 2. Memory per active series (%s series, default options but max_series_per_publisher, "
      "%d panes of 10 s loaded)\n\n",
      Count(n).c_str(), panes);
  const WindowAggregateOperator::Options defaults;
  const int64_t ring = RingSlots(defaults);
  std::printf(
      "sizeof(Aggregate) = %zu B, sizeof(DDSketch) = %zu B, sizeof(Event) = %zu B; ring slots per "
      "group = "
      "(out_of_orderness %ld + allowed_lateness %ld + max_publisher_lag %ld) / pane %ld + 2 = %ld; "
      "so %ld B of Aggregate per gauge series, %ld B per request group (%ld B per series).\n",
      sizeof(Aggregate), sizeof(DDSketch), sizeof(Event),
      static_cast<long>(defaults.out_of_orderness_ms),
      static_cast<long>(defaults.allowed_lateness_ms),
      static_cast<long>(defaults.max_publisher_lag_ms), static_cast<long>(defaults.pane_ms),
      static_cast<long>(ring), static_cast<long>(ring * sizeof(Aggregate)),
      static_cast<long>(ring * kNumWellKnownIds * sizeof(Aggregate)),
      static_cast<long>(ring * sizeof(Aggregate)));
  std::printf(
      "DDSketch bin heap, measured on one Aggregate: 1 gauge value %ld B, 10 gauge values %ld B, "
      "10 latency values %ld B.\n\n",
      static_cast<long>(SketchHeapBytes(1, false)), static_cast<long>(SketchHeapBytes(10, false)),
      static_cast<long>(SketchHeapBytes(10, true)));
  std::printf(
      "| layout | load | series | groups | events | load s | open panes | RSS delta MiB | "
      "RSS/series B | after malloc_trim B/series | big arrays (mmap) B/series | small blocks "
      "(heap) B/series | live heap B/series | RSS / live heap | RSS vs 1 KiB target |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Case& c : cases) {
    MemoryResult r = MeasureMemoryForked(c.layout, n, c.per_pane, panes);
    const double s = static_cast<double>(r.series);
    const double per = static_cast<double>(r.rss_after - r.rss_before) / s;
    const double live = static_cast<double>(r.mmap_delta + r.arena_delta) / s;
    std::printf(
        "| %s | %s | %s | %ld | %ld | %.1f | %ld | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | "
        "%.2fx | %.2fx (%s) |\n",
        LayoutName(c.layout), c.load, Count(r.series).c_str(), static_cast<long>(r.groups),
        static_cast<long>(r.events), r.load_s, static_cast<long>(r.open_panes),
        static_cast<double>(r.rss_after - r.rss_before) / (1 << 20), per,
        static_cast<double>(r.rss_after_trim - r.rss_before) / s,
        static_cast<double>(r.mmap_delta) / s, static_cast<double>(r.arena_delta) / s, live,
        per / live, per / 1024.0, per <= 1024.0 ? "met" : "missed");
    std::fflush(stdout);
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Acknowledged vs fire-and-forget throughput.

constexpr int kEngineGroups = 2000;  // (instance, model) groups x 5 request metrics = 10,000 series

std::string EngineTopology(bool router) {
  std::string yaml = R"(name: ckbench
state:
  path: ./unused
engine:
  queue_capacity: 64
  batch_pool: 160
  sink_queue_capacity: 64
  checkpoint_interval: 1s
sources:
  - name: ingest
    type: zmq
    options:
      endpoint: tcp://127.0.0.1:*
      mode: )";
  yaml += router ? "router" : "pull";
  yaml += R"(
      rcvhwm: 1000
      on_full: block
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options:
      pane: 10s
      out_of_orderness: 2s
      idle_timeout: 5s
      flush_on_close: true
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
)";
  return yaml;
}

struct EngineRun {
  double seconds = 0;      // publish start -> processed (A) / all acknowledged (B)
  double processed_s = 0;  // publish start -> all events processed by the operator
  uint64_t events = 0;
  uint64_t checkpoints = 0;
  uint64_t resends = 0;
  bool ok = true;
  double rate() const { return static_cast<double>(events) / seconds; }
};

// Request outcomes over kEngineGroups groups, event time spread over 60 s ending 2 min ago.
class RequestStream {
 public:
  explicit RequestStream(uint64_t events) : events_(events), base_(client::NowMs() - 180'000) {
    for (int g = 0; g < kEngineGroups; ++g) {
      instances_.push_back("bench-node-" + std::to_string(g / 4));
      models_.push_back("model-" + std::to_string(g % 4));
    }
  }
  client::RequestOutcome Get(uint64_t i) const {
    client::RequestOutcome r;
    const size_t g = (i * 7919) % instances_.size();
    const double u = Unit(i);
    r.instance = instances_[g];
    r.model = models_[g];
    r.time_ms = base_ + static_cast<int64_t>(i * 60'000 / events_);
    r.ttft_ms = 150 * std::exp(0.6 * (u - 0.5) * 3);
    r.tpot_ms = 25 + 10 * u;
    r.prompt_tokens = static_cast<uint32_t>(100 + 1000 * u);
    r.output_tokens = static_cast<uint32_t>(50 + 400 * Unit(i + 17));
    r.e2e_ms = *r.ttft_ms + *r.tpot_ms * *r.output_tokens;
    return r;
  }

 private:
  uint64_t events_;
  int64_t base_;
  std::vector<std::string> instances_, models_;
};

EngineRun RunEnginePhase(bool acked, uint64_t events, int run) {
  EngineRun result;
  result.events = events;
  Result<TopologySpec> spec = ParseTopology(EngineTopology(acked), "<ckbench>");
  if (!spec.ok()) {
    std::fprintf(stderr, "%s\n", spec.status().ToString().c_str());
    std::exit(2);
  }
  const std::string state =
      TempRoot() + "/engine-" + (acked ? "acked-" : "ff-") + std::to_string(run);
  std::filesystem::remove_all(state);
  std::unique_ptr<Engine> built = bench::StartEngine(*spec, state);
  Engine& engine = *built;
  const std::string endpoint = engine.Endpoint("ingest");
  RequestStream stream(events);

  std::atomic<bool> publisher_done{false};
  double acked_at = 0;
  const auto t0 = SteadyClock::now();
  std::thread publisher([&] {
    if (!acked) {
      client::PublisherOptions o;
      o.endpoint = endpoint;
      o.publisher_id = "ckbench-ff-" + std::to_string(run);
      o.send_timeout_ms = -1;
      client::Publisher pub(o);
      std::string error;
      if (!pub.Connect(&error)) {
        std::fprintf(stderr, "publisher: %s\n", error.c_str());
        std::exit(2);
      }
      for (uint64_t i = 0; i < events; ++i) pub.Request(stream.Get(i));
      pub.Flush();
      if (pub.events_dropped() != 0) {
        std::fprintf(stderr, "publisher dropped %lu events\n",
                     static_cast<unsigned long>(pub.events_dropped()));
      }
      // Keep the socket open until the engine has everything (Close lingers anyway).
      while (engine.metrics().CounterValue("inferscope_window_events_total") < events) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      pub.Close();
    } else {
      client::AckedPublisherOptions o;
      o.endpoint = endpoint;
      o.publisher_id = "ckbench-acked-" + std::to_string(run);
      o.max_unacked = 8192;
      client::AckedPublisher pub(o);
      std::string error;
      if (!pub.Connect(&error)) {
        std::fprintf(stderr, "acked publisher: %s\n", error.c_str());
        std::exit(2);
      }
      for (uint64_t i = 0; i < events; ++i) pub.Request(stream.Get(i));
      if (!pub.WaitAcked(60'000)) {
        std::fprintf(stderr, "acked publisher: not all acknowledged (%zu unacked)\n",
                     pub.unacked());
        result.ok = false;
      }
      acked_at = Seconds(t0, SteadyClock::now());
      result.resends = pub.resends();
      pub.Close();
    }
    publisher_done = true;
  });
  // Watch the operator's input counter.
  auto last_progress = SteadyClock::now();
  uint64_t seen = 0;
  while (true) {
    const uint64_t n = engine.metrics().CounterValue("inferscope_window_events_total");
    if (n >= events) break;
    if (n != seen) {
      seen = n;
      last_progress = SteadyClock::now();
    } else if (Seconds(last_progress, SteadyClock::now()) > 20) {
      std::fprintf(stderr, "engine stalled at %lu of %lu events\n", static_cast<unsigned long>(n),
                   static_cast<unsigned long>(events));
      result.ok = false;
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  result.processed_s = Seconds(t0, SteadyClock::now());
  publisher.join();
  result.seconds = acked ? acked_at : result.processed_s;
  result.checkpoints = engine.metrics().CounterValue("inferscope_checkpoints_total");
  const uint64_t rejected = engine.metrics().CounterValue("inferscope_source_rejected_total");
  const uint64_t late = engine.metrics().CounterValue("inferscope_window_late_events_total");
  if (rejected + late > 0) {
    std::fprintf(stderr, "warning: %lu rejected, %lu late events\n",
                 static_cast<unsigned long>(rejected), static_cast<unsigned long>(late));
  }
  engine.Stop();
  built.reset();
  std::filesystem::remove_all(state);
  return result;
}

template <typename T, typename F>
T MedianBy(std::vector<T> v, F key) {
  std::sort(v.begin(), v.end(), [&](const T& a, const T& b) { return key(a) < key(b); });
  return v[v.size() / 2];
}

void RunEngine(const Args& args) {
  const uint64_t events = args.events != 0 ? args.events : (args.quick ? 500'000 : 3'000'000);
  const int runs = args.quick ? 1 : args.runs;
  std::printf(
      "\n### 3. Acknowledged vs fire-and-forget throughput (in-process engine, same run)\n\n");
  std::printf(
      "zmq source -> window_aggregate (default options) -> rocksdb_state; checkpoint_interval 1 s. "
      "%lu request events per phase over %d (instance, model) groups x 5 metrics = %d series, "
      "256 events/message; acknowledged: AckedPublisher max_unacked 8192 messages, time until "
      "WaitAcked returns. Median of %d runs (phases interleaved).\n\n",
      static_cast<unsigned long>(events), kEngineGroups, kEngineGroups * 5, runs);
  std::vector<EngineRun> ff, acked;
  for (int run = 0; run < runs; ++run) {
    ff.push_back(RunEnginePhase(false, events, run));
    acked.push_back(RunEnginePhase(true, events, run));
  }
  auto rate = [](const EngineRun& r) { return r.rate(); };
  const EngineRun a = MedianBy(ff, rate);
  const EngineRun b = MedianBy(acked, rate);
  std::printf(
      "| mode | source | events/s (median) | seconds | runs (events/s) | checkpoints | resends | "
      "vs fire-and-forget |\n");
  std::printf("|---|---|---:|---:|---|---:|---:|---:|\n");
  auto runs_list = [](const std::vector<EngineRun>& v) {
    std::string s;
    for (const EngineRun& r : v) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%s%.0f", s.empty() ? "" : ", ", r.rate());
      s += buf;
    }
    return s;
  };
  std::printf(
      "| fire-and-forget | PULL + Publisher (until processed) | %.0f | %.2f | %s | %lu | - | 1.00x "
      "|\n",
      a.rate(), a.seconds, runs_list(ff).c_str(), static_cast<unsigned long>(a.checkpoints));
  std::printf(
      "| acknowledged | router + AckedPublisher (until all acked) | %.0f | %.2f | %s | %lu | %lu | "
      "%.2fx |\n",
      b.rate(), b.seconds, runs_list(acked).c_str(), static_cast<unsigned long>(b.checkpoints),
      static_cast<unsigned long>(b.resends), b.rate() / a.rate());
  std::printf(
      "\nAcknowledged run (median): all events processed after %.2f s (%.0f events/s, %.2fx), "
      "all acknowledged after %.2f s.\n",
      b.processed_s, static_cast<double>(b.events) / b.processed_s,
      static_cast<double>(b.events) / b.processed_s / a.rate(), b.seconds);
  bool ok = true;
  for (const auto* v : {&ff, &acked}) {
    for (const EngineRun& r : *v) ok = ok && r.ok;
  }
  if (!ok) std::printf("WARNING: a run did not complete (see stderr).\n");
}

int Main(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", flag.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (flag == "--series-max")
      args.series_max = std::stoll(value());
    else if (flag == "--quick")
      args.quick = true;
    else if (flag == "--events")
      args.events = std::stoull(value());
    else if (flag == "--runs")
      args.runs = std::max(1, std::stoi(value()));
    else if (flag == "--skip-engine")
      args.engine = false;
    else if (flag == "--skip-memory")
      args.memory = false;
    else if (flag == "--skip-checkpoint")
      args.checkpoint = false;
    else {
      std::fprintf(stderr,
                   "usage: checkpoint_bench [--series-max N] [--quick] [--events M] [--runs R] "
                   "[--skip-engine] [--skip-memory] [--skip-checkpoint]\n");
      return 2;
    }
  }
  if (args.quick) args.series_max = std::min<int64_t>(args.series_max, 10'000);
  args.series_max = std::clamp<int64_t>(args.series_max, 1'000, 1'000'000);  // default max_series
  std::filesystem::remove_all(TempRoot());
  std::filesystem::create_directories(TempRoot());

  std::printf(
      "## checkpoint_bench\n\nMachine: %u cores (nproc), %s. Temp dir %s (deleted at the end).\n",
      std::thread::hardware_concurrency(), CpuModel().c_str(), TempRoot().c_str());
  std::fflush(stdout);
  // Memory first, in forked children, so that nothing measured before has grown the heap.
  if (args.memory) RunMemory(args);
  std::fflush(stdout);
  if (args.checkpoint) {
    std::vector<CheckpointRow> rows;
    for (int64_t n : {1'000LL, 10'000LL, 100'000LL, 1'000'000LL}) {
      if (n > args.series_max) break;
      rows.push_back(RunCheckpoint(Layout::kGauge, n));
      rows.push_back(RunCheckpoint(Layout::kRequest, n));
    }
    PrintCheckpointTable(rows);
  }
  std::fflush(stdout);
  if (args.engine) RunEngine(args);
  std::filesystem::remove_all(TempRoot());
  return 0;
}

}  // namespace
}  // namespace inferscope

int main(int argc, char** argv) { return inferscope::Main(argc, argv); }
