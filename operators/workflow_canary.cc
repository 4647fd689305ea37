#include "operators/workflow_canary.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <spdlog/spdlog.h>

#include "pipeline/coding.h"

namespace inferscope {
namespace {

using nlohmann::json;

// 2 adds the per-metric dispersion; a version-1 record restores with dispersion 1.
constexpr uint8_t kRecordVersion = 2;

// A finite number for JSON (NaN and infinities have no JSON form).
json Num(double v) { return std::isfinite(v) ? json(v) : json(); }

json EvidenceJson(const WorkflowMetric& m, const CanaryEvidence& e) {
  return {{"metric", m.metric},
          {"quantile", m.quantile},
          {"direction", m.lower_is_better ? "decrease" : "increase"},
          {"verdict", CanaryVerdictName(e.verdict)},
          {"peer_adjusted", e.peer_adjusted},
          {"z", Num(e.z)},
          {"boundary", Num(e.boundary)},
          {"p_value", Num(e.p_value)},
          {"effect", Num(e.auc_shift)},
          {"before", Num(e.before_q)},
          {"after", Num(e.after_q)},
          {"ratio", Num(e.ratio)},
          {"dispersion", Num(e.dispersion)},
          {"n_before", e.n_before},
          {"n_after", e.n_after}};
}

void PutSketch(std::string* out, const DDSketch& s) {
  std::string bytes;
  s.EncodeTo(&bytes);
  PutVarint(out, bytes.size());  // a varint length: a sketch is longer than str()'s 255 bytes
  out->append(bytes);
}

}  // namespace

Status WorkflowCanaryOperator::Options::Validate() const {
  INFERSCOPE_RETURN_IF_ERROR(canary.Validate());
  if (max_workflows < 1 || max_workflows > 10'000) {
    return Status::InvalidArgument("max_workflows must be in [1, 10000]");
  }
  if (max_baseline_panes < 1 || max_baseline_panes > 100'000) {
    return Status::InvalidArgument("max_baseline_panes must be in [1, 100000]");
  }
  if (no_data_timeout_ms < 1000) return Status::InvalidArgument("no_data_timeout must be >= 1s");
  if (error_series.empty()) return Status::InvalidArgument("error_series must not be empty");
  return Status::Ok();
}

Result<WorkflowCanaryOperator::Options> WorkflowCanaryOperator::ParseOptions(
    const ConfigNode& node) {
  INFERSCOPE_RETURN_IF_ERROR(
      node.CheckKnownFields({"alpha", "min_effect", "min_samples", "max_workflows",
                             "max_baseline_panes", "no_data_timeout", "error_series", "peers"}));
  Options o;
  Result<double> alpha = node.GetDouble("alpha", o.canary.alpha);
  if (!alpha.ok()) return alpha.status();
  if (!(*alpha > 0 && *alpha < 0.5)) return node.Error("alpha", "must be in (0, 0.5)");
  o.canary.alpha = *alpha;
  Result<double> effect = node.GetDouble("min_effect", o.canary.min_effect);
  if (!effect.ok()) return effect.status();
  if (!(*effect >= 0 && *effect < 10)) return node.Error("min_effect", "must be in [0, 10)");
  o.canary.min_effect = *effect;
  Result<int64_t> samples =
      node.GetInt("min_samples", static_cast<int64_t>(o.canary.min_samples), 2, 1'000'000'000);
  if (!samples.ok()) return samples.status();
  o.canary.min_samples = static_cast<uint64_t>(*samples);
  Result<int64_t> max_workflows = node.GetInt("max_workflows", o.max_workflows, 1, 10'000);
  if (!max_workflows.ok()) return max_workflows.status();
  o.max_workflows = *max_workflows;
  Result<int64_t> panes = node.GetInt("max_baseline_panes", o.max_baseline_panes, 1, 100'000);
  if (!panes.ok()) return panes.status();
  o.max_baseline_panes = *panes;
  Result<int64_t> timeout = node.GetDurationMs("no_data_timeout", o.no_data_timeout_ms, 1000);
  if (!timeout.ok()) return timeout.status();
  o.no_data_timeout_ms = *timeout;
  Result<std::string> series = node.GetString("error_series", o.error_series);
  if (!series.ok()) return series.status();
  if (series->empty()) return node.Error("error_series", "must not be empty");
  o.error_series = *series;
  Result<bool> peers = node.GetBool("peers", o.peers);
  if (!peers.ok()) return peers.status();
  o.peers = *peers;
  if (Status st = o.Validate(); !st.ok()) return node.Error("", st.message());
  return o;
}

Result<std::unique_ptr<WorkflowCanaryOperator>> WorkflowCanaryOperator::Create(
    const ConfigNode& options) {
  Result<Options> parsed = ParseOptions(options);
  if (!parsed.ok()) return parsed.status();
  return std::make_unique<WorkflowCanaryOperator>(std::move(parsed).value());
}

WorkflowCanaryOperator::WorkflowCanaryOperator(Options options) : options_(std::move(options)) {}

WorkflowCanaryOperator::~WorkflowCanaryOperator() {
  if (interner_ == nullptr) return;
  for (auto& [id, t] : tracked_) {
    interner_->Unref(t.instance);
    interner_->Unref(t.model);
    for (StringId m : t.metric_ids) interner_->Unref(m);
  }
}

Status WorkflowCanaryOperator::Open(const StageContext& ctx) {
  INFERSCOPE_RETURN_IF_ERROR(options_.Validate());
  if (ctx.interner == nullptr) {
    return Status::InvalidArgument("operator '" + ctx.name +
                                   "': the stage context lacks an interner");
  }
  registry_ = ctx.services.Get<WorkflowRegistry>();
  if (registry_ == nullptr) {
    return Status::InvalidArgument("operator '" + ctx.name +
                                   "': workflow_canary needs the engine's workflow registry");
  }
  interner_ = ctx.interner;
  stage_ = ctx.name;
  change_seq_ = registry_->last_change_seq();  // changes from now on
  if (ctx.metrics == nullptr) return Status::Ok();
  MetricsRegistry& m = *ctx.metrics;
  const Labels stage = {{"stage", ctx.name}};
  tracked_gauge_ = m.GetGauge("inferscope_workflow_canary_workflows",
                              "Workflows whose canary the operator tracks", stage);
  looks_counter_ = m.GetCounter("inferscope_workflow_canary_looks_total",
                                "Sequential looks taken at running canaries", stage);
  untracked_counter_ =
      m.GetCounter("inferscope_workflow_canary_untracked_total",
                   "Times an active workflow could not be tracked (max_workflows reached)", stage);
  updates_ignored_ =
      m.GetCounter("inferscope_workflow_canary_pane_updates_ignored_total",
                   "Pane updates (late events) not applied to canary sketches", stage);
  write_errors_ =
      m.GetCounter("inferscope_workflow_canary_write_errors_total",
                   "Failed writes of a workflow's progress or verdict (retried)", stage);
  for (size_t s = 0; s < kNumWorkflowStates; ++s) {
    const WorkflowState state = static_cast<WorkflowState>(s);
    if (state != WorkflowState::kCompleted && state != WorkflowState::kRolledBack &&
        state != WorkflowState::kFailed) {
      continue;
    }
    verdicts_[s] =
        m.GetCounter("inferscope_workflow_canary_verdicts_total",
                     "Workflows finished by the canary, by final state",
                     {{"stage", ctx.name}, {"state", std::string(WorkflowStateName(state))}});
  }
  return Status::Ok();
}

Status WorkflowCanaryOperator::Process(const EventBatch&, OutputBatch&) {
  return Status::InvalidArgument(
      "workflow_canary reads a window_aggregate operator's pane summaries, not events");
}

void WorkflowCanaryOperator::ResetPeriod(const Tracked& t, Period* p) const {
  p->inst.assign(t.metric_ids.size(), Acc());
  p->peers.assign(t.metric_ids.size(), Acc());
}

Status WorkflowCanaryOperator::Track(const Workflow& w) {
  Tracked t;
  t.workflow = w;
  auto intern = [&](std::string_view name) -> StringId {
    const StringId id = interner_->Intern(name);
    if (id != 0) interner_->Ref(id);
    return id;
  };
  t.instance = intern(w.instance);
  t.model = intern(w.model);
  std::vector<const WorkflowMetric*> metrics = {&w.target};
  for (const WorkflowMetric& g : w.guards) metrics.push_back(&g);
  for (const WorkflowMetric* m : metrics) {
    const bool proportion = m->metric == kErrorRatioMetric;
    t.proportion.push_back(proportion);
    t.metric_ids.push_back(
        intern(proportion ? std::string_view(options_.error_series) : std::string_view(m->metric)));
  }
  ResetPeriod(t, &t.before);
  ResetPeriod(t, &t.after);
  if (auto r = restored_.find(w.id); r != restored_.end()) {
    Status st = Decode(r->second, &t);
    if (!st.ok()) {
      spdlog::warn("workflow_canary '{}': workflow {}: checkpoint not restored ({}); starting over",
                   stage_, w.id, st.ToString());
      t.ring.clear();
      t.applied = false;
      ResetPeriod(t, &t.before);
      ResetPeriod(t, &t.after);
    }
    restored_.erase(r);
  }
  Tracked& slot = tracked_[w.id] = std::move(t);
  if (w.state == WorkflowState::kApplied && !slot.applied && w.applied_at_ms) {
    ApplyChange(slot, *w.applied_at_ms);
  }
  return Status::Ok();
}

void WorkflowCanaryOperator::Untrack(const std::string& id) {
  auto it = tracked_.find(id);
  if (it == tracked_.end()) return;
  interner_->Unref(it->second.instance);
  interner_->Unref(it->second.model);
  for (StringId m : it->second.metric_ids) interner_->Unref(m);
  tracked_.erase(it);
  deleted_records_.push_back(id);
}

void WorkflowCanaryOperator::Sync() {
  const uint64_t version = registry_->version();
  if (version == seen_version_) return;
  seen_version_ = version;
  std::vector<Workflow> active = registry_->Active();
  std::vector<std::string> gone;
  for (const auto& entry : tracked_) {
    // Not a structured binding: clang 14 cannot capture one in the lambda below.
    const std::string& id = entry.first;
    auto it =
        std::find_if(active.begin(), active.end(), [&](const Workflow& w) { return w.id == id; });
    if (it == active.end()) gone.push_back(id);
  }
  for (const std::string& id : gone) Untrack(id);
  for (const Workflow& w : active) {
    auto it = tracked_.find(w.id);
    if (it == tracked_.end()) {
      if (tracked_.size() >= static_cast<size_t>(options_.max_workflows)) {
        if (untracked_counter_ != nullptr) untracked_counter_->Inc();
        seen_version_ = UINT64_MAX;  // try again next step
        continue;
      }
      Status st = Track(w);
      if (!st.ok()) spdlog::warn("workflow_canary '{}': {}", stage_, st.ToString());
      continue;
    }
    Tracked& t = it->second;
    t.workflow.state = w.state;
    if (w.state == WorkflowState::kApplied && !t.applied && w.applied_at_ms) {
      t.workflow.applied_at_ms = w.applied_at_ms;
      ApplyChange(t, *w.applied_at_ms);
    }
  }
  // Checkpoint records of workflows that are no longer active.
  for (auto& [id, record] : restored_) deleted_records_.push_back(id);
  restored_.clear();
  if (tracked_gauge_ != nullptr) tracked_gauge_->Set(static_cast<double>(tracked_.size()));
}

void WorkflowCanaryOperator::ApplyChange(Tracked& t, int64_t applied_ms) {
  t.applied = true;
  t.applied_ms = applied_ms;
  t.dirty = true;
  auto merge = [](Period& into, const Period& from) {
    for (size_t m = 0; m < into.inst.size(); ++m) {
      for (auto [to, src] :
           {std::pair{&into.inst[m], &from.inst[m]}, std::pair{&into.peers[m], &from.peers[m]}}) {
        to->counts.events += src->counts.events;
        to->counts.errors += src->counts.errors;
        if (src->sketch.empty()) continue;
        if (to->sketch.empty()) {
          to->sketch = src->sketch;
        } else {
          (void)to->sketch.Merge(src->sketch);  // same parameters: both copied from panes
        }
      }
    }
  };
  // The baseline's overdispersion per metric: each baseline pane's instance sketch against its
  // peers' (or, without peers, against the whole baseline of the instance).
  t.dispersion.assign(t.metric_ids.size(), 1.0);
  std::vector<double> pane_z;
  for (size_t m = 0; m < t.metric_ids.size(); ++m) {
    if (t.proportion[m]) continue;
    pane_z.clear();
    DDSketch whole;
    if (!options_.peers) {
      for (const PaneEntry& e : t.ring) {
        const DDSketch& sk = e.period.inst[m].sketch;
        if (e.end_ms > applied_ms || e.start_ms < applied_ms - t.workflow.baseline_ms) continue;
        if (sk.empty()) continue;
        if (whole.empty()) {
          whole = sk;
        } else {
          (void)whole.Merge(sk);  // panes of one window operator share parameters
        }
      }
    }
    for (const PaneEntry& e : t.ring) {
      if (e.end_ms > applied_ms || e.start_ms < applied_ms - t.workflow.baseline_ms) continue;
      const DDSketch& inst = e.period.inst[m].sketch;
      const DDSketch& ref = options_.peers ? e.period.peers[m].sketch : whole;
      if (inst.count() < 2 || ref.count() < 2) continue;
      Result<RankComparison> r = CompareSketches(inst, ref);
      if (r.ok()) pane_z.push_back(r->z);
    }
    t.dispersion[m] = DispersionOf(pane_z);
  }
  for (const PaneEntry& e : t.ring) {
    if (e.end_ms <= applied_ms) {
      if (e.start_ms >= applied_ms - t.workflow.baseline_ms) merge(t.before, e.period);
    } else if (e.start_ms >= applied_ms) {
      merge(t.after, e.period);
      if (e.has_target) t.after_end_ms = std::max(t.after_end_ms, e.end_ms);
    }
  }
  t.ring.clear();
}

void WorkflowCanaryOperator::AddTo(Tracked& t, Period& p, size_t metric, bool inst,
                                   const WindowSummary& s) {
  Acc& acc = inst ? p.inst[metric] : p.peers[metric];
  if (t.proportion[metric]) {
    acc.counts.events += s.agg.events;
    acc.counts.errors += s.agg.errors;
    return;
  }
  if (s.agg.sketch.empty()) return;
  if (acc.sketch.empty()) {
    acc.sketch = s.agg.sketch;
  } else {
    (void)acc.sketch.Merge(s.agg.sketch);  // panes of one window operator share parameters
  }
}

void WorkflowCanaryOperator::Ingest(const WindowSummary& s) {
  for (auto& [id, t] : tracked_) {
    if (s.series.model != t.model || t.model == 0) continue;
    const bool inst = s.series.instance == t.instance;
    if (!inst && !options_.peers) continue;
    for (size_t m = 0; m < t.metric_ids.size(); ++m) {
      if (t.metric_ids[m] != s.series.metric) continue;
      const bool target = inst && m == 0;
      if (target) t.last_target_end_ms = std::max(t.last_target_end_ms, s.end_ms);
      t.dirty = true;
      if (t.applied) {
        if (s.end_ms <= t.applied_ms) {
          if (s.start_ms >= t.applied_ms - t.workflow.baseline_ms) AddTo(t, t.before, m, inst, s);
        } else if (s.start_ms >= t.applied_ms) {
          AddTo(t, t.after, m, inst, s);
          if (target) t.after_end_ms = std::max(t.after_end_ms, s.end_ms);
        }
        continue;
      }
      // Before the change: the ring, in pane order, newest at the back.
      auto it = std::find_if(t.ring.rbegin(), t.ring.rend(),
                             [&](const PaneEntry& e) { return e.start_ms <= s.start_ms; });
      PaneEntry* entry = nullptr;
      if (it != t.ring.rend() && it->start_ms == s.start_ms) {
        entry = &*it;
      } else {
        if (it == t.ring.rend() && !t.ring.empty() &&
            t.ring.size() >= static_cast<size_t>(options_.max_baseline_panes)) {
          continue;  // older than everything kept, and the ring is full
        }
        auto pos = t.ring.insert(it.base(), PaneEntry{});
        pos->start_ms = s.start_ms;
        pos->end_ms = s.end_ms;
        ResetPeriod(t, &pos->period);
        entry = &*pos;
      }
      if (target) entry->has_target = true;
      AddTo(t, entry->period, m, inst, s);
      // Keep at most `baseline` of event time and max_baseline_panes panes.
      const int64_t newest = t.ring.back().end_ms;
      while (!t.ring.empty() && (t.ring.size() > static_cast<size_t>(options_.max_baseline_panes) ||
                                 t.ring.front().start_ms < newest - t.workflow.baseline_ms)) {
        if (&t.ring.front() == entry) break;
        t.ring.pop_front();
      }
    }
  }
}

void WorkflowCanaryOperator::Finish(Tracked& t, WorkflowState to, std::string_view verdict,
                                    json evidence, const std::string& reason) {
  Result<Workflow> done =
      registry_->Finish(t.workflow.id, to, verdict, std::move(evidence), reason);
  if (!done.ok()) {
    // A store failure is retried at the next look; another state (rejected meanwhile) ends it.
    if (done.status().code() == Status::Code::kFailedPrecondition ||
        done.status().code() == Status::Code::kNotFound) {
      finished_.push_back(t.workflow.id);
      return;
    }
    if (write_errors_ != nullptr) write_errors_->Inc();
    spdlog::warn("workflow_canary '{}': workflow {}: {}", stage_, t.workflow.id,
                 done.status().ToString());
    return;
  }
  spdlog::info("workflow {} ({}/{}): {} ({}) {}", t.workflow.id, t.workflow.instance,
               t.workflow.model, WorkflowStateName(to), verdict, reason);
  if (verdicts_[static_cast<size_t>(to)] != nullptr) verdicts_[static_cast<size_t>(to)]->Inc();
  finished_.push_back(t.workflow.id);
}

void WorkflowCanaryOperator::Look(Tracked& t, int64_t event_time_ms) {
  const Workflow& w = t.workflow;
  if (!t.applied) return;
  // No data from the instance for too long: the canary cannot judge.
  const int64_t last = std::max(t.last_target_end_ms, t.applied_ms);
  if (event_time_ms != INT64_MIN && event_time_ms - last > options_.no_data_timeout_ms) {
    Finish(t, WorkflowState::kFailed, "", json::object(),
           "no pane of " + w.instance + "/" + w.model + " " + w.target.metric + " for " +
               std::to_string((event_time_ms - last) / 1000) + " s of event time");
    return;
  }
  if (t.after_end_ms == INT64_MIN || t.after_end_ms <= t.looked_end_ms) return;
  t.looked_end_ms = t.after_end_ms;
  ++looks_;
  if (looks_counter_ != nullptr) looks_counter_->Inc();
  const double fraction = std::min(
      1.0, static_cast<double>(t.after_end_ms - t.applied_ms) / static_cast<double>(w.canary_ms));

  std::vector<const WorkflowMetric*> metrics = {&w.target};
  for (const WorkflowMetric& g : w.guards) metrics.push_back(&g);
  json guards = json::array();
  json target;
  bool any_regressed = false;
  CanaryVerdict target_verdict = CanaryVerdict::kContinue;
  uint64_t target_before = 0, target_after = 0;
  bool peer_adjusted = false;
  for (size_t m = 0; m < metrics.size(); ++m) {
    CanaryOptions o = options_.canary;
    o.quantile = metrics[m]->quantile;
    Result<CanaryEvidence> e = Status::Internal("unset");
    if (t.proportion[m]) {
      ProportionSamples ps;
      ps.before = t.before.inst[m].counts;
      ps.after = t.after.inst[m].counts;
      if (options_.peers && t.before.peers[m].counts.events >= o.min_samples) {
        ps.peers_before = &t.before.peers[m].counts;
        ps.peers_after = &t.after.peers[m].counts;
      }
      e = JudgeProportion(ps, fraction, metrics[m]->lower_is_better, o);
    } else if (t.before.inst[m].sketch.empty() || t.after.inst[m].sketch.empty()) {
      CanaryEvidence none;
      none.fraction = fraction;
      none.n_before = t.before.inst[m].sketch.count();
      none.n_after = t.after.inst[m].sketch.count();
      none.verdict = fraction >= 1 ? CanaryVerdict::kNoEffect : CanaryVerdict::kContinue;
      e = none;
    } else {
      CanarySamples cs;
      cs.before = &t.before.inst[m].sketch;
      cs.after = &t.after.inst[m].sketch;
      cs.dispersion = m < t.dispersion.size() ? t.dispersion[m] : 1.0;
      if (options_.peers && t.before.peers[m].sketch.count() >= o.min_samples &&
          !t.after.peers[m].sketch.empty()) {
        cs.peers_before = &t.before.peers[m].sketch;
        cs.peers_after = &t.after.peers[m].sketch;
      }
      e = JudgeCanary(cs, fraction, metrics[m]->lower_is_better, o);
    }
    if (!e.ok()) {
      Finish(t, WorkflowState::kFailed, "", json::object(),
             "judging " + metrics[m]->metric + ": " + e.status().message());
      return;
    }
    json j = EvidenceJson(*metrics[m], *e);
    if (e->verdict == CanaryVerdict::kRegressed) any_regressed = true;
    if (m == 0) {
      target = std::move(j);
      target_verdict = e->verdict;
      target_before = e->n_before;
      target_after = e->n_after;
      peer_adjusted = e->peer_adjusted;
    } else {
      guards.push_back(std::move(j));
    }
  }
  json evidence = {{"fraction", fraction},        {"peer_adjusted", peer_adjusted},
                   {"applied_at", t.applied_ms},  {"after_until", t.after_end_ms},
                   {"target", std::move(target)}, {"guards", std::move(guards)}};
  if (any_regressed) {
    std::string what;
    if (target_verdict == CanaryVerdict::kRegressed) what = w.target.metric;
    for (const json& g : evidence["guards"]) {
      if (g["verdict"] == "regressed") {
        what += (what.empty() ? "" : ", ") + g["metric"].get<std::string>();
      }
    }
    Finish(t, WorkflowState::kRolledBack, "regressed", std::move(evidence), "regressed: " + what);
    return;
  }
  if (target_verdict == CanaryVerdict::kImproved) {
    Finish(t, WorkflowState::kCompleted, "improved", std::move(evidence),
           w.target.metric + " improved without regression");
    return;
  }
  if (fraction >= 1) {
    if (target_before < options_.canary.min_samples || target_after < options_.canary.min_samples) {
      Finish(t, WorkflowState::kFailed, "", std::move(evidence),
             "insufficient data for " + w.target.metric + ": " + std::to_string(target_before) +
                 " values before, " + std::to_string(target_after) + " after (min_samples " +
                 std::to_string(options_.canary.min_samples) + ")");
    } else {
      Finish(t, WorkflowState::kCompleted, "no_effect", std::move(evidence),
             "no significant effect on " + w.target.metric + " and no regression: change kept");
    }
    return;
  }
  Status st = registry_->RecordProgress(w.id, fraction, std::move(evidence));
  if (!st.ok() && write_errors_ != nullptr) write_errors_->Inc();
}

Status WorkflowCanaryOperator::ProcessResults(const OutputBatch& in, OutputBatch& out) {
  Sync();
  if (in.watermark_ms > 0) event_time_ms_ = std::max(event_time_ms_, in.watermark_ms);
  std::span<const WindowSummary> panes = in.Get<kind::PaneSummary>();
  if (!tracked_.empty()) {
    for (const WindowSummary& s : panes) {
      event_time_ms_ = std::max(event_time_ms_, s.end_ms);
      if (s.update) {
        if (updates_ignored_ != nullptr) updates_ignored_->Inc();
        continue;
      }
      Ingest(s);
    }
    for (auto& [id, t] : tracked_) Look(t, event_time_ms_);
  }
  for (const std::string& id : finished_) Untrack(id);
  finished_.clear();
  if (tracked_gauge_ != nullptr) tracked_gauge_->Set(static_cast<double>(tracked_.size()));
  EmitChanges(out);
  return Status::Ok();
}

int64_t WorkflowCanaryOperator::NextTimerMs(int64_t now_ms) const {
  if (registry_ == nullptr) return kNoTimer;
  if (registry_->version() != seen_version_ || registry_->last_change_seq() != change_seq_) {
    return now_ms;
  }
  // Its timer only relays registry changes; a change made later wakes the operator thread
  // (WorkflowRegistry::SetOnChange: the engine wires it to Executor::Wake).
  return kNoTimer;
}

Status WorkflowCanaryOperator::OnTimer(int64_t, OutputBatch& out) {
  Sync();
  EmitChanges(out);
  return Status::Ok();
}

void WorkflowCanaryOperator::EmitChanges(OutputBatch& out) {
  if (registry_->last_change_seq() == change_seq_) return;
  uint64_t dropped = 0;
  for (WorkflowChange& c : registry_->ChangesSince(&change_seq_, &dropped)) {
    out.Add<kind::WorkflowChange>(std::move(c));
  }
  if (dropped > 0 && changes_dropped_ != nullptr) changes_dropped_->Inc(dropped);
}

std::string WorkflowCanaryOperator::Encode(const Tracked& t) const {
  std::string out;
  out.push_back(static_cast<char>(kRecordVersion));
  PutVarint(&out, t.metric_ids.size());
  auto put_i64 = [&](int64_t v) { PutVarint(&out, static_cast<uint64_t>(v)); };
  auto put_period = [&](const Period& p) {
    for (size_t m = 0; m < t.metric_ids.size(); ++m) {
      for (const Acc* a : {&p.inst[m], &p.peers[m]}) {
        PutVarint(&out, a->counts.events);
        PutVarint(&out, a->counts.errors);
        PutSketch(&out, a->sketch);
      }
    }
  };
  out.push_back(t.applied ? 1 : 0);
  put_i64(t.applied_ms);
  put_i64(t.last_target_end_ms);
  put_i64(t.after_end_ms);
  put_i64(t.looked_end_ms);
  PutVarint(&out, t.ring.size());
  for (const PaneEntry& e : t.ring) {
    put_i64(e.start_ms);
    put_i64(e.end_ms);
    out.push_back(e.has_target ? 1 : 0);
    put_period(e.period);
  }
  put_period(t.before);
  put_period(t.after);
  PutVarint(&out, t.dispersion.size());
  for (double d : t.dispersion) PutDouble(&out, d);
  return out;
}

Status WorkflowCanaryOperator::Decode(std::string_view in, Tracked* t) const {
  auto bad = [] { return Status::Corruption("workflow_canary checkpoint record"); };
  if (in.empty() ||
      (static_cast<uint8_t>(in[0]) != kRecordVersion && static_cast<uint8_t>(in[0]) != 1)) {
    return bad();
  }
  const bool v1 = static_cast<uint8_t>(in[0]) == 1;
  in.remove_prefix(1);
  uint64_t n = 0;
  if (!GetVarint(&in, &n) || n != t->metric_ids.size()) return bad();
  auto get_i64 = [&](int64_t* v) {
    uint64_t u = 0;
    if (!GetVarint(&in, &u)) return false;
    *v = static_cast<int64_t>(u);
    return true;
  };
  auto get_byte = [&](bool* b) {
    if (in.empty()) return false;
    *b = in[0] != 0;
    in.remove_prefix(1);
    return true;
  };
  auto get_period = [&](Period* p) -> Status {
    ResetPeriod(*t, p);
    for (size_t m = 0; m < n; ++m) {
      for (Acc* a : {&p->inst[m], &p->peers[m]}) {
        std::string_view bytes;
        if (!GetVarint(&in, &a->counts.events) || !GetVarint(&in, &a->counts.errors) ||
            !GetLengthPrefixed(&in, &bytes)) {
          return bad();
        }
        INFERSCOPE_RETURN_IF_ERROR(DDSketch::DecodeFrom(&bytes, &a->sketch));
      }
    }
    return Status::Ok();
  };
  if (!get_byte(&t->applied) || !get_i64(&t->applied_ms) || !get_i64(&t->last_target_end_ms) ||
      !get_i64(&t->after_end_ms) || !get_i64(&t->looked_end_ms)) {
    return bad();
  }
  uint64_t ring = 0;
  if (!GetVarint(&in, &ring) || ring > static_cast<uint64_t>(options_.max_baseline_panes)) {
    return bad();
  }
  t->ring.clear();
  for (uint64_t i = 0; i < ring; ++i) {
    PaneEntry& e = t->ring.emplace_back();
    if (!get_i64(&e.start_ms) || !get_i64(&e.end_ms) || !get_byte(&e.has_target)) return bad();
    INFERSCOPE_RETURN_IF_ERROR(get_period(&e.period));
  }
  INFERSCOPE_RETURN_IF_ERROR(get_period(&t->before));
  INFERSCOPE_RETURN_IF_ERROR(get_period(&t->after));
  t->dispersion.clear();  // not applied yet (or a version-1 record): 1 at every look
  if (!v1) {
    uint64_t k = 0;
    if (!GetVarint(&in, &k) || (k != n && k != 0)) return bad();
    t->dispersion.assign(k, 1.0);
    for (double& d : t->dispersion) {
      if (!GetDouble(&in, &d) || !(d >= 1)) return bad();
    }
  }
  if (!in.empty()) return bad();
  return Status::Ok();
}

Status WorkflowCanaryOperator::Checkpoint(CheckpointWriter& writer) {
  for (const std::string& id : deleted_records_) {
    if (tracked_.count(id) == 0) writer.Delete(id);
  }
  deleted_records_.clear();
  for (auto& [id, t] : tracked_) {
    if (!t.dirty) continue;
    writer.Put(id, Encode(t));
    t.dirty = false;
  }
  return Status::Ok();
}

Status WorkflowCanaryOperator::Restore(const CheckpointReader& reader) {
  restored_.clear();
  INFERSCOPE_RETURN_IF_ERROR(reader.ForEach([&](std::string_view key, std::string_view value) {
    restored_.emplace(std::string(key), std::string(value));
    return Status::Ok();
  }));
  // Tracked workflows are rebuilt from the registry at the next Sync, taking these records.
  std::vector<std::string> ids;
  for (const auto& [id, t] : tracked_) ids.push_back(id);
  for (const std::string& id : ids) Untrack(id);
  deleted_records_.clear();
  seen_version_ = UINT64_MAX;
  return Status::Ok();
}

}  // namespace inferscope
