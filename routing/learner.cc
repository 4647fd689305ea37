#include "routing/learner.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <utility>

#include <nlohmann/json.hpp>

namespace inferscope::routing {
namespace {

constexpr double kLn2 = 0.6931471805599453;
// Latency floors (a 0 ms sample would be -inf in log space).
constexpr double kMinLatencyMs = 0.01;
// Prior medians of a model with no evidence at all (only their spread matters: every backend
// starts from the same prior).
constexpr double kDefaultTtftMs = 300, kDefaultTpotMs = 30, kDefaultE2eMs = 3000;
constexpr double kDefaultPromptTokens = 500, kDefaultOutputTokens = 200;
constexpr double kMaxErrorRate = 0.999;
// Load elasticity (UpdateLoad): the regression of log latency on in-flight requests forgets this
// many times more slowly than the latency itself (it describes the serving engine, not the
// moment), and is shrunk toward a prior slope of 1 / slots with this weight (in squared in-flight
// deviations: ~20 samples of a spread of 5). The factor it gives is bounded (e^±kMaxLoadLog).
constexpr int64_t kElasticityHalfLives = 4;

// The times of a backend's last kTimeRing sends or outcomes: when a gauge arrives (late), the
// sends and outcomes after its sample time are what it does not show yet. Beyond kTimeRing of
// them within one gauge delay the count saturates (an underestimate, bounded memory).
constexpr size_t kTimeRing = 256;
class TimeRing {
 public:
  TimeRing() { times_.fill(INT64_MIN); }
  void Add(int64_t t) {
    // An entry older than the one before it stays in the ring for kTimeRing more additions;
    // until it has left, CountAfter cannot stop at the first entry not after its `t`.
    unsorted_left_ = t < times_[(next_ + kTimeRing - 1) % kTimeRing] ? kTimeRing
                     : unsorted_left_ > 0                            ? unsorted_left_ - 1
                                                                     : 0;
    times_[next_] = t;
    next_ = (next_ + 1) % kTimeRing;
  }
  // Entries later than `t`. In order (sends, outcomes of one publisher), counted from the newest
  // back to the first that is not later: as many steps as the answer, not the ring (the full
  // scan made a gauge observation 10x a request outcome's cost). Out of order, every entry
  // (unused ones are INT64_MIN).
  int64_t CountAfter(int64_t t) const {
    int64_t n = 0;
    if (unsorted_left_ > 0) {
      for (int64_t time : times_) n += time > t ? 1 : 0;
      return n;
    }
    for (size_t i = 0; i < kTimeRing && times_[(next_ + kTimeRing - 1 - i) % kTimeRing] > t; ++i) {
      ++n;
    }
    return n;
  }

 private:
  std::array<int64_t, kTimeRing> times_;
  size_t next_ = 0;
  size_t unsorted_left_ = 0;
};
constexpr double kElasticityPrior = 500;
constexpr double kMaxElasticity = 0.1;
constexpr double kMaxLoadLog = 4;
// Latency residuals (the confidence's prediction error, EstimatorOptions::residual_noise) are
// forgotten over this many latency half-lives, and the fixed prediction_noise × σ counts as this
// many residuals until they accumulate.
constexpr int64_t kResidualHalfLives = 4;
constexpr double kResidualPrior = 5;
// Fixed noise per (backend, draw): the posterior draws are deterministic transforms of it
// (common random numbers), so a redraw is arithmetic, not sampling, and P(best) moves smoothly
// with the evidence. Layout: ttft (τ, μ), tpot (τ, μ), e2e (τ, μ) normals; then for the error
// beta and the quality beta two gammas each as (normal, uniform).
constexpr size_t kNoise = 15;
enum NoiseSlot : size_t {
  kTtftTau = 0,
  kTtftMu,
  kTpotTau,
  kTpotMu,
  kE2eTau,
  kE2eMu,
  kErrA,
  kErrAU,
  kErrB,
  kErrBU,
  kQualA,
  kQualAU,
  kQualB,
  kQualBU,
  kPred,  // the prediction error of this backend's latency for one request (normal)
};

// A Gamma(shape, 1) variate from a standard normal `z` and a uniform `u`: Wilson–Hilferty's
// cube (accurate to a few per cent for shape >= 1), with Marsaglia–Tsang's boost
// Gamma(a) = Gamma(a + 1) · U^(1/a) below 1.
double GammaFromNoise(double shape, double z, double u) {
  const double a = shape < 1 ? shape + 1 : shape;
  const double c = 1.0 / (9.0 * a);
  const double v = std::max(1.0 - c + z * std::sqrt(c), 1e-3);
  double x = a * v * v * v;
  if (shape < 1) x *= std::pow(std::max(u, 1e-300), 1.0 / shape);
  return x;
}

// Length buckets: log2 of the token count, capped.
constexpr uint32_t kMaxLengthBucket = 24;

// a + b, saturated at the int64 range (times near INT64_MIN / INT64_MAX mean "never").
int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t out = 0;
  if (__builtin_add_overflow(a, b, &out)) return b > 0 ? INT64_MAX : INT64_MIN;
  return out;
}

uint64_t SplitMix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint32_t LengthBucket(uint32_t tokens) {
  return tokens == 0 ? 0 : std::min<uint32_t>(std::bit_width(tokens), kMaxLengthBucket);
}
// Lower bound of a bucket (0 for the "unknown" bucket).
uint32_t BucketLow(uint32_t bucket) { return bucket == 0 ? 0 : 1u << (bucket - 1); }
// A representative token count of a bucket: the geometric middle of [2^(b-1), 2^b).
double BucketMid(uint32_t bucket) {
  return bucket == 0 ? 0 : std::ldexp(1.0, static_cast<int>(bucket) - 1) * 1.4142135623730951;
}

StrategyWeights Mix(StrategyWeights a, StrategyWeights b, double t) {
  return {a.latency + (b.latency - a.latency) * t, a.quality + (b.quality - a.quality) * t,
          a.cost + (b.cost - a.cost) * t};
}

// How an outcome counts for the error-rate estimate of the score (the gate has its own rule).
// rate_limited counts: it is a request the router could have placed elsewhere.
enum class ScoreVerdict { kIgnore, kSuccess, kFailure };
ScoreVerdict ScoreVerdictOf(ErrorKind e) {
  switch (e) {
    case ErrorKind::kNone:
      return ScoreVerdict::kSuccess;
    case ErrorKind::kServerError:
    case ErrorKind::kTimeout:
    case ErrorKind::kOther:
    case ErrorKind::kRateLimited:
      return ScoreVerdict::kFailure;
    case ErrorKind::kClientError:
    case ErrorKind::kCancelled:
      return ScoreVerdict::kIgnore;
  }
  return ScoreVerdict::kIgnore;
}

}  // namespace

std::string_view StrategyName(Strategy s) {
  switch (s) {
    case Strategy::kLowestLatency:
      return "lowest_latency";
    case Strategy::kHighestQuality:
      return "highest_quality";
    case Strategy::kCostEffective:
      return "cost_effective";
    case Strategy::kBalanced:
      return "balanced";
    case Strategy::kAdaptive:
      return "adaptive";
  }
  return "unknown";
}

bool ParseStrategy(std::string_view name, Strategy* out) {
  for (size_t i = 0; i < kNumStrategies; ++i) {
    if (StrategyName(static_cast<Strategy>(i)) == name) {
      *out = static_cast<Strategy>(i);
      return true;
    }
  }
  return false;
}

StrategyWeights FixedWeights(Strategy s) {
  switch (s) {
    case Strategy::kLowestLatency:
      return {0.7, 0.2, 0.1};
    case Strategy::kHighestQuality:
      return {0.1, 0.8, 0.1};
    case Strategy::kCostEffective:
      return {0.2, 0.3, 0.5};
    case Strategy::kBalanced:
    case Strategy::kAdaptive:
      return {0.33, 0.33, 0.34};
  }
  return {0.33, 0.33, 0.34};
}

StrategyWeights AdaptiveWeights(uint32_t prompt_tokens, uint32_t output_tokens,
                                uint32_t capabilities, double utilisation) {
  StrategyWeights w = FixedWeights(Strategy::kBalanced);
  const StrategyWeights latency = FixedWeights(Strategy::kLowestLatency);
  if (utilisation >= 0.8) {
    w = Mix(w, latency, 0.5);  // a loaded fleet: queueing dominates what users feel
  } else if (utilisation >= 0.5) {
    w = Mix(w, latency, 0.25);
  }
  if (output_tokens > 0 && output_tokens <= 64 && prompt_tokens <= 1024) {
    w = Mix(w, latency, 0.3);  // short interactive request: time to answer matters most
  }
  if (output_tokens >= 1024) {
    w = Mix(w, FixedWeights(Strategy::kCostEffective), 0.3);  // long generation: tokens cost
  }
  if (prompt_tokens >= 8192 || (capabilities & (kCode | kTools | kReasoning)) != 0) {
    w = Mix(w, FixedWeights(Strategy::kHighestQuality), 0.3);  // hard requests: quality
  }
  return w;
}

std::string_view NoBackendReasonName(NoBackendReason r) {
  switch (r) {
    case NoBackendReason::kNone:
      return "";
    case NoBackendReason::kUnknownModel:
      return "unknown_model";
    case NoBackendReason::kNoBackends:
      return "no_backends";
    case NoBackendReason::kNoCapableBackend:
      return "no_capable_backend";
    case NoBackendReason::kAllDrained:
      return "all_drained";
  }
  return "unknown";
}

std::string FormatReasoning(const Decision& d) {
  char buf[256];
  std::string out;
  if (!d.ok) {
    out = "no backend: ";
    out += NoBackendReasonName(d.reason);
  } else {
    const BackendScore* c = nullptr;
    for (uint32_t i = 0; i < d.num_ranked; ++i) {
      if (d.ranked[i].backend == d.backend) c = &d.ranked[i];
    }
    std::snprintf(buf, sizeof(buf), "chose %.*s (p_best %.2f, weight %.2f, %s)",
                  static_cast<int>(d.backend_name.size()), d.backend_name.data(), d.confidence,
                  d.weight, std::string(StrategyName(d.strategy)).c_str());
    out = buf;
    if (c != nullptr) {
      std::snprintf(buf, sizeof(buf),
                    ": latency %.2f (%.0f ms) quality %.2f cost %.2f error %.3f in-flight %.1f",
                    c->latency_score, c->expected_latency_ms, c->quality_score, c->cost_score,
                    c->error_rate, c->in_flight);
      out += buf;
    }
    if (d.panic) out += "; panic: gate ignored";
  }
  for (uint32_t i = 0; i < d.num_gated; ++i) {
    const GatedBackend& g = d.gated[i];
    std::snprintf(
        buf, sizeof(buf), "; gated: %.*s %s (%s) until %lld", static_cast<int>(g.name.size()),
        g.name.data(), std::string(GateStateName(g.state)).c_str(),
        std::string(EjectReasonName(g.reason)).c_str(), static_cast<long long>(g.until_ms));
    out += buf;
  }
  if (d.incapable > 0) {
    std::snprintf(buf, sizeof(buf), "; %u backends lack the capabilities", d.incapable);
    out += buf;
  }
  return out;
}

