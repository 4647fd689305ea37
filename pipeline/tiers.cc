#include "pipeline/tiers.h"

#include <algorithm>
#include <limits>

namespace inferscope {

int64_t TierSpec::EffectiveRetentionMs() const {
  return retention_ms == 0 ? std::numeric_limits<int64_t>::max() : retention_ms;
}

int64_t TierSpec::ExpiredThroughMs(int64_t now_ms) const {
  if (retention_ms == 0) return std::numeric_limits<int64_t>::min();
  return now_ms - retention_ms;
}

std::string TierSpec::Name() const {
  return resolution_ms == 0 ? std::string("pane") : FormatDurationMs(resolution_ms);
}

std::vector<TierSpec> DefaultTiers() {
  constexpr int64_t kHour = 3'600'000;
  constexpr int64_t kDay = 24 * kHour;
  return {{10'000, 6 * kHour}, {60'000, 7 * kDay}, {kHour, 90 * kDay}};
}

std::vector<TierSegment> PlanTierRead(const std::vector<TierSpec>& tiers,
                                      const std::vector<int64_t>& rolled_through_ms,
                                      int64_t from_ms, int64_t to_ms, int64_t step_ms,
                                      int64_t max_resolution_ms) {
  std::vector<size_t> eligible;  // coarsest first
  for (size_t i = tiers.size(); i-- > 0;) {
    const int64_t res = tiers[i].resolution_ms;
    if (res == 0 ? i == 0 : (step_ms % res == 0 && res <= max_resolution_ms)) eligible.push_back(i);
  }
  std::vector<TierSegment> plan;
  if (eligible.empty()) return plan;
  int64_t cursor = from_ms;
  while (cursor < to_ms) {
    size_t chosen = eligible.back();
    for (size_t i : eligible) {
      if (i == 0 || (i < rolled_through_ms.size() && rolled_through_ms[i] > cursor)) {
        chosen = i;
        break;
      }
    }
    int64_t end = to_ms;
    if (chosen != 0) {
      end = std::min(to_ms, chosen < rolled_through_ms.size() ? rolled_through_ms[chosen] : 0);
    }
    if (end <= cursor) {
      // Only tiers that are not rolled up this far remain eligible: they hold nothing from here.
      plan.push_back({chosen, cursor, to_ms});
      break;
    }
    plan.push_back({chosen, cursor, end});
    cursor = end;
  }
  return plan;
}

std::string FormatDurationMs(int64_t ms) {
  struct Unit {
    int64_t ms;
    const char* suffix;
  };
  static constexpr Unit kUnits[] = {
      {86'400'000, "d"}, {3'600'000, "h"}, {60'000, "m"}, {1'000, "s"}};
  if (ms > 0) {
    for (const Unit& unit : kUnits) {
      if (ms % unit.ms == 0) return std::to_string(ms / unit.ms) + unit.suffix;
    }
  }
  return std::to_string(ms) + "ms";
}

Status ValidateTiers(const std::vector<TierSpec>& tiers, int64_t rollup_delay_ms,
                     int64_t maintenance_interval_ms, TierProblem* problem) {
  auto fail = [problem](int i, const std::string& field, const std::string& message) {
    if (problem != nullptr) *problem = {i, field, message};
    std::string where = i < 0 ? field : "tiers[" + std::to_string(i) + "]." + field;
    return Status::InvalidArgument(where + ": " + message);
  };
  auto error = [&fail](size_t i, const char* field, const std::string& message) {
    return fail(static_cast<int>(i), field, message);
  };
  if (tiers.empty()) return fail(-1, "tiers", "at least one tier is required");
  if (tiers.size() > kMaxTiers) {
    return fail(-1, "tiers",
                "at most " + std::to_string(kMaxTiers) + " tiers are allowed, got " +
                    std::to_string(tiers.size()));
  }
  if (rollup_delay_ms < 0) return fail(-1, "rollup_delay", "must not be negative");
  if (maintenance_interval_ms < 0) return fail(-1, "maintenance_interval", "must not be negative");
  for (size_t i = 0; i < tiers.size(); ++i) {
    const TierSpec& t = tiers[i];
    if (t.resolution_ms <= 0) return error(i, "resolution", "must be positive");
    if (t.retention_ms < 0) return error(i, "retention", "must not be negative");
    if (t.retention_ms != 0 && t.retention_ms < t.resolution_ms) {
      return error(i, "retention",
                   FormatDurationMs(t.retention_ms) + " is shorter than one bucket (" +
                       FormatDurationMs(t.resolution_ms) + ")");
    }
    if (i == 0) continue;
    const TierSpec& prev = tiers[i - 1];
    if (t.resolution_ms <= prev.resolution_ms || t.resolution_ms % prev.resolution_ms != 0) {
      return error(i, "resolution",
                   FormatDurationMs(t.resolution_ms) +
                       " must be a larger multiple of the previous tier's resolution (" +
                       FormatDurationMs(prev.resolution_ms) + ")");
    }
    if (t.EffectiveRetentionMs() < prev.EffectiveRetentionMs()) {
      return error(i, "retention",
                   "must not be shorter than the previous tier's retention (" +
                       (prev.retention_ms == 0 ? std::string("forever")
                                               : FormatDurationMs(prev.retention_ms)) +
                       ")");
    }
    // A fine bucket must outlive the moment its coarse bucket becomes final (watermark past the
    // coarse end + rollup_delay) by one maintenance interval, or the rollup would miss it.
    const int64_t needed = t.resolution_ms + rollup_delay_ms + maintenance_interval_ms;
    if (prev.EffectiveRetentionMs() < needed) {
      return error(i - 1, "retention",
                   FormatDurationMs(prev.retention_ms) + " is too short to roll up into " +
                       FormatDurationMs(t.resolution_ms) +
                       " buckets; it must be at least the next resolution + rollup_delay + "
                       "maintenance_interval (" +
                       FormatDurationMs(needed) + ")");
    }
  }
  return Status::Ok();
}

}  // namespace inferscope
