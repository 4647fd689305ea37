#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "alerting/alert.h"
#include "pipeline/config.h"
#include "pipeline/status.h"

namespace inferscope {

// Streaming anomaly detectors for one numeric series (issue 4). Every detector is causal (the
// verdict at a point depends on that point and earlier ones only) and keeps O(1) state per series;
// the seasonal profile is bounded by `season_points`. See docs/DETECTORS.md for the algorithms,
// the score combination and the measured accuracy.
//
// Each component detector turns its statistic into an *evidence* value: 0 = nothing unusual,
// 1 = exactly at its warning level, larger = stronger. SeriesDetector maps the strongest evidence
// to a score in [0, 1] with EvidenceToScore and the score to a severity with the option thresholds.

struct DetectorOptions {
  // Points before any verdict above Severity::kNone. With a seasonal component the warm-up also
  // lasts at least 3 periods (one to initialise the profile, two to refine it and learn the scale).
  // Default 30; >= 2.
  int64_t warmup_points = 30;
  // Seasonal profile size in buckets. With season_ms == 0 it is the period in points (the phase is
  // the point index modulo season_points); 0 disables the seasonal component. Default 0; 0 or
  // 2..100000.
  int64_t season_points = 0;
  // Period in time (e.g. 86400000 for a daily pattern). When > 0 the phase is taken from the
  // timestamp (epoch-aligned), so gaps and irregular sampling do not shift it, and season_points is
  // the number of buckets (48 when left 0). Default 0 (index-based or no seasonality); >= 0.
  int64_t season_ms = 0;
  // With no configured season (season_points and season_ms 0): detect a period causally from the
  // intervals between level crossings and enable a seasonal profile of up to 48 buckets once it
  // is stable over 3 cycles (SeriesDetector, automatic period). Costs 2 x 48 floats per series.
  // Default true.
  bool auto_season = true;

  // Score thresholds of the severities, ascending in (0, 1]. Defaults 0.5 / 0.7 / 0.85 / 0.95.
  // A component statistic exactly at its warning level (evidence 1) scores 0.7.
  double info = 0.5;
  double warning = 0.7;
  double critical = 0.85;
  double emergency = 0.95;

  // Threshold-adjustment mode: learn per series how heavy the tails of the residuals are (a
  // streaming 99th percentile of |z|) and how autocorrelated they are (lag-1 correlation), and
  // raise the spike / rate and change-point thresholds accordingly. Default true.
  bool adaptive_thresholds = true;

  // EWMA rate of the baseline level. Smaller = slower to absorb a drift (better drift detection),
  // slower to follow benign wander. Default 0.02; in (0, 1).
  double level_alpha = 0.02;
  // EWMA rate of the residual scale (winsorised RMS). Default 0.01; in (0, 1).
  double scale_alpha = 0.01;
  // EWMA rate of a seasonal bucket per visit. Default 0.1; in (0, 1).
  double season_alpha = 0.1;
  // Residuals are winsorised at +-clip scale units before they update the baseline, the scale or a
  // CUSUM, so one outlier moves nothing much. Default 4; >= 1.
  double clip = 4.0;

  // Spike/dip: |robust z| at which a single point reaches warning. Default 6; > 0.
  double spike_z = 6.0;
  // Level shift: two-sided CUSUM on standardised residuals with allowance k and decision interval
  // h (in scale units). Defaults 1 and 6 (in-control run length ~10^5 points for gaussian noise).
  double shift_k = 1.0;
  double shift_h = 6.0;
  // A level-shift CUSUM alarm whose run is longer than this many points is reported as a drift.
  // Default 8; >= 1.
  int64_t shift_max_run = 8;
  // Drift: a slower CUSUM (small allowance, large interval) for small persistent offsets that the
  // level baseline follows only slowly. Defaults 0.25 and 18.
  double drift_k = 0.25;
  double drift_h = 18.0;
  // Seasonal break: two-sided CUSUM on the residual projected on the normalised seasonal profile
  // (a pattern that weakens, vanishes, inverts or shifts phase). Defaults 0.5 and 15.
  double season_break_k = 0.5;
  double season_break_h = 15.0;
  // Rate of change: EWMA rate of the per-interval difference, and the |z| of that smoothed rate
  // at which it reaches warning. Defaults 0.3 and 8.
  double rate_alpha = 0.3;
  double rate_z = 8.0;