double TotalVariation(const RoutingWeights& a, const RoutingWeights& b) {
  double sum = 0;
  for (const RoutingWeights::Entry& x : a.backends) {
    double other = 0;
    for (const RoutingWeights::Entry& y : b.backends) {
      if (y.backend == x.backend) other = y.weight;
    }
    sum += std::abs(x.weight - other);
  }
  for (const RoutingWeights::Entry& y : b.backends) {
    bool found = false;
    for (const RoutingWeights::Entry& x : a.backends) found = found || x.backend == y.backend;
    if (!found) sum += std::abs(y.weight);
  }
  return sum / 2;
}

bool WeightsChanged(const RoutingWeights& previous, const RoutingWeights& current,
                    double min_change) {
  if (previous.panic != current.panic) return true;
  if (previous.backends.size() != current.backends.size()) return true;
  for (const RoutingWeights::Entry& y : current.backends) {
    const bool gated = y.gate == GateState::kEjected;
    bool was_gated = false, known = false;
    for (const RoutingWeights::Entry& x : previous.backends) {
      if (x.backend != y.backend) continue;
      was_gated = x.gate == GateState::kEjected;
      known = true;
    }
    if (!known || gated != was_gated) return true;
  }
  return TotalVariation(previous, current) >= min_change;
}

// ---------------------------------------------------------------------------------------------

struct RoutingLearner::Backend {
  BackendSpec spec;
  bool learned = false;
  DecayedMoments log_ttft, log_tpot, log_e2e;
  DecayedPair errors;       // a = failures, b = successes (score verdicts)
  DecayedPair quality;      // a = Σq, b = Σ(1 - q)
  DecayedPair cost_list;    // a = Σ observed cost, b = Σ list cost (backends with prices)
  DecayedPair cost_tokens;  // a = Σ observed cost, b = Σ tokens
  DecayedPair sends;        // a = requests sent (NoteSent)
  DecayedPair completions;  // a = outcomes
  // Last gauges; NaN = never reported.
  double g_running = NAN, g_waiting = NAN, g_max_seqs = NAN, g_kv = NAN;
  int64_t g_time_ms = INT64_MIN;  // of the last running/waiting gauge
  // The backend's gauge sample interval (ms; 0 = not known yet): a running mean (weight 1/8) of
  // the gaps between consecutive running/waiting sample times, gaps > gauge_max_age (silences)
  // excluded. A held backend competes for the confidence only while its last gauge is at most two
  // of these older than the routed backends' newest (BuildTable).
  int64_t g_interval_ms = 0;
  // Gauge silences (a gap > gauge_max_age between two samples: the scrape failed, the backend
  // was down): when the last one ended, how long it lasted, and whether the up-period before it
  // was short (< max_ejection_time since the silence before it ended: the backend flaps).
  int64_t up_since_ms = INT64_MIN;
  int64_t last_down_ms = 0;
  bool resumed = false;  // up_since_ms is the end of a silence (not the first gauge)
  bool flapping = false;
  int64_t g_kv_time_ms = INT64_MIN;
  int64_t g_slots_time_ms = INT64_MIN;
  int64_t sent_since_gauge = 0, done_since_gauge = 0;
  TimeRing sent_times, done_times;  // NoteSent and outcome event times
  int64_t own_in_flight = 0;
  bool any_sent = false;
  HealthGate gate;
  bool dirty = true;
  // In-flight requests when the latency evidence was observed (its mean is the load the
  // latency estimates describe).
  DecayedMoments obs_load;
  // Derived by UpdateLoad: in-flight now, slots, and the factors by which this backend's ttft,
  // tpot and e2e estimates are expected to change at the load a new request meets now (queueing
  // for a slot × the elasticity of latency with in-flight requests).
  double in_flight = 0, slots = 0, load_factor = 1;
  std::array<double, 3> elastic_factor = {1, 1, 1};
  std::array<double, 3> elastic_slope = {0, 0, 0};  // d log latency / d in-flight (ttft, tpot, e2e)
  // Log-space sd of one request's latency around the expected (Redraw; prediction_noise).
  double pred_log_sd = 0;
  // Residuals log(realised e2e / the e2e this learner expected for that request, from its
  // estimates and load factors when the outcome arrives), over kResidualHalfLives half-lives:
  // their spread is the confidence's per-request prediction error (residual_noise).
  DecayedMoments residual;
  // Pending prefill (NoteSent): prompt tokens this router sent that the backend has not
  // prefilled yet, as a fluid queue drained at the backend's effective prefill rate; its decayed
  // mean at the sends (the load the ttft evidence describes), and the ttft factor UpdateLoad
  // derives from the two.
  double pf_work = 0;
  int64_t pf_time_ms = INT64_MIN;
  double pf_rate = 0;  // tokens per ms (UpdateLoad)
  DecayedMoments pf_at_send;
  double prefill_factor = 1;
  // What the ttft estimate is multiplied by for the load a request meets now: the pending-prefill
  // factor when this router reports its sends (NoteSent), else the in-flight elasticity's.
  double ttft_load_factor = 1;
  // Forgetting (routing/README.md, "Forgetting backends"): the event time of its last outcome or
  // gauge (INT64_MIN: a catalogue backend not seen yet), the model's outcome count then (IsIdle),
  // and whether it was idle at the last redraw (BuildTable gives it the idle share).
  int64_t last_seen_ms = INT64_MIN;
  uint64_t seen_at_outcome = 0;
  bool idle = false;
};

struct RoutingLearner::Table {
  uint64_t key = UINT64_MAX;
  uint64_t version = 0;
  uint64_t last_used = 0;  // for least-recently-used eviction
  uint32_t n = 0;          // routable candidates, in `scores` by weight, descending
  std::array<BackendScore, kMaxBackendsPerModel> scores;
  std::array<double, kMaxBackendsPerModel> cum;  // cumulative weights over `scores`
  std::array<uint32_t, kMaxBackendsPerModel> max_context;
  std::array<GatedBackend, kMaxRanked> gated;
  uint32_t num_gated = 0;
  uint32_t capable = 0, incapable = 0;
  NoBackendReason reason = NoBackendReason::kNone;
  StrategyWeights weights;
  bool panic = false;
};

struct RoutingLearner::Model {
  std::string name;
  bool catalogued = false;  // in the catalogue: never removed
  // Reserved to the limit: never reallocates. Removing a learned backend moves the ones after it
  // (their names with them); the version changes, so no table keeps a view of a moved name.
  std::vector<Backend> backends;
  std::unordered_map<std::string, uint32_t, StringHash, std::equal_to<>> ids;
  // Posterior draws, [backend * draws + m]: expected ttft, tpot, e2e (ms), error rate, quality.
  std::vector<float> ttft, tpot, e2e, perr, qual;
  std::vector<float> noise;  // [(backend * draws + m) * kNoise + slot]
  bool use_split = false;    // score latency as ttft + tpot × output tokens (else e2e)
  // Within-backend regression of log latency (ttft, tpot, e2e) on in-flight requests, pooled
  // over the model's backends: a = Σ x·y, b = Σ x² (x, y deviations from the backend's means).
  std::array<DecayedPair, 3> elasticity;
  bool has_quality = false;    // some backend has quality evidence
  DecayedPair typical_prompt;  // a = Σ prompt tokens, b = count
  DecayedPair typical_output;
  uint64_t version = 1;
  bool dirty = true;       // evidence changed since the last redraw
  bool load_dirty = true;  // gauges or sends changed since the last load update
  int64_t last_redraw_ms = INT64_MIN;
  int64_t last_full_ms = INT64_MIN;
  int64_t next_gate_ms = INT64_MAX;
  double utilisation = 0;
  std::vector<std::unique_ptr<Table>> tables;
  uint64_t use_clock = 0;
  struct Published {
    bool has = false;
    int64_t time_ms = 0;
    RoutingWeights weights;
  };
  std::array<Published, kNumStrategies> published;
  // Outcomes of the model's backends (refused newcomers' included) since this learner started,
  // and the time of its first event here: a catalogue backend not seen yet is silent since then.
  uint64_t outcomes = 0;
  int64_t first_event_ms = INT64_MIN;
};

RoutingLearner::RoutingLearner(RoutingOptions options, MetricsRegistry* metrics)
    : options_(std::move(options)), rng_(options_.estimator.seed) {
  if (metrics != nullptr) {
    outcomes_total_ = metrics->GetCounter("inferscope_routing_outcomes_total",
                                          "Request outcomes the routing learner applied.");
    const char* refused_help = "Models or backends the routing learner refused (limits).";
    refused_models_ = metrics->GetCounter("inferscope_routing_refused_total", refused_help,
                                          {{"reason", "model_limit"}});
    refused_backends_ = metrics->GetCounter("inferscope_routing_refused_total", refused_help,
                                            {{"reason", "backend_limit"}});
    const char* removed_help =
        "Backends and models the routing learner forgot: silent for limits.backend_ttl "
        "(expired), or idle and replaced by a new backend in a full table (evicted).";
    expired_backends_ = metrics->GetCounter("inferscope_routing_removed_total", removed_help,
                                            {{"what", "backend"}, {"reason", "expired"}});
    evicted_backends_ = metrics->GetCounter("inferscope_routing_removed_total", removed_help,
                                            {{"what", "backend"}, {"reason", "evicted"}});
    expired_models_ = metrics->GetCounter("inferscope_routing_removed_total", removed_help,
                                          {{"what", "model"}, {"reason", "expired"}});
    const char* eject_help = "Backends the routing health gate ejected, by reason.";
    ejections_consecutive_ = metrics->GetCounter("inferscope_routing_ejections_total", eject_help,
                                                 {{"reason", "consecutive_errors"}});
    ejections_rate_ = metrics->GetCounter("inferscope_routing_ejections_total", eject_help,
                                          {{"reason", "failure_rate"}});
    recoveries_ = metrics->GetCounter("inferscope_routing_recoveries_total",
                                      "Backends trusted again after their probes succeeded.");
  }
  idle_evidence_ = static_cast<uint64_t>(std::ceil(3.0 / options_.gate.probe_fraction));
  for (const ModelSpec& spec : options_.models) {
    Model* m = GetOrCreateModel(spec.name);
    if (m == nullptr) continue;  // Validate bounds the catalogue; cannot happen
    m->catalogued = true;
    for (const BackendSpec& b : spec.backends) {
      if (m->ids.contains(b.name)) continue;
      if (m->backends.size() >= static_cast<size_t>(options_.limits.max_backends_per_model)) break;
      AddBackend(*m, b, /*learned=*/false);
    }
  }
}

RoutingLearner::~RoutingLearner() = default;

Xoshiro256::Xoshiro256(uint64_t seed) {
  for (uint64_t& r : s_) r = SplitMix64(seed);
}

uint64_t Xoshiro256::operator()() {
  const uint64_t result = std::rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = std::rotl(s_[3], 45);
  return result;
}

RoutingLearner::Model* RoutingLearner::GetOrCreateModel(std::string_view name) {
  if (auto it = model_ids_.find(name); it != model_ids_.end()) return models_[it->second].get();
  if (num_models_ >= static_cast<size_t>(options_.limits.max_models)) {
    ++stats_.refused_models;
    if (refused_models_ != nullptr) refused_models_->Inc();
    return nullptr;
  }
  auto m = std::make_unique<Model>();
  m->name = std::string(name);
  m->backends.reserve(static_cast<size_t>(options_.limits.max_backends_per_model));
  // The id of a removed model is reused (the ids stay below max_models).
  auto id = static_cast<ModelId>(models_.size());
  for (ModelId i = 0; i < models_.size(); ++i) {
    if (models_[i] == nullptr) {
      id = i;
      break;
    }
  }
  model_ids_.emplace(m->name, id);
  if (id == models_.size()) models_.emplace_back();
  models_[id] = std::move(m);
  ++num_models_;
  return models_[id].get();
}

