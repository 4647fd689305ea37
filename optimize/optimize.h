#pragma once

// Recommendations and configuration search for inference instances, estimated with the serving
// model of sim/: an instance's observed windows give a workload (arrival rate, token-count
// distributions, prefix-cache hits) and its configuration (slot limit, KV-cache size, engine);
// the model is calibrated to the instance (one speed factor), then run in virtual time for the
// current configuration and for each candidate change. No state, no clock, no I/O: the query
// API calls it per request. Method, option names per engine, accuracy and limits:
// docs/BOTTLENECKS.md, "Recommendations".

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bottlenecks/classify.h"
#include "pipeline/status.h"
#include "sim/serving_model.h"

namespace inferscope::optimize {

enum class RecommendationType : uint8_t {
  kKvCache = 0,    // more KV-cache memory (memory fraction, fp8 KV cache, total tokens)
  kBatching,       // more concurrent requests (slot limit) or a larger prefill budget
  kPrefixCaching,  // turn the prefix cache on
  kQuantization,   // fp8 weights: less memory read per decode step
  kScaleOut,       // more replicas behind the router
};
std::string_view RecommendationTypeName(RecommendationType type);

enum class Priority : uint8_t { kLow = 0, kMedium, kHigh };
std::string_view PriorityName(Priority priority);

// The serving engines whose option names the recommendations use.
enum class Engine : uint8_t { kVllm = 0, kSglang, kTgi };
std::string_view EngineName(Engine engine);
// "vllm", "sglang", "tgi"; false otherwise.
bool ParseEngine(std::string_view name, Engine* out);

// What was observed of one (instance, model) over a window: the classifier's window (request
// latencies, token counts, gauges) plus the series it does not read.
struct Observation {
  std::string instance;
  std::string model;
  Engine engine = Engine::kVllm;
  InstanceWindow window;       // start_ms/end_ms: the window observed
  MetricWindow output_tokens;  // output_tokens series (optional: else the catalogue's median)
  MetricWindow cost_usd;       // cost_usd series (optional; observed cost per 1k tokens)
  double peer_hit_rate = NAN;  // peers' median prefix-cache hit rate (NaN: none)
};

// The workload the serving model replays: Poisson arrivals with lognormal token counts.
struct Workload {
  double rate_per_s = 0;
  double prompt_median = 600, prompt_sigma = 0.8;
  double output_median = 180, output_sigma = 0.7;
  double hit_fraction = 0.35;  // prefix-cache hit fraction when the cache is on
  bool hit_observed = false;   // hit_fraction measured (else peers' or the engine's default)
};

// An engine configuration as the serving model sees it, with the option values it maps to.
struct EngineConfig {
  uint32_t max_num_seqs = 256;             // vLLM --max-num-seqs, SGLang --max-running-requests,
                                           // TGI --max-concurrent-requests
  uint32_t max_num_batched_tokens = 2048;  // vLLM --max-num-batched-tokens, SGLang
                                           // --chunked-prefill-size, TGI --max-batch-prefill-tokens
  int64_t kv_capacity_tokens = 400'000;    // implied by the memory fraction (TGI:
                                           // --max-batch-total-tokens)
  double memory_fraction = 0.9;            // vLLM --gpu-memory-utilization, SGLang
                                           // --mem-fraction-static
  bool prefix_caching = true;
  bool kv_fp8 = false;       // --kv-cache-dtype fp8 (vLLM) / fp8_e5m2 (SGLang, TGI)
  bool weights_fp8 = false;  // --quantization fp8 (vLLM, SGLang) / --quantize fp8 (TGI)
  int replicas = 1;          // instances sharing the load (round robin)
};

// Predicted behaviour of one configuration under the workload (virtual time, seeded).
struct Prediction {
  double ttft_p50 = NAN, ttft_p95 = NAN;
  double tpot_p50 = NAN, tpot_p95 = NAN;
  double e2e_p50 = NAN, e2e_p95 = NAN, e2e_p99 = NAN;
  double throughput_tokens_per_s = 0;  // prompt + output tokens of successful requests, per s
  double error_ratio = 0;              // timeouts and refusals per request
  double preemptions_per_s = 0;
  double cost_per_1k_tokens = NAN;  // replicas x instance_cost_per_hour / tokens served
  uint64_t simulated_requests = 0;
};

// Bounds and assumptions of one call. Defaults documented in docs/BOTTLENECKS.md.
struct OptimizeOptions {
  // Simulated requests per run (one run per candidate, plus calibration runs): the span simulated
  // is max_requests / rate, within [min_span_s, max_span_s]. Default 4,000; 100..100,000.
  uint64_t max_requests = 4'000;
  double min_span_s = 120;              // default 120 s
  double max_span_s = 900;              // default 900 s
  double warmup_s = 30;                 // simulated, not measured (from an empty instance)
  int calibration_rounds = 3;           // fixed-point rounds fitting the speed factor (0: none)
  size_t max_candidates = 12;           // candidate configurations per call (>= 1)
  double instance_cost_per_hour = 2.0;  // USD per instance-hour, for cost per 1k tokens
  int max_instances = 4;                // replicas a SCALE_OUT candidate may reach (>= 1)
  uint64_t seed = 1;  // the same arrivals for every candidate (common random numbers)

