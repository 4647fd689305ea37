#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace inferscope {

// What kind of evidence raised an alert. Detectors report the first six; static threshold rules
// report kThreshold.
enum class AnomalyType : uint8_t {
  kNone = 0,
  kSpike,
  kDip,
  kLevelShift,
  kDrift,
  kSeasonalBreak,
  kRateOfChange,
  kThreshold,
};
inline constexpr int kNumAnomalyTypes = 8;

// Alert severity, ordered: a larger value is more severe.
enum class Severity : uint8_t {
  kNone = 0,
  kInfo,
  kWarning,
  kCritical,
  kEmergency,
};
inline constexpr int kNumSeverities = 5;

enum class AlertState : uint8_t {
  kPending = 0,  // condition holds, `for` duration not reached yet (not published)
  kFiring,
  kResolved,
  // An alert raised early (on an open pane, `early: true` rules) that the closed pane did not
  // confirm: withdrawn. Terminal, like resolved.
  kRetracted,
};

// "spike", "dip", "level_shift", "drift", "seasonal_break", "rate_of_change", "threshold"
// ("none" for kNone).
std::string_view AnomalyTypeName(AnomalyType type);
std::optional<AnomalyType> ParseAnomalyType(std::string_view name);
// "none", "info", "warning", "critical", "emergency".
std::string_view SeverityName(Severity severity);
std::optional<Severity> ParseSeverity(std::string_view name);
// "pending", "firing", "resolved", "retracted".
std::string_view AlertStateName(AlertState state);
std::optional<AlertState> ParseAlertState(std::string_view name);

// One alert state change, as operators emit it and sinks publish and store it. Alerts are rare
// next to events, so this type owns its strings.
struct Alert {
  uint64_t fingerprint = 0;  // hash of rule/detector name + series labels; stable across restarts
  AlertState state = AlertState::kFiring;
  AnomalyType type = AnomalyType::kNone;
  Severity severity = Severity::kNone;
  std::string rule;      // the rule or detector that raised it
  std::string instance;  // series labels, as names
  std::string model;
  std::string metric;
  std::string stat;     // which statistic of the window was judged ("p95", "mean", ...)
  double value = 0;     // the observed value
  double expected = 0;  // baseline / expected value
  double lower = 0;     // expected range
  double upper = 0;
  // Threshold rules: the threshold of this alert's severity (the critical level on a critical
  // alert); NaN for detectors and from records written before it existed.
  double limit = std::numeric_limits<double>::quiet_NaN();
  double score = 0;             // anomaly score in [0, 1]
  int64_t window_start_ms = 0;  // event-time window that carried the evidence
  int64_t window_end_ms = 0;
  int64_t event_time_ms = 0;    // latest event time of that evidence
  int64_t detected_at_ms = 0;   // wall-clock time of detection
  int64_t active_since_ms = 0;  // when the condition first held (event time)
  std::string message;          // one human-readable line
  bool silenced = false;        // a silence matched: stored, not published on the alert stream
  // Raised on an open pane's evidence (early evaluation) and not yet confirmed by the closed pane;
  // a retraction of such an alert carries it too.
  bool early = false;
};

// Whether `state` ends an alert (resolved or retracted): nothing follows it for the fingerprint
// until the condition starts again.
inline bool IsTerminal(AlertState state) {
  return state == AlertState::kResolved || state == AlertState::kRetracted;
}

// The fingerprint of an alert: FNV-1a (64-bit) over the rule or detector name and the series
// labels, each followed by a 0 byte. Stable across restarts, builds and platforms (unlike
// std::hash), so stored alerts and API links keep their identity.
uint64_t AlertFingerprint(std::string_view rule, std::string_view instance, std::string_view model,
                          std::string_view metric, std::string_view stat);
// 16 lowercase hex digits, as the API and the alert stream show fingerprints.
std::string FingerprintHex(uint64_t fingerprint);
// The inverse of FingerprintHex (1..16 hex digits, either case); nullopt otherwise.
std::optional<uint64_t> ParseFingerprintHex(std::string_view text);

}  // namespace inferscope