void RoutingLearner::RemoveModel(ModelId id) {
  model_ids_.erase(models_[id]->name);
  models_[id].reset();
  --num_models_;
}

void RoutingLearner::NoteForgotten(const std::string& model) {
  if (std::find(forgotten_.begin(), forgotten_.end(), model) == forgotten_.end()) {
    forgotten_.push_back(model);
  }
}

std::vector<std::string> RoutingLearner::TakeForgotten() {
  std::vector<std::string> out;
  out.swap(forgotten_);
  return out;
}

RoutingLearner::Backend& RoutingLearner::AddBackend(Model& model, const BackendSpec& spec,
                                                    bool learned) {
  const auto index = static_cast<uint32_t>(model.backends.size());
  model.backends.emplace_back();
  Backend& b = model.backends.back();
  b.spec = spec;
  b.learned = learned;
  model.ids.emplace(spec.name, index);
  const size_t draws = static_cast<size_t>(options_.estimator.posterior_draws);
  const size_t size = model.backends.size() * draws;
  for (std::vector<float>* v : {&model.ttft, &model.tpot, &model.e2e, &model.perr, &model.qual}) {
    v->resize(size, 0.0f);
  }
  std::normal_distribution<float> normal;
  const size_t start = model.noise.size();
  model.noise.resize(size * kNoise);
  for (size_t i = start; i < model.noise.size(); ++i) {
    const size_t slot = (i - start) % kNoise;
    const bool uniform = slot >= kErrA && (slot - kErrA) % 2 == 1;
    model.noise[i] = uniform ? static_cast<float>(rng_.Unit()) : normal(rng_);
  }
  model.dirty = true;
  model.load_dirty = true;
  model.last_full_ms = INT64_MIN;  // redraw everything: pooled priors changed
  ++model.version;
  return b;
}

RoutingLearner::Backend* RoutingLearner::GetOrCreateBackend(Model& model, std::string_view name,
                                                            int64_t now, bool evict) {
  if (auto it = model.ids.find(name); it != model.ids.end()) return &model.backends[it->second];
  if (model.backends.size() >= static_cast<size_t>(options_.limits.max_backends_per_model)) {
    // A full table: the newcomer takes the slot of the learned backend that has been idle the
    // longest (seen least recently), if there is one (routing/README.md, "Forgetting backends").
    int64_t victim = -1;
    for (size_t i = 0; evict && i < model.backends.size(); ++i) {
      const Backend& b = model.backends[i];
      if (!b.learned || !IsIdle(model, b, now)) continue;
      if (victim < 0 || b.last_seen_ms < model.backends[static_cast<size_t>(victim)].last_seen_ms) {
        victim = static_cast<int64_t>(i);
      }
    }
    if (victim < 0) {
      ++stats_.refused_backends;
      if (refused_backends_ != nullptr) refused_backends_->Inc();
      return nullptr;
    }
    RemoveBackend(model, static_cast<uint32_t>(victim));
    ++stats_.evicted_backends;
    if (evicted_backends_ != nullptr) evicted_backends_->Inc();
    NoteForgotten(model.name);
  }
  BackendSpec spec;
  spec.name = std::string(name);
  spec.capabilities = options_.learned_capabilities;
  Backend& b = AddBackend(model, spec, /*learned=*/true);
  b.last_seen_ms = now;
  b.seen_at_outcome = model.outcomes;
  if (options_.limits.backend_ttl_ms > 0) {
    next_expiry_ms_ = std::min(next_expiry_ms_, SaturatingAdd(now, options_.limits.backend_ttl_ms));
  }
  return &b;
}

void RoutingLearner::RemoveBackend(Model& model, uint32_t index) {
  const size_t draws = static_cast<size_t>(options_.estimator.posterior_draws);
  model.backends.erase(model.backends.begin() + index);
  for (std::vector<float>* v : {&model.ttft, &model.tpot, &model.e2e, &model.perr, &model.qual}) {
    v->erase(v->begin() + static_cast<ptrdiff_t>(index * draws),
             v->begin() + static_cast<ptrdiff_t>((index + 1) * draws));
  }
  model.noise.erase(model.noise.begin() + static_cast<ptrdiff_t>(index * draws * kNoise),
                    model.noise.begin() + static_cast<ptrdiff_t>((index + 1) * draws * kNoise));
  model.ids.clear();
  for (uint32_t i = 0; i < model.backends.size(); ++i) {
    model.ids.emplace(model.backends[i].spec.name, i);
  }
  model.dirty = true;
  model.load_dirty = true;
  model.last_full_ms = INT64_MIN;  // redraw everything: pooled priors changed
  ++model.version;
}

void RoutingLearner::NoteSeen(Model& model, Backend& b, int64_t time_ms) {
  b.last_seen_ms = std::max(b.last_seen_ms, time_ms);
  b.seen_at_outcome = model.outcomes;
  if (b.idle) {
    b.idle = false;
    ++model.version;  // back among the candidates at once
  }
}

bool RoutingLearner::IsIdle(const Model& model, const Backend& b, int64_t now) const {
  const int64_t idle_ms = options_.limits.backend_idle_ms;
  if (idle_ms <= 0) return false;
  const int64_t since = b.last_seen_ms != INT64_MIN ? b.last_seen_ms : model.first_event_ms;
  if (since == INT64_MIN || now < SaturatingAdd(since, idle_ms)) return false;
  return model.outcomes - b.seen_at_outcome >= idle_evidence_;
}

void RoutingLearner::ExpireIdle(int64_t now) {
  const int64_t ttl = options_.limits.backend_ttl_ms;
  if (ttl <= 0 || now < next_expiry_ms_) return;
  int64_t next = INT64_MAX;
  for (ModelId id = 0; id < models_.size(); ++id) {
    Model* m = models_[id].get();
    if (m == nullptr) continue;
    bool removed = false;
    for (auto i = static_cast<uint32_t>(m->backends.size()); i-- > 0;) {
      const Backend& b = m->backends[i];
      if (!b.learned) continue;  // the catalogue's backends stay
      const int64_t due = SaturatingAdd(b.last_seen_ms, ttl);
      if (now < due) {
        next = std::min(next, due);
        continue;
      }
      RemoveBackend(*m, i);
      removed = true;
      ++stats_.expired_backends;
      if (expired_backends_ != nullptr) expired_backends_->Inc();
    }
    if (!removed) continue;
    NoteForgotten(m->name);
    if (m->backends.empty() && !m->catalogued) {
      RemoveModel(id);
      ++stats_.expired_models;
      if (expired_models_ != nullptr) expired_models_->Inc();
    }
  }
  next_expiry_ms_ = next;
}

RoutingLearner::ModelId RoutingLearner::FindModel(std::string_view model) const {
  auto it = model_ids_.find(model);
  return it == model_ids_.end() ? kNoModel : it->second;
}

size_t RoutingLearner::num_backends(ModelId model) const {
  return model < models_.size() && models_[model] != nullptr ? models_[model]->backends.size() : 0;
}

std::string_view RoutingLearner::backend_name(ModelId model, uint32_t backend) const {
  if (backend >= num_backends(model)) return {};
  return models_[model]->backends[backend].spec.name;
}

bool RoutingLearner::MayEject(const Model& model) const {
  size_t ejected = 0;
  for (const Backend& b : model.backends) ejected += b.gate.state() == GateState::kEjected;
  const auto allowed = std::max<size_t>(
      1, static_cast<size_t>(std::floor(static_cast<double>(model.backends.size()) *
                                        options_.gate.max_ejection_percent / 100.0)));
  return ejected < allowed;
}

void RoutingLearner::Observe(const Outcome& o) {
  const int64_t t = o.time_ms;
  ExpireIdle(t);
  Model* model = GetOrCreateModel(o.model);
  if (model == nullptr) return;
  if (model->first_event_ms == INT64_MIN) model->first_event_ms = t;
  ++model->outcomes;  // a refused newcomer's too: its peers are serving
  Backend* b = GetOrCreateBackend(*model, o.backend, t, /*evict=*/true);
  if (b == nullptr) return;
  NoteSeen(*model, *b, t);
  ++stats_.outcomes;
  if (outcomes_total_ != nullptr) outcomes_total_->Inc();
  const EstimatorOptions& e = options_.estimator;

  // The gate first: an ejection invalidates the tables at once (failover is not rate-limited).
  switch (b->gate.Observe(GateVerdictOf(o.error), t, MayEject(*model), options_.gate)) {
    case HealthGate::Change::kEjected:
      ++stats_.ejections;
      if (b->gate.reason() == EjectReason::kFailureRate) {
        if (ejections_rate_ != nullptr) ejections_rate_->Inc();
      } else if (ejections_consecutive_ != nullptr) {
        ejections_consecutive_->Inc();
      }
      model->next_gate_ms = std::min(model->next_gate_ms, b->gate.next_change_ms());
      ++model->version;
      break;
    case HealthGate::Change::kRecovered:
      ++stats_.recoveries;
      if (recoveries_ != nullptr) recoveries_->Inc();
      ++model->version;
      break;
    case HealthGate::Change::kRefused:
      ++stats_.ejections_refused;
      break;
    case HealthGate::Change::kNone:
      break;
  }

  const ScoreVerdict verdict = ScoreVerdictOf(o.error);
  if (verdict == ScoreVerdict::kFailure) b->errors.Add(1, 0, t, e.half_life_ms);
  if (verdict == ScoreVerdict::kSuccess) {
    b->errors.Add(0, 1, t, e.half_life_ms);
    // Latency of successes only: a failure's latency says how fast it failed. Each sample also
    // feeds the load elasticity: its deviation from the backend's mean against the deviation of
    // the in-flight requests now from their mean over the evidence.
    const double load = InFlightNow(*b, t);
    const double dx = b->obs_load.empty() ? 0.0 : load - b->obs_load.mean();
    // The residual of this request's e2e against what the estimates expected for it (before they
    // take it in), with its real output tokens: the latency part of the confidence's error,
    // known seconds after a decision.
    if (o.e2e_ms > 0) {
      double expected = NAN;
      if (model->use_split && !b->log_ttft.empty() && !b->log_tpot.empty()) {
        const double ot = o.output_tokens >= 0 ? static_cast<double>(o.output_tokens)
                          : model->typical_output.raw_b() > 0
                              ? model->typical_output.raw_a() / model->typical_output.raw_b()
                              : kDefaultOutputTokens;
        expected = std::exp(b->log_ttft.mean()) * b->ttft_load_factor +
                   std::exp(b->log_tpot.mean()) * b->elastic_factor[1] * ot;
      } else if (!model->use_split && !b->log_e2e.empty()) {
        expected = std::exp(b->log_e2e.mean()) * b->elastic_factor[2];
      }
      expected *= b->load_factor;
      if (std::isfinite(expected) && expected > 0) {
        b->residual.Add(std::log(std::max(o.e2e_ms, kMinLatencyMs) / expected), t,
                        e.half_life_ms * kResidualHalfLives);
      }
    }
    const int64_t ehl = e.half_life_ms * kElasticityHalfLives;
    auto add_latency = [&](DecayedMoments& m, size_t k, double ms) {
      const double y = std::log(std::max(ms, kMinLatencyMs));
      if (!m.empty() && dx != 0) model->elasticity[k].Add(dx * (y - m.mean()), dx * dx, t, ehl);
      m.Add(y, t, e.half_life_ms);
    };
    if (o.ttft_ms >= 0) add_latency(b->log_ttft, 0, o.ttft_ms);
    if (o.tpot_ms >= 0) add_latency(b->log_tpot, 1, o.tpot_ms);
    if (o.e2e_ms >= 0) add_latency(b->log_e2e, 2, o.e2e_ms);
    if (o.ttft_ms >= 0 || o.tpot_ms >= 0 || o.e2e_ms >= 0) b->obs_load.Add(load, t, e.half_life_ms);
    if (o.ttft_ms >= 0 && o.tpot_ms >= 0 && !model->use_split) {
      model->use_split = true;
      model->last_full_ms = INT64_MIN;  // every backend needs ttft and tpot draws now
    }
    if (o.quality >= 0 && o.quality <= 1) {
      b->quality.Add(o.quality, 1 - o.quality, t, e.quality_half_life_ms);
      if (!model->has_quality) {
        model->has_quality = true;
        model->last_full_ms = INT64_MIN;
      }
    }
  }
  if (o.prompt_tokens >= 0) {
    model->typical_prompt.Add(static_cast<double>(o.prompt_tokens), 1, t, e.half_life_ms);
  }
  if (o.output_tokens >= 0 && verdict == ScoreVerdict::kSuccess) {
    model->typical_output.Add(static_cast<double>(o.output_tokens), 1, t, e.half_life_ms);
  }
  if (o.cost_usd >= 0 && o.prompt_tokens >= 0 && o.output_tokens >= 0) {
    const double pt = static_cast<double>(o.prompt_tokens);
    const double ot = static_cast<double>(o.output_tokens);
    if (b->spec.has_price()) {
      const double list =
          (b->spec.price_per_1k_input * pt + b->spec.price_per_1k_output * ot) / 1000;
      if (list > 0) b->cost_list.Add(o.cost_usd, list, t, e.half_life_ms);
    }
    if (pt + ot > 0) b->cost_tokens.Add(o.cost_usd, pt + ot, t, e.half_life_ms);
  }
  // Load bookkeeping.
  b->completions.Add(1, 0, t, e.half_life_ms);
  if (t > b->g_time_ms) ++b->done_since_gauge;
  b->done_times.Add(t);
  if (b->any_sent && b->own_in_flight > 0) --b->own_in_flight;
  b->dirty = true;
  model->dirty = true;
  model->load_dirty = true;
}

