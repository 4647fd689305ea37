#pragma once

#include <cstdint>
#include <span>

#include "pipeline/status.h"
#include "values/sketch.h"

namespace inferscope {

// The Mann–Whitney (Wilcoxon rank-sum) comparison of two samples known only through their
// DDSketches — what the engine stores of a latency distribution, since no raw samples are kept.
//
// Values in the same bin are ties (a bin spans 2 × relative accuracy, 2 % by default), so the
// statistic is that of the samples rounded to their bins: the tie-corrected null variance keeps
// the test exact for rounded data, and the loss against the raw samples is that of a 2 % rounding
// (bench/canary_eval measures it). Both sketches must have the same parameters.
//
// Besides the null test it gives the effect size as the probability of superiority
// AUC = P(X > Y) + ½ P(X = Y) with its standard error (DeLong's placement-value variance, valid
// away from the null), so that two comparisons (before and after a change, each against its
// peers) can themselves be compared.
struct RankComparison {
  uint64_t n_x = 0;
  uint64_t n_y = 0;
  double u = 0;          // Mann–Whitney U of x: pairs with x > y, plus ½ per tie
  double auc = 0.5;      // u / (n_x n_y); 0.5 when x and y are alike; > 0.5 when x is larger
  double auc_se = 0;     // standard error of auc (DeLong), 0 when either sample is constant
  double z = 0;          // (u − n_x n_y / 2) / sd under the null (tie-corrected), 0 when sd is 0
  double p_greater = 1;  // one-sided p-value for "x tends to be larger than y"
  double p_less = 1;     // one-sided p-value for "x tends to be smaller than y"
  double p_two_sided = 1;
};

// Compares the samples of `x` and `y`. InvalidArgument when either is empty or their parameters
// differ.
Result<RankComparison> CompareSketches(const DDSketch& x, const DDSketch& y);

// The same comparison of raw values, each sample sorted in increasing order: ties are only equal
// values. The engine keeps no raw samples; bench/canary_eval uses this as the reference that
// shows what deciding from sketch bins costs. InvalidArgument when either is empty or unsorted.
Result<RankComparison> CompareSortedSamples(std::span<const double> x, std::span<const double> y);

// The standard normal upper tail P(Z > z).
double NormalUpperTail(double z);
// The standard normal quantile Φ⁻¹(p) for p in (0, 1) (Acklam's rational approximation refined by
// one Halley step: relative error below 1e-12); ±infinity at 0 and 1, NaN outside.
double NormalQuantile(double p);

}  // namespace inferscope
