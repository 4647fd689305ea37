#include "operators/detectors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>
#include <string>
#include <utility>

namespace inferscope {
namespace {

constexpr double kGaussianQ99 = 2.5758;  // 99th percentile of |N(0, 1)|
constexpr double kMaxTailFactor = 4.0;
constexpr double kLnScoreAtUnit = -1.2039728043259361;  // ln(0.3): evidence 1 scores 0.7
constexpr double kQuantileP = 0.99;
constexpr double kQuantileStepWarm = 0.2;
constexpr double kQuantileStep = 0.1;
constexpr double kInitialQ99 = 2.9;  // a little conservative until the tail is learned
constexpr double kCorrelationRate = 0.01;
constexpr double kMaxRho = 0.9;
constexpr double kRecentRate = 0.2;
constexpr double kIntervalRate = 0.05;
constexpr double kGapIntervals = 10;
constexpr int64_t kDefaultTimeBuckets = 48;
constexpr int64_t kAutoBuckets = 48;  // profile size of a detected period
constexpr int64_t kMaxSeasonPoints = 100'000;
constexpr double kWarmSeasonRate = 0.3;
constexpr double kWarmLevelRate = 0.1;
constexpr int kWarmPeriods = 3;
// Safeguards for real metric shapes (issue 10; see docs/DETECTORS.md).
constexpr double kQ999P = 0.999;
constexpr double kQ999Up = 0.05;       // relative step of the 99.9th percentile tracker
constexpr double kQ999UpWarm = 0.2;    // ... during the warm-up
constexpr double kInitialQ999 = 3.29;  // gaussian 99.9th percentile of |z|
constexpr double kTailMargin = 1.25;   // spike threshold >= this x q99.9(|z|)
// CUSUM tail margin: initial 99.9th percentiles of S / h (gaussian noise: about 0.48 for the
// fast and 0.69 for the drift CUSUM), and their floor.
constexpr double kInitialQFast = 0.5;
constexpr double kInitialQDrift = 0.7;
constexpr double kMinQCusum = 0.3;
constexpr double kInitialQRun = 32;  // 99th percentile of drift excursion lengths, points
constexpr double kMinQRun = 4;
constexpr double kRunMargin = 1.5;     // an excursion this x longer than normal ones: no margin
constexpr double kMaxCusumMargin = 3;  // CUSUM intervals are raised at most 2x
constexpr double kSpreadRate = 0.25;   // per-bucket spread rate = this x season_alpha
constexpr double kExcursionP = 0.99;   // percentile of the excursion maxima
constexpr double kExcursionUp = 0.1;
constexpr double kResolutionFloor = 0.5;    // floor >= this x the quantisation step
constexpr double kMagnitudeFloor = 1e-3;    // floor >= this x the typical |value|
constexpr double kSlowFloor = 0.5;          // floor >= this x the long-memory scale
constexpr double kSlowRateFactor = 0.1;     // long-memory scale rate = this x scale_alpha
constexpr double kMagnitudeRate = 0.01;     // = 1 / 100 (UpdateFloor)
constexpr double kRecentRateFast = 0.25;    // the recent residual mean/variance (re-baseline)
constexpr double kOctaveRate = 0.02;        // = 1 / 50 (WantsLogSpace)
constexpr double kLogSpaceOctaves = 1.0;    // mean |change of log2(1 + |x|)| that selects log1p
constexpr int32_t kBridgedQuietPoints = 3;  // quiet points that do not end an episode
constexpr double kSettleEvidence = 0.95;    // evidence cap while settling (score < 0.7)
constexpr int64_t kMaxWarmupFactor = 30;
constexpr int64_t kMinSeededWarmup = 5;
constexpr double kShadowOctaves =
    0.25;  // dispersion from which shadow statistics are kept  // warm-up points left after a
           // switch to log space    // informative warm-up: at most 20 x warmup_points
// Automatic period.
constexpr double kEnvelopeDecay = 1e-4;      // per point, as a share of the envelope's range
constexpr double kCrossingLine = 0.25;       // crossings of the 25 % and 75 % lines
constexpr double kPeriodTolIntervals = 1.5;  // crossing-interval tolerance, sampling intervals
constexpr double kPeriodTolShare = 0.02;     // ... or share of the period
constexpr double kMinPeriodIntervals = 8;    // shortest period, in sampling intervals
constexpr int64_t kMaxMissedCycles = 4;      // a crossing up to 4 periods later still re-anchors
constexpr int32_t kPeriodMisses = 3;         // inconsistent crossings in a row that unlock
constexpr double kVerifySpreadRate = 0.5;    // spread from the verification errors
constexpr double kPeriodExplained = 0.75;
constexpr double kMinDwell = 0.4;       // share of a cycle beyond the lines for a candidate
constexpr double kEnvelopeGrowth = 2;   // envelope growth that restarts the crossing history
constexpr double kVerifyShare = 0.25;   // verified share of a cycle before a lock
constexpr double kMinVerifyPoints = 8;  // share of the variance the last cycle must predict
// Outlier hold (docs/DETECTORS.md, "Isolated outliers"). A point this many spike bands
// (threshold x scale) or more from the expected and the previous value can be held (HeldPart).
// Nearer, a spike's raw effects are small (3 bands are 18 sd of gaussian noise; the rate echo of
// a spike stays below info up to ~40 sd) and sparse counts learn their bursts as before.
constexpr double kHoldBands = 3;
// ... once the model and its scale have seen more points than this (before, there is nothing to
// judge a value against: the first points define the model).
constexpr int64_t kHoldMinPoints = 5;
// The next point confirms a held one only if their residuals are within this factor (an absurd
// value next to a merely large one is not a level).
constexpr double kConfirmRatio = 8;
// A refuted one still counts as a step of the judged-space statistic when it lies within this
// many standard deviations of the series in log1p space (shadow statistics).
constexpr double kPlausibleSds = 4;
constexpr double kMaxFiniteDouble = std::numeric_limits<double>::max();

int64_t FloorMod(int64_t a, int64_t b) {
  int64_t m = a % b;
  return m < 0 ? m + b : m;
}

double Clip(double x, double limit) { return std::clamp(x, -limit, limit); }

double TailFactor(double q99, bool adaptive) {
  if (!adaptive) return 1.0;
  double r = q99 / kGaussianQ99;
  return std::clamp(r * r, 1.0, kMaxTailFactor);
}

// Stochastic-approximation update of a running 99th percentile of |z|.
void TrackQuantile(double abs_z, double step, double& q) {
  q += abs_z > q ? step * kQuantileP : -step * (1 - kQuantileP);
  q = std::max(q, 1.0);
}

// Multiplicative stochastic-approximation update of a running `p` quantile of a non-negative
// statistic: up by `up` (relative) on an exceedance, down so that the equilibrium exceedance rate
// is 1 - p.
void TrackQuantileRelative(double x, double p, double up, double floor, double& q) {
  q *= x > q ? 1 + up : 1 - up * (1 - p) / p;
  q = std::max(q, floor);
}

// log2(1 + |x|) to within 0.09: the exponent plus the linear mantissa. Only decides the judged
// space, so the approximation is enough and costs no transcendental call.
double Octaves(double x) {
  const double a = 1 + std::fabs(x);
  uint64_t bits;
  std::memcpy(&bits, &a, sizeof bits);
  const auto exponent = static_cast<int64_t>((bits >> 52) & 0x7ff) - 1023;
  const double mantissa = static_cast<double>(bits & ((uint64_t{1} << 52) - 1)) /
                          static_cast<double>(uint64_t{1} << 52);
  return static_cast<double>(exponent) + mantissa;
}

double SignedLog1p(double x) { return std::copysign(std::log1p(std::fabs(x)), x); }

}  // namespace

Status DetectorOptions::Validate() const {
  if (warmup_points < 2) return Status::InvalidArgument("warmup_points must be at least 2");
  if (season_points < 0 || season_points == 1 || season_points > kMaxSeasonPoints) {
    return Status::InvalidArgument("season_points must be 0 or between 2 and " +
                                   std::to_string(kMaxSeasonPoints));
  }
  if (season_ms < 0) return Status::InvalidArgument("season_period must not be negative");
  if (!(info > 0 && info < warning && warning < critical && critical < emergency &&
        emergency <= 1)) {
    return Status::InvalidArgument(
        "thresholds must ascend in (0, 1]: info < warning < critical < emergency");
  }
  auto rate_ok = [](double a) { return a > 0 && a < 1; };
  if (!rate_ok(level_alpha) || !rate_ok(scale_alpha) || !rate_ok(season_alpha) ||
      !rate_ok(rate_alpha)) {
    return Status::InvalidArgument(
        "level_alpha, scale_alpha, season_alpha and rate_alpha must be in (0, 1)");
  }
  if (!(clip >= 1)) return Status::InvalidArgument("clip must be at least 1");
  if (!(spike_z > 0) || !(rate_z > 0)) {
    return Status::InvalidArgument("spike_z and rate_z must be positive");
  }
  if (!(shift_k >= 0) || !(drift_k >= 0) || !(season_break_k >= 0)) {
    return Status::InvalidArgument("CUSUM allowances (*_k) must not be negative");
  }
  if (!(shift_h > 0) || !(drift_h > 0) || !(season_break_h > 0)) {
    return Status::InvalidArgument("CUSUM intervals (*_h) must be positive");
  }
  if (shift_max_run < 1) return Status::InvalidArgument("shift_max_run must be at least 1");
  return Status::Ok();
}

Result<DetectorOptions> ParseDetectorOptions(const ConfigNode& node) {
  INFERSCOPE_RETURN_IF_ERROR(node.CheckKnownFields(
      {"warmup_points", "season_points", "season_period",  "info",
       "warning",       "critical",      "emergency",      "adaptive_thresholds",
       "level_alpha",   "scale_alpha",   "season_alpha",   "clip",
       "spike_z",       "shift_k",       "shift_h",        "shift_max_run",
       "drift_k",       "drift_h",       "season_break_k", "season_break_h",
       "rate_alpha",    "rate_z",        "auto_season"}));
  DetectorOptions o;
  auto get_int = [&](std::string_view field, int64_t& out, int64_t min, int64_t max) -> Status {
    Result<int64_t> v = node.GetInt(field, out, min, max);
    if (!v.ok()) return v.status();
    out = *v;
    return Status::Ok();
  };
  auto get_double = [&](std::string_view field, double& out, double min, double max) -> Status {
    Result<double> v = node.GetDouble(field, out, min, max);
    if (!v.ok()) return v.status();
    out = *v;
    return Status::Ok();
  };
  INFERSCOPE_RETURN_IF_ERROR(get_int("warmup_points", o.warmup_points, 2, INT64_MAX));
  INFERSCOPE_RETURN_IF_ERROR(get_int("season_points", o.season_points, 0, kMaxSeasonPoints));
  Result<int64_t> period = node.GetDurationMs("season_period", o.season_ms, 0);
  if (!period.ok()) return period.status();
  o.season_ms = *period;
  INFERSCOPE_RETURN_IF_ERROR(get_double("info", o.info, 0, 1));
  INFERSCOPE_RETURN_IF_ERROR(get_double("warning", o.warning, 0, 1));
  INFERSCOPE_RETURN_IF_ERROR(get_double("critical", o.critical, 0, 1));
  INFERSCOPE_RETURN_IF_ERROR(get_double("emergency", o.emergency, 0, 1));
  Result<bool> auto_season = node.GetBool("auto_season", o.auto_season);
  if (!auto_season.ok()) return auto_season.status();
  o.auto_season = *auto_season;
  Result<bool> adaptive = node.GetBool("adaptive_thresholds", o.adaptive_thresholds);
  if (!adaptive.ok()) return adaptive.status();
  o.adaptive_thresholds = *adaptive;
  INFERSCOPE_RETURN_IF_ERROR(get_double("level_alpha", o.level_alpha, 0, 1));
  INFERSCOPE_RETURN_IF_ERROR(get_double("scale_alpha", o.scale_alpha, 0, 1));
  INFERSCOPE_RETURN_IF_ERROR(get_double("season_alpha", o.season_alpha, 0, 1));
  INFERSCOPE_RETURN_IF_ERROR(get_double("clip", o.clip, 1, 1e6));
  INFERSCOPE_RETURN_IF_ERROR(get_double("spike_z", o.spike_z, 0, 1e6));
  INFERSCOPE_RETURN_IF_ERROR(get_double("shift_k", o.shift_k, 0, 1e6));
  INFERSCOPE_RETURN_IF_ERROR(get_double("shift_h", o.shift_h, 0, 1e6));
  INFERSCOPE_RETURN_IF_ERROR(get_int("shift_max_run", o.shift_max_run, 1, 1'000'000));
  INFERSCOPE_RETURN_IF_ERROR(get_double("drift_k", o.drift_k, 0, 1e6));
  INFERSCOPE_RETURN_IF_ERROR(get_double("drift_h", o.drift_h, 0, 1e6));
  INFERSCOPE_RETURN_IF_ERROR(get_double("season_break_k", o.season_break_k, 0, 1e6));
  INFERSCOPE_RETURN_IF_ERROR(get_double("season_break_h", o.season_break_h, 0, 1e6));
  INFERSCOPE_RETURN_IF_ERROR(get_double("rate_alpha", o.rate_alpha, 0, 1));
  INFERSCOPE_RETURN_IF_ERROR(get_double("rate_z", o.rate_z, 0, 1e6));
  if (Status st = o.Validate(); !st.ok()) return node.Error("", st.message());
  return o;
}

double EvidenceToScore(double evidence) {
  if (!(evidence > 0)) return 0.0;
  return 1.0 - std::exp(kLnScoreAtUnit * evidence * evidence);
}

namespace {

// The smallest evidence in [0, 64] whose score is at least `score` (+inf when none: a score
// above 1). EvidenceToScore is monotone up to its rounding.
double EvidenceAtScore(double score) {
  if (!(EvidenceToScore(64) >= score)) return std::numeric_limits<double>::infinity();
  double lo = 0, hi = 64;
  for (int i = 0; i < 200 && std::nextafter(lo, hi) < hi; ++i) {
    const double mid = lo + (hi - lo) / 2;
    (EvidenceToScore(mid) >= score ? hi : lo) = mid;
  }
  return hi;
}

// Half width of the band (in score units) around a threshold in which the severity is decided on
// the computed score: far wider than the rounding error of EvidenceToScore (~1e-16).
constexpr double kSeverityBand = 1e-9;

}  // namespace

PreparedDetectorOptions::PreparedDetectorOptions(const DetectorOptions& options)
    : DetectorOptions(options) {
  const double thresholds[4] = {info, warning, critical, emergency};
  for (int k = 0; k < 4; ++k) {
    evidence_below[k] = EvidenceAtScore(thresholds[k] - kSeverityBand);
    evidence_above[k] = EvidenceAtScore(thresholds[k] + kSeverityBand);
  }
}

Severity SeverityOf(double score, const DetectorOptions& o) {
  if (score >= o.emergency) return Severity::kEmergency;
  if (score >= o.critical) return Severity::kCritical;
  if (score >= o.warning) return Severity::kWarning;
  if (score >= o.info) return Severity::kInfo;
  return Severity::kNone;
}

Severity SeverityOfEvidence(double evidence, const PreparedDetectorOptions& o) {
  for (int k = 3; k >= 0; --k) {
    if (evidence >= o.evidence_above[k]) {
      return static_cast<Severity>(static_cast<int>(Severity::kInfo) + k);
    }
    if (evidence >= o.evidence_below[k]) return SeverityOf(EvidenceToScore(evidence), o);
  }
  return Severity::kNone;
}

// ---- SpikeDetector ----

SpikeDetector::SpikeDetector(const DetectorOptions& o) : o_(&o) { Reset(); }

void SpikeDetector::Reset() {
  scale_ = 0;
  var_ = 0;
  floor_ = 0;
  q99_ = kInitialQ99;
  q999_ = kInitialQ999;
  n_ = 0;
}

double SpikeDetector::tail_factor() const { return TailFactor(q99_, o_->adaptive_thresholds); }

double SpikeDetector::threshold() const {
  const double t = o_->spike_z * tail_factor();
  return o_->adaptive_thresholds ? std::max(t, kTailMargin * q999_) : t;
}

void SpikeDetector::RaiseVariance(double var) {
  if (var > var_) {
    var_ = var;
    scale_ = std::sqrt(var_);
  }
}

SpikeDetector::Reading SpikeDetector::Score(double residual, double local) const {
  Reading r;
  const double s = std::max(scale(), local);
  if (s <= 0) return r;
  r.z = residual / s;
  r.threshold = threshold();
  r.evidence = std::fabs(r.z) / r.threshold;
  return r;
}

void SpikeDetector::Learn(double residual, bool warm, bool anomalous, double local,
                          bool informative) {
  const double s = scale();
  const double abs_z = s > 0 ? std::fabs(residual) / std::max(s, local) : 0.0;
  LearnScored(residual, abs_z, warm, anomalous, informative);
}

void SpikeDetector::LearnScored(double residual, double abs_z, bool warm, bool anomalous,
                                bool informative) {
  const double s = scale();
  if (s > 0) {
    TrackQuantile(abs_z, warm ? kQuantileStepWarm : kQuantileStep, q99_);
    // Every informative point, anomalous or not: the 99.9th percentile is what the series does
    // normally. A repeated value is not a new sample of the tail: a sparse series (zeros with
    // rare bursts) learns the tail of its bursts, not of its zeros.
    if (informative) {
      TrackQuantileRelative(abs_z, kQ999P, warm ? kQ999UpWarm : kQ999Up, kInitialQ999, q999_);
    }
  }
  ++n_;
  double sq = residual * residual;
  // Winsorise once a few points give the scale meaning.
  if (n_ > 5 && s > 0) sq = std::min(sq, o_->clip * o_->clip * std::max(var_, floor_ * floor_));
  double a = warm ? std::max(o_->scale_alpha, 1.0 / static_cast<double>(n_)) : o_->scale_alpha;
  // Anomalous points still count, slowly: skipping them entirely would freeze a scale that started
  // too small (then every point looks anomalous).
  if (anomalous) a *= 0.25;
  var_ += a * (sq - var_);
  // A perfectly constant series has no scale; keep a floor relative to nothing so z stays finite.
  scale_ = std::sqrt(std::max(var_, std::numeric_limits<double>::min()));
}

// ---- ChangePointDetector ----

ChangePointDetector::ChangePointDetector(const DetectorOptions& o) : o_(&o) { Reset(); }

void ChangePointDetector::Restart() {
  up_ = down_ = drift_up_ = drift_down_ = Cusum{};
  run_[0] = run_[1] = run_[2] = run_[3] = 0;
  recent_ = 0;
}

void ChangePointDetector::Reset() {
  up_ = down_ = drift_up_ = drift_down_ = Cusum{};
  run_[0] = run_[1] = run_[2] = run_[3] = 0;
  recent_ = 0;
  q_fast_ = kInitialQFast;
  q_drift_ = kInitialQDrift;
  fast_max_ = drift_max_ = 0;
  q_run_ = kInitialQRun;
  drift_run_ = 0;
  c0_ = 1;
  c1_ = 0;
  prev_z_ = 0;
  factor_ = 1;
  n_ = 0;
}

namespace {

// `keep ? x : +0.0` without a branch (the CUSUM states below change at random: a branch on them
// is mispredicted about as often as not).
double KeepOrZero(bool keep, double x) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits &= -static_cast<uint64_t>(keep);
  std::memcpy(&x, &bits, sizeof bits);
  return x;
}

}  // namespace