void RoutingLearner::ObserveQuality(std::string_view model_name, std::string_view backend,
                                    double quality, int64_t time_ms) {
  if (!(quality >= 0 && quality <= 1)) return;
  ExpireIdle(time_ms);
  Model* model = GetOrCreateModel(model_name);
  if (model == nullptr) return;
  Backend* b = GetOrCreateBackend(*model, backend, time_ms, /*evict=*/false);
  if (b == nullptr) return;
  b->quality.Add(quality, 1 - quality, time_ms, options_.estimator.quality_half_life_ms);
  if (!model->has_quality) {
    model->has_quality = true;
    model->last_full_ms = INT64_MIN;
  }
  b->dirty = true;
  model->dirty = true;
}

void RoutingLearner::ObserveGauge(const GaugeUpdate& g) {
  enum { kRunning, kWaiting, kMaxSeqs, kKv, kOther } which = kOther;
  if (g.name == "num_requests_running") which = kRunning;
  if (g.name == "num_requests_waiting") which = kWaiting;
  if (g.name == "max_num_seqs") which = kMaxSeqs;
  if (g.name == "kv_cache_usage") which = kKv;
  if (which == kOther || !std::isfinite(g.value)) return;
  ExpireIdle(g.time_ms);
  Model* model = GetOrCreateModel(g.model);
  if (model == nullptr) return;
  if (model->first_event_ms == INT64_MIN) model->first_event_ms = g.time_ms;
  Backend* b = GetOrCreateBackend(*model, g.backend, g.time_ms, /*evict=*/true);
  if (b == nullptr) return;
  NoteSeen(*model, *b, g.time_ms);
  ++stats_.gauges;
  const double v = std::max(0.0, g.value);
  switch (which) {
    case kRunning:
    case kWaiting:
      if (g.time_ms < b->g_time_ms) return;  // an older sample than the one we have
      if (g.time_ms > b->g_time_ms) {
        // A new snapshot: what was sent and completed after it is counted afresh.
        // A new snapshot (it arrives late): the sends and outcomes after its sample time are
        // what it does not show.
        b->sent_since_gauge = b->sent_times.CountAfter(g.time_ms);
        b->done_since_gauge = b->done_times.CountAfter(g.time_ms);
        if (b->g_time_ms != INT64_MIN &&
            g.time_ms - b->g_time_ms > options_.estimator.gauge_max_age_ms) {
          // The gauges resume after a silence: a down-period ends.
          b->flapping = b->resumed && b->g_time_ms - b->up_since_ms < options_.gate.max_ejection_ms;
          b->resumed = true;
          b->last_down_ms = g.time_ms - b->g_time_ms;
          b->up_since_ms = g.time_ms;
        } else if (b->up_since_ms == INT64_MIN) {
          b->up_since_ms = g.time_ms;
        } else {
          const int64_t gap = g.time_ms - b->g_time_ms;
          b->g_interval_ms = b->g_interval_ms == 0 ? gap : (7 * b->g_interval_ms + gap) / 8;
        }
        b->g_time_ms = g.time_ms;
      }
      (which == kRunning ? b->g_running : b->g_waiting) = v;
      break;
    case kMaxSeqs:
      b->g_max_seqs = v;
      b->g_slots_time_ms = g.time_ms;
      break;
    case kKv:
      b->g_kv = v;
      b->g_kv_time_ms = g.time_ms;
      break;
    case kOther:
      break;
  }
  model->load_dirty = true;
}

void RoutingLearner::NoteSent(ModelId model_id, uint32_t backend, int64_t now_ms,
                              uint32_t prompt_tokens) {
  if (backend >= num_backends(model_id)) return;
  Model& model = *models_[model_id];
  Backend& b = model.backends[backend];
  // The prefill queue ahead of this request, then its own prompt joins it.
  const double work = PendingPrefill(b, now_ms);
  b.pf_at_send.Add(work, now_ms, options_.estimator.half_life_ms);
  const double typical_prompt = model.typical_prompt.raw_b() > 0
                                    ? model.typical_prompt.raw_a() / model.typical_prompt.raw_b()
                                    : kDefaultPromptTokens;
  b.pf_work = work + (prompt_tokens > 0 ? static_cast<double>(prompt_tokens) : typical_prompt);
  b.pf_time_ms = std::max(b.pf_time_ms, now_ms);
  b.sends.Add(1, 0, now_ms, options_.estimator.half_life_ms);
  if (now_ms > b.g_time_ms) ++b.sent_since_gauge;
  b.sent_times.Add(now_ms);
  ++b.own_in_flight;
  b.any_sent = true;
  model.load_dirty = true;
}

double RoutingLearner::PendingPrefill(const Backend& b, int64_t now) const {
  if (b.pf_time_ms == INT64_MIN || b.pf_rate <= 0) return b.pf_work;
  const double elapsed = static_cast<double>(std::max<int64_t>(0, now - b.pf_time_ms));
  return std::max(0.0, b.pf_work - b.pf_rate * elapsed);
}

double RoutingLearner::InFlightNow(const Backend& b, int64_t now) const {
  const EstimatorOptions& e = options_.estimator;
  const bool fresh = b.g_time_ms != INT64_MIN && now - b.g_time_ms <= e.gauge_max_age_ms &&
                     std::isfinite(b.g_running);
  double in_flight;
  if (fresh) {
    in_flight = b.g_running + (std::isfinite(b.g_waiting) ? b.g_waiting : 0.0) +
                static_cast<double>(b.sent_since_gauge - b.done_since_gauge);
  } else if (b.any_sent) {
    in_flight = static_cast<double>(b.own_in_flight);
  } else {
    // Little's law from the outcome rate and the typical latency.
    const double per_s = kLn2 * 1000.0 / static_cast<double>(e.half_life_ms);
    const double rate = b.completions.a(now, e.half_life_ms) * per_s;
    const double e2e_s = b.log_e2e.empty() ? 0.0 : std::exp(b.log_e2e.mean()) / 1000.0;
    in_flight = rate * e2e_s;
  }
  return std::max(0.0, in_flight);
}

void RoutingLearner::UpdateLoad(Model& model, int64_t now) {
  const EstimatorOptions& e = options_.estimator;
  const double typical_prompt = model.typical_prompt.raw_b() > 0
                                    ? model.typical_prompt.raw_a() / model.typical_prompt.raw_b()
                                    : kDefaultPromptTokens;
  double in_flight_sum = 0, slots_sum = 0;
  for (Backend& b : model.backends) {
    const bool fresh = b.g_time_ms != INT64_MIN && now - b.g_time_ms <= e.gauge_max_age_ms &&
                       std::isfinite(b.g_running);
    const double in_flight = InFlightNow(b, now);
    double slots = e.assumed_slots;
    if (b.spec.max_concurrency > 0) slots = b.spec.max_concurrency;
    if (std::isfinite(b.g_max_seqs) && b.g_max_seqs >= 1 &&
        now - b.g_slots_time_ms <= e.gauge_max_age_ms * 100) {
      slots = b.g_max_seqs;  // a configuration value: it ages slowly
    }
    double effective = slots;
    if (std::isfinite(b.g_kv) && now - b.g_kv_time_ms <= e.gauge_max_age_ms &&
        b.g_kv >= e.kv_saturation && fresh) {
      effective = std::clamp(b.g_running, 1.0, slots);  // admits nothing new
    }
    b.in_flight = in_flight;
    b.slots = slots;
    // A request arriving now waits for (in_flight + 1 - slots) / slots of a typical request's
    // time before it gets a slot.
    b.load_factor = 1 + std::max(0.0, in_flight + 1 - effective) / effective;
    // Below the slot limit latency still grows with the batch (continuous batching: every step
    // does more work) and with the prefills queued ahead: the model's elasticity (d log latency /
    // d in-flight, shrunk toward 1 / slots) times the difference between the load a request
    // meets now and the load the evidence was observed at.
    const double dn = in_flight + 1 - (b.obs_load.empty() ? 0.0 : b.obs_load.mean());
    for (size_t k = 0; k < b.elastic_factor.size(); ++k) {
      const DecayedPair& r = model.elasticity[k];
      const double slope =
          std::clamp((r.raw_a() + kElasticityPrior / slots) / (r.raw_b() + kElasticityPrior), 0.0,
                     kMaxElasticity);
      b.elastic_slope[k] = slope;
      b.elastic_factor[k] = std::exp(std::clamp(slope * dn, -kMaxLoadLog, kMaxLoadLog));
    }
    // Pending prefill: the first token of a request arriving now waits for the prompt tokens
    // queued ahead of it and its own. With the evidence's ttft observed behind the mean queue at
    // the sends (pf_at_send), ttft scales by (pending now + prompt) / (mean pending + prompt);
    // the effective prefill rate is the one that makes the evidence consistent:
    // (mean pending + prompt) / median ttft.
    b.prefill_factor = 1;
    if (!b.pf_at_send.empty() && !b.log_ttft.empty() && typical_prompt > 0) {
      b.pf_rate = (b.pf_at_send.mean() + typical_prompt) / std::exp(b.log_ttft.mean());
      b.pf_work = PendingPrefill(b, now);
      b.pf_time_ms = std::max(b.pf_time_ms, now);
      b.prefill_factor = std::exp(std::clamp(
          std::log((b.pf_work + typical_prompt) / (b.pf_at_send.mean() + typical_prompt)),
          -kMaxLoadLog, kMaxLoadLog));
    }
    b.ttft_load_factor = b.pf_at_send.empty() ? b.elastic_factor[0] : b.prefill_factor;
    in_flight_sum += in_flight;
    slots_sum += slots;
  }
  model.utilisation = slots_sum > 0 ? in_flight_sum / slots_sum : 0;
  model.load_dirty = false;
}

