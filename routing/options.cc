#include "routing/options.h"

#include <cmath>
#include <set>
#include <utility>

#include "pipeline/names.h"

namespace inferscope::routing {
namespace {

// A list of capability names at `field` of `node`, as a mask.
Status ReadCapabilities(const ConfigNode& node, std::string_view field, uint32_t* out) {
  if (!node.Has(field)) return Status::Ok();
  const YAML::Node list = node.node()[std::string(field)];
  if (!list.IsSequence()) return node.Error(field, "expected a list such as [vision, code]");
  uint32_t mask = 0;
  for (size_t i = 0; i < list.size(); ++i) {
    if (!list[i].IsScalar()) return node.Error(field, "expected capability names");
    const std::string name = list[i].Scalar();
    std::optional<uint32_t> bit = ParseCapability(name);
    if (!bit) {
      return node.Error(field, "unknown capability '" + name +
                                   "' (known: vision, code, tools, json, audio, reasoning)");
    }
    mask |= *bit;
  }
  *out = mask;
  return Status::Ok();
}

Status CheckName(const ConfigNode& node, std::string_view field, const std::string& name) {
  if (name.empty() || name.size() > kMaxNameBytes) return node.Error(field, "must be 1..255 bytes");
  return Status::Ok();
}

Status ParseBackend(const ConfigNode& b, BackendSpec* out) {
  INFERSCOPE_RETURN_IF_ERROR(
      b.CheckKnownFields({"name", "engine", "capabilities", "max_context", "price_per_1k_input",
                          "price_per_1k_output", "weight", "max_concurrency"}));
  BackendSpec s;
  Result<std::string> name = b.GetString("name");
  if (!name.ok()) return name.status();
  s.name = *name;
  INFERSCOPE_RETURN_IF_ERROR(CheckName(b, "name", s.name));
  Result<std::string> engine = b.GetString("engine", "");
  if (!engine.ok()) return engine.status();
  if (engine->size() > kMaxNameBytes) return b.Error("engine", "must be at most 255 bytes");
  s.engine = *engine;
  INFERSCOPE_RETURN_IF_ERROR(ReadCapabilities(b, "capabilities", &s.capabilities));
  int64_t max_context = 0;
  INFERSCOPE_RETURN_IF_ERROR(ReadInt(b, "max_context", &max_context, 0, UINT32_MAX));
  s.max_context = static_cast<uint32_t>(max_context);
  const bool has_in = b.Has("price_per_1k_input");
  const bool has_out = b.Has("price_per_1k_output");
  if (has_in != has_out) {
    return b.Error(has_in ? "price_per_1k_input" : "price_per_1k_output",
                   "give both price_per_1k_input and price_per_1k_output, or neither");
  }
  if (has_in) {
    s.price_per_1k_input = 0;
    s.price_per_1k_output = 0;
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(b, "price_per_1k_input", &s.price_per_1k_input, 0));
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(b, "price_per_1k_output", &s.price_per_1k_output, 0));
  }
  INFERSCOPE_RETURN_IF_ERROR(ReadDouble(b, "weight", &s.static_weight, 0, 1e6));
  INFERSCOPE_RETURN_IF_ERROR(ReadDouble(b, "max_concurrency", &s.max_concurrency, 0, 1e7));
  *out = std::move(s);
  return Status::Ok();
}

Status ParseModels(const ConfigNode& node, const RoutingLimits& limits,
                   std::vector<ModelSpec>* out) {
  const YAML::Node list = node.node()["models"];
  if (!list.IsSequence()) return node.Error("models", "expected a list of {name, backends}");
  if (static_cast<int64_t>(list.size()) > limits.max_models) {
    return node.Error("models", "more models than limits.max_models");
  }
  std::vector<ModelSpec> models;
  std::set<std::string> model_names;
  for (size_t i = 0; i < list.size(); ++i) {
    ConfigNode m(node.file(), list[i], node.path() + ".models[" + std::to_string(i) + "]");
    if (!list[i].IsMap()) return m.Error("", "expected a mapping");
    INFERSCOPE_RETURN_IF_ERROR(m.CheckKnownFields({"name", "backends"}));
    ModelSpec spec;
    Result<std::string> name = m.GetString("name");
    if (!name.ok()) return name.status();
    spec.name = *name;
    INFERSCOPE_RETURN_IF_ERROR(CheckName(m, "name", spec.name));
    if (!model_names.insert(spec.name).second) {
      return m.Error("name", "model '" + spec.name + "' is listed twice");
    }
    if (m.Has("backends")) {
      const YAML::Node backends = list[i]["backends"];
      if (!backends.IsSequence()) return m.Error("backends", "expected a list of backends");
      if (static_cast<int64_t>(backends.size()) > limits.max_backends_per_model) {
        return m.Error("backends", "more backends than limits.max_backends_per_model");
      }
      std::set<std::string> backend_names;
      for (size_t j = 0; j < backends.size(); ++j) {
        ConfigNode b(node.file(), backends[j], m.path() + ".backends[" + std::to_string(j) + "]");
        if (!backends[j].IsMap()) return b.Error("", "expected a mapping");
        BackendSpec backend;
        INFERSCOPE_RETURN_IF_ERROR(ParseBackend(b, &backend));
        if (!backend_names.insert(backend.name).second) {
          return b.Error("name", "backend '" + backend.name + "' is listed twice");
        }
        spec.backends.push_back(std::move(backend));
      }
    }
    models.push_back(std::move(spec));
  }
  *out = std::move(models);
  return Status::Ok();
}

}  // namespace