void ChangePointDetector::EndExcursion(double s, double& max, double& q, double x) {
  max = std::max(max, x);
  // An excursion ends when its statistic is back at 0 (or restarts after an alarm: see Observe,
  // which calls this before resetting). Branch-free: q * 1 = q and q >= kMinQCusum already when
  // nothing ends (TrackQuantileRelative's update otherwise).
  const bool end = s == 0 || x >= std::clamp(kTailMargin * q, 1.0, kMaxCusumMargin);
  const double up = 1 + kExcursionUp;
  const double down = 1 - kExcursionUp * (1 - kExcursionP) / kExcursionP;
  const double factor = end && max > 0 ? (max > q ? up : down) : 1.0;
  q = std::max(q * factor, kMinQCusum);
  max = KeepOrZero(!end, max);
}

namespace {
void Step(double u, double residual, double k, double& s, double& sum, int32_t& run) {
  s = std::max(0.0, s + u - k);
  const bool on = s != 0;
  sum = KeepOrZero(on, sum + residual);
  run = on ? run + 1 : 0;
}
}  // namespace

void ChangePointDetector::Release(double held) {
  recent_ += kRecentRate * held;
  // A sum includes the previous point's residual when its CUSUM was running there (Step); the
  // statistics s themselves saw the winsorised z, which the held part does not change.
  if (up_.s != 0) up_.sum += held;
  if (down_.s != 0) down_.sum += held;
  if (drift_up_.s != 0) drift_up_.sum += held;
  if (drift_down_.s != 0) drift_down_.sum += held;
}

