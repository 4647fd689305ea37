#pragma once

// The routing learner's configuration: the backend catalogue (per model, its backends with their
// engine, capabilities, prices and optional static weight) and every tuning knob of the
// estimates, the health gate, the weight publication and the memory bounds, with defaults and
// Validate(). ParseRoutingOptions reads them from a topology option block with file:line errors.
// routing/README.md documents every field.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/config.h"
#include "pipeline/status.h"

namespace inferscope::routing {

// Hard cap on backends per model: the decision tables are fixed arrays of this size.
inline constexpr size_t kMaxBackendsPerModel = 32;

// Capabilities a request may need and a backend may have, as bits of a mask.
enum Capability : uint32_t {
  kVision = 1u << 0,
  kCode = 1u << 1,
  kTools = 1u << 2,
  kJson = 1u << 3,  // structured (JSON-schema) output
  kAudio = 1u << 4,
  kReasoning = 1u << 5,
};
inline constexpr size_t kNumCapabilities = 6;
// "vision", "code", "tools", "json", "audio", "reasoning", by bit index.
inline constexpr std::array<std::string_view, kNumCapabilities> kCapabilityNames = {
    "vision", "code", "tools", "json", "audio", "reasoning"};
// The bit of a capability name; nullopt when unknown.
std::optional<uint32_t> ParseCapability(std::string_view name);
// "vision,code" (empty for 0).
std::string CapabilityMaskToString(uint32_t mask);

// One backend (a serving instance or a hosted provider) of a model.
struct BackendSpec {
  std::string name;           // instance or provider name, as the stream's `i`; 1..255 bytes
  std::string engine;         // "vllm", "sglang", "tgi", "openai", ... (free; informative)
  uint32_t capabilities = 0;  // Capability bits
  // Longest prompt + output the backend accepts, in tokens; 0 = unknown (not filtered).
  uint32_t max_context = 0;
  // USD per 1k prompt / output tokens; negative = unknown.
  double price_per_1k_input = -1;
  double price_per_1k_output = -1;
  // Multiplies the backend's share of traffic (a static preference): 0 drains it (it still gets
  // traffic in panic), default 1; >= 0.
  double static_weight = 1;
  // Concurrency slots when no `max_num_seqs` gauge reports them; 0 = unknown.
  double max_concurrency = 0;

