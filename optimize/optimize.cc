#include "optimize/optimize.h"

#include <algorithm>
#include <cstdio>
#include <memory>

#include "sim/fleet.h"

namespace inferscope::optimize {
namespace {

// The memory fraction the catalogue's KV capacities describe (vLLM's --gpu-memory-utilization
// default).
constexpr double kBaseFraction = 0.9;
constexpr double kMaxFraction = 0.95;

// How a model's GPU memory divides, as fractions of the GPUs' memory: the weights, and everything
// that is not KV cache (weights + activations + CUDA graphs). From the catalogue's hardware
// (sim/README.md): 8B bf16 is 16 GB of 80 GB, plus ~3.6 GB of activations.
struct MemorySplit {
  std::string_view model;
  double weights = 0.2;
  double non_kv = 0.245;
};
constexpr MemorySplit kSplits[] = {
    {"llama-3.1-8b-instruct", 0.20, 0.245}, {"mistral-7b-instruct", 0.18, 0.225},
    {"qwen2.5-14b-instruct", 0.37, 0.415},  {"llama-3.1-70b-instruct", 0.44, 0.49},
    {"mixtral-8x7b-instruct", 0.58, 0.625},
};
MemorySplit SplitOf(std::string_view model) {
  for (const MemorySplit& s : kSplits) {
    if (s.model == model) return s;
  }
  return MemorySplit{};
}

// fp8 weights: half the bytes read per decode step (the per-step overhead stays) and fp8 tensor
// cores for prefill. Assumptions (docs/BOTTLENECKS.md, "Recommendations"), not measurements.
constexpr double kFp8StepBase = 0.6;
constexpr double kFp8Prefill = 0.6;

// KV-cache tokens at memory fraction `u` for a model whose catalogue capacity (at 0.9) is `base`.
int64_t CapacityAt(double u, int64_t base, const MemorySplit& split, bool weights_fp8) {
  const double non_kv = split.non_kv - (weights_fp8 ? split.weights / 2 : 0);
  const double free = std::max(0.0, u - non_kv);
  return static_cast<int64_t>(static_cast<double>(base) * free / (kBaseFraction - split.non_kv));
}

double Quantile(std::vector<double>& v, double q) {
  if (v.empty()) return NAN;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

// Collects the measured requests of one run (those arriving after the warm-up).
class Collector final : public sim::OutcomeSink {
 public:
  Collector(double from_ms, size_t reserve) : from_ms_(from_ms) {
    ttft.reserve(reserve);
    tpot.reserve(reserve);
    e2e.reserve(reserve);
  }
  void OnRequest(const sim::RequestOutcome& o) override {
    if (o.arrival_ms < from_ms_) return;
    ++requests;
    e2e.push_back(o.e2e_ms);
    if (o.ttft_ms >= 0) ttft.push_back(o.ttft_ms);
    if (o.tpot_ms >= 0) tpot.push_back(o.tpot_ms);
    if (o.ok()) {
      tokens += static_cast<double>(o.prompt_tokens) + o.output_tokens;
    } else {
      ++errors;
    }
  }
  void OnGauge(const sim::GaugeSample&) override {}

  std::vector<double> ttft, tpot, e2e;
  uint64_t requests = 0, errors = 0;
  double tokens = 0;

 private:
  double from_ms_;
};

sim::ServingParams Scaled(sim::ServingParams p, double factor) {
  p.step_base_ms *= factor;
  p.step_per_seq_ms *= factor;
  p.step_per_kv_token_ms *= factor;
  p.prefill_per_token_ms *= factor;
  return p;
}

bool Finite(double x) { return std::isfinite(x); }

std::string Format(const char* fmt, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, fmt, a, b, c);
  return buf;
}

std::string FractionText(double u) { return Format("%.2f", u); }

// The base serving parameters of an observation: the catalogue's model (Llama-3.1-8B when
// unknown) with the engine's defaults.
sim::ServingParams BaseParams(const Observation& obs) {
  const sim::ModelProfile* profile = sim::FindModel(obs.model);
  sim::ServingParams p = profile != nullptr ? profile->params : sim::ServingParams{};
  return sim::WithEngineDefaults(p, EngineName(obs.engine));
}

}  // namespace

std::string_view RecommendationTypeName(RecommendationType type) {
  switch (type) {
    case RecommendationType::kKvCache:
      return "KV_CACHE";
    case RecommendationType::kBatching:
      return "BATCHING";
    case RecommendationType::kPrefixCaching:
      return "PREFIX_CACHING";
    case RecommendationType::kQuantization:
      return "QUANTIZATION";
    case RecommendationType::kScaleOut:
      return "SCALE_OUT";
  }
  return "?";
}

std::string_view PriorityName(Priority priority) {
  switch (priority) {
    case Priority::kLow:
      return "LOW";
    case Priority::kMedium:
      return "MEDIUM";
    case Priority::kHigh:
      return "HIGH";
  }
  return "?";
}

std::string_view EngineName(Engine engine) {
  switch (engine) {
    case Engine::kVllm:
      return "vllm";
    case Engine::kSglang:
      return "sglang";
    case Engine::kTgi:
      return "tgi";
  }
  return "?";
}

bool ParseEngine(std::string_view name, Engine* out) {
  for (Engine e : {Engine::kVllm, Engine::kSglang, Engine::kTgi}) {
    if (EngineName(e) == name) {
      *out = e;
      return true;
    }
  }
  return false;
}

std::string_view GoalName(Goal goal) {
  switch (goal) {
    case Goal::kMinimizeP95Ttft:
      return "minimize_p95_ttft";
    case Goal::kMinimizeP95E2e:
      return "minimize_p95_e2e";
    case Goal::kMinimizeP50Tpot:
      return "minimize_p50_tpot";
    case Goal::kMinimizeCostPer1kTokens:
      return "minimize_cost_per_1k_tokens";
    case Goal::kMaximizeThroughput:
      return "maximize_throughput";
  }
  return "?";
}

bool ParseGoal(std::string_view name, Goal* out) {
  for (Goal g : {Goal::kMinimizeP95Ttft, Goal::kMinimizeP95E2e, Goal::kMinimizeP50Tpot,
                 Goal::kMinimizeCostPer1kTokens, Goal::kMaximizeThroughput}) {
    if (GoalName(g) == name) {
      *out = g;
      return true;
    }
  }
  return false;
}

Status OptimizeOptions::Validate() const {
  if (max_requests < 100 || max_requests > 100'000) {
    return Status::InvalidArgument("max_requests must be in 100..100000");
  }
  if (!(min_span_s >= 10 && max_span_s >= min_span_s && max_span_s <= 3600)) {
    return Status::InvalidArgument("spans must satisfy 10 <= min_span_s <= max_span_s <= 3600");
  }
  if (!(warmup_s >= 0 && warmup_s < min_span_s)) {
    return Status::InvalidArgument("warmup_s must be in [0, min_span_s)");
  }
  if (calibration_rounds < 0 || calibration_rounds > 10) {
    return Status::InvalidArgument("calibration_rounds must be in 0..10");
  }
  if (max_candidates < 1 || max_candidates > 32) {
    return Status::InvalidArgument("max_candidates must be in 1..32");
  }
  if (!(instance_cost_per_hour > 0 && Finite(instance_cost_per_hour))) {
    return Status::InvalidArgument("instance_cost_per_hour must be > 0");
  }
  if (max_instances < 1 || max_instances > 64) {
    return Status::InvalidArgument("max_instances must be in 1..64");
  }
  return Status::Ok();
}

Result<Workload> WorkloadOf(const Observation& obs) {
  const InstanceWindow& w = obs.window;
  const MetricWindow& e2e = w.Get(WindowMetric::kE2e);
  const double seconds = w.seconds();
  if (e2e.events == 0 || !(seconds > 0)) {
    return Status::InvalidArgument(
        "the window holds no requests (e2e_ms events): nothing to replay");
  }
  Workload wl;
  wl.rate_per_s = static_cast<double>(e2e.events) / seconds;
  // Lognormal from the median and the p95 (else the mean): sigma = ln(p95 / p50) / 1.645,
  // or sqrt(2 ln(mean / median)).
  auto fit = [](const MetricWindow& m, double* median, double* sigma) {
    if (!m.present() || !Finite(m.p50) || m.p50 < 1) return;
    *median = m.p50;
    if (Finite(m.p95) && m.p95 > m.p50) {
      *sigma = std::log(m.p95 / m.p50) / 1.645;
    } else if (m.mean > m.p50) {
      *sigma = std::sqrt(2 * std::log(m.mean / m.p50));
    } else {
      *sigma = 0;
    }
    *sigma = std::clamp(*sigma, 0.0, 2.0);
  };
  fit(w.Get(WindowMetric::kPromptTokens), &wl.prompt_median, &wl.prompt_sigma);
  fit(obs.output_tokens, &wl.output_median, &wl.output_sigma);
  // Prefix hits: cached / prompt tokens of the window, else the gauge; when the instance hits
  // nothing while its peers do, what it would hit is the peers' rate.
  const MetricWindow& cached = w.Get(WindowMetric::kCachedTokens);
  const MetricWindow& prompt = w.Get(WindowMetric::kPromptTokens);
  const MetricWindow& gauge = w.Get(WindowMetric::kPrefixHitRate);
  double hit = NAN;
  if (cached.present() && prompt.sum > 0) {
    hit = cached.sum / prompt.sum;
  } else if (gauge.present()) {
    hit = gauge.mean;
  }
  wl.hit_fraction = BaseParams(obs).prefix_hit_mean;
  if (Finite(hit) && hit >= 0.02) {
    wl.hit_fraction = std::clamp(hit, 0.0, 0.95);
    wl.hit_observed = true;
  } else if (Finite(obs.peer_hit_rate) && obs.peer_hit_rate > 0) {
    wl.hit_fraction = std::clamp(obs.peer_hit_rate, 0.0, 0.95);
  }
  return wl;
}

EngineConfig ConfigOf(const Observation& obs) {
  const sim::ServingParams base = BaseParams(obs);
  const InstanceWindow& w = obs.window;
  EngineConfig c;
  c.max_num_seqs = base.max_num_seqs;
  c.max_num_batched_tokens = base.max_num_batched_tokens;
  c.kv_capacity_tokens = base.kv_capacity_tokens;
  const MetricWindow& seqs = w.Get(WindowMetric::kMaxNumSeqs);
  if (seqs.present() && seqs.last >= 1) c.max_num_seqs = static_cast<uint32_t>(seqs.last);
  const MetricWindow& cap = w.Get(WindowMetric::kKvCapacity);
  if (cap.present() && cap.last >= 1) c.kv_capacity_tokens = static_cast<int64_t>(cap.last);
  const MemorySplit split = SplitOf(obs.model);
  c.memory_fraction = split.non_kv + (kBaseFraction - split.non_kv) *
                                         static_cast<double>(c.kv_capacity_tokens) /
                                         static_cast<double>(base.kv_capacity_tokens);
  // Prefix caching is off when the instance hits (almost) nothing although its prompts would.
  const MetricWindow& cached = w.Get(WindowMetric::kCachedTokens);
  const MetricWindow& prompt = w.Get(WindowMetric::kPromptTokens);
  const MetricWindow& gauge = w.Get(WindowMetric::kPrefixHitRate);
  double hit = NAN;
  if (cached.present() && prompt.sum > 0) {
    hit = cached.sum / prompt.sum;
  } else if (gauge.present()) {
    hit = gauge.mean;
  }
  c.prefix_caching = !(Finite(hit) && hit < 0.02);
  return c;
}

namespace {

// One run of the model: one replica at rate / replicas.
Prediction RunModel(const sim::ServingParams& calibrated, const Workload& wl,
                    const EngineConfig& config, const OptimizeOptions& options) {
  sim::InstanceOptions inst;
  inst.name = "candidate";
  inst.model = "m";
  inst.seed = options.seed;
  sim::ServingParams& p = inst.params;
  p = calibrated;
  p.max_num_seqs = std::max<uint32_t>(1, config.max_num_seqs);
  p.max_num_batched_tokens = std::max<uint32_t>(16, config.max_num_batched_tokens);
  p.kv_capacity_tokens = std::max<int64_t>(p.block_tokens, config.kv_capacity_tokens);
  p.prefix_caching = config.prefix_caching;
  p.prefix_hit_mean = std::clamp(wl.hit_fraction, 0.0, 0.95);
  p.error_probability = 0;
  if (config.kv_fp8) p.step_per_kv_token_ms *= 0.5;
  if (config.weights_fp8) {
    p.step_base_ms *= kFp8StepBase;
    p.prefill_per_token_ms *= kFp8Prefill;
  }
  const int replicas = std::max(1, config.replicas);
  const double rate = wl.rate_per_s / replicas;
  const double span_s = std::clamp(static_cast<double>(options.max_requests) / rate,
                                   options.min_span_s, options.max_span_s);
  sim::PoissonOptions arrivals;
  arrivals.rate_per_s = rate;
  arrivals.prompt_median = std::max(1.0, wl.prompt_median);
  arrivals.prompt_sigma = wl.prompt_sigma;
  arrivals.output_median = std::max(1.0, wl.output_median);
  arrivals.output_sigma = wl.output_sigma;
  arrivals.duration_s = span_s;
  arrivals.seed = options.seed;
  const double warmup_ms = options.warmup_s * 1000;
  Collector collector(warmup_ms, static_cast<size_t>(rate * span_s * 1.1) + 16);
  sim::FleetOptions fleet_options;
  fleet_options.seed = options.seed;
  std::vector<sim::InstanceOptions> instances;
  instances.push_back(std::move(inst));
  Result<std::unique_ptr<sim::Fleet>> fleet = sim::Fleet::Create(
      fleet_options, std::move(instances), {}, std::make_unique<sim::PoissonArrivals>(arrivals),
      std::make_unique<sim::RoundRobinRouter>(), &collector);
  Prediction out;
  if (!fleet.ok()) return out;
  (*fleet)->Run();
  const double measured_s = span_s - options.warmup_s;
  out.simulated_requests = (*fleet)->requests();
  out.ttft_p50 = Quantile(collector.ttft, 0.5);
  out.ttft_p95 = Quantile(collector.ttft, 0.95);
  out.tpot_p50 = Quantile(collector.tpot, 0.5);
  out.tpot_p95 = Quantile(collector.tpot, 0.95);
  out.e2e_p50 = Quantile(collector.e2e, 0.5);
  out.e2e_p95 = Quantile(collector.e2e, 0.95);
  out.e2e_p99 = Quantile(collector.e2e, 0.99);
  out.error_ratio = collector.requests > 0 ? static_cast<double>(collector.errors) /
                                                 static_cast<double>(collector.requests)
                                           : 0;
  out.throughput_tokens_per_s = collector.tokens / measured_s * replicas;
  const double sim_s = std::max(1.0, (*fleet)->now_ms() / 1000);
  out.preemptions_per_s = static_cast<double>((*fleet)->instance(0).totals().preemptions) / sim_s;
  out.cost_per_1k_tokens =
      out.throughput_tokens_per_s > 0
          ? replicas * options.instance_cost_per_hour / (out.throughput_tokens_per_s * 3.6)
          : NAN;
  return out;
}

}  // namespace

Result<Calibration> Calibrate(const Observation& obs, const Workload& workload,
                              const EngineConfig& config, const OptimizeOptions& options) {
  Calibration cal;
  cal.params = BaseParams(obs);
  const InstanceWindow& w = obs.window;
  const MetricWindow& tpot = w.Get(WindowMetric::kTpot);
  const MetricWindow& ttft = w.Get(WindowMetric::kTtft);
  bool use_tpot = tpot.present() && Finite(tpot.p50) && tpot.p50 > 0;
  if (use_tpot) {
    cal.fitted_on = "tpot_ms p50";
    cal.observed = tpot.p50;
  } else if (ttft.present() && Finite(ttft.p50) && ttft.p50 > 0) {
    cal.fitted_on = "ttft_ms p50";
    cal.observed = ttft.p50;
  } else {
    cal.fitted_on = "none";
    return cal;
  }
  double factor = 1;
  for (int round = 0; round < options.calibration_rounds; ++round) {
    Prediction p = RunModel(Scaled(cal.params, factor), workload, config, options);
    const double simulated = use_tpot ? p.tpot_p50 : p.ttft_p50;
    cal.simulated = simulated;
    if (!Finite(simulated) || simulated <= 0) break;
    const double next = std::clamp(factor * cal.observed / simulated, 0.1, 10.0);
    if (std::abs(next / factor - 1) < 0.01) break;
    factor = next;
  }
  cal.speed_factor = factor;
  cal.params = Scaled(cal.params, factor);
  return cal;
}

Prediction Predict(const Calibration& calibration, const Workload& workload,
                   const EngineConfig& config, const OptimizeOptions& options) {
  return RunModel(calibration.params, workload, config, options);
}

std::vector<std::pair<std::string, std::string>> OptionChanges(Engine engine,
                                                               const EngineConfig& current,
                                                               const EngineConfig& config,
                                                               const sim::ServingParams& base) {
  std::vector<std::pair<std::string, std::string>> out;
  const bool vllm = engine == Engine::kVllm, sglang = engine == Engine::kSglang;
  if (config.max_num_seqs != current.max_num_seqs) {
    out.emplace_back(vllm     ? "--max-num-seqs"
                     : sglang ? "--max-running-requests"
                              : "--max-concurrent-requests",
                     std::to_string(config.max_num_seqs));
  }
  if (config.max_num_batched_tokens != current.max_num_batched_tokens) {
    out.emplace_back(vllm     ? "--max-num-batched-tokens"
                     : sglang ? "--chunked-prefill-size"
                              : "--max-batch-prefill-tokens",
                     std::to_string(config.max_num_batched_tokens));
  }
  if (config.memory_fraction != current.memory_fraction ||
      (engine == Engine::kTgi && config.kv_capacity_tokens != current.kv_capacity_tokens &&
       !config.kv_fp8 && !config.weights_fp8)) {
    if (engine == Engine::kTgi) {
      out.emplace_back("--max-batch-total-tokens", std::to_string(config.kv_capacity_tokens));
    } else {
      out.emplace_back(vllm ? "--gpu-memory-utilization" : "--mem-fraction-static",
                       FractionText(config.memory_fraction));
    }
  }
  if (config.prefix_caching && !current.prefix_caching) {
    if (vllm) {
      out.emplace_back("--enable-prefix-caching", "true");
    } else if (sglang) {
      out.emplace_back("--disable-radix-cache", "remove (RadixAttention is on by default)");
    } else {
      out.emplace_back("PREFIX_CACHING", "1 (environment of text-generation-launcher)");
    }
  }
  if (config.kv_fp8 && !current.kv_fp8) {
    out.emplace_back("--kv-cache-dtype", vllm ? "fp8" : "fp8_e5m2");
  }
  if (config.weights_fp8 && !current.weights_fp8) {
    if (engine == Engine::kTgi) {
      out.emplace_back("--quantize", "eetq");
    } else {
      out.emplace_back("--quantization", "fp8");
    }
  }
  if (config.replicas != current.replicas) {
    out.emplace_back("replicas", std::to_string(config.replicas));
  }
  (void)base;
  return out;
}

namespace {

// The KV-cache tokens of a configuration from its memory fraction and dtypes.
int64_t CapacityOf(const EngineConfig& c, const Observation& obs, const sim::ServingParams& base) {
  const MemorySplit split = SplitOf(obs.model);
  int64_t cap = CapacityAt(c.memory_fraction, base.kv_capacity_tokens, split, c.weights_fp8);
  return c.kv_fp8 ? cap * 2 : cap;
}

struct Draft {
  RecommendationType type;
  std::string description;
  std::string risks;
  EngineConfig config;
};

const char* kRiskMemory =
    "less GPU memory headroom for activations and CUDA graphs: out-of-memory at startup or on "
    "the longest prompts if set too high";
const char* kRiskKvFp8 =
    "KV cache in fp8: a small accuracy loss to check on your evaluations; kernels need a GPU with "
    "fp8 support";
const char* kRiskSlots =
    "a larger batch needs more KV cache (preemptions if it cannot hold it) and decodes each "
    "request a little slower";
const char* kRiskPrefill =
    "longer steps while long prompts prefill: tpot spikes for the running requests";
const char* kRiskPrefix =
    "cached blocks take KV-cache memory; no benefit where prompts share no prefix";
const char* kRiskQuant =
    "weights in 8 bits: accuracy to validate on your evaluations; needs fp8-capable GPUs "
    "(Ada/Hopper) or a pre-quantized checkpoint";
const char* kRiskScale = "one more instance's cost; the router must spread the load evenly";

// Candidate changes for one active bottleneck type.
std::vector<Draft> DraftsFor(BottleneckType type, const RuleVerdict& verdict,
                             const Observation& obs, const EngineConfig& cur,
                             const sim::ServingParams& base, const OptimizeOptions& options) {
  std::vector<Draft> out;
  const InstanceWindow& w = obs.window;
  auto kv_drafts = [&] {
    for (double u : {kBaseFraction, kMaxFraction}) {
      if (u < cur.memory_fraction + 0.01) continue;
      Draft d{RecommendationType::kKvCache, "", kRiskMemory, cur};
      d.config.memory_fraction = u;
      d.config.kv_capacity_tokens = CapacityOf(d.config, obs, base);
      d.description = Format("give the KV cache more memory: %.0f -> %.0f tokens",
                             static_cast<double>(cur.kv_capacity_tokens),
                             static_cast<double>(d.config.kv_capacity_tokens));
      out.push_back(std::move(d));
    }
    if (!cur.kv_fp8) {
      Draft d{RecommendationType::kKvCache, "", kRiskKvFp8, cur};
      d.config.kv_fp8 = true;
      d.config.kv_capacity_tokens = cur.kv_capacity_tokens * 2;
      d.description = Format("store the KV cache in fp8: twice the tokens (%.0f)",
                             static_cast<double>(d.config.kv_capacity_tokens));
      out.push_back(std::move(d));
    }
  };
  auto slot_drafts = [&] {
    const uint32_t engine_default = base.max_num_seqs;
    std::vector<uint32_t> sizes = {cur.max_num_seqs * 2, cur.max_num_seqs * 4, engine_default};
    std::sort(sizes.begin(), sizes.end());
    sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
    for (uint32_t n : sizes) {
      if (n <= cur.max_num_seqs || n > 1024) continue;
      Draft d{RecommendationType::kBatching, "", kRiskSlots, cur};
      d.config.max_num_seqs = n;
      d.description = Format("admit more concurrent requests: %.0f -> %.0f slots",
                             static_cast<double>(cur.max_num_seqs), static_cast<double>(n));
      out.push_back(std::move(d));
    }
  };
  auto prefill_drafts = [&] {
    for (uint32_t k : {2u, 4u}) {
      Draft d{RecommendationType::kBatching, "", kRiskPrefill, cur};
      d.config.max_num_batched_tokens = cur.max_num_batched_tokens * k;
      d.description = Format("a larger prefill budget per step: %.0f -> %.0f tokens",
                             static_cast<double>(cur.max_num_batched_tokens),
                             static_cast<double>(d.config.max_num_batched_tokens));
      out.push_back(std::move(d));
    }
  };
  auto quant_drafts = [&] {
    if (cur.weights_fp8) return;
    Draft d{RecommendationType::kQuantization, "", kRiskQuant, cur};
    d.config.weights_fp8 = true;
    d.config.kv_capacity_tokens = CapacityOf(d.config, obs, base);
    d.description = "quantize the weights to 8 bits: less memory read per decode step";
    out.push_back(std::move(d));
  };
  switch (type) {
    case BottleneckType::kMemoryPressure:
      kv_drafts();
      break;
    case BottleneckType::kQueueBuildup: {
      const MetricWindow& running = w.Get(WindowMetric::kRunning);
      if (running.present() && running.mean >= 0.8 * cur.max_num_seqs) slot_drafts();
      break;
    }
    case BottleneckType::kCacheInefficiency:
      if (!cur.prefix_caching) {
        Draft d{RecommendationType::kPrefixCaching, "", kRiskPrefix, cur};
        d.config.prefix_caching = true;
        d.description = "turn the prefix cache on";
        out.push_back(std::move(d));
      }
      break;
    case BottleneckType::kLowThroughput:
      quant_drafts();
      break;
    case BottleneckType::kHighLatency:
      if (verdict.metric == "tpot_ms") {
        quant_drafts();
      } else {
        prefill_drafts();
      }
      break;
    case BottleneckType::kResourceSaturation:
    case BottleneckType::kErrorSpike:
      break;
  }
  (void)options;
  return out;
}

std::vector<Draft> ScaleOutDrafts(const EngineConfig& cur, const OptimizeOptions& options) {
  std::vector<Draft> out;
  for (int r = cur.replicas + 1; r <= options.max_instances && r <= cur.replicas + 2; ++r) {
    Draft d{RecommendationType::kScaleOut, "", kRiskScale, cur};
    d.config.replicas = r;
    d.description = Format("spread the load over %.0f instances", r);
    out.push_back(std::move(d));
  }
  return out;
}

// The metric a bottleneck type is judged on (lower is better) and its value in a prediction.
std::string_view MetricFor(BottleneckType type, const RuleVerdict& verdict) {
  switch (type) {
    case BottleneckType::kCacheInefficiency:
      return "ttft_p50_ms";
    case BottleneckType::kLowThroughput:
      return "tpot_p50_ms";
    case BottleneckType::kHighLatency:
      if (verdict.metric == "tpot_ms") return "tpot_p95_ms";
      if (verdict.metric == "e2e_ms") return "e2e_p95_ms";
      return "ttft_p95_ms";
    case BottleneckType::kResourceSaturation:
    case BottleneckType::kErrorSpike:
      return "e2e_p95_ms";
    default:
      return "ttft_p95_ms";
  }
}
double MetricValue(std::string_view metric, const Prediction& p) {
  if (metric == "ttft_p50_ms") return p.ttft_p50;
  if (metric == "ttft_p95_ms") return p.ttft_p95;
  if (metric == "tpot_p50_ms") return p.tpot_p50;
  if (metric == "tpot_p95_ms") return p.tpot_p95;
  return p.e2e_p95;
}

}  // namespace

Result<RecommendResult> Recommend(const Observation& obs, const RuleVerdicts& verdicts,
                                  const OptimizeOptions& options) {
  if (Status st = options.Validate(); !st.ok()) return st;
  Result<Workload> wl = WorkloadOf(obs);
  if (!wl.ok()) return wl.status();
  RecommendResult r;
  r.workload = *wl;
  r.current_config = ConfigOf(obs);
  uint32_t mask = 0;
  std::array<BottleneckSeverity, kNumBottleneckTypes> severity{};
  for (size_t t = 0; t < kNumBottleneckTypes; ++t) {
    if (verdicts[t].judgement != Judgement::kActive) continue;
    mask |= uint32_t{1} << t;
    severity[t] = verdicts[t].severity;
  }
  if (mask == 0) return r;  // nothing limits the instance: no model runs
  Result<Calibration> cal = Calibrate(obs, r.workload, r.current_config, options);
  if (!cal.ok()) return cal.status();
  r.calibration = *cal;
  r.model_runs = options.calibration_rounds;
  r.current = Predict(r.calibration, r.workload, r.current_config, options);
  ++r.model_runs;
  std::array<CausalPath, kNumBottleneckTypes> paths;
  const BottleneckType primary = CausalOrder(mask, severity, &paths);
  const sim::ServingParams base = BaseParams(obs);
  size_t budget = options.max_candidates;
  for (size_t t = 0; t < kNumBottleneckTypes && budget > 0; ++t) {
    if (((mask >> t) & 1) == 0) continue;
    const auto type = static_cast<BottleneckType>(t);
    // A symptom is addressed through its root: recommend for roots only.
    if (paths[t].root != type) continue;
    const std::string_view metric = MetricFor(type, verdicts[t]);
    const double current = MetricValue(metric, r.current);
    auto evaluate = [&](std::vector<Draft> drafts, Recommendation* best) {
      for (Draft& d : drafts) {
        if (budget == 0) break;
        --budget;
        Prediction p = Predict(r.calibration, r.workload, d.config, options);
        ++r.model_runs;
        const double value = MetricValue(metric, p);
        const double improvement =
            Finite(current) && current > 0 && Finite(value) ? 1 - value / current : NAN;
        if (!Finite(improvement)) continue;
        if (Finite(best->improvement) && improvement <= best->improvement) continue;
        best->type = d.type;
        best->addresses = type;
        best->description = d.description;
        best->risks = d.risks;
        best->options = OptionChanges(obs.engine, r.current_config, d.config, base);
        best->metric = std::string(metric);
        best->current = current;
        best->predicted = value;
        best->improvement = improvement;
        best->prediction = p;
        best->config = d.config;
      }
    };
    Recommendation best;
    evaluate(DraftsFor(type, verdicts[t], obs, r.current_config, base, options), &best);
    // Scale out when no change of the configuration helps enough (and the type is about load).
    if (!(best.improvement >= 0.2) && type != BottleneckType::kCacheInefficiency &&
        type != BottleneckType::kErrorSpike) {
      Recommendation scaled;
      evaluate(ScaleOutDrafts(r.current_config, options), &scaled);
      if (Finite(scaled.improvement) &&
          (!Finite(best.improvement) || scaled.improvement > best.improvement + 0.1)) {
        best = std::move(scaled);
      }
    }
    if (!(best.improvement >= 0.05)) continue;  // nothing predicted to help
    const BottleneckSeverity sev = severity[t];
    if (best.improvement >= 0.3 && sev >= BottleneckSeverity::kMedium) {
      best.priority = Priority::kHigh;
    } else if (best.improvement >= 0.15) {
      best.priority = Priority::kMedium;
    } else {
      best.priority = Priority::kLow;
    }
    best.description +=
        " (predicted " + best.metric + " " + Format("%.0f -> %.0f", current, best.predicted) + ")";
    r.recommendations.push_back(std::move(best));
  }
  std::stable_sort(r.recommendations.begin(), r.recommendations.end(),
                   [&](const Recommendation& a, const Recommendation& b) {
                     if (a.priority != b.priority) return a.priority > b.priority;
                     if ((a.addresses == primary) != (b.addresses == primary)) {
                       return a.addresses == primary;
                     }
                     return a.improvement > b.improvement;
                   });
  return r;
}

std::string ViolatedConstraint(const Prediction& p, const Constraints& c) {
  auto over = [](double value, double limit) {
    return Finite(limit) && (!Finite(value) || value > limit);
  };
  if (over(p.ttft_p95, c.p95_ttft_ms)) return "p95_ttft_ms";
  if (over(p.e2e_p99, c.p99_e2e_ms)) return "p99_e2e_ms";
  if (over(p.tpot_p50, c.p50_tpot_ms)) return "p50_tpot_ms";
  if (over(p.error_ratio, c.max_error_ratio)) return "max_error_ratio";
  if (over(p.cost_per_1k_tokens, c.max_cost_per_1k_tokens)) return "max_cost_per_1k_tokens";
  return "";
}

double GoalValue(Goal goal, const Prediction& p) {
  switch (goal) {
    case Goal::kMinimizeP95Ttft:
      return p.ttft_p95;
    case Goal::kMinimizeP95E2e:
      return p.e2e_p95;
    case Goal::kMinimizeP50Tpot:
      return p.tpot_p50;
    case Goal::kMinimizeCostPer1kTokens:
      return p.cost_per_1k_tokens;
    case Goal::kMaximizeThroughput:
      return -p.throughput_tokens_per_s;
  }
  return NAN;
}

Result<OptimizeResult> Optimize(const Observation& obs, Goal goal, const Constraints& constraints,
                                const OptimizeOptions& options) {
  if (Status st = options.Validate(); !st.ok()) return st;
  Result<Workload> wl = WorkloadOf(obs);
  if (!wl.ok()) return wl.status();
  OptimizeResult r;
  r.workload = *wl;
  r.current_config = ConfigOf(obs);
  Result<Calibration> cal = Calibrate(obs, r.workload, r.current_config, options);
  if (!cal.ok()) return cal.status();
  r.calibration = *cal;
  r.model_runs = options.calibration_rounds;
  const sim::ServingParams base = BaseParams(obs);
  const EngineConfig& cur = r.current_config;
  r.current.config = cur;
  r.current.description = "the current configuration";
  r.current.prediction = Predict(r.calibration, r.workload, cur, options);
  ++r.model_runs;
  r.current_meets = ViolatedConstraint(r.current.prediction, constraints).empty();

  // The grid: one change at a time, then the combinations that usually pay together.
  std::vector<Draft> drafts;
  auto add = [&](RecommendationType type, std::string description, std::string risks,
                 EngineConfig c) {
    drafts.push_back(Draft{type, std::move(description), std::move(risks), std::move(c)});
  };
  {
    EngineConfig c = cur;
    c.max_num_seqs = std::min<uint32_t>(1024, cur.max_num_seqs * 2);
    if (c.max_num_seqs != cur.max_num_seqs)
      add(RecommendationType::kBatching, "twice the slots", kRiskSlots, c);
  }
  if (cur.max_num_seqs >= 2) {
    EngineConfig c = cur;
    c.max_num_seqs = cur.max_num_seqs / 2;
    add(RecommendationType::kBatching, "half the slots (smaller batches decode faster)",
        "fewer concurrent requests: more queueing under load", c);
  }
  {
    EngineConfig c = cur;
    c.max_num_batched_tokens = cur.max_num_batched_tokens * 2;
    add(RecommendationType::kBatching, "twice the prefill budget per step", kRiskPrefill, c);
  }
  if (cur.memory_fraction < kMaxFraction - 0.01) {
    EngineConfig c = cur;
    c.memory_fraction = kMaxFraction;
    c.kv_capacity_tokens = CapacityOf(c, obs, base);
    add(RecommendationType::kKvCache, "more memory for the KV cache", kRiskMemory, c);
  }
  if (!cur.kv_fp8) {
    EngineConfig c = cur;
    c.kv_fp8 = true;
    c.kv_capacity_tokens = cur.kv_capacity_tokens * 2;
    add(RecommendationType::kKvCache, "KV cache in fp8 (twice the tokens)", kRiskKvFp8, c);
  }
  if (!cur.prefix_caching) {
    EngineConfig c = cur;
    c.prefix_caching = true;
    add(RecommendationType::kPrefixCaching, "prefix cache on", kRiskPrefix, c);
  }
  if (!cur.weights_fp8) {
    EngineConfig c = cur;
    c.weights_fp8 = true;
    c.kv_capacity_tokens = CapacityOf(c, obs, base) * (cur.kv_fp8 ? 2 : 1);
    add(RecommendationType::kQuantization, "fp8 weights", kRiskQuant, c);
  }
  for (Draft& d : ScaleOutDrafts(cur, options)) drafts.push_back(std::move(d));
  {
    EngineConfig c = cur;
    c.max_num_seqs = std::min<uint32_t>(1024, cur.max_num_seqs * 2);
    c.kv_fp8 = true;
    c.kv_capacity_tokens = cur.kv_capacity_tokens * 2;
    add(RecommendationType::kBatching, "twice the slots with an fp8 KV cache to hold them",
        std::string(kRiskSlots) + "; " + kRiskKvFp8, c);
  }
  if (drafts.size() > options.max_candidates) drafts.resize(options.max_candidates);
  double best_value = NAN;
  for (Draft& d : drafts) {
    Candidate c;
    c.type = d.type;
    c.description = std::move(d.description);
    c.options = OptionChanges(obs.engine, cur, d.config, base);
    c.config = d.config;
    c.prediction = Predict(r.calibration, r.workload, d.config, options);
    ++r.model_runs;
    r.candidates.push_back(std::move(c));
    const Candidate& added = r.candidates.back();
    if (!ViolatedConstraint(added.prediction, constraints).empty()) continue;
    const double value = GoalValue(goal, added.prediction);
    if (!Finite(value)) continue;
    if (!Finite(best_value) || value < best_value) {
      best_value = value;
      r.best = static_cast<int>(r.candidates.size()) - 1;
    }
  }
  // The current configuration wins ties and beats candidates that do not improve the goal.
  if (r.best >= 0 && r.current_meets) {
    const double now = GoalValue(goal, r.current.prediction);
    if (Finite(now) && best_value >= now) {
      r.best = -1;
      r.keep_current = true;
    }
  }
  return r;
}

}  // namespace inferscope::optimize