void RoutingLearner::Redraw(Model& model, int64_t now, bool all) {
  const EstimatorOptions& e = options_.estimator;
  const auto draws = static_cast<size_t>(e.posterior_draws);
  const int64_t hl = e.half_life_ms;
  const int64_t qhl = e.quality_half_life_ms;
  // Pooled (model-wide) priors: each backend starts from what its peers show, worth
  // prior_samples samples, so a backend with little data is uncertain, not assumed good or bad.
  auto pooled_log = [&](DecayedMoments Backend::*m, double fallback) {
    double sum = 0, weight = 0;
    for (const Backend& b : model.backends) {
      const DecayedMoments& x = b.*m;
      if (x.empty()) continue;
      const double w = std::min(1.0, x.Weight(now, hl));
      sum += w * x.mean();
      weight += w;
    }
    return weight > 0 ? sum / weight : std::log(fallback);
  };
  const double prior_ttft = pooled_log(&Backend::log_ttft, kDefaultTtftMs);
  const double prior_tpot = pooled_log(&Backend::log_tpot, kDefaultTpotMs);
  const double prior_e2e = pooled_log(&Backend::log_e2e, kDefaultE2eMs);
  double fail = 0, total = 0, q = 0, qn = 0;
  for (const Backend& b : model.backends) {
    fail += b.errors.a(now, hl);
    total += b.errors.a(now, hl) + b.errors.b(now, hl);
    q += b.quality.a(now, qhl);
    qn += b.quality.a(now, qhl) + b.quality.b(now, qhl);
  }
  const double n0 = 2 * e.prior_samples;
  const double err0 = std::clamp((fail + 0.05) / (total + 1), 0.001, 0.5);
  const double q0 = qn > 0 ? std::clamp(q / qn, 0.01, 0.99) : 0.5;

  auto beta = [](double a, double b, const float* noise, size_t slot) {
    const double x = GammaFromNoise(a, noise[slot], noise[slot + 1]);
    const double y = GammaFromNoise(b, noise[slot + 2], noise[slot + 3]);
    return x + y > 0 ? x / (x + y) : a / (a + b);
  };
  auto draw_latency = [&](const DecayedMoments& m, double prior, size_t bi, size_t tau_slot,
                          float* out) {
    const NormalGammaPosterior p =
        NormalGammaPosterior::From(m, now, hl, prior, e.prior_samples, e.prior_log_variance);
    const double half_var = p.Variance() / 2;
    const float* noise = &model.noise[bi * draws * kNoise];
    for (size_t i = 0; i < draws; ++i, noise += kNoise) {
      // Precision τ ~ Gamma(α, rate β); mean of the log ~ N(m, 1 / (κ τ)).
      const double tau = std::max(GammaFromNoise(p.alpha, noise[tau_slot], 0.5) / p.beta, 1e-12);
      const double mu =
          p.mean + static_cast<double>(noise[tau_slot + 1]) / std::sqrt(p.kappa * tau);
      out[i] = static_cast<float>(std::exp(std::min(mu + half_var, 700.0)));
    }
  };

  for (size_t bi = 0; bi < model.backends.size(); ++bi) {
    Backend& b = model.backends[bi];
    if (!all && !b.dirty) continue;
    b.dirty = false;
    const size_t off = bi * draws;
    if (model.use_split) {
      draw_latency(b.log_ttft, prior_ttft, bi, kTtftTau, &model.ttft[off]);
      draw_latency(b.log_tpot, prior_tpot, bi, kTpotTau, &model.tpot[off]);
    } else {
      draw_latency(b.log_e2e, prior_e2e, bi, kE2eTau, &model.e2e[off]);
    }
    b.pred_log_sd =
        std::sqrt(NormalGammaPosterior::From(model.use_split ? b.log_tpot : b.log_e2e, now, hl,
                                             model.use_split ? prior_tpot : prior_e2e,
                                             e.prior_samples, e.prior_log_variance)
                      .Variance());
    const float* noise = &model.noise[off * kNoise];
    const double ea = n0 * err0 + b.errors.a(now, hl);
    const double eb = n0 * (1 - err0) + b.errors.b(now, hl);
    for (size_t i = 0; i < draws; ++i) {
      model.perr[off + i] = static_cast<float>(beta(ea, eb, noise + i * kNoise, kErrA));
    }
    if (model.has_quality) {
      const double qa = n0 * q0 + b.quality.a(now, qhl);
      const double qb = n0 * (1 - q0) + b.quality.b(now, qhl);
      for (size_t i = 0; i < draws; ++i) {
        model.qual[off + i] = static_cast<float>(beta(qa, qb, noise + i * kNoise, kQualA));
      }
    }
  }
  ++stats_.recomputes;
}

void RoutingLearner::Refresh(Model& model, int64_t now) {
  bool changed = false;
  if (now >= model.next_gate_ms) {
    model.next_gate_ms = INT64_MAX;
    for (Backend& b : model.backends) {
      changed |= b.gate.Advance(now, options_.gate);
      model.next_gate_ms = std::min(model.next_gate_ms, b.gate.next_change_ms());
    }
  }
  const EstimatorOptions& e = options_.estimator;
  const bool full = model.last_full_ms == INT64_MIN || now < model.last_full_ms ||
                    now - model.last_full_ms >= e.refresh_interval_ms;
  const bool interval_passed = model.last_redraw_ms == INT64_MIN || now < model.last_redraw_ms ||
                               now - model.last_redraw_ms >= e.recompute_interval_ms;
  const bool redraw = full || (model.dirty && interval_passed);
  if (redraw) {
    Redraw(model, now, full);
    model.dirty = false;
    if (full) model.last_full_ms = now;
    // Idleness moves with time: checked at every redraw (at least every refresh_interval); the
    // version changes below, so the tables are rebuilt.
    for (Backend& b : model.backends) b.idle = IsIdle(model, b, now);
  }
  if (redraw || (model.load_dirty && interval_passed)) {
    UpdateLoad(model, now);
    model.last_redraw_ms = now;
    changed = true;
  }
  if (changed) ++model.version;
}

double RoutingLearner::ExpectedCost(const Model& model, const Backend& b, double pt,
                                    double ot) const {
  (void)model;
  // Ratios of two sums that share a time base do not depend on when they are read.
  if (b.spec.has_price()) {
    const double list = (b.spec.price_per_1k_input * pt + b.spec.price_per_1k_output * ot) / 1000;
    // Observed cost over list cost (a price change shows here before the catalogue knows).
    const double ratio = b.cost_list.raw_b() > 0 ? b.cost_list.raw_a() / b.cost_list.raw_b() : 1.0;
    return ratio * list;
  }
  if (b.cost_tokens.raw_b() > 0) {
    return b.cost_tokens.raw_a() / b.cost_tokens.raw_b() * (pt + ot);
  }
  return NAN;
}

const RoutingLearner::Table& RoutingLearner::GetTable(Model& model, Strategy strategy,
                                                      const RequestFeatures& f, int64_t now) {
  Refresh(model, now);
  const uint32_t pb = LengthBucket(f.prompt_tokens);
  const uint32_t ob = LengthBucket(f.expected_output_tokens);
  const uint32_t caps = f.required_capabilities & ((1u << kNumCapabilities) - 1);
  const uint64_t key = static_cast<uint64_t>(strategy) | (static_cast<uint64_t>(caps) << 8) |
                       (static_cast<uint64_t>(pb) << 16) | (static_cast<uint64_t>(ob) << 24);
  const uint64_t tick = ++model.use_clock;
  Table* slot = nullptr;
  for (const std::unique_ptr<Table>& t : model.tables) {
    if (t->key == key) {
      t->last_used = tick;
      if (t->version == model.version) return *t;
      slot = t.get();
      break;
    }
  }
  if (slot == nullptr) {
    if (model.tables.size() < static_cast<size_t>(options_.limits.cache_entries)) {
      model.tables.push_back(std::make_unique<Table>());
      slot = model.tables.back().get();
    } else {
      slot = model.tables.front().get();
      for (const std::unique_ptr<Table>& t : model.tables) {
        if (t->last_used < slot->last_used) slot = t.get();
      }
    }
    slot->last_used = tick;
  }
  slot->key = key;
  slot->version = model.version;
  BuildTable(model, *slot, strategy, caps, pb, ob);
  return *slot;
}

