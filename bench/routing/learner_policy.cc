#include "bench/routing/learner_policy.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace inferscope::bench::routing {

namespace rt = inferscope::routing;

namespace {

ErrorKind ErrorKindOf(sim::RequestError e) {
  switch (e) {
    case sim::RequestError::kNone:
      return ErrorKind::kNone;
    case sim::RequestError::kTimeout:
      return ErrorKind::kTimeout;
    case sim::RequestError::kServerError:
      return ErrorKind::kServerError;
    case sim::RequestError::kClientError:
      return ErrorKind::kClientError;
    case sim::RequestError::kRateLimited:
      return ErrorKind::kRateLimited;
  }
  return ErrorKind::kOther;
}

int64_t Ms(double t) { return static_cast<int64_t>(std::floor(t)); }

}  // namespace

rt::Strategy LearnerStrategy(Strategy strategy) {
  switch (strategy) {
    case Strategy::kLowestLatency:
      return rt::Strategy::kLowestLatency;
    case Strategy::kHighestQuality:
      return rt::Strategy::kHighestQuality;
    case Strategy::kCostEffective:
      return rt::Strategy::kCostEffective;
    case Strategy::kBalanced:
      return rt::Strategy::kBalanced;
  }
  return rt::Strategy::kLowestLatency;
}

std::vector<rt::ModelSpec> LearnerCatalogue(std::span<const sim::InstanceOptions> instances) {
  std::vector<rt::ModelSpec> models;
  for (const sim::InstanceOptions& inst : instances) {
    auto it = std::find_if(models.begin(), models.end(),
                           [&](const rt::ModelSpec& m) { return m.name == inst.model; });
    if (it == models.end()) {
      models.emplace_back();
      models.back().name = inst.model;
      it = models.end() - 1;
    }
    rt::BackendSpec b;
    b.name = inst.name;
    b.engine = inst.engine;
    b.capabilities = inst.vision ? rt::kVision : 0u;
    b.max_context = inst.params.max_model_len;
    b.price_per_1k_input = inst.input_price_per_1k;
    b.price_per_1k_output = inst.output_price_per_1k;
    b.max_concurrency = inst.params.max_num_seqs;
    it->backends.push_back(std::move(b));
  }
  return models;
}

LearnerRouter::LearnerRouter(const PolicyContext& context, rt::RoutingOptions options)
    : strategy_(LearnerStrategy(context.strategy)) {
  options.models = LearnerCatalogue(context.catalogue);
  options.estimator.seed = context.seed;
  learner_ = std::make_unique<rt::RoutingLearner>(std::move(options));
  slots_.resize(context.catalogue.size());
  for (size_t i = 0; i < context.catalogue.size(); ++i) {
    const sim::InstanceOptions& inst = context.catalogue[i];
    Slot& s = slots_[i];
    s.model_name = inst.model;
    s.model = learner_->FindModel(inst.model);
    if (s.model == rt::RoutingLearner::kNoModel) continue;
    for (uint32_t b = 0; b < learner_->num_backends(s.model); ++b) {
      if (learner_->backend_name(s.model, b) == inst.name) {
        s.backend = b;
        s.backend_name = learner_->backend_name(s.model, b);
      }
    }
  }
}

size_t LearnerRouter::Pick(const sim::Request& request,
                           std::span<const sim::InstanceView> candidates) {
  confidence_ = -1;
  const uint32_t first = candidates[0].index;
  if (first >= slots_.size() || slots_[first].model == rt::RoutingLearner::kNoModel) return 0;
  const rt::RoutingLearner::ModelId model = slots_[first].model;
  const int64_t now = Ms(request.arrival_ms);
  const rt::RequestFeatures features{
      .prompt_tokens = request.prompt_tokens,
      .expected_output_tokens = request.expected_output_tokens,
      .required_capabilities = request.needs_vision ? static_cast<uint32_t>(rt::kVision) : 0u};
  learner_->Select(model, features, strategy_, now, &decision_);
  if (!decision_.ok) return 0;  // cannot happen with the harness's catalogues
  for (size_t i = 0; i < candidates.size(); ++i) {
    const uint32_t inst = candidates[i].index;
    if (inst < slots_.size() && slots_[inst].model == model &&
        slots_[inst].backend == decision_.backend) {
      learner_->NoteSent(model, decision_.backend, now, request.prompt_tokens);
      confidence_ = decision_.confidence;
      return i;
    }
  }
  return 0;
}

void LearnerRouter::OnOutcome(const sim::RequestOutcome& o) {
  if (o.instance >= slots_.size()) return;
  const Slot& s = slots_[o.instance];
  rt::Outcome out;
  out.backend = s.backend_name;
  out.model = s.model_name;
  out.time_ms = Ms(o.time_ms);
  out.ttft_ms = o.ttft_ms;
  out.tpot_ms = o.tpot_ms;
  out.e2e_ms = o.e2e_ms;
  out.prompt_tokens = o.prompt_tokens;
  out.output_tokens = o.output_tokens;
  out.cached_tokens = o.cached_tokens;
  out.cost_usd = o.cost_usd;
  out.error = ErrorKindOf(o.error);
  learner_->Observe(out);
}

void LearnerRouter::OnGauge(const sim::GaugeSample& g) {
  if (g.instance >= slots_.size()) return;
  const Slot& s = slots_[g.instance];
  learner_->ObserveGauge({.backend = s.backend_name,
                          .model = s.model_name,
                          .name = sim::GaugeName(g.gauge),
                          .value = g.value,
                          .time_ms = Ms(g.time_ms)});
}

void LearnerRouter::OnQuality(const sim::QualityFeedback& f) {
  if (f.instance >= slots_.size()) return;
  const Slot& s = slots_[f.instance];
  learner_->ObserveQuality(s.model_name, s.backend_name, f.quality, Ms(f.completed_ms));
}

std::unique_ptr<sim::Router> MakeLearnerPolicy(const PolicyContext& context) {
  return std::make_unique<LearnerRouter>(context, rt::RoutingOptions{});
}

}  // namespace inferscope::bench::routing
