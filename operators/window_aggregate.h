#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "pipeline/config.h"
#include "pipeline/metrics.h"
#include "pipeline/operator.h"
#include "pipeline/status.h"
#include "values/aggregate.h"

namespace inferscope {

// WindowAggregateOperator folds events into fixed event-time panes per series and emits one
// WindowSummary per series and pane when the watermark passes the pane's end.
//
// A series is (instance, model, metric). A request event feeds the well-known request metrics of
// its (instance, model) (ttft_ms ... quality); a gauge event feeds (instance, model, metric). Panes
// are aligned to the epoch: [k * pane, (k + 1) * pane).
//
// Watermarks: each publisher has its own (its largest accepted event time minus
// `out_of_orderness`); the operator's watermark is the smallest of them over the publishers that
// had an event accepted within `idle_timeout` (an idle publisher stops holding it back), never
// decreasing. It advances after each batch. When every publisher has been idle for
// `idle_timeout` of processing time, OnTimer advances it as if event time kept pace with the
// clock, so the last panes of a stream that stops still close.
//
// Horizon and future outliers: events are applied up to the horizon, watermark +
// `out_of_orderness` + `max_publisher_lag` (this bound keeps the pane ring finite). An event
// beyond it moves the watermark up to its time minus `out_of_orderness + max_publisher_lag` only
// when the other publishers support it: when other publishers are active, it must be within
// `max_publisher_lag` of the upper median of their largest event times and the processing clock
// (so one publisher, or any minority, cannot drag the watermark past the others, and a publisher
// on time by the clock is not held back by slow ones); when none is, within
// `max_publisher_lag` of its own publisher's progress or of the processing clock (+
// `out_of_orderness`), or its publisher has sent nothing but such events for `idle_timeout`
// (a publisher whose clock jumped for good re-anchors). Any other event is a future outlier: not
// applied, not counted as progress or activity, emitted as a dead letter (reason
// "future_outlier") and counted per publisher. A publisher lagging more than
// `max_publisher_lag` behind a publisher so supported has its events treated as late.
//
// Lateness: a pane fires (its summary is emitted) when the watermark passes its end, and stays in
// memory for `allowed_lateness` more. An event for a fired pane within that time updates it, and
// the pane is emitted again with `update = true` (once per batch); the store replaces the earlier
// result. An event beyond it is not applied: it goes to `OutputBatch::dead_letters` (reason
// "too_late") and is counted per publisher.
//
// Lifecycle: construct (or Create from options) → Open → Process / OnTimer → Close.
// Concurrency: none; the engine's operator thread makes every call.
// Series lifetime: a series (a request (instance, model) counts as kNumWellKnownIds series) is
// tracked from its first event. One with no open pane whose last event is more than `series_ttl`
// of event time behind the watermark expires: it is forgotten (its checkpoint record deleted, its
// names released to the Interner so they can be reclaimed) and counted
// (inferscope_window_series_expired_total); a later event starts it afresh. Event time, not
// processing time: expiry then follows the data (a replay or a catch-up after downtime expires
// nothing it still feeds), and when input stops the watermark advances with the clock after
// idle_timeout, so idle series expire all the same.
//
// Limitations: at most `max_series` series are tracked, and at most `max_series_per_publisher`
// created by one publisher (the publisher of a series' first event owns it until it expires), so
// one publisher cannot take the whole table. Events for further series are counted in
// inferscope_window_rejected_events_total{reason="series_limit"} and per publisher in
// inferscope_window_rejected_by_publisher_total{reason="series_limit",publisher}. Events with
// times beyond ±2^53 ms are rejected with reason="bad_time", gauges without a metric id with
// reason="no_metric", events whose names were reclaimed while they were queued (possible only
// for an event queued for longer than two Interner sweep intervals) with reason="stale_name".
// A gauge whose metric is a request metric (ttft_ms ...) joins that series.
//
// Early summaries (option `early_slice`, off by default): the open pane is also emitted as it
// fills, for rules that judge it before it closes (threshold_rules `early: true`). The early mark
// is the watermark without the out-of-orderness allowance (the smallest largest event time of the
// active publishers). Each time it crosses a slice boundary b (a multiple of early_slice), every
// series of the still open pane that ends at or after b and that received events since its last
// early summary is emitted as kind::EarlySummary: [pane start, pane end) with the data so far and
// observed_until_ms = b. Nothing more is kept per series than a flag in the pane slot; the cost is
// one summary per active series and slice. The final pane is emitted as always when the watermark
// passes its end; events arriving out of order after an early summary are in it.
class WindowAggregateOperator final : public Operator {
 public:
  static constexpr std::string_view kName = "window_aggregate";
  static constexpr std::string_view kDescription =
      "Per-series event-time pane aggregates (count, moments, min/max, last, error ratio, "
      "DDSketch quantiles), emitted when the watermark passes each pane";

