#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pipeline/checkpoint.h"
#include "pipeline/config.h"
#include "pipeline/interner.h"
#include "pipeline/metrics.h"
#include "pipeline/operator.h"
#include "pipeline/status.h"
#include "pipeline/summary.h"
#include "values/aggregate.h"

namespace inferscope {

// SlidingWindowOperator turns the pane summaries of an upstream window_aggregate into sliding
// windows of several sizes (1 m, 5 m, 1 h by default) that slide by one pane, by merging the
// aggregates of the panes each window spans; events are never copied per window.
//
// Per series it keeps a ring of the last N + L pane aggregates (N = largest window / pane, L =
// allowed_lateness / pane). When a pane of a series arrives (its pane closed upstream), it emits
// one WindowSummary per configured size W ending at that pane's end: [end - W, end), the merge of
// the series' panes in range (panes the series did not have count as empty). A pane that arrives
// with `update` set (late events upstream) replaces the stored one, and every window that
// contains it and was emitted before is emitted again with `update` set; the same happens for a
// pane that arrives after later panes of its series.
//
// Emit policy: `final` (default) emits only the windows ending at a pane the series had. `early`
// additionally emits, on every pane arrival, the windows ending one pane later (the pane in
// progress upstream, whose data is not yet visible): they are replaced (`update` set) when that
// pane arrives, and stand as the result for that end when the series has no events in it.
//
// Lifecycle: construct (or Create from options) → Open → Restore (after a restart) →
// ProcessResults (chained behind a window_aggregate; Process ignores events), Checkpoint and
// OnTimer between them → Close.
// Concurrency: none; the engine's operator thread makes every call.
// Limitations: windows end only at pane ends where the series had a pane (or, with `early`, one
// pane later), so a series that goes quiet gets no window for the ends in its silence: the
// upstream emits nothing for it, and there is no watermark-driven emission (it would have to
// visit every series at every pane end). Panes at or before the series' newest pane minus the
// ring are ignored (counted, reason "too_old"); so are pane summaries whose length differs from
// the pane (reason "bad_pane"), series beyond `max_series` (reason "series_limit") and new series
// whose names the interner already reclaimed (reason "stale_name"). A window
// that would need a pane that has left the ring is not re-emitted (counted as unrecomputable).
// A series whose newest pane ends more than max(`series_ttl`, the ring) behind the upstream
// watermark expires (counted, inferscope_sliding_series_expired_total): no pane can arrive any more
// that would share a window with its stored panes, so forgetting them changes no result (a later
// pane of the series starts it afresh). Memory per series is dominated by the ring: see
// docs/ARCHITECTURE.md, "Sliding windows".
class SlidingWindowOperator final : public Operator {
 public:
  static constexpr std::string_view kName = "sliding_window";
  static constexpr std::string_view kDescription =
      "Sliding windows of several sizes (sliding by one pane) merged from the pane summaries of "
      "a window_aggregate operator; final or early emission, updates re-emitted";

  enum class Emit { kFinal, kEarly };

  struct Options {
    // Window sizes, each a positive multiple of the pane; at most kMaxWindows distinct sizes of at
    // most kMaxPanesPerWindow panes. Default 1 m, 5 m and 1 h. Kept sorted ascending.
    std::vector<int64_t> windows_ms = {60'000, 300'000, 3'600'000};
    // Pane length of the upstream. Default 0: learned from the first pane summary (whose length
    // every window must then be a multiple of). Otherwise at least 100 ms.
    int64_t pane_ms = 0;
    // Default final (see the class comment).
    Emit emit = Emit::kFinal;
    // How far behind a series' newest pane an update may be and still correct every window that
    // contains it (extra ring panes). Should cover the upstream's allowed lateness. Default 1 m;
    // >= 0, at most kMaxPanesPerWindow panes.
    int64_t allowed_lateness_ms = 60'000;
    // Whether the input pane summaries are forwarded to this operator's output (so that one sink
    // stores both). Default true.
    bool pass_panes = true;
    // Upper bound on tracked series (memory bound). Default 100,000; at least 1.
    int64_t max_series = 100'000;
    // Event time (on the upstream watermark) after its newest pane at which a series is forgotten;
    // never less than the ring. Default 1 h; 0 keeps series for ever.
    int64_t series_ttl_ms = 3'600'000;

