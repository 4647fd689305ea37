#include "operators/sliding_window.h"

#include <algorithm>
#include <string>
#include <utility>

#include "pipeline/coding.h"
#include "pipeline/int_math.h"

namespace inferscope {
namespace {

constexpr int64_t kMinPaneMs = 100;
constexpr int64_t kMaxSeriesLimit = 100'000'000;
constexpr size_t kInitialTableSize = 1024;

uint64_t Hash(const SeriesKey& k) {
  return SeriesHash((static_cast<uint64_t>(k.instance) << 32) | k.model, k.metric);
}

std::string FormatMs(int64_t ms) { return std::to_string(ms) + "ms"; }

}  // namespace

Status SlidingWindowOperator::Options::Validate() const {
  if (windows_ms.empty()) return Status::InvalidArgument("windows must name at least one size");
  if (windows_ms.size() > kMaxWindows) {
    return Status::InvalidArgument("windows: at most " + std::to_string(kMaxWindows) +
                                   " sizes, got " + std::to_string(windows_ms.size()));
  }
  std::vector<int64_t> sorted = windows_ms;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
    return Status::InvalidArgument("windows: sizes must be distinct");
  }
  if (sorted.front() <= 0) return Status::InvalidArgument("windows: sizes must be positive");
  if (pane_ms != 0) {
    if (pane_ms < kMinPaneMs) {
      return Status::InvalidArgument("pane must be at least 100ms, got " + FormatMs(pane_ms));
    }
    for (int64_t w : sorted) {
      if (w % pane_ms != 0) {
        return Status::InvalidArgument("window " + FormatMs(w) + " is not a multiple of the pane " +
                                       FormatMs(pane_ms));
      }
    }
    if (sorted.back() / pane_ms > kMaxPanesPerWindow) {
      return Status::InvalidArgument("windows: at most " + std::to_string(kMaxPanesPerWindow) +
                                     " panes per window, got " +
                                     std::to_string(sorted.back() / pane_ms));
    }
    if (allowed_lateness_ms / pane_ms > kMaxPanesPerWindow) {
      return Status::InvalidArgument("allowed_lateness must be at most " +
                                     std::to_string(kMaxPanesPerWindow) + " panes");
    }
  }
  if (allowed_lateness_ms < 0)
    return Status::InvalidArgument("allowed_lateness must not be negative");
  if (max_series < 1 || max_series > kMaxSeriesLimit) {
    return Status::InvalidArgument("max_series must be between 1 and " +
                                   std::to_string(kMaxSeriesLimit));
  }
  if (series_ttl_ms < 0) return Status::InvalidArgument("series_ttl must not be negative");
  return Status::Ok();
}

Result<SlidingWindowOperator::Options> SlidingWindowOperator::ParseOptions(const ConfigNode& node) {
  INFERSCOPE_RETURN_IF_ERROR(node.CheckKnownFields(
      {"windows", "pane", "emit", "allowed_lateness", "pass_panes", "max_series", "series_ttl"}));
  Options o;
  if (node.Has("windows")) {
    const YAML::Node list = node.node()["windows"];
    if (!list.IsSequence() || list.size() == 0) {
      return node.Error("windows", "expected a list of durations such as [1m, 5m]");
    }
    o.windows_ms.clear();
    for (const YAML::Node& item : list) {
      std::optional<int64_t> ms =
          item.IsScalar() ? ParseDurationMs(item.Scalar()) : std::optional<int64_t>();
      if (!ms || *ms <= 0) {
        return node.Error("windows", "expected a positive duration such as 5m, got '" +
                                         (item.IsScalar() ? item.Scalar() : std::string("?")) +
                                         "'");
      }
      o.windows_ms.push_back(*ms);
    }
  }
  Result<int64_t> pane = node.GetDurationMs("pane", o.pane_ms, 0);
  if (!pane.ok()) return pane.status();
  Result<std::string> emit = node.GetString("emit", "final");
  if (!emit.ok()) return emit.status();
  if (*emit == "final") {
    o.emit = Emit::kFinal;
  } else if (*emit == "early") {
    o.emit = Emit::kEarly;
  } else {
    return node.Error("emit", "expected 'final' or 'early', got '" + *emit + "'");
  }
  Result<int64_t> lateness = node.GetDurationMs("allowed_lateness", o.allowed_lateness_ms, 0);
  if (!lateness.ok()) return lateness.status();
  Result<bool> pass = node.GetBool("pass_panes", o.pass_panes);
  if (!pass.ok()) return pass.status();
  Result<int64_t> max_series = node.GetInt("max_series", o.max_series, 1, kMaxSeriesLimit);
  if (!max_series.ok()) return max_series.status();
  Result<int64_t> ttl = node.GetDurationMs("series_ttl", o.series_ttl_ms, 0);
  if (!ttl.ok()) return ttl.status();
  o.series_ttl_ms = *ttl;
  o.pane_ms = *pane;
  o.allowed_lateness_ms = *lateness;
  o.pass_panes = *pass;
  o.max_series = *max_series;
  if (Status st = o.Validate(); !st.ok()) {
    // Locate the error at the field its message starts with ("window 25s is not a multiple of
    // the pane 10s" is about the windows).
    const std::string_view message = st.message();
    std::string_view field;
    for (auto [prefix, name] : {std::pair{"window", "windows"}, std::pair{"pane", "pane"},
                                std::pair{"allowed_lateness", "allowed_lateness"}}) {
      if (message.starts_with(prefix)) {
        field = name;
        break;
      }
    }
    return node.Error(field, message);
  }
  return o;
}

