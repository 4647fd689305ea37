#include "values/rank_test.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <utility>
#include <vector>

namespace inferscope {

double NormalUpperTail(double z) { return 0.5 * std::erfc(z / std::sqrt(2.0)); }

double NormalQuantile(double p) {
  if (!(p >= 0 && p <= 1)) return std::numeric_limits<double>::quiet_NaN();
  if (p == 0) return -std::numeric_limits<double>::infinity();
  if (p == 1) return std::numeric_limits<double>::infinity();
  static constexpr double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                                 -2.759285104469687e+02, 1.383577518672690e+02,
                                 -3.066479806614716e+01, 2.506628277459239e+00};
  static constexpr double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                                 -1.556989798598866e+02, 6.680131188771972e+01,
                                 -1.328068155288572e+01};
  static constexpr double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                                 -2.400758277161838e+00, -2.549732539343734e+00,
                                 4.374664141464968e+00,  2.938163982698783e+00};
  static constexpr double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
                                 2.445134137142996e+00, 3.754408661907416e+00};
  constexpr double kLow = 0.02425;
  double x;
  if (p < kLow) {
    const double q = std::sqrt(-2 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (p <= 1 - kLow) {
    const double q = p - 0.5;
    const double r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  } else {
    const double q = std::sqrt(-2 * std::log(1 - p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  // One Halley step on Φ(x) − p.
  const double e = 0.5 * std::erfc(-x / std::sqrt(2.0)) - p;
  const double u = e * std::sqrt(2 * M_PI) * std::exp(x * x / 2);
  return x - u / (1 + x * u / 2);
}

namespace {

// The rank comparison of two samples given as runs of equal values (value, count), each in
// increasing order of value with no empty run: a sketch's bins, or sorted raw values.
RankComparison CompareRuns(std::span<const std::pair<double, uint64_t>> bx,
                           std::span<const std::pair<double, uint64_t>> by) {
  RankComparison r;
  for (const auto& run : bx) r.n_x += run.second;
  for (const auto& run : by) r.n_y += run.second;
  const auto nx = static_cast<double>(r.n_x);
  const auto ny = static_cast<double>(r.n_y);
  double below_x = 0, below_y = 0;  // values of each sample below the current bin
  double tie_sum = 0;               // Σ (t³ − t) over groups of equal values
  // DeLong placements: V10 of an x is P(Y < x) + ½ P(Y = x); V01 of a y is P(X > y) + ½ P(X = y).
  double v10_sum = 0, v10_sq = 0, v01_sum = 0, v01_sq = 0;
  size_t i = 0, j = 0;
  while (i < bx.size() || j < by.size()) {
    double value;
    if (j == by.size() || (i < bx.size() && bx[i].first <= by[j].first)) {
      value = bx[i].first;
    } else {
      value = by[j].first;
    }
    double cx = 0, cy = 0;
    if (i < bx.size() && bx[i].first == value) cx = static_cast<double>(bx[i++].second);
    if (j < by.size() && by[j].first == value) cy = static_cast<double>(by[j++].second);
    r.u += cx * (below_y + 0.5 * cy);
    const double t = cx + cy;
    tie_sum += t * t * t - t;
    const double v10 = (below_y + 0.5 * cy) / ny;
    const double v01 = (nx - below_x - 0.5 * cx) / nx;
    v10_sum += cx * v10;
    v10_sq += cx * v10 * v10;
    v01_sum += cy * v01;
    v01_sq += cy * v01 * v01;
    below_x += cx;
    below_y += cy;
  }

  r.auc = r.u / (nx * ny);
  const double s10 = nx > 1 ? std::max(0.0, (v10_sq - v10_sum * v10_sum / nx) / (nx - 1)) : 0;
  const double s01 = ny > 1 ? std::max(0.0, (v01_sq - v01_sum * v01_sum / ny) / (ny - 1)) : 0;
  r.auc_se = std::sqrt(s10 / nx + s01 / ny);

  const double n = nx + ny;
  const double mean = nx * ny / 2;
  const double var = n > 1 ? nx * ny / 12 * ((n + 1) - tie_sum / (n * (n - 1))) : 0;
  if (var <= 0) return r;  // every value tied: no evidence either way
  const double sd = std::sqrt(var);
  r.z = (r.u - mean) / sd;
  // Continuity-corrected tails (U moves in steps of ½).
  r.p_greater = NormalUpperTail((r.u - mean - 0.5) / sd);
  r.p_less = NormalUpperTail((mean - r.u - 0.5) / sd);
  r.p_two_sided = std::min(1.0, 2 * std::min(r.p_greater, r.p_less));
  return r;
}

// Sorted values as runs of equal values.
void Runs(std::span<const double> sorted, std::vector<std::pair<double, uint64_t>>* out) {
  out->clear();
  for (double v : sorted) {
    if (!out->empty() && out->back().first == v) {
      ++out->back().second;
    } else {
      out->emplace_back(v, 1);
    }
  }
}

}  // namespace

Result<RankComparison> CompareSketches(const DDSketch& x, const DDSketch& y) {
  if (x.empty() || y.empty()) {
    return Status::InvalidArgument("rank test: both samples need at least one value");
  }
  if (x.relative_accuracy() != y.relative_accuracy()) {
    return Status::InvalidArgument("rank test: the sketches' relative accuracies differ");
  }
  std::vector<std::pair<double, uint64_t>> bx, by;
  x.ForEachBin([&](double v, uint64_t n) { bx.emplace_back(v, n); });
  y.ForEachBin([&](double v, uint64_t n) { by.emplace_back(v, n); });
  return CompareRuns(bx, by);
}

Result<RankComparison> CompareSortedSamples(std::span<const double> x, std::span<const double> y) {
  if (x.empty() || y.empty()) {
    return Status::InvalidArgument("rank test: both samples need at least one value");
  }
  if (!std::is_sorted(x.begin(), x.end()) || !std::is_sorted(y.begin(), y.end())) {
    return Status::InvalidArgument("rank test: the samples must be sorted");
  }
  std::vector<std::pair<double, uint64_t>> bx, by;
  Runs(x, &bx);
  Runs(y, &by);
  return CompareRuns(bx, by);
}

}  // namespace inferscope
