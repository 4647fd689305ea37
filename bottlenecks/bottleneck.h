#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/result_kind.h"

namespace inferscope {

// What limits an inference instance (docs/BOTTLENECKS.md). The order is the causal rank used to
// break ties between several roots (a lower value is named first).
enum class BottleneckType : uint8_t {
  kMemoryPressure = 0,  // KV cache full, requests preempted
  kResourceSaturation,  // a host/GPU gauge (gpu_utilization, ...) at its limit
  kCacheInefficiency,   // prefix-cache hit rate low where prompts repeat
  kLowThroughput,       // decode tokens/s per running request low for the load
  kQueueBuildup,        // waiting requests high relative to running ones
  kErrorSpike,          // error ratio over a minimum request count
  kHighLatency,         // ttft / tpot / e2e percentile above an SLO or far above peers
};
inline constexpr int kNumBottleneckTypes = 7;

// Severity, ordered: a larger value is more severe. kNone: not active.
enum class BottleneckSeverity : uint8_t { kNone = 0, kLow, kMedium, kHigh, kCritical };

// kRetracted: raised early (on the open pane, `early: true`) and not confirmed by the closed pane;
// stored and expired like a resolution.
enum class BottleneckState : uint8_t { kActive = 0, kResolved, kRetracted };

// What the threshold was measured against: a configured absolute level, or the median of the
// instance's peers (other instances of the same model judged at the same pane end).
enum class BottleneckBasis : uint8_t { kAbsolute = 0, kPeer };

// Which change of a bottleneck a result reports (results are changes, like alerts).
enum class BottleneckChange : uint8_t {
  kRaised = 0,       // became active (after `for`)
  kSeverityChanged,  // still active, another severity held for `for` / `clear_for`
  kPrimaryChanged,   // still active; its root cause or its primary flag changed
  kResolved,         // clear for `clear_for`, or no data for `idle_expiry`
  kConfirmed,        // raised early (open pane); the closed pane confirmed it (`early` now false)
  kRetracted,        // raised early; the closed pane (or no data) did not confirm it
};
inline constexpr size_t kNumBottleneckChanges = 6;

// "MEMORY_PRESSURE", "RESOURCE_SATURATION", "CACHE_INEFFICIENCY", "LOW_THROUGHPUT",
// "QUEUE_BUILDUP", "ERROR_SPIKE", "HIGH_LATENCY".
std::string_view BottleneckTypeName(BottleneckType type);
std::optional<BottleneckType> ParseBottleneckType(std::string_view name);
// "NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL".
std::string_view BottleneckSeverityName(BottleneckSeverity severity);
std::optional<BottleneckSeverity> ParseBottleneckSeverity(std::string_view name);
// "active", "resolved", "retracted".
std::string_view BottleneckStateName(BottleneckState state);
std::optional<BottleneckState> ParseBottleneckState(std::string_view name);
// "absolute", "peer".
std::string_view BottleneckBasisName(BottleneckBasis basis);
std::optional<BottleneckBasis> ParseBottleneckBasis(std::string_view name);
// "raised", "severity_changed", "primary_changed", "resolved", "confirmed", "retracted".
std::string_view BottleneckChangeName(BottleneckChange change);
std::optional<BottleneckChange> ParseBottleneckChange(std::string_view name);

// One bottleneck state change of one (instance, model), as the classifier emits it and the stream
// and store sinks publish and keep it. Changes are rare next to panes, so this type owns its
// strings.
struct Bottleneck {
  std::string instance;
  std::string model;
  std::string engine;  // vllm, sglang, tgi, ... (classifier option `engines`, or the name prefix)
  BottleneckType type = BottleneckType::kHighLatency;
  BottleneckSeverity severity = BottleneckSeverity::kNone;
  BottleneckState state = BottleneckState::kActive;
  BottleneckChange change = BottleneckChange::kRaised;
  // True for the one bottleneck of the instance named as what limits it: the root cause, not a
  // symptom (docs/BOTTLENECKS.md, "Causal order").
  bool primary = false;
  // The root cause of this bottleneck among the instance's active ones (itself when it is a
  // root), and the causal chain from that root to this type (root first, this type last).
  BottleneckType root = BottleneckType::kHighLatency;
  std::vector<BottleneckType> chain;
  std::string metric;    // the metric judged ("kv_cache_usage", "ttft_ms", ...)
  std::string stat;      // its statistic over the evidence window ("mean", "p95", "ratio", ...)
  double value = 0;      // the observed value
  double threshold = 0;  // the level it was compared with (for peer: peer_ratio × peer median)
  BottleneckBasis basis = BottleneckBasis::kAbsolute;
  double peer_median = 0;       // the peers' median of `value` (NaN for an absolute judgement)
  int64_t window_start_ms = 0;  // the evidence window (event time)
  int64_t window_end_ms = 0;
  int64_t active_since_ms = 0;  // event time the condition started to hold
  int64_t detected_at_ms = 0;   // wall-clock time of this change
  std::string description;      // one human-readable line
  // True while the bottleneck was raised by the open pane (bottleneck_classify `early: true`) and
  // no closed pane has confirmed it yet; a retraction keeps it true. False for everything else.
  bool early = false;
};

// A stable id of one (instance, model, type): FNV-1a (64-bit) over the names and the type name,
// each followed by a 0 byte. The store's current-state key and API links use it.
uint64_t BottleneckId(std::string_view instance, std::string_view model, BottleneckType type);

// The chain as "MEMORY_PRESSURE > QUEUE_BUILDUP > HIGH_LATENCY".
std::string FormatChain(const std::vector<BottleneckType>& chain);

namespace kind {
// The result kind of the bottleneck classifier (pipeline/result_kind.h).
struct Bottleneck {
  using Value = ::inferscope::Bottleneck;
  static constexpr std::string_view kName = "bottleneck";
  static constexpr std::string_view kDescription =
      "A bottleneck state change of one instance (bottlenecks/bottleneck.h)";
};
}  // namespace kind

}  // namespace inferscope