  Status Validate() const;
};

// The calibrated serving model of one instance.
struct Calibration {
  sim::ServingParams params;  // the catalogue's model and the engine defaults, times x factor
  double speed_factor = 1;    // step and prefill times x this (fitted)
  std::string fitted_on;      // "tpot_ms p50", "ttft_ms p50" or "none"
  double observed = NAN;      // the observed value fitted
  double simulated = NAN;     // the calibrated model's value at the observed load
};

// One candidate change and its predicted effect.
struct Candidate {
  RecommendationType type = RecommendationType::kBatching;
  std::string description;
  std::vector<std::pair<std::string, std::string>> options;  // engine option -> value
  EngineConfig config;
  Prediction prediction;
};

struct Recommendation {
  RecommendationType type = RecommendationType::kBatching;
  Priority priority = Priority::kLow;
  BottleneckType addresses = BottleneckType::kHighLatency;
  std::string description;
  std::vector<std::pair<std::string, std::string>> options;  // the engine's option names
  std::string risks;
  std::string metric;        // the metric the improvement is measured on, e.g. "ttft_p95_ms"
  double current = NAN;      // predicted for the current configuration
  double predicted = NAN;    // predicted with the change
  double improvement = NAN;  // 1 - predicted / current (higher-is-better metrics: inverted)
  Prediction prediction;     // the whole prediction with the change
  EngineConfig config;       // the configuration with the change
};

// The workload and configuration read from an observation. InvalidArgument when the window has
// no requests (nothing to replay).
Result<Workload> WorkloadOf(const Observation& obs);
EngineConfig ConfigOf(const Observation& obs);

// Fits the speed factor so the simulated tpot p50 (ttft p50 without tpot) at the observed load
// matches the observed one.
Result<Calibration> Calibrate(const Observation& obs, const Workload& workload,
                              const EngineConfig& config, const OptimizeOptions& options);

// Runs the calibrated model for one configuration.
Prediction Predict(const Calibration& calibration, const Workload& workload,
                   const EngineConfig& config, const OptimizeOptions& options);

// The option names and values of `config` that differ from `current`, in `engine`'s names.
std::vector<std::pair<std::string, std::string>> OptionChanges(Engine engine,
                                                               const EngineConfig& current,
                                                               const EngineConfig& config,
                                                               const sim::ServingParams& base);

// Recommendations for the active verdicts (ClassifyInstance's, with severities), ordered by
// priority then improvement. `evaluated` (optional) receives the number of model runs.
struct RecommendResult {
  Calibration calibration;
  Workload workload;
  EngineConfig current_config;
  Prediction current;
  std::vector<Recommendation> recommendations;
  int model_runs = 0;
};
Result<RecommendResult> Recommend(const Observation& obs, const RuleVerdicts& verdicts,
                                  const OptimizeOptions& options);

// Goals and constraints of POST /v1/performance/optimize.
enum class Goal : uint8_t {
  kMinimizeP95Ttft = 0,
  kMinimizeP95E2e,
  kMinimizeP50Tpot,
  kMinimizeCostPer1kTokens,
  kMaximizeThroughput,
};
std::string_view GoalName(Goal goal);
bool ParseGoal(std::string_view name, Goal* out);

struct Constraints {
  double p95_ttft_ms = NAN;  // NaN: none
  double p99_e2e_ms = NAN;
  double p50_tpot_ms = NAN;
  double max_error_ratio = NAN;
  double max_cost_per_1k_tokens = NAN;
};
// Which constraint a prediction violates first ("p99_e2e_ms"), or "" when it meets all.
std::string ViolatedConstraint(const Prediction& p, const Constraints& c);

struct OptimizeResult {
  Calibration calibration;
  Workload workload;
  EngineConfig current_config;
  Candidate current;                  // the current configuration, evaluated
  std::vector<Candidate> candidates;  // every candidate evaluated (the current one excluded)
  int best = -1;                      // index into candidates; -1: none (see keep_current)
  bool current_meets = false;         // the current configuration meets the constraints
  // No candidate meeting the constraints beats the current configuration (which meets them):
  // keep it. With best == -1 and keep_current false, nothing meets the constraints.
  bool keep_current = false;
  int model_runs = 0;
};
Result<OptimizeResult> Optimize(const Observation& obs, Goal goal, const Constraints& constraints,
                                const OptimizeOptions& options);

// The value of `goal` in a prediction, lower is better (throughput negated).
double GoalValue(Goal goal, const Prediction& p);

}  // namespace inferscope::optimize
