#include "operators/window_aggregate.h"

#include <algorithm>
#include <bit>
#include <string>

#include "pipeline/coding.h"
#include "pipeline/int_math.h"
#include "pipeline/interner.h"

namespace inferscope {
namespace {

constexpr int64_t kMinPaneMs = 100;
constexpr int64_t kMaxPaneMs = 7 * 86'400'000LL;
constexpr int64_t kMaxRing = 512;
constexpr size_t kMaxPublishers = 4096;
constexpr int64_t kMaxSeriesLimit = 100'000'000;
// Event times beyond ±2^53 ms (±285,000 years) are rejected so pane arithmetic cannot overflow.
constexpr int64_t kMaxAbsTimeMs = int64_t{1} << 53;
constexpr size_t kInitialTableSize = 1024;
// Events between the prefetch of an event's bins and its application (the aggregates are
// prefetched twice as far ahead).
constexpr size_t kPrefetchDistance = 4;
// Groups OnTimer visits for expiry per call (every 100 ms in the engine): a million series within
// about 6 s, at a few nanoseconds each.
constexpr size_t kExpireScanGroups = 16384;

uint64_t Hash(uint64_t instance_model, uint32_t metric) {
  return SeriesHash(instance_model, metric);
}

}  // namespace

Status WindowAggregateOperator::Options::Validate() const {
  if (pane_ms < kMinPaneMs || pane_ms > kMaxPaneMs) {
    return Status::InvalidArgument("pane must be between 100ms and 7d, got " +
                                   std::to_string(pane_ms) + "ms");
  }
  if (out_of_orderness_ms < 0) {
    return Status::InvalidArgument("out_of_orderness must not be negative");
  }
  if (allowed_lateness_ms < 0) {
    return Status::InvalidArgument("allowed_lateness must not be negative");
  }
  if (max_publisher_lag_ms < 0) {
    return Status::InvalidArgument("max_publisher_lag must not be negative");
  }
  // Saturating: two values of 60000000000d each overflowed int64 (undefined behaviour) and could
  // wrap into a sum that passed.
  const int64_t span =
      SaturatingAdd(SaturatingAdd(out_of_orderness_ms, allowed_lateness_ms), max_publisher_lag_ms);
  if (span / pane_ms + 2 > kMaxRing) {
    return Status::InvalidArgument(
        "out_of_orderness + allowed_lateness + max_publisher_lag must be at most " +
        std::to_string(kMaxRing - 2) + " panes, got " +
        (span == std::numeric_limits<int64_t>::max() ? "a sum beyond 2^63 ms"
                                                     : std::to_string(span) + "ms"));
  }
  if (idle_timeout_ms < 0) return Status::InvalidArgument("idle_timeout must not be negative");
  if (max_series < kNumWellKnownIds || max_series > kMaxSeriesLimit) {
    return Status::InvalidArgument("max_series must be between " +
                                   std::to_string(kNumWellKnownIds) + " and " +
                                   std::to_string(kMaxSeriesLimit));
  }
  if (max_series_per_publisher != 0 &&
      (max_series_per_publisher < kNumWellKnownIds || max_series_per_publisher > max_series)) {
    return Status::InvalidArgument(
        "max_series_per_publisher must be 0 (half of max_series) or "
        "between " +
        std::to_string(kNumWellKnownIds) + " and max_series");
  }
  if (series_ttl_ms < 0) return Status::InvalidArgument("series_ttl must not be negative");
  if (early_slice_ms != 0 &&
      (early_slice_ms < 10 || early_slice_ms > pane_ms || pane_ms % early_slice_ms != 0)) {
    return Status::InvalidArgument(
        "early_slice must be 0 (off) or 10ms..pane and divide the pane, got " +
        std::to_string(early_slice_ms) + "ms");
  }
  return Status::Ok();
}

Result<WindowAggregateOperator::Options> WindowAggregateOperator::ParseOptions(
    const ConfigNode& node) {
  INFERSCOPE_RETURN_IF_ERROR(node.CheckKnownFields(
      {"pane", "out_of_orderness", "idle_timeout", "allowed_lateness", "max_publisher_lag",
       "flush_on_close", "max_series", "max_series_per_publisher", "series_ttl", "early_slice"}));
  Options o;
  Result<int64_t> pane = node.GetDurationMs("pane", o.pane_ms, kMinPaneMs);
  if (!pane.ok()) return pane.status();
  Result<int64_t> ooo = node.GetDurationMs("out_of_orderness", o.out_of_orderness_ms, 0);
  if (!ooo.ok()) return ooo.status();
  Result<int64_t> idle = node.GetDurationMs("idle_timeout", o.idle_timeout_ms, 0);
  if (!idle.ok()) return idle.status();
  Result<int64_t> lateness = node.GetDurationMs("allowed_lateness", o.allowed_lateness_ms, 0);
  if (!lateness.ok()) return lateness.status();
  Result<int64_t> lag = node.GetDurationMs("max_publisher_lag", o.max_publisher_lag_ms, 0);
  if (!lag.ok()) return lag.status();
  Result<bool> flush = node.GetBool("flush_on_close", o.flush_on_close);
  if (!flush.ok()) return flush.status();
  Result<int64_t> max_series =
      node.GetInt("max_series", o.max_series, kNumWellKnownIds, kMaxSeriesLimit);
  if (!max_series.ok()) return max_series.status();
  Result<int64_t> per_publisher =
      node.GetInt("max_series_per_publisher", o.max_series_per_publisher, 0, kMaxSeriesLimit);
  if (!per_publisher.ok()) return per_publisher.status();
  Result<int64_t> ttl = node.GetDurationMs("series_ttl", o.series_ttl_ms, 0);
  if (!ttl.ok()) return ttl.status();
  Result<int64_t> early = node.GetDurationMs("early_slice", o.early_slice_ms, 0);
  if (!early.ok()) return early.status();
  o.early_slice_ms = *early;
  o.pane_ms = *pane;
  o.out_of_orderness_ms = *ooo;
  o.idle_timeout_ms = *idle;
  o.allowed_lateness_ms = *lateness;
  o.max_publisher_lag_ms = *lag;
  o.flush_on_close = *flush;
  o.max_series = *max_series;
  o.max_series_per_publisher = *per_publisher;
  o.series_ttl_ms = *ttl;
  if (Status st = o.Validate(); !st.ok()) return node.Error("", st.message());
  return o;
}

Result<std::unique_ptr<WindowAggregateOperator>> WindowAggregateOperator::Create(
    const ConfigNode& options) {
  Result<Options> parsed = ParseOptions(options);
  if (!parsed.ok()) return parsed.status();
  return std::make_unique<WindowAggregateOperator>(*parsed);
}

WindowAggregateOperator::WindowAggregateOperator(const Options& options)
    : options_(options),
      pane_ms_(std::clamp(options.pane_ms, kMinPaneMs, kMaxPaneMs)),
      out_of_orderness_ms_(
          std::clamp<int64_t>(options.out_of_orderness_ms, 0, (kMaxRing - 2) * pane_ms_)),
      // An event is applied only if its pane ends more than allowed_lateness after the watermark,
      // and the watermark trails the largest event time by at most out_of_orderness +
      // max_publisher_lag, so at most ceil(that sum / pane) + 1 panes are open at once; a ring of
      // that many slots (per group, and of close lists) never holds two open panes in one slot.
      ring_(static_cast<size_t>(std::min(
          kMaxRing,
          (out_of_orderness_ms_ + std::clamp<int64_t>(options.allowed_lateness_ms, 0, kMaxPaneMs) +
           std::clamp<int64_t>(options.max_publisher_lag_ms, 0, kMaxPaneMs)) /
                  pane_ms_ +
              2))),
      table_(kInitialTableSize),
      table_mask_(kInitialTableSize - 1),
      table_shift_(64 - std::countr_zero(kInitialTableSize)),
      close_lists_(ring_) {
  // Whatever the options, the ring bounds the span (Validate rejects what does not fit): ring_
  // slots hold every pane ending within (ring_ - 1) panes of the largest event time.
  const int64_t span = (static_cast<int64_t>(ring_) - 1) * pane_ms_;
  allowed_lateness_ms_ =
      std::clamp<int64_t>(options.allowed_lateness_ms, 0, span - out_of_orderness_ms_);
  max_publisher_lag_ms_ = std::clamp<int64_t>(options.max_publisher_lag_ms, 0,
                                              span - out_of_orderness_ms_ - allowed_lateness_ms_);
  max_series_per_publisher_ = options.max_series_per_publisher > 0
                                  ? options.max_series_per_publisher
                                  : std::max<int64_t>(options.max_series / 2, kNumWellKnownIds);
}

WindowAggregateOperator::~WindowAggregateOperator() = default;

Status WindowAggregateOperator::Open(const StageContext& ctx) {
  clock_ = ctx.clock != nullptr ? ctx.clock : &SystemClock::Instance();
  interner_ = ctx.interner;
  stage_ = ctx.name;
  metrics_ = ctx.metrics;
  if (ctx.metrics == nullptr) return Status::Ok();
  MetricsRegistry& m = *ctx.metrics;
  const Labels stage = {{"stage", ctx.name}};
  events_in_ = m.GetCounter("inferscope_window_events_total",
                            "Events received by the window aggregation operator", stage);
  summaries_out_ = m.GetCounter("inferscope_window_summaries_total",
                                "Series-pane summaries emitted when panes closed", stage);
  late_ = m.GetCounter("inferscope_window_late_events_total",
                       "Events for fired panes, applied within the allowed lateness", stage);
  updates_out_ = m.GetCounter("inferscope_window_updates_total",
                              "Series-pane summaries re-emitted after late events", stage);
  early_out_ = m.GetCounter("inferscope_window_early_summaries_total",
                            "Early summaries of open panes (early_slice)", stage);
  const char* rejected_help = "Events not applied, by reason";
  rejected_series_ = m.GetCounter("inferscope_window_rejected_events_total", rejected_help,
                                  {{"stage", ctx.name}, {"reason", "series_limit"}});
  rejected_time_ = m.GetCounter("inferscope_window_rejected_events_total", rejected_help,
                                {{"stage", ctx.name}, {"reason", "bad_time"}});
  rejected_metric_ = m.GetCounter("inferscope_window_rejected_events_total", rejected_help,
                                  {{"stage", ctx.name}, {"reason", "no_metric"}});
  rejected_stale_ = m.GetCounter("inferscope_window_rejected_events_total", rejected_help,
                                 {{"stage", ctx.name}, {"reason", "stale_name"}});
  expired_ = m.GetCounter("inferscope_window_series_expired_total",
                          "Series forgotten after series_ttl of event time without events", stage);
  open_panes_gauge_ =
      m.GetGauge("inferscope_window_open_panes", "Series-pane aggregates currently open", stage);
  series_gauge_ = m.GetGauge("inferscope_window_series", "Series tracked", stage);
  watermark_gauge_ = m.GetGauge("inferscope_window_watermark_seconds",
                                "Event-time watermark (Unix seconds)", stage);
  return Status::Ok();
}

uint32_t WindowAggregateOperator::FindOrAddGroup(uint64_t instance_model, uint32_t metric,
                                                 uint32_t num_metrics, PublisherClock* owner) {
  size_t i = static_cast<size_t>(Hash(instance_model, metric) >> table_shift_);
  while (true) {
    TableSlot& slot = table_[i];
    if (slot.group == kNoGroup) break;
    if (slot.instance_model == instance_model && slot.metric == metric) return slot.group;
    i = (i + 1) & table_mask_;
  }
  add_failure_ = AddFailure::kLimit;
  if (series_ + num_metrics > options_.max_series) return kNoGroup;
  if (owner != nullptr && owner->series + num_metrics > max_series_per_publisher_) return kNoGroup;
  // The group keeps its names: the Interner must not reclaim them while it lives.
  const auto instance = static_cast<StringId>(instance_model >> 32);
  const auto model = static_cast<StringId>(instance_model);
  if (interner_ != nullptr) {
    add_failure_ = AddFailure::kStaleName;
    if (!interner_->Ref(instance)) return kNoGroup;
    if (!interner_->Ref(model)) {
      interner_->Unref(instance);
      return kNoGroup;
    }
    if (metric != 0 && !interner_->Ref(metric)) {
      interner_->Unref(instance);
      interner_->Unref(model);
      return kNoGroup;
    }
  }
  add_failure_ = AddFailure::kNone;
  std::vector<uint32_t>& free = free_groups_[num_metrics == 1 ? 0 : 1];
  uint32_t group;
  if (!free.empty()) {
    // An expired group's storage: its panes were purged, so its slots are free and cleared.
    group = free.back();
    free.pop_back();
    Group& g = groups_[group];
    g.instance_model = instance_model;
    g.metric = metric;
    g.last_event_ms = INT64_MIN;
    g.open = 0;
    g.changed = false;
    g.live = true;
  } else {
    group = static_cast<uint32_t>(groups_.size());
    groups_.push_back({instance_model, metric, num_metrics, aggs_.size(), panes_.size()});
    aggs_.resize(aggs_.size() + ring_ * num_metrics);
    panes_.resize(panes_.size() + ring_);
  }
  Group& g = groups_[group];
  g.owner = kNoOwner;
  if (owner != nullptr) {
    g.owner = static_cast<uint32_t>(owner - publishers_.data());
    owner->series += num_metrics;
  }
  table_[i] = {instance_model, metric, group};
  series_ += num_metrics;
  if (groups_.size() * 2 > table_.size()) GrowTable();
  return group;
}

void WindowAggregateOperator::EraseFromTable(uint64_t instance_model, uint32_t metric) {
  size_t i = static_cast<size_t>(Hash(instance_model, metric) >> table_shift_);
  while (true) {
    const TableSlot& slot = table_[i];
    if (slot.group == kNoGroup) return;
    if (slot.instance_model == instance_model && slot.metric == metric) break;
    i = (i + 1) & table_mask_;
  }
  // Backward-shift deletion: move later entries of the probe run into the hole unless their home
  // slot lies cyclically in (hole, their slot].
  size_t j = i;
  while (true) {
    j = (j + 1) & table_mask_;
    const TableSlot& next = table_[j];
    if (next.group == kNoGroup) break;
    const size_t home = static_cast<size_t>(Hash(next.instance_model, next.metric) >> table_shift_);
    const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
    if (stays) continue;
    table_[i] = next;
    i = j;
  }
  table_[i] = TableSlot{};
}

void WindowAggregateOperator::GroupKey(const Group& g, std::string* key) const {
  key->clear();
  AppendStr(key, interner_->Name(static_cast<StringId>(g.instance_model >> 32)));
  AppendStr(key, interner_->Name(static_cast<StringId>(g.instance_model)));
  AppendStr(key, g.metric != 0 ? interner_->Name(g.metric) : std::string_view());
}

void WindowAggregateOperator::PaneKey(const Group& g, int64_t pane, std::string* key) const {
  GroupKey(g, key);
  AppendOrdered64(key, pane);
}

void WindowAggregateOperator::ExpireGroup(uint32_t group) {
  Group& g = groups_[group];
  // Its panes were purged; the deletion of their records is not checkpointed yet.
  for (size_t slot = 0; slot < ring_; ++slot) {
    PaneSlot& ps = panes_[g.first_pane + slot];
    if (ps.stored_pane != kNoPane && interner_ != nullptr) {
      std::string key;
      PaneKey(g, ps.stored_pane, &key);
      pending_deletes_.push_back(std::move(key));
    }
    ps.stored_pane = kNoPane;
    ps.changed = false;
  }
  EraseFromTable(g.instance_model, g.metric);
  series_ -= g.num_metrics;
  if (g.owner != kNoOwner) publishers_[g.owner].series -= g.num_metrics;
  if (interner_ != nullptr) {
    interner_->Unref(static_cast<StringId>(g.instance_model >> 32));
    interner_->Unref(static_cast<StringId>(g.instance_model));
    if (g.metric != 0) interner_->Unref(g.metric);
  }
  g.live = false;
  g.changed = false;
  g.owner = kNoOwner;
  free_groups_[g.num_metrics == 1 ? 0 : 1].push_back(group);
  ++series_expired_;
  if (expired_ != nullptr) expired_->Inc();
}

void WindowAggregateOperator::ExpireIdleSeries(size_t max_groups) {
  if (options_.series_ttl_ms <= 0 || watermark_ms_ == INT64_MIN || groups_.empty()) return;
  // Groups referenced by pending updates are not idle; those lists are empty between steps.
  if (!dirty_.empty()) return;
  const int64_t limit = watermark_ms_ - options_.series_ttl_ms;
  max_groups = std::min(max_groups, groups_.size());
  for (size_t n = 0; n < max_groups; ++n) {
    if (expire_cursor_ >= groups_.size()) expire_cursor_ = 0;
    const auto group = static_cast<uint32_t>(expire_cursor_++);
    const Group& g = groups_[group];
    if (g.live && g.open == 0 && g.last_event_ms < limit) ExpireGroup(group);
  }
}

uint32_t WindowAggregateOperator::FindGroup(uint64_t instance_model, uint32_t metric) const {
  size_t i = static_cast<size_t>(Hash(instance_model, metric) >> table_shift_);
  while (true) {
    const TableSlot& slot = table_[i];
    if (slot.group == kNoGroup) return kNoGroup;
    if (slot.instance_model == instance_model && slot.metric == metric) return slot.group;
    i = (i + 1) & table_mask_;
  }
}

void WindowAggregateOperator::ResolveBatch(const EventBatch& batch) {
  const size_t n = batch.events.size();
  batch_groups_.resize(n);
  batch_slots_.resize(n);
  int64_t pane_start = 0;
  int64_t pane_end = 0;
  size_t slot = 0;
  for (size_t i = 0; i < n; ++i) {
    const Event& e = batch.events[i];
    const int64_t t = e.time_ms;
    uint32_t group = kNoGroup;
    if (t <= kMaxAbsTimeMs && t >= -kMaxAbsTimeMs &&
        (e.kind == EventKind::kRequest || e.metric != 0)) {
      if (t < pane_start || t >= pane_end) {
        const int64_t pane = FloorDiv(t, pane_ms_);
        pane_start = pane * pane_ms_;
        pane_end = pane_start + pane_ms_;
        slot = SlotOf(pane);
      }
      const uint64_t instance_model = (static_cast<uint64_t>(e.instance) << 32) | e.model;
      const bool request_group = e.kind == EventKind::kRequest || e.metric <= kNumWellKnownIds;
      group = FindGroup(instance_model, request_group ? 0 : e.metric);
    }
    batch_groups_[i] = group;
    batch_slots_[i] = static_cast<uint32_t>(slot);
  }
}

void WindowAggregateOperator::PrefetchAggregates(const Event& e, size_t i) const {
  const uint32_t group = batch_groups_[i];
  if (group == kNoGroup) return;
  const Group& g = groups_[group];
  const size_t slot = batch_slots_[i];
  __builtin_prefetch(&panes_[g.first_pane + slot], 1);
  const Aggregate* a = &aggs_[g.first_agg + slot * g.num_metrics];
  auto fetch = [](const Aggregate* agg) {
    // Add() touches the first two lines (moments, then the sketch's header).
    __builtin_prefetch(agg, 1);
    __builtin_prefetch(reinterpret_cast<const char*>(agg) + 64, 1);
  };
  if (e.kind != EventKind::kRequest) {
    fetch(g.metric != 0 ? a : a + (e.metric - 1));
    return;
  }
  for (int m = 0; m < 5; ++m) fetch(a + m);
  if (e.present & (kHasCachedTokens | kHasCost | kHasQuality)) {
    if (e.Has(kHasCachedTokens)) fetch(a + 5);
    if (e.Has(kHasCost)) fetch(a + 6);
    if (e.Has(kHasQuality)) fetch(a + 7);
  }
}

void WindowAggregateOperator::PrefetchBins(const Event& e, size_t i) const {
  const uint32_t group = batch_groups_[i];
  if (group == kNoGroup) return;
  const Group& g = groups_[group];
  const Aggregate* a = &aggs_[g.first_agg + batch_slots_[i] * g.num_metrics];
  if (e.kind != EventKind::kRequest) {
    (g.metric != 0 ? a : a + (e.metric - 1))->sketch.PrefetchBin(e.value);
    return;
  }
  if (e.Has(kHasTtft)) a[0].sketch.PrefetchBin(e.ttft_ms);
  if (e.Has(kHasTpot)) a[1].sketch.PrefetchBin(e.tpot_ms);
  if (e.Has(kHasE2e)) a[2].sketch.PrefetchBin(e.e2e_ms);
  if (e.Has(kHasPromptTokens)) a[3].sketch.PrefetchBin(e.prompt_tokens);
  if (e.Has(kHasOutputTokens)) a[4].sketch.PrefetchBin(e.output_tokens);
  if (e.present & (kHasCachedTokens | kHasCost | kHasQuality)) {
    if (e.Has(kHasCachedTokens)) a[5].sketch.PrefetchBin(e.cached_tokens);
    if (e.Has(kHasCost)) a[6].sketch.PrefetchBin(e.cost_usd);
    if (e.Has(kHasQuality)) a[7].sketch.PrefetchBin(e.quality);
  }
}

void WindowAggregateOperator::GrowTable() {
  std::vector<TableSlot> old(table_.size() * 2);
  old.swap(table_);
  table_mask_ = table_.size() - 1;
  --table_shift_;
  for (const TableSlot& s : old) {
    if (s.group == kNoGroup) continue;
    size_t i = static_cast<size_t>(Hash(s.instance_model, s.metric) >> table_shift_);
    while (table_[i].group != kNoGroup) i = (i + 1) & table_mask_;
    table_[i] = s;
  }
}

Aggregate* WindowAggregateOperator::PaneAggregates(uint32_t group, int64_t pane, size_t slot,
                                                   int64_t time_ms) {
  Group& g = groups_[group];
  PaneSlot& ps = panes_[g.first_pane + slot];
  if (ps.pane != pane) {
    if (ps.pane != kNoPane) return nullptr;
    CloseList& list = close_lists_[slot];
    if (list.pane != pane) {
      if (!list.groups.empty()) return nullptr;
      list.pane = pane;
      // A pane claimed after the watermark passed its end (a late event within the allowed
      // lateness) has fired already: its groups are emitted as updates.
      list.fired = (pane + 1) * pane_ms_ <= watermark_ms_;
      if (!list.fired && (oldest_unfired_pane_ == kNoPane || pane < oldest_unfired_pane_)) {
        oldest_unfired_pane_ = pane;
      }
      if (oldest_open_pane_ == kNoPane || pane < oldest_open_pane_) oldest_open_pane_ = pane;
      if (newest_open_pane_ == kNoPane || pane > newest_open_pane_) newest_open_pane_ = pane;
      next_close_end_ms_ = std::min(next_close_end_ms_, (pane + 1) * pane_ms_);
    }
    list.groups.push_back(group);
    ++g.open;
    ps.pane = pane;
    ps.max_event_time_ms = time_ms;
    ps.dirty = false;
    ps.emitted = 0;
    ++open_panes_;
  } else if (time_ms > ps.max_event_time_ms) {
    ps.max_event_time_ms = time_ms;
  }
  ps.early_touched = true;
  MarkChanged(g, ps);
  if (time_ms > g.last_event_ms) g.last_event_ms = time_ms;
  return &aggs_[g.first_agg + slot * g.num_metrics];
}

WindowAggregateOperator::PublisherClock* WindowAggregateOperator::FindOrAddPublisher(
    StringId publisher) {
  for (PublisherClock& p : publishers_) {
    if (p.publisher == publisher) return &p;
  }
  if (publishers_.size() >= kMaxPublishers) return nullptr;
  // Reserved in full at the first publisher: pointers into publishers_ stay valid.
  if (publishers_.capacity() < kMaxPublishers) publishers_.reserve(kMaxPublishers);
  PublisherClock& p = publishers_.emplace_back();
  p.publisher = publisher;
  // Checkpoints name publishers for the process's life: their names are never reclaimed.
  if (interner_ != nullptr && publisher != 0) interner_->Pin(publisher);
  return &p;
}

int64_t WindowAggregateOperator::OthersProgress(const PublisherClock* p, int64_t now_ms) {
  progress_scratch_.clear();
  for (const PublisherClock& other : publishers_) {
    if (&other != p && other.fresh_max_ms != INT64_MIN && Active(other, now_ms)) {
      progress_scratch_.push_back(other.fresh_max_ms);
    }
  }
  if (progress_scratch_.empty()) return INT64_MIN;
  // The processing clock votes too: event time near it is progress, not an outlier, even when
  // the other active publishers are slow.
  progress_scratch_.push_back(now_ms);
  const auto median =
      progress_scratch_.begin() + static_cast<ptrdiff_t>(progress_scratch_.size() / 2);
  std::nth_element(progress_scratch_.begin(), median, progress_scratch_.end());
  return *median;
}

bool WindowAggregateOperator::SupportsAhead(const PublisherClock* p, int64_t t,
                                            int64_t running_max_ms, int64_t now_ms) {
  const int64_t others = OthersProgress(p, now_ms);
  if (others != INT64_MIN) return t <= others + max_publisher_lag_ms_;
  // Nobody else is active: the publisher's own recent progress, the clock, or a lasting jump.
  if (p != nullptr && p->fresh_max_ms != INT64_MIN && Active(*p, now_ms)) {
    running_max_ms = std::max(running_max_ms, p->fresh_max_ms);
  }
  if (running_max_ms != INT64_MIN && t <= running_max_ms + max_publisher_lag_ms_) return true;
  if (t <= now_ms + out_of_orderness_ms_ + max_publisher_lag_ms_) return true;
  const int64_t reanchor_ms = options_.idle_timeout_ms > 0 ? options_.idle_timeout_ms : 5'000;
  return p != nullptr && p->outlier_since_ms != INT64_MIN &&
         now_ms - p->outlier_since_ms >= reanchor_ms;
}

void WindowAggregateOperator::FutureOutlier(const Event& e, StringId publisher, PublisherClock* p,
                                            int64_t now_ms, OutputBatch& out) {
  out.Add<kind::DeadLetter>({e, "future_outlier", watermark_ms_});
  if (p != nullptr && p->outlier_since_ms == INT64_MIN) p->outlier_since_ms = now_ms;
  if (metrics_ == nullptr) return;
  Counter* counter = p != nullptr ? p->future_outliers : nullptr;
  if (counter == nullptr) {
    counter = RejectedByPublisher("future_outlier", publisher);
    if (p != nullptr) p->future_outliers = counter;
  }
  counter->Inc();
}

Counter* WindowAggregateOperator::RejectedByPublisher(std::string_view reason, StringId publisher) {
  const std::string name = interner_ != nullptr && publisher != 0
                               ? std::string(interner_->Name(publisher))
                               : std::string("unknown");
  return metrics_->GetCounter(
      "inferscope_window_rejected_by_publisher_total",
      "Events not applied (future outliers, series over the limit), by "
      "reason and publisher",
      {{"stage", stage_}, {"reason", std::string(reason)}, {"publisher", name}});
}

void WindowAggregateOperator::UpdateWatermark(int64_t now_ms, OutputBatch& out) {
  if (max_event_time_ms_ == INT64_MIN) return;
  int64_t wm = INT64_MAX;
  for (const PublisherClock& p : publishers_) {
    if (Active(p, now_ms) && p.max_event_time_ms != INT64_MIN) {
      wm = std::min(wm, p.max_event_time_ms - out_of_orderness_ms_);
    }
  }
  if (wm == INT64_MAX) {
    // Every publisher is idle: let event time keep pace with the clock.
    if (options_.idle_timeout_ms == 0 || last_arrival_ms_ == INT64_MIN) return;
    const int64_t idle = std::min(now_ms - last_arrival_ms_, kMaxAbsTimeMs);
    if (idle < options_.idle_timeout_ms) return;
    wm = max_event_time_ms_ + idle - out_of_orderness_ms_;
  }
  AdvanceWatermark(wm, out);
  // After the watermark: a pane it fired in this step gets no early summary.
  if (options_.early_slice_ms > 0) EmitEarly(wm + out_of_orderness_ms_, out);
}

void WindowAggregateOperator::EmitEarly(int64_t mark_ms, OutputBatch& out) {
  const int64_t slice = options_.early_slice_ms;
  const int64_t boundary = FloorDiv(mark_ms, slice) * slice;
  if (boundary <= early_boundary_ms_) return;
  early_boundary_ms_ = boundary;
  // The pane the boundary ends a slice of (a boundary at a pane's end belongs to that pane).
  const int64_t pane = FloorDiv(boundary - 1, pane_ms_);
  const size_t slot = SlotOf(pane);
  const CloseList& list = close_lists_[slot];
  if (list.pane != pane || list.fired) return;
  for (uint32_t group : list.groups) {
    const Group& g = groups_[group];
    PaneSlot& ps = panes_[g.first_pane + slot];
    if (!ps.early_touched) continue;
    ps.early_touched = false;
    const Aggregate* aggs = &aggs_[g.first_agg + slot * g.num_metrics];
    for (uint32_t m = 0; m < g.num_metrics; ++m) {
      const Aggregate& agg = aggs[m];
      if (agg.count == 0 && agg.events == 0) continue;
      WindowSummary& s = out.Emplace<kind::EarlySummary>();
      s.series = {static_cast<StringId>(g.instance_model >> 32),
                  static_cast<StringId>(g.instance_model),
                  g.metric != 0 ? g.metric : static_cast<StringId>(m + 1)};
      s.start_ms = pane * pane_ms_;
      s.end_ms = s.start_ms + pane_ms_;
      const bool every_event = g.metric != 0 || m < kMetricCachedTokens - 1;
      s.max_event_time_ms = every_event ? ps.max_event_time_ms : agg.last_time_ms;
      s.update = false;
      s.observed_until_ms = boundary;
      s.agg = agg;
      ++early_emitted_;
    }
  }
}

void WindowAggregateOperator::AdvanceWatermark(int64_t watermark_ms, OutputBatch& out) {
  if (watermark_ms <= watermark_ms_) return;
  watermark_ms_ = watermark_ms;
  if (watermark_ms_ >= next_close_end_ms_) ClosePanes(watermark_ms_, out);
}

void WindowAggregateOperator::ClosePanes(int64_t limit_ms, OutputBatch& out) {
  // Fire in pane order first, then purge: a pane can do both in one step.
  while (oldest_unfired_pane_ != kNoPane && (oldest_unfired_pane_ + 1) * pane_ms_ <= limit_ms) {
    CloseList& list = close_lists_[SlotOf(oldest_unfired_pane_)];
    if (list.pane == oldest_unfired_pane_ && !list.fired) FirePane(list, out);
    oldest_unfired_pane_ =
        oldest_unfired_pane_ >= newest_open_pane_ ? kNoPane : oldest_unfired_pane_ + 1;
  }
  const int64_t purge_limit = limit_ms == INT64_MAX ? INT64_MAX : limit_ms - allowed_lateness_ms_;
  while (oldest_open_pane_ != kNoPane && (oldest_open_pane_ + 1) * pane_ms_ <= purge_limit) {
    CloseList& list = close_lists_[SlotOf(oldest_open_pane_)];
    if (list.pane == oldest_open_pane_) PurgePane(list, out);
    if (oldest_open_pane_ >= newest_open_pane_) {
      oldest_open_pane_ = newest_open_pane_ = oldest_unfired_pane_ = kNoPane;
    } else {
      ++oldest_open_pane_;
    }
  }
  next_close_end_ms_ = INT64_MAX;
  if (oldest_unfired_pane_ != kNoPane) next_close_end_ms_ = (oldest_unfired_pane_ + 1) * pane_ms_;
  if (oldest_open_pane_ != kNoPane) {
    next_close_end_ms_ =
        std::min(next_close_end_ms_, (oldest_open_pane_ + 1) * pane_ms_ + allowed_lateness_ms_);
  }
}

void WindowAggregateOperator::EmitGroupPane(uint32_t group, int64_t pane, OutputBatch& out) {
  const Group& g = groups_[group];
  const size_t slot = SlotOf(pane);
  PaneSlot& ps = panes_[g.first_pane + slot];
  const Aggregate* aggs = &aggs_[g.first_agg + slot * g.num_metrics];
  const auto instance = static_cast<StringId>(g.instance_model >> 32);
  const auto model = static_cast<StringId>(g.instance_model);
  for (uint32_t m = 0; m < g.num_metrics; ++m) {
    const Aggregate& agg = aggs[m];
    if (agg.count == 0 && agg.events == 0) continue;
    WindowSummary& s = out.Emplace<kind::PaneSummary>();
    s.series = {instance, model, g.metric != 0 ? g.metric : static_cast<StringId>(m + 1)};
    s.start_ms = pane * pane_ms_;
    s.end_ms = s.start_ms + pane_ms_;
    // The first request metrics see every event of the pane; optional fields (cached tokens,
    // cost, quality) only the events that carried them, whose latest time is `last_time_ms`.
    const bool every_event = g.metric != 0 || m < kMetricCachedTokens - 1;
    s.max_event_time_ms = every_event ? ps.max_event_time_ms : agg.last_time_ms;
    const auto bit = static_cast<uint8_t>(1u << m);
    const bool update = (ps.emitted & bit) != 0;
    ps.emitted |= bit;
    s.update = update;
    s.agg = agg;  // a copy: the slot keeps its sketch capacity for the next pane
    ++(update ? updated_ : emitted_);
  }
}

void WindowAggregateOperator::FirePane(CloseList& list, OutputBatch& out) {
  for (uint32_t group : list.groups) {
    EmitGroupPane(group, list.pane, out);
    Group& g = groups_[group];
    PaneSlot& ps = panes_[g.first_pane + SlotOf(list.pane)];
    if (ps.dirty) {
      ps.dirty = false;
      MarkChanged(g, ps);
    }
  }
  list.fired = true;
}

void WindowAggregateOperator::PurgePane(CloseList& list, OutputBatch& out) {
  const size_t slot = SlotOf(list.pane);
  for (uint32_t group : list.groups) {
    Group& g = groups_[group];
    PaneSlot& ps = panes_[g.first_pane + slot];
    if (ps.dirty) EmitGroupPane(group, list.pane, out);
    Aggregate* aggs = &aggs_[g.first_agg + slot * g.num_metrics];
    for (uint32_t m = 0; m < g.num_metrics; ++m) aggs[m].Clear();
    ps.pane = kNoPane;
    ps.dirty = false;
    MarkChanged(g, ps);  // its record is deleted
    --g.open;
    --open_panes_;
  }
  list.groups.clear();
  list.pane = kNoPane;
  list.fired = false;
}

void WindowAggregateOperator::EmitUpdates(OutputBatch& out) {
  for (const auto& [group, pane] : dirty_) {
    PaneSlot& ps = panes_[groups_[group].first_pane + SlotOf(pane)];
    if (ps.pane != pane || !ps.dirty) continue;  // purged (and emitted) meanwhile, or a repeat
    EmitGroupPane(group, pane, out);
    ps.dirty = false;
    MarkChanged(groups_[group], ps);
  }
  dirty_.clear();
}

void WindowAggregateOperator::DeadLetter(const Event& e, StringId publisher, OutputBatch& out) {
  out.Add<kind::DeadLetter>({e, "too_late", watermark_ms_});
  if (metrics_ == nullptr) return;
  PublisherClock* p = FindOrAddPublisher(publisher);
  Counter* counter = p != nullptr ? p->dead_letters : nullptr;
  if (counter == nullptr) {
    std::string name = interner_ != nullptr && publisher != 0
                           ? std::string(interner_->Name(publisher))
                           : std::string("unknown");
    counter = metrics_->GetCounter("inferscope_window_dead_letters_total",
                                   "Events not applied because they arrived after their pane's "
                                   "allowed lateness",
                                   {{"stage", stage_}, {"publisher", name}});
    if (p != nullptr) p->dead_letters = counter;
  }
  counter->Inc();
}

Status WindowAggregateOperator::Process(const EventBatch& batch, OutputBatch& out) {
  if (batch.events.empty()) return Status::Ok();
  if (clock_ == nullptr) return Status::Internal("window_aggregate: Process before Open");
  const int64_t now_ms = clock_->NowMs();
  uint64_t late = 0;
  uint64_t rejected_series = 0;
  uint64_t rejected_time = 0;
  uint64_t rejected_metric = 0;
  uint64_t rejected_stale = 0;
  // Batches normally come from one publisher; a mixed batch looks each event's publisher up.
  PublisherClock* batch_publisher =
      batch.publisher != 0 ? FindOrAddPublisher(batch.publisher) : nullptr;
  int64_t batch_max_time = INT64_MIN;
  // With thousands of series every aggregate and bin an event touches is a cache miss. Resolve
  // the batch's groups first, then run two prefetch stages ahead of the events being applied:
  // the aggregates of event i + 2 * kPrefetchDistance, the bins of event i + kPrefetchDistance
  // (whose aggregates have arrived by then). Prefetching is only a hint: the loop below decides
  // everything exactly as without it.
  ResolveBatch(batch);
  const std::vector<Event>& events = batch.events;
  const size_t n = events.size();
  for (size_t i = 0; i < std::min(n, 2 * kPrefetchDistance); ++i) {
    PrefetchAggregates(events[i], i);
    if (i < kPrefetchDistance) PrefetchBins(events[i], i);
  }
  // Consecutive events mostly fall into the same pane; skip the division for them.
  int64_t pane = 0;
  int64_t pane_start = 0;
  int64_t pane_end = 0;
  size_t slot = 0;
  for (size_t i = 0; i < n; ++i) {
    if (i + 2 * kPrefetchDistance < n) {
      PrefetchAggregates(events[i + 2 * kPrefetchDistance], i + 2 * kPrefetchDistance);
    }
    if (i + kPrefetchDistance < n)
      PrefetchBins(events[i + kPrefetchDistance], i + kPrefetchDistance);
    const Event& e = events[i];
    const int64_t t = e.time_ms;
    if (t > kMaxAbsTimeMs || t < -kMaxAbsTimeMs) {
      ++rejected_time;
      continue;
    }
    if (e.kind != EventKind::kRequest && e.metric == 0) {
      ++rejected_metric;
      continue;
    }
    PublisherClock* p =
        batch_publisher != nullptr ? batch_publisher : FindOrAddPublisher(e.publisher);
    if (watermark_ms_ == INT64_MIN) {
      // The first event anchors the watermark.
      AdvanceWatermark(t - out_of_orderness_ms_ - max_publisher_lag_ms_, out);
    } else if (t > watermark_ms_ + out_of_orderness_ms_ + max_publisher_lag_ms_) {
      // Beyond the horizon: the watermark moves up (so that the ring never holds two open panes
      // in a slot) only when the other publishers' progress supports it.
      const int64_t own = batch_publisher != nullptr ? batch_max_time : INT64_MIN;
      if (!SupportsAhead(p, t, own, now_ms)) {
        FutureOutlier(e, batch.publisher != 0 ? batch.publisher : e.publisher, p, now_ms, out);
        continue;
      }
      AdvanceWatermark(t - out_of_orderness_ms_ - max_publisher_lag_ms_, out);
    }
    last_arrival_ms_ = now_ms;
    max_event_time_ms_ = std::max(max_event_time_ms_, t);
    if (batch_publisher != nullptr) {
      batch_max_time = std::max(batch_max_time, t);
    } else if (p != nullptr) {
      p->max_event_time_ms = std::max(p->max_event_time_ms, t);
      p->fresh_max_ms = std::max(p->fresh_max_ms, t);
      p->last_arrival_ms = now_ms;
      p->outlier_since_ms = INT64_MIN;
    }
    if (t < pane_start || t >= pane_end) {
      pane = FloorDiv(t, pane_ms_);
      pane_start = pane * pane_ms_;
      pane_end = pane_start + pane_ms_;
      slot = SlotOf(pane);
    }
    const bool fired = pane_end <= watermark_ms_;
    if (fired && pane_end + allowed_lateness_ms_ <= watermark_ms_) {
      DeadLetter(e, batch.publisher != 0 ? batch.publisher : e.publisher, out);
      continue;
    }
    const uint64_t instance_model = (static_cast<uint64_t>(e.instance) << 32) | e.model;
    // Requests, and gauges named like a request metric, live in the (instance, model) request
    // group (metric key 0, one aggregate per well-known metric); other gauges in a group of one.
    const bool in_request_group = e.kind == EventKind::kRequest || e.metric <= kNumWellKnownIds;
    uint32_t group = batch_groups_[i];
    if (group == kNoGroup) {
      group = in_request_group ? FindOrAddGroup(instance_model, 0, kNumWellKnownIds, p)
                               : FindOrAddGroup(instance_model, e.metric, 1, p);
    }
    if (group == kNoGroup) {
      if (add_failure_ == AddFailure::kStaleName) {
        ++rejected_stale;
        continue;
      }
      ++rejected_series;
      if (metrics_ != nullptr) {
        Counter* counter = p != nullptr ? p->series_rejected : nullptr;
        if (counter == nullptr) {
          counter = RejectedByPublisher("series_limit",
                                        batch.publisher != 0 ? batch.publisher : e.publisher);
          if (p != nullptr) p->series_rejected = counter;
        }
        counter->Inc();
      }
      continue;
    }
    Aggregate* a = PaneAggregates(group, pane, slot, t);
    if (a == nullptr) {
      // Cannot happen with the ring sized from the options; refuse rather than corrupt a pane.
      DeadLetter(e, batch.publisher != 0 ? batch.publisher : e.publisher, out);
      continue;
    }
    if (fired) {
      ++late;
      PaneSlot& ps = panes_[groups_[group].first_pane + slot];
      if (!ps.dirty) {
        ps.dirty = true;
        dirty_.emplace_back(group, pane);
      }
    }
    if (e.kind != EventKind::kRequest) {
      Aggregate& agg = in_request_group ? a[e.metric - 1] : a[0];
      if (e.kind == EventKind::kHistogram) {
        // Bucket deltas (Prometheus sources): spread over the pane's sketch, bucket_bounded.
        if (const HistogramDelta* h = batch.HistogramOf(e)) {
          agg.AddBuckets(h->upper, h->count, h->buckets, h->sum, t);
        } else {
          ++rejected_metric;  // an index outside the batch's buckets: nothing to add
        }
        continue;
      }
      agg.Add(e.value, t);
      agg.AddEvent(false);
      continue;
    }
    const bool error = !e.ok();
    a[0].AddEvent(error);
    if (e.Has(kHasTtft)) a[0].Add(e.ttft_ms, t);
    a[1].AddEvent(error);
    if (e.Has(kHasTpot)) a[1].Add(e.tpot_ms, t);
    a[2].AddEvent(error);
    if (e.Has(kHasE2e)) a[2].Add(e.e2e_ms, t);
    a[3].AddEvent(error);
    if (e.Has(kHasPromptTokens)) a[3].Add(e.prompt_tokens, t);
    a[4].AddEvent(error);
    if (e.Has(kHasOutputTokens)) a[4].Add(e.output_tokens, t);
    if (e.Has(kHasCachedTokens)) {
      a[5].AddEvent(error);
      a[5].Add(e.cached_tokens, t);
    }
    if (e.Has(kHasCost)) {
      a[6].AddEvent(error);
      a[6].Add(e.cost_usd, t);
    }
    if (e.Has(kHasQuality)) {
      a[7].AddEvent(error);
      a[7].Add(e.quality, t);
    }
  }
  if (batch_publisher != nullptr && batch_max_time != INT64_MIN) {
    batch_publisher->max_event_time_ms =
        std::max(batch_publisher->max_event_time_ms, batch_max_time);
    batch_publisher->fresh_max_ms = std::max(batch_publisher->fresh_max_ms, batch_max_time);
    batch_publisher->last_arrival_ms = now_ms;
    batch_publisher->outlier_since_ms = INT64_MIN;
  }
  EmitUpdates(out);
  UpdateWatermark(now_ms, out);
  if (events_in_ != nullptr) {
    events_in_->Inc(batch.events.size());
    if (late > 0) late_->Inc(late);
    if (rejected_series > 0) rejected_series_->Inc(rejected_series);
    if (rejected_time > 0) rejected_time_->Inc(rejected_time);
    if (rejected_metric > 0) rejected_metric_->Inc(rejected_metric);
    if (rejected_stale > 0) rejected_stale_->Inc(rejected_stale);
  }
  PublishGauges();
  out.watermark_ms = std::max<int64_t>(watermark_ms_, 0);
  return Status::Ok();
}

int64_t WindowAggregateOperator::NextTimerMs(int64_t now_ms) const {
  if (max_event_time_ms_ == INT64_MIN) return kNoTimer;
  // Without series the watermark only has to reach the operators downstream (their stale-alert
  // sweeps work in minutes), so a second after the previous timer is soon enough. (The answer
  // must not move with now_ms: the executor runs a timer once now_ms reaches it.)
  if (series_ == 0) return std::max(now_ms, last_timer_ms_ + 1000);
  return now_ms;
}

Status WindowAggregateOperator::OnTimer(int64_t now_ms, OutputBatch& out) {
  last_timer_ms_ = now_ms;
  UpdateWatermark(now_ms, out);
  ExpireIdleSeries(kExpireScanGroups);
  PublishGauges();
  out.watermark_ms = std::max<int64_t>(watermark_ms_, 0);
  return Status::Ok();
}

Status WindowAggregateOperator::Close(OutputBatch& out) {
  EmitUpdates(out);
  if (options_.flush_on_close) ClosePanes(INT64_MAX, out);
  PublishGauges();
  out.watermark_ms = std::max<int64_t>(watermark_ms_, 0);
  return Status::Ok();
}

void WindowAggregateOperator::PublishGauges() {
  if (summaries_out_ == nullptr) return;
  if (emitted_ > 0) {
    summaries_out_->Inc(emitted_);
    emitted_ = 0;
  }
  if (updated_ > 0) {
    updates_out_->Inc(updated_);
    updated_ = 0;
  }
  if (early_emitted_ > 0) {
    early_out_->Inc(early_emitted_);
    early_emitted_ = 0;
  }
  open_panes_gauge_->Set(static_cast<double>(open_panes_));
  series_gauge_->Set(static_cast<double>(series_));
  if (watermark_ms_ != INT64_MIN) watermark_gauge_->Set(static_cast<double>(watermark_ms_) / 1000);
}

// Checkpoint records (the `checkpoint` record table, under this stage's prefix):
//   key ""                          value: varint version, zigzag watermark, zigzag max event time,
//                                          varint publishers, each str(name) zigzag max event time,
//                                          then idle ages: varint for the last input, one varint
//                                          per publisher (0 = none, else 1 + ms since the last
//                                          input at the checkpoint; absent in older records)
//   key str(instance) str(model) str(metric or "") be64(pane ^ 2^63)
//                                   value: varint version, varint num_metrics, zigzag max event
//                                          time, byte dirty, and num_metrics × (varint length,
//                                          Aggregate encoding)
// A pane record exists while its pane is in memory; it is rewritten only when the pane changed
// since the previous checkpoint, and deleted once it is purged. A series that gets events every
// checkpoint interval rewrites its open pane, not the fired ones still within allowed_lateness.
// Restore also reads the group records that earlier versions wrote (the whole ring in one:
//   key str(instance) str(model) str(metric or "")
//                                   value: varint version, varint num_metrics, varint panes, each
//                                          zigzag pane, zigzag max event time, byte dirty, and
//                                          num_metrics × (varint length, Aggregate encoding))
// and replaces each with pane records at the next checkpoint.
constexpr uint64_t kCheckpointVersion = 1;

Status WindowAggregateOperator::Checkpoint(CheckpointWriter& writer) {
  if (interner_ == nullptr) return Status::Internal("window_aggregate: Checkpoint before Open");
  std::string value;
  PutVarint(&value, kCheckpointVersion);
  PutVarint(&value, ZigZag(watermark_ms_));
  PutVarint(&value, ZigZag(max_event_time_ms_));
  PutVarint(&value, publishers_.size());
  for (const PublisherClock& p : publishers_) {
    AppendStr(&value, interner_->Name(p.publisher));
    PutVarint(&value, ZigZag(p.max_event_time_ms));
  }
  // Idle ages rather than arrival times: downtime between checkpoint and restore is not idleness,
  // and a publisher idle at the checkpoint must not hold the watermark back again after a restore.
  const int64_t now_ms = clock_->NowMs();
  auto age = [now_ms](int64_t last_arrival_ms) -> uint64_t {
    if (last_arrival_ms == INT64_MIN) return 0;
    return 1 +
           static_cast<uint64_t>(std::clamp<int64_t>(now_ms - last_arrival_ms, 0, kMaxAbsTimeMs));
  };
  PutVarint(&value, age(last_arrival_ms_));
  for (const PublisherClock& p : publishers_) PutVarint(&value, age(p.last_arrival_ms));
  // The same bytes as the last checkpoint's (nothing arrived, no watermark moved): not written
  // again, so that a checkpoint of an unchanged engine is empty (the executor then skips it).
  if (value != checkpointed_header_) {
    checkpointed_header_ = value;
    writer.Put("", std::move(value));
  }

  for (const std::string& expired : pending_deletes_) writer.Delete(expired);
  pending_deletes_.clear();
  std::string key;
  std::string agg_bytes;
  for (Group& g : groups_) {
    if (!g.changed) continue;
    g.changed = false;
    for (size_t slot = 0; slot < ring_; ++slot) {
      PaneSlot& ps = panes_[g.first_pane + slot];
      if (!ps.changed) continue;
      ps.changed = false;
      if (ps.stored_pane != kNoPane && ps.stored_pane != ps.pane) {
        PaneKey(g, ps.stored_pane, &key);
        writer.Delete(key);
      }
      ps.stored_pane = ps.pane;
      if (ps.pane == kNoPane) continue;
      PaneKey(g, ps.pane, &key);
      value.clear();
      PutVarint(&value, kCheckpointVersion);
      PutVarint(&value, g.num_metrics);
      PutVarint(&value, ZigZag(ps.max_event_time_ms));
      value.push_back(ps.dirty ? 1 : 0);
      for (uint32_t m = 0; m < g.num_metrics; ++m) {
        agg_bytes.clear();
        aggs_[g.first_agg + slot * g.num_metrics + m].EncodeTo(&agg_bytes);
        PutVarint(&value, agg_bytes.size());
        value += agg_bytes;
      }
      writer.Put(key, std::move(value));
    }
  }
  return Status::Ok();
}

Status WindowAggregateOperator::Restore(const CheckpointReader& reader) {
  if (interner_ == nullptr) return Status::Internal("window_aggregate: Restore before Open");
  return reader.ForEach([this](std::string_view key, std::string_view value) -> Status {
    auto corrupt = [&](std::string_view what) {
      return Status::Corruption("window_aggregate checkpoint: " + std::string(what));
    };
    uint64_t version = 0;
    if (!GetVarint(&value, &version) || version != kCheckpointVersion) {
      return corrupt("unknown record version");
    }
    if (key.empty()) {
      uint64_t publishers = 0;
      if (!GetZigZag(&value, &watermark_ms_) || !GetZigZag(&value, &max_event_time_ms_) ||
          !GetVarint(&value, &publishers)) {
        return corrupt("truncated operator record");
      }
      std::vector<size_t> restored;  // index into publishers_, or SIZE_MAX
      for (uint64_t i = 0; i < publishers; ++i) {
        std::string_view name;
        int64_t max_time = 0;
        if (!GetStr(&value, &name) || !GetZigZag(&value, &max_time))
          return corrupt("truncated publisher");
        restored.push_back(SIZE_MAX);
        if (PublisherClock* p = FindOrAddPublisher(interner_->Intern(name)); p != nullptr) {
          p->max_event_time_ms = max_time;
          restored.back() = static_cast<size_t>(p - publishers_.data());
        }
      }
      if (value.empty()) return Status::Ok();  // a record without idle ages
      const int64_t now_ms = clock_->NowMs();
      auto get_arrival = [&](int64_t* last_arrival_ms) {
        uint64_t age = 0;
        if (!GetVarint(&value, &age) || age > static_cast<uint64_t>(kMaxAbsTimeMs) + 1)
          return false;
        *last_arrival_ms = age == 0 ? INT64_MIN : now_ms - static_cast<int64_t>(age - 1);
        return true;
      };
      if (!get_arrival(&last_arrival_ms_)) return corrupt("truncated idle age");
      for (size_t index : restored) {
        int64_t last_arrival_ms = INT64_MIN;
        if (!get_arrival(&last_arrival_ms)) return corrupt("truncated idle age");
        if (index != SIZE_MAX) publishers_[index].last_arrival_ms = last_arrival_ms;
      }
      return Status::Ok();
    }
    const std::string_view record_key = key;
    std::string_view instance, model, metric;
    if (!GetStr(&key, &instance) || !GetStr(&key, &model) || !GetStr(&key, &metric) ||
        (!key.empty() && key.size() != 8)) {
      return corrupt("malformed pane key");
    }
    // A pane record, or a version-1 group record (the whole ring) to replace with pane records.
    const bool pane_record = !key.empty();
    uint64_t num_metrics = 0, panes = 1;
    // A request group (no metric) holds every well-known metric, a gauge group one: anything
    // else would index past the group's aggregates.
    if (!GetVarint(&value, &num_metrics) || (!pane_record && !GetVarint(&value, &panes)) ||
        num_metrics != (metric.empty() ? uint64_t{kNumWellKnownIds} : 1) || panes > ring_) {
      return corrupt("malformed pane record");
    }
    const StringId instance_id = interner_->Intern(instance);
    const StringId model_id = interner_->Intern(model);
    const StringId metric_id = metric.empty() ? 0 : interner_->Intern(metric);
    if (instance_id == 0 || model_id == 0 || (!metric.empty() && metric_id == 0)) {
      return Status::Unavailable("window_aggregate checkpoint: string table full");
    }
    if (!metric.empty() && metric_id <= kNumWellKnownIds) {
      return corrupt("a well-known metric in a gauge group");
    }
    const uint64_t instance_model = (static_cast<uint64_t>(instance_id) << 32) | model_id;
    const uint32_t group =
        FindOrAddGroup(instance_model, metric_id, static_cast<uint32_t>(num_metrics));
    if (group == kNoGroup)
      return Status::Unavailable("window_aggregate checkpoint: max_series reached");
    for (uint64_t i = 0; i < panes; ++i) {
      int64_t pane = 0, max_time = 0;
      if (pane_record) {
        pane = ReadOrdered64(key);
      } else if (!GetZigZag(&value, &pane)) {
        return corrupt("truncated pane");
      }
      if (!GetZigZag(&value, &max_time) || value.empty()) return corrupt("truncated pane");
      if (pane < -kMaxAbsTimeMs / pane_ms_ || pane > kMaxAbsTimeMs / pane_ms_) {
        return corrupt("pane out of range");
      }
      const bool dirty = value[0] != 0;
      value.remove_prefix(1);
      Aggregate* a = PaneAggregates(group, pane, SlotOf(pane), max_time);
      if (a == nullptr) return corrupt("two panes in one ring slot");
      // Live panes always lie within one ring of each other; hostile ones further apart would
      // make ClosePanes step through every pane number between them.
      if (newest_open_pane_ - oldest_open_pane_ >= static_cast<int64_t>(ring_)) {
        return corrupt("panes further apart than the ring");
      }
      for (uint64_t m = 0; m < num_metrics; ++m) {
        std::string_view bytes;
        if (!GetLengthPrefixed(&value, &bytes)) return corrupt("truncated aggregate");
        INFERSCOPE_RETURN_IF_ERROR(Aggregate::DecodeFrom(bytes, &a[m]));
      }
      // Checkpoints are taken between steps: every metric with data in a fired pane has been
      // emitted (its next summary is an update).
      PaneSlot& ps = panes_[groups_[group].first_pane + SlotOf(pane)];
      if ((pane + 1) * pane_ms_ <= watermark_ms_) {
        for (uint64_t m = 0; m < num_metrics; ++m) {
          if (a[m].count != 0 || a[m].events != 0) ps.emitted |= static_cast<uint8_t>(1u << m);
        }
      }
      if (dirty) {
        ps.dirty = true;
        dirty_.emplace_back(group, pane);
      }
      // A restored pane record equals the pane: nothing to rewrite at the next checkpoint.
      ps.stored_pane = pane_record ? pane : kNoPane;
      ps.changed = !pane_record;
    }
    groups_[group].changed = !pane_record;
    if (!pane_record) pending_deletes_.emplace_back(record_key);
    return Status::Ok();
  });
}

}  // namespace inferscope