Result<std::unique_ptr<SlidingWindowOperator>> SlidingWindowOperator::Create(
    const ConfigNode& options) {
  Result<Options> parsed = ParseOptions(options);
  if (!parsed.ok()) return parsed.status();
  return std::make_unique<SlidingWindowOperator>(*parsed);
}

SlidingWindowOperator::SlidingWindowOperator(const Options& options)
    : options_(options), table_(kInitialTableSize, kNoSeries), table_mask_(kInitialTableSize - 1) {
  std::sort(options_.windows_ms.begin(), options_.windows_ms.end());
  if (options_.pane_ms > 0 && !SetPane(options_.pane_ms).ok()) broken_ = true;
}

SlidingWindowOperator::~SlidingWindowOperator() = default;

Status SlidingWindowOperator::SetPane(int64_t pane_ms) {
  if (pane_ms <= 0) {
    return Status::InvalidArgument("sliding_window: pane summary of non-positive length " +
                                   FormatMs(pane_ms));
  }
  for (int64_t w : options_.windows_ms) {
    if (w % pane_ms != 0 || w / pane_ms > kMaxPanesPerWindow) {
      return Status::InvalidArgument("sliding_window: window " + FormatMs(w) +
                                     " is not a multiple of the upstream pane " +
                                     FormatMs(pane_ms) + " (or spans more than " +
                                     std::to_string(kMaxPanesPerWindow) + " panes)");
    }
  }
  pane_ms_ = pane_ms;
  window_panes_.clear();
  for (int64_t w : options_.windows_ms) window_panes_.push_back(w / pane_ms);
  max_window_panes_ = window_panes_.back();
  const int64_t lateness_panes =
      std::min((options_.allowed_lateness_ms + pane_ms - 1) / pane_ms, kMaxPanesPerWindow);
  ring_ = static_cast<size_t>(max_window_panes_ + lateness_panes);
  return Status::Ok();
}