ChangePointDetector::Reading ChangePointDetector::Observe(double z, double residual) {
  const double u = Clip(z, o_->clip) / factor_;
  recent_ += kRecentRate * (residual - recent_);
  Step(u, residual, o_->shift_k, up_.s, up_.sum, run_[0]);
  Step(-u, residual, o_->shift_k, down_.s, down_.sum, run_[1]);
  Step(u, residual, o_->drift_k, drift_up_.s, drift_up_.sum, run_[2]);
  Step(-u, residual, o_->drift_k, drift_down_.s, drift_down_.sum, run_[3]);

  Reading r;
  const double raw_fast = std::max(up_.s, down_.s) / o_->shift_h;
  const double raw_slow = std::max(drift_up_.s, drift_down_.s) / o_->drift_h;
  double fast = raw_fast, slow = raw_slow;
  if (o_->adaptive_thresholds) {
    // Tail margin: the interval is at least kTailMargin x a learned high percentile of the
    // excursion maxima of S / h (one sample per excursion, so a long ramp counts once).
    fast /= std::clamp(kTailMargin * q_fast_, 1.0, kMaxCusumMargin);
    // The margin covers drift excursions as long as the normal ones: one that has lasted longer
    // than kTailMargin x the learned 99th percentile of their lengths is judged against the
    // plain interval (a write storm far longer than any normal burst).
    const int32_t run = std::max(run_[2], run_[3]);
    if (static_cast<double>(run) <= kRunMargin * q_run_) {
      slow /= std::clamp(kTailMargin * q_drift_, 1.0, kMaxCusumMargin);
    }
    if (drift_up_.s + drift_down_.s == 0 && drift_run_ > 0) {
      TrackQuantileRelative(static_cast<double>(drift_run_), kExcursionP, kExcursionUp, kMinQRun,
                            q_run_);
    }
    drift_run_ = run;
    EndExcursion(up_.s + down_.s, fast_max_, q_fast_, raw_fast);
    EndExcursion(drift_up_.s + drift_down_.s, drift_max_, q_drift_, raw_slow);
  }
  if (fast >= 1) {
    const bool up = up_.s >= down_.s;
    const Cusum& c = up ? up_ : down_;
    const int32_t c_run = up ? run_[0] : run_[1];
    r.evidence = fast;
    r.type = c_run <= o_->shift_max_run ? AnomalyType::kLevelShift : AnomalyType::kDrift;
    r.shift = c_run > 0 ? c.sum / c_run : 0;
  } else if (slow >= 1) {
    r.evidence = slow;
    r.type = AnomalyType::kDrift;
    r.shift = recent_;
  } else {
    r.evidence = std::max(fast, slow);
    r.type = fast >= slow ? AnomalyType::kLevelShift : AnomalyType::kDrift;
    return r;
  }
  // Alarm: the caller re-baselines by r.shift, so every statistic restarts from the new level.
  up_ = down_ = drift_up_ = drift_down_ = Cusum{};
  run_[0] = run_[1] = run_[2] = run_[3] = 0;
  recent_ -= r.shift;
  return r;
}

double ChangePointDetector::PeekFast(double z, AnomalyType* type) const {
  const double u = Clip(z, o_->clip) / factor_;
  const double up = std::max(0.0, up_.s + u - o_->shift_k);
  const double down = std::max(0.0, down_.s - u - o_->shift_k);
  double fast = std::max(up, down) / o_->shift_h;
  if (o_->adaptive_thresholds) fast /= std::clamp(kTailMargin * q_fast_, 1.0, kMaxCusumMargin);
  // As Observe: an alarm whose run is longer than shift_max_run is a drift.
  const bool is_up = up >= down;
  const int32_t run = (is_up ? up : down) != 0 ? (is_up ? run_[0] : run_[1]) + 1 : 0;
  *type = run <= o_->shift_max_run ? AnomalyType::kLevelShift : AnomalyType::kDrift;
  return fast;
}

void ChangePointDetector::Learn(double z, bool warm) {
  n_ += n_ < INT32_MAX;
  const double zc = Clip(z, o_->clip);
  const double a =
      warm ? std::max(kCorrelationRate, 1.0 / static_cast<double>(n_)) : kCorrelationRate;
  c0_ += a * (zc * zc - c0_);
  if (n_ > 1) c1_ += a * (zc * prev_z_ - c1_);
  prev_z_ = zc;
  if (o_->adaptive_thresholds && c0_ > 0) {
    const double rho = std::clamp(c1_ / c0_, 0.0, kMaxRho);
    factor_ = std::sqrt((1 + rho) / (1 - rho));
  } else {
    factor_ = 1;
  }
}

// ---- SeasonalBaseline ----