void RoutingLearner::BuildTable(Model& model, Table& t, Strategy strategy, uint32_t caps,
                                uint32_t pb, uint32_t ob) {
  ++stats_.table_builds;
  const EstimatorOptions& e = options_.estimator;
  const HealthGateOptions& g = options_.gate;
  const int64_t hl = e.half_life_ms;
  t.n = 0;
  t.num_gated = 0;
  t.capable = t.incapable = 0;
  t.reason = NoBackendReason::kNone;
  t.panic = false;

  auto typical = [&](const DecayedPair& p, double fallback) {
    return p.raw_b() > 0 ? p.raw_a() / p.raw_b() : fallback;
  };
  const double pt = pb == 0 ? typical(model.typical_prompt, kDefaultPromptTokens) : BucketMid(pb);
  const double ot = ob == 0 ? typical(model.typical_output, kDefaultOutputTokens) : BucketMid(ob);
  const uint64_t min_context = static_cast<uint64_t>(BucketLow(pb)) + BucketLow(ob);

  if (model.backends.empty()) {
    t.reason = NoBackendReason::kNoBackends;
    return;
  }
  // Capability filter, then the gate. A backend whose gauges went silent (it reported them, and
  // none is fresh) is not probed when its ejection ends: a scrape that fails says it is still
  // down, so probes would only fail; it is probed once its gauges resume. A flapping backend
  // (its last up-period between two silences was shorter than max_ejection_time) is probed only
  // once its current up-period, as far as its gauges confirm it (up to the last fresh sample),
  // is longer than its last down-period: a probe sent into the next down-period would only fail
  // (routing/README.md, "Health gate").
  auto held = [&](const Backend& b) {
    if (b.gate.state() == GateState::kEjected) return true;
    if (b.gate.state() != GateState::kProbing || b.g_time_ms == INT64_MIN) return false;
    if (model.last_redraw_ms - b.g_time_ms > e.gauge_max_age_ms) return true;
    return b.flapping && b.g_time_ms - b.up_since_ms <= b.last_down_ms;
  };
  std::array<uint32_t, kMaxBackendsPerModel> capable;
  uint32_t num_capable = 0, routable = 0;
  for (uint32_t i = 0; i < model.backends.size(); ++i) {
    const Backend& b = model.backends[i];
    const bool has_caps = (b.spec.capabilities & caps) == caps;
    const bool fits = b.spec.max_context == 0 || b.spec.max_context >= min_context;
    if (!has_caps || !fits) {
      ++t.incapable;
      continue;
    }
    capable[num_capable++] = i;
    routable += !held(b);
  }
  t.capable = num_capable;
  if (num_capable == 0) {
    t.reason = NoBackendReason::kNoCapableBackend;
    return;
  }
  t.panic = routable == 0 || static_cast<double>(routable) * 100.0 <
                                 g.panic_threshold_percent * static_cast<double>(num_capable);
  std::array<uint32_t, kMaxBackendsPerModel> cand;
  uint32_t n = 0;
  for (uint32_t k = 0; k < num_capable; ++k) {
    const uint32_t i = capable[k];
    const Backend& b = model.backends[i];
    if (!t.panic && held(b)) {
      if (t.num_gated < kMaxRanked) {
        t.gated[t.num_gated++] = {b.spec.name, b.gate.state(), b.gate.reason(),
                                  b.gate.ejected_until_ms(), b.gate.ejections()};
      }
      continue;
    }
    cand[n++] = i;
  }
  // The held ones whose gauges are fresh (up, as far as its scrape says) follow the candidates
  // in `cand`: they get no traffic, but the confidence (is the chosen one the best backend for
  // this request now?) counts them as competitors — a held backend that is up again may well be
  // the best one (routing/README.md, "Decisions"). One whose gauges went silent (down) or that
  // never reported any is left out, as before. Fresh means within gauge_max_age and at most two
  // sample intervals older than the newest gauge of the routed candidates (gauges arrive late,
  // so the routed backends' newest sample time is what "now" looks like in gauge time): a backend
  // whose scrape stopped a few intervals ago is not evidence of being up, though still within
  // gauge_max_age (bench/routing flapping ECE 0.060 / 0.050 -> 0.036 / 0.038, seed 1). Without
  // a known interval (fewer than two samples) or a routed backend with gauges, gauge_max_age
  // alone decides.
  int64_t routed_newest_gauge = INT64_MIN;
  for (uint32_t j = 0; j < n; ++j) {
    routed_newest_gauge = std::max(routed_newest_gauge, model.backends[cand[j]].g_time_ms);
  }
  uint32_t all = n;
  for (uint32_t k = 0; k < num_capable && !t.panic; ++k) {
    const Backend& b = model.backends[capable[k]];
    if (!held(b) || b.g_time_ms == INT64_MIN ||
        model.last_redraw_ms - b.g_time_ms > e.gauge_max_age_ms) {
      continue;
    }
    if (b.g_interval_ms > 0 && routed_newest_gauge != INT64_MIN &&
        routed_newest_gauge - b.g_time_ms > 2 * b.g_interval_ms) {
      continue;  // its scrape went quiet: not evidence of being up
    }
    cand[all++] = capable[k];
  }
  auto probing = [&](uint32_t j) {
    return !t.panic && model.backends[cand[j]].gate.state() == GateState::kProbing;
  };
  // Idle candidates (silent for backend_idle while their peers served: routing/README.md,
  // "Forgetting backends") share the idle share of the traffic and compete neither for P(best)
  // nor for the confidence — as long as a trusted, undrained candidate that is not idle takes the
  // rest. A silent backend's evidence has decayed to the prior, so many of them (the pods of
  // past deploys) would otherwise win most draws between them.
  std::array<bool, kMaxBackendsPerModel> idle{};
  bool active = false;
  for (uint32_t j = 0; j < n; ++j) {
    const Backend& b = model.backends[cand[j]];
    if (probing(j)) continue;
    idle[j] = b.idle;
    active |= !b.idle && b.spec.static_weight > 0;
  }
  if (!active) idle.fill(false);  // all quiet (or only drained ones are not): weighed as usual

  t.weights = strategy == Strategy::kAdaptive
                  ? AdaptiveWeights(static_cast<uint32_t>(pt), static_cast<uint32_t>(ot), caps,
                                    model.utilisation)
                  : FixedWeights(strategy);
  const StrategyWeights w = t.weights;

  // Point cost per candidate; unknown costs take the median of the known ones (neutral).
  std::array<double, kMaxBackendsPerModel> cost;
  std::array<double, kMaxBackendsPerModel> known;
  uint32_t num_known = 0;
  for (uint32_t j = 0; j < all; ++j) {
    cost[j] = ExpectedCost(model, model.backends[cand[j]], pt, ot);
    if (std::isfinite(cost[j]) && cost[j] > 0) known[num_known++] = cost[j];
  }
  double fill = 1;
  if (num_known > 0) {
    std::nth_element(known.begin(), known.begin() + num_known / 2, known.begin() + num_known);
    fill = known[num_known / 2];
  }
  std::array<double, kMaxBackendsPerModel> cost_used;
  for (uint32_t j = 0; j < all; ++j) {
    cost_used[j] = (std::isfinite(cost[j]) && cost[j] > 0) ? cost[j] : fill;
  }

  // Score every posterior draw; count wins: of the expected latencies (P(best): the traffic
  // weights) and of one request's latency (the prediction error added: the confidence).
  const auto draws = static_cast<size_t>(e.posterior_draws);
  std::array<uint32_t, kMaxBackendsPerModel> wins{}, request_wins{};
  std::array<double, kMaxBackendsPerModel> lat_request;
  std::array<double, kMaxBackendsPerModel> sum_lat{}, sum_err{}, sum_q{}, sum_ls{}, sum_qs{},
      sum_cs{}, sum_score{};
  std::array<double, kMaxBackendsPerModel> lat, q, c, score;
  // One request's log-space prediction error per candidate: residual_noise × the spread of its
  // residuals, shrunk toward prediction_noise × σ (worth kResidualPrior residuals); without
  // residual_noise, prediction_noise × σ.
  std::array<double, kMaxBackendsPerModel> noise_sd;
  const int64_t rhl = e.half_life_ms * kResidualHalfLives;
  for (uint32_t j = 0; j < all; ++j) {
    const Backend& b = model.backends[cand[j]];
    const double fixed = e.prediction_noise * b.pred_log_sd;
    noise_sd[j] = fixed;
    if (e.residual_noise > 0 && !b.residual.empty()) {
      const double w = b.residual.Weight(model.last_redraw_ms, rhl);
      const double prior = fixed / e.residual_noise;
      const double var =
          (b.residual.M2(model.last_redraw_ms, rhl) + kResidualPrior * prior * prior) /
          (w + kResidualPrior);
      noise_sd[j] = e.residual_noise * std::sqrt(var);
    }
  }
  for (size_t m = 0; m < draws; ++m) {
    double lmin = std::numeric_limits<double>::infinity(), cmin = lmin, qmax = 0;
    double lmin_request = lmin, cmin_all = lmin, qmax_all = 0;
    for (uint32_t j = 0; j < all; ++j) {
      const Backend& b = model.backends[cand[j]];
      const size_t at = cand[j] * draws + m;
      const double p = std::min(static_cast<double>(model.perr[at]), kMaxErrorRate);
      const double base = model.use_split
                              ? static_cast<double>(model.ttft[at]) * b.ttft_load_factor +
                                    static_cast<double>(model.tpot[at]) * b.elastic_factor[1] * ot
                              : static_cast<double>(model.e2e[at]) * b.elastic_factor[2];
      // Time to a successful answer: latency with load, over the success probability; for one
      // request, times this draw's prediction error (the state a request meets, unseen).
      lat[j] = std::max(base * b.load_factor, kMinLatencyMs) / (1 - p);
      lat_request[j] =
          lat[j] * std::exp(noise_sd[j] * static_cast<double>(model.noise[at * kNoise + kPred]));
      q[j] = (model.has_quality ? static_cast<double>(model.qual[at]) : 1.0) * (1 - p);
      c[j] = cost_used[j] / (1 - p);
      if (idle[j]) {  // scored against the others, competing with none
        sum_err[j] += p;
        continue;
      }
      lmin_request = std::min(lmin_request, lat_request[j]);
      cmin_all = std::min(cmin_all, c[j]);
      qmax_all = std::max(qmax_all, q[j]);
      if (j >= n) continue;  // held: a competitor for the confidence only
      sum_err[j] += p;
      lmin = std::min(lmin, lat[j]);
      cmin = std::min(cmin, c[j]);
      qmax = std::max(qmax, q[j]);
    }
    uint32_t best = 0, best_request = 0;
    while (idle[best]) ++best;  // a candidate that is not idle exists
    double best_request_score = -1;
    for (uint32_t j = 0; j < n; ++j) {
      const double ls = lmin / lat[j];
      const double qs = qmax > 0 ? q[j] / qmax : 1.0;
      const double cs = c[j] > 0 ? cmin / c[j] : 1.0;
      score[j] = w.latency * ls + w.quality * qs + w.cost * cs;
      sum_lat[j] += lat[j];
      sum_q[j] += q[j];
      sum_ls[j] += ls;
      sum_qs[j] += qs;
      sum_cs[j] += cs;
      sum_score[j] += score[j];
      if (!idle[j] && score[j] > score[best]) best = j;
    }
    for (uint32_t j = 0; j < all; ++j) {
      if (idle[j]) continue;
      const double request_score = w.latency * lmin_request / lat_request[j] +
                                   w.quality * (qmax_all > 0 ? q[j] / qmax_all : 1.0) +
                                   w.cost * (c[j] > 0 ? cmin_all / c[j] : 1.0);
      if (request_score > best_request_score) {
        best_request_score = request_score;
        best_request = j;
      }
    }
    ++wins[best];
    if (best_request < n) ++request_wins[best_request];
  }

  // Traffic weights: P(best)^(1/T) × static weight over trusted candidates; probing backends
  // hold the probe fraction each (not in panic, where everything capable is routed).
  const double inv_t = 1.0 / e.temperature;
  const double dm = static_cast<double>(draws);
  uint32_t num_probing = 0;
  double trusted_sum = 0;
  std::array<double, kMaxBackendsPerModel> raw{};
  for (uint32_t j = 0; j < n; ++j) {
    if (probing(j)) {
      ++num_probing;
      continue;
    }
    if (idle[j]) continue;  // the idle share, below
    raw[j] = std::pow(static_cast<double>(wins[j]) / dm, inv_t) *
             model.backends[cand[j]].spec.static_weight;
    trusted_sum += raw[j];
  }
  if (trusted_sum <= 0) {
    // No trusted candidate won a draw (ties, or all drained): spread evenly over the undrained
    // ones (in panic over all).
    for (uint32_t j = 0; j < n; ++j) {
      if (probing(j) || idle[j]) continue;
      raw[j] = (t.panic || model.backends[cand[j]].spec.static_weight > 0) ? 1.0 : 0.0;
      trusted_sum += raw[j];
    }
  }
  if (trusted_sum <= 0 && num_probing == 0) {
    t.reason = NoBackendReason::kAllDrained;
    return;
  }
  // Each probe gets the probe fraction (together at most half); all of it when nothing else is
  // routable.
  const double probe_each =
      num_probing == 0
          ? 0.0
          : (trusted_sum > 0 ? std::min(g.probe_fraction, 0.5 / num_probing) : 1.0 / num_probing);
  // The idle ones get probe_fraction together (at most half of what the probes leave), evenly
  // over the undrained ones: enough that a live backend that merely went unsampled reports again.
  uint32_t idle_undrained = 0;
  for (uint32_t j = 0; j < n; ++j) {
    idle_undrained += idle[j] && model.backends[cand[j]].spec.static_weight > 0;
  }
  const double idle_each =
      idle_undrained == 0
          ? 0.0
          : std::min(g.probe_fraction, 0.5 * (1.0 - probe_each * num_probing)) / idle_undrained;
  const double trusted_share = 1.0 - probe_each * num_probing - idle_each * idle_undrained;
  for (uint32_t j = 0; j < n; ++j) {
    const Backend& b = model.backends[cand[j]];
    BackendScore& s = t.scores[j];
    s.backend = cand[j];
    s.name = b.spec.name;
    s.weight = probing(j) ? probe_each
               : idle[j]  ? (b.spec.static_weight > 0 ? idle_each : 0.0)
                          : (trusted_sum > 0 ? trusted_share * raw[j] / trusted_sum : 0.0);
    s.idle = idle[j];
    s.p_best = static_cast<double>(wins[j]) / dm;
    s.p_best_request = static_cast<double>(request_wins[j]) / dm;
    s.expected_latency_ms = sum_lat[j] / dm;
    s.error_rate = sum_err[j] / dm;
    s.quality = model.has_quality ? sum_q[j] / dm : NAN;
    s.cost_usd = cost[j];
    s.latency_score = sum_ls[j] / dm;
    s.quality_score = sum_qs[j] / dm;
    s.cost_score = sum_cs[j] / dm;
    s.score = sum_score[j] / dm;
    s.in_flight = b.in_flight;
    s.samples = model.use_split ? b.log_ttft.Weight(model.last_redraw_ms, hl)
                                : b.log_e2e.Weight(model.last_redraw_ms, hl);
    if (b.log_ttft.empty() && b.log_e2e.empty()) s.samples = 0;
    s.gate = b.gate.state();
    t.max_context[j] = b.spec.max_context;
  }
  // Normalise (the probe shares and trusted share may not add to exactly 1) and rank.
  double total = 0;
  for (uint32_t j = 0; j < n; ++j) total += t.scores[j].weight;
  if (total <= 0) {
    t.reason = NoBackendReason::kAllDrained;
    return;
  }
  for (uint32_t j = 0; j < n; ++j) t.scores[j].weight /= total;
  // Rank by weight, then by score; keep max_context aligned.
  std::array<uint32_t, kMaxBackendsPerModel> order;
  for (uint32_t j = 0; j < n; ++j) order[j] = j;
  std::sort(order.begin(), order.begin() + n, [&](uint32_t a, uint32_t b) {
    if (t.scores[a].weight != t.scores[b].weight) return t.scores[a].weight > t.scores[b].weight;
    return t.scores[a].score > t.scores[b].score;
  });
  std::array<BackendScore, kMaxBackendsPerModel> sorted;
  std::array<uint32_t, kMaxBackendsPerModel> ctx;
  for (uint32_t j = 0; j < n; ++j) {
    sorted[j] = t.scores[order[j]];
    ctx[j] = t.max_context[order[j]];
  }
  double cum = 0;
  for (uint32_t j = 0; j < n; ++j) {
    t.scores[j] = sorted[j];
    t.max_context[j] = ctx[j];
    cum += sorted[j].weight;
    t.cum[j] = cum;
  }
  t.n = n;
}