  struct Options {
    // Pane length. Default 10 s; at least 100 ms.
    int64_t pane_ms = 10'000;
    // How far behind the largest event time seen the watermark trails. Default 2 s; >= 0.
    int64_t out_of_orderness_ms = 2'000;
    // Processing time without input from a publisher after which it stops holding the watermark
    // back; without any input, after which the watermark advances with the clock. Default 5 s;
    // 0 disables both.
    int64_t idle_timeout_ms = 5'000;
    // How long a fired pane accepts late events (and re-emits). Default 0: events for a fired
    // pane are dead letters.
    int64_t allowed_lateness_ms = 0;
    // How far the slowest active publisher may hold the watermark back behind the largest event
    // time seen (beyond out_of_orderness). Bounds the panes open at once. Default 10 s.
    int64_t max_publisher_lag_ms = 10'000;
    // Whether Close() emits the panes still open. Default true.
    bool flush_on_close = true;
    // Upper bound on tracked series (memory bound). Default 1,000,000; at least kNumWellKnownIds.
    int64_t max_series = 1'000'000;
    // Series one publisher may own. Default 0: half of max_series. Otherwise between
    // kNumWellKnownIds and max_series.
    int64_t max_series_per_publisher = 0;
    // Event time (on the watermark) after its last event at which a series with no open pane
    // expires. Default 1 h; 0 keeps series for ever; otherwise at least the pane.
    int64_t series_ttl_ms = 3'600'000;
    // Early summaries of the open pane every `early_slice` of event time (see the class comment).
    // Default 0: none. Otherwise 10 ms .. pane, dividing the pane.
    int64_t early_slice_ms = 0;

    Status Validate() const;
  };

  // Reads `pane`, `out_of_orderness`, `idle_timeout`, `allowed_lateness`, `max_publisher_lag`,
  // `flush_on_close`, `max_series`, `max_series_per_publisher`, `series_ttl`, `early_slice`;
  // unknown fields are errors.
  static Result<std::unique_ptr<WindowAggregateOperator>> Create(const ConfigNode& options);
  static Result<Options> ParseOptions(const ConfigNode& options);

  // `options` must be valid (see Options::Validate); invalid values are clamped.
  explicit WindowAggregateOperator(const Options& options);
  ~WindowAggregateOperator() override;

  Status Open(const StageContext& ctx) override;
  // Reads events; emits kind::PaneSummary (fired and updated panes), kind::DeadLetter and, with
  // early_slice, kind::EarlySummary.
  KindSet Emits() const override {
    KindSet kinds = KindSet::Of<kind::PaneSummary, kind::DeadLetter>();
    if (options_.early_slice_ms > 0) kinds.Add(KindOf<kind::EarlySummary>());
    return kinds;
  }
  Status Process(const EventBatch& batch, OutputBatch& out) override;
  Status OnTimer(int64_t now_ms, OutputBatch& out) override;
  // Every tick once events have arrived (the watermark follows processing time when publishers
  // go idle, and idle series expire); every second once no series is left; never before the first
  // event.
  int64_t NextTimerMs(int64_t now_ms) const override;
  Status Close(OutputBatch& out) override;
  Status Checkpoint(CheckpointWriter& writer) override;
  Status Restore(const CheckpointReader& reader) override;