  Status Validate() const;
};

// DetectorOptions plus constants derived from them once, shared by every SeriesDetector of an
// operator (AnomalyDetectOperator makes one): the evidence at each score threshold, so that a
// point's severity is decided without the exp of its score (see SeriesDetector::Observe).
struct PreparedDetectorOptions : DetectorOptions {
  explicit PreparedDetectorOptions(const DetectorOptions& options);
  // Per severity (info, warning, critical, emergency): evidence below below_[k] scores below the
  // threshold, evidence at or above above_[k] scores at or above it (+inf: never sure); in
  // between the score is computed. The band is 1e-9 wide in score units, far wider than the
  // rounding of EvidenceToScore, so the severity is the one of the computed score.
  double evidence_below[4];
  double evidence_above[4];
};

// Reads the options from a topology mapping: `warmup_points`, `season_points`, `season_period`
// (a duration such as 1d), the four thresholds, `adaptive_thresholds` and the tuning fields above
// under the same names. Unknown fields are errors naming file:line.
Result<DetectorOptions> ParseDetectorOptions(const ConfigNode& node);

// The verdict of a SeriesDetector on one point.
struct Verdict {
  double score = 0;  // [0, 1]
  AnomalyType type = AnomalyType::kNone;
  Severity severity = Severity::kNone;
  double expected = 0, lower = 0, upper = 0;  // baseline and expected range at this point
  bool warming_up = true;
};

// Maps evidence (>= 0; 1 = warning level) to a score in [0, 1): 1 - 0.3^(e^2). Evidence 1 scores
// 0.7, 1.26 scores 0.85, 1.58 scores 0.95.
double EvidenceToScore(double evidence);

// The severity of `score` under the thresholds of `options`.
Severity SeverityOf(double score, const DetectorOptions& options);

// SeverityOf(EvidenceToScore(evidence), options), without the exp unless the evidence is within
// the prepared band of a threshold (SeriesDetector decides each point's severity with it and
// computes the score afterwards, off the path of the updates that depend on the severity).
Severity SeverityOfEvidence(double evidence, const PreparedDetectorOptions& options);

// SpikeDetector judges single points: the robust z of a residual (value minus baseline) against a
// winsorised RMS scale, with a tail factor learned per series.
//
// Algorithm: scale^2 is an EWMA of min(r^2, (clip * scale)^2); during warm-up a running mean. The
// tail factor f = (q99(|z|) / 2.576)^2, clamped to [1, 4], where q99 is a stochastic-approximation
// quantile tracker: gaussian residuals keep f near 1, heavy tails (laplace, student-t) raise the
// spike threshold to spike_z * f. Why squared: the gap between the 99th percentile and the far tail
// (1e-5) grows faster than the 99th percentile itself for heavy-tailed noise.
// Lifecycle: Score (const) then Learn for every point. Concurrency: none. The detector keeps a
// pointer to `options` (shared by every detector of a SeriesDetector): they must outlive it.
class SpikeDetector {
 public:
  struct Reading {
    double z = 0;          // signed residual / scale
    double evidence = 0;   // |z| / threshold()
    double threshold = 0;  // threshold() (when the scale is positive)
  };
  explicit SpikeDetector(const DetectorOptions& options);
  // `local`: a scale of this point's phase (the seasonal spread); z = residual / max(scale(),
  // local).
  Reading Score(double residual, double local = 0) const;
  // Updates the scale (unless `anomalous`) and the tail tracker. `warm` selects the fast warm-up
  // rates.
  // `informative`: the value changed since the previous point (only those update the 99.9th
  // percentile).
  void Learn(double residual, bool warm, bool anomalous, double local = 0, bool informative = true);
  // Learn with local = 0 when |z| = |residual| / scale() is known (Score's, with local <= scale()
  // and the scale unchanged since): the same update without the division.
  void LearnScored(double residual, double abs_z, bool warm, bool anomalous, bool informative);
  // Restarts the running-mean scale estimate (used at the start of the last warm-up period).
  void RestartWarmup() { n_ = 0; }
  // Points learned since the start or the last RestartWarmup.
  int64_t points() const { return n_; }
  void Reset();
  // The scale used to standardise is max(learned scale, floor): see SeriesDetector (scale floor).
  void set_floor(double floor) { floor_ = floor; }
  double floor() const { return floor_; }
  // Re-baselines the scale after a persistent change: the variance becomes at least `var`.
  void RaiseVariance(double var);
  // Starts from variance `var` as if `count` warm-up points had been seen (a switch of the judged
  // space with shadow statistics).
  void Seed(double var, int64_t count) {
    var_ = var;
    scale_ = std::sqrt(std::max(var, 0.0));
    n_ = count;
  }
  double scale() const { return std::max(scale_, floor_); }
  double learned_scale() const { return scale_; }
  double tail_factor() const;
  // |z| at warning: spike_z times the tail factor, and at least kTailMargin times the learned
  // 99.9th percentile of |z| (adaptive mode), so a series whose normal bursts are far out in the
  // tail (sparse counts) does not flag every burst.
  double threshold() const;