  bool has_price() const { return price_per_1k_input >= 0 && price_per_1k_output >= 0; }
};

struct ModelSpec {
  std::string name;  // as the stream's `m`; 1..255 bytes
  std::vector<BackendSpec> backends;
};

// Time-discounted estimates and posterior sampling.
struct EstimatorOptions {
  // Half-life of latency, error, cost and rate evidence (event time). Default 30 s; >= 1 ms.
  int64_t half_life_ms = 30'000;
  // Half-life of quality evidence (sparse and delayed: slower). Default 10 min; >= half_life_ms.
  int64_t quality_half_life_ms = 600'000;
  // Prior weight, in samples, of the model-wide (pooled) estimate each backend starts from.
  // Default 1; > 0.
  double prior_samples = 1;
  // Prior log-space variance of latency (a log-normal spread: 0.25 = a p95/p50 of ~2.3).
  // Default 0.25; > 0.
  double prior_log_variance = 0.25;
  // Posterior (Thompson) draws per backend; P(best) is a share of these. Default 256; 16..1024.
  int64_t posterior_draws = 256;
  // Recompute the posterior draws of changed backends at most this often (event time). Default
  // 5 ms; >= 0 (0: on every select after a change).
  int64_t recompute_interval_ms = 5;
  // Redraw every backend at least this often, so that evidence ageing widens the posterior of a
  // backend that gets no traffic. Default 1 s; >= recompute_interval_ms.
  int64_t refresh_interval_ms = 1'000;
  // Gauges older than this are ignored for load. Default 10 s; >= 1 ms.
  int64_t gauge_max_age_ms = 10'000;
  // Slots assumed for a backend with no `max_num_seqs` gauge and no catalogue max_concurrency.
  // Default 64; >= 1.
  double assumed_slots = 64;
  // kv_cache_usage at or above which a backend admits nothing new (its running requests are its
  // slots). Default 0.95; (0, 1].
  double kv_saturation = 0.95;
  // Traffic weights are P(best)^(1/temperature), normalised. 1 = Thompson sampling. Default 1;
  // 0.05..20.
  double temperature = 1;
  // The confidence of a decision is about one request, not only the backends' expected
  // latencies: for it each posterior draw multiplies a backend's latency by
  // exp(prediction_noise × σ × z), σ the backend's log-space spread of per-output-token time (of
  // e2e without it), z fixed noise — what the batch and queue a request meets add beyond the
  // estimates. 1 = the posterior predictive; 0 = expected latencies only (over-confident). The
  // traffic weights do not use it. Default 0.7 (bench/routing, seeds 1-3: with the pending-prefill
  // ttft term 1 left the latency scenarios under-confident on the real trace, ECE 0.06-0.10;
  // 0.7 gives 0.03-0.07); 0..2.
  double prediction_noise = 0.7;
  // The confidence's per-request prediction error learned online: each success's residual
  // log(realised e2e / the e2e the estimates expected for it, with its real output tokens and the
  // load factors when it completes) is kept per backend (4 half-lives); the error of one request
  // is then residual_noise × the residuals' sd, shrunk toward prediction_noise × σ (worth 5
  // residuals). 0 = off (prediction_noise × σ only). Default 1.2 (bench/routing, seeds 1-3: 1.0
  // 1.1 / 1.2 / 1.3 / 1.4 give 12/12/10, 12/12/11, 12/12/11, 12/11/11, 12/11/11 runs with ECE <
  // 0.05 of 16, the fixed noise 12/11/11; the residuals' sd is larger on bursty arrivals than on
  // the real trace, which one fixed prediction_noise could not follow); 0..4.
  double residual_noise = 1.2;
  // Select draws this many candidates from the traffic weights and sends to the one with the
  // lowest expected latency at its live load (the decision table's expectation moved by the
  // sends and outcomes since the table was built), the first draw among equals; a probe draw
  // stands. Meant against herding (identical estimates sending a burst into one queue). Measured
  // in the herding scenario (synthetic, seeds 1-3), ttft p95 vs the oracle: 1 draw +10.8 / +20.5 /
  // +31.3 %, 2 draws +2.2 / +10.7 / +47.0 % (ECE 0.022-0.035 -> 0.032-0.051): within the seeds'
  // noise, not a robust gain, so off by default. Default 1; 1..4.
  int64_t load_choices = 1;
  // Seed of the learner's random generator (draws and selections). Default 1.
  uint64_t seed = 1;

  Status Validate() const;
};

// The health gate, with Envoy's outlier-detection semantics (routing/README.md, "Health gate").
struct HealthGateOptions {
  // Consecutive server-side errors (server_error, timeout, other) that eject. Envoy
  // consecutive_5xx; default 5; >= 1.
  int64_t consecutive_errors = 5;
  // Error-rate breach: a backend with >= failure_request_volume requests in the current interval
  // and a failure percentage >= failure_percentage is ejected. Envoy failure_percentage_*
  // (threshold 85, volume 50), enforced here by default; failure_percentage 0 disables it.
  double failure_percentage = 85;
  int64_t failure_request_volume = 50;
  // The interval of the failure-rate counts and of the ejection multiplier's decrease (one per
  // interval healthy). Envoy `interval`; default 10 s; >= 1 ms.
  int64_t interval_ms = 10'000;
  // Ejection time = base × number of ejections, capped at max. Envoy base_ejection_time (30 s) and
  // max_ejection_time (300 s).
  int64_t base_ejection_ms = 30'000;
  int64_t max_ejection_ms = 300'000;
  // At most this percentage of a model's backends ejected at once, but at least one. Envoy
  // max_ejection_percent; default 10; 0..100.
  double max_ejection_percent = 10;
  // After its ejection a backend is probed: it gets this fraction of its model's traffic until
  // probe_successes consecutive successes. Default 0.02 and 3; fraction in (0, 0.5].
  double probe_fraction = 0.02;
  int64_t probe_successes = 3;
  // Panic: when fewer than this percentage of the capable backends are routable (not ejected),
  // the gate is ignored and traffic goes to all capable backends. Envoy healthy_panic_threshold;
  // default 50; 0..100 (0 disables panic).
  double panic_threshold_percent = 50;