Status SlidingWindowOperator::Open(const StageContext& ctx) {
  interner_ = ctx.interner;
  mutable_interner_ = ctx.interner;
  if (ctx.metrics == nullptr) return Status::Ok();
  MetricsRegistry& m = *ctx.metrics;
  const Labels stage = {{"stage", ctx.name}};
  windows_out_ = m.GetCounter("inferscope_sliding_windows_total",
                              "Sliding windows emitted for the first time", stage);
  updates_out_ = m.GetCounter("inferscope_sliding_updates_total",
                              "Sliding windows emitted again (update) after a pane changed", stage);
  const char* ignored_help = "Pane summaries not used for windows, by reason";
  too_old_ = m.GetCounter("inferscope_sliding_ignored_panes_total", ignored_help,
                          {{"stage", ctx.name}, {"reason", "too_old"}});
  bad_pane_ = m.GetCounter("inferscope_sliding_ignored_panes_total", ignored_help,
                           {{"stage", ctx.name}, {"reason", "bad_pane"}});
  series_limit_ = m.GetCounter("inferscope_sliding_ignored_panes_total", ignored_help,
                               {{"stage", ctx.name}, {"reason", "series_limit"}});
  stale_name_ = m.GetCounter("inferscope_sliding_ignored_panes_total", ignored_help,
                             {{"stage", ctx.name}, {"reason", "stale_name"}});
  unrecomputable_ =
      m.GetCounter("inferscope_sliding_unrecomputable_windows_total",
                   "Windows not re-emitted after an update because a pane left the ring", stage);
  series_gauge_ = m.GetGauge("inferscope_sliding_series", "Series tracked", stage);
  expired_ = m.GetCounter("inferscope_sliding_series_expired_total",
                          "Series forgotten after series_ttl without panes", stage);
  return Status::Ok();
}

Status SlidingWindowOperator::Process(const EventBatch& batch, OutputBatch& out) {
  (void)batch;
  (void)out;
  return Status::Ok();
}

KindSet SlidingWindowOperator::Emits() const {
  KindSet kinds = KindSet::Of<kind::WindowSummary>();
  if (options_.pass_panes) kinds.Add(KindOf<kind::PaneSummary>());
  return kinds;
}

Status SlidingWindowOperator::ProcessResults(const OutputBatch& in, OutputBatch& out) {
  Status result = Status::Ok();
  for (const WindowSummary& pane : in.Get<kind::PaneSummary>()) {
    if (options_.pass_panes) out.Add<kind::PaneSummary>(pane);
    if (pane_ms_ == 0 && !broken_) {
      Status st = SetPane(pane.end_ms - pane.start_ms);
      if (!st.ok()) {
        broken_ = true;
        result = std::move(st);
      }
      // Before this pane: the held records belong to the ring it decides.
      if (Status held = ResolveHeld(); !held.ok() && result.ok()) result = std::move(held);
    }
    if (broken_) {
      ++bad_pane_total_;
      continue;
    }
    OnPane(pane, out);
  }
  out.watermark_ms = in.watermark_ms;
  watermark_ms_ = std::max(watermark_ms_, in.watermark_ms);
  PublishMetrics();
  return result;
}

int64_t SlidingWindowOperator::NextTimerMs(int64_t now_ms) const {
  if (options_.series_ttl_ms <= 0 || series_.empty() || watermark_ms_ <= expiry_watermark_ms_) {
    return kNoTimer;
  }
  (void)now_ms;
  // A fixed time, not one that moves with now_ms (the executor runs a timer once now_ms reaches
  // it); INT64_MIN or a past time means the next tick.
  return next_expiry_ms_;
}

Status SlidingWindowOperator::OnTimer(int64_t now_ms, OutputBatch& out) {
  (void)out;
  if (now_ms >= next_expiry_ms_) {
    next_expiry_ms_ = now_ms + 1000;
    expiry_watermark_ms_ = watermark_ms_;
    ExpireIdleSeries();
  }
  PublishMetrics();
  return Status::Ok();
}

void SlidingWindowOperator::ExpireIdleSeries() {
  if (options_.series_ttl_ms <= 0 || pane_ms_ == 0 || watermark_ms_ <= 0) return;
  const int64_t keep_ms =
      std::max(options_.series_ttl_ms, static_cast<int64_t>(ring_ + 1) * pane_ms_);
  const int64_t limit = watermark_ms_ - keep_ms;
  const size_t before = series_.size();
  std::erase_if(series_, [&](const Series& s) {
    const bool expired = s.newest == kNoPane || (s.newest + 1) * pane_ms_ <= limit;
    if (!expired) return false;
    // Only stored records are deleted (pending deletes stay bounded by the records).
    if (s.stored && interner_ != nullptr)
      SeriesCheckpointKey(s.key, &pending_deletes_.emplace_back());
    for (const PaneSlot& slot : s.ring) {
      if (slot.stored_pane != kNoPane && interner_ != nullptr)
        PaneCheckpointKey(s.key, slot.stored_pane, &pending_deletes_.emplace_back());
    }
    if (mutable_interner_ != nullptr) {
      mutable_interner_->Unref(s.key.instance);
      mutable_interner_->Unref(s.key.model);
      mutable_interner_->Unref(s.key.metric);
    }
    return true;
  });
  if (series_.size() == before) return;
  expired_total_ += before - series_.size();
  Rehash();
}

