#pragma once

#include <cstdint>

#include "operators/alert_lifecycle.h"
#include "pipeline/config.h"
#include "pipeline/status.h"

namespace inferscope {

// The topology options that both alerting operators (threshold_rules, anomaly_detect) take, read
// by one parser so that they mean and check the same in both (docs/ALERTS.md).

// What one rule or detector judges and how long its condition must hold: per rule in
// threshold_rules, per operator in anomaly_detect.
struct AlertRuleOptions {
  // `window`: the window length judged; 0 (the default) is the shortest the upstream emits.
  int64_t window_ms = 0;
  // `min_count`: windows with fewer values are not judged. >= 1.
  int64_t min_count = 1;
  // `for`, `keep_firing_for` (default 0 each).
  AlertTiming timing;
};

// Reads `window`, `min_count`, `for` and `keep_firing_for` from `node` into `*out`; min_count keeps
// `out`'s value when absent, the durations default to 0. The error names the file, line and field.
Status ParseAlertRuleOptions(const ConfigNode& node, AlertRuleOptions* out);

// Reads the alert lifecycle's `max_alert_states` (1..100,000,000) and `stale_after` (>= 0) from
// the operator's `node` into `*out`, keeping `out`'s values for absent fields.
Status ParseAlertLifecycleOptions(const ConfigNode& node, AlertLifecycle::Options* out);

}  // namespace inferscope