SeasonalBaseline::SeasonalBaseline(const DetectorOptions& o)
    : automatic_(o.auto_season && o.season_points == 0 && o.season_ms == 0),
      buckets_(o.season_ms > 0 && o.season_points == 0 ? kDefaultTimeBuckets : o.season_points),
      season_ms_(o.season_ms),
      k_(o.season_break_k),
      h_(o.season_break_h),
      clip_(o.clip),
      profile_(static_cast<size_t>(automatic_ ? kAutoBuckets : std::max<int64_t>(buckets_, 0))),
      spread_(profile_.size()) {
  Reset();
}

[[gnu::noinline]] void SeasonalBaseline::BeginCandidate(int64_t anchor_ms, int64_t period_ms,
                                                        double interval_ms) {
  const double points = interval_ms > 0 ? static_cast<double>(period_ms) / interval_ms : 0;
  candidate_buckets_ = std::clamp<int64_t>(std::llround(points), 2, kAutoBuckets);
  anchor_ms_ = anchor_ms;
  season_ms_ = period_ms;
  std::fill(profile_.begin(), profile_.end(), std::numeric_limits<float>::quiet_NaN());
  RestartSpread();
}

[[gnu::noinline]] double SeasonalBaseline::StoredMean() const {
  double sum = 0;
  int64_t seen = 0;
  for (int64_t i = 0; i < candidate_buckets_; ++i) {
    if (!std::isnan(profile_[i])) {
      sum += profile_[i];
      ++seen;
    }
  }
  return seen > 0 ? sum / static_cast<double>(seen) : 0.0;
}

[[gnu::noinline]] double SeasonalBaseline::Lock() {
  buckets_ = candidate_buckets_;
  first_time_ms_ = INT64_MIN;
  up_ = down_ = 0;
  return FinishInitial();
}

void SeasonalBaseline::Reanchor(int64_t anchor_ms, int64_t period_ms) {
  anchor_ms_ = anchor_ms;
  season_ms_ = period_ms;
}

void SeasonalBaseline::Unlock() {
  buckets_ = 0;
  initialised_ = false;
  up_ = down_ = 0;
}

[[gnu::noinline]] void SeasonalBaseline::Reset() {
  if (automatic_) {
    buckets_ = 0;
    season_ms_ = 0;
    candidate_buckets_ = 0;
    anchor_ms_ = 0;
  }
  std::fill(profile_.begin(), profile_.end(), std::numeric_limits<float>::quiet_NaN());
  RestartSpread();
  initialised_ = false;
  first_time_ms_ = INT64_MIN;
  sum_ = sumsq_ = 0;
  updates_ = 0;
  up_ = down_ = 0;
}

int64_t SeasonalBaseline::Phase(int64_t index, int64_t time_ms) const {
  if (automatic_) {
    if (season_ms_ <= 0) return 0;
    const int64_t b = buckets_ > 0 ? buckets_ : candidate_buckets_;
    const int64_t in_period = FloorMod(time_ms - anchor_ms_, season_ms_);
    const auto phase = static_cast<int64_t>(
        static_cast<double>(in_period) * static_cast<double>(b) / static_cast<double>(season_ms_));
    return std::min(phase, b - 1);
  }
  if (season_ms_ > 0) {
    // Epoch-aligned, so a daily period follows UTC days whatever the first point.
    const int64_t in_period = FloorMod(time_ms, season_ms_);
    return static_cast<int64_t>(static_cast<__int128>(in_period) * buckets_ / season_ms_);
  }
  return index % buckets_;
}

double SeasonalBaseline::Periods(int64_t index, int64_t time_ms) const {
  if (season_ms_ > 0) {
    if (first_time_ms_ == INT64_MIN) return 0;
    return static_cast<double>(time_ms - first_time_ms_) / static_cast<double>(season_ms_);
  }
  return static_cast<double>(index) / static_cast<double>(buckets_);
}

void SeasonalBaseline::StoreInitial(int64_t phase, double value) {
  float& slot = profile_[phase];
  slot = std::isnan(slot) ? static_cast<float>(value) : static_cast<float>(0.5 * (slot + value));
}

[[gnu::noinline]] double SeasonalBaseline::FinishInitial() {
  double sum = 0;
  int64_t seen = 0;
  const auto n = static_cast<size_t>(buckets_);
  for (size_t i = 0; i < n; ++i) {
    if (!std::isnan(profile_[i])) {
      sum += profile_[i];
      ++seen;
    }
  }
  const double mean = seen > 0 ? sum / static_cast<double>(seen) : 0.0;
  for (size_t i = 0; i < n; ++i) {
    float& v = profile_[i];
    v = std::isnan(v) ? 0.0f : static_cast<float>(v - mean);
  }
  initialised_ = true;
  RecomputeMoments();
  return mean;
}

[[gnu::noinline]] void SeasonalBaseline::RecomputeMoments() {
  sum_ = sumsq_ = 0;
  const auto n = static_cast<size_t>(buckets_);
  for (size_t i = 0; i < n; ++i) {
    const float v = profile_[i];
    sum_ += v;
    sumsq_ += static_cast<double>(v) * v;
  }
  updates_ = 0;
}

double SeasonalBaseline::ObserveBreak(int64_t phase, double z, double long_run_factor) {
  const double n = static_cast<double>(buckets_);
  const double mean = sum_ / n;
  const double var = sumsq_ / n - mean * mean;
  if (!(var > 0)) return 0;
  const double p = (profile_[phase] - mean) / std::sqrt(var);
  const double u = Clip(z, clip_) * p / long_run_factor;
  up_ = std::max(0.0, up_ + u - k_);
  down_ = std::max(0.0, down_ - u - k_);
  const double evidence = std::max(up_, down_) / h_;
  if (evidence >= 1) up_ = down_ = 0;
  return evidence;
}

void SeasonalBaseline::RestartSpread() {
  std::fill(spread_.begin(), spread_.end(), std::numeric_limits<float>::quiet_NaN());
}

void SeasonalBaseline::LearnSpread(int64_t phase, double sq, double rate) {
  float& slot = spread_[phase];
  slot = std::isnan(slot) ? static_cast<float>(sq) : static_cast<float>(slot + rate * (sq - slot));
}

void SeasonalBaseline::Learn(int64_t phase, double residual, double rate) {
  float& slot = profile_[phase];
  const double old = slot;
  const double updated = old + rate * residual;
  slot = static_cast<float>(updated);
  sum_ += slot - old;
  sumsq_ += static_cast<double>(slot) * slot - old * old;
  // Incremental moments drift with rounding; an exact pass every few periods is O(1) amortised.
  if (++updates_ >= 4 * buckets_) RecomputeMoments();
}

// ---- RateOfChangeDetector ----

RateOfChangeDetector::RateOfChangeDetector(const DetectorOptions& o) : o_(&o) {}

void RateOfChangeDetector::Reset() {
  has_prev_ = false;
  prev_value_ = 0;
  prev_time_ms_ = 0;
  interval_ms_ = 0;
  rate_ = var_ = 0;
  step_weight_ = 0;
  recent_sq_ = 0;
  q99_ = kInitialQ99;
  q999_ = kInitialQ999;
  n_ = 0;
}

void RateOfChangeDetector::Rebaseline() {
  var_ = std::max(var_, recent_sq_);
  rate_ = 0;
  step_weight_ = 0;  // the latest step is explained: an Amend of it adds no rate
}

void RateOfChangeDetector::Amend(double held) {
  prev_value_ += held;
  const double before = rate_;
  rate_ += static_cast<double>(step_weight_) * held;
  recent_sq_ += kRecentRateFast * (rate_ * rate_ - before * before);
}

