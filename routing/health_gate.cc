#include "routing/health_gate.h"

#include <algorithm>

namespace inferscope::routing {

std::string_view GateStateName(GateState state) {
  switch (state) {
    case GateState::kHealthy:
      return "healthy";
    case GateState::kEjected:
      return "ejected";
    case GateState::kProbing:
      return "probing";
  }
  return "unknown";
}

std::string_view EjectReasonName(EjectReason reason) {
  switch (reason) {
    case EjectReason::kNone:
      return "";
    case EjectReason::kConsecutiveErrors:
      return "consecutive_errors";
    case EjectReason::kFailureRate:
      return "failure_rate";
  }
  return "unknown";
}

GateVerdict GateVerdictOf(ErrorKind error) {
  switch (error) {
    case ErrorKind::kNone:
    case ErrorKind::kClientError:
      return GateVerdict::kSuccess;
    case ErrorKind::kServerError:
    case ErrorKind::kTimeout:
    case ErrorKind::kOther:
      return GateVerdict::kFailure;
    case ErrorKind::kRateLimited:
    case ErrorKind::kCancelled:
      return GateVerdict::kIgnore;
  }
  return GateVerdict::kIgnore;
}

bool HealthGate::Advance(int64_t now_ms, const HealthGateOptions& o) {
  if (state_ == GateState::kEjected && now_ms >= ejected_until_ms_) {
    state_ = GateState::kProbing;
    probe_successes_ = 0;
    consecutive_failures_ = 0;
    return true;
  }
  if (state_ == GateState::kHealthy && ejections_ > 0 && healthy_since_ms_ != INT64_MIN &&
      now_ms - healthy_since_ms_ >= o.interval_ms) {
    const int64_t intervals = (now_ms - healthy_since_ms_) / o.interval_ms;
    ejections_ = std::max<int64_t>(0, ejections_ - intervals);
    healthy_since_ms_ += intervals * o.interval_ms;
  }
  return false;
}

void HealthGate::Eject(EjectReason reason, int64_t now_ms, const HealthGateOptions& o) {
  ++ejections_;
  state_ = GateState::kEjected;
  reason_ = reason;
  const int64_t cap_mult = o.max_ejection_ms / o.base_ejection_ms + 1;
  const int64_t duration =
      std::min(o.max_ejection_ms, o.base_ejection_ms * std::min(ejections_, cap_mult));
  ejected_until_ms_ = now_ms + duration;
  consecutive_failures_ = 0;
  probe_successes_ = 0;
  interval_start_ms_ = INT64_MIN;
  interval_requests_ = 0;
  interval_failures_ = 0;
}

HealthGate::Change HealthGate::Observe(GateVerdict verdict, int64_t now_ms, bool may_eject,
                                       const HealthGateOptions& o) {
  Advance(now_ms, o);
  if (verdict == GateVerdict::kIgnore) return Change::kNone;
  // Outcomes of requests sent before the ejection still arrive while ejected: they neither extend
  // nor shorten it.
  if (state_ == GateState::kEjected) return Change::kNone;

  if (state_ == GateState::kProbing) {
    if (verdict == GateVerdict::kFailure) {
      Eject(EjectReason::kConsecutiveErrors, now_ms, o);  // a failed probe: back off longer
      return Change::kEjected;
    }
    if (++probe_successes_ >= o.probe_successes) {
      state_ = GateState::kHealthy;
      reason_ = EjectReason::kNone;
      healthy_since_ms_ = now_ms;
      return Change::kRecovered;
    }
    return Change::kNone;
  }

  // Healthy.
  if (healthy_since_ms_ == INT64_MIN) healthy_since_ms_ = now_ms;
  if (interval_start_ms_ == INT64_MIN || now_ms - interval_start_ms_ >= o.interval_ms ||
      now_ms < interval_start_ms_) {
    interval_start_ms_ = now_ms;
    interval_requests_ = 0;
    interval_failures_ = 0;
  }
  ++interval_requests_;
  EjectReason breach = EjectReason::kNone;
  if (verdict == GateVerdict::kFailure) {
    ++interval_failures_;
    if (++consecutive_failures_ >= o.consecutive_errors) breach = EjectReason::kConsecutiveErrors;
  } else {
    consecutive_failures_ = 0;
  }
  if (breach == EjectReason::kNone && o.failure_percentage > 0 &&
      interval_requests_ >= o.failure_request_volume &&
      100.0 * static_cast<double>(interval_failures_) >=
          o.failure_percentage * static_cast<double>(interval_requests_)) {
    breach = EjectReason::kFailureRate;
  }
  if (breach == EjectReason::kNone) return Change::kNone;
  if (!may_eject) return Change::kRefused;
  Eject(breach, now_ms, o);
  return Change::kEjected;
}

}  // namespace inferscope::routing
