#include "sim/fleet.h"

#include <algorithm>
#include <cmath>

namespace inferscope::sim {
namespace {

ServingParams Params(double base, double per_seq, double per_kv, double prefill, int64_t kv) {
  ServingParams p;
  p.step_base_ms = base;
  p.step_per_seq_ms = per_seq;
  p.step_per_kv_token_ms = per_kv;
  p.prefill_per_token_ms = prefill;
  p.kv_capacity_tokens = kv;
  return p;
}

// Where these numbers come from: sim/README.md, "Defaults".
const ModelProfile kModels[] = {
    {"llama-3.1-8b-instruct", "1x A100-80GB", Params(22, 0.15, 6.5e-5, 0.08, 400'000), 0.0002,
     0.0002},
    {"mistral-7b-instruct", "1x A100-80GB", Params(20, 0.15, 6.5e-5, 0.07, 420'000), 0.0002,
     0.0002},
    {"qwen2.5-14b-instruct", "1x A100-80GB", Params(30, 0.2, 1.0e-4, 0.15, 220'000), 0.0004,
     0.0004},
    {"llama-3.1-70b-instruct", "4x A100-80GB (TP 4)", Params(35, 0.2, 5.0e-5, 0.2, 460'000), 0.0009,
     0.0009},
    {"mixtral-8x7b-instruct", "2x A100-80GB (TP 2)", Params(30, 0.2, 5.0e-5, 0.1, 400'000), 0.0006,
     0.0006},
};

double Product(std::span<const Fault> faults, SimMs t) {
  double f = 1;
  for (const Fault& x : faults) {
    if (x.ActiveAt(t)) f *= x.factor;
  }
  return f;
}

}  // namespace

std::span<const ModelProfile> Models() { return kModels; }

const ModelProfile* FindModel(std::string_view name) {
  for (const ModelProfile& m : kModels) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

ServingParams WithEngineDefaults(ServingParams params, std::string_view engine) {
  if (engine == "sglang") {
    params.prefix_hit_mean = 0.5;
  } else if (engine == "tgi") {
    params.max_num_seqs = 128;
    params.prefix_hit_mean = 0.25;
  }
  return params;
}

std::vector<InstanceOptions> StandardFleet(int instances, int models, uint64_t seed,
                                           double timeout_s) {
  static constexpr std::string_view kEngines[] = {"vllm", "sglang", "tgi"};
  std::vector<InstanceOptions> out;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.9, 1.1);
  for (int i = 0; i < instances; ++i) {
    const std::string_view engine = kEngines[i % 3];
    const bool weak = i % 4 == 3;
    for (int m = 0; m < models; ++m) {
      const ModelProfile& profile = kModels[static_cast<size_t>(i + m) % std::size(kModels)];
      InstanceOptions o;
      // (append, not operator+: GCC 12 warns falsely about + on short strings, -Wrestrict)
      o.name.assign(engine).append(1, '-').append(std::to_string(i));
      o.model.assign(profile.name);
      if (models > static_cast<int>(std::size(kModels))) {
        o.model.append(1, '-').append(std::to_string(m));
      }
      o.engine = std::string(engine);
      o.params = WithEngineDefaults(profile.params, engine);
      const double slowness = (weak ? 1.5 : 1.0) * u(rng);
      o.params.step_base_ms *= slowness;
      o.params.step_per_seq_ms *= slowness;
      o.params.step_per_kv_token_ms *= slowness;
      o.params.prefill_per_token_ms *= slowness;
      o.params.error_probability = weak ? 0.03 : 0.005;
      o.params.timeout_s = timeout_s;
      o.input_price_per_1k = profile.input_price_per_1k;
      o.output_price_per_1k = profile.output_price_per_1k;
      o.seed = seed * 1000 + out.size() + 1;
      out.push_back(std::move(o));
    }
  }
  return out;
}

Status PoissonOptions::Validate() const {
  if (!(std::isfinite(rate_per_s) && rate_per_s > 0)) {
    return Status::InvalidArgument("rate_per_s must be > 0");
  }
  if (!(wander >= 0 && wander <= 1)) return Status::InvalidArgument("wander must be in [0, 1]");
  if (!(wander_step_s > 0)) return Status::InvalidArgument("wander_step_s must be > 0");
  if (!(prompt_median >= 1 && output_median >= 1 && prompt_sigma >= 0 && output_sigma >= 0)) {
    return Status::InvalidArgument("token medians must be >= 1 and sigmas >= 0");
  }
  if (prompt_max < 1 || output_max < 1) {
    return Status::InvalidArgument("prompt_max and output_max must be >= 1");
  }
  if (!(duration_s >= 0)) return Status::InvalidArgument("duration_s must be >= 0");
  return Status::Ok();
}

PoissonArrivals::PoissonArrivals(PoissonOptions options)
    : options_(options), rng_(options.seed), next_wander_ms_(options.wander_step_s * 1000) {}

bool PoissonArrivals::Next(Arrival* out) {
  std::normal_distribution<double> normal(0, 1);
  while (true) {
    std::exponential_distribution<double> gap(options_.rate_per_s * w_ / 1000.0);
    double t = t_ms_ + gap(rng_);
    if (options_.wander > 0 && t >= next_wander_ms_) {
      // The rate changes here; the exponential is memoryless, so draw again from the change.
      t_ms_ = next_wander_ms_;
      next_wander_ms_ += options_.wander_step_s * 1000;
      w_ = std::clamp(w_ - 0.1 * (w_ - 1) + options_.wander * normal(rng_), 0.2, 2.0);
      continue;
    }
    t_ms_ = t;
    break;
  }
  if (options_.duration_s > 0 && t_ms_ >= options_.duration_s * 1000) return false;
  auto draw = [&](double median, double sigma, uint32_t max) {
    double v = std::round(median * std::exp(sigma * normal(rng_)));
    return static_cast<uint32_t>(std::clamp(v, 1.0, static_cast<double>(max)));
  };
  out->time_ms = t_ms_;
  out->prompt_tokens = draw(options_.prompt_median, options_.prompt_sigma, options_.prompt_max);
  out->output_tokens = draw(options_.output_median, options_.output_sigma, options_.output_max);
  return true;
}

Status TraceArrivalOptions::Validate() const {
  if (!(std::isfinite(time_scale) && time_scale > 0)) {
    return Status::InvalidArgument("time_scale must be > 0");
  }
  return Status::Ok();
}

TraceArrivals::TraceArrivals(std::vector<TraceRecord> records, TraceArrivalOptions options)
    : records_(std::move(records)), options_(options) {}

bool TraceArrivals::Next(Arrival* out) {
  if (next_ >= records_.size()) return false;
  const TraceRecord& r = records_[next_++];
  out->time_ms =
      static_cast<double>(r.time_us - records_.front().time_us) / 1000.0 / options_.time_scale;
  out->prompt_tokens =
      options_.prompt_max > 0 ? std::min(r.context_tokens, options_.prompt_max) : r.context_tokens;
  out->output_tokens = r.generated_tokens;
  return true;
}

size_t RoundRobinRouter::Pick(const Request& request, std::span<const InstanceView> candidates) {
  if (request.model >= next_.size()) next_.resize(request.model + 1, 0);
  return next_[request.model]++ % candidates.size();
}

size_t RandomRouter::Pick(const Request&, std::span<const InstanceView> candidates) {
  return std::uniform_int_distribution<size_t>(0, candidates.size() - 1)(rng_);
}

std::unique_ptr<Router> MakeRouter(std::string_view name, uint64_t seed) {
  if (name == "round_robin") return std::make_unique<RoundRobinRouter>();
  if (name == "random") return std::make_unique<RandomRouter>(seed);
  return nullptr;
}

Status FleetOptions::Validate() const {
  if (!(std::isfinite(gauge_interval_ms) && gauge_interval_ms >= 1)) {
    return Status::InvalidArgument("gauge_interval_ms must be >= 1");
  }
  if (!(duration_ms >= 0)) return Status::InvalidArgument("duration_ms must be >= 0");
  if (!(std::isfinite(gauge_delay_ms) && gauge_delay_ms >= 0)) {
    return Status::InvalidArgument("gauge_delay_ms must be >= 0");
  }
  if (!(quality_feedback_fraction >= 0 && quality_feedback_fraction <= 1)) {
    return Status::InvalidArgument("quality_feedback_fraction must be in [0, 1]");
  }
  if (!(std::isfinite(quality_feedback_delay_ms) && quality_feedback_delay_ms >= 0)) {
    return Status::InvalidArgument("quality_feedback_delay_ms must be >= 0");
  }
  double weights = 0;
  for (double w : category_weights) {
    if (!(std::isfinite(w) && w >= 0)) {
      return Status::InvalidArgument("category_weights must be >= 0");
    }
    weights += w;
  }
  if (!(weights > 0)) return Status::InvalidArgument("category_weights must not all be 0");
  if (!(std::isfinite(expected_output_sigma) && expected_output_sigma >= 0)) {
    return Status::InvalidArgument("expected_output_sigma must be >= 0");
  }
  return Status::Ok();
}

Result<std::unique_ptr<Fleet>> Fleet::Create(FleetOptions options,
                                             std::vector<InstanceOptions> instances,
                                             std::vector<Fault> faults,
                                             std::unique_ptr<ArrivalSource> arrivals,
                                             std::unique_ptr<Router> router, OutcomeSink* sink) {
  INFERSCOPE_RETURN_IF_ERROR(options.Validate());
  if (instances.empty()) return Status::InvalidArgument("a fleet needs at least one instance");
  if (arrivals == nullptr || router == nullptr) {
    return Status::InvalidArgument("a fleet needs an arrival source and a router");
  }
  for (size_t i = 0; i < instances.size(); ++i) {
    INFERSCOPE_RETURN_IF_ERROR(instances[i].Validate());
    for (size_t j = 0; j < i; ++j) {
      if (instances[j].name == instances[i].name && instances[j].model == instances[i].model) {
        return Status::InvalidArgument("instance " + instances[i].name + " serves " +
                                       instances[i].model + " twice");
      }
    }
  }
  for (const Fault& f : faults) {
    bool matched = f.FleetWide();
    for (const InstanceOptions& o : instances) matched = matched || f.Matches(o.name);
    if (!matched) {
      return Status::InvalidArgument("fault " + std::string(FaultKindName(f.kind)) + ":" +
                                     f.instance + ": matches no instance of the fleet");
    }
  }
  std::unique_ptr<Fleet> fleet(new Fleet());
  fleet->options_ = options;
  fleet->sink_ = sink;
  fleet->arrivals_src_ = std::move(arrivals);
  fleet->router_ = std::move(router);
  fleet->rng_.seed(options.seed);
  fleet->feature_rng_.seed(options.seed ^ 0xC2B2AE3D27D4EB4FULL);
  fleet->feedback_rng_.seed(options.seed ^ 0x165667B19E3779F9ULL);
  fleet->next_gauge_ms_ = options.gauge_interval_ms;
  fleet->inst_load_.resize(instances.size());
  for (const Fault& f : faults) {
    if (f.kind == FaultKind::kLoadDouble && f.FleetWide()) fleet->load_faults_.push_back(f);
  }
  for (size_t i = 0; i < instances.size(); ++i) {
    std::vector<Fault> own;
    for (const Fault& f : faults) {
      if (!f.Matches(instances[i].name)) continue;
      if (f.kind != FaultKind::kLoadDouble) {
        own.push_back(f);
      } else if (!f.FleetWide()) {
        fleet->inst_load_[i].push_back(f);
      }
    }
    auto m = std::find(fleet->models_.begin(), fleet->models_.end(), instances[i].model);
    if (m == fleet->models_.end()) {
      fleet->models_.push_back(instances[i].model);
      fleet->model_instances_.emplace_back();
      m = fleet->models_.end() - 1;
    }
    auto model = static_cast<uint32_t>(m - fleet->models_.begin());
    fleet->instance_model_.push_back(model);
    fleet->model_instances_[model].push_back(static_cast<uint32_t>(i));
    fleet->instances_.push_back(std::make_unique<ServingInstance>(
        std::move(instances[i]), static_cast<uint32_t>(i), &fleet->tap_));
    fleet->instances_.back()->SetFaults(std::move(own));
  }
  fleet->views_.reserve(instances.size());
  return fleet;
}

void Fleet::Tap::OnRequest(const RequestOutcome& outcome) {
  Fleet& f = *fleet_;
  if (f.sink_ != nullptr) f.sink_->OnRequest(outcome);
  RequestOutcome seen = outcome;
  seen.quality = -1;  // not known when the response arrives
  f.router_->OnOutcome(seen);
  if (outcome.ok() && f.options_.quality_feedback_fraction > 0) {
    std::uniform_real_distribution<double> u(0, 1);
    if (u(f.feedback_rng_) < f.options_.quality_feedback_fraction) {
      QualityFeedback q;
      q.instance = outcome.instance;
      q.id = outcome.id;
      q.category = outcome.category;
      q.completed_ms = outcome.time_ms;
      q.time_ms = outcome.time_ms + f.options_.quality_feedback_delay_ms;
      q.quality = outcome.quality;
      f.delayed_quality_.push_back(q);
    }
  }
}

void Fleet::Tap::OnGauge(const GaugeSample& sample) {
  Fleet& f = *fleet_;
  if (f.sink_ != nullptr) f.sink_->OnGauge(sample);
  if (f.options_.gauge_delay_ms <= 0) {
    f.router_->OnGauge(sample);
  } else {
    f.delayed_gauges_.push_back(sample);
  }
}

SimMs Fleet::NextDelivery() const {
  SimMs t = ServingInstance::kIdle;
  if (!delayed_gauges_.empty()) {
    t = delayed_gauges_.front().time_ms + options_.gauge_delay_ms;
  }
  if (!delayed_quality_.empty()) t = std::min(t, delayed_quality_.front().time_ms);
  return t;
}

void Fleet::Deliver(SimMs t) {
  while (!delayed_gauges_.empty() &&
         delayed_gauges_.front().time_ms + options_.gauge_delay_ms <= t) {
    router_->OnGauge(delayed_gauges_.front());
    delayed_gauges_.pop_front();
  }
  while (!delayed_quality_.empty() && delayed_quality_.front().time_ms <= t) {
    router_->OnQuality(delayed_quality_.front());
    delayed_quality_.pop_front();
  }
}

void Fleet::SendTo(uint32_t instance, const Request& r) {
  if (sink_ != nullptr) sink_->OnArrival(r, instance);
  instances_[instance]->Arrive(r);
}

void Fleet::Route(Request r) {
  const std::vector<uint32_t>& candidates = model_instances_[r.model];
  views_.clear();
  for (uint32_t i : candidates) views_.push_back(instances_[i]->View());
  size_t pick = router_->Pick(r, views_);
  SendTo(candidates[std::min(pick, candidates.size() - 1)], r);
  // load_double on instances: extra copies to them (drawn for every instance, faults or not, so
  // a fault changes no other draw).
  std::uniform_real_distribution<double> u(0, 1);
  const double n = static_cast<double>(candidates.size());
  for (uint32_t i : candidates) {
    const double draw = u(rng_);
    if (inst_load_[i].empty()) continue;
    const double extra = std::max(0.0, Product(inst_load_[i], r.arrival_ms) - 1) / n;
    auto copies = static_cast<int>(std::floor(extra)) + (draw < extra - std::floor(extra) ? 1 : 0);
    for (int c = 0; c < copies; ++c) {
      Request copy = r;
      copy.id = next_id_++;
      SendTo(i, copy);
    }
  }
}

void Fleet::Dispatch(const Arrival& a) {
  ++arrivals_;
  std::uniform_real_distribution<double> u(0, 1);
  const double model_draw = u(rng_), copy_draw = u(rng_);
  Request r;
  r.arrival_ms = a.time_ms;
  r.prompt_tokens = std::max<uint32_t>(a.prompt_tokens, 1);
  r.output_tokens = std::max<uint32_t>(a.output_tokens, 1);
  // Features, from their own stream.
  const std::array<double, kCategories>& w = options_.category_weights;
  const double cat_draw =
      std::uniform_real_distribution<double>(0, w[0] + w[1] + w[2])(feature_rng_);
  r.category = cat_draw < w[0]          ? Category::kChat
               : cat_draw < w[0] + w[1] ? Category::kCode
                                        : Category::kVision;
  if (w[static_cast<size_t>(r.category)] <= 0) r.category = Category::kChat;
  r.needs_vision = r.category == Category::kVision;
  const double noise = std::normal_distribution<double>(0, 1)(feature_rng_);
  r.expected_output_tokens = static_cast<uint32_t>(std::max(
      1.0, std::round(r.output_tokens * std::exp(options_.expected_output_sigma * noise))));
  // The model: uniformly by instance.
  auto inst = std::min(static_cast<size_t>(model_draw * static_cast<double>(instances_.size())),
                       instances_.size() - 1);
  r.model = instance_model_[inst];
  const double extra = std::max(0.0, Product(load_faults_, a.time_ms) - 1);
  const int copies =
      1 + static_cast<int>(std::floor(extra)) + (copy_draw < extra - std::floor(extra) ? 1 : 0);
  for (int c = 0; c < copies; ++c) {
    r.id = next_id_++;
    Route(r);
  }
}

bool Fleet::RunUntil(SimMs until_ms) {
  if (done_) return false;
  const bool bounded = options_.duration_ms > 0;
  const SimMs limit = bounded ? std::min(until_ms, options_.duration_ms) : until_ms;
  while (true) {
    if (!has_pending_ && arrivals_src_ != nullptr) {
      has_pending_ = arrivals_src_->Next(&pending_);
      if (!has_pending_) arrivals_src_.reset();  // exhausted
    }
    SimMs t_inst = ServingInstance::kIdle;
    size_t which = 0;
    for (size_t i = 0; i < instances_.size(); ++i) {
      SimMs t = instances_[i]->next_event_ms();
      if (t < t_inst) {
        t_inst = t;
        which = i;
      }
    }
    const SimMs t_arr = has_pending_ ? pending_.time_ms : ServingInstance::kIdle;
    if (!bounded && !has_pending_ && t_inst == ServingInstance::kIdle) {
      done_ = true;  // arrivals exhausted, every instance idle
      return false;
    }
    const SimMs t_del = NextDelivery();
    const SimMs t = std::min({t_inst, t_arr, next_gauge_ms_, t_del});
    if (bounded && t >= options_.duration_ms) {
      if (until_ms >= options_.duration_ms) {
        now_ms_ = options_.duration_ms;
        done_ = true;
        return false;
      }
      return true;
    }
    if (t > limit) return true;
    now_ms_ = t;
    if (t_del == t) {
      Deliver(t);
    } else if (t_inst == t) {
      instances_[which]->Step();
    } else if (t_arr == t) {
      has_pending_ = false;
      Dispatch(pending_);
    } else {
      for (auto& inst : instances_) inst->SampleGauges(t, options_.gauge_interval_ms);
      next_gauge_ms_ += options_.gauge_interval_ms;
    }
  }
}

void Fleet::Run() {
  while (RunUntil(options_.duration_ms > 0 ? options_.duration_ms : 1e18)) {
  }
}

}  // namespace inferscope::sim