 private:
  const DetectorOptions* o_;
  double scale_ = 0, var_ = 0, floor_ = 0;
  double q99_ = 2.576;
  double q999_ = 3.29;
  int64_t n_ = 0;
};

// ChangePointDetector finds persistent shifts of the mean: a fast two-sided CUSUM (level shifts,
// reported as drift when its run was long) and a slow one (drifts).
//
// Input is the standardised residual z, winsorised at +-clip and divided by the long-run factor
// sqrt((1 + rho) / (1 - rho)) of the learned lag-1 autocorrelation rho (adaptive mode), so AR(1)
// noise does not inflate the false-alarm rate. On an alarm the caller moves its level by shift():
// the mean residual over the alarm's run (fast CUSUM; an unbiased new-level estimate after an
// abrupt change) or a recent EWMA of the residual (slow CUSUM, whose run mean lags a ramp).
// Limitations: a shift shorter than about 2 points is a spike, not a level shift; two shifts closer
// than the run of the first are seen as one. Keeps a pointer to `options`: they must outlive it.
class ChangePointDetector {
 public:
  struct Reading {
    double evidence = 0;  // max(S / h) over both CUSUMs and sides; >= 1 = alarm
    AnomalyType type = AnomalyType::kNone;
    double shift = 0;  // on alarm: estimated new level minus current level (value units)
  };
  explicit ChangePointDetector(const DetectorOptions& options);
  // Accumulates z (residual / scale) and the raw residual; on alarm resets its sums.
  Reading Observe(double z, double residual);
  // Adds `held` to the residual the latest Observe accumulated, in the sums of the CUSUMs still
  // running and in the recent mean (SeriesDetector's outlier hold: Observe saw the winsorised
  // residual of a point that the next one confirmed as a change).
  void Release(double held);
  // The evidence of the fast (level-shift) CUSUM if z were its next point, with the learned tail
  // margin, and in `type` what Observe would call it (level_shift, or drift when the run would be
  // longer than shift_max_run); changes nothing (SeriesDetector::Score).
  double PeekFast(double z, AnomalyType* type) const;
  // Updates the autocorrelation estimate (skip on anomalous points).
  void Learn(double z, bool warm);
  // Restarts the CUSUMs (after a re-baseline elsewhere); the autocorrelation is kept.
  void Restart();
  void Reset();
  double long_run_factor() const { return factor_; }

