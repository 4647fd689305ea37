#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bottlenecks/bottleneck.h"
#include "pipeline/config.h"
#include "pipeline/status.h"

namespace inferscope {

// The pure classification core: what an instance's evidence window says about each bottleneck
// type, judged against absolute levels and against its peers, and the causal order among the
// types that hold. No state, no clock, no allocation per call (the operator and, later, the
// stateless POST /v1/analysis/detect-bottlenecks share it). Rules, defaults and the causal graph
// are documented in docs/BOTTLENECKS.md.

// Severity levels of one rule: `low` is the enter level, then medium, high, critical; `exit` is
// the level a raised bottleneck must be back beyond to count as clear. For a rule where higher
// is worse the levels ascend and exit < low; where lower is worse they descend and exit > low.
// Between exit and low the verdict is "hold": it neither raises nor clears (hysteresis).
struct RuleLevels {
  double low = 0;
  double medium = 0;
  double high = 0;
  double critical = 0;
  double exit = 0;
  bool higher_is_worse = true;

  // Severity reached by `value`; kNone below (above, when lower is worse) `low`.
  BottleneckSeverity SeverityOf(double value) const;
  // Whether `value` is back beyond `exit` (clear).
  bool Clears(double value) const { return higher_is_worse ? value <= exit : value >= exit; }
  // The level of `severity` (low for kNone).
  double LevelOf(BottleneckSeverity severity) const;
  // `name` prefixes the message ("queue_buildup: levels must ascend").
  Status Validate(std::string_view name) const;
};

// A configured host/GPU gauge judged by RESOURCE_SATURATION.
struct SaturationGauge {
  std::string metric;    // gauge name, e.g. "gpu_utilization"
  bool use_max = false;  // `stat: max` (default `mean` over the evidence window)
  RuleLevels levels;     // ascending (higher is worse)
};
inline constexpr size_t kMaxSaturationGauges = 8;

// Every threshold of the classifier, with the documented defaults (docs/BOTTLENECKS.md).
struct BottleneckOptions {
  // Requests (e2e events) an evidence window needs before latency, error and cache rules judge it.
  // Default 20; >= 1.
  int64_t min_requests = 20;

  // MEMORY_PRESSURE: kv_cache_usage mean >= kv_enter with preemptions; severity from the
  // preemption rate (per second, over the evidence window). Clear when kv mean <= kv_exit
  // (0 <= kv_exit < kv_enter <= 1); above it the verdict holds, with or without preemptions, so a
  // cache hovering at kv_enter (preemptions in bursts) is one episode. With `kv_quiet_clears`
  // (topology `quiet_clears`, default false) a window whose preemption rate is at most
  // preemption_rate.exit clears too — the earlier rule, which splits a hover into episodes.
  double kv_enter = 0.85;
  double kv_exit = 0.50;
  bool kv_quiet_clears = false;
  RuleLevels preemption_rate{0.01, 0.2, 1.0, 5.0, 0.0, true};

  // HIGH_LATENCY (absolute): p95 SLOs in ms (0 disables one); levels are multiples of the SLO.
  double ttft_p95_slo_ms = 2000;
  double tpot_p95_slo_ms = 200;
  double e2e_p95_slo_ms = 60000;
  RuleLevels latency{1.0, 1.5, 2.5, 5.0, 0.8, true};

  // Peer-relative judgement (HIGH_LATENCY on ttft p50 and tpot p50, LOW_THROUGHPUT on the decode
  // rate): levels are multiples of the peers' median (for throughput: median / value). Judged
  // only with at least `min_peers` peers, and for latency only when the difference is at least
  // `peer_min_delta_ms`.
  RuleLevels peer{1.6, 2.0, 3.0, 5.0, 1.3, true};
  int64_t min_peers = 2;
  double peer_min_delta_ms = 5;

  // LOW_THROUGHPUT: generation_tokens_per_s / num_requests_running (means over the window), in
  // tokens/s per running request; judged when num_requests_running mean >= min_running.
  // Calibrated on the serving model (docs/BOTTLENECKS.md, "Scenarios"): a healthy 8B instance
  // at its full 256-request batch with the whole chunked-prefill budget in use decodes ~4.5
  // tokens/s per request, so the levels sit below that.
  RuleLevels throughput{3.0, 2.0, 1.0, 0.5, 5.0, false};
  double min_running = 1;
  // The peer judgement of the decode rate holds (neither raises nor clears) while the instance
  // runs more than this multiple of its peers' median running requests: a larger batch decodes
  // each request more slowly on a healthy GPU (an overloaded instance is a queue, not a slow GPU).
  double peer_max_running_ratio = 3;