std::optional<uint32_t> ParseCapability(std::string_view name) {
  for (size_t i = 0; i < kNumCapabilities; ++i) {
    if (kCapabilityNames[i] == name) return 1u << i;
  }
  return std::nullopt;
}

std::string CapabilityMaskToString(uint32_t mask) {
  std::string out;
  for (size_t i = 0; i < kNumCapabilities; ++i) {
    if ((mask & (1u << i)) == 0) continue;
    if (!out.empty()) out += ',';
    out += kCapabilityNames[i];
  }
  return out;
}

Status EstimatorOptions::Validate() const {
  if (half_life_ms < 1) return Status::InvalidArgument("half_life must be >= 1ms");
  if (quality_half_life_ms < half_life_ms) {
    return Status::InvalidArgument("quality_half_life must be >= half_life");
  }
  if (!(prior_samples > 0) || !std::isfinite(prior_samples)) {
    return Status::InvalidArgument("prior_samples must be > 0");
  }
  if (!(prior_log_variance > 0) || !std::isfinite(prior_log_variance)) {
    return Status::InvalidArgument("prior_log_variance must be > 0");
  }
  if (posterior_draws < 16 || posterior_draws > 1024) {
    return Status::InvalidArgument("posterior_draws must be in 16..1024");
  }
  if (recompute_interval_ms < 0) return Status::InvalidArgument("recompute_interval must be >= 0");
  if (refresh_interval_ms < recompute_interval_ms || refresh_interval_ms < 1) {
    return Status::InvalidArgument("refresh_interval must be >= recompute_interval and >= 1ms");
  }
  if (gauge_max_age_ms < 1) return Status::InvalidArgument("gauge_max_age must be >= 1ms");
  if (!(assumed_slots >= 1)) return Status::InvalidArgument("assumed_slots must be >= 1");
  if (!(kv_saturation > 0 && kv_saturation <= 1)) {
    return Status::InvalidArgument("kv_saturation must be in (0, 1]");
  }
  if (!(temperature >= 0.05 && temperature <= 20)) {
    return Status::InvalidArgument("temperature must be in 0.05..20");
  }
  if (load_choices < 1 || load_choices > 4) {
    return Status::InvalidArgument("load_choices must be in 1..4");
  }
  if (!(prediction_noise >= 0 && prediction_noise <= 2)) {
    return Status::InvalidArgument("prediction_noise must be in 0..2");
  }
  if (!(residual_noise >= 0 && residual_noise <= 4)) {
    return Status::InvalidArgument("residual_noise must be in 0..4");
  }
  return Status::Ok();
}

Status HealthGateOptions::Validate() const {
  if (consecutive_errors < 1) return Status::InvalidArgument("consecutive_errors must be >= 1");
  if (!(failure_percentage >= 0 && failure_percentage <= 100)) {
    return Status::InvalidArgument("failure_percentage must be in 0..100");
  }
  if (failure_request_volume < 1) {
    return Status::InvalidArgument("failure_request_volume must be >= 1");
  }
  if (interval_ms < 1) return Status::InvalidArgument("interval must be >= 1ms");
  if (base_ejection_ms < 1) return Status::InvalidArgument("base_ejection_time must be >= 1ms");
  if (max_ejection_ms < base_ejection_ms) {
    return Status::InvalidArgument("max_ejection_time must be >= base_ejection_time");
  }
  if (!(max_ejection_percent >= 0 && max_ejection_percent <= 100)) {
    return Status::InvalidArgument("max_ejection_percent must be in 0..100");
  }
  if (!(probe_fraction > 0 && probe_fraction <= 0.5)) {
    return Status::InvalidArgument("probe_fraction must be in (0, 0.5]");
  }
  if (probe_successes < 1) return Status::InvalidArgument("probe_successes must be >= 1");
  if (!(panic_threshold_percent >= 0 && panic_threshold_percent <= 100)) {
    return Status::InvalidArgument("panic_threshold must be in 0..100");
  }
  return Status::Ok();
}