    Status Validate() const;
  };

  static constexpr size_t kMaxWindows = 8;
  static constexpr int64_t kMaxPanesPerWindow = 4096;

  // Reads `windows` (a list of durations), `pane`, `emit` ("final" or "early"),
  // `allowed_lateness`, `pass_panes`, `max_series`; unknown fields are errors.
  static Result<std::unique_ptr<SlidingWindowOperator>> Create(const ConfigNode& options);
  static Result<Options> ParseOptions(const ConfigNode& options);

  // `options` must be valid (see Options::Validate).
  explicit SlidingWindowOperator(const Options& options);
  ~SlidingWindowOperator() override;

  Status Open(const StageContext& ctx) override;
  // Events are not this operator's input; ignored.
  Status Process(const EventBatch& batch, OutputBatch& out) override;
  // Reads kind::PaneSummary; emits kind::WindowSummary, and the pane summaries it reads too
  // (kind::PaneSummary) with `pass_panes`.
  KindSet Reads() const override { return KindSet::Of<kind::PaneSummary>(); }
  KindSet Emits() const override;
  // Consumes pane summaries (see the class comment). Fails once, when the learned pane does not
  // divide a window size; the operator then ignores its input (counted as "bad_pane").
  Status ProcessResults(const OutputBatch& in, OutputBatch& out) override;
  Status OnTimer(int64_t now_ms, OutputBatch& out) override;
  // The timer only expires idle series, and only the upstream watermark (ProcessResults) can make
  // a series idle: kNoTimer until the watermark moved since the last expiry pass (or without
  // series or series_ttl), then a pass at most once a second.
  int64_t NextTimerMs(int64_t now_ms) const override;
  // Checkpoint records (pipeline/checkpoint.h): the learned pane and the watermark under key "",
  // one small record per series (its newest and early pane numbers) and one per pane of its ring,
  // each written when it changed since the previous checkpoint and deleted once its pane left
  // the ring or the series expired. A series receiving a pane every pane period writes one pane
  // record per period, not its whole ring (earlier versions wrote the ring, 5-15 KB, each time;
  // their records are restored and rewritten as pane records). Needs Open with an interner.
  Status Checkpoint(CheckpointWriter& writer) override;
  // Restores the rings, so the windows after a restart equal an uninterrupted run's. Without a
  // configured pane the records are held (in memory, as read) until the first pane summary
  // tells the live pane: restored if it equals the checkpoint's, else dropped. Records of another
  // pane length than the live one (the topology changed) are dropped and deleted by the next
  // checkpoint; panes outside the ring of the current options are dropped; series beyond
  // max_series count as "series_limit".
  Status Restore(const CheckpointReader& reader) override;

  const Options& options() const { return options_; }
  // The pane length (0 until learned).
  int64_t pane_ms() const { return pane_ms_; }
  // Pane slots per series (0 until the pane is known).
  size_t ring_size() const { return ring_; }
  int64_t series() const { return static_cast<int64_t>(series_.size()); }
  // Panes held in the rings, each of which has a checkpoint record after a checkpoint (O(series
  // × ring): for tests).
  int64_t ring_panes() const;
  // Series records restored but held until the first pane summary tells the pane.
  int64_t held_series() const { return held_series_; }
  uint64_t windows_emitted() const { return windows_total_; }
  uint64_t updates_emitted() const { return updates_total_; }
  uint64_t panes_ignored() const {
    return too_old_total_ + bad_pane_total_ + series_limit_total_ + stale_name_total_;
  }
  uint64_t panes_stale_name() const { return stale_name_total_; }
  uint64_t panes_too_old() const { return too_old_total_; }
  uint64_t panes_series_limit() const { return series_limit_total_; }
  uint64_t windows_unrecomputable() const { return unrecomputable_total_; }
  uint64_t series_expired() const { return expired_total_; }
  // Checkpoint record deletions waiting for the next Checkpoint.
  size_t pending_deletes() const { return pending_deletes_.size(); }
  // Forgets the series idle beyond series_ttl (OnTimer calls it at most once a second).
  void ExpireIdleSeries();

