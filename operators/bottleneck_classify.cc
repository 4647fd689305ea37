#include "operators/bottleneck_classify.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "bottlenecks/bottleneck_json.h"
#include "pipeline/glob.h"
#include "pipeline/json_text.h"
#include "pipeline/names.h"
#include "pipeline/summary.h"

namespace inferscope {
namespace {

using nlohmann::json;

constexpr int64_t kMaxEvidenceMs = 3'600'000;

uint64_t PairKey(StringId instance, StringId model) {
  return (static_cast<uint64_t>(instance) << 32) | model;
}

// The request metrics' well-known ids → their slots (-1: not read).
int RequestSlot(StringId metric) {
  switch (metric) {
    case kMetricTtft:
      return static_cast<int>(WindowMetric::kTtft);
    case kMetricTpot:
      return static_cast<int>(WindowMetric::kTpot);
    case kMetricE2e:
      return static_cast<int>(WindowMetric::kE2e);
    case kMetricPromptTokens:
      return static_cast<int>(WindowMetric::kPromptTokens);
    case kMetricCachedTokens:
      return static_cast<int>(WindowMetric::kCachedTokens);
    default:
      return -1;
  }
}

// The latency sketches kept per pane: ttft, tpot, e2e (the first three slots).
constexpr bool IsLatencySlot(int slot) { return slot >= 0 && slot < 3; }

std::string_view PhaseName(int phase) {
  return phase == 1 ? "pending" : phase == 2 ? "raised" : "idle";
}

}  // namespace

Status BottleneckClassifyOperator::Options::Validate() const {
  INFERSCOPE_RETURN_IF_ERROR(rules.Validate());
  if (evidence_ms < 1 || evidence_ms > kMaxEvidenceMs) {
    return Status::InvalidArgument("evidence must be 1ms..1h");
  }
  if (for_ms < 0) return Status::InvalidArgument("for must not be negative");
  if (clear_for_ms < 0) return Status::InvalidArgument("clear_for must not be negative");
  if (max_instances < 1 || max_instances > 10'000'000) {
    return Status::InvalidArgument("max_instances must be 1..10000000");
  }
  if (idle_expiry_ms < 0) return Status::InvalidArgument("idle_expiry must not be negative");
  for (const auto& [glob, engine] : engines) {
    if (glob.empty() || glob.size() > kMaxNameBytes || engine.empty() ||
        engine.size() > kMaxNameBytes) {
      return Status::InvalidArgument("engines: globs and engine names must be 1..255 bytes");
    }
  }
  return Status::Ok();
}

Result<BottleneckClassifyOperator::Options> BottleneckClassifyOperator::ParseOptions(
    const ConfigNode& node) {
  INFERSCOPE_RETURN_IF_ERROR(node.CheckKnownFields(
      {"evidence", "for", "clear_for", "max_instances", "idle_expiry", "engines", "early",
       "min_requests", "memory_pressure", "high_latency", "peer", "low_throughput", "queue_buildup",
       "cache_inefficiency", "error_spike", "resource_saturation"}));
  Options o;
  Result<int64_t> evidence = node.GetDurationMs("evidence", o.evidence_ms, 1);
  if (!evidence.ok()) return evidence.status();
  if (*evidence > kMaxEvidenceMs) return node.Error("evidence", "must be at most 1h");
  o.evidence_ms = *evidence;
  Result<int64_t> for_ms = node.GetDurationMs("for", o.for_ms, 0);
  if (!for_ms.ok()) return for_ms.status();
  o.for_ms = *for_ms;
  Result<int64_t> clear_for = node.GetDurationMs("clear_for", o.for_ms, 0);
  if (!clear_for.ok()) return clear_for.status();
  o.clear_for_ms = *clear_for;
  Result<int64_t> max_instances = node.GetInt("max_instances", o.max_instances, 1, 10'000'000);
  if (!max_instances.ok()) return max_instances.status();
  o.max_instances = *max_instances;
  Result<int64_t> idle = node.GetDurationMs("idle_expiry", o.idle_expiry_ms, 0);
  if (!idle.ok()) return idle.status();
  o.idle_expiry_ms = *idle;
  Result<bool> early = node.GetBool("early", o.early);
  if (!early.ok()) return early.status();
  o.early = *early;
  if (node.Has("engines")) {
    const YAML::Node engines = node.node()["engines"];
    if (!engines.IsMap()) {
      return node.Error("engines", "expected a mapping of instance glob to engine name");
    }
    Result<ConfigNode> child = node.Child("engines");
    if (!child.ok()) return child.status();
    for (const auto& kv : engines) {
      const std::string glob = kv.first.Scalar();
      Result<std::string> engine = child->GetString(glob);
      if (!engine.ok()) return engine.status();
      if (glob.empty() || glob.size() > kMaxNameBytes || engine->empty() ||
          engine->size() > kMaxNameBytes) {
        return child->Error(glob, "globs and engine names must be 1..255 bytes");
      }
      o.engines.emplace_back(glob, *engine);
    }
  }
  INFERSCOPE_RETURN_IF_ERROR(ParseBottleneckOptions(node, &o.rules));
  if (Status st = o.Validate(); !st.ok()) return node.Error("", st.message());
  return o;
}

Result<std::unique_ptr<BottleneckClassifyOperator>> BottleneckClassifyOperator::Create(
    const ConfigNode& options) {
  Result<Options> parsed = ParseOptions(options);
  if (!parsed.ok()) return parsed.status();
  return std::make_unique<BottleneckClassifyOperator>(std::move(parsed).value());
}

BottleneckClassifyOperator::BottleneckClassifyOperator(Options options)
    : options_(std::move(options)) {}

BottleneckClassifyOperator::~BottleneckClassifyOperator() {
  if (interner_ == nullptr) return;
  for (auto& [key, s] : instances_) {
    interner_->Unref(s.instance);
    interner_->Unref(s.model);
  }
}

Status BottleneckClassifyOperator::Open(const StageContext& ctx) {
  INFERSCOPE_RETURN_IF_ERROR(options_.Validate());
  if (ctx.interner == nullptr) {
    return Status::InvalidArgument("operator '" + ctx.name +
                                   "': the stage context lacks an interner");
  }
  interner_ = ctx.interner;
  clock_ = ctx.clock != nullptr ? ctx.clock : &SystemClock::Instance();
  any_model_ = interner_->Intern("_");
  if (any_model_ != 0) interner_->Pin(any_model_);
  // The gauge names are looked up by id on every summary: intern and pin them once.
  gauge_slots_.clear();
  auto add = [&](std::string_view name, int slot) {
    const StringId id = interner_->Intern(name);
    if (id == 0) return;
    interner_->Pin(id);
    gauge_slots_.emplace_back(id, slot);
  };
  for (size_t m = static_cast<size_t>(WindowMetric::kRunning); m < kNumWindowMetrics; ++m) {
    add(WindowMetricName(static_cast<WindowMetric>(m)), static_cast<int>(m));
  }
  for (size_t i = 0; i < options_.rules.saturation.size(); ++i) {
    add(options_.rules.saturation[i].metric, static_cast<int>(kNumWindowMetrics + i));
  }
  if (ctx.metrics == nullptr) return Status::Ok();
  MetricsRegistry& m = *ctx.metrics;
  for (size_t t = 0; t < kNumBottleneckTypes; ++t) {
    active_gauges_[t] =
        m.GetGauge("inferscope_bottlenecks_active", "Raised bottlenecks by type",
                   {{"stage", ctx.name},
                    {"type", std::string(BottleneckTypeName(static_cast<BottleneckType>(t)))}});
  }
  for (size_t c = 0; c < transitions_.size(); ++c) {
    transitions_[c] = m.GetCounter(
        "inferscope_bottleneck_transitions_total",
        "Bottleneck changes emitted (raised, severity_changed, primary_changed, resolved, "
        "confirmed, retracted)",
        {{"stage", ctx.name},
         {"change", std::string(BottleneckChangeName(static_cast<BottleneckChange>(c)))}});
  }
  const Labels stage = {{"stage", ctx.name}};
  instances_gauge_ = m.GetGauge("inferscope_bottleneck_instances",
                                "(instance, model) pairs the classifier tracks", stage);
  dropped_counter_ =
      m.GetCounter("inferscope_bottleneck_instances_dropped_total",
                   "Pane summaries of pairs not tracked (max_instances reached)", stage);
  expired_counter_ = m.GetCounter("inferscope_bottleneck_instances_expired_total",
                                  "Pairs forgotten after idle_expiry without a pane", stage);
  evaluations_ = m.GetCounter("inferscope_bottleneck_evaluations_total",
                              "Evidence windows judged by the classifier", stage);
  return Status::Ok();
}

Status BottleneckClassifyOperator::Process(const EventBatch&, OutputBatch&) {
  return Status::InvalidArgument(
      "bottleneck_classify reads a window_aggregate operator's pane summaries, not events");
}

std::string BottleneckClassifyOperator::EngineOf(std::string_view instance) const {
  for (const auto& [glob, engine] : options_.engines) {
    if (GlobMatch(glob, instance)) return engine;
  }
  const size_t dash = instance.find('-');
  return std::string(instance.substr(0, dash));
}

int BottleneckClassifyOperator::SlotOf(StringId metric) const {
  if (metric <= kNumWellKnownIds) return RequestSlot(metric);
  for (const auto& [id, slot] : gauge_slots_) {
    if (id == metric) return slot;
  }
  return -1;
}

BottleneckClassifyOperator::InstanceState* BottleneckClassifyOperator::FindOrAdd(StringId instance,
                                                                                 StringId model) {
  const uint64_t key = PairKey(instance, model);
  auto it = instances_.find(key);
  if (it != instances_.end()) return &it->second;
  if (instances_.size() >= static_cast<size_t>(options_.max_instances)) return nullptr;
  if (!interner_->Ref(instance)) return nullptr;
  if (!interner_->Ref(model)) {
    interner_->Unref(instance);
    return nullptr;
  }
  InstanceState& s = instances_[key];
  s.instance = instance;
  s.model = model;
  s.instance_name = std::string(interner_->Name(instance));
  s.model_name = std::string(interner_->Name(model));
  s.engine = EngineOf(s.instance_name);
  if (instances_gauge_) instances_gauge_->Set(static_cast<double>(instances_.size()));
  return &s;
}

void BottleneckClassifyOperator::Ingest(const WindowSummary& summary, int slot) {
  InstanceState* s = FindOrAdd(summary.series.instance, summary.series.model);
  if (s == nullptr) {
    ++dropped_;
    if (dropped_counter_) dropped_counter_->Inc();
    return;
  }
  if (s->ring.size() != ring_size_) s->ring.resize(ring_size_);
  const int64_t pane = summary.end_ms / pane_ms_;
  PaneSlot& ps = s->ring[static_cast<size_t>(
      ((pane % static_cast<int64_t>(ring_size_)) + static_cast<int64_t>(ring_size_)) %
      static_cast<int64_t>(ring_size_))];
  if (ps.end_ms != summary.end_ms) {
    if (ps.end_ms > summary.end_ms) return;  // older than the evidence the ring can hold
    ps.end_ms = summary.end_ms;
    ps.metrics.fill(PaneStat{});
    ps.saturation.fill(PaneStat{});
    for (Aggregate& a : ps.latency) a.Clear();
  }
  const Aggregate& agg = summary.agg;
  PaneStat stat{agg.count, agg.events, agg.errors, agg.sum, agg.max, agg.last, agg.last_time_ms};
  if (slot < static_cast<int>(kNumWindowMetrics)) {
    ps.metrics[static_cast<size_t>(slot)] = stat;  // an update replaces the pane's contribution
    if (IsLatencySlot(slot)) ps.latency[static_cast<size_t>(slot)] = agg;
  } else {
    ps.saturation[static_cast<size_t>(slot) - kNumWindowMetrics] = stat;
  }
  s->newest_end_ms = std::max(s->newest_end_ms, summary.end_ms);
  if (!s->due && s->newest_end_ms > s->judged_end_ms) {
    s->due = true;
    due_.push_back(PairKey(s->instance, s->model));
  }
}

void BottleneckClassifyOperator::BuildWindow(const InstanceState& s, int64_t end_ms,
                                             const PaneSlot* open, InstanceWindow* w) {
  const int64_t end = end_ms;
  const int64_t span = static_cast<int64_t>(ring_size_) * pane_ms_;
  *w = InstanceWindow{};
  w->end_ms = end;
  w->start_ms = end - span;
  for (Aggregate& a : merged_) a.Clear();
  auto fold = [](MetricWindow& mw, const PaneStat& p, int64_t* last_time) {
    if (p.count == 0 && p.events == 0) return;
    const double pane_mean = p.count > 0 ? p.sum / static_cast<double>(p.count) : 0;
    if (p.count > 0) {
      if (mw.count == 0) {
        mw.first_mean = pane_mean;
        mw.max = p.max;
      }
      mw.max = std::max(mw.max, p.max);
      mw.last_mean = pane_mean;
      if (p.last_time_ms >= *last_time) {
        *last_time = p.last_time_ms;
        mw.last = p.last;
      }
    }
    mw.count += p.count;
    mw.events += p.events;
    mw.errors += p.errors;
    mw.sum += p.sum;
  };
  std::array<int64_t, kNumWindowMetrics> last_times;
  last_times.fill(INT64_MIN);
  std::array<int64_t, kMaxSaturationGauges> sat_times;
  sat_times.fill(INT64_MIN);
  // The host's gauges (model "_" of the same instance), for the saturation gauges a pane of this
  // model lacks.
  const InstanceState* host = nullptr;
  if (any_model_ != 0 && s.model != any_model_) {
    auto it = instances_.find(PairKey(s.instance, any_model_));
    if (it != instances_.end()) host = &it->second;
  }
  const bool own_ring = s.ring.size() == ring_size_;
  const bool host_ring = host != nullptr && host->ring.size() == ring_size_;
  auto has_data = [](const PaneStat& p) { return p.count > 0 || p.events > 0; };
  // Oldest pane first, so first_mean / last_mean follow time.
  for (int64_t pane_end = w->start_ms + pane_ms_; pane_end <= end; pane_end += pane_ms_) {
    const int64_t pane = pane_end / pane_ms_;
    const auto r = static_cast<int64_t>(ring_size_);
    const size_t index = static_cast<size_t>(((pane % r) + r) % r);
    const PaneSlot* host_ps = nullptr;
    if (open != nullptr && pane_end == open->end_ms && host != nullptr && host->open != nullptr &&
        host->open->end_ms == pane_end) {
      host_ps = host->open.get();
    } else if (host_ring && host->ring[index].end_ms == pane_end) {
      host_ps = &host->ring[index];
    }
    const PaneSlot* own = nullptr;
    if (open != nullptr && pane_end == open->end_ms) {
      own = open;
    } else if (own_ring && s.ring[index].end_ms == pane_end) {
      own = &s.ring[index];
    }
    if (own == nullptr) {
      if (host_ps == nullptr) continue;
      for (size_t g = 0; g < kMaxSaturationGauges; ++g) {
        fold(w->saturation[g], host_ps->saturation[g], &sat_times[g]);
      }
      continue;
    }
    const PaneSlot& ps = *own;
    for (size_t m = 0; m < kNumWindowMetrics; ++m) {
      fold(w->metrics[m], ps.metrics[m], &last_times[m]);
    }
    for (size_t g = 0; g < kMaxSaturationGauges; ++g) {
      const PaneStat& gauge = ps.saturation[g];
      fold(w->saturation[g], has_data(gauge) || host_ps == nullptr ? gauge : host_ps->saturation[g],
           &sat_times[g]);
    }
    for (size_t l = 0; l < kNumLatency; ++l) {
      if (ps.latency[l].count > 0) (void)merged_[l].sketch.Merge(ps.latency[l].sketch);
    }
  }
  auto finish = [](MetricWindow& mw) {
    if (mw.count > 0) mw.mean = mw.sum / static_cast<double>(mw.count);
  };
  for (MetricWindow& mw : w->metrics) finish(mw);
  for (MetricWindow& mw : w->saturation) finish(mw);
  for (size_t l = 0; l < kNumLatency; ++l) {
    MetricWindow& mw = w->metrics[l];
    if (merged_[l].sketch.empty()) continue;
    mw.p50 = merged_[l].Quantile(0.50);
    mw.p95 = merged_[l].Quantile(0.95);
    mw.p99 = merged_[l].Quantile(0.99);
  }
}

Status BottleneckClassifyOperator::ProcessResults(const OutputBatch& in, OutputBatch& out) {
  if (interner_ == nullptr)
    return Status::Internal("bottleneck_classify: ProcessResults before Open");
  watermark_ms_ = std::max(watermark_ms_, in.watermark_ms);
  for (const WindowSummary& s : in.Get<kind::PaneSummary>()) {
    const int slot = SlotOf(s.series.metric);
    if (slot < 0) continue;
    const int64_t length = s.end_ms - s.start_ms;
    if (pane_ms_ == 0 && length > 0) {
      pane_ms_ = length;
      ring_size_ = static_cast<size_t>((options_.evidence_ms + pane_ms_ - 1) / pane_ms_);
    }
    if (length != pane_ms_) continue;  // only the pane length first seen is judged
    Ingest(s, slot);
  }
  std::vector<Bottleneck>& results = out.Mutable<kind::Bottleneck>();
  Judge(watermark_ms_, results);
  // Early summaries after the closed panes: a pane that closes in this step confirms or retracts
  // first, and its own early summaries (if any) are then ignored.
  if (options_.early) {
    for (const WindowSummary& e : in.Get<kind::EarlySummary>()) {
      const int slot = SlotOf(e.series.metric);
      if (slot < 0) continue;
      const int64_t length = e.end_ms - e.start_ms;  // the whole pane, observed or not
      if (pane_ms_ == 0 && length > 0) {
        pane_ms_ = length;
        ring_size_ = static_cast<size_t>((options_.evidence_ms + pane_ms_ - 1) / pane_ms_);
      }
      if (length != pane_ms_) continue;
      IngestEarly(e, slot);
    }
    JudgeEarly(results);
  }
  Expire(watermark_ms_, results);
  out.watermark_ms = std::max(out.watermark_ms, watermark_ms_);
  return Status::Ok();
}

Status BottleneckClassifyOperator::OnTimer(int64_t, OutputBatch& out) {
  timer_watermark_ms_ = watermark_ms_;
  if (watermark_ms_ != INT64_MIN) Expire(watermark_ms_, out.Mutable<kind::Bottleneck>());
  return Status::Ok();
}

void BottleneckClassifyOperator::IngestEarly(const WindowSummary& summary, int slot) {
  InstanceState* s = FindOrAdd(summary.series.instance, summary.series.model);
  if (s == nullptr) {
    ++dropped_;
    if (dropped_counter_) dropped_counter_->Inc();
    return;
  }
  if (summary.end_ms <= s->newest_end_ms) return;  // that pane (or a later one) has closed
  if (s->open == nullptr) s->open = std::make_unique<PaneSlot>();
  PaneSlot& ps = *s->open;
  if (ps.end_ms != summary.end_ms) {
    if (ps.end_ms > summary.end_ms) return;  // an older open pane than the one held
    ps.end_ms = summary.end_ms;
    ps.metrics.fill(PaneStat{});
    ps.saturation.fill(PaneStat{});
    for (Aggregate& a : ps.latency) a.Clear();
    s->open_observed_ms = INT64_MIN;
  }
  const Aggregate& agg = summary.agg;
  PaneStat stat{agg.count, agg.events, agg.errors, agg.sum, agg.max, agg.last, agg.last_time_ms};
  if (slot < static_cast<int>(kNumWindowMetrics)) {
    ps.metrics[static_cast<size_t>(slot)] = stat;  // the pane so far replaces the earlier part
    if (IsLatencySlot(slot)) ps.latency[static_cast<size_t>(slot)] = agg;
  } else {
    ps.saturation[static_cast<size_t>(slot) - kNumWindowMetrics] = stat;
  }
  s->open_observed_ms = std::max(s->open_observed_ms, summary.observed_until_ms);
  if (!s->early_due) {
    s->early_due = true;
    early_due_.push_back(PairKey(s->instance, s->model));
  }
}

bool BottleneckClassifyOperator::EarlyCanRaise(const InstanceState& s, int64_t at_ms) const {
  for (const TypeState& ts : s.types) {
    if (ts.early || ts.phase == Phase::kRaised) continue;
    if (ts.phase == Phase::kPending ? at_ms - ts.since_ms >= options_.for_ms
                                    : options_.for_ms == 0) {
      return true;
    }
  }
  return false;
}

void BottleneckClassifyOperator::JudgeEarly(std::vector<Bottleneck>& out) {
  if (early_due_.empty()) return;
  order_.clear();
  const auto min_requests = static_cast<uint64_t>(options_.rules.min_requests);
  for (uint64_t key : early_due_) {
    auto it = instances_.find(key);
    if (it == instances_.end()) continue;
    InstanceState& s = it->second;
    s.early_due = false;
    if (s.open == nullptr || s.open->end_ms <= s.newest_end_ms) continue;
    // The evidence window spans the whole evidence period, so the pane before the open one must
    // have closed (its summary ingested, or the watermark past it with none for this pair):
    // judging before then would count the open pane alone over the whole period (rates too low,
    // p95 of the open pane only). Skipped and counted; a later slice judges it.
    const int64_t open_start = s.open->end_ms - pane_ms_;
    if (s.newest_end_ms < open_start && watermark_ms_ < open_start) {
      ++early_skipped_;
      continue;
    }
    // `min_requests` guards the thin start of a pane; a verdict that could change nothing is not
    // computed at all.
    const PaneSlot& open = *s.open;
    const uint64_t requests =
        std::max(open.metrics[static_cast<size_t>(WindowMetric::kE2e)].events,
                 open.metrics[static_cast<size_t>(WindowMetric::kTtft)].events);
    if (requests < min_requests || !EarlyCanRaise(s, s.open_observed_ms)) continue;
    order_.emplace_back(key, 0);
  }
  early_due_.clear();
  if (order_.empty()) return;
  const size_t n = order_.size();
  if (windows_.size() < n) windows_.resize(n);
  views_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    InstanceState& s = instances_.at(order_[i].first);
    BuildWindow(s, s.open->end_ms, s.open.get(), &windows_[i]);
    // Rates are over the part observed: the window ends at the slice boundary.
    windows_[i].end_ms = std::min(s.open->end_ms, s.open_observed_ms);
    // Peer-relative rules are not judged early: the pairs judged early at one slice are a
    // filtered subset (events since the last boundary, min_requests, something to raise), so
    // their median would be of the degraded ones. No peers: only absolute rules judge early.
    views_[i] = PeerView{};
  }
  RuleVerdicts verdicts;
  for (size_t i = 0; i < n; ++i) {
    InstanceState& s = instances_.at(order_[i].first);
    ClassifyInstance(windows_[i], views_[i], options_.rules, &verdicts);
    if (evaluations_) evaluations_->Inc();
    ApplyEarly(s, windows_[i], verdicts, out);
  }
}