Status PublishOptions::Validate() const {
  if (!(min_change > 0 && min_change <= 1)) {
    return Status::InvalidArgument("publish.min_change must be in (0, 1]");
  }
  if (min_interval_ms < 0) return Status::InvalidArgument("publish.min_interval must be >= 0");
  return Status::Ok();
}

Status RoutingLimits::Validate() const {
  if (max_models < 1) return Status::InvalidArgument("limits.max_models must be >= 1");
  if (max_backends_per_model < 1 ||
      max_backends_per_model > static_cast<int64_t>(kMaxBackendsPerModel)) {
    return Status::InvalidArgument("limits.max_backends_per_model must be in 1..32");
  }
  if (cache_entries < 1 || cache_entries > 256) {
    return Status::InvalidArgument("limits.cache_entries must be in 1..256");
  }
  if (backend_idle_ms < 0) return Status::InvalidArgument("limits.backend_idle must be >= 0");
  if (backend_ttl_ms < 0) return Status::InvalidArgument("limits.backend_ttl must be >= 0");
  if (backend_ttl_ms > 0 && backend_ttl_ms < backend_idle_ms) {
    return Status::InvalidArgument(
        "limits.backend_ttl must be 0 (never) or >= limits.backend_idle");
  }
  return Status::Ok();
}

Status RoutingOptions::Validate() const {
  INFERSCOPE_RETURN_IF_ERROR(estimator.Validate());
  INFERSCOPE_RETURN_IF_ERROR(gate.Validate().WithContext("health"));
  INFERSCOPE_RETURN_IF_ERROR(publish.Validate());
  INFERSCOPE_RETURN_IF_ERROR(limits.Validate());
  if (static_cast<int64_t>(models.size()) > limits.max_models) {
    return Status::InvalidArgument("more catalogue models than limits.max_models");
  }
  std::set<std::string_view> model_names;
  for (const ModelSpec& m : models) {
    if (m.name.empty() || m.name.size() > kMaxNameBytes) {
      return Status::InvalidArgument("model names must be 1..255 bytes");
    }
    if (!model_names.insert(m.name).second) {
      return Status::InvalidArgument("model '" + m.name + "' is listed twice");
    }
    if (static_cast<int64_t>(m.backends.size()) > limits.max_backends_per_model) {
      return Status::InvalidArgument("model '" + m.name +
                                     "' has more backends than limits.max_backends_per_model");
    }
    std::set<std::string_view> backend_names;
    for (const BackendSpec& b : m.backends) {
      if (b.name.empty() || b.name.size() > kMaxNameBytes) {
        return Status::InvalidArgument("backend names must be 1..255 bytes");
      }
      if (!backend_names.insert(b.name).second) {
        return Status::InvalidArgument("backend '" + b.name + "' of model '" + m.name +
                                       "' is listed twice");
      }
      if (!(b.static_weight >= 0) || !std::isfinite(b.static_weight)) {
        return Status::InvalidArgument("backend '" + b.name + "': weight must be >= 0");
      }
      if (!(b.max_concurrency >= 0)) {
        return Status::InvalidArgument("backend '" + b.name + "': max_concurrency must be >= 0");
      }
    }
  }
  return Status::Ok();
}