 private:
  struct Cusum {
    double s = 0;    // statistic
    double sum = 0;  // raw residual sum over the run
  };
  // Feeds the maximum of an excursion of a CUSUM pair (sum of its sides `s`, current S / h `x`)
  // to the percentile tracker `q` when the excursion ends.
  static void EndExcursion(double s, double& max, double& q, double x);
  const DetectorOptions* o_;
  Cusum up_, down_, drift_up_, drift_down_;
  // Points since each CUSUM's s left 0 (up_, down_, drift_up_, drift_down_): beside the sums, not
  // in them, so that four of them fill 16 bytes instead of padding four structs.
  int32_t run_[4] = {0, 0, 0, 0};
  double recent_ = 0;  // EWMA(0.2) of the residual
  // Learned 99.9th percentiles of the fast and drift statistics in units of their intervals
  // (adaptive mode): an interval is at least kTailMargin x its percentile, so a series whose
  // normal excursions (bursts of a sparse count, the ramps of a daily pattern) reach the interval
  // does not report each one as a change.
  double q_fast_ = 0, q_drift_ = 0;
  double fast_max_ = 0, drift_max_ = 0;  // maximum of S / h in the current excursion
  double q_run_ = 0;                     // learned 99th percentile of drift excursion lengths
  int32_t drift_run_ = 0;                // length of the current drift excursion
  int32_t n_ = 0;                        // learned points (saturates)
  double c0_ = 1, c1_ = 0, prev_z_ = 0, factor_ = 1;
};

// SeasonalBaseline keeps an additive seasonal profile (Holt-Winters without trend, error-correction
// form) and detects breaks of the pattern.
//
// The phase of a point is its index modulo season_points, or (season_ms > 0) its epoch time modulo
// the period, in season_points buckets. The first period stores the values; at its end the profile
// becomes the values minus their mean (buckets never seen start at 0). Afterwards each visit moves
// its bucket by season_alpha * winsorised residual. Breaks: the residual z times the normalised
// profile p = (s - mean(s)) / rms(s) has mean 0 while the pattern holds and mean -A/scale when it
// vanishes (A = pattern RMS); a two-sided CUSUM on it alarms on weakening, vanishing, inverted or
// phase-shifted patterns but not on level shifts (a constant residual is orthogonal to p).
// Memory: season_points floats, allocated at construction.
class SeasonalBaseline {
 public:
  explicit SeasonalBaseline(const DetectorOptions& options);
  // A configured season, or a detected one (automatic mode, after Lock).
  bool enabled() const { return buckets_ > 0; }
  // Automatic mode (no configured season, auto_season): the profile is allocated at construction
  // (kAutoBuckets) and enabled by Lock.
  bool automatic() const { return automatic_; }
  // Automatic mode, candidate period: restarts the stored first period at `anchor_ms` with
  // `period_ms` (StoreInitial then fills it; Phase follows it).
  void BeginCandidate(int64_t anchor_ms, int64_t period_ms, double interval_ms);
  // Automatic mode: the candidate period becomes the season (FinishInitial; returns the mean of
  // the stored values).
  double Lock();
  // Automatic mode, candidate: the stored value at `phase` (NaN if none) and the stored mean.
  double Stored(int64_t phase) const { return profile_[phase]; }
  double StoredMean() const;
  // Automatic mode: moves the phase origin (a period's reference crossing) and the period.
  void Reanchor(int64_t anchor_ms, int64_t period_ms);
  // Automatic mode: disables the season again (its period is no longer seen).
  void Unlock();
  int64_t period_ms() const { return season_ms_; }
  int64_t anchor_ms() const { return anchor_ms_; }
  // Bucket of the point with this index (0-based) and time.
  int64_t Phase(int64_t index, int64_t time_ms) const;
  // Periods elapsed since the first point (fractional in time mode).
  double Periods(int64_t index, int64_t time_ms) const;
  // The seasonal offset at `phase` (0 while the profile is initialising).
  double Offset(int64_t phase) const { return initialised_ ? profile_[phase] : 0.0; }
  // The time of the first point (Periods() counts from it in time mode).
  void MarkStart(int64_t time_ms) { first_time_ms_ = time_ms; }
  // First period: stores `value` at `phase` (averaging repeated visits).
  void StoreInitial(int64_t phase, double value);
  // Ends the first period: the profile becomes the stored values minus their mean, which is
  // returned (the initial level).
  double FinishInitial();
  bool initialised() const { return initialised_; }
  // Break evidence (two-sided CUSUM of z * p, divided by the long-run factor).
  double ObserveBreak(int64_t phase, double z, double long_run_factor);
  // Restarts the break CUSUM (after a re-baseline).
  void RestartBreak() { up_ = down_ = 0; }
  // Moves bucket `phase` towards the residual (winsorised by the caller).
  void Learn(int64_t phase, double residual, double rate);
  void Reset();
  // Per-bucket residual spread (issue 10): the RMS of the residuals seen at `phase` (0 until
  // learned). The detectors standardise by max(global scale, this), so the deterministic
  // within-bucket error of a ramp (a 30-minute bucket of a daily pattern) is normal at its phase.
  double Spread(int64_t phase) const {
    const float v = spread_[phase];
    return v > 0 ? std::sqrt(static_cast<double>(v)) : 0.0;
  }
  // Forgets the spreads (the start of the last warm-up period).
  void RestartSpread();
  // Moves the spread of `phase` towards `sq` (a winsorised squared residual); the first visit
  // after RestartSpread sets it.
  void LearnSpread(int64_t phase, double sq, double rate);
  size_t bytes() const { return (profile_.capacity() + spread_.capacity()) * sizeof(float); }