void BottleneckClassifyOperator::ApplyEarly(InstanceState& s, const InstanceWindow& w,
                                            const RuleVerdicts& verdicts,
                                            std::vector<Bottleneck>& out) {
  const int64_t at = w.end_ms;  // the slice boundary observed up to
  uint32_t raised = 0;
  for (size_t i = 0; i < kNumBottleneckTypes; ++i) {
    TypeState& ts = s.types[i];
    const RuleVerdict& v = verdicts[i];
    if (v.judgement != Judgement::kActive || ts.early || ts.phase == Phase::kRaised) continue;
    const bool held =
        ts.phase == Phase::kPending ? at - ts.since_ms >= options_.for_ms : options_.for_ms == 0;
    if (!held) continue;
    // Only the early fields move: phase, since_ms and the candidates stay the closed panes'.
    ts.early = true;
    ts.early_severity = v.severity;
    ts.early_end_ms = s.open->end_ms;
    ts.early_since_ms = ts.phase == Phase::kPending ? ts.since_ms : at;
    raised |= uint32_t{1} << i;
  }
  if (raised == 0) return;
  s.changed = true;
  // Causal order over the raised and the early raised types (the raised ones' published primary
  // and chains are left as the closed panes made them).
  uint32_t mask = 0;
  std::array<BottleneckSeverity, kNumBottleneckTypes> severity{};
  for (size_t i = 0; i < kNumBottleneckTypes; ++i) {
    const TypeState& ts = s.types[i];
    if (ts.phase == Phase::kRaised) {
      severity[i] = ts.severity;
    } else if (ts.early) {
      severity[i] = ts.early_severity;
    } else {
      continue;
    }
    mask |= uint32_t{1} << i;
  }
  std::array<CausalPath, kNumBottleneckTypes> paths;
  const BottleneckType primary = CausalOrder(mask, severity, &paths);
  // An early raise never takes primary from a type that already holds it (raised, or raised
  // early before): the pair keeps one primary until a closed pane reorders it.
  bool has_primary = false;
  for (size_t i = 0; i < kNumBottleneckTypes; ++i) {
    const TypeState& ts = s.types[i];
    if (((raised >> i) & 1) == 0 && (ts.phase == Phase::kRaised || ts.early) && ts.primary) {
      has_primary = true;
    }
  }
  const int64_t observed_s = (at - (s.open->end_ms - pane_ms_)) / 1000;
  for (size_t i = 0; i < kNumBottleneckTypes; ++i) {
    if (((raised >> i) & 1) == 0) continue;
    TypeState& ts = s.types[i];
    ts.primary = !has_primary && static_cast<size_t>(primary) == i;
    ts.path = paths[i];
    Publish(s, static_cast<BottleneckType>(i), &verdicts[i], &w, BottleneckChange::kRaised,
            BottleneckState::kActive, out);
    Bottleneck& b = out.back();
    b.early = true;
    b.severity = ts.early_severity;
    b.active_since_ms = ts.early_since_ms;
    b.description += " (open pane, " + std::to_string(observed_s) + "s observed)";
    ts.last = b;
  }
}

