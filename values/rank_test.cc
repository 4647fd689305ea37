#include "values/rank_test.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

namespace inferscope {

double NormalUpperTail(double z) { return 0.5 * std::erfc(z / std::sqrt(2.0)); }

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

  RankComparison r;
  r.n_x = x.count();
  r.n_y = y.count();
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

}  // namespace inferscope