void SlidingWindowOperator::Rehash() {
  std::fill(table_.begin(), table_.end(), kNoSeries);
  for (uint32_t index = 0; index < series_.size(); ++index) {
    size_t i = static_cast<size_t>(Hash(series_[index].key)) & table_mask_;
    while (table_[i] != kNoSeries) i = (i + 1) & table_mask_;
    table_[i] = index;
  }
}

uint32_t SlidingWindowOperator::FindOrAddSeries(const SeriesKey& key) {
  size_t i = static_cast<size_t>(Hash(key)) & table_mask_;
  while (table_[i] != kNoSeries) {
    if (series_[table_[i]].key == key) return table_[i];
    i = (i + 1) & table_mask_;
  }
  if (static_cast<int64_t>(series_.size()) >= options_.max_series) return kNoSeries;
  if (mutable_interner_ != nullptr) {
    if (!mutable_interner_->Ref(key.instance)) return kStaleName;
    if (!mutable_interner_->Ref(key.model)) {
      mutable_interner_->Unref(key.instance);
      return kStaleName;
    }
    if (!mutable_interner_->Ref(key.metric)) {
      mutable_interner_->Unref(key.instance);
      mutable_interner_->Unref(key.model);
      return kStaleName;
    }
  }
  const auto index = static_cast<uint32_t>(series_.size());
  Series& s = series_.emplace_back();
  s.key = key;
  s.ring.resize(ring_);
  table_[i] = index;
  if (series_.size() * 2 > table_.size()) GrowTable();
  return index;
}

void SlidingWindowOperator::GrowTable() {
  table_.assign(table_.size() * 2, kNoSeries);
  table_mask_ = table_.size() - 1;
  for (uint32_t index = 0; index < series_.size(); ++index) {
    size_t i = static_cast<size_t>(Hash(series_[index].key)) & table_mask_;
    while (table_[i] != kNoSeries) i = (i + 1) & table_mask_;
    table_[i] = index;
  }
}

void SlidingWindowOperator::OnPane(const WindowSummary& pane, OutputBatch& out) {
  if (pane.end_ms - pane.start_ms != pane_ms_ || pane.start_ms % pane_ms_ != 0) {
    ++bad_pane_total_;
    return;
  }
  const uint32_t index = FindOrAddSeries(pane.series);
  if (index == kNoSeries || index == kStaleName) {
    ++(index == kNoSeries ? series_limit_total_ : stale_name_total_);
    return;
  }
  Series& s = series_[index];
  const int64_t p = FloorDiv(pane.start_ms, pane_ms_);
  const auto ring = static_cast<int64_t>(ring_);
  if (s.newest != kNoPane && p <= s.newest - ring) {
    ++too_old_total_;
    return;
  }
  s.changed = true;
  PaneSlot& slot = SlotOf(s, p);
  MarkChanged(s, slot, p);
  const bool existed = slot.pane == p;
  slot.pane = p;
  slot.max_event_time_ms = pane.max_event_time_ms;
  slot.agg = pane.agg;  // copy-assignment keeps the slot's sketch capacity
  if (s.newest == kNoPane || p > s.newest) s.newest = p;
  const bool early = options_.emit == Emit::kEarly;

  // The windows ending at p; they were emitted before if p was (an update), or if an early
  // emission ended there.
  EmitWindows(s, p, 1, existed || (early && s.early == p), out);
  // Windows ending at later panes of the series already emitted without (this version of) p.
  const int64_t last = std::min(s.newest, p + max_window_panes_ - 1);
  for (int64_t q = p + 1; q <= last; ++q) {
    if (Holds(s, q)) EmitWindows(s, q, q - p + 1, true, out);
  }
  if (early) {
    const int64_t e = s.newest + 1;
    if (s.early == e) {
      if (e - p + 1 <= max_window_panes_) EmitWindows(s, e, e - p + 1, true, out);
    } else {
      EmitWindows(s, e, 1, false, out);
      s.early = e;
    }
  }
}