void BottleneckClassifyOperator::Judge(int64_t watermark_ms, std::vector<Bottleneck>& out) {
  if (due_.empty()) return;
  // Pairs whose newest pane the watermark has passed are judged now; the rest wait.
  order_.clear();
  size_t kept = 0;
  for (uint64_t key : due_) {
    auto it = instances_.find(key);
    if (it == instances_.end()) continue;
    InstanceState& s = it->second;
    if (s.newest_end_ms > watermark_ms) {
      due_[kept++] = key;
      continue;
    }
    s.due = false;
    order_.emplace_back(key, 0);
  }
  due_.resize(kept);
  if (order_.empty()) return;
  // Peers: the pairs of one model judged at the same pane end.
  std::sort(order_.begin(), order_.end(), [&](const auto& a, const auto& b) {
    const InstanceState& sa = instances_.at(a.first);
    const InstanceState& sb = instances_.at(b.first);
    if (sa.model != sb.model) return sa.model < sb.model;
    if (sa.newest_end_ms != sb.newest_end_ms) return sa.newest_end_ms < sb.newest_end_ms;
    return sa.instance < sb.instance;
  });
  const size_t n = order_.size();
  if (windows_.size() < n) windows_.resize(n);
  samples_.resize(n);
  views_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    InstanceState& s = instances_.at(order_[i].first);
    BuildWindow(s, s.newest_end_ms, nullptr, &windows_[i]);
    samples_[i] = PeerSampleOf(windows_[i], options_.rules);
  }
  for (size_t begin = 0; begin < n;) {
    const InstanceState& first = instances_.at(order_[begin].first);
    size_t end = begin + 1;
    while (end < n) {
      const InstanceState& s = instances_.at(order_[end].first);
      if (s.model != first.model || s.newest_end_ms != first.newest_end_ms) break;
      ++end;
    }
    ComputePeerViews(std::span<const PeerSample>(samples_).subspan(begin, end - begin),
                     std::span<PeerView>(views_).subspan(begin, end - begin), peer_scratch_);
    begin = end;
  }
  RuleVerdicts verdicts;
  for (size_t i = 0; i < n; ++i) {
    InstanceState& s = instances_.at(order_[i].first);
    ClassifyInstance(windows_[i], views_[i], options_.rules, &verdicts);
    if (evaluations_) evaluations_->Inc();
    s.judged_end_ms = s.newest_end_ms;
    Apply(s, windows_[i], verdicts, out);
  }
  UpdateGauges();
}

