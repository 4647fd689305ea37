#pragma once

// Time-discounted evidence: every statistic here forgets with a half-life of *event time*, not of
// samples. A sample observed `d` ms before the statistic's reference time weighs 2^(-d/half_life);
// a statistic read at time `now` is the stored one scaled by 2^(-(now - as_of)/half_life). So a
// backend that stops receiving traffic keeps its mean but loses effective samples, and its
// posterior widens again (which is what lets the learner re-explore it). Out-of-order samples
// (older than the reference time) are added with their smaller weight; time never runs back.
//
// All types are small values with no allocation; the learner keeps several per backend.

#include <cmath>
#include <cstdint>

namespace inferscope::routing {

// 2^(-elapsed / half_life) for elapsed >= 0 (1 for elapsed <= 0).
inline double DecayFactor(int64_t elapsed_ms, int64_t half_life_ms) {
  if (elapsed_ms <= 0) return 1.0;
  return std::exp2(-static_cast<double>(elapsed_ms) / static_cast<double>(half_life_ms));
}

// The decay of a statistic last updated at `as_of_ms` (INT64_MIN: never, so its sums are 0 and
// any factor will do), read at `now_ms`, without overflowing the subtraction.
inline double DecayFactorSince(int64_t now_ms, int64_t as_of_ms, int64_t half_life_ms) {
  int64_t elapsed = 0;
  if (__builtin_sub_overflow(now_ms, as_of_ms, &elapsed)) return as_of_ms > now_ms ? 1.0 : 0.0;
  return DecayFactor(elapsed, half_life_ms);
}

// Decayed weighted mean and variance (West's weighted Welford) of a value: the sufficient
// statistics of a normal model of it (the learner feeds log latencies: a log-normal model).
class DecayedMoments {
 public:
  // Adds `x` observed at `time_ms`.
  void Add(double x, int64_t time_ms, int64_t half_life_ms);
  // Effective samples as of `now_ms` (the decayed weight).
  double Weight(int64_t now_ms, int64_t half_life_ms) const {
    return weight_ * DecayFactorSince(now_ms, as_of_ms_, half_life_ms);
  }
  double mean() const { return mean_; }
  // Weighted sum of squared deviations as of `now_ms` (decays like the weight).
  double M2(int64_t now_ms, int64_t half_life_ms) const {
    return m2_ * DecayFactorSince(now_ms, as_of_ms_, half_life_ms);
  }
  bool empty() const { return weight_ <= 0; }
  int64_t as_of_ms() const { return as_of_ms_; }
  // The raw state (checkpoints): weight and M2 as of as_of_ms().
  double raw_weight() const { return weight_; }
  double raw_m2() const { return m2_; }
  static DecayedMoments FromRaw(double weight, double mean, double m2, int64_t as_of_ms) {
    DecayedMoments m;
    m.weight_ = weight;
    m.mean_ = mean;
    m.m2_ = m2;
    m.as_of_ms_ = as_of_ms;
    return m;
  }

 private:
  double weight_ = 0;
  double mean_ = 0;
  double m2_ = 0;
  int64_t as_of_ms_ = INT64_MIN;
};

// Decayed sums of two quantities that share a time base (errors and successes; quality and its
// complement; cost and list cost; cost and tokens).
class DecayedPair {
 public:
  void Add(double a, double b, int64_t time_ms, int64_t half_life_ms);
  double a(int64_t now_ms, int64_t half_life_ms) const {
    return a_ * DecayFactorSince(now_ms, as_of_ms_, half_life_ms);
  }
  double b(int64_t now_ms, int64_t half_life_ms) const {
    return b_ * DecayFactorSince(now_ms, as_of_ms_, half_life_ms);
  }
  bool empty() const { return a_ == 0 && b_ == 0; }
  // The sums as of the last sample (for ratios a/b, which decay does not change).
  double raw_a() const { return a_; }
  double raw_b() const { return b_; }
  int64_t as_of_ms() const { return as_of_ms_; }
  static DecayedPair FromRaw(double a, double b, int64_t as_of_ms) {
    DecayedPair p;
    p.a_ = a;
    p.b_ = b;
    p.as_of_ms_ = as_of_ms;
    return p;
  }

 private:
  double a_ = 0;
  double b_ = 0;
  int64_t as_of_ms_ = INT64_MIN;
};

// The normal-gamma posterior of a normal model's mean and precision, from decayed moments and a
// prior centred on `prior_mean` worth `prior_samples` samples with expected variance
// `prior_variance`.
struct NormalGammaPosterior {
  double mean = 0;     // m_n
  double kappa = 1;    // κ_n: prior samples + effective samples
  double alpha = 2;    // α_n
  double beta = 1;     // β_n
  double samples = 0;  // effective samples of evidence (without the prior)

  static NormalGammaPosterior From(const DecayedMoments& m, int64_t now_ms, int64_t half_life_ms,
                                   double prior_mean, double prior_samples, double prior_variance);
  // Point estimate of the variance (E[σ²] = β/(α-1)).
  double Variance() const { return beta / (alpha - 1); }
  // Standard deviation of the mean's marginal (Student-t with 2α degrees of freedom).
  double MeanStddev() const { return std::sqrt(beta / (alpha * kappa)); }
};

}  // namespace inferscope::routing
