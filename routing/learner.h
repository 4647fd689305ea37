#pragma once

// RoutingLearner: per model, over its backends, learns from request outcomes and gauges which
// backend should get the next request, and answers Select (one decision, with its confidence,
// reasoning and ranked alternatives) and Weights (the traffic distribution it recommends).
//
// Method (routing/README.md has the details): each backend keeps time-discounted evidence
// (estimates.h) of ttft, tpot and e2e (log-normal, normal-gamma posterior), error rate (beta),
// quality (beta, slower half-life) and cost; a load estimate from gauges, its own sends and the
// outcome rate; and a health gate (health_gate.h). Every recompute draws M posterior samples per
// backend. A decision table for (strategy, capabilities, prompt/output length bucket) scores all
// M draws of the capable, routable backends — normalised across them so a strategy's weights mean
// what they say — and counts how often each backend is best: P(best), the decision's
// confidence. Traffic weights are P(best)^(1/temperature) × static weight, normalised, with
// probing backends held at the probe fraction. Select draws from those weights: a filter, a
// lookup and one random number on the hot path, no allocation.
//
// Lifecycle: construct from validated RoutingOptions (the catalogue's models and backends exist
// from the start; others are learned from the stream up to the limits). Feed Observe/ObserveGauge
// and NoteSent; call Select/Weights. Every call takes the event time; nothing reads a clock, so a
// simulator can drive it in virtual time. Forgetting (routing/README.md, "Forgetting backends"):
// a learned backend with no outcome and no gauge for limits.backend_ttl of event time is removed
// (and a model left without backends); one silent for limits.backend_idle while its peers serve
// keeps only the idle share of traffic and may be evicted by a newcomer when the table is full.
// Catalogue backends and models are never removed. Removals happen inside the calls that take a
// time (Observe*, Select, Weights, PublishIfChanged, ExpireIdle).
// Concurrency: none; one thread owns a learner (the operator thread, or the simulator).
// Limitations: cost is a point estimate (no posterior); latency does not depend on the prompt
// length (only cost and the context-length filter do).

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "pipeline/event.h"
#include "pipeline/metrics.h"
#include "pipeline/status.h"
#include "pipeline/string_hash.h"
#include "routing/estimates.h"
#include "routing/health_gate.h"
#include "routing/options.h"