RateOfChangeDetector::Reading RateOfChangeDetector::Observe(int64_t time_ms, double value,
                                                            bool warm, bool learn, double floor,
                                                            double held) {
  Reading r;
  step_weight_ = 0;
  if (!has_prev_) {
    has_prev_ = true;
    prev_value_ = value;
    prev_time_ms_ = time_ms;
    return r;
  }
  const double dt = static_cast<double>(time_ms - prev_time_ms_);
  const double diff = value - prev_value_;
  prev_value_ = value;
  prev_time_ms_ = time_ms;
  if (interval_ms_ <= 0) {
    interval_ms_ = dt;
  } else if (dt > kGapIntervals * interval_ms_) {
    rate_ = 0;  // a gap: no rate across missing data
    return r;
  } else {
    interval_ms_ += kIntervalRate * (dt - interval_ms_);
  }
  // Difference per typical interval. Closer points are not scaled up: their difference is mostly
  // noise, which does not shrink with the interval. (Rounding is monotone: dt / interval <= 1
  // when dt <= interval, so the difference is taken as is there, without dividing by 1.)
  const bool spread = interval_ms_ > 0 && dt > interval_ms_;
  const double per_interval = spread ? diff / (dt / interval_ms_) : diff;
  rate_ += o_->rate_alpha * (per_interval - rate_);
  const double weight = spread ? o_->rate_alpha * interval_ms_ / dt : o_->rate_alpha;
  step_weight_ = static_cast<float>(weight);
  recent_sq_ += kRecentRateFast * (rate_ * rate_ - recent_sq_);
  // The rate of the whole value (a held one: what rate_ becomes if Amend confirms it).
  const double rate = rate_ + weight * held;
  const double var = std::max(var_, floor * floor);
  if (var > 0) {
    r.z = rate / std::sqrt(var);
    double threshold = o_->rate_z * TailFactor(q99_, o_->adaptive_thresholds);
    if (o_->adaptive_thresholds) threshold = std::max(threshold, kTailMargin * q999_);
    r.evidence = std::fabs(r.z) / threshold;
  }
  if (learn && var > 0) {
    TrackQuantile(std::fabs(r.z), warm ? kQuantileStepWarm : kQuantileStep, q99_);
    TrackQuantileRelative(std::fabs(r.z), kQ999P, kQ999Up, kInitialQ999, q999_);
  }
  if (learn) {
    n_ += n_ < INT16_MAX;
    double sq = rate * rate;
    if (n_ > 5 && var > 0) sq = std::min(sq, o_->clip * o_->clip * var);
    double a = warm ? std::max(0.01, 1.0 / static_cast<double>(n_)) : 0.01;
    if (r.evidence >= 1) a *= 0.25;
    var_ += a * (sq - var_);
  }
  return r;
}

// ---- SeriesDetector ----

SeriesDetector::SeriesDetector(const DetectorOptions& options)
    : SeriesDetector(std::make_shared<const PreparedDetectorOptions>(options)) {}

SeriesDetector::SeriesDetector(std::shared_ptr<const PreparedDetectorOptions> options)
    : options_(std::move(options)), spike_(*options_), change_(*options_), rate_(*options_) {
  const DetectorOptions& o = *options_;
  if (o.season_points > 0 || o.season_ms > 0 || o.auto_season) {
    season_ = SeasonPtr(std::make_unique<Season>(o));
    auto_period_ = season_->baseline.automatic();
  }
  SyncSeason();
}

[[gnu::noinline]] void SeriesDetector::ResetModel() {
  spike_.Reset();
  change_.Reset();
  rate_.Reset();
  level_ = 0;
  n_ = 0;
  warm_done_ = false;
  has_prev_y_ = false;
  integral_ = true;
  prev_y_ = 0;
  resolution_ = 0;
  magnitude_ = 0;
  slow_var_ = 0;
  recent_residual_ = recent_var_ = 0;
  held_ = 0;
  episode_ = quiet_ = settle_ = 0;
  changes_ = 0;
  env_hi_ = env_lo_ = 0;
  crossing_span_ = 0;
  crossing_state_ = 0;
  cycle_points_[0] = cycle_points_[1] = cycle_outside_[0] = cycle_outside_[1] = 0;
  candidate_ = 0;
  if (season_) {
    season_->baseline.Reset();
    season_->ResetPeriod();
  }
  SyncSeason();
}

void SeriesDetector::Reset() {
  ResetModel();
  accepted_ = 0;
  ignored_ = 0;
  last_time_ms_ = INT64_MIN;
  log_space_ = false;
  prev_octave_ = octave_step_ = 0;
  shadow_mean_ = shadow_var_ = 0;
  shadow_n_ = 0;
}

bool SeriesDetector::WarmupDone(int64_t index, int64_t time_ms) const {
  if (n_ < options_->warmup_points) return false;
  // Informative points: a sparse series (mostly one value, with rare bursts) has learned nothing
  // about its bursts after warmup_points points; the warm-up lasts until half as many changes of
  // the value have been seen (at most kMaxWarmupFactor x warmup_points points).
  if (2 * int64_t{changes_} < options_->warmup_points &&
      n_ < kMaxWarmupFactor * options_->warmup_points) {
    return false;
  }
  return !season_on_ || season_->baseline.Periods(index, time_ms) >= kWarmPeriods;
}

bool SeriesDetector::PlausibleInLogSpace(double value) const {
  if (!(octave_step_ >= kShadowOctaves && shadow_var_ > 0)) return false;
  const double s = std::copysign(Octaves(value) * std::numbers::ln2, value);
  return std::fabs(s - shadow_mean_) <= kPlausibleSds * std::sqrt(shadow_var_);
}

bool SeriesDetector::WantsLogSpace(double value, bool held) {
  // A held value that is not a plausible one of the series in log1p space (a burst of a series on
  // its way there is) waits for the next point: ResolveHeld counts it if that confirms it. One
  // absurd value is no step of the series.
  if (held && !PlausibleInLogSpace(value)) return false;
  // Called once for every accepted point until the switch: the points seen before this one.
  OctaveStep(value, accepted_ - 1);
  return accepted_ > options_->warmup_points && octave_step_ >= kLogSpaceOctaves;
}

void SeriesDetector::OctaveStep(double value, int64_t seen) {
  const double octave = Octaves(value);
  if (seen > 0) {
    // 1 / n is below the rate from n = 1 / kOctaveRate on: no division there (same result).
    const double a =
        seen >= 50 ? kOctaveRate : std::max(kOctaveRate, 1.0 / static_cast<double>(seen));
    octave_step_ += a * (std::fabs(octave - prev_octave_) - octave_step_);
  }
  prev_octave_ = octave;
  // Shadow statistics of the value in (approximate) signed log1p space, to seed the model there
  // if it switches: kept once the dispersion is a quarter of the way to a switch (the EWMA needs
  // at least ~35 points from there to reach it), so ordinary series do not pay for them.
  if (octave_step_ >= kShadowOctaves) {
    const double s = std::copysign(octave * std::numbers::ln2, value);
    shadow_n_ += shadow_n_ < INT32_MAX;
    const double b = std::max(kOctaveRate, 1.0 / static_cast<double>(shadow_n_));
    shadow_mean_ += static_cast<float>(b * (s - shadow_mean_));
    shadow_var_ += static_cast<float>(b * ((s - shadow_mean_) * (s - shadow_mean_) - shadow_var_));
  }
}

double SeriesDetector::ToValue(double y) const {
  if (!log_space_) return y;
  // A wide band in log space can exceed the double range: clamp, so no infinity reaches an alert.
  const double v = std::min(std::expm1(std::fabs(y)), std::numeric_limits<double>::max());
  return std::copysign(v, y);
}

double SeriesDetector::MagnitudeRate() const {
  // 1 / n is below the rate from n = 1 / kMagnitudeRate on: no division there (same result).
  return n_ >= 100 ? kMagnitudeRate : std::max(kMagnitudeRate, 1.0 / static_cast<double>(n_));
}

void SeriesDetector::UpdateFloor(double y, double residual, bool warm, double typical) {
  if (has_prev_y_) {
    const double d = std::fabs(y - prev_y_);
    // Differences at the rounding level of the values are not a quantisation step.
    if (d > 1e-9 * std::max(std::fabs(y), std::fabs(prev_y_))) {
      resolution_ = resolution_ > 0 ? std::min(resolution_, d) : d;
    }
  }
  has_prev_y_ = true;
  prev_y_ = y;
  integral_ = integral_ && y == std::rint(y);
  const double n = static_cast<double>(n_);
  magnitude_ += MagnitudeRate() * (std::fabs(typical) - magnitude_);
  if (!std::isnan(residual)) {
    double sq = residual * residual;
    const double limit = std::max(slow_var_, spike_.learned_scale() * spike_.learned_scale());
    if (!warm && limit > 0) sq = std::min(sq, options_->clip * options_->clip * limit);
    const double a = warm ? 1.0 / std::max(1.0, n - 1) : kSlowRateFactor * options_->scale_alpha;
    slow_var_ += a * (sq - slow_var_);
  }
  SetFloor();
}

void SeriesDetector::SetFloor() {
  // Before any change was seen, integers have a step of at least 1.
  const double step = resolution_ > 0 ? resolution_ : (integral_ && !log_space_ ? 1.0 : 0.0);
  const double floor =
      std::max({kResolutionFloor * step, kMagnitudeFloor * magnitude_,
                kSlowFloor * std::sqrt(slow_var_), std::numeric_limits<double>::min()});
  spike_.set_floor(floor);
}

[[gnu::noinline]] void SeriesDetector::Rebaseline() {
  // The recent residuals say where the series is now and how much it moves there.
  level_ += recent_residual_;
  spike_.RaiseVariance(recent_var_);
  slow_var_ = std::max(slow_var_, recent_var_);
  change_.Restart();
  if (season_) season_->baseline.RestartBreak();
  rate_.Rebaseline();
  recent_residual_ = 0;
  episode_ = quiet_ = 0;
  settle_ = static_cast<int32_t>(options_->shift_max_run);
}