 private:
  static constexpr int64_t kNoPane = INT64_MIN;
  static constexpr uint32_t kNoSeries = UINT32_MAX;
  static constexpr uint32_t kStaleName = UINT32_MAX - 1;  // a name of the key was reclaimed
  static constexpr size_t kMaxDirty = 8;

  // One ring slot: a closed pane of the series (pane number = start / pane_ms).
  struct PaneSlot {
    int64_t pane = kNoPane;
    int64_t max_event_time_ms = INT64_MIN;
    // The pane whose checkpoint record the store holds for this slot (kNoPane: none); it differs
    // from `pane` once another pane took the slot, and that record is deleted.
    int64_t stored_pane = kNoPane;
    bool changed = false;  // written since the previous checkpoint (listed in Series::dirty)
    Aggregate agg;
  };
  struct Series {
    SeriesKey key;
    int64_t newest = kNoPane;    // newest pane number seen
    int64_t early = kNoPane;     // end pane number of the last early emission (emit: early)
    std::vector<PaneSlot> ring;  // ring_ slots, indexed by pane number mod ring_
    bool changed = false;        // since the previous checkpoint
    bool stored = false;         // has a checkpoint record (written or restored)
    // Pane numbers of the slots written since the previous checkpoint (one per slot at most),
    // up to kMaxDirty; past that `scan` is set and the checkpoint visits every slot (so a restore
    // of a whole ring or a burst of updates does not leave a ring-sized list on every series).
    std::vector<int64_t> dirty;
    bool scan = false;
    // The oldest pane of the ring at the previous checkpoint (or restore): panes from there to
    // the oldest now have left the ring, and their records are deleted.
    int64_t stored_oldest = kNoPane;
  };

  // Sets the pane length and ring size; fails when a window is not a multiple of `pane_ms`.
  Status SetPane(int64_t pane_ms);
  // The series' index; kNoSeries beyond max_series, kStaleName when a name of a new key was
  // reclaimed. A new series holds a reference on its three names (released when it expires), so
  // that its checkpoint key can be formed until then.
  uint32_t FindOrAddSeries(const SeriesKey& key);
  void GrowTable();
  void Rehash();
  void OnPane(const WindowSummary& pane, OutputBatch& out);
  // Emits the windows ending at the end of pane number `q` of `s` that span at least `min_panes`
  // panes, flagged `update`.
  void EmitWindows(const Series& s, int64_t q, int64_t min_panes, bool update, OutputBatch& out);
  PaneSlot& SlotOf(Series& s, int64_t pane) { return s.ring[RingIndex(pane)]; }
  const PaneSlot& SlotOf(const Series& s, int64_t pane) const { return s.ring[RingIndex(pane)]; }
  size_t RingIndex(int64_t pane) const {
    const auto ring = static_cast<int64_t>(ring_);
    return static_cast<size_t>(((pane % ring) + ring) % ring);
  }
  bool Holds(const Series& s, int64_t pane) const { return SlotOf(s, pane).pane == pane; }
  void PublishMetrics();
  // The checkpoint key of a series: str(instance) str(model) str(metric).
  void SeriesCheckpointKey(const SeriesKey& key, std::string* out) const;
  // A pane record's key: the series key, then be64(pane with its sign bit flipped).
  void PaneCheckpointKey(const SeriesKey& key, int64_t pane, std::string* out) const;
  // Marks the slot of pane `p` of `s` for the next checkpoint.
  void MarkChanged(Series& s, PaneSlot& slot, int64_t p);
  // Writes or deletes the record of one slot of `s` whose ring starts at pane `oldest`.
  void CheckpointSlot(const Series& s, PaneSlot& slot, int64_t oldest, CheckpointWriter& writer);
  // One record after the operator record: a series record or a pane record.
  Status RestoreRecord(std::string_view key, std::string_view value);
  Status RestoreSeries(std::string_view key, std::string_view value);
  Status RestorePane(std::string_view key, std::string_view value);
  // Restores the held records if the pane now known equals theirs, else queues their deletion.
  Status ResolveHeld();

