#include "operators/alert_options.h"

namespace inferscope {

Status ParseAlertRuleOptions(const ConfigNode& node, AlertRuleOptions* out) {
  Result<int64_t> window = node.GetDurationMs("window", 0, 0);
  if (!window.ok()) return window.status();
  Result<int64_t> min_count = node.GetInt("min_count", out->min_count, 1);
  if (!min_count.ok()) return min_count.status();
  Result<int64_t> for_ms = node.GetDurationMs("for", 0, 0);
  if (!for_ms.ok()) return for_ms.status();
  Result<int64_t> keep = node.GetDurationMs("keep_firing_for", 0, 0);
  if (!keep.ok()) return keep.status();
  out->window_ms = *window;
  out->min_count = *min_count;
  out->timing.for_ms = *for_ms;
  out->timing.keep_firing_for_ms = *keep;
  return Status::Ok();
}

Status ParseAlertLifecycleOptions(const ConfigNode& node, AlertLifecycle::Options* out) {
  Result<int64_t> max_states = node.GetInt("max_alert_states", out->max_states, 1, 100'000'000);
  if (!max_states.ok()) return max_states.status();
  Result<int64_t> stale = node.GetDurationMs("stale_after", out->stale_after_ms, 0);
  if (!stale.ok()) return stale.status();
  out->max_states = *max_states;
  out->stale_after_ms = *stale;
  return Status::Ok();
}

}  // namespace inferscope