bool SeriesDetector::TrackPeriod(int64_t time_ms, double y) {
  if (n_ == 1) {
    env_hi_ = env_lo_ = y;
    return false;
  }
  // A slowly shrinking envelope of the values; crossings of its 25 % and 75 % lines, so noise
  // around one line does not count as crossings.
  const double shrink = kEnvelopeDecay * (env_hi_ - env_lo_);
  const double hi = std::max(y, env_hi_ - shrink), lo = std::min(y, env_lo_ + shrink);
  env_hi_ = static_cast<float>(hi);
  env_lo_ = static_cast<float>(lo);
  const double span = hi - lo;
  bool dropped = false;
  if (season_on_ && time_ms - season_->baseline.anchor_ms() >
                        (kMaxMissedCycles + 1) * season_->baseline.period_ms()) {
    // No crossing of the locked type for several periods (the pattern stopped): dropped.
    DropPeriod();
    dropped = true;
  }
  if (!(span > 0)) return dropped;
  const double lower = lo + kCrossingLine * span, upper = hi - kCrossingLine * span;
  const int8_t here = y > upper ? 1 : (y < lower ? -1 : 0);
  int8_t previous = crossing_state_;
  if (span > kEnvelopeGrowth * crossing_span_) {
    // The envelope grew a lot since the last crossing (the first cycle of a pattern after noise
    // around a flat start): crossings of the old lines are not comparable with the new ones. The
    // previous value is classified against the new lines, so this very step can be a crossing.
    season_->ups = season_->downs = 0;
    if (!season_on_) candidate_ = 0;
    crossing_span_ = static_cast<float>(span);
    previous = prev_y_ > upper ? 1 : (prev_y_ < lower ? -1 : 0);
  }
  const int8_t state = here != 0 ? here : previous;
  crossing_state_ = state;
  // Share of the points beyond either line over the last cycle (per crossing type): a periodic
  // signal dwells beyond its lines (a square wave always, a sine two thirds of the time), noise
  // mostly crosses the band between them.
  const int32_t outside = here != 0;
  cycle_points_[0] += 1;
  cycle_points_[1] += 1;
  cycle_outside_[0] += outside;
  cycle_outside_[1] += outside;
  if (previous == 0 || state == previous) return dropped;
  crossing_span_ = static_cast<float>(span);
  // A crossing of type `state` (1 up, -1 down).
  int64_t* times = state > 0 ? season_->up_ms : season_->down_ms;
  int32_t& count = state > 0 ? season_->ups : season_->downs;
  times[1] = times[0];
  times[0] = time_ms;
  ++count;
  const int type = state > 0 ? 0 : 1;
  const double dwell =
      cycle_points_[type] > 0 ? double(cycle_outside_[type]) / double(cycle_points_[type]) : 0.0;
  cycle_points_[type] = cycle_outside_[type] = 0;
  if (count < 2) return true;
  const int64_t latest = times[0] - times[1];
  const double interval = rate_.interval_ms();
  const double tol = std::max(kPeriodTolIntervals * interval, kPeriodTolShare * double(latest));
  if (season_on_) {
    if (state != season_->anchor_type) return true;
    // Locked: a crossing one (or a few, across a frozen stretch) periods after the phase origin
    // moves the origin a quarter of the way towards it (jitter of one sample averages out; a
    // period that is not a whole number of samples does not drift).
    const int64_t period = season_->baseline.period_ms();
    const int64_t since = time_ms - season_->baseline.anchor_ms();
    const int64_t cycles = std::max<int64_t>(1, std::llround(double(since) / double(period)));
    const int64_t deviation = since - cycles * period;
    if (cycles <= kMaxMissedCycles && std::fabs(double(deviation)) <= tol) {
      season_->baseline.Reanchor(season_->baseline.anchor_ms() + cycles * period + deviation / 4,
                                 period + deviation / (8 * cycles));
      season_->period_misses = 0;
    } else if (++season_->period_misses >= kPeriodMisses) {
      DropPeriod();
    }
    return true;
  }
  // Not locked. A candidate period (the last interval between two crossings of one type) fills
  // the profile over one cycle; from the next crossing of that type one consistent interval
  // later, the stored cycle is the prediction of the values. Once it has explained
  // kPeriodExplained of their variance over a quarter of a cycle, the period locks (at the next
  // crossing of either type). Noise, whose crossings happen to look regular now and then, but
  // whose last cycle predicts nothing, does not lock.
  if (candidate_ == 2 && warm_done_) {
    const double points = double(season_->baseline.period_ms()) / std::max(interval, 1.0);
    if (points >= kMinPeriodIntervals &&
        double(season_->verify_n) >= std::max(kMinVerifyPoints, kVerifyShare * points) &&
        season_->verify_sse <= (1 - kPeriodExplained) * season_->verify_sst) {
      level_ = season_->baseline.Lock();
      SyncSeason();
      candidate_ = 0;
      season_->period_misses = 0;
      change_.Restart();
      rate_.Restart();
      return true;
    }
  }
  if (candidate_ > 0 && state != season_->anchor_type &&
      std::fabs(double(season_->baseline.period_ms() - latest)) <= tol) {
    return true;  // the other crossing type agrees with the candidate
  }
  if (candidate_ == 1 && std::fabs(double(season_->baseline.period_ms() - latest)) <= tol) {
    // The period: the mean of the two consistent intervals (a crossing jitters by a sample).
    season_->baseline.Reanchor(season_->baseline.anchor_ms(),
                               (season_->baseline.period_ms() + latest) / 2);
    candidate_ = 2;
    season_->verify_sse = season_->verify_sst = 0;
    season_->verify_n = 0;
    season_->verify_mean = season_->baseline.StoredMean();
    return true;
  }
  // (Re)start the candidate: the last interval, filled from this crossing on, if the signal
  // dwelt beyond the lines over it (noise does not, so it starts few candidates: the fill is
  // what costs memory traffic).
  if (dwell < kMinDwell || double(latest) < kMinPeriodIntervals * interval ||
      n_ <= options_->warmup_points) {
    candidate_ = 0;
    return true;
  }
  season_->baseline.BeginCandidate(time_ms, latest, interval);
  season_->anchor_type = state;
  candidate_ = 1;
  return true;
}

bool SeriesDetector::ObservePeriod(int64_t index, int64_t time_ms, double y) {
  const bool moved = TrackPeriod(time_ms, y);
  if (candidate_ > 0 && !season_on_) {
    const int64_t phase = season_->baseline.Phase(index, time_ms);
    const double stored = season_->baseline.Stored(phase);
    if (candidate_ == 2 && !std::isnan(stored)) {
      // Verification: the stored cycle predicts this one; its error is also the first spread
      // of the phase.
      const double e2 = (y - stored) * (y - stored);
      season_->verify_sse += e2;
      season_->verify_sst += (y - season_->verify_mean) * (y - season_->verify_mean);
      season_->verify_n += season_->verify_n < INT32_MAX;
      season_->baseline.LearnSpread(phase, e2, kVerifySpreadRate);
    }
    season_->baseline.StoreInitial(phase, y);
  }
  return moved;
}

[[gnu::noinline]] void SeriesDetector::DropPeriod() {
  season_->baseline.Unlock();
  SyncSeason();
  candidate_ = 0;
  season_->period_misses = 0;
  rate_.Restart();
}

void SeriesDetector::Judge(int64_t phase, double y, Basis& b) const {
  b.phase = phase;
  b.offset = season_on_ ? season_->baseline.Offset(phase) : 0.0;
  b.local = season_on_ ? season_->baseline.Spread(phase) : 0.0;
  b.expected = level_ + b.offset;
  b.residual = y - b.expected;
  b.spike = spike_.Score(b.residual, b.local);
  b.scale = std::max(spike_.scale(), b.local);
  b.limit = options_->clip * b.scale;
}

[[gnu::noinline]] double SeriesDetector::HeldPart(double y, double offset, double residual,
                                                  double threshold, double scale,
                                                  double limit) const {
  // Held: kHoldBands spike bands from the expected value (the caller) and from the previous
  // value, both deseasonalised (not the second point of a spike that a regular transition of the
  // pattern follows), unless it continues the previous point's excursion as a confirmation would
  // see it (the points after the first one of a new level).
  const double previous = rate_.previous_value();
  const double jump = std::isnan(previous) ? y - prev_y_ : y - offset - previous;
  const double before = residual - jump;  // the previous residual, against today's level
  const double r = std::fabs(residual), q = std::fabs(before);
  const bool continues =
      before * residual > 0 && q > limit && q * kConfirmRatio >= r && r * kConfirmRatio >= q;
  // The jump is measured against the recent spread too: just after a change (of units) the scale
  // lags the new noise, which is no outlier.
  const double spread = std::max(scale, std::sqrt(recent_var_));
  if (continues || std::fabs(jump) < kHoldBands * threshold * spread) return 0;
  return residual - Clip(residual, limit);
}