namespace inferscope::routing {

// ---------------------------------------------------------------------------------------------
// Inputs.

// One request outcome: the wire's request event ("k": "r").
struct Outcome {
  std::string_view backend;  // `i`
  std::string_view model;    // `m`
  int64_t time_ms = 0;       // `t`, event time of the outcome
  double ttft_ms = -1;       // < 0: absent
  double tpot_ms = -1;       // < 0: absent
  double e2e_ms = -1;        // < 0: absent
  int64_t prompt_tokens = -1;
  int64_t output_tokens = -1;
  int64_t cached_tokens = -1;
  double cost_usd = -1;  // < 0: absent
  double quality = -1;   // in [0, 1]; < 0: absent
  ErrorKind error = ErrorKind::kNone;
};

// One gauge sample ("k": "g"). The learner reads num_requests_running, num_requests_waiting,
// max_num_seqs and kv_cache_usage; other names are ignored.
struct GaugeUpdate {
  std::string_view backend;
  std::string_view model;
  std::string_view name;
  double value = 0;
  int64_t time_ms = 0;
};

// What a request needs and what it is expected to cost.
struct RequestFeatures {
  uint32_t prompt_tokens = 0;           // 0: unknown (the model's recent typical prompt)
  uint32_t expected_output_tokens = 0;  // 0: unknown (the model's recent typical output)
  uint32_t required_capabilities = 0;   // Capability bits
};

// ---------------------------------------------------------------------------------------------
// Strategies.

enum class Strategy : uint8_t {
  kLowestLatency = 0,  // latency 0.7, quality 0.2, cost 0.1
  kHighestQuality,     // 0.1, 0.8, 0.1
  kCostEffective,      // 0.2, 0.3, 0.5
  kBalanced,           // 0.33, 0.33, 0.34
  kAdaptive,           // chosen from the request's features and the model's load
};
inline constexpr size_t kNumStrategies = 5;
// "lowest_latency", "highest_quality", "cost_effective", "balanced", "adaptive".
std::string_view StrategyName(Strategy strategy);
bool ParseStrategy(std::string_view name, Strategy* out);

struct StrategyWeights {
  double latency = 0;
  double quality = 0;
  double cost = 0;
};
// The fixed weights of a non-adaptive strategy (kAdaptive: balanced).
StrategyWeights FixedWeights(Strategy strategy);
// The adaptive strategy's weights for a request of `prompt_tokens` / `output_tokens` needing
// `capabilities`, with the model's backends at `utilisation` (in-flight / slots over the model):
// balanced, moved toward lowest-latency under load (>= 0.8: half-way) and for short interactive
// requests, toward cost-effective for long generations, toward highest-quality for long prompts
// and requests needing code, tools or reasoning (routing/README.md, "Strategies").
StrategyWeights AdaptiveWeights(uint32_t prompt_tokens, uint32_t output_tokens,
                                uint32_t capabilities, double utilisation);

// ---------------------------------------------------------------------------------------------
// Outputs.

inline constexpr size_t kMaxRanked = 8;

// A backend's score for one decision table: means over the posterior draws.
struct BackendScore {
  uint32_t backend = 0;   // index within its model (stable)
  std::string_view name;  // valid while the learner lives
  double weight = 0;      // share of traffic recommended
  double p_best = 0;      // posterior probability of having the best expected score (weights)
  // Probability that it is the best routable backend for this request (p_best with the
  // latency prediction error of one request: the decision's confidence).
  double p_best_request = 0;
  double expected_latency_ms = 0;  // for this request, with load and errors (time to a success)
  double error_rate = 0;
  double quality = 0;        // NaN when the model has no quality evidence
  double cost_usd = 0;       // expected cost of this request; NaN when unknown
  double latency_score = 0;  // normalised components in (0, 1], 1 = best candidate
  double quality_score = 0;
  double cost_score = 0;
  double score = 0;  // the strategy's weighted sum
  double in_flight = 0;
  double samples = 0;  // effective latency samples (after decay)
  GateState gate = GateState::kHealthy;
  // Silent for limits.backend_idle while its peers serve: it holds the idle share, p_best 0.
  bool idle = false;
};

// A backend the gate keeps out of this decision, and why.
struct GatedBackend {
  std::string_view name;
  GateState state = GateState::kEjected;
  EjectReason reason = EjectReason::kNone;
  int64_t until_ms = 0;  // end of the ejection
  int64_t ejections = 0;
};

enum class NoBackendReason : uint8_t {
  kNone = 0,
  kUnknownModel,      // no such model
  kNoBackends,        // the model has no backend yet
  kNoCapableBackend,  // none has the capabilities / context length the request needs
  kAllDrained,        // every capable backend has static weight 0 and the gate is not in panic
};
std::string_view NoBackendReasonName(NoBackendReason reason);

struct Decision {
  bool ok = false;  // false: no backend (see `reason`)
  NoBackendReason reason = NoBackendReason::kNone;
  uint32_t backend = 0;
  std::string_view backend_name;
  double confidence = 0;  // P(chosen is the best routable backend for this request now)
  double weight = 0;      // the chosen backend's share of traffic
  Strategy strategy = Strategy::kBalanced;
  StrategyWeights weights;  // the strategy's weights used (adaptive: as chosen)
  bool panic = false;       // the gate was ignored (too few routable backends)
  uint32_t capable = 0;     // backends that passed the capability filter
  uint32_t incapable = 0;   // backends filtered out for capabilities or context length
  // The routable backends by weight, the chosen one among them (up to kMaxRanked).
  std::array<BackendScore, kMaxRanked> ranked;
  uint32_t num_ranked = 0;
  std::array<GatedBackend, kMaxRanked> gated;  // capable but kept out by the gate
  uint32_t num_gated = 0;
};

// "chose vllm-0 (p_best 0.82, weight 0.80): latency 0.95 quality 1.00 cost 0.70; gated: tgi-2
// ejected (consecutive_errors) until 123456". For logs and tests; allocates.
std::string FormatReasoning(const Decision& decision);

// The recommended traffic distribution of one (model, strategy) for typical requests.
struct RoutingWeights {
  std::string model;
  Strategy strategy = Strategy::kBalanced;
  int64_t time_ms = 0;
  struct Entry {
    std::string backend;
    double weight = 0;
    double p_best = 0;
    GateState gate = GateState::kHealthy;
    bool idle = false;  // silent for limits.backend_idle: weight = its part of the idle share
  };
  std::vector<Entry> backends;  // every backend of the model, in catalogue/learned order
  bool panic = false;
};

// Whether `current` differs meaningfully from `previous`: a total-variation distance of at least
// `min_change` (backends missing on one side count as weight 0), any backend gated or ungated, or
// a backend added or removed.
bool WeightsChanged(const RoutingWeights& previous, const RoutingWeights& current,
                    double min_change);
// Total-variation distance (1/2 Σ|w - w'|) by backend name.
double TotalVariation(const RoutingWeights& a, const RoutingWeights& b);

// Counts of what the learner refused or did (also exported as engine metrics when a registry is
// given).
struct LearnerStats {
  uint64_t outcomes = 0;
  uint64_t gauges = 0;
  uint64_t refused_models = 0;    // a new model beyond limits.max_models
  uint64_t refused_backends = 0;  // a new backend beyond limits.max_backends_per_model
  uint64_t expired_backends = 0;  // learned backends removed after limits.backend_ttl of silence
  uint64_t evicted_backends = 0;  // idle learned backends removed to admit a new one
  uint64_t expired_models = 0;    // learned models removed when their last backend went
  uint64_t ejections = 0;
  uint64_t ejections_refused = 0;  // a breach not enforced (max_ejection_percent)
  uint64_t recoveries = 0;
  uint64_t recomputes = 0;    // posterior redraws (per model)
  uint64_t table_builds = 0;  // decision tables scored
};

// xoshiro256** (Blackman & Vigna): the learner's random generator, a standard URBG.
class Xoshiro256 {
 public:
  using result_type = uint64_t;
  explicit Xoshiro256(uint64_t seed);
  static constexpr uint64_t min() { return 0; }
  static constexpr uint64_t max() { return UINT64_MAX; }
  uint64_t operator()();
  // Uniform in [0, 1).
  double Unit() { return static_cast<double>((*this)() >> 11) * 0x1.0p-53; }