// One pass for every size: windows share their end, so merging panes from q backwards passes the
// end of each smaller window on the way to the largest (max_window_panes_ merges per end, not the
// sum of the sizes).
void SlidingWindowOperator::EmitWindows(const Series& s, int64_t q, int64_t min_panes, bool update,
                                        OutputBatch& out) {
  const int64_t oldest_retained = s.newest - static_cast<int64_t>(ring_) + 1;
  scratch_.Clear();
  int64_t max_event_time_ms = INT64_MIN;
  const size_t n = window_panes_.size();
  size_t w = 0;
  for (int64_t k = 1; w < n; ++k) {
    const int64_t r = q - k + 1;
    if (r < oldest_retained) {
      // The rest would need panes that have left the ring (only after updates: a new window's
      // panes are always retained).
      for (; w < n; ++w) unrecomputable_total_ += window_panes_[w] >= min_panes ? 1 : 0;
      break;
    }
    const PaneSlot& slot = SlotOf(s, r);
    if (slot.pane == r) {
      scratch_.Merge(slot.agg);
      max_event_time_ms = std::max(max_event_time_ms, slot.max_event_time_ms);
    }
    for (; w < n && window_panes_[w] == k; ++w) {
      if (k < min_panes) continue;
      WindowSummary& out_window = out.Emplace<kind::WindowSummary>();
      out_window.series = s.key;
      out_window.end_ms = (q + 1) * pane_ms_;
      out_window.start_ms = out_window.end_ms - k * pane_ms_;
      out_window.max_event_time_ms = max_event_time_ms;
      out_window.update = update;
      out_window.agg = scratch_;
      ++(update ? updates_total_ : windows_total_);
    }
  }
}

// Checkpoint records (the `checkpoint` record table, under this stage's prefix):
//   key ""                               value: varint version (1), varint pane ms, zigzag
//                                               watermark
//   key str(instance) str(model) str(metric)
//                                        value: varint version (2), zigzag newest pane, zigzag
//                                               early end pane
//   key str(instance) str(model) str(metric) be64(pane ^ 2^63)
//                                        value: varint version (2), zigzag max event time,
//                                               Aggregate encoding
// A series record sorts before its pane records (its key is their prefix). Earlier versions wrote
// the whole ring in the series record (version 1: newest, early, then varint slots, each zigzag
// pane, zigzag max event time, varint length, Aggregate encoding); it is restored and rewritten
// as version 2 and pane records at the next checkpoint.
namespace {

constexpr uint64_t kCheckpointVersion = 1;  // the operator record; series records with the ring
constexpr uint64_t kRecordVersion = 2;      // series records without the ring, pane records

}  // namespace

void SlidingWindowOperator::SeriesCheckpointKey(const SeriesKey& key, std::string* out) const {
  out->clear();
  AppendStr(out, interner_->Name(key.instance));
  AppendStr(out, interner_->Name(key.model));
  AppendStr(out, interner_->Name(key.metric));
}

void SlidingWindowOperator::PaneCheckpointKey(const SeriesKey& key, int64_t pane,
                                              std::string* out) const {
  SeriesCheckpointKey(key, out);
  AppendOrdered64(out, pane);
}

void SlidingWindowOperator::MarkChanged(Series& s, PaneSlot& slot, int64_t p) {
  if (slot.changed) return;
  slot.changed = true;
  if (s.dirty.size() < kMaxDirty) {
    s.dirty.push_back(p);
  } else {
    s.scan = true;
  }
}