[[gnu::noinline]] bool SeriesDetector::ResolveHeld(double residual, double limit, double expected,
                                                   int64_t held_ms) {
  const double held = held_;
  held_ = 0;
  // Confirmed: this point is on the same side beyond the winsorising limit too, and within a
  // factor kConfirmRatio of the held point (an absurd value next to a merely large one is not a
  // level: neither the absurd one after a real spike nor the large one after an absurd one).
  const double was = std::fabs(held) + limit;  // the held point's |residual|, about
  const double is = std::fabs(residual);
  const bool confirmed =
      residual * held > 0 && is > limit && is * kConfirmRatio >= was && was * kConfirmRatio >= is;
  if (!confirmed) return false;
  // The judged-space statistic skipped it unless plausible (WantsLogSpace; then its last octave is
  // the point's): its step now, before this point's, at the rate it had then.
  if (!log_space_ && prev_octave_ != Octaves(prev_y_)) OctaveStep(prev_y_, accepted_ - 2);
  change_.Release(held);
  rate_.Amend(held);
  // The recent residual mean and variance saw the winsorised residual c = r - held; with r:
  // mean += k * held and variance += k * ((d + held)^2 - d^2), d = c - previous mean
  // = (c - mean) / (1 - k). c is the limit on held's side (its scale moved little since).
  const double c = std::copysign(limit, held);
  const double d = (c - recent_residual_) / (1 - kRecentRateFast);
  recent_residual_ += kRecentRateFast * held;
  recent_var_ = std::min(recent_var_ + kRecentRateFast * held * (2 * d + held), kMaxFiniteDouble);
  // The magnitude learned |c + expected| instead of |r + expected| (n_ is the previous point's).
  const double typical = expected + c;
  magnitude_ =
      std::min(magnitude_ + MagnitudeRate() * (std::fabs(typical + held) - std::fabs(typical)),
               kMaxFiniteDouble);
  // The held point reached the episode bound and re-baselined (settle_ is untouched since): the
  // re-baseline again, with the recent residuals now complete (its level is then the one the whole
  // residual gives; a refuted point re-baselines on its winsorised value).
  if (settle_ == options_->shift_max_run && episode_ == 0) Rebaseline();
  if (held_warm_) {
    // A warm-up point: the long-memory scale (a plain mean there) learned c^2 instead of r^2.
    const double r = c + held;
    slow_var_ = std::min(slow_var_ + (r * r - c * c) / std::max(1.0, static_cast<double>(n_) - 1),
                         kMaxFiniteDouble);
  }
  SetFloor();
  if (auto_period_ && !std::isnan(season_->held_prev_y)) {
    // The period tracking skipped the held point: it sees it now, after its predecessor.
    const double y = prev_y_;
    prev_y_ = season_->held_prev_y;
    ObservePeriod(n_ - 1, held_ms, y);
    prev_y_ = y;
  }
  return true;
}