 private:
  uint64_t s_[4];
};

class RoutingLearner {
 public:
  using ModelId = uint32_t;
  static constexpr ModelId kNoModel = UINT32_MAX;

  // `options` must be valid (Validate). `metrics` (optional) gets
  // inferscope_routing_outcomes_total, inferscope_routing_refused_total{reason},
  // inferscope_routing_removed_total{what="backend"|"model",reason="expired"|"evicted"},
  // inferscope_routing_ejections_total{reason} and inferscope_routing_recoveries_total; it must
  // outlive the learner.
  explicit RoutingLearner(RoutingOptions options, MetricsRegistry* metrics = nullptr);
  ~RoutingLearner();
  RoutingLearner(const RoutingLearner&) = delete;
  RoutingLearner& operator=(const RoutingLearner&) = delete;

  // Feeds one outcome. Unknown models and backends are learned (with `learned_capabilities`)
  // unless a limit refuses them (counted; the outcome is dropped); a new backend of a full model
  // takes the slot of its least recently seen idle learned backend, if it has one (evicted).
  void Observe(const Outcome& outcome);
  // Feeds one gauge sample (same learning, limits and eviction).
  void ObserveGauge(const GaugeUpdate& gauge);
  // Feeds the quality `quality` (in [0, 1]) of a request that `backend` answered at `time_ms`
  // (its completion: the sample weighs as of then), when it arrives later and apart from the
  // outcome (ratings, an offline judge). Counts for the quality estimate only, not as an outcome.
  // Out-of-range values are ignored; unknown models and backends are learned as by Observe (but
  // evict nothing). It does not count as a sign of life (it is about a past request).
  void ObserveQuality(std::string_view model, std::string_view backend, double quality,
                      int64_t time_ms);
  // Tells the learner a request was sent to `backend` at `now_ms` (a router that follows its
  // decisions calls this; the engine operator, which only sees outcomes, does not). Raises the
  // backend's in-flight estimate until the matching outcome, so that a burst between two
  // recomputes does not herd onto one backend. Unknown names are ignored.
  // `prompt_tokens` (0: the model's typical prompt) is the prefill work the request brings: it
  // is queued ahead of the next requests' first tokens until the backend has prefilled it (the
  // pending-prefill term of the ttft estimate; routing/README.md, "Estimates").
  void NoteSent(ModelId model, uint32_t backend, int64_t now_ms, uint32_t prompt_tokens = 0);

