#pragma once

// The health gate of one backend, separate from its score: Envoy outlier-detection semantics.
//
// kHealthy --(consecutive server errors, or a failure-rate breach over a minimum volume)-->
// kEjected for base × ejections (capped) --(time passes)--> kProbing: a trickle of probe traffic
// --(probe_successes consecutive successes)--> kHealthy; a server error while probing ejects
// again with a longer time. Each interval spent healthy lowers the ejection count by one (as
// Envoy's ejection multiplier), so back-off shrinks again for a backend that stays well.
//
// What counts (routing/README.md, "Health gate"): server_error, timeout and other are failures;
// success counts as a success; client_error (the request's fault) counts as a success for the
// gate, as Envoy counts a 4xx; rate_limited and cancelled are neither (they say nothing about the
// backend's health: a 429 is back-pressure, which the score and the load estimate handle).
//
// Time is event time, passed in; the gate never reads a clock. Not thread-safe.

#include <cstdint>
#include <string_view>

#include "pipeline/event.h"
#include "routing/options.h"

namespace inferscope::routing {

enum class GateState : uint8_t { kHealthy = 0, kEjected, kProbing };
std::string_view GateStateName(GateState state);  // "healthy", "ejected", "probing"

enum class EjectReason : uint8_t { kNone = 0, kConsecutiveErrors, kFailureRate };
std::string_view EjectReasonName(EjectReason reason);  // "", "consecutive_errors", "failure_rate"

// How an outcome counts for the gate.
enum class GateVerdict : uint8_t { kIgnore = 0, kSuccess, kFailure };
GateVerdict GateVerdictOf(ErrorKind error);

class HealthGate {
 public:
  // What Observe did.
  enum class Change : uint8_t { kNone = 0, kEjected, kRecovered, kRefused };

  // Records one outcome at `now_ms`. `may_eject` is false when the model already has as many
  // ejected backends as max_ejection_percent allows: a breach is then refused (kRefused) and the
  // counts keep running. Advances time first (Advance).
  Change Observe(GateVerdict verdict, int64_t now_ms, bool may_eject,
                 const HealthGateOptions& options);
  // Moves an ejected backend whose time is up to kProbing; returns true when the state changed.
  // Also lowers the ejection count for each whole interval spent healthy.
  bool Advance(int64_t now_ms, const HealthGateOptions& options);

  GateState state() const { return state_; }
  EjectReason reason() const { return reason_; }
  int64_t ejected_until_ms() const { return ejected_until_ms_; }
  int64_t ejections() const { return ejections_; }
  int64_t consecutive_failures() const { return consecutive_failures_; }
  // Whether the breach that would eject now is pending (used for the reasoning).
  int64_t probe_successes() const { return probe_successes_; }
  // The whole state (checkpoints).
  struct Saved {
    GateState state = GateState::kHealthy;
    EjectReason reason = EjectReason::kNone;
    int64_t consecutive_failures = 0, probe_successes = 0, ejections = 0, ejected_until_ms = 0;
    int64_t interval_start_ms = INT64_MIN, interval_requests = 0, interval_failures = 0;
    int64_t healthy_since_ms = INT64_MIN;
  };
  Saved Save() const {
    return {state_,
            reason_,
            consecutive_failures_,
            probe_successes_,
            ejections_,
            ejected_until_ms_,
            interval_start_ms_,
            interval_requests_,
            interval_failures_,
            healthy_since_ms_};
  }
  void Load(const Saved& s) {
    state_ = s.state;
    reason_ = s.reason;
    consecutive_failures_ = s.consecutive_failures;
    probe_successes_ = s.probe_successes;
    ejections_ = s.ejections;
    ejected_until_ms_ = s.ejected_until_ms;
    interval_start_ms_ = s.interval_start_ms;
    interval_requests_ = s.interval_requests;
    interval_failures_ = s.interval_failures;
    healthy_since_ms_ = s.healthy_since_ms;
  }
  // The next time at which Advance can change something (INT64_MAX: none).
  int64_t next_change_ms() const {
    return state_ == GateState::kEjected ? ejected_until_ms_ : INT64_MAX;
  }

 private:
  void Eject(EjectReason reason, int64_t now_ms, const HealthGateOptions& options);

  GateState state_ = GateState::kHealthy;
  EjectReason reason_ = EjectReason::kNone;
  int64_t consecutive_failures_ = 0;
  int64_t probe_successes_ = 0;
  int64_t ejections_ = 0;  // Envoy's ejection multiplier
  int64_t ejected_until_ms_ = 0;
  // Failure-rate counts of the current interval.
  int64_t interval_start_ms_ = INT64_MIN;
  int64_t interval_requests_ = 0;
  int64_t interval_failures_ = 0;
  int64_t healthy_since_ms_ = INT64_MIN;  // for the multiplier's decrease
};

}  // namespace inferscope::routing
