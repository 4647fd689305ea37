#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pipeline/status.h"

namespace inferscope {

// One storage tier of the state store: buckets of `resolution_ms` kept for `retention_ms`.
//
// Tier 0 holds the panes the window operator writes (its resolution is the pane length); every
// further tier holds rollups of the tier before it. See docs/RETENTION.md for the exact rules.
struct TierSpec {
  int64_t resolution_ms = 0;  // bucket length; > 0, a multiple of the previous tier's
  int64_t retention_ms = 0;   // how long a bucket is kept after its end; 0 = forever

  // retention_ms, with 0 (forever) as INT64_MAX.
  int64_t EffectiveRetentionMs() const;
  // The latest bucket end that is expired at `now_ms`: a bucket [s, e) is expired when
  // e <= ExpiredThroughMs(now_ms). INT64_MIN when the tier keeps data forever.
  int64_t ExpiredThroughMs(int64_t now_ms) const;
  // "10s", "1m", "1h" (the resolution); "pane" when the resolution is unknown (0).
  std::string Name() const;

  bool operator==(const TierSpec&) const = default;
};

// 10 s / 6 h, 1 m / 7 d, 1 h / 90 d: what a topology gets when its `state:` section names no tiers.
std::vector<TierSpec> DefaultTiers();

// Checks a tier list (finest first): at least one and at most kMaxTiers tiers; every resolution > 0
// and a multiple of the previous one (and larger); every retention at least one bucket and not
// shorter than the previous tier's; and every tier but the last keeps its buckets long enough to be
// rolled up: retention[i] >= resolution[i+1] + rollup_delay_ms + maintenance_interval_ms. The
// message names the offending tier as "tiers[i].field"; `problem`, when given, receives the same
// in parts (index -1 for rollup_delay and maintenance_interval) so a config loader can locate it.
struct TierProblem {
  int index = -1;
  std::string field;
  std::string message;
};
Status ValidateTiers(const std::vector<TierSpec>& tiers, int64_t rollup_delay_ms,
                     int64_t maintenance_interval_ms, TierProblem* problem = nullptr);
inline constexpr size_t kMaxTiers = 8;

// One piece of a read plan: the buckets of tier `tier` whose start is in [from_ms, to_ms).
struct TierSegment {
  size_t tier = 0;
  int64_t from_ms = 0;
  int64_t to_ms = 0;
  bool operator==(const TierSegment&) const = default;
};

// Plans a read of [from_ms, to_ms) in steps of `step_ms` (from and to multiples of the step) from
// the tiers, coarsest first. A tier is eligible when its resolution divides the step (so every
// bucket lies inside one step; tier 0 with an unknown resolution is always eligible) and is at most
// `max_resolution_ms`. Walking forward from from_ms, each segment uses the coarsest eligible tier
// that has rolled up past the cursor (`rolled_through_ms[i]`, StateStore::RolledThroughMs), up to
// where that tier is rolled up; tier 0 is always complete. Coarser tiers keep data at least as long
// as finer ones, so the coarsest eligible tier is also the one that reaches furthest back. Returns
// no segment when no tier is eligible.
std::vector<TierSegment> PlanTierRead(const std::vector<TierSpec>& tiers,
                                      const std::vector<int64_t>& rolled_through_ms,
                                      int64_t from_ms, int64_t to_ms, int64_t step_ms,
                                      int64_t max_resolution_ms);

// The shortest exact spelling of a duration: "250ms", "10s", "1m", "90m", "1h", "7d".
std::string FormatDurationMs(int64_t ms);

}  // namespace inferscope