void BottleneckClassifyOperator::Apply(InstanceState& s, const InstanceWindow& w,
                                       const RuleVerdicts& verdicts, std::vector<Bottleneck>& out) {
  const int64_t t = w.end_ms;
  // What each type's change is this evaluation (published after the causal order is known).
  std::array<int, kNumBottleneckTypes> change;
  change.fill(-1);
  for (size_t i = 0; i < kNumBottleneckTypes; ++i) {
    TypeState& ts = s.types[i];
    const RuleVerdict& v = verdicts[i];
    const bool active = v.judgement == Judgement::kActive;
    switch (ts.phase) {
      case Phase::kIdle:
        if (!active) break;
        ts.phase = Phase::kPending;
        ts.since_ms = t;
        s.changed = true;
        [[fallthrough]];
      case Phase::kPending:
        if (active) {
          if (t - ts.since_ms >= options_.for_ms) {
            ts.phase = Phase::kRaised;
            ts.severity = v.severity;
            ts.clear_since_ms = INT64_MIN;
            ts.candidate = BottleneckSeverity::kNone;
            change[i] = static_cast<int>(BottleneckChange::kRaised);
            s.changed = true;
          }
        } else if (v.judgement != Judgement::kNotJudged) {
          ts.phase = Phase::kIdle;  // did not hold for `for`: forgotten
          s.changed = true;
        }
        break;
      case Phase::kRaised:
        // No evidence any more (too few requests, the gauge no longer reported) counts as clear:
        // a bottleneck is not kept raised on data that stopped coming.
        if (v.judgement == Judgement::kClear || v.judgement == Judgement::kNotJudged) {
          if (ts.clear_since_ms == INT64_MIN) {
            ts.clear_since_ms = t;
            s.changed = true;
          }
          if (t - ts.clear_since_ms >= options_.clear_for_ms) {
            change[i] = static_cast<int>(BottleneckChange::kResolved);
          }
        } else {
          if (ts.clear_since_ms != INT64_MIN) s.changed = true;
          ts.clear_since_ms = INT64_MIN;
          if (!active || v.severity == ts.severity) {
            ts.candidate = BottleneckSeverity::kNone;
            break;
          }
          if (ts.candidate != v.severity) {
            ts.candidate = v.severity;
            ts.candidate_since_ms = t;
            s.changed = true;
          }
          const int64_t needed = v.severity > ts.severity ? options_.for_ms : options_.clear_for_ms;
          if (t - ts.candidate_since_ms >= needed) {
            ts.severity = v.severity;
            ts.candidate = BottleneckSeverity::kNone;
            change[i] = static_cast<int>(BottleneckChange::kSeverityChanged);
            s.changed = true;
          }
        }
        break;
    }
  }
  // Early raised types: the closed pane that carried the early evidence (or a later one) decides;
  // a raise by any closed pane confirms (no second "raised").
  for (size_t i = 0; i < kNumBottleneckTypes; ++i) {
    TypeState& ts = s.types[i];
    if (!ts.early) continue;
    if (ts.phase == Phase::kRaised) {
      if (change[i] == static_cast<int>(BottleneckChange::kRaised)) {
        change[i] = static_cast<int>(BottleneckChange::kConfirmed);
      }
      ts.early = false;
      s.changed = true;
      continue;
    }
    if (t < ts.early_end_ms) continue;  // an earlier pane: the one that carried it decides
    Publish(s, static_cast<BottleneckType>(i), &verdicts[i], &w, BottleneckChange::kRetracted,
            BottleneckState::kRetracted, out);
    Bottleneck& b = out.back();
    b.early = true;
    b.severity = ts.early_severity;
    b.active_since_ms = ts.early_since_ms;
    ts.last = b;
    ts.early = false;
    ts.primary = false;
    ts.path = CausalPath{};
    s.changed = true;
  }
  // Resolutions first: they leave the active set before the causal order is computed.
  for (size_t i = 0; i < kNumBottleneckTypes; ++i) {
    if (change[i] != static_cast<int>(BottleneckChange::kResolved)) continue;
    Publish(s, static_cast<BottleneckType>(i), &verdicts[i], &w, BottleneckChange::kResolved,
            BottleneckState::kResolved, out);
    s.types[i] = TypeState{};
    s.changed = true;
  }
  uint32_t mask = 0;
  std::array<BottleneckSeverity, kNumBottleneckTypes> severity{};
  for (size_t i = 0; i < kNumBottleneckTypes; ++i) {
    if (s.types[i].phase != Phase::kRaised) continue;
    mask |= uint32_t{1} << i;
    severity[i] = s.types[i].severity;
  }
  if (mask == 0) return;
  std::array<CausalPath, kNumBottleneckTypes> paths;
  const BottleneckType primary = CausalOrder(mask, severity, &paths);
  for (size_t i = 0; i < kNumBottleneckTypes; ++i) {
    if (((mask >> i) & 1) == 0) continue;
    TypeState& ts = s.types[i];
    const bool is_primary = static_cast<size_t>(primary) == i;
    const CausalPath& p = paths[i];
    const bool moved =
        ts.primary != is_primary || ts.path.root != p.root || ts.path.length != p.length ||
        !std::equal(p.chain.begin(), p.chain.begin() + p.length, ts.path.chain.begin());
    ts.primary = is_primary;
    ts.path = p;
    if (change[i] < 0 && moved) change[i] = static_cast<int>(BottleneckChange::kPrimaryChanged);
    if (change[i] < 0) continue;
    s.changed = true;
    Publish(s, static_cast<BottleneckType>(i), &verdicts[i], &w,
            static_cast<BottleneckChange>(change[i]), BottleneckState::kActive, out);
  }
}