void SlidingWindowOperator::CheckpointSlot(const Series& s, PaneSlot& slot, int64_t oldest,
                                           CheckpointWriter& writer) {
  const bool live = slot.pane != kNoPane && slot.pane >= oldest;
  if (slot.stored_pane != kNoPane && (slot.stored_pane != slot.pane || !live)) {
    PaneCheckpointKey(s.key, slot.stored_pane, &checkpoint_key_);
    writer.Delete(checkpoint_key_);
    slot.stored_pane = kNoPane;
  }
  if (!live) return;
  PaneCheckpointKey(s.key, slot.pane, &checkpoint_key_);
  checkpoint_value_.clear();
  PutVarint(&checkpoint_value_, kRecordVersion);
  PutVarint(&checkpoint_value_, ZigZag(slot.max_event_time_ms));
  slot.agg.EncodeTo(&checkpoint_value_);
  writer.Put(checkpoint_key_, std::move(checkpoint_value_));
  slot.stored_pane = slot.pane;
}

Status SlidingWindowOperator::Checkpoint(CheckpointWriter& writer) {
  if (interner_ == nullptr) return Status::Internal("sliding_window: Checkpoint before Open");
  std::string value;
  PutVarint(&value, kCheckpointVersion);
  PutVarint(&value, static_cast<uint64_t>(pane_ms_));
  PutVarint(&value, ZigZag(watermark_ms_));
  // Unchanged (no pane arrived, the watermark stood): not written, so that a checkpoint of an idle
  // engine stays empty. While restored records are held (the pane is not known yet) the stored
  // header keeps naming their pane.
  if (!holding_ && value != checkpointed_header_) {
    checkpointed_header_ = value;
    writer.Put("", std::move(value));
  }
  for (const std::string& key : pending_deletes_) writer.Delete(key);
  pending_deletes_.clear();
  const auto ring = static_cast<int64_t>(ring_);
  for (Series& s : series_) {
    if (!s.changed) continue;
    s.changed = false;
    s.stored = true;
    SeriesCheckpointKey(s.key, &checkpoint_key_);
    value.clear();
    PutVarint(&value, kRecordVersion);
    PutVarint(&value, ZigZag(s.newest));
    PutVarint(&value, ZigZag(s.early));
    writer.Put(checkpoint_key_, std::move(value));
    value.clear();
    const int64_t oldest = s.newest - ring + 1;
    auto visit = [&](PaneSlot& slot) {
      if (!slot.changed) return;  // (a slot listed under two pane numbers is visited once)
      slot.changed = false;
      CheckpointSlot(s, slot, oldest, writer);
    };
    if (s.scan) {
      for (PaneSlot& slot : s.ring) visit(slot);
    } else {
      for (int64_t p : s.dirty) visit(SlotOf(s, p));
    }
    s.dirty.clear();
    s.scan = false;
    // Panes that left the ring since the previous checkpoint without another taking their slot.
    if (s.stored_oldest != kNoPane) {
      for (int64_t r = std::max(s.stored_oldest, oldest - ring); r < oldest; ++r) {
        PaneSlot& slot = SlotOf(s, r);
        if (slot.stored_pane != kNoPane && slot.stored_pane < oldest)
          CheckpointSlot(s, slot, oldest, writer);
      }
    }
    s.stored_oldest = oldest;
  }
  return Status::Ok();
}

Status SlidingWindowOperator::Restore(const CheckpointReader& reader) {
  if (mutable_interner_ == nullptr) return Status::Internal("sliding_window: Restore before Open");
  restore_mode_ = RestoreMode::kNoHeader;
  Status st = reader.ForEach([this](std::string_view key, std::string_view value) -> Status {
    if (!key.empty()) {
      switch (restore_mode_) {
        case RestoreMode::kNoHeader:
          return Status::Corruption(
              "sliding_window checkpoint: series record without the "
              "operator record");
        case RestoreMode::kRestore:
          return RestoreRecord(key, value);
        case RestoreMode::kHold:
          held_records_.emplace_back(key, value);
          held_series_ += StrsLength(key, 3) == key.size() ? 1 : 0;
          return Status::Ok();
        case RestoreMode::kDelete:
          pending_deletes_.emplace_back(key);
          return Status::Ok();
      }
      return Status::Ok();
    }
    // The operator record (the empty key sorts first).
    const std::string record(value);
    uint64_t version = 0, pane_ms = 0;
    int64_t watermark = 0;
    if (!GetVarint(&value, &version) || version != kCheckpointVersion ||
        !GetVarint(&value, &pane_ms) || !GetZigZag(&value, &watermark) ||
        pane_ms > static_cast<uint64_t>(INT64_MAX)) {
      return Status::Corruption("sliding_window checkpoint: malformed operator record");
    }
    const auto pane = static_cast<int64_t>(pane_ms);
    // The watermark does not depend on the pane.
    watermark_ms_ = std::max(watermark_ms_, watermark);
    if (pane != 0 && pane_ms_ == 0 && !broken_) {
      // The upstream's pane may have changed since: wait for its first summary (ResolveHeld).
      restore_mode_ = RestoreMode::kHold;
      holding_ = true;
      held_pane_ms_ = pane;
      checkpointed_header_ = record;
    } else if (pane != 0 && pane == pane_ms_ && !broken_) {
      restore_mode_ = RestoreMode::kRestore;
      checkpointed_header_ = record;
    } else {
      // Another pane: the records are in its units (their rings and pane numbers mean nothing
      // now); delete them, the next checkpoint rewrites the operator record.
      restore_mode_ = RestoreMode::kDelete;
    }
    return Status::Ok();
  });
  PublishMetrics();
  return st;
}

