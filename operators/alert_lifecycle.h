#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "alerting/alert.h"
#include "pipeline/checkpoint.h"
#include "pipeline/clock.h"
#include "pipeline/metrics.h"
#include "pipeline/stage.h"
#include "pipeline/status.h"

namespace inferscope {

class SilenceRegistry;

// What one evaluation of a rule or detector found for one series.
enum class Condition : uint8_t {
  kActive,  // the condition holds (value beyond a level, score above the firing level)
  kHold,    // inside the hysteresis band: not enough to start an alert, not enough to end one
  kClear,   // clearly back to normal (beyond the band)
};

// The timing of one rule or detector. Durations are event time (window ends).
struct AlertTiming {
  // How long the condition must hold before pending becomes firing. Default 0 (fire on the first
  // active evaluation); >= 0.
  int64_t for_ms = 0;
  // How long the condition must be clear before firing becomes resolved. Default 0 (resolve on the
  // first clear evaluation); >= 0.
  int64_t keep_firing_for_ms = 0;
  Status Validate() const;
};

// AlertLifecycle turns per-evaluation verdicts into alert state changes, the one piece of logic
// shared by threshold rules and anomaly detectors.
//
// Per fingerprint (rule or detector + series labels): nothing → pending when the condition becomes
// active; pending → firing once it has been active for `for` (a pending alert whose condition
// stops being active is forgotten, as in Prometheus); firing → resolved once it has been clear
// for `keep_firing_for` (an active or hold evaluation restarts that clock — the hysteresis: a
// value that hovers at the threshold neither fires nor resolves). While firing, a higher severity
// is published as a firing update (escalation); a lower one is not (severity only rises until the
// alert resolves). An alert whose series sends nothing for `stale_after` of watermark progress is
// resolved ("no data") or, if pending, forgotten. Firing, escalation and resolution are appended
// to the output; pending is not (Prometheus does not notify on pending). An alert that matches an
// active silence when it changes state is still emitted (so it is stored) with `silenced` set;
// the stream sink does not publish it.
//
// Early evaluations (ObserveEarly: a still open pane judged as it fills) only ever start or advance
// alerts: an active one starts a pending alert (active since its time) or fires it once `for` has
// passed, published with `early` set; an inactive one changes nothing, and an early evaluation
// does nothing to a firing alert. The closed pane decides: the first Observe of the pane that
// carried unconfirmed early evidence (or of a later one) confirms it when active (no second
// firing; counted) and otherwise forgets the pending alert or retracts the firing one (published
// as state `retracted`, counted); a confirming pane at a lower level than the early one publishes
// a firing update at its own level; a pane that cannot be judged (ObserveUnjudged) retracts or
// forgets it too. Observe of an earlier pane does not undo early evidence; an active one confirms
// an early firing (counted; the later pane's closed verdict then holds, escalates or resolves it
// as for any firing alert), or moves a pending alert's active_since back to its time and fires it
// (not early) once `for` has passed, as without early evidence. The stale sweep retracts (not
// resolves) an early firing that no closed pane confirmed.
//
// Lifecycle: construct → Open (metrics, silences, clock) → Observe / Sweep.
// Concurrency: none; the operator thread makes every call.
// Limitations: at most `max_states` alerts tracked; evaluations that would start more are dropped
// and counted (inferscope_alert_states_dropped_total). The tracked states are checkpointed (one
// record, rewritten when they changed), so after a restart a firing alert resolves when its
// condition clears instead of staying firing in the store, and does not fire twice.
class AlertLifecycle {
 public:
  struct Options {
    // Tracked alerts (pending or firing). Default 100,000; >= 1.
    int64_t max_states = 100'000;
    // Resolve (or forget) alerts whose series has not been evaluated for this much event time.
    // Default 5 minutes; 0 disables.
    int64_t stale_after_ms = 300'000;
    Status Validate() const;
  };

  explicit AlertLifecycle(Options options) : options_(options) {}

  // Looks up metrics labelled with the stage name; keeps the SilenceRegistry service and ctx.clock.
  void Open(const StageContext& ctx);

