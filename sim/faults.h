#pragma once

// Faults (scenarios) a simulation injects into instances for a span of simulated time.

#include <cstdint>
#include <string>
#include <string_view>

#include "pipeline/status.h"

namespace inferscope::sim {

enum class FaultKind : uint8_t {
  kKvCacheSmall,    // KV-cache capacity x factor (default 0.1)
  kSlotLimitLow,    // max_num_seqs x factor (default 0.0625: 256 -> 16), at least 1
  kSlowGpu,         // step and prefill times x factor (default 3)
  kPrefixCacheOff,  // no prefix-cache hits (no factor)
  kErrorBurst,      // server errors with probability factor (default 0.3)
  kLoadDouble,      // arrivals x factor (default 2): of the matched instances, or of the fleet
  // The routing scenarios' kinds (bench/routing/README.md):
  kDown,          // hard failure: every request fails fast with server_error (no factor)
  kLatencyDrift,  // step and prefill times x a factor ramping from 1 at START to factor at END
                  // (default 4)
  kBrownout,      // server errors with probability factor (default 0.1) and step and prefill
                  // times x (1 + 10 x factor): 2 at the default
  kPriceChange,   // the price billed x factor (default 3)
  kQualityDrop,   // latent quality x factor (default 0.5)
  kFlapping,      // down during the first half of every period of `factor` seconds (default 30)
};
std::string_view FaultKindName(FaultKind kind);

// One fault: `kind` on the instances whose name matches the glob `instance` (`*` = all; for
// load_double, `*` or `fleet` multiply the fleet's arrivals instead of instances' shares), during
// [start_ms, end_ms) of simulated time.
struct Fault {
  FaultKind kind = FaultKind::kSlowGpu;
  std::string instance;
  double start_ms = 0;
  double end_ms = 0;
  double factor = 1;

  bool ActiveAt(double t_ms) const { return t_ms >= start_ms && t_ms < end_ms; }
  bool FleetWide() const { return instance == "*" || instance == "fleet"; }
  bool Matches(std::string_view instance_name) const;
  // Whether this fault makes the instance refuse every request at `t_ms` (down, or flapping in a
  // down half-period).
  bool DownAt(double t_ms) const;
};

// The default factor of each kind (1 for prefix_cache_off).
double DefaultFactor(FaultKind kind);

// Parses `kind:instance:START-END[:factor]`, e.g. `kv_cache_small:vllm-0:60s-180s` or
// `slow_gpu:tgi-*:1m-2m:4`. START and END are durations with a unit (ms, s, m, h) from the start
// of the simulation, END > START. The factor must be > 0 (error_burst and brownout: a probability
// in (0, 1]; prefix_cache_off and down take none). Errors name the spec and the part at fault.
Result<Fault> ParseFault(std::string_view spec);

}  // namespace inferscope::sim