void BottleneckClassifyOperator::Publish(InstanceState& s, BottleneckType type,
                                         const RuleVerdict* verdict, const InstanceWindow* w,
                                         BottleneckChange change, BottleneckState state,
                                         std::vector<Bottleneck>& out) {
  TypeState& ts = s.types[static_cast<size_t>(type)];
  Bottleneck b;
  if (verdict != nullptr && w != nullptr && verdict->judgement == Judgement::kNotJudged) {
    b = ts.last;  // resolved for lack of evidence: repeat the last evidence
    b.window_start_ms = w->start_ms;
    b.window_end_ms = w->end_ms;
    b.description =
        "no evidence over " + std::to_string((w->end_ms - w->start_ms) / 1000) +
        "s (too few requests, or the metric is no longer reported); was: " + b.description;
  } else if (verdict != nullptr && w != nullptr) {
    b.metric = std::string(verdict->metric);
    b.stat = std::string(verdict->stat);
    b.value = verdict->value;
    b.threshold = verdict->threshold;
    b.basis = verdict->basis;
    b.peer_median = verdict->peer_median;
    b.window_start_ms = w->start_ms;
    b.window_end_ms = w->end_ms;
    b.description = DescribeVerdict(type, *verdict, w->end_ms - w->start_ms);
  } else {
    b = ts.last;  // no new evidence (no data): repeat the last published one
  }
  b.instance = s.instance_name;
  b.model = s.model_name;
  b.engine = s.engine;
  b.type = type;
  b.severity = ts.severity;
  b.state = state;
  b.change = change;
  b.primary = state == BottleneckState::kActive && ts.primary;
  b.root = ts.path.length > 0 ? ts.path.root : type;
  b.chain.assign(ts.path.chain.begin(), ts.path.chain.begin() + ts.path.length);
  if (b.chain.empty()) b.chain.push_back(type);
  b.active_since_ms = ts.since_ms;
  b.detected_at_ms = clock_->NowMs();
  b.early = false;
  if (state == BottleneckState::kRetracted) {
    if (b.description.rfind("retracted: ", 0) != 0) b.description = "retracted: " + b.description;
  } else if (state == BottleneckState::kResolved && b.description.rfind("resolved: ", 0) != 0) {
    b.description = "resolved: " + b.description;
  } else if (state == BottleneckState::kActive && b.root != type) {
    b.description += " (caused by " + FormatChain(b.chain) + ")";
  }
  ts.last = b;
  if (transitions_[static_cast<size_t>(change)]) transitions_[static_cast<size_t>(change)]->Inc();
  out.push_back(std::move(b));
}