  // QUEUE_BUILDUP: num_requests_waiting mean / max(num_requests_running mean, 1); judged when the
  // waiting mean is >= min_waiting. A queue that grew by >= queue_growth × that denominator from
  // the first to the last pane of the window raises at least LOW.
  RuleLevels queue{0.25, 0.5, 1.0, 2.0, 0.1, true};
  double min_waiting = 4;
  double queue_growth = 0.5;

  // CACHE_INEFFICIENCY: prefix-cache hit rate / expected hit rate, where expected is the larger of
  // `expected_hit_rate` (configured; 0: none) and the peers' median; judged only when expected >=
  // min_expected_hit_rate (prompts do repeat).
  double expected_hit_rate = 0;
  double min_expected_hit_rate = 0.2;
  // A hit rate is a mean over the window's requests, noisy when they are few (a 30 s window of 2.5
  // requests/s). A flag is raised only when the rate's upper confidence bound, hit + z * se with
  // se = sqrt(max(hit (1 - hit), (1 - 1/n) / n) / n) over n requests (the largest variance a [0, 1]
  // value with that mean can have), is below the low level as well; the severity comes from the
  // hit rate itself. 0 judges the hit rate alone. Default 2.
  double confidence_z = 2;
  RuleLevels cache{0.5, 0.35, 0.2, 0.05, 0.7, false};

  // ERROR_SPIKE: errors / requests over the window, with at least min_error_requests requests.
  RuleLevels errors{0.05, 0.1, 0.2, 0.5, 0.02, true};
  int64_t min_error_requests = 20;

  // RESOURCE_SATURATION: configured gauges (at most kMaxSaturationGauges). Default
  // gpu_utilization (0.95 / 0.98 / 0.99 / 1.0, exit 0.85) and gpu_memory_used_fraction
  // (0.97 / 0.98 / 0.99 / 1.0, exit 0.9).
  std::vector<SaturationGauge> saturation = DefaultSaturationGauges();

