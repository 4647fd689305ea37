#include "routing/calibration.h"

#include <algorithm>
#include <cmath>

#include "routing/estimates.h"

namespace inferscope::routing {
namespace {

constexpr double kBinWidth = 1.0 / static_cast<double>(ConfidenceCalibrator::kBins);

double Centre(size_t bin) { return (static_cast<double>(bin) + 0.5) * kBinWidth; }

size_t BinOf(double raw) {
  return std::min(static_cast<size_t>(raw * static_cast<double>(ConfidenceCalibrator::kBins)),
                  ConfidenceCalibrator::kBins - 1);
}

}  // namespace

ConfidenceCalibrator::ConfidenceCalibrator(int64_t half_life_ms, double prior_weight)
    : half_life_ms_(std::max<int64_t>(half_life_ms, 1)),
      prior_weight_(std::max(prior_weight, 0.0)) {
  Fit();
}

void ConfidenceCalibrator::Add(double raw, double label, int64_t time_ms) {
  if (!std::isfinite(raw) || !std::isfinite(label)) return;
  raw = std::clamp(raw, 0.0, 1.0);
  label = std::clamp(label, 0.0, 1.0);
  double w = 1;
  if (as_of_ms_ == INT64_MIN || time_ms > as_of_ms_) {
    const double f = DecayFactorSince(time_ms, as_of_ms_, half_life_ms_);
    for (size_t i = 0; i < kBins; ++i) {
      sums_[i] *= f;
      counts_[i] *= f;
    }
    as_of_ms_ = time_ms;
  } else {
    w = DecayFactorSince(as_of_ms_, time_ms, half_life_ms_);
  }
  const size_t b = BinOf(raw);
  sums_[b] += w * label;
  counts_[b] += w;
  Fit();
}

void ConfidenceCalibrator::Fit() {
  // Pool adjacent violators over the bins, each the label mean shrunk toward its centre (the
  // identity) by prior_weight / kBins pseudo-labels.
  const double prior = prior_weight_ / static_cast<double>(kBins);
  std::array<double, kBins> value{}, weight{};
  std::array<size_t, kBins> length{};
  size_t blocks = 0;
  for (size_t i = 0; i < kBins; ++i) {
    const double w = counts_[i] + prior;
    value[blocks] = w > 0 ? (sums_[i] + prior * Centre(i)) / w : Centre(i);
    weight[blocks] = w;
    length[blocks] = 1;
    ++blocks;
    while (blocks > 1 && value[blocks - 2] > value[blocks - 1]) {
      const double wa = weight[blocks - 2], wb = weight[blocks - 1];
      const double merged = wa + wb;
      value[blocks - 2] = merged > 0 ? (value[blocks - 2] * wa + value[blocks - 1] * wb) / merged
                                     : (value[blocks - 2] + value[blocks - 1]) / 2;
      weight[blocks - 2] = merged;
      length[blocks - 2] += length[blocks - 1];
      --blocks;
    }
  }
  size_t at = 0;
  for (size_t k = 0; k < blocks; ++k) {
    for (size_t i = 0; i < length[k]; ++i) fit_[at++] = std::clamp(value[k], 0.0, 1.0);
  }
}

double ConfidenceCalibrator::Map(double raw) const {
  if (!std::isfinite(raw)) return raw;
  raw = std::clamp(raw, 0.0, 1.0);
  const double x = raw / kBinWidth - 0.5;  // position in bin-centre units
  if (x <= 0) return fit_[0];
  const auto lo = static_cast<size_t>(x);
  if (lo >= kBins - 1) return fit_[kBins - 1];
  const double f = x - static_cast<double>(lo);
  return fit_[lo] + f * (fit_[lo + 1] - fit_[lo]);
}

double ConfidenceCalibrator::weight() const {
  double w = 0;
  for (double c : counts_) w += c;
  return w;
}

void ConfidenceCalibrator::Load(const std::array<double, kBins>& sums,
                                const std::array<double, kBins>& counts, int64_t as_of_ms) {
  for (size_t i = 0; i < kBins; ++i) {
    const double c = std::isfinite(counts[i]) ? std::max(counts[i], 0.0) : 0.0;
    const double s = std::isfinite(sums[i]) ? std::clamp(sums[i], 0.0, c) : 0.0;
    counts_[i] = c;
    sums_[i] = s;
  }
  as_of_ms_ = as_of_ms;
  Fit();
}

}  // namespace inferscope::routing