void BottleneckClassifyOperator::Expire(int64_t watermark_ms, std::vector<Bottleneck>& out) {
  if (options_.idle_expiry_ms <= 0 || instances_.empty()) return;
  const int64_t limit = watermark_ms - options_.idle_expiry_ms;
  bool any = false;
  for (auto it = instances_.begin(); it != instances_.end();) {
    InstanceState& s = it->second;
    const int64_t last = std::max(
        {s.newest_end_ms, s.judged_end_ms, s.open != nullptr ? s.open->end_ms : INT64_MIN});
    if (last == INT64_MIN || last >= limit || s.due) {
      ++it;
      continue;
    }
    for (size_t i = 0; i < kNumBottleneckTypes; ++i) {
      TypeState& ts = s.types[i];
      if (ts.early && ts.phase != Phase::kRaised) {  // never confirmed: retracted, not resolved
        ts.last.description = "no data for " + std::to_string((watermark_ms - last) / 1000) +
                              "s (" + ts.last.description + ")";
        Publish(s, static_cast<BottleneckType>(i), nullptr, nullptr, BottleneckChange::kRetracted,
                BottleneckState::kRetracted, out);
        Bottleneck& b = out.back();
        b.early = true;
        b.severity = ts.early_severity;
        b.active_since_ms = ts.early_since_ms;
        continue;
      }
      if (ts.phase != Phase::kRaised) continue;
      ts.last.description = "no data for " + std::to_string((watermark_ms - last) / 1000) + "s (" +
                            ts.last.description + ")";
      Publish(s, static_cast<BottleneckType>(i), nullptr, nullptr, BottleneckChange::kResolved,
              BottleneckState::kResolved, out);
    }
    if (s.checkpointed) deleted_records_.push_back(RecordKey(s));
    interner_->Unref(s.instance);
    interner_->Unref(s.model);
    it = instances_.erase(it);
    ++expired_;
    if (expired_counter_) expired_counter_->Inc();
    any = true;
  }
  if (any) {
    if (instances_gauge_) instances_gauge_->Set(static_cast<double>(instances_.size()));
    UpdateGauges();
  }
}