  Options options_;
  int64_t pane_ms_ = 0;
  bool broken_ = false;                // the learned pane does not divide a window
  std::vector<int64_t> window_panes_;  // window sizes in panes, ascending
  int64_t max_window_panes_ = 0;
  size_t ring_ = 0;

  std::vector<uint32_t> table_;  // open addressing, series index or kNoSeries
  size_t table_mask_ = 0;
  std::vector<Series> series_;
  Aggregate scratch_;  // merge accumulator, reused (keeps its sketch capacity)

  uint64_t windows_total_ = 0;
  uint64_t updates_total_ = 0;
  uint64_t too_old_total_ = 0;
  uint64_t bad_pane_total_ = 0;
  uint64_t series_limit_total_ = 0;
  uint64_t stale_name_total_ = 0;
  uint64_t unrecomputable_total_ = 0;
  uint64_t expired_total_ = 0;
  uint64_t expired_published_ = 0;
  int64_t watermark_ms_ = INT64_MIN;         // the upstream's, from ProcessResults
  int64_t next_expiry_ms_ = INT64_MIN;       // processing time of the next expiry pass
  int64_t expiry_watermark_ms_ = INT64_MIN;  // watermark_ms_ at the last expiry pass
  const Interner* interner_ = nullptr;       // from Open; names series in checkpoints
  Interner* mutable_interner_ = nullptr;     // interns restored names
  std::string checkpointed_header_;          // the "" record last written or restored
  // Checkpoint keys of stored series expired (or dropped on restore) since the last checkpoint:
  // at most one per stored record, so bounded even when checkpoints never run.
  std::vector<std::string> pending_deletes_;
  // What Restore does with the series records after the operator record.
  enum class RestoreMode { kNoHeader, kRestore, kHold, kDelete };
  RestoreMode restore_mode_ = RestoreMode::kNoHeader;
  bool holding_ = false;      // restored records wait for the pane (see Restore)
  int64_t held_pane_ms_ = 0;  // the pane of the held records
  std::vector<std::pair<std::string, std::string>> held_records_;  // key, value
  int64_t held_series_ = 0;  // series records among held_records_
  // The series record restored last, which the pane records after it (in key order) belong to.
  std::string restored_key_;
  uint32_t restored_series_ = kNoSeries;
  std::string checkpoint_key_, checkpoint_value_, checkpoint_agg_;  // Checkpoint's buffers
  Counter* expired_ = nullptr;
  // Totals already added to the counters below.
  uint64_t windows_published_ = 0, updates_published_ = 0, too_old_published_ = 0,
           bad_pane_published_ = 0, series_limit_published_ = 0, unrecomputable_published_ = 0,
           stale_name_published_ = 0;

  Counter* windows_out_ = nullptr;
  Counter* updates_out_ = nullptr;
  Counter* too_old_ = nullptr;
  Counter* bad_pane_ = nullptr;
  Counter* series_limit_ = nullptr;
  Counter* stale_name_ = nullptr;
  Counter* unrecomputable_ = nullptr;
  Gauge* series_gauge_ = nullptr;
};

}  // namespace inferscope