 private:
  void RecomputeMoments();
  bool automatic_;
  int64_t candidate_buckets_ = 0;  // automatic mode: buckets of the candidate period
  int64_t anchor_ms_ = 0;          // automatic mode: phase origin
  int64_t buckets_;                // active buckets (0 = disabled)
  int64_t season_ms_;
  double k_, h_, clip_;
  std::vector<float> profile_;
  std::vector<float> spread_;  // per-bucket mean squared residual; NaN = not seen yet
  bool initialised_ = false;
  int64_t first_time_ms_ = INT64_MIN;
  double sum_ = 0, sumsq_ = 0;  // of the profile, for its mean and RMS
  int64_t updates_ = 0;         // since the moments were recomputed exactly
  double up_ = 0, down_ = 0;
};

// RateOfChangeDetector judges how fast the series moves: an EWMA of the difference per typical
// sampling interval (so irregular sampling does not fake a rate), standardised by its own
// winsorised RMS and tail factor. A gap longer than 10 typical intervals restarts the difference
// (no rate is inferred across missing data). Keeps a pointer to `options`: they must outlive it.
class RateOfChangeDetector {
 public:
  struct Reading {
    double z = 0;
    double evidence = 0;
  };
  explicit RateOfChangeDetector(const DetectorOptions& options);
  // `floor`: the rate RMS used to standardise is at least this (a quantisation step per interval).
  // `held`: the value is value + held, of which the smoothed rate and the previous value keep only
  // `value` (SeriesDetector's outlier hold) until Amend; the reading and the learned spread and
  // tails are those of the whole value (the spread winsorised, the tails moved one step).
  Reading Observe(int64_t time_ms, double value, bool warm, bool learn, double floor = 0,
                  double held = 0);
  void Reset();
  // Re-baseline after a persistent change: the smoothed rate restarts at 0 and the rate variance
  // becomes at least the recent mean square of the rate.
  void Rebaseline();
  // Adds `held` to the value of the latest Observe (which saw it winsorised; SeriesDetector's
  // outlier hold, when the next point confirms a change): the previous value and the smoothed rate
  // become those of the whole value. The learned spread and tails are not replayed.
  void Amend(double held);
  // Forgets the previous value and the smoothed rate (the deseasonalised value changed meaning).
  void Restart() {
    has_prev_ = false;
    rate_ = 0;
    step_weight_ = 0;
  }
  double interval_ms() const { return interval_ms_; }
  // The value of the latest Observe (NaN when forgotten: none yet, Restart).
  double previous_value() const {
    return has_prev_ ? prev_value_ : std::numeric_limits<double>::quiet_NaN();
  }

