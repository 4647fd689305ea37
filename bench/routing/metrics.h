#pragma once

// The routing evaluation's metrics per (scenario, arrivals, policy): regret, latency, success,
// cost, unhealthy sends with detection, capability violations, calibration. Definitions in
// bench/routing/README.md, "Definitions".

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "sim/serving_model.h"

namespace inferscope::bench::routing {

// Expected calibration error of confidences against outcomes: `bins` equal-width bins over
// [0, 1]; sum over bins of (n_bin / n) x |mean(correct) - mean(confidence)|. 0 when empty.
double ExpectedCalibrationError(std::span<const double> confidence,
                                std::span<const uint8_t> correct, int bins = 10);

struct PolicyMetrics {
  uint64_t decisions = 0;
  uint64_t outcomes = 0;  // requests completed or failed before the end
  double success_rate = 0;
  double mean_regret = 0;                                                   // per decision
  double ttft_p50_ms = 0, ttft_p95_ms = 0, e2e_p50_ms = 0, e2e_p95_ms = 0;  // successes
  double cost_usd = 0;                                                      // billed in total
  double mean_quality = 0;                                                  // successes
  // Unhealthy sends (NaN when there is nothing to count). "Unhealthy": hard down, or failing
  // at least the health gate's failure_percentage of requests (README, "Definitions").
  double unhealthy_fraction = 0;  // sends to unhealthy backends / sends while one was unhealthy
  double unhealthy_before = 0;    // the same, before the policy detected the failure
  double unhealthy_after = 0;     // ... after
  uint64_t episodes = 0;          // unhealthy episodes seen (backend, unhealthy span)
  uint64_t undetected = 0;        // episodes the policy never shifted traffic off
  double shift_ms = 0;            // mean time to detection over detected episodes (NaN: none)
  // The same with the earlier, wider definition: any injected error fault (a brownout's 10 %
  // errors included) counts as failing. Kept as separate columns.
  double failing_fraction = 0, failing_before = 0, failing_after = 0;
  uint64_t capability_violations = 0;
  double ece = 0;  // NaN when the policy reports no confidence
};

// Scorer accumulates one run's decisions and outcomes.
//
// Detection: a failure episode of a backend starts with the first decision for its model while
// it is failing, and ends with the first one while it is not. Within it the scorer keeps the
// last `window` decisions of the model; the policy has detected the failure at the first
// decision at which that window is full (all of it within the episode) and the failing
// backend's share of it is <= `detect_share`: the detection time is the time of the window's
// first decision (from then on the policy keeps the backend's share low). Sends before that
// window count "before detection", the window's and later ones "after".
//
// Not thread-safe.
class Scorer {
 public:
  struct Options {
    size_t window = 20;
    double detect_share = 0.05;
  };
  Scorer() : Scorer(Options{}) {}
  explicit Scorer(Options options) : options_(options) {}

  // One routing decision at `t_ms`: among fleet instances `candidates` (unhealthy by the
  // metric's definition in `unhealthy`, failing by the wider one in `failing`), the policy chose
  // position `chosen`; its regret, whether it was a best candidate and the policy's confidence
  // (< 0: none).
  void OnDecision(double t_ms, std::span<const uint32_t> candidates,
                  std::span<const uint8_t> unhealthy, std::span<const uint8_t> failing,
                  size_t chosen, double regret, bool best, double confidence);
  void OnOutcome(const sim::RequestOutcome& outcome);

  // The metrics (closes open episodes). Call once.
  PolicyMetrics Finish();

 private:
  struct Episode {
    bool open = false;
    bool detected = false;
    double start_ms = 0;
    std::vector<uint8_t> window;  // ring: 1 = the decision went to this backend
    std::vector<double> times;    // ring: the decisions' times
    size_t next = 0, filled = 0, sum = 0;
  };
  // Episodes, detection and before/after counts under one definition of "unhealthy".
  struct Tracker {
    std::vector<Episode> episodes;  // per fleet instance
    uint64_t before_total = 0, before_bad = 0, after_total = 0, after_bad = 0;
    uint64_t episode_count = 0, undetected = 0, detected = 0;
    double shift_sum_ms = 0;
    void OnDecision(const Options& options, double t_ms, std::span<const uint32_t> candidates,
                    std::span<const uint8_t> bad, size_t chosen);
    void Finish();
  };

  Options options_;
  Tracker unhealthy_, failing_;
  uint64_t decisions_ = 0;
  double regret_sum_ = 0;
  std::vector<double> confidence_;
  std::vector<uint8_t> correct_;  // 1: chose a best candidate
  bool any_confidence_ = false;
  uint64_t outcomes_ = 0, ok_ = 0, violations_ = 0;
  double cost_ = 0, quality_sum_ = 0;
  std::vector<double> ttft_, e2e_;
};

}  // namespace inferscope::bench::routing