void RoutingLearner::Select(ModelId model_id, const RequestFeatures& f, Strategy strategy,
                            int64_t now, Decision* out) {
  out->ok = false;
  out->strategy = strategy;
  out->num_ranked = 0;
  out->num_gated = 0;
  out->panic = false;
  out->capable = out->incapable = 0;
  out->confidence = 0;
  out->weight = 0;
  out->backend_name = {};
  ExpireIdle(now);
  if (model_id >= models_.size() || models_[model_id] == nullptr) {
    out->reason = NoBackendReason::kUnknownModel;
    return;
  }
  Model& model = *models_[model_id];
  const Table& t = GetTable(model, strategy, f, now);
  out->reason = t.reason;
  out->weights = t.weights;
  out->panic = t.panic;
  out->capable = t.capable;
  out->incapable = t.incapable;
  out->num_gated = t.num_gated;
  for (uint32_t i = 0; i < t.num_gated; ++i) out->gated[i] = t.gated[i];
  if (t.n == 0) return;

  // The table filtered context length by the lower bound of the request's length bucket; check
  // the exact length here (rarely excludes anything) and draw among what fits.
  const uint64_t need = static_cast<uint64_t>(f.prompt_tokens) + f.expected_output_tokens;
  double total = t.cum[t.n - 1];
  double excluded_p = 0;  // of the request's P(best)
  bool any_excluded = false;
  for (uint32_t j = 0; j < t.n; ++j) {
    if (t.max_context[j] != 0 && t.max_context[j] < need) {
      any_excluded = true;
      total -= t.scores[j].weight;
      excluded_p += t.scores[j].p_best_request;
    }
  }
  if (any_excluded && total <= 0) {
    out->reason = NoBackendReason::kNoCapableBackend;
    return;
  }
  auto fits = [&](uint32_t j) { return !(t.max_context[j] != 0 && t.max_context[j] < need); };
  // One draw from the weights (among what fits).
  auto draw = [&]() {
    const double u = rng_.Unit() * total;
    double acc = 0;
    for (uint32_t j = 0; j < t.n; ++j) {
      if (any_excluded && !fits(j)) continue;
      acc += t.scores[j].weight;
      if (u < acc) return j;
    }
    for (uint32_t j = t.n; j-- > 0;) {  // rounding at the top end: the last eligible one
      if (fits(j)) return j;
    }
    return t.n;
  };
  uint32_t chosen = draw();
  if (chosen == t.n) {
    out->reason = NoBackendReason::kNoCapableBackend;
    return;
  }
  // Power of d among the weight draws: the one with the lowest expected latency at the load it
  // has now (the table's expectation moved by the sends and outcomes since it was built: queueing
  // for a slot and the elasticity), the first among equals. Probing backends keep their probe
  // share, so a probe draw stands.
  if (options_.estimator.load_choices > 1 && t.n > 1 &&
      t.scores[chosen].gate != GateState::kProbing) {
    const Model& m = *models_[model_id];
    const size_t k_slope = m.use_split ? 1 : 2;
    auto live_latency = [&](uint32_t j) {
      const BackendScore& s = t.scores[j];
      const Backend& b = m.backends[s.backend];
      const double slots = b.slots > 0 ? b.slots : options_.estimator.assumed_slots;
      const double now_in = InFlightNow(b, now);
      const double queue_now = 1 + std::max(0.0, now_in + 1 - slots) / slots;
      const double queue_then = 1 + std::max(0.0, s.in_flight + 1 - slots) / slots;
      const double dn =
          std::clamp(b.elastic_slope[k_slope] * (now_in - s.in_flight), -kMaxLoadLog, kMaxLoadLog);
      return s.expected_latency_ms * queue_now / queue_then * std::exp(dn);
    };
    double best = live_latency(chosen);
    for (int64_t k = 1; k < options_.estimator.load_choices; ++k) {
      const uint32_t j = draw();
      if (j == t.n || j == chosen || t.scores[j].gate == GateState::kProbing) continue;
      const double lj = live_latency(j);
      if (lj < best) {
        best = lj;
        chosen = j;
      }
    }
  }
  const BackendScore& c = t.scores[chosen];
  out->ok = true;
  out->reason = NoBackendReason::kNone;
  out->backend = c.backend;
  out->backend_name = c.name;
  const double p_scale = excluded_p < 1 ? 1.0 / (1.0 - excluded_p) : 1.0;
  out->confidence = std::min(1.0, c.p_best_request * p_scale);
  out->weight = c.weight / total;
  // Ranked alternatives: the table's order, the chosen one always among them.
  uint32_t k = 0;
  bool chosen_in = false;
  for (uint32_t j = 0; j < t.n && k < kMaxRanked; ++j) {
    if (any_excluded && t.max_context[j] != 0 && t.max_context[j] < need) continue;
    out->ranked[k++] = t.scores[j];
    chosen_in |= j == chosen;
  }
  if (!chosen_in) out->ranked[kMaxRanked - 1] = c;
  out->num_ranked = k;
}

void RoutingLearner::FillWeights(const Model& model, const Table& t, Strategy strategy, int64_t now,
                                 RoutingWeights* out) const {
  out->model = model.name;
  out->strategy = strategy;
  out->time_ms = now;
  out->panic = t.panic;
  out->backends.resize(model.backends.size());
  for (size_t i = 0; i < model.backends.size(); ++i) {
    RoutingWeights::Entry& e = out->backends[i];
    e.backend = model.backends[i].spec.name;
    e.weight = 0;
    e.p_best = 0;
    e.gate = model.backends[i].gate.state();
    e.idle = false;
  }
  for (uint32_t j = 0; j < t.n; ++j) {
    RoutingWeights::Entry& e = out->backends[t.scores[j].backend];
    e.weight = t.scores[j].weight;
    e.p_best = t.scores[j].p_best;
    e.idle = t.scores[j].idle;
  }
}

Result<RoutingWeights> RoutingLearner::Weights(std::string_view model_name, Strategy strategy,
                                               int64_t now, const RequestFeatures& features) {
  ExpireIdle(now);
  const ModelId id = FindModel(model_name);
  if (id == kNoModel) return Status::NotFound("no routing model '" + std::string(model_name) + "'");
  Model& model = *models_[id];
  const Table& t = GetTable(model, strategy, features, now);
  RoutingWeights w;
  FillWeights(model, t, strategy, now, &w);
  return w;
}

bool RoutingLearner::PublishIfChanged(ModelId id, Strategy strategy, int64_t now,
                                      RoutingWeights* out) {
  ExpireIdle(now);
  if (num_backends(id) == 0) return false;
  Model& model = *models_[id];
  const Table& t = GetTable(model, strategy, RequestFeatures{}, now);
  Model::Published& last = model.published[static_cast<size_t>(strategy)];
  FillWeights(model, t, strategy, now, out);
  if (last.has) {
    const bool gate_change = [&] {
      if (last.weights.panic != out->panic) return true;
      if (last.weights.backends.size() != out->backends.size()) return true;  // added, removed
      for (const RoutingWeights::Entry& y : out->backends) {
        bool was = false, known = false;
        for (const RoutingWeights::Entry& x : last.weights.backends) {
          if (x.backend != y.backend) continue;
          was = x.gate == GateState::kEjected;
          known = true;
        }
        if (!known || (y.gate == GateState::kEjected) != was) return true;
      }
      return false;
    }();
    if (!gate_change) {
      if (now - last.time_ms < options_.publish.min_interval_ms && now >= last.time_ms) {
        return false;
      }
      if (TotalVariation(last.weights, *out) < options_.publish.min_change) return false;
    }
  }
  last.has = true;
  last.time_ms = now;
  last.weights = *out;
  return true;
}