void BottleneckClassifyOperator::UpdateGauges() {
  if (active_gauges_[0] == nullptr) return;
  std::array<int, kNumBottleneckTypes> counts{};
  for (const auto& [key, s] : instances_) {
    for (size_t i = 0; i < kNumBottleneckTypes; ++i) {
      counts[i] += s.types[i].phase == Phase::kRaised ? 1 : 0;
    }
  }
  for (size_t i = 0; i < kNumBottleneckTypes; ++i) active_gauges_[i]->Set(counts[i]);
}

std::vector<std::pair<BottleneckType, BottleneckSeverity>> BottleneckClassifyOperator::Active(
    std::string_view instance, std::string_view model) const {
  std::vector<std::pair<BottleneckType, BottleneckSeverity>> active;
  for (const auto& [key, s] : instances_) {
    if (s.instance_name != instance || s.model_name != model) continue;
    for (size_t i = 0; i < kNumBottleneckTypes; ++i) {
      if (s.types[i].phase == Phase::kRaised) {
        active.emplace_back(static_cast<BottleneckType>(i), s.types[i].severity);
      } else if (s.types[i].early) {
        active.emplace_back(static_cast<BottleneckType>(i), s.types[i].early_severity);
      }
    }
  }
  return active;
}

std::string BottleneckClassifyOperator::RecordKey(const InstanceState& s) {
  std::string key = "pair/";
  key += s.instance_name;
  key.push_back('\0');
  key += s.model_name;
  return key;
}

