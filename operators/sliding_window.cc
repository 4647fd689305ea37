#include "operators/sliding_window.h"

#include <algorithm>
#include <string>
#include <utility>

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

Status SlidingWindowOperator::OnTimer(int64_t now_ms, OutputBatch& out) {
  (void)out;
  if (now_ms >= next_expiry_ms_) {
    next_expiry_ms_ = now_ms + 1000;
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
    return s.newest == kNoPane || (s.newest + 1) * pane_ms_ <= limit;
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
  if (index == kNoSeries) {
    ++series_limit_total_;
    return;
  }
  Series& s = series_[index];
  const int64_t p = FloorDiv(pane.start_ms, pane_ms_);
  const auto ring = static_cast<int64_t>(ring_);
  if (s.newest != kNoPane && p <= s.newest - ring) {
    ++too_old_total_;
    return;
  }
  PaneSlot& slot = SlotOf(s, p);
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
  publish(unrecomputable_, unrecomputable_total_, unrecomputable_published_);
  publish(expired_, expired_total_, expired_published_);
  series_gauge_->Set(static_cast<double>(series_.size()));
}

}  // namespace inferscope