  Status Validate() const;
};

// When weights count as changed and how often they may be published.
struct PublishOptions {
  // Total-variation distance from the last published weights that counts as a change. Default
  // 0.05; (0, 1].
  double min_change = 0.05;
  // At most one publication per (model, strategy) per this interval, except when a backend is
  // gated or ungated (published at once). Default 1 s; >= 0.
  int64_t min_interval_ms = 1'000;

  Status Validate() const;
};

// Memory bounds and forgetting (routing/README.md, "Forgetting backends"). Beyond the bounds new
// models / backends are refused and counted, unless a backend can be evicted (below).
struct RoutingLimits {
  int64_t max_models = 256;             // >= 1
  int64_t max_backends_per_model = 32;  // 1..kMaxBackendsPerModel
  // Decision-table cache entries per model (one per strategy × capabilities × length bucket in
  // use). Default 32; 1..256.
  int64_t cache_entries = 32;
  // A learned backend (not in the catalogue) with no request outcome and no load gauge for this
  // long, in event time (as the half-lives), is removed: from its model's table, weights,
  // decisions and checkpoint; its slot is free. A model left without backends (and not in the
  // catalogue) is removed too. Default 10 min (20 half-lives: its evidence weighs < 1e-6); 0 =
  // never; otherwise >= backend_idle.
  int64_t backend_ttl_ms = 600'000;
  // A backend (catalogued or learned) with no outcome and no gauge for this long, while its
  // model's other backends had at least 3 / health.probe_fraction outcomes (150) since, is idle:
  // the idle backends of a model share health.probe_fraction of its traffic (as a probe) and take
  // no part in P(best) while a trusted backend that is not idle is routable; its next outcome or
  // gauge ends it. When a model's table is full, a new backend takes the slot of the learned
  // idle backend seen least recently (counted as evicted). Default 1 min (2 half-lives); 0 =
  // never idle.
  int64_t backend_idle_ms = 60'000;

  Status Validate() const;
};

struct RoutingOptions {
  EstimatorOptions estimator;
  HealthGateOptions gate;
  PublishOptions publish;
  RoutingLimits limits;
  // Capabilities of a backend seen in the stream but not in the catalogue. Default none: such a
  // backend takes requests that need no capability, never one that needs vision, code, ...
  uint32_t learned_capabilities = 0;
  // The catalogue. Models and backends not in it are learned from the stream.
  std::vector<ModelSpec> models;

  Status Validate() const;
};

// Reads a topology options block into `*out` (absent fields keep `out`'s values):
//
//   half_life: 30s            quality_half_life: 10m     prior_samples: 1
//   prior_log_variance: 0.25  posterior_draws: 256       recompute_interval: 5ms
//   refresh_interval: 1s      gauge_max_age: 10s         assumed_slots: 64
//   kv_saturation: 0.95       temperature: 1             seed: 1
//   prediction_noise: 0.7     residual_noise: 1.2        load_choices: 1
//   learned_capabilities: []
//   health: {consecutive_errors, failure_percentage, failure_request_volume, interval,
//            base_ejection_time, max_ejection_time, max_ejection_percent, probe_fraction,
//            probe_successes, panic_threshold}
//   publish: {min_change, min_interval}
//   limits: {max_models, max_backends_per_model, cache_entries, backend_ttl, backend_idle}
//   models:
//     - name: llama-3.1-8b-instruct
//       backends:
//         - {name: vllm-0, engine: vllm, capabilities: [vision, code], max_context: 131072,
//            price_per_1k_input: 0.0002, price_per_1k_output: 0.0006, weight: 1,
//            max_concurrency: 256}
//
// Other fields of `node` are not looked at (the operator checks them). Errors name file, line,
// column and field.
Status ParseRoutingOptions(const ConfigNode& node, RoutingOptions* out);
// The option fields ParseRoutingOptions reads.
inline constexpr std::array<std::string_view, 20> kRoutingOptionFields = {"half_life",
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
                                                                          "models"};

}  // namespace inferscope::routing