  const Options& options() const { return options_; }
  // The current watermark; INT64_MIN before the first event.
  int64_t watermark_ms() const { return watermark_ms_; }
  // Pane slots currently holding data, and tracked series.
  int64_t open_panes() const { return open_panes_; }
  int64_t series() const { return series_; }
  // Series expired so far.
  uint64_t series_expired() const { return series_expired_; }
  // Expires the idle series among the next `max_groups` groups of the table (OnTimer calls it with
  // a bound that visits a million series within seconds).
  void ExpireIdleSeries(size_t max_groups);

 private:
  static constexpr uint32_t kNoGroup = UINT32_MAX;
  static constexpr uint32_t kNoOwner = UINT32_MAX;
  static constexpr int64_t kNoPane = INT64_MIN;

  // One hash-table key: (instance, model) packed in 64 bits, plus the gauge metric (0 for the
  // request group of an (instance, model)).
  struct TableSlot {
    uint64_t instance_model = 0;
    uint32_t metric = 0;
    uint32_t group = kNoGroup;
  };
  // A request group (kNumWellKnownIds aggregates per pane) or a gauge series (one).
  struct Group {
    uint64_t instance_model = 0;
    uint32_t metric = 0;
    uint32_t num_metrics = 0;
    size_t first_agg = 0;               // index into aggs_ of pane slot 0, metric 0
    size_t first_pane = 0;              // index into panes_ of pane slot 0
    int64_t last_event_ms = INT64_MIN;  // latest event time applied
    uint32_t owner = kNoOwner;          // index into publishers_ of the publisher that created it
    uint32_t open = 0;                  // ring slots holding a pane
    bool changed = false;  // a pane slot changed (or was freed) since the last checkpoint
    bool live = true;      // false once expired (the slot is on a free list)
  };
  // The pane a group's ring slot holds (kNoPane when free).
  struct PaneSlot {
    int64_t pane = kNoPane;  // pane number: start / pane_ms
    int64_t max_event_time_ms = INT64_MIN;
    bool dirty = false;  // fired, then changed by late events: to be emitted as an update
    // Bit m: metric m of the group has been emitted for this pane, so its next summary is an
    // update. A late event can give a fired pane a metric (or a whole group) it had no data for;
    // that first summary is not an update (WindowSummary::update).
    uint8_t emitted = 0;
    // Events arrived since the pane's last early summary (early_slice only; in the padding).
    bool early_touched = false;
    bool changed = false;  // the pane's record is to be rewritten at the next checkpoint
    // The pane whose checkpoint record the store holds for this slot (kNoPane: none). It differs
    // from `pane` after a purge or a new pane in the slot: that record is deleted.
    int64_t stored_pane = kNoPane;
  };
  // Groups with data in one pane, for firing and purging without scanning every series.
  struct CloseList {
    int64_t pane = kNoPane;
    bool fired = false;
    std::vector<uint32_t> groups;
  };
  // The watermark contribution of one publisher.
  struct PublisherClock {
    StringId publisher = 0;
    int64_t max_event_time_ms = INT64_MIN;  // largest accepted (not future outlier) event time
    int64_t last_arrival_ms = INT64_MIN;    // processing time of the last accepted event
    // Largest accepted event time since this operator started (not restored): the progress that
    // supports another publisher's event beyond the horizon.
    int64_t fresh_max_ms = INT64_MIN;
    // Processing time of the first future outlier since the publisher's last accepted event.
    int64_t outlier_since_ms = INT64_MIN;
    Counter* dead_letters = nullptr;
    Counter* future_outliers = nullptr;
    Counter* series_rejected = nullptr;
    int64_t series = 0;  // series owned
  };