 private:
  const DetectorOptions* o_;
  bool has_prev_ = false;
  int16_t n_ = 0;  // learned points (saturates; its rate 1 / n counts only up to n = 100)
  // The weight of the latest value in rate_ (rate_alpha, divided by the intervals its difference
  // spanned; 0 when it set no rate): Amend's step.
  float step_weight_ = 0;
  double prev_value_ = 0;
  int64_t prev_time_ms_ = 0;
  double interval_ms_ = 0;
  double rate_ = 0, var_ = 0, q99_ = 2.576;
  double q999_ = 3.29;    // learned 99.9th percentile of |z| (tail margin, as SpikeDetector)
  double recent_sq_ = 0;  // EWMA(0.25) of rate^2, every point
};

// SeriesDetector combines the detectors above on one series into a Verdict per point.
//
// Per point: expected = level + seasonal offset; residual r = value - expected; each component
// yields evidence; a change-point or seasonal-break alarm (evidence >= 1) takes precedence over a
// spike/dip, which takes precedence over a rate alarm (the most specific explanation wins);
// otherwise the largest evidence names the type. score = EvidenceToScore(evidence), severity from
// the thresholds. Then the state learns: level += level_alpha * winsorised r (plus the change-point
// shift on alarm), the seasonal bucket likewise, the scales only from points below warning.
//
// Safeguards for real metric shapes (issue 10; docs/DETECTORS.md explains each with the failure
// it prevents):
// - scale floor: the scale never falls below max(half the quantisation step of the values,
//   1e-3 x the typical |value|, half the long-memory scale), so a long constant run cannot
//   collapse it;
// - judged space: a series whose values typically change by a factor >= 2 from one point to the
//   next (multi-decade bursts) is judged in signed log1p space, decided causally (one way, with a
//   fresh warm-up in the new space);
// - episode bound: at most EpisodeBound() = 2 x shift_max_run points at or above warning in a
//   row (gaps of <= 3 points bridged); then level, scale and every CUSUM re-baseline on the recent
//   values and the verdicts stay below warning for shift_max_run points while they settle (a
//   change-point alarm re-baselines the rate detector too);
// - tail margin: the spike threshold is at least 1.25 x the learned 99.9th percentile of |z|
//   (of changed values only), the rate threshold likewise, and each CUSUM interval at least
//   1.25 x the learned 99th percentile of its excursion maxima (at most 3x; the drift margin only
//   for excursions no longer than 1.5 x the normal ones);
// - per-bucket seasonal spread: z = residual / max(scale, RMS of the bucket's residuals);
// - automatic period (auto_season, no configured season): level crossings with hysteresis, a
//   candidate profile verified on the next cycle, then a seasonal profile (see TrackPeriod);
// - informative warm-up: until warmup_points / 2 changes of the value (at most 30 x
//   warmup_points points); a switch to log1p space seeds the new model from shadow statistics;
// - outlier hold: a point 3 spike bands or more from both the expected and the previous value
//   (HeldPart) is judged on its value, but the state that learned values raw (CUSUM sums, recent
//   residuals, smoothed rate, magnitude) learns it winsorised until the next point confirms a
//   change (same side, beyond the winsorising limit, within 8x) or refutes it (ResolveHeld); the
//   judged-space statistic counts it only if confirmed or plausible in log1p space (within 4 sd of
//   the shadow statistics), and the automatic period sees it only if confirmed while it is far
//   outside the envelope. One absurd value is one spike.
//
// Lifecycle: construct → Observe per point in time order → (Reset to forget).
// Concurrency: none; one owner thread.
// Memory: sizeof(SeriesDetector) (512 bytes, 64-aligned; the options are shared, not copied) +
// heap_bytes() (with a season or the automatic period: the out-of-line seasonal state, 256 bytes
// + 8 per bucket); fixed after construction; Observe never allocates. Limitations: points must come
// in time order (an older point is ignored and counted); NaN/Inf are ignored; the first 7 points
// define the model (no outlier hold among them: an absurd value there spoils the scale for long).
// Two or more absurd values in a row are a change, not an outlier. Irregular sampling
// does not change the level/scale/CUSUM updates (they are per point); the rate detector normalises
// by the typical interval and the seasonal phase comes from time when season_ms is set. With an
// index-based period, missing points shift the phase: use season_ms for data with gaps. A detected
// period needs a pattern that crosses the middle of its range once up and once down per period.
class alignas(64) SeriesDetector {
 public:
  explicit SeriesDetector(const DetectorOptions& options);
  // Shares `options` (one copy for many series: with 100k detectors a private copy each would be
  // a cache line more per point; AnomalyDetectOperator shares one).
  explicit SeriesDetector(std::shared_ptr<const PreparedDetectorOptions> options);

  // Causal verdict on (time_ms, value). NaN/Inf values and out-of-order times are ignored: the
  // verdict is kNone and the state does not change.
  Verdict Observe(int64_t time_ms, double value);
  // The verdict on (time_ms, value) against the current state WITHOUT learning from it (const: the
  // baseline, scales, CUSUMs and profile do not move). For a provisional value such as the
  // statistic of a still open pane (AnomalyDetectOperator's early evaluation). Judges the spike /
  // dip (robust z against level + seasonal offset) and the level shift the fast CUSUM would reach
  // with this point; not the drift, seasonal-break or rate components (their statistics need the
  // closed points' spacing), so it is never more sensitive than Observe on the same value except
  // through `noise`. `noise` (>= 1) multiplies the scale: a statistic of a partial sample is
  // noisier than the closed points the scale was learned from. Warming up (or a NaN/Inf value, or
  // a time before the latest point): warming_up is set and nothing else. Allocates nothing.
  Verdict Score(int64_t time_ms, double value, double noise = 1) const;
  void Reset();

  int64_t points() const { return accepted_; }  // accepted points
  int64_t ignored() const { return ignored_; }  // NaN/Inf or out-of-order points
  bool warming_up() const { return !warm_done_; }
  // True once the series is judged in signed log1p space; level() and scale() are in that space.
  bool log_space() const { return log_space_; }
  double level() const { return level_; }
  // The automatically detected period in ms (0 when none is locked, or a season is configured).
  int64_t detected_period_ms() const {
    return auto_period_ && season_on_ ? season_->baseline.period_ms() : 0;
  }
  double scale() const { return spike_.scale(); }
  double scale_floor() const { return spike_.floor(); }
  // The longest run of points at or above warning the detector allows (2 x shift_max_run).
  int64_t EpisodeBound() const { return 2 * options_->shift_max_run; }
  // Heap bytes owned (the out-of-line seasonal state and profile; none without a configured season
  // or automatic period); total per series = sizeof + this.
  size_t heap_bytes() const { return season_ ? sizeof(Season) + season_->baseline.bytes() : 0; }

