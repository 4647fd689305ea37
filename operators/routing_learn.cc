#include "operators/routing_learn.h"

#include <algorithm>
#include <charconv>
#include <string>

#include "pipeline/summary.h"

namespace inferscope {

using routing::RoutingLearner;
using routing::Strategy;

Status RoutingLearnOperator::Options::Validate() const {
  INFERSCOPE_RETURN_IF_ERROR(routing.Validate());
  if (strategies.empty()) return Status::InvalidArgument("strategies must not be empty");
  if (max_event_age_ms < 1) return Status::InvalidArgument("max_event_age must be at least 1ms");
  if (check_interval_ms < 0) return Status::InvalidArgument("check_interval must not be negative");
  if (max_future_skew_ms < 0) {
    return Status::InvalidArgument("max_future_skew must not be negative");
  }
  return Status::Ok();
}

Result<RoutingLearnOperator::Options> RoutingLearnOperator::ParseOptions(const ConfigNode& node) {
  INFERSCOPE_RETURN_IF_ERROR(node.CheckKnownFields({"half_life",
                                                    "quality_half_life",
                                                    "prior_samples",
                                                    "prior_log_variance",
                                                    "posterior_draws",
                                                    "recompute_interval",
                                                    "refresh_interval",
                                                    "gauge_max_age",
                                                    "assumed_slots",
                                                    "kv_saturation",
                                                    "temperature",
                                                    "prediction_noise",
                                                    "residual_noise",
                                                    "load_choices",
                                                    "seed",
                                                    "learned_capabilities",
                                                    "health",
                                                    "publish",
                                                    "limits",
                                                    "models",
                                                    "strategies",
                                                    "max_event_age",
                                                    "max_future_skew",
                                                    "check_interval"}));
  Options o;
  INFERSCOPE_RETURN_IF_ERROR(routing::ParseRoutingOptions(node, &o.routing));
  if (node.Has("strategies")) {
    const YAML::Node list = node.node()["strategies"];
    if (!list.IsSequence() || list.size() == 0) {
      return node.Error("strategies", "expected a non-empty list such as [balanced, adaptive]");
    }
    o.strategies.clear();
    for (const YAML::Node& item : list) {
      Strategy s;
      const std::string name = item.IsScalar() ? item.Scalar() : std::string();
      if (!routing::ParseStrategy(name, &s)) {
        return node.Error("strategies",
                          "unknown strategy '" + name +
                              "' (lowest_latency, highest_quality, cost_effective, balanced, "
                              "adaptive)");
      }
      if (std::find(o.strategies.begin(), o.strategies.end(), s) != o.strategies.end()) {
        return node.Error("strategies", "strategy '" + name + "' listed twice");
      }
      o.strategies.push_back(s);
    }
  }
  Result<int64_t> age = node.GetDurationMs("max_event_age", o.max_event_age_ms, 1);
  if (!age.ok()) return age.status();
  o.max_event_age_ms = *age;
  Result<int64_t> skew = node.GetDurationMs("max_future_skew", o.max_future_skew_ms, 0);
  if (!skew.ok()) return skew.status();
  o.max_future_skew_ms = *skew;
  Result<int64_t> check = node.GetDurationMs("check_interval", o.check_interval_ms, 0);
  if (!check.ok()) return check.status();
  o.check_interval_ms = *check;
  if (Status st = o.Validate(); !st.ok()) return node.Error("", st.message());
  return o;
}

Result<std::unique_ptr<RoutingLearnOperator>> RoutingLearnOperator::Create(
    const ConfigNode& options) {
  Result<Options> parsed = ParseOptions(options);
  if (!parsed.ok()) return parsed.status();
  return std::make_unique<RoutingLearnOperator>(std::move(parsed).value());
}

RoutingLearnOperator::RoutingLearnOperator(Options options)
    : options_(std::move(options)), clock_(options_.max_future_skew_ms) {}

RoutingLearnOperator::~RoutingLearnOperator() = default;

Status RoutingLearnOperator::Open(const StageContext& ctx) {
  INFERSCOPE_RETURN_IF_ERROR(options_.Validate());
  if (ctx.interner == nullptr) {
    return Status::InvalidArgument("operator '" + ctx.name +
                                   "': the stage context lacks an interner");
  }
  interner_ = ctx.interner;
  // Open may run again (a restarted executor): a new learner replaces the registered one.
  router_ = std::make_shared<routing::LiveRouter>(options_.routing, ctx.metrics);
  if (auto* registry = ctx.services.Get<routing::RoutingRegistry>()) {
    registry->Register(ctx.name, router_);
  }
  touched_.reserve(16);
  if (ctx.metrics == nullptr) return Status::Ok();
  MetricsRegistry& m = *ctx.metrics;
  const Labels stage = {{"stage", ctx.name}};
  outcomes_ =
      m.GetCounter("inferscope_routing_updates_total", "Events fed to the routing learner, by kind",
                   {{"stage", ctx.name}, {"kind", "request"}});
  gauges_ =
      m.GetCounter("inferscope_routing_updates_total", "Events fed to the routing learner, by kind",
                   {{"stage", ctx.name}, {"kind", "gauge"}});
  publications_ = m.GetCounter("inferscope_routing_publications_total",
                               "Routing weights emitted per (model, strategy) change", stage);
  dropped_old_ = m.GetCounter("inferscope_routing_events_dropped_total",
                              "Events the routing learner dropped, by reason",
                              {{"stage", ctx.name}, {"reason", "too_old"}});
  dropped_unnamed_ = m.GetCounter("inferscope_routing_events_dropped_total",
                                  "Events the routing learner dropped, by reason",
                                  {{"stage", ctx.name}, {"reason", "no_model_or_instance"}});
  future_ =
      m.GetCounter("inferscope_routing_events_future_total",
                   "Events more than max_future_skew ahead of the routing learner's now", stage);
  models_ = m.GetGauge("inferscope_routing_models", "Models the routing learner tracks", stage);
  return Status::Ok();
}

void RoutingLearnOperator::PublishModel(RoutingLearner& learner, RoutingLearner::ModelId model,
                                        int64_t now_ms, std::vector<routing::RoutingWeights>& out) {
  for (Strategy s : options_.strategies) {
    if (learner.PublishIfChanged(model, s, now_ms, &scratch_)) {
      out.push_back(scratch_);
      if (publications_) publications_->Inc();
    }
  }
}

void RoutingLearnOperator::PublishForgotten(RoutingLearner& learner, int64_t now_ms,
                                            OutputBatch& out) {
  std::vector<std::string> models = learner.TakeForgotten();
  if (models.empty()) return;
  std::vector<routing::RoutingWeights>& results = out.Mutable<kind::RoutingWeights>();
  for (std::string& name : models) {
    const RoutingLearner::ModelId m = learner.FindModel(name);
    if (m != RoutingLearner::kNoModel) {
      PublishModel(learner, m, now_ms, results);  // a backend added or removed: published at once
    } else {
      // The model is gone: its weights are published once more, without backends, so the
      // stream's subscribers and the store stop routing to the old ones.
      for (Strategy s : options_.strategies) {
        routing::RoutingWeights w;
        w.model = name;
        w.strategy = s;
        w.time_ms = now_ms;
        results.push_back(std::move(w));
        if (publications_) publications_->Inc();
      }
    }
    changed_.insert(std::move(name));  // the checkpoint rewrites or deletes its record
  }
}

Status RoutingLearnOperator::Process(const EventBatch& batch, OutputBatch& out) {
  if (router_ == nullptr) return Status::Internal("routing_learn: Process before Open");
  if (batch.events.empty()) return Status::Ok();
  touched_.clear();
  const uint64_t future_before = clock_.suspects();
  uint64_t outcomes = 0, gauges = 0, old = 0, unnamed = 0;
  int64_t newest = INT64_MIN;
  router_->With([&](RoutingLearner& learner) {
    for (const Event& e : batch.events) {
      const int64_t time_ms = clock_.Observe(e.time_ms);
      const int64_t now = clock_.now_ms();
      if (now > INT64_MIN + options_.max_event_age_ms &&
          time_ms < now - options_.max_event_age_ms) {
        ++old;
        continue;
      }
      const std::string_view model = interner_->Name(e.model);
      const std::string_view instance = interner_->Name(e.instance);
      if (model.empty() || instance.empty()) {
        ++unnamed;
        continue;
      }
      if (e.kind == EventKind::kRequest) {
        routing::Outcome o;
        o.backend = instance;
        o.model = model;
        o.time_ms = time_ms;
        if (e.Has(kHasTtft)) o.ttft_ms = e.ttft_ms;
        if (e.Has(kHasTpot)) o.tpot_ms = e.tpot_ms;
        if (e.Has(kHasE2e)) o.e2e_ms = e.e2e_ms;
        if (e.Has(kHasPromptTokens)) o.prompt_tokens = e.prompt_tokens;
        if (e.Has(kHasOutputTokens)) o.output_tokens = e.output_tokens;
        if (e.Has(kHasCachedTokens)) o.cached_tokens = e.cached_tokens;
        if (e.Has(kHasCost)) o.cost_usd = e.cost_usd;
        if (e.Has(kHasQuality)) o.quality = e.quality;
        o.error = e.error;
        learner.Observe(o);
        ++outcomes;
      } else {
        learner.ObserveGauge({.backend = instance,
                              .model = model,
                              .name = interner_->Name(e.metric),
                              .value = e.value,
                              .time_ms = time_ms});
        ++gauges;
      }
      if (std::find(touched_.begin(), touched_.end(), e.model) == touched_.end()) {
        touched_.push_back(e.model);
      }
    }
    newest = clock_.now_ms();
    router_->AdvanceTo(newest);
    for (StringId id : touched_) {
      const std::string_view name = interner_->Name(id);
      // A refused model (limits) has no record to write.
      if (learner.FindModel(name) != RoutingLearner::kNoModel && !changed_.contains(name)) {
        changed_.emplace(name);
      }
    }
    // Backends silent for limits.backend_ttl are removed as event time passes them.
    learner.ExpireIdle(newest);
    PublishForgotten(learner, newest, out);
    // A backend ejected (or an ejection refused, or a recovery) in this batch: its model's
    // weights are checked now, so failover is not delayed. Other changes are checked on the
    // timer (OnTimer, ~100 ms): a table rebuild per batch would cost the event rate dearly.
    const routing::LearnerStats& stats = learner.stats();
    const uint64_t gate_events = stats.ejections + stats.ejections_refused + stats.recoveries;
    if (gate_events == gate_events_seen_) return;
    gate_events_seen_ = gate_events;
    std::vector<routing::RoutingWeights>* results = nullptr;
    for (StringId id : touched_) {
      const RoutingLearner::ModelId m = learner.FindModel(interner_->Name(id));
      if (m == RoutingLearner::kNoModel) continue;  // refused (limits)
      if (results == nullptr) results = &out.Mutable<kind::RoutingWeights>();
      PublishModel(learner, m, newest, *results);
    }
  });
  if (outcomes_) {
    outcomes_->Inc(outcomes);
    gauges_->Inc(gauges);
    if (old > 0) dropped_old_->Inc(old);
    if (unnamed > 0) dropped_unnamed_->Inc(unnamed);
    if (clock_.suspects() > future_before) future_->Inc(clock_.suspects() - future_before);
  }
  return Status::Ok();
}

int64_t RoutingLearnOperator::NextTimerMs(int64_t now_ms) const {
  if (router_ == nullptr || router_->now_ms() == INT64_MIN) return kNoTimer;
  return std::max(now_ms, next_check_ms_);
}

Status RoutingLearnOperator::OnTimer(int64_t now_ms, OutputBatch& out) {
  if (router_ == nullptr) return Status::Ok();
  if (next_check_ms_ != INT64_MIN && now_ms < next_check_ms_) return Status::Ok();
  next_check_ms_ = now_ms + options_.check_interval_ms;
  const int64_t now = router_->now_ms();
  if (now == INT64_MIN) return Status::Ok();
  // Changes that were held back by publish.min_interval, or that come from time alone (an
  // ejection ending, evidence ageing), are published here when the stream is quiet.
  router_->With([&](RoutingLearner& learner) {
    learner.ExpireIdle(now);
    PublishForgotten(learner, now, out);
    std::vector<routing::RoutingWeights>* results = nullptr;
    for (RoutingLearner::ModelId m = 0; m < learner.model_id_limit(); ++m) {
      if (learner.num_backends(m) == 0) continue;
      if (results == nullptr) results = &out.Mutable<kind::RoutingWeights>();
      PublishModel(learner, m, now, *results);
    }
    if (models_) models_->Set(static_cast<double>(learner.num_models()));
  });
  return Status::Ok();
}

Status RoutingLearnOperator::Checkpoint(CheckpointWriter& writer) {
  if (router_ == nullptr) return Status::Ok();
  // "now" only when it moved: an idle engine's checkpoints are then empty, and not written.
  if (clock_.now_ms() != INT64_MIN && clock_.now_ms() != checkpointed_now_ms_) {
    checkpointed_now_ms_ = clock_.now_ms();
    writer.Put("now", std::to_string(clock_.now_ms()));
  }
  if (changed_.empty()) return Status::Ok();
  router_->With([&](RoutingLearner& learner) {
    for (const std::string& name : changed_) {
      const RoutingLearner::ModelId m = learner.FindModel(name);
      if (m == RoutingLearner::kNoModel) {
        writer.Delete("m/" + name);  // removed (limits.backend_ttl): not restored again
      } else {
        writer.Put("m/" + name, learner.SnapshotModel(m));
      }
    }
  });
  changed_.clear();
  return Status::Ok();
}

Status RoutingLearnOperator::Restore(const CheckpointReader& reader) {
  if (router_ == nullptr) return Status::Internal("routing_learn: Restore before Open");
  return reader.ForEach([&](std::string_view key, std::string_view value) -> Status {
    if (key == "now") {
      int64_t now = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), now);
      if (ec != std::errc() || end != value.data() + value.size()) {
        return Status::Corruption("routing_learn checkpoint: bad now '" + std::string(value) + "'");
      }
      clock_.Reset(now);
      checkpointed_now_ms_ = now;
      router_->AdvanceTo(now);
      return Status::Ok();
    }
    if (key.substr(0, 2) != "m/") return Status::Ok();  // a later version's record: skipped
    Status st = router_->With([&](RoutingLearner& l) { return l.RestoreModel(value); });
    if (!st.ok()) return Status::Corruption(st.message());
    return Status::Ok();
  });
}

}  // namespace inferscope