Status SlidingWindowOperator::ResolveHeld() {
  if (!holding_) return Status::Ok();
  holding_ = false;
  std::vector<std::pair<std::string, std::string>> held = std::move(held_records_);
  held_records_ = {};
  held_series_ = 0;
  Status result = Status::Ok();
  if (!broken_ && pane_ms_ == held_pane_ms_) {
    for (const auto& [key, value] : held) {
      Status st = RestoreRecord(key, value);
      if (!st.ok() && result.ok()) result = std::move(st);
    }
    return result;
  }
  for (auto& [key, value] : held) pending_deletes_.push_back(std::move(key));
  return result;
}

Status SlidingWindowOperator::RestoreRecord(std::string_view key, std::string_view value) {
  const size_t series_key = StrsLength(key, 3);
  if (series_key == key.size()) return RestoreSeries(key, value);
  if (series_key != std::string_view::npos && key.size() == series_key + 8) {
    return RestorePane(key, value);
  }
  return Status::Corruption("sliding_window checkpoint: malformed record key");
}

Status SlidingWindowOperator::RestoreSeries(std::string_view key, std::string_view value) {
  auto corrupt = [](std::string_view what) {
    return Status::Corruption("sliding_window checkpoint: " + std::string(what));
  };
  const std::string_view key_record = key;
  restored_series_ = kNoSeries;
  std::string_view instance, model, metric;
  if (!GetStr(&key, &instance) || !GetStr(&key, &model) || !GetStr(&key, &metric) || !key.empty()) {
    return corrupt("malformed series key");
  }
  // Version 1 holds the ring (`slots` panes); version 2 does not (pane records follow).
  uint64_t version = 0, slots = 0;
  int64_t newest = 0, early = 0;
  if (!GetVarint(&value, &version) ||
      (version != kCheckpointVersion && version != kRecordVersion) || !GetZigZag(&value, &newest) ||
      !GetZigZag(&value, &early) || (version == kCheckpointVersion && !GetVarint(&value, &slots))) {
    return corrupt("malformed series record");
  }
  const SeriesKey series{mutable_interner_->Intern(instance), mutable_interner_->Intern(model),
                         mutable_interner_->Intern(metric)};
  if (series.instance == 0 || series.model == 0 || series.metric == 0) {
    return Status::Unavailable("sliding_window checkpoint: string table full");
  }
  const auto ring = static_cast<int64_t>(ring_);
  // Hostile or corrupt pane numbers would overflow `newest - ring` and the window ends
  // `(q + 1) * pane` (q up to newest + 1 with early emission).
  const int64_t max_pane = INT64_MAX / pane_ms_ - 2;
  auto valid_pane = [&](int64_t p) {
    return p == kNoPane || (p >= ring - max_pane && p <= max_pane);
  };
  if (!valid_pane(newest) || !valid_pane(early)) {
    return corrupt("pane number out of range");
  }
  const uint32_t index = FindOrAddSeries(series);
  if (index == kNoSeries || index == kStaleName) {
    ++(index == kNoSeries ? series_limit_total_ : stale_name_total_);
    // Not restored (max_series was lowered): delete its record (and its pane records, which
    // follow), else they linger for ever.
    pending_deletes_.emplace_back(key_record);
    return Status::Ok();
  }
  Series& s = series_[index];
  s.stored = true;
  s.newest = newest;
  s.early = early;
  s.stored_oldest = newest == kNoPane ? kNoPane : newest - ring + 1;
  restored_series_ = index;
  restored_key_.assign(key_record);
  bool dropped = false;
  for (uint64_t i = 0; i < slots; ++i) {
    int64_t pane = 0, max_time = 0;
    uint64_t length = 0;
    if (!GetZigZag(&value, &pane) || !GetZigZag(&value, &max_time) || !GetVarint(&value, &length) ||
        length > value.size()) {
      return corrupt("truncated pane");
    }
    const std::string_view bytes = value.substr(0, length);
    value.remove_prefix(length);
    if (newest == kNoPane || pane > newest || pane <= newest - ring) {  // a smaller ring now
      dropped = true;
      continue;
    }
    PaneSlot& slot = SlotOf(s, pane);
    INFERSCOPE_RETURN_IF_ERROR(Aggregate::DecodeFrom(bytes, &slot.agg));
    slot.pane = pane;
    slot.max_event_time_ms = max_time;
    MarkChanged(s, slot, pane);  // not in a pane record yet: written at the next checkpoint
  }
  // Restored state equals the stored records unless this is a version-1 record (rewritten as
  // version 2 and pane records) or panes were dropped.
  s.changed = version == kCheckpointVersion || dropped;
  return Status::Ok();
}

