#include "routing/estimates.h"

#include <algorithm>

namespace inferscope::routing {

void DecayedMoments::Add(double x, int64_t time_ms, int64_t half_life_ms) {
  double w = 1.0;
  if (weight_ <= 0) {
    as_of_ms_ = time_ms;
  } else if (time_ms >= as_of_ms_) {
    const double f = DecayFactor(time_ms - as_of_ms_, half_life_ms);
    weight_ *= f;
    m2_ *= f;
    as_of_ms_ = time_ms;
  } else {
    w = DecayFactor(as_of_ms_ - time_ms, half_life_ms);  // an older sample weighs less
  }
  const double total = weight_ + w;
  const double delta = x - mean_;
  mean_ += delta * w / total;
  m2_ += w * delta * (x - mean_);
  weight_ = total;
}

void DecayedPair::Add(double a, double b, int64_t time_ms, int64_t half_life_ms) {
  double w = 1.0;
  if (as_of_ms_ == INT64_MIN) {
    as_of_ms_ = time_ms;
  } else if (time_ms >= as_of_ms_) {
    const double f = DecayFactor(time_ms - as_of_ms_, half_life_ms);
    a_ *= f;
    b_ *= f;
    as_of_ms_ = time_ms;
  } else {
    w = DecayFactor(as_of_ms_ - time_ms, half_life_ms);
  }
  a_ += w * a;
  b_ += w * b;
}

NormalGammaPosterior NormalGammaPosterior::From(const DecayedMoments& m, int64_t now_ms,
                                                int64_t half_life_ms, double prior_mean,
                                                double prior_samples, double prior_variance) {
  // Prior: κ0 = prior_samples, α0 = 2 (so E[σ²] = β0 exists), β0 = prior_variance (α0 - 1).
  constexpr double kAlpha0 = 2;
  NormalGammaPosterior p;
  const double w = m.empty() ? 0.0 : m.Weight(now_ms, half_life_ms);
  const double k0 = prior_samples;
  p.samples = w;
  p.kappa = k0 + w;
  p.mean = w > 0 ? (k0 * prior_mean + w * m.mean()) / p.kappa : prior_mean;
  p.alpha = kAlpha0 + w / 2;
  const double m2 = w > 0 ? std::max(0.0, m.M2(now_ms, half_life_ms)) : 0.0;
  const double shift = w > 0 ? m.mean() - prior_mean : 0.0;
  p.beta = prior_variance * (kAlpha0 - 1) + m2 / 2 + k0 * w * shift * shift / (2 * p.kappa);
  return p;
}

}  // namespace inferscope::routing