[[gnu::flatten]] Verdict SeriesDetector::Observe(int64_t time_ms, double value) {
  Verdict v;
  v.warming_up = !warm_done_;
  if (!std::isfinite(value) || time_ms < last_time_ms_) {
    ++ignored_;
    return v;
  }
  ++accepted_;
  const int64_t previous_ms = last_time_ms_;
  last_time_ms_ = time_ms;
  double y = log_space_ ? SignedLog1p(value) : value;

  // Outlier hold (docs/DETECTORS.md, "Isolated outliers"). A point kHoldBands spike bands away
  // from both the expected value and the previous value (HeldPart) is judged on its value, but
  // the state that took values raw takes it winsorised at clip x scale (as the level and the scale
  // always did): the CUSUM sums, the recent residuals, the rate detector's smoothed rate and the
  // magnitude. The part beyond, `held`, waits for the next point: ResolveHeld adds it if the
  // value stayed there (a change), drops it if not (an outlier). Meanwhile the judged-space
  // statistic (WantsLogSpace) and the automatic period (if it is far outside the envelope) do not
  // see it. The judgement is made here, before them, and reused below unless they changed the
  // model.
  double held = 0;
  Basis b{};  // judged early (have_early) when the hold is possible, else below
  bool have_early = false;
  // (Judged points always qualify: the warm-up took more points, and a season is initialised.)
  if (warm_done_ || (has_prev_y_ && n_ > kHoldMinPoints && spike_.points() > kHoldMinPoints &&
                     (!season_on_ || season_->baseline.initialised()))) {
    int64_t phase = season_on_ ? season_->baseline.Phase(n_, time_ms) : 0;
    Judge(phase, y, b);
    have_early = true;
    if (held_ != 0 && ResolveHeld(b.residual, b.limit, b.expected, previous_ms)) {
      // The floor moved, and the period tracking may have moved the phase.
      phase = season_on_ ? season_->baseline.Phase(n_, time_ms) : 0;
      Judge(phase, y, b);
    }
    // (Evidence is 0 without a scale.)
    if (b.spike.evidence >= kHoldBands) [[unlikely]] {
      held = HeldPart(y, b.offset, b.residual, b.spike.threshold, b.scale, b.limit);
    }
  }
  held_ = 0;

  if (!log_space_ && WantsLogSpace(value, held != 0)) {
    // Multi-decade dispersion: judge the series in log1p space from now on, with a fresh model.
    log_space_ = true;
    ResetModel();
    held = 0;
    have_early = false;
    y = SignedLog1p(value);
    v.warming_up = true;
    const int64_t seeded =
        options_->warmup_points - std::max<int64_t>(kMinSeededWarmup, options_->warmup_points / 3);
    if (!season_on_ && seeded > 0) {
      // Seeded from the shadow statistics of the values in log space, as if `seeded` warm-up
      // points had been seen there: a third of the warm-up remains (a short series that switches
      // is still judged).
      n_ = seeded;
      changes_ = static_cast<int32_t>(std::min<int64_t>(seeded, INT32_MAX));
      level_ = shadow_mean_;
      magnitude_ = std::fabs(shadow_mean_);
      slow_var_ = shadow_var_;
      spike_.Seed(shadow_var_, seeded);
    }
  }
  const int64_t index = n_++;
  const bool changed = !has_prev_y_ || y != prev_y_;
  // (Read by WarmupDone only: not counted once warm; ResetModel restarts it with the warm-up.)
  if (!warm_done_) changes_ += changed && changes_ < INT32_MAX;
  if (auto_period_) {
    // A held value beyond the envelope by more than its span would widen it (and move its crossing
    // lines) for thousands of points: the period tracking sees it only once the next point confirms
    // it (ResolveHeld). Within, it sees it now (a transition of the pattern locks the period here).
    bool defer = false;
    if (held != 0) {
      const double span = static_cast<double>(env_hi_) - static_cast<double>(env_lo_);
      defer = y > env_hi_ + span || y < env_lo_ - span;
      season_->held_prev_y = defer ? prev_y_ : std::numeric_limits<double>::quiet_NaN();
    }
    if (!defer) {
      // A crossing (a lock, which also sets the level, an unlock or a moved phase origin) may
      // change what the point is judged against.
      if (ObservePeriod(index, time_ms, y)) have_early = false;
    }
  }

  if (!have_early) {
    int64_t phase = 0;
    if (season_on_) phase = season_->baseline.Phase(index, time_ms);
    if (index == 0) {
      // The first point defines the level; nothing to judge it against.
      level_ = y;
      if (season_on_) {
        season_->baseline.MarkStart(time_ms);
        season_->baseline.StoreInitial(phase, y);
      }
      rate_.Observe(time_ms, y, true, true, kResolutionFloor * spike_.floor());
      UpdateFloor(y, std::numeric_limits<double>::quiet_NaN(), true, y);
      v.expected = v.lower = v.upper = value;
      return v;
    }

    if (season_on_ && !season_->baseline.initialised()) {
      if (season_->baseline.Periods(index, time_ms) < 1) {
        season_->baseline.StoreInitial(phase, y);
        level_ += (y - level_) / static_cast<double>(n_);
        rate_.Observe(time_ms, y, true, true, kResolutionFloor * spike_.floor());
        UpdateFloor(y, std::numeric_limits<double>::quiet_NaN(), true, y);
        v.expected = v.lower = v.upper = ToValue(level_);
        return v;
      }
      level_ = season_->baseline.FinishInitial();
      spike_.RestartWarmup();
    }
    Judge(phase, y, b);
    if (held != 0) held = b.residual - Clip(b.residual, b.limit);  // the basis moved since
  }

  const int64_t phase = b.phase;
  const double offset = b.offset;
  const double expected = b.expected;
  const double residual = b.residual;
  const SpikeDetector::Reading& spike = b.spike;
  const double scale = b.scale;
  const double band = (scale > 0 ? spike.threshold : spike_.threshold()) * scale;
  // |residual| / the scale without the seasonal spread, which the spike detector learns from:
  // Score's |z| unless the spread was larger.
  const bool z_is_global = b.local <= spike_.scale();
  if (log_space_) {
    v.expected = ToValue(expected);
    v.lower = ToValue(expected - band);
    v.upper = ToValue(expected + band);
  } else {
    v.expected = expected;
    v.lower = expected - band;
    v.upper = expected + band;
  }
  const double clipped = Clip(residual, b.limit);
  // The residual and value the state learns from: a held point's part beyond the limit waits
  // (ResolveHeld).
  double kept = residual, seen = y;
  if (held != 0) [[unlikely]] {
    kept = clipped;
    seen = expected + clipped;
  }
  {
    const double d = kept - recent_residual_;
    recent_residual_ += kRecentRateFast * d;
    recent_var_ = std::min(recent_var_ + kRecentRateFast * (d * d - recent_var_), kMaxFiniteDouble);
  }

  if (!warm_done_) {
    const bool seasonal = season_on_;
    if (seasonal) {
      // Learn the scale from the last warm-up period only, once the profile has settled.
      const auto period = static_cast<int32_t>(
          std::min(season_->baseline.Periods(index, time_ms), static_cast<double>(INT32_MAX)));
      if (period != season_->last_period) {
        season_->last_period = period;
        if (period == kWarmPeriods - 1) {
          spike_.RestartWarmup();
          season_->baseline.RestartSpread();
        }
      }
      season_->baseline.LearnSpread(phase, clipped * clipped, kSpreadRate * options_->season_alpha);
    }
    if (z_is_global) {
      spike_.LearnScored(residual, std::fabs(spike.z), true, false, changed);
    } else {
      spike_.Learn(residual, true, false, 0.0, changed);
    }
    // The CUSUMs run (without verdicts) so that their excursion percentiles learn the warm-up.
    // (Only in an extended, informative warm-up: a sparse series' bursts.)
    if (!seasonal && n_ > options_->warmup_points) change_.Observe(spike.z, kept);
    change_.Learn(spike.z, true);
    rate_.Observe(time_ms, seen - offset, true, true, kResolutionFloor * spike_.floor(), held);
    if (seasonal) {
      level_ += kWarmLevelRate * clipped;
      season_->baseline.Learn(phase, clipped, kWarmSeasonRate);
    } else {
      level_ += std::max(options_->level_alpha, 1.0 / static_cast<double>(n_)) * clipped;
    }
    // (The long-memory scale is a plain mean during the warm-up: a held point's winsorised part,
    // the rest if the next point confirms it.)
    UpdateFloor(y, kept, true, seen);
    warm_done_ = WarmupDone(index, time_ms);
    // Verdicts start from fresh CUSUMs (their excursion percentiles keep what they learned).
    if (warm_done_) change_.Restart();
    held_ = held;
    held_warm_ = true;
    return v;
  }
  v.warming_up = false;

  const ChangePointDetector::Reading change = change_.Observe(spike.z, kept);
  const double season_break =
      season_on_ ? season_->baseline.ObserveBreak(phase, spike.z, change_.long_run_factor()) : 0.0;
  // The rate of the deseasonalised value: a regular transition of the pattern is not a rate.
  const RateOfChangeDetector::Reading rate =
      rate_.Observe(time_ms, seen - offset, false, true, kResolutionFloor * spike_.floor(), held);

  // The most specific confirmed explanation wins; below alarm level the strongest evidence names
  // the type.
  double evidence = 0;
  AnomalyType type = AnomalyType::kNone;
  const AnomalyType spike_type = spike.z >= 0 ? AnomalyType::kSpike : AnomalyType::kDip;
  if (change.evidence >= 1 || season_break >= 1) {
    if (season_break >= change.evidence) {
      type = AnomalyType::kSeasonalBreak;
    } else {
      type = change.type;
    }
    evidence = std::max({change.evidence, season_break, spike.evidence, rate.evidence});
  } else if (spike.evidence >= 1) {
    type = spike_type;
    evidence = std::max(spike.evidence, rate.evidence);
  } else {
    evidence = spike.evidence;
    type = spike_type;
    if (change.evidence > evidence) evidence = change.evidence, type = change.type;
    if (season_break > evidence) evidence = season_break, type = AnomalyType::kSeasonalBreak;
    if (rate.evidence > evidence) evidence = rate.evidence, type = AnomalyType::kRateOfChange;
  }
  if (settle_ > 0) {
    // Settling after a forced re-baseline: below warning whatever the evidence.
    --settle_;
    evidence = std::min(evidence, kSettleEvidence);
  }
  // The severity of the score, from the evidence (the score's exp is computed last, off the path
  // of the updates that depend on the severity).
  v.severity = SeverityOfEvidence(evidence, *options_);
  v.type = v.severity == Severity::kNone ? AnomalyType::kNone : type;

  // Learn. Points at warning or above do not update the scales.
  const bool anomalous = v.severity >= Severity::kWarning;
  if (z_is_global) {
    spike_.LearnScored(residual, std::fabs(spike.z), false, anomalous, changed);
  } else {
    spike_.Learn(residual, false, anomalous, 0.0, changed);
  }
  if (!anomalous) change_.Learn(spike.z, false);
  const double level_rate =
      settle_ > 0 ? std::max(options_->level_alpha,
                             1.0 / static_cast<double>(options_->shift_max_run - settle_ + 1))
                  : options_->level_alpha;
  level_ += level_rate * clipped;
  if (season_on_) {
    season_->baseline.Learn(phase, clipped, options_->season_alpha);
    if (!anomalous)
      season_->baseline.LearnSpread(phase, clipped * clipped, kSpreadRate * options_->season_alpha);
  }
  UpdateFloor(y, residual, false, seen);
  if (change.evidence >= 1) {
    level_ += change.shift;
    recent_residual_ -= change.shift;
    // The step is explained as a level change: its rate must not linger as rate-of-change alarms.
    rate_.Rebaseline();
  }

  // Episode bound.
  if (anomalous) {
    ++episode_;
    quiet_ = 0;
    if (episode_ >= EpisodeBound()) Rebaseline();
  } else if (quiet_ <= kBridgedQuietPoints && ++quiet_ > kBridgedQuietPoints) {
    episode_ = 0;  // (quiet_ stops counting there: more quiet points change nothing)
  }
  held_ = held;
  held_warm_ = false;
  v.score = EvidenceToScore(evidence);
  return v;
}

Verdict SeriesDetector::Score(int64_t time_ms, double value, double noise) const {
  Verdict v;
  v.warming_up = true;
  if (!warm_done_ || !std::isfinite(value) || time_ms < last_time_ms_) return v;
  if (season_on_ && !season_->baseline.initialised()) return v;
  v.warming_up = false;
  noise = std::max(noise, 1.0);
  const double y = log_space_ ? SignedLog1p(value) : value;
  const int64_t phase = season_on_ ? season_->baseline.Phase(n_, time_ms) : 0;
  const double offset = season_on_ ? season_->baseline.Offset(phase) : 0.0;
  const double local = season_on_ ? season_->baseline.Spread(phase) : 0.0;
  const double expected = level_ + offset;
  const double residual = y - expected;
  SpikeDetector::Reading spike = spike_.Score(residual, local);
  spike.z /= noise;
  spike.evidence /= noise;
  const double scale = std::max(spike_.scale(), local) * noise;
  const double band =
      (scale > 0 && spike.threshold > 0 ? spike.threshold : spike_.threshold()) * scale;
  v.expected = ToValue(expected);
  v.lower = ToValue(expected - band);
  v.upper = ToValue(expected + band);
  AnomalyType shift_type = AnomalyType::kLevelShift;
  const double shift = change_.PeekFast(spike.z, &shift_type);
  double evidence = spike.evidence;
  AnomalyType type = spike.z >= 0 ? AnomalyType::kSpike : AnomalyType::kDip;
  // As Observe: a change-point alarm is the more specific explanation.
  if (shift >= 1 || shift > evidence) {
    evidence = std::max(evidence, shift);
    type = shift_type;
  }
  if (settle_ > 0) evidence = std::min(evidence, kSettleEvidence);
  v.severity = SeverityOfEvidence(evidence, *options_);
  v.type = v.severity == Severity::kNone ? AnomalyType::kNone : type;
  v.score = EvidenceToScore(evidence);
  return v;
}

}  // namespace inferscope