Status SlidingWindowOperator::RestorePane(std::string_view key, std::string_view value) {
  const std::string_view series_key = key.substr(0, key.size() - 8);
  if (restored_series_ == kNoSeries || series_key != restored_key_) {
    // Its series was not restored (series_limit), or it has no series record: delete it.
    pending_deletes_.emplace_back(key);
    return Status::Ok();
  }
  Series& s = series_[restored_series_];
  const int64_t pane = ReadOrdered64(key.substr(series_key.size()));
  uint64_t version = 0;
  int64_t max_time = 0;
  if (!GetVarint(&value, &version) || version != kRecordVersion || !GetZigZag(&value, &max_time)) {
    return Status::Corruption("sliding_window checkpoint: malformed pane record");
  }
  const auto ring = static_cast<int64_t>(ring_);
  if (s.newest == kNoPane || pane > s.newest || pane <= s.newest - ring) {
    pending_deletes_.emplace_back(key);  // outside the ring of the current options
    return Status::Ok();
  }
  PaneSlot& slot = SlotOf(s, pane);
  INFERSCOPE_RETURN_IF_ERROR(Aggregate::DecodeFrom(value, &slot.agg));
  slot.pane = pane;
  slot.max_event_time_ms = max_time;
  slot.stored_pane = pane;
  return Status::Ok();
}

int64_t SlidingWindowOperator::ring_panes() const {
  int64_t n = 0;
  for (const Series& s : series_) {
    for (const PaneSlot& slot : s.ring) {
      n += slot.pane != kNoPane && slot.pane > s.newest - static_cast<int64_t>(ring_) ? 1 : 0;
    }
  }
  return n;
}

void SlidingWindowOperator::PublishMetrics() {
  if (windows_out_ == nullptr) return;
  auto publish = [](Counter* c, uint64_t total, uint64_t& published) {
    if (total > published) c->Inc(total - published);
    published = total;
  };
  publish(windows_out_, windows_total_, windows_published_);
  publish(updates_out_, updates_total_, updates_published_);
  publish(too_old_, too_old_total_, too_old_published_);
  publish(bad_pane_, bad_pane_total_, bad_pane_published_);
  publish(series_limit_, series_limit_total_, series_limit_published_);
  publish(stale_name_, stale_name_total_, stale_name_published_);
  publish(unrecomputable_, unrecomputable_total_, unrecomputable_published_);
  publish(expired_, expired_total_, expired_published_);
  series_gauge_->Set(static_cast<double>(series_.size()));
}

}  // namespace inferscope