Result<RoutingLearner::BackendEstimate> RoutingLearner::Estimate(std::string_view model_name,
                                                                 std::string_view backend,
                                                                 int64_t now) const {
  const ModelId id = FindModel(model_name);
  if (id == kNoModel) return Status::NotFound("no routing model '" + std::string(model_name) + "'");
  const Model& model = *models_[id];
  auto it = model.ids.find(backend);
  if (it == model.ids.end()) {
    return Status::NotFound("no backend '" + std::string(backend) + "' for model '" +
                            std::string(model_name) + "'");
  }
  const Backend& b = model.backends[it->second];
  const EstimatorOptions& e = options_.estimator;
  const int64_t hl = e.half_life_ms, qhl = e.quality_half_life_ms;
  auto pooled = [&](DecayedMoments Backend::*m, double fallback) {
    double sum = 0, weight = 0;
    for (const Backend& x : model.backends) {
      if ((x.*m).empty()) continue;
      const double w = std::min(1.0, (x.*m).Weight(now, hl));
      sum += w * (x.*m).mean();
      weight += w;
    }
    return weight > 0 ? sum / weight : std::log(fallback);
  };
  auto post = [&](DecayedMoments Backend::*m, double fallback) {
    return NormalGammaPosterior::From(b.*m, now, hl, pooled(m, fallback), e.prior_samples,
                                      e.prior_log_variance);
  };
  BackendEstimate out;
  const NormalGammaPosterior ttft = post(&Backend::log_ttft, kDefaultTtftMs);
  const NormalGammaPosterior tpot = post(&Backend::log_tpot, kDefaultTpotMs);
  const NormalGammaPosterior e2e = post(&Backend::log_e2e, kDefaultE2eMs);
  out.ttft_ms = std::exp(ttft.mean + ttft.Variance() / 2);
  out.tpot_ms = std::exp(tpot.mean + tpot.Variance() / 2);
  out.e2e_ms = std::exp(e2e.mean + e2e.Variance() / 2);
  out.ttft_samples = ttft.samples;
  out.e2e_samples = e2e.samples;
  out.ttft_log_sd = ttft.MeanStddev();
  const double fa = b.errors.a(now, hl), fb = b.errors.b(now, hl);
  out.error_samples = fa + fb;
  out.error_rate = (fa + 0.05) / (fa + fb + 1);
  const double qa = b.quality.a(now, qhl), qb = b.quality.b(now, qhl);
  out.quality_samples = qa + qb;
  out.quality = qa + qb > 0 ? qa / (qa + qb) : NAN;
  out.in_flight = b.in_flight;
  out.slots = b.slots;
  out.ttft_load_factor = b.load_factor * b.ttft_load_factor;
  out.tpot_load_factor = b.load_factor * b.elastic_factor[1];
  out.e2e_load_factor = b.load_factor * b.elastic_factor[2];
  const double per_s = kLn2 * 1000.0 / static_cast<double>(hl);
  out.sent_rate_per_s = b.sends.a(now, hl) * per_s;
  out.outcome_rate_per_s = b.completions.a(now, hl) * per_s;
  out.gate = b.gate.state();
  out.ejections = b.gate.ejections();
  return out;
}

// ---------------------------------------------------------------------------------------------
// Checkpoints.

namespace {

using Json = nlohmann::json;

// NaN (a gauge never reported) is stored as null.
Json Num(double v) { return std::isnan(v) ? Json(nullptr) : Json(v); }
double NumOf(const Json& j) {
  return j.is_number() ? j.get<double>() : std::numeric_limits<double>::quiet_NaN();
}
Json Save(const DecayedMoments& m) {
  return Json::array({m.raw_weight(), m.mean(), m.raw_m2(), m.as_of_ms()});
}
Json Save(const DecayedPair& p) { return Json::array({p.raw_a(), p.raw_b(), p.as_of_ms()}); }
DecayedMoments MomentsOf(const Json& j) {
  return DecayedMoments::FromRaw(j.at(0).get<double>(), j.at(1).get<double>(),
                                 j.at(2).get<double>(), j.at(3).get<int64_t>());
}
DecayedPair PairOf(const Json& j) {
  return DecayedPair::FromRaw(j.at(0).get<double>(), j.at(1).get<double>(), j.at(2).get<int64_t>());
}

constexpr int kSnapshotVersion = 1;

}  // namespace

std::string RoutingLearner::SnapshotModel(ModelId id) const {
  if (id >= models_.size() || models_[id] == nullptr) return {};
  const Model& m = *models_[id];
  Json j;
  j["v"] = kSnapshotVersion;
  j["model"] = m.name;
  j["typical_prompt"] = Save(m.typical_prompt);
  j["typical_output"] = Save(m.typical_output);
  j["elasticity"] = Json::array();
  for (const DecayedPair& p : m.elasticity) j["elasticity"].push_back(Save(p));
  j["has_quality"] = m.has_quality;
  j["use_split"] = m.use_split;
  Json& backends = j["backends"] = Json::array();
  for (const Backend& b : m.backends) {
    Json o;
    o["name"] = b.spec.name;
    o["learned"] = b.learned;
    o["log_ttft"] = Save(b.log_ttft);
    o["log_tpot"] = Save(b.log_tpot);
    o["log_e2e"] = Save(b.log_e2e);
    o["obs_load"] = Save(b.obs_load);
    o["residual"] = Save(b.residual);
    o["errors"] = Save(b.errors);
    o["quality"] = Save(b.quality);
    o["cost_list"] = Save(b.cost_list);
    o["cost_tokens"] = Save(b.cost_tokens);
    o["sends"] = Save(b.sends);
    o["completions"] = Save(b.completions);
    o["gauges"] = Json::array({Num(b.g_running), Num(b.g_waiting), Num(b.g_max_seqs), Num(b.g_kv),
                               b.g_time_ms, b.g_kv_time_ms, b.g_slots_time_ms, b.g_interval_ms});
    o["silence"] = Json::array({b.up_since_ms, b.last_down_ms, b.resumed, b.flapping});
    o["seen"] = b.last_seen_ms;  // added later: optional when read
    const HealthGate::Saved g = b.gate.Save();
    o["gate"] =
        Json::array({static_cast<int>(g.state), static_cast<int>(g.reason), g.consecutive_failures,
                     g.probe_successes, g.ejections, g.ejected_until_ms, g.interval_start_ms,
                     g.interval_requests, g.interval_failures, g.healthy_since_ms});
    backends.push_back(std::move(o));
  }
  return j.dump();
}

Status RoutingLearner::RestoreModel(std::string_view record) {
  Json j = Json::parse(record, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument("routing checkpoint: not a JSON object");
  }
  if (j.value("v", 0) != kSnapshotVersion) {
    return Status::InvalidArgument("routing checkpoint: unknown version " +
                                   std::to_string(j.value("v", 0)));
  }
  try {
    Model* m = GetOrCreateModel(j.at("model").get<std::string>());
    if (m == nullptr) return Status::Unavailable("routing checkpoint: model limit");
    m->typical_prompt = PairOf(j.at("typical_prompt"));
    m->typical_output = PairOf(j.at("typical_output"));
    for (size_t i = 0; i < m->elasticity.size(); ++i) {
      m->elasticity[i] = PairOf(j.at("elasticity").at(i));
    }
    m->has_quality = j.at("has_quality").get<bool>();
    m->use_split = j.at("use_split").get<bool>();
    for (const Json& o : j.at("backends")) {
      // Created as last seen "never" (its time is set below, and the next ExpireIdle sweeps).
      const std::string name = o.at("name").get<std::string>();
      Backend* b = GetOrCreateBackend(*m, name, INT64_MIN, /*evict=*/false);
      if (b == nullptr) continue;  // beyond the limit (counted by GetOrCreateBackend)
      b->log_ttft = MomentsOf(o.at("log_ttft"));
      b->log_tpot = MomentsOf(o.at("log_tpot"));
      b->log_e2e = MomentsOf(o.at("log_e2e"));
      b->obs_load = MomentsOf(o.at("obs_load"));
      // Added later: a record without it learns the residuals anew.
      if (o.contains("residual")) b->residual = MomentsOf(o.at("residual"));
      b->errors = PairOf(o.at("errors"));
      b->quality = PairOf(o.at("quality"));
      b->cost_list = PairOf(o.at("cost_list"));
      b->cost_tokens = PairOf(o.at("cost_tokens"));
      b->sends = PairOf(o.at("sends"));
      b->completions = PairOf(o.at("completions"));
      const Json& g = o.at("gauges");
      b->g_running = NumOf(g.at(0));
      b->g_waiting = NumOf(g.at(1));
      b->g_max_seqs = NumOf(g.at(2));
      b->g_kv = NumOf(g.at(3));
      b->g_time_ms = g.at(4).get<int64_t>();
      b->g_kv_time_ms = g.at(5).get<int64_t>();
      b->g_slots_time_ms = g.at(6).get<int64_t>();
      // The sample interval was added later: a record without it learns it from the next gauges.
      // Within [0, gauge_max_age] as learned (a checkpoint's value is not trusted further).
      b->g_interval_ms = g.size() > 7 ? std::clamp<int64_t>(g.at(7).get<int64_t>(), 0,
                                                            options_.estimator.gauge_max_age_ms)
                                      : 0;
      const Json& s = o.at("silence");
      b->up_since_ms = s.at(0).get<int64_t>();
      b->last_down_ms = s.at(1).get<int64_t>();
      b->resumed = s.at(2).get<bool>();
      b->flapping = s.at(3).get<bool>();
      const Json& gs = o.at("gate");
      HealthGate::Saved saved;
      const int state = gs.at(0).get<int>(), reason = gs.at(1).get<int>();
      if (state < 0 || state > 2 || reason < 0 || reason > 2) {
        return Status::InvalidArgument("routing checkpoint: bad gate state");
      }
      saved.state = static_cast<GateState>(state);
      saved.reason = static_cast<EjectReason>(reason);
      saved.consecutive_failures = gs.at(2).get<int64_t>();
      saved.probe_successes = gs.at(3).get<int64_t>();
      saved.ejections = gs.at(4).get<int64_t>();
      saved.ejected_until_ms = gs.at(5).get<int64_t>();
      saved.interval_start_ms = gs.at(6).get<int64_t>();
      saved.interval_requests = gs.at(7).get<int64_t>();
      saved.interval_failures = gs.at(8).get<int64_t>();
      saved.healthy_since_ms = gs.at(9).get<int64_t>();
      b->gate.Load(saved);
      // When it was last seen (expiry, idleness). Added later: a record without it takes its
      // newest evidence — the last outcome (completions), gauge or quality sample.
      if (o.contains("seen")) {
        b->last_seen_ms = o.at("seen").get<int64_t>();
      } else {
        b->last_seen_ms = std::max({b->completions.as_of_ms(), b->g_time_ms, b->g_kv_time_ms,
                                    b->g_slots_time_ms, b->quality.as_of_ms()});
      }
      b->seen_at_outcome = m->outcomes;
      if (b->learned && options_.limits.backend_ttl_ms > 0) {
        next_expiry_ms_ = std::min(next_expiry_ms_,
                                   SaturatingAdd(b->last_seen_ms, options_.limits.backend_ttl_ms));
      }
      b->dirty = true;
      m->next_gate_ms = std::min(m->next_gate_ms, b->gate.next_change_ms());
    }
    m->dirty = true;
    m->load_dirty = true;
    m->last_redraw_ms = INT64_MIN;
    ++m->version;
  } catch (const Json::exception& e) {
    return Status::InvalidArgument(std::string("routing checkpoint: ") + e.what());
  }
  return Status::Ok();
}

}  // namespace inferscope::routing