 private:
  bool WarmupDone(int64_t index, int64_t time_ms) const;
  // Forgets the model (level, scales, CUSUMs, profile, episode state), not the counters nor the
  // judged space.
  void ResetModel();
  // Updates the statistic that decides the judged space; true when the series should now be
  // judged in log1p space. `held`: the point is a held outlier, which counts only if plausible in
  // log1p space or once the next point confirms it (ResolveHeld), so that one absurd value cannot
  // switch the space.
  bool WantsLogSpace(double value, bool held);
  // One step of that statistic and of the shadow statistics: `value` after `seen` points.
  void OctaveStep(double value, int64_t seen);
  // `value` lies within kPlausibleSds standard deviations of the shadow statistics (kept once the
  // series is a quarter of the way to log1p space).
  bool PlausibleInLogSpace(double value) const;
  // Resolution, magnitude and long-memory scale → the scale floor (spike_.floor()). `typical`:
  // the value the magnitude learns (y, or a held outlier's winsorised value).
  void UpdateFloor(double y, double residual, bool warm, double typical);
  // The scale floor from resolution_, magnitude_ and slow_var_.
  void SetFloor();
  // The EWMA rate of the magnitude at the current point count.
  double MagnitudeRate() const;
  // What a point is judged against: expected value, residual, spike reading and scales (Judge
  // sets every field).
  struct Basis {
    int64_t phase;
    double offset, local, expected, residual;
    double scale;  // max(spike scale, seasonal spread)
    double limit;  // clip x scale: residuals are winsorised there
    SpikeDetector::Reading spike;
  };
  // Sets `b` for the point at `phase` with judged value y.
  void Judge(int64_t phase, double y, Basis& b) const;
  // Outlier hold: the part of this point's residual to hold (0: none), for a point kHoldBands
  // spike bands or more from the expected value (Basis fields): held if its jump from the
  // previous value is as far (against the recent spread too) and it does not continue the
  // previous point's excursion.
  double HeldPart(double y, double offset, double residual, double threshold, double scale,
                  double limit) const;
  // Outlier hold: the point after a held one (held_ != 0) confirms it (same side, beyond the
  // winsorising limit, within a factor of it) or refutes it. Confirmed: the held part reaches the
  // state the point updated winsorised (CUSUM sums, rate, recent residuals, magnitude), the
  // judged-space statistic and the automatic period see the point (at `held_ms`) if they had not,
  // a re-baseline at the held point is redone, and true is returned; refuted, it is dropped.
  // `residual`, `limit`, `expected`: the current point's (Basis).
  bool ResolveHeld(double residual, double limit, double expected, int64_t held_ms);
  // Forced re-baseline at the end of a bounded episode.
  void Rebaseline();
  // Automatic period (no configured season): level crossings with hysteresis, candidate profile,
  // lock and unlock. Called for every point before it is judged. False when the seasonal state
  // (lock, phase origin, level) did not change: no crossing and no drop.
  bool TrackPeriod(int64_t time_ms, double y);
  // TrackPeriod, then the candidate profile's store and verification, for point `index`; returns
  // TrackPeriod's.
  bool ObservePeriod(int64_t index, int64_t time_ms, double y);
  // Disables the detected period (TrackPeriod).
  void DropPeriod();
  double ToValue(double y) const;