  // The model's id, or kNoModel. An id is stable while its model exists (catalogue models always
  // do): resolve once and use the id on hot paths. A removed model's id answers as unknown until
  // a later new model reuses it.
  ModelId FindModel(std::string_view model) const;
  // Models that exist now.
  size_t num_models() const { return num_models_; }
  // Every id in use is below this (ids of removed models included: num_backends is 0 for them).
  ModelId model_id_limit() const { return static_cast<ModelId>(models_.size()); }
  // A backend's index is stable until a learned backend of its model before it is removed
  // (catalogue backends come first and keep theirs); decisions name backends by index and name.
  size_t num_backends(ModelId model) const;
  std::string_view backend_name(ModelId model, uint32_t backend) const;

  // Removes the learned backends with no outcome and no gauge for limits.backend_ttl before
  // `now_ms`, and the learned models left without backends (counted). Cheap when nothing can be
  // due (one comparison). Observe*, Select, Weights and PublishIfChanged call it with their time;
  // the operator also calls it on its timer, so that a quiet stream still forgets.
  void ExpireIdle(int64_t now_ms);
  // The models whose backends were removed (expired or evicted), or which were removed, since the
  // last call; each once. The operator rewrites their checkpoint records (or deletes those of the
  // models that no longer exist) and publishes their weights (empty for a removed model).
  std::vector<std::string> TakeForgotten();

  // Chooses the backend for one request at `now_ms` and fills `*out` (always; `out->ok` false
  // with a reason when there is none). No allocation once the model's tables exist. The names in
  // `*out` are valid until the next call that takes a time (it may remove a backend).
  void Select(ModelId model, const RequestFeatures& features, Strategy strategy, int64_t now_ms,
              Decision* out);
  void Select(std::string_view model, const RequestFeatures& features, Strategy strategy,
              int64_t now_ms, Decision* out) {
    Select(FindModel(model), features, strategy, now_ms, out);
  }

  // The recommended traffic distribution of (model, strategy) for a request with `features`
  // (default: a typical request needing no capability). NotFound for an unknown model.
  Result<RoutingWeights> Weights(std::string_view model, Strategy strategy, int64_t now_ms,
                                 const RequestFeatures& features = {});

  // Whether (model, strategy)'s weights changed meaningfully since they were last published
  // (WeightsChanged with publish.min_change, at most once per publish.min_interval unless a
  // backend was gated or ungated); if so fills `*out`, records it as published and returns true.
  // The first call for a model with backends publishes.
  bool PublishIfChanged(ModelId model, Strategy strategy, int64_t now_ms, RoutingWeights* out);

  // The posterior estimates of one backend now (for tests, the API and explanations).
  struct BackendEstimate {
    double ttft_ms = 0, tpot_ms = 0, e2e_ms = 0;  // posterior means of the expected value
    double ttft_samples = 0, e2e_samples = 0;     // effective samples after decay
    double ttft_log_sd = 0;  // posterior sd of the log-mean (narrows with evidence)
    double error_rate = 0, error_samples = 0;
    double quality = 0, quality_samples = 0;  // quality NaN without evidence on the model
    double in_flight = 0, slots = 0, sent_rate_per_s = 0, outcome_rate_per_s = 0;
    // What the load a request meets now does to the estimates above (as of the last load
    // update): multipliers of ttft, tpot and e2e (queueing for a slot × load elasticity).
    double ttft_load_factor = 1, tpot_load_factor = 1, e2e_load_factor = 1;
    GateState gate = GateState::kHealthy;
    int64_t ejections = 0;
  };
  Result<BackendEstimate> Estimate(std::string_view model, std::string_view backend,
                                   int64_t now_ms) const;

