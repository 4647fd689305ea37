#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "pipeline/status.h"
#include "values/rank_test.h"
#include "values/sketch.h"

namespace inferscope {

// The canary verdict on a change to one instance, judged from sketches alone (the engine keeps no
// raw samples): did the metric get better, worse, or neither?
//
// Method. A rank test (values/rank_test.h) compares the instance's distribution since the change
// ("after") with its own baseline ("before"). With peers — other instances of the same model,
// unchanged, over the same two periods — the comparison is a difference in differences: the
// instance's AUC against its peers after the change minus the same before it, over its DeLong
// standard error, so a load swing that hits the whole fleet during the canary is not taken for
// the change's effect. The statistic z is positive when the metric moved up.
//
// Sequential decision. The verdict is looked at repeatedly as the canary runs (information
// fraction t = elapsed / planned duration, in (0, 1]). A clear result stops early; the boundary
// c / √t (O'Brien–Fleming shape) with c = Φ⁻¹(1 − α/2) keeps the chance of a wrong verdict in
// each direction at most α under continuous monitoring (for Brownian motion, P(sup B ≥ c) =
// 2(1 − Φ(c)) = α by the reflection principle; discrete looks cross less often). A verdict also
// needs a practical effect: the chosen quantile must move by at least `min_effect` (relative, and
// relative to the peers' move when peer-adjusted) in the direction the test found. At t = 1
// without a verdict the answer is "no effect".
//
// Limitations: the test assumes samples are exchangeable within each period; strong
// autocorrelation (bursts) makes it anticonservative, which bench/canary_eval measures on real
// trace arrivals.
enum class CanaryVerdict : uint8_t {
  kContinue = 0,  // not enough evidence yet
  kImproved,      // the metric moved in the good direction, significantly and by min_effect
  kRegressed,     // the metric moved in the bad direction, significantly and by min_effect
  kNoEffect,      // the planned duration passed without either
};
// "continue", "improved", "regressed", "no_effect".
std::string_view CanaryVerdictName(CanaryVerdict verdict);

struct CanaryOptions {
  // Chance of a wrong verdict in each direction when the change has no effect (default 0.05;
  // in (0, 0.5)).
  double alpha = 0.05;
  // Smallest relative change of `quantile` that counts as an effect (default 0.05 = 5 %; >= 0).
  double min_effect = 0.05;
  // The quantile whose relative change is the effect size (default 0.5; in (0, 1)).
  double quantile = 0.5;
  // Values needed in each of before and after (and in each peer period) before any verdict
  // (default 100; >= 2).
  uint64_t min_samples = 100;
  Status Validate() const;
};

// The sketches of one metric. Peers are optional: both peer periods or neither.
struct CanarySamples {
  const DDSketch* before = nullptr;  // the instance over the baseline period
  const DDSketch* after = nullptr;   // the instance since the change
  const DDSketch* peers_before = nullptr;
  const DDSketch* peers_after = nullptr;
  // Overdispersion of the values (>= 1; DispersionOf): the test's standard error is multiplied
  // by its square root. 1 = values independent, as the rank test assumes.
  double dispersion = 1;
};

// How much more a rank statistic varies over the panes of a period than independent values
// would make it: the sample variance of per-pane z statistics (each pane's values of the instance
// against a reference: its peers' values of the same pane), which is about 1 (at most 1 with a
// constant shift) when values are independent, and larger when they come in clusters — bursts of
// similar requests, queueing episodes that slow every request of a few seconds. Returns
// max(1, variance) with at least `min_panes` panes, else 1. The canary estimates it on the
// baseline (where nothing changed) and divides z by its square root: a design effect for
// pane-sized clusters. Correlation over longer spans than a pane is not seen by it.
double DispersionOf(std::span<const double> pane_z, size_t min_panes = 10);

// What one look found, with the evidence a verdict is reported with.
struct CanaryEvidence {
  CanaryVerdict verdict = CanaryVerdict::kContinue;
  bool peer_adjusted = false;
  double fraction = 0;   // t of this look
  double z = 0;          // test statistic; > 0 when the metric moved up
  double boundary = 0;   // |z| needed at this look
  double p_value = 1;    // one-sided fixed-sample p-value in the direction of z (informational)
  double auc_shift = 0;  // after AUC − before AUC (peer-adjusted), or after-vs-before AUC − 0.5;
                         // for a proportion: after − before (minus the peers' difference)
  double before_q = 0;  // the quantile before and after the change
  double after_q = 0;
  double ratio = 1;       // after_q / before_q, divided by the peers' ratio when peer-adjusted
  double dispersion = 1;  // the overdispersion z was divided by the square root of
  uint64_t n_before = 0;
  uint64_t n_after = 0;
};

// Judges one look at information fraction `fraction` (clamped to (0, 1]). `lower_is_better` for
// latencies and error counts. InvalidArgument when `before` or `after` is missing, only one peer
// period is given, or the sketches' parameters differ.
Result<CanaryEvidence> JudgeCanary(const CanarySamples& samples, double fraction,
                                   bool lower_is_better, const CanaryOptions& options);

// Raw values of the same four periods, each sorted in increasing order (peers: both when
// `with_peers`). The engine keeps no raw samples: this is the reference bench/canary_eval decides
// with in the same run, to show what deciding from sketch bins costs.
struct RawCanarySamples {
  std::span<const double> before, after, peers_before, peers_after;
  bool with_peers = false;
  double dispersion = 1;  // as CanarySamples::dispersion
};

// JudgeCanary on raw values: the same statistic, boundary and minimum effect, with the rank test
// of the raw values (values/rank_test.h CompareSortedSamples) and exact quantiles (the value at
// rank q (n − 1), rounded down, as DDSketch::Quantile ranks). An empty period counts as too few
// values. InvalidArgument when a sample is not sorted.
Result<CanaryEvidence> JudgeCanaryRaw(const RawCanarySamples& samples, double fraction,
                                      bool lower_is_better, const CanaryOptions& options);

// Requests and errors of one period, for a proportion (the error ratio).
struct ProportionCounts {
  uint64_t events = 0;
  uint64_t errors = 0;
  double ratio() const { return events == 0 ? 0 : static_cast<double>(errors) / events; }
};
struct ProportionSamples {
  ProportionCounts before, after;
  const ProportionCounts* peers_before = nullptr;  // both or neither
  const ProportionCounts* peers_after = nullptr;
};

// The same sequential look for a proportion (error_ratio, whose sketch median says nothing): a
// two-proportion z-test of after against before (pooled variance), or with peers a difference in
// differences of the proportions (unpooled variances); the same boundary c/√t. The effect size is
// the relative change of the proportion (before_q, after_q are the proportions); with a before
// proportion of 0 any rise counts as an effect (ratio reported as after/ (0.5/n_before), the
// continuity-corrected rate). Peers need `min_samples` events in each period, the instance too.
Result<CanaryEvidence> JudgeProportion(const ProportionSamples& samples, double fraction,
                                       bool lower_is_better, const CanaryOptions& options);

}  // namespace inferscope
