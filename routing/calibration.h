#pragma once

// ConfidenceCalibrator: a bounded, monotone map from the learner's raw confidence (its posterior
// P(best) for the chosen backend) to the accuracy its hindsight judgements give that confidence,
// learned online. Labels are added as they become known — later than the decision they judge —
// into fixed bins of the raw confidence, with time-decayed counts; the map is the
// pool-adjacent-violators (isotonic) fit of the bins' label means, shrunk toward the identity by
// `prior_weight` pseudo-labels spread evenly over the bins, and read by linear interpolation
// between bin centres. So with no labels it is the identity, and it moves away from it only as
// far as the labels' weight outruns the prior.
//
// Lifecycle: a value type; Add labels and Map confidences in any order (Map reads the fit made at
// the last Add). Concurrency: none. Memory: fixed (kBins × 3 doubles); no allocation.
// Limitations: the map depends on the raw confidence only (not on the backend or the request);
// it can only be as good as the labels (routing/README.md, "Confidence").

#include <array>
#include <cstddef>
#include <cstdint>

namespace inferscope::routing {

class ConfidenceCalibrator {
 public:
  static constexpr size_t kBins = 20;

  // `half_life_ms` (>= 1) is how fast labels are forgotten (event time); `prior_weight` (>= 0)
  // the weight of the identity prior in labels.
  explicit ConfidenceCalibrator(int64_t half_life_ms = 300'000, double prior_weight = 20);

  // Adds one judgement: a decision made with raw confidence `raw` (clamped to [0, 1]) was right
  // with probability `label` (in [0, 1]), known at `time_ms`. Labels older than the newest one
  // added weigh as of then (time never runs back).
  void Add(double raw, double label, int64_t time_ms);
  // The calibrated confidence of `raw` (in [0, 1]; monotone non-decreasing in `raw`).
  double Map(double raw) const;
  // Effective labels as of the last Add (after decay).
  double weight() const;

  // The raw state, for checkpoints: per bin the decayed label sums and counts as of as_of_ms().
  const std::array<double, kBins>& label_sums() const { return sums_; }
  const std::array<double, kBins>& counts() const { return counts_; }
  int64_t as_of_ms() const { return as_of_ms_; }
  // Restores a saved state (values are clamped to be valid: counts >= 0, sums in [0, counts]).
  void Load(const std::array<double, kBins>& sums, const std::array<double, kBins>& counts,
            int64_t as_of_ms);

 private:
  void Fit();

  int64_t half_life_ms_;
  double prior_weight_;
  std::array<double, kBins> sums_{};
  std::array<double, kBins> counts_{};
  std::array<double, kBins> fit_{};  // the isotonic fit at each bin centre
  int64_t as_of_ms_ = INT64_MIN;
};

}  // namespace inferscope::routing