Status ParseRoutingOptions(const ConfigNode& node, RoutingOptions* out) {
  RoutingOptions o = *out;
  EstimatorOptions& e = o.estimator;
  INFERSCOPE_RETURN_IF_ERROR(ReadDuration(node, "half_life", &e.half_life_ms, 1));
  INFERSCOPE_RETURN_IF_ERROR(ReadDuration(node, "quality_half_life", &e.quality_half_life_ms, 1));
  INFERSCOPE_RETURN_IF_ERROR(ReadDouble(node, "prior_samples", &e.prior_samples, 1e-6, 1e6));
  INFERSCOPE_RETURN_IF_ERROR(
      ReadDouble(node, "prior_log_variance", &e.prior_log_variance, 1e-6, 100));
  INFERSCOPE_RETURN_IF_ERROR(ReadInt(node, "posterior_draws", &e.posterior_draws, 16, 1024));
  INFERSCOPE_RETURN_IF_ERROR(ReadDuration(node, "recompute_interval", &e.recompute_interval_ms, 0));
  INFERSCOPE_RETURN_IF_ERROR(ReadDuration(node, "refresh_interval", &e.refresh_interval_ms, 1));
  INFERSCOPE_RETURN_IF_ERROR(ReadDuration(node, "gauge_max_age", &e.gauge_max_age_ms, 1));
  INFERSCOPE_RETURN_IF_ERROR(ReadDouble(node, "assumed_slots", &e.assumed_slots, 1));
  INFERSCOPE_RETURN_IF_ERROR(ReadDouble(node, "kv_saturation", &e.kv_saturation, 1e-9, 1));
  INFERSCOPE_RETURN_IF_ERROR(ReadDouble(node, "temperature", &e.temperature, 0.05, 20));
  INFERSCOPE_RETURN_IF_ERROR(ReadDouble(node, "prediction_noise", &e.prediction_noise, 0, 2));
  INFERSCOPE_RETURN_IF_ERROR(ReadDouble(node, "residual_noise", &e.residual_noise, 0, 4));
  INFERSCOPE_RETURN_IF_ERROR(ReadInt(node, "load_choices", &e.load_choices, 1, 4));
  int64_t seed = static_cast<int64_t>(e.seed);
  INFERSCOPE_RETURN_IF_ERROR(ReadInt(node, "seed", &seed, 0));
  e.seed = static_cast<uint64_t>(seed);
  if (Status st = e.Validate(); !st.ok()) return node.Error("", st.message());
  INFERSCOPE_RETURN_IF_ERROR(
      ReadCapabilities(node, "learned_capabilities", &o.learned_capabilities));

  Result<std::optional<ConfigNode>> s =
      Section(node, "health",
              {"consecutive_errors", "failure_percentage", "failure_request_volume", "interval",
               "base_ejection_time", "max_ejection_time", "max_ejection_percent", "probe_fraction",
               "probe_successes", "panic_threshold"});
  if (!s.ok()) return s.status();
  if (*s) {
    const ConfigNode& h = **s;
    HealthGateOptions& g = o.gate;
    INFERSCOPE_RETURN_IF_ERROR(ReadInt(h, "consecutive_errors", &g.consecutive_errors, 1));
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(h, "failure_percentage", &g.failure_percentage, 0, 100));
    INFERSCOPE_RETURN_IF_ERROR(ReadInt(h, "failure_request_volume", &g.failure_request_volume, 1));
    INFERSCOPE_RETURN_IF_ERROR(ReadDuration(h, "interval", &g.interval_ms, 1));
    INFERSCOPE_RETURN_IF_ERROR(ReadDuration(h, "base_ejection_time", &g.base_ejection_ms, 1));
    INFERSCOPE_RETURN_IF_ERROR(ReadDuration(h, "max_ejection_time", &g.max_ejection_ms, 1));
    INFERSCOPE_RETURN_IF_ERROR(
        ReadDouble(h, "max_ejection_percent", &g.max_ejection_percent, 0, 100));
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(h, "probe_fraction", &g.probe_fraction, 1e-9, 0.5));
    INFERSCOPE_RETURN_IF_ERROR(ReadInt(h, "probe_successes", &g.probe_successes, 1));
    INFERSCOPE_RETURN_IF_ERROR(
        ReadDouble(h, "panic_threshold", &g.panic_threshold_percent, 0, 100));
    if (Status st = g.Validate(); !st.ok()) return h.Error("", st.message());
  }
  s = Section(node, "publish", {"min_change", "min_interval"});
  if (!s.ok()) return s.status();
  if (*s) {
    INFERSCOPE_RETURN_IF_ERROR(ReadDouble(**s, "min_change", &o.publish.min_change, 1e-9, 1));
    INFERSCOPE_RETURN_IF_ERROR(ReadDuration(**s, "min_interval", &o.publish.min_interval_ms, 0));
  }
  s = Section(
      node, "limits",
      {"max_models", "max_backends_per_model", "cache_entries", "backend_ttl", "backend_idle"});
  if (!s.ok()) return s.status();
  if (*s) {
    INFERSCOPE_RETURN_IF_ERROR(ReadInt(**s, "max_models", &o.limits.max_models, 1, 1'000'000));
    INFERSCOPE_RETURN_IF_ERROR(ReadInt(**s, "max_backends_per_model",
                                       &o.limits.max_backends_per_model, 1,
                                       static_cast<int64_t>(kMaxBackendsPerModel)));
    INFERSCOPE_RETURN_IF_ERROR(ReadInt(**s, "cache_entries", &o.limits.cache_entries, 1, 256));
    INFERSCOPE_RETURN_IF_ERROR(ReadDuration(**s, "backend_ttl", &o.limits.backend_ttl_ms, 0));
    INFERSCOPE_RETURN_IF_ERROR(ReadDuration(**s, "backend_idle", &o.limits.backend_idle_ms, 0));
    if (Status st = o.limits.Validate(); !st.ok()) return (**s).Error("", st.message());
  }
  if (node.Has("models")) {
    INFERSCOPE_RETURN_IF_ERROR(ParseModels(node, o.limits, &o.models));
  }
  if (Status st = o.Validate(); !st.ok()) return node.Error("", st.message());
  *out = std::move(o);
  return Status::Ok();
}

}  // namespace inferscope::routing