  // Why FindOrAddGroup returned kNoGroup.
  enum class AddFailure { kNone, kLimit, kStaleName };
  // Open addressing with linear probing; returns the group index or kNoGroup.
  // Adds a group when there is room under max_series and `owner`'s share (owner may be null).
  uint32_t FindOrAddGroup(uint64_t instance_model, uint32_t metric, uint32_t num_metrics,
                          PublisherClock* owner = nullptr);
  void EraseFromTable(uint64_t instance_model, uint32_t metric);
  void ExpireGroup(uint32_t group);
  // The checkpoint key of a group: str(instance) str(model) str(metric or ""); a pane's key
  // appends be64(pane with its sign bit flipped), so a group's panes sort in pane order.
  void GroupKey(const Group& g, std::string* key) const;
  void PaneKey(const Group& g, int64_t pane, std::string* key) const;
  // Marks the pane in ring slot `ps` of `g` for the next checkpoint.
  static void MarkChanged(Group& g, PaneSlot& ps) {
    g.changed = true;
    ps.changed = true;
  }
  // The group of (instance_model, metric), or kNoGroup; never adds.
  uint32_t FindGroup(uint64_t instance_model, uint32_t metric) const;
  // Resolves the group and ring slot of every event of `batch` that has a group already into
  // batch_groups_ / batch_slots_ (kNoGroup otherwise). Read-only: Process uses it for prefetching
  // and to skip the second lookup; it never decides what an event does.
  void ResolveBatch(const EventBatch& batch);
  // Prefetch stages for event `i` of the resolved batch: the group's pane slot and the cache
  // lines of the aggregates the event will update, then (once those have arrived) their bins.
  void PrefetchAggregates(const Event& e, size_t i) const;
  void PrefetchBins(const Event& e, size_t i) const;
  void GrowTable();
  // The aggregates of `group` for pane `pane` (ring slot `slot`), claiming the slot; null when it
  // still holds another open pane (cannot happen with the ring sized from out_of_orderness).
  Aggregate* PaneAggregates(uint32_t group, int64_t pane, size_t slot, int64_t time_ms);
  PublisherClock* FindOrAddPublisher(StringId publisher);
  bool Active(const PublisherClock& p, int64_t now_ms) const {
    return options_.idle_timeout_ms == 0 || p.last_arrival_ms == INT64_MIN ||
           now_ms - p.last_arrival_ms < options_.idle_timeout_ms;
  }
  // Whether event time `t`, beyond the horizon, from publisher `p` (null: untracked) whose
  // progress in this step so far is `running_max_ms`, is supported (see the class comment).
  bool SupportsAhead(const PublisherClock* p, int64_t t, int64_t running_max_ms, int64_t now_ms);
  // The upper median of the fresh progress of the active publishers other than `p` and of
  // `now_ms`, or INT64_MIN when there is no other active publisher.
  int64_t OthersProgress(const PublisherClock* p, int64_t now_ms);
  Counter* RejectedByPublisher(std::string_view reason, StringId publisher);
  void FutureOutlier(const Event& e, StringId publisher, PublisherClock* p, int64_t now_ms,
                     OutputBatch& out);
  // Recomputes the watermark from the publishers' clocks at processing time `now_ms`.
  void UpdateWatermark(int64_t now_ms, OutputBatch& out);
  void AdvanceWatermark(int64_t watermark_ms, OutputBatch& out);
  // Fires every pane whose end is <= `limit_ms`, and frees those whose allowed lateness has
  // passed too.
  void ClosePanes(int64_t limit_ms, OutputBatch& out);
  void FirePane(CloseList& list, OutputBatch& out);
  void PurgePane(CloseList& list, OutputBatch& out);
  // Emits the group's metrics with data in `pane`; each is an update when emitted before.
  void EmitGroupPane(uint32_t group, int64_t pane, OutputBatch& out);
  void EmitUpdates(OutputBatch& out);
  // Emits early summaries when the early mark `mark_ms` crossed a slice boundary (early_slice).
  void EmitEarly(int64_t mark_ms, OutputBatch& out);
  void DeadLetter(const Event& e, StringId publisher, OutputBatch& out);
  void PublishGauges();
  size_t SlotOf(int64_t pane) const {
    const auto ring = static_cast<int64_t>(ring_);
    return static_cast<size_t>(((pane % ring) + ring) % ring);
  }