  // Checkpoints (routing/README.md, "Restarts"): one model's learned state — the decayed
  // evidence of each backend (latency, errors, quality, cost, load regression), its last gauges,
  // when it was last seen (expiry), its health gate and flapping history — as one versioned record
  // (JSON, "v": 1; fields added later are optional when read). Not saved:
  // posterior draws and tables (redrawn), requests in flight (their outcomes after a restart
  // are taken as they come), published weights (the store keeps them).
  std::string SnapshotModel(ModelId model) const;
  // Restores a record of SnapshotModel into this learner (models and backends are created as by
  // Observe, within the limits, evicting nothing); the estimates then go on from the saved
  // evidence, and a restored learned backend expires backend_ttl after it was last seen (a record
  // without that time: after its newest evidence).
  Status RestoreModel(std::string_view record);

  const LearnerStats& stats() const { return stats_; }
  const RoutingOptions& options() const { return options_; }

 private:
  struct Backend;
  struct Model;
  struct Table;

  Model* GetOrCreateModel(std::string_view name);
  // At the limit, evicts the least recently seen idle learned backend at `now_ms` when `evict`.
  Backend* GetOrCreateBackend(Model& model, std::string_view name, int64_t now_ms, bool evict);
  Backend& AddBackend(Model& model, const BackendSpec& spec, bool learned);
  void RemoveBackend(Model& model, uint32_t index);
  void RemoveModel(ModelId id);
  void NoteForgotten(const std::string& model);
  // An outcome or gauge of `b` at `time_ms`: it is there (not idle, expiry postponed).
  void NoteSeen(Model& model, Backend& b, int64_t time_ms);
  // Silent for backend_idle at `now_ms` while its peers had idle_evidence_ outcomes since.
  bool IsIdle(const Model& model, const Backend& b, int64_t now_ms) const;
  // Gate transitions due by `now_ms`, posterior redraws due; invalidates tables when needed.
  void Refresh(Model& model, int64_t now_ms);
  void Redraw(Model& model, int64_t now_ms, bool all);
  void UpdateLoad(Model& model, int64_t now_ms);
  // The backend's requests in flight at `now_ms` (gauges, sends and outcomes; UpdateLoad).
  double InFlightNow(const Backend& b, int64_t now_ms) const;
  // The prompt tokens sent to the backend and not prefilled yet at `now_ms` (NoteSent).
  double PendingPrefill(const Backend& b, int64_t now_ms) const;
  const Table& GetTable(Model& model, Strategy strategy, const RequestFeatures& features,
                        int64_t now_ms);
  void BuildTable(Model& model, Table& table, Strategy strategy, uint32_t capabilities,
                  uint32_t prompt_tokens, uint32_t output_tokens);
  double ExpectedCost(const Model& model, const Backend& b, double prompt_tokens,
                      double output_tokens) const;
  bool MayEject(const Model& model) const;
  void FillWeights(const Model& model, const Table& table, Strategy strategy, int64_t now_ms,
                   RoutingWeights* out) const;

  RoutingOptions options_;
  std::vector<std::unique_ptr<Model>> models_;  // null: a removed model's free id
  size_t num_models_ = 0;
  std::unordered_map<std::string, ModelId, StringHash, std::equal_to<>> model_ids_;
  // Outcomes of its peers after which a silent backend is idle: 3 / probe_fraction (a live
  // backend with at least the probe share of traffic has had one with probability >= 95 %).
  uint64_t idle_evidence_ = 0;
  // No learned backend can expire before this (a lower bound; ExpireIdle recomputes it).
  int64_t next_expiry_ms_ = INT64_MAX;
  std::vector<std::string> forgotten_;
  LearnerStats stats_;
  Xoshiro256 rng_;

  Counter* outcomes_total_ = nullptr;
  Counter* refused_models_ = nullptr;
  Counter* refused_backends_ = nullptr;
  Counter* expired_backends_ = nullptr;
  Counter* evicted_backends_ = nullptr;
  Counter* expired_models_ = nullptr;
  Counter* ejections_consecutive_ = nullptr;
  Counter* ejections_rate_ = nullptr;
  Counter* recoveries_ = nullptr;
};

}  // namespace inferscope::routing