  // One evaluation at event time `time_ms` (the end of the window that carried the evidence).
  // `evidence` carries the fingerprint, labels, type, value, expected range, score, window, event
  // time and a message describing the evidence; `severity` is the level reached when kActive.
  // State changes are appended to `out` with state, severity, active_since and detected_at set.
  void Observe(const Alert& evidence, Condition condition, Severity severity, int64_t time_ms,
               const AlertTiming& timing, std::vector<Alert>& out);
  // One early evaluation at event time `time_ms` (how far the open pane ending at `pane_end_ms`
  // has been observed); see the class comment.
  void ObserveEarly(const Alert& evidence, Condition condition, Severity severity, int64_t time_ms,
                    int64_t pane_end_ms, const AlertTiming& timing, std::vector<Alert>& out);
  // A closed pane ending at `time_ms` that could not be judged (a detector warming up again, or
  // none): early evidence of that pane or an earlier one is withdrawn — an early firing is
  // retracted (published, counted), a pending alert forgotten. Other alerts are left as they are.
  void ObserveUnjudged(uint64_t fingerprint, int64_t time_ms, std::vector<Alert>& out);
  // Resolves or forgets alerts not evaluated since `watermark_ms - stale_after`.
  void Sweep(int64_t watermark_ms, std::vector<Alert>& out);

  // Writes the tracked states (record "lifecycle") when they changed since the last call.
  Status Checkpoint(CheckpointWriter& writer);
  // Restores the states of the last checkpoint; call after Open.
  Status Restore(const CheckpointReader& reader);
  size_t tracked() const { return states_.size(); }
  // Whether an alert with this fingerprint is tracked (pending or firing), and whether it fires.
  // Lets a caller skip building evidence that could not change anything (no allocation).
  bool Tracks(uint64_t fingerprint) const { return states_.count(fingerprint) != 0; }
  bool Firing(uint64_t fingerprint) const {
    auto it = states_.find(fingerprint);
    return it != states_.end() && it->second.state == AlertState::kFiring;
  }
  uint64_t dropped() const { return dropped_; }
  // Early firings so far, and how many the closed pane confirmed or retracted.
  uint64_t early_fired() const { return early_fired_count_; }
  uint64_t confirmed() const { return confirmed_count_; }
  uint64_t retracted() const { return retracted_count_; }

 private:
  struct Tracked {
    AlertState state = AlertState::kPending;
    Severity severity = Severity::kNone;
    int64_t active_since_ms = 0;
    int64_t clear_since_ms = INT64_MIN;  // first clear evaluation while firing, or INT64_MIN
    int64_t last_eval_ms = 0;
    // The end of the earliest pane whose early evidence its closed pane has not judged yet, or
    // INT64_MIN when there is none.
    int64_t unconfirmed_end_ms = INT64_MIN;
    // Firing raised early: the end of the pane whose closed form confirms it; else INT64_MIN.
    int64_t early_fire_end_ms = INT64_MIN;
    Alert last;  // the latest evidence
  };
  using States = std::unordered_map<uint64_t, Tracked>;

  void Emit(Tracked& t, AlertState state, bool early, std::vector<Alert>& out);
  // A new pending state for `evidence`, or end() when max_states is reached (counted).
  States::iterator Start(const Alert& evidence, Severity severity, int64_t time_ms);

  Options options_;
  States states_;
  bool changed_ = false;  // states changed since the last checkpoint
  uint64_t dropped_ = 0;
  uint64_t early_fired_count_ = 0;
  uint64_t confirmed_count_ = 0;
  uint64_t retracted_count_ = 0;
  const Clock* clock_ = &SystemClock::Instance();
  const SilenceRegistry* silences_ = nullptr;
  Counter* fired_ = nullptr;
  Counter* escalated_ = nullptr;
  Counter* resolved_ = nullptr;
  Counter* silenced_ = nullptr;
  Counter* dropped_counter_ = nullptr;
  Counter* early_fired_ = nullptr;
  Counter* confirmed_ = nullptr;
  Counter* retracted_ = nullptr;
  Gauge* tracked_gauge_ = nullptr;
};

}  // namespace inferscope