  static std::vector<SaturationGauge> DefaultSaturationGauges();
  Status Validate() const;
};

// Reads the rule options of the classifier's topology `options` node into `*out` (absent fields
// keep `out`'s values): `min_requests`, `memory_pressure`, `high_latency`, `peer`,
// `low_throughput`, `queue_buildup`, `cache_inefficiency`, `error_spike`, `resource_saturation`.
// Other fields of `node` are not looked at (the operator checks them). Errors name file, line and
// field.
Status ParseBottleneckOptions(const ConfigNode& node, BottleneckOptions* out);
// The option fields ParseBottleneckOptions reads.
inline constexpr std::array<std::string_view, 9> kBottleneckOptionFields = {
    "min_requests",       "memory_pressure", "high_latency",       "peer",
    "low_throughput",     "queue_buildup",   "cache_inefficiency", "error_spike",
    "resource_saturation"};

// The metrics the classifier reads (names as window_aggregate and the metric contract give them).
enum class WindowMetric : uint8_t {
  kTtft = 0,          // ttft_ms
  kTpot,              // tpot_ms
  kE2e,               // e2e_ms (its events/errors count every request)
  kPromptTokens,      // prompt_tokens
  kCachedTokens,      // cached_tokens
  kRunning,           // num_requests_running
  kWaiting,           // num_requests_waiting
  kKvUsage,           // kv_cache_usage
  kPreemptions,       // num_preemptions (count per gauge interval)
  kPrefixHitRate,     // prefix_cache_hit_rate
  kGenTokensPerS,     // generation_tokens_per_s
  kPromptTokensPerS,  // prompt_tokens_per_s
  kMaxNumSeqs,        // max_num_seqs
  kKvCapacity,        // kv_cache_capacity_tokens
};
inline constexpr size_t kNumWindowMetrics = 14;
std::string_view WindowMetricName(WindowMetric metric);

// One metric over the evidence window (merged panes). Quantiles are NaN without values.
struct MetricWindow {
  uint64_t count = 0;   // values
  uint64_t events = 0;  // requests (request metrics)
  uint64_t errors = 0;
  double sum = 0, mean = 0, max = 0, last = 0;
  double p50 = NAN, p95 = NAN, p99 = NAN;
  double first_mean = 0;  // mean of the earliest pane of the window with values
  double last_mean = 0;   // mean of the latest one
  bool present() const { return count > 0; }
};

// What the classifier sees of one (instance, model): its metrics merged over the evidence window
// [start_ms, end_ms).
struct InstanceWindow {
  int64_t start_ms = 0;
  int64_t end_ms = 0;
  std::array<MetricWindow, kNumWindowMetrics> metrics{};
  std::array<MetricWindow, kMaxSaturationGauges> saturation{};  // by BottleneckOptions index
  const MetricWindow& Get(WindowMetric m) const { return metrics[static_cast<size_t>(m)]; }
  MetricWindow& Mutable(WindowMetric m) { return metrics[static_cast<size_t>(m)]; }
  double seconds() const { return static_cast<double>(end_ms - start_ms) / 1000.0; }
};

// The values compared with peers, NaN where the instance cannot be judged (too few requests, no
// running requests, no prompt tokens).
struct PeerSample {
  double ttft_p50 = NAN;
  double tpot_p50 = NAN;
  double decode_rate = NAN;  // generation tokens/s per running request
  double hit_rate = NAN;     // prefix-cache hit rate
  double running = NAN;      // num_requests_running mean
};
inline constexpr size_t kNumPeerValues = 5;
PeerSample PeerSampleOf(const InstanceWindow& window, const BottleneckOptions& options);

// The median of one value over an instance's peers, and how many peers had it.
struct PeerValue {
  double median = NAN;
  int peers = 0;
};
struct PeerView {
  PeerValue ttft_p50, tpot_p50, decode_rate, hit_rate, running;
};
// For each sample, the medians of the *other* samples' values (the peers of the same model judged
// at the same pane end). `out` must have samples.size() entries; `scratch` is reused (no
// allocation once it has grown). O(n log n).
void ComputePeerViews(std::span<const PeerSample> samples, std::span<PeerView> out,
                      std::vector<std::pair<double, uint32_t>>& scratch);

// One rule's verdict for one evidence window.
enum class Judgement : uint8_t {
  kNotJudged = 0,  // no data or too little (an idle instance)
  kClear,          // back beyond the exit level
  kHold,           // between exit and enter: keeps the current state
  kActive,         // beyond the enter level
};
struct RuleVerdict {
  Judgement judgement = Judgement::kNotJudged;
  BottleneckSeverity severity = BottleneckSeverity::kNone;  // when kActive
  std::string_view metric;                                  // static strings
  std::string_view stat;
  double value = NAN;
  double threshold = NAN;
  BottleneckBasis basis = BottleneckBasis::kAbsolute;
  double peer_median = NAN;
  double aux = NAN;  // a second figure for the description (preemptions/s, slot limit, ...)
};
using RuleVerdicts = std::array<RuleVerdict, kNumBottleneckTypes>;

// Judges every rule on one evidence window. Pure; allocates nothing.
void ClassifyInstance(const InstanceWindow& window, const PeerView& peers,
                      const BottleneckOptions& options, RuleVerdicts* out);

// One line describing an active (or clear) verdict, e.g. "ttft_ms p95 = 3120 over 30s, above the
// SLO 2000 (1.56x)".
std::string DescribeVerdict(BottleneckType type, const RuleVerdict& verdict, int64_t window_ms);

// The causal graph (docs/BOTTLENECKS.md): whether `cause` directly causes `effect`.
bool Causes(BottleneckType cause, BottleneckType effect);

// The root and chain of one active type.
struct CausalPath {
  BottleneckType root = BottleneckType::kHighLatency;
  std::array<BottleneckType, kNumBottleneckTypes> chain{};  // root first, the type last
  uint8_t length = 0;
};
// Given the active types (bit i set: type i active) and their severities, fills `paths` for every
// active type (through active types only; the longest chain from the preferred root) and returns
// the primary: the preferred root — most severe, ties broken by causal rank (enum order).
// Undefined for an empty mask.
BottleneckType CausalOrder(uint32_t active_mask,
                           const std::array<BottleneckSeverity, kNumBottleneckTypes>& severity,
                           std::array<CausalPath, kNumBottleneckTypes>* paths);

}  // namespace inferscope