Status BottleneckClassifyOperator::Checkpoint(CheckpointWriter& writer) {
  for (const std::string& key : deleted_records_) writer.Delete(key);
  deleted_records_.clear();
  for (auto& [key, s] : instances_) {
    if (!s.changed) continue;
    s.changed = false;
    json types = json::array();
    for (size_t i = 0; i < kNumBottleneckTypes; ++i) {
      const TypeState& ts = s.types[i];
      if (ts.phase == Phase::kIdle && !ts.early) continue;
      json chain = json::array();
      for (uint8_t c = 0; c < ts.path.length; ++c) {
        chain.push_back(BottleneckTypeName(ts.path.chain[c]));
      }
      types.push_back(
          {{"type", BottleneckTypeName(static_cast<BottleneckType>(i))},
           {"phase", PhaseName(static_cast<int>(ts.phase))},
           {"severity", BottleneckSeverityName(ts.severity)},
           {"since", ts.since_ms},
           {"clear_since", ts.clear_since_ms},
           {"candidate", BottleneckSeverityName(ts.candidate)},
           {"candidate_since", ts.candidate_since_ms},
           {"primary", ts.primary},
           {"chain", std::move(chain)},
           {"last", ts.phase == Phase::kRaised || ts.early ? BottleneckToJson(ts.last) : json()},
           {"early", ts.early},
           {"early_severity", BottleneckSeverityName(ts.early_severity)},
           {"early_end", ts.early_end_ms},
           {"early_since", ts.early_since_ms}});
    }
    const std::string record = RecordKey(s);
    if (types.empty()) {
      if (s.checkpointed) writer.Delete(record);
      s.checkpointed = false;
      continue;
    }
    writer.Put(record, ToJsonText({{"instance", s.instance_name},
                                   {"model", s.model_name},
                                   {"judged_end", s.judged_end_ms},
                                   {"types", std::move(types)}}));
    s.checkpointed = true;
  }
  return Status::Ok();
}

Status BottleneckClassifyOperator::Restore(const CheckpointReader& reader) {
  if (interner_ == nullptr) return Status::Internal("bottleneck_classify: Restore before Open");
  auto bad = [](std::string_view what) {
    return Status::Corruption("bottleneck_classify checkpoint: " + std::string(what));
  };
  Status st = reader.ForEach([&](std::string_view key, std::string_view value) -> Status {
    if (key.rfind("pair/", 0) != 0) return Status::Ok();
    json j = json::parse(value, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j["instance"].is_string() || !j["model"].is_string() ||
        !j["judged_end"].is_number_integer() || !j["types"].is_array()) {
      return bad("malformed record");
    }
    const std::string instance = j["instance"].get<std::string>();
    const std::string model = j["model"].get<std::string>();
    const StringId instance_id = interner_->Intern(instance);
    const StringId model_id = interner_->Intern(model);
    if (instance_id == 0 || model_id == 0) return Status::Ok();  // interner full: start afresh
    InstanceState* s = FindOrAdd(instance_id, model_id);
    if (s == nullptr) return Status::Ok();
    s->judged_end_ms = j["judged_end"].get<int64_t>();
    s->checkpointed = true;
    for (const json& t : j["types"]) {
      if (!t.is_object() || !t["type"].is_string() || !t["phase"].is_string() ||
          !t["severity"].is_string() || !t["since"].is_number_integer() ||
          !t["clear_since"].is_number_integer() || !t["candidate"].is_string() ||
          !t["candidate_since"].is_number_integer() || !t["primary"].is_boolean() ||
          !t["chain"].is_array()) {
        return bad("malformed type state");
      }
      std::optional<BottleneckType> type = ParseBottleneckType(t["type"].get<std::string>());
      std::optional<BottleneckSeverity> severity =
          ParseBottleneckSeverity(t["severity"].get<std::string>());
      std::optional<BottleneckSeverity> candidate =
          ParseBottleneckSeverity(t["candidate"].get<std::string>());
      const std::string phase = t["phase"].get<std::string>();
      // Early fields: absent in records written before early evaluation existed.
      const bool early = t.contains("early") && t["early"].is_boolean() && t["early"].get<bool>();
      std::optional<BottleneckSeverity> early_severity = BottleneckSeverity::kNone;
      if (early) {
        early_severity = t["early_severity"].is_string()
                             ? ParseBottleneckSeverity(t["early_severity"].get<std::string>())
                             : std::nullopt;
        if (!early_severity || !t["early_end"].is_number_integer() ||
            !t["early_since"].is_number_integer()) {
          return bad("malformed early state");
        }
      }
      if (!type || !severity || !candidate ||
          (phase != "pending" && phase != "raised" && !(phase == "idle" && early))) {
        return bad("unknown type, severity or phase");
      }
      TypeState& ts = s->types[static_cast<size_t>(*type)];
      ts.phase = phase == "raised"    ? Phase::kRaised
                 : phase == "pending" ? Phase::kPending
                                      : Phase::kIdle;
      ts.early = early;
      if (early) {
        ts.early_severity = *early_severity;
        ts.early_end_ms = t["early_end"].get<int64_t>();
        ts.early_since_ms = t["early_since"].get<int64_t>();
      }
      ts.severity = *severity;
      ts.since_ms = t["since"].get<int64_t>();
      ts.clear_since_ms = t["clear_since"].get<int64_t>();
      ts.candidate = *candidate;
      ts.candidate_since_ms = t["candidate_since"].get<int64_t>();
      ts.primary = t["primary"].get<bool>();
      ts.path = CausalPath{};
      for (const json& c : t["chain"]) {
        std::optional<BottleneckType> ct =
            c.is_string() ? ParseBottleneckType(c.get<std::string>()) : std::nullopt;
        if (!ct || ts.path.length >= kNumBottleneckTypes) return bad("malformed chain");
        ts.path.chain[ts.path.length++] = *ct;
      }
      if (ts.path.length > 0) ts.path.root = ts.path.chain[0];
      if (ts.phase == Phase::kRaised || ts.early) {
        Result<Bottleneck> last = BottleneckFromJson(t["last"]);
        if (!last.ok()) return last.status().WithContext("bottleneck_classify checkpoint");
        ts.last = std::move(last).value();
      }
    }
    return Status::Ok();
  });
  UpdateGauges();
  return st;
}

}  // namespace inferscope