  Options options_;
  int64_t pane_ms_;
  int64_t out_of_orderness_ms_;
  size_t ring_;  // pane slots per group

  std::vector<TableSlot> table_;
  size_t table_mask_ = 0;
  int table_shift_ = 64;
  std::vector<Group> groups_;
  std::vector<PaneSlot> panes_;
  std::vector<Aggregate> aggs_;
  std::vector<CloseList> close_lists_;    // ring_ entries, indexed by pane number mod ring_
  std::vector<uint32_t> free_groups_[2];  // expired groups to reuse: [0] gauges, [1] requests
  size_t expire_cursor_ = 0;
  // Checkpoint keys of expired groups' panes (and of restored version-1 group records) whose
  // deletion is not checkpointed yet.
  std::vector<std::string> pending_deletes_;
  std::string checkpointed_header_;  // the header record the last Checkpoint wrote
  int64_t max_series_per_publisher_ = 0;
  AddFailure add_failure_ = AddFailure::kNone;
  uint64_t series_expired_ = 0;
  // Per event of the batch being processed (capacity reused across batches).
  std::vector<uint32_t> batch_groups_;
  std::vector<uint32_t> batch_slots_;

  std::vector<PublisherClock> publishers_;
  std::vector<int64_t> progress_scratch_;            // OthersProgress (capacity reused)
  std::vector<std::pair<uint32_t, int64_t>> dirty_;  // (group, pane) changed after firing
  int64_t max_event_time_ms_ = INT64_MIN;
  int64_t last_timer_ms_ = 0;  // processing time of the latest OnTimer (NextTimerMs without series)
  int64_t watermark_ms_ = INT64_MIN;
  int64_t allowed_lateness_ms_ = 0;
  int64_t max_publisher_lag_ms_ = 0;
  int64_t oldest_unfired_pane_ = kNoPane;  // lowest pane number with an unfired close list
  int64_t oldest_open_pane_ = kNoPane;     // lowest pane number with a non-empty close list
  int64_t newest_open_pane_ = kNoPane;
  int64_t next_close_end_ms_ = INT64_MAX;  // end of the oldest pane to fire or purge
  int64_t last_arrival_ms_ = INT64_MIN;    // processing time of the last accepted event
  int64_t open_panes_ = 0;
  int64_t series_ = 0;
  uint64_t emitted_ = 0;                   // summaries emitted since metrics were last published
  uint64_t updated_ = 0;                   // of which updates
  uint64_t early_emitted_ = 0;             // early summaries since metrics were last published
  int64_t early_boundary_ms_ = INT64_MIN;  // the latest slice boundary early summaries were cut at

  const Clock* clock_ = nullptr;
  Counter* events_in_ = nullptr;
  Counter* summaries_out_ = nullptr;
  Counter* late_ = nullptr;
  Counter* updates_out_ = nullptr;
  Counter* early_out_ = nullptr;
  Interner* interner_ = nullptr;
  MetricsRegistry* metrics_ = nullptr;
  std::string stage_;
  Counter* rejected_series_ = nullptr;
  Counter* rejected_time_ = nullptr;
  Counter* rejected_metric_ = nullptr;
  Counter* rejected_stale_ = nullptr;
  Counter* expired_ = nullptr;
  Gauge* open_panes_gauge_ = nullptr;
  Gauge* series_gauge_ = nullptr;
  Gauge* watermark_gauge_ = nullptr;
};

}  // namespace inferscope