  // Fields touched by every point first, those touched rarely (crossings, warm-up) last. The
  // options are shared (immutable; the components point into them), so that 100k detectors fed
  // round-robin read one copy that stays in cache.
  std::shared_ptr<const PreparedDetectorOptions> options_;
  SpikeDetector spike_;
  ChangePointDetector change_;
  RateOfChangeDetector rate_;
  double level_ = 0;
  int64_t n_ = 0;  // points of the current model (since the last space switch)
  int64_t accepted_ = 0;
  // Outlier hold: the part of the previous point's residual kept out of the state until this
  // point confirms or refutes it (0: none; ResolveHeld).
  double held_ = 0;
  int64_t last_time_ms_ = INT64_MIN;
  bool warm_done_ = false;
  // Judged space.
  bool log_space_ = false;
  // Scale floor.
  bool has_prev_y_ = false, integral_ = true;
  // Automatic period: crossing state.
  int8_t crossing_state_ = 0;  // 1 above the upper line, -1 below the lower one, 0 unknown
  // Automatic period: 0 none, 1 filling the profile, 2 verifying it.
  int8_t candidate_ = 0;
  // Mirrors of season_->baseline.enabled() and .automatic(), read by every point without touching
  // the out-of-line state.
  bool season_on_ = false, auto_period_ = false;
  int32_t changes_ = 0;   // points whose value differs from the previous one (current model,
                          // counted during the warm-up only, for WarmupDone; saturates)
  int32_t shadow_n_ = 0;  // points in the shadow statistics (saturates)
  double prev_octave_ = 0, octave_step_ = 0;  // mean |change of log2(1 + |x|)| per point
  float shadow_mean_ = 0, shadow_var_ = 0;    // of the value in signed log1p space (approx.)
  double prev_y_ = 0;
  double resolution_ = 0;  // smallest non-zero |change| seen (0 = none yet)
  double magnitude_ = 0;   // EWMA of |y|
  double slow_var_ = 0;    // long-memory residual variance, every point (the scale floor is kept
                           // by spike_)
  // Episode bound and re-baseline.
  double recent_residual_ = 0, recent_var_ = 0;  // EWMA(0.25) of r and of (r - mean)^2
  int32_t episode_ = 0;                          // points at >= warning in the current episode
  int16_t quiet_ = 0;       // points below warning in a row (up to kBridgedQuietPoints + 1)
  bool held_warm_ = false;  // outlier hold: the held point was a warm-up point (ResolveHeld)
  int32_t settle_ = 0;      // points left with verdicts capped below warning
  // Automatic period: the envelope and, per crossing type (0 up, 1 down), the points and the
  // points beyond either line since the last crossing.
  int32_t cycle_points_[2] = {0, 0}, cycle_outside_[2] = {0, 0};
  float env_hi_ = 0, env_lo_ = 0;
  float crossing_span_ = 0;  // envelope range at the last crossing

  int64_t ignored_ = 0;

  // Out of line (allocated only with a configured season or automatic period): the seasonal
  // profile and the rarely touched automatic-period state, so that a detector without a season
  // does not carry them in its cache lines.
  struct Season {
    explicit Season(const DetectorOptions& options) : baseline(options) {}
    // Forgets the automatic-period state (not the baseline).
    void ResetPeriod() {
      last_period = 0;
      period_misses = ups = downs = 0;
      anchor_type = 0;
      verify_sse = verify_sst = verify_mean = 0;
      verify_n = 0;
    }
    SeasonalBaseline baseline;
    int32_t last_period = 0;    // warm-up: seasonal periods seen (saturates)
    int32_t period_misses = 0;  // inconsistent crossings in a row while locked
    int32_t ups = 0, downs = 0;
    int32_t verify_n = 0;       // (saturates)
    int8_t anchor_type = 0;     // crossing type of the phase origin: 1 up, -1 down
    int64_t up_ms[2] = {0, 0};  // latest first
    int64_t down_ms[2] = {0, 0};
    double verify_sse = 0, verify_sst = 0, verify_mean = 0;
    // Outlier hold: the value before a held point (the period tracking sees a held point only
    // once the next one confirms it, and then with its predecessor as before).
    double held_prev_y = 0;
  };
  // A unique_ptr that copies its object (SeriesDetector stays copyable).
  class SeasonPtr {
   public:
    SeasonPtr() = default;
    explicit SeasonPtr(std::unique_ptr<Season> p) : p_(std::move(p)) {}
    SeasonPtr(const SeasonPtr& o) : p_(o.p_ ? std::make_unique<Season>(*o.p_) : nullptr) {}
    SeasonPtr& operator=(const SeasonPtr& o) {
      if (this != &o) p_ = o.p_ ? std::make_unique<Season>(*o.p_) : nullptr;
      return *this;
    }
    SeasonPtr(SeasonPtr&&) noexcept = default;
    SeasonPtr& operator=(SeasonPtr&&) noexcept = default;
    Season* operator->() const { return p_.get(); }
    explicit operator bool() const { return p_ != nullptr; }

   private:
    std::unique_ptr<Season> p_;
  };
  SeasonPtr season_;
  // Sets season_on_ from the baseline (after a lock, an unlock or a reset).
  void SyncSeason() { season_on_ = season_ && season_->baseline.enabled(); }
};

}  // namespace inferscope
