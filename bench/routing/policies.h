#pragma once

// The routing policies the evaluation compares: the baselines people use today and the oracle.
// Each is a sim::Router (Pick plus the outcome and gauge callbacks). They are built by name
// through MakePolicy (registry.h); bench/routing/README.md describes each one.

#include <cstdint>
#include <random>
#include <span>
#include <string_view>
#include <vector>

#include "bench/routing/utility.h"
#include "sim/fleet.h"

namespace inferscope::bench::routing {

// What a policy may know when it is built: its seed and the static catalogue (per fleet
// instance index). The oracle also gets the utility (the fleet's true state).
struct PolicyContext {
  uint64_t seed = 1;
  // Static weight per fleet instance (nominal capacity: output tokens/s at a full batch).
  std::vector<double> capacity;
  // The scenario's strategy (what the utility weighs; a policy with strategies uses the same).
  Strategy strategy = Strategy::kLowestLatency;
  // The catalogue per fleet instance: name, model, vision capability, list prices and slot limit
  // (params.max_num_seqs). A policy must not read the rest (true speed, faults, quality).
  std::vector<sim::InstanceOptions> catalogue;
  const Utility* utility = nullptr;  // for the oracles only
  // How late quality feedback arrives after a request completes (RunOptions::quality_delay_ms):
  // oracle_late_quality's lag.
  double quality_delay_ms = 0;
};

// Smooth weighted round robin (nginx) by PolicyContext::capacity, per model.
class StaticWeightsRouter final : public sim::Router {
 public:
  explicit StaticWeightsRouter(std::vector<double> weights) : weights_(std::move(weights)) {}
  std::string_view Name() const override { return "static_weights"; }
  size_t Pick(const sim::Request& request, std::span<const sim::InstanceView> candidates) override;

 private:
  std::vector<double> weights_;
  std::vector<double> current_;  // per fleet instance
};

// The candidate with the fewest requests in flight (sent, no outcome yet: what a gateway
// counts), ties at random.
class LeastBusyRouter final : public sim::Router {
 public:
  explicit LeastBusyRouter(uint64_t seed) : rng_(seed) {}
  std::string_view Name() const override { return "least_busy"; }
  size_t Pick(const sim::Request& request, std::span<const sim::InstanceView> candidates) override;
  void OnOutcome(const sim::RequestOutcome& outcome) override;

 private:
  std::mt19937_64 rng_;
  std::vector<uint32_t> in_flight_;  // per fleet instance
};

// Envoy's LEAST_REQUEST with equal weights: two distinct candidates at random, the one with
// fewer requests in flight (the first drawn on a tie).
class P2cLeastRequestRouter final : public sim::Router {
 public:
  explicit P2cLeastRequestRouter(uint64_t seed) : rng_(seed) {}
  std::string_view Name() const override { return "p2c_least_request"; }
  size_t Pick(const sim::Request& request, std::span<const sim::InstanceView> candidates) override;
  void OnOutcome(const sim::RequestOutcome& outcome) override;

 private:
  std::mt19937_64 rng_;
  std::vector<uint32_t> in_flight_;
};

// Finagle's PeakEwma (finagle-core loadbalancer/PeakEwma.scala; Linkerd's and tower's balancer
// is the same algorithm) with power of two choices. Per backend: `cost`, a peak-sensitive EWMA
// of the round-trip time over unevenly spaced observations (w = exp(-dt / decay); a sample above
// the cost replaces it; otherwise cost = cost x w + rtt x (1 - w)); `pending`, requests in
// flight. load = cost x (pending + 1), after observing a 0 rtt now (the cost decays while
// nothing is observed); a backend with no history (cost 0) but requests pending costs
// Penalty + pending (Penalty = 2^63 >> 16). Two distinct candidates at random; the lower load.
// The rtt is the time to first token (a gateway sees a streamed response's first byte then),
// or with `rtt_e2e` the whole request (Finagle measures the service's lifetime); a failed
// request's rtt is its time to the error. Observed when the request completes.
class PeakEwmaRouter final : public sim::Router {
 public:
  PeakEwmaRouter(uint64_t seed, double decay_ms, bool rtt_e2e)
      : rng_(seed), decay_ms_(decay_ms), rtt_e2e_(rtt_e2e) {}
  std::string_view Name() const override { return rtt_e2e_ ? "peak_ewma_e2e" : "peak_ewma"; }
  size_t Pick(const sim::Request& request, std::span<const sim::InstanceView> candidates) override;
  void OnOutcome(const sim::RequestOutcome& outcome) override;

 private:
  struct Metric {
    double stamp_ms = 0;
    uint32_t pending = 0;
    double cost = 0;
  };
  void Observe(Metric* m, double rtt_ms, double now_ms) const;
  double Load(uint32_t instance, double now_ms);
  Metric& At(uint32_t instance);

  std::mt19937_64 rng_;
  double decay_ms_;
  bool rtt_e2e_;
  std::vector<Metric> metrics_;
};

// Lowest mean time to first token over each backend's last 10 requests (LiteLLM's
// latency-based routing); a failure counts as a sample of `failure_ms` (the client timeout);
// a backend without samples is tried first; ties at random.
class LatencyAverageRouter final : public sim::Router {
 public:
  LatencyAverageRouter(uint64_t seed, size_t window, double failure_ms)
      : rng_(seed), window_(window), failure_ms_(failure_ms) {}
  std::string_view Name() const override { return "latency_avg10"; }
  size_t Pick(const sim::Request& request, std::span<const sim::InstanceView> candidates) override;
  void OnOutcome(const sim::RequestOutcome& outcome) override;

 private:
  struct Samples {
    std::vector<double> ring;
    size_t next = 0;
    double sum = 0;
  };
  std::mt19937_64 rng_;
  size_t window_;
  double failure_ms_;
  std::vector<Samples> samples_;
};

// The candidate with the highest Utility: knows every backend's true parameters, faults and
// load now. Its regret is 0 by definition.
//
// With quality_lag_ms > 0 ("oracle_late_quality") it knows everything now except quality, which
// it knows as it was quality_lag_ms ago (as the fleet's quality feedback shows it), and reports
// confidence 1: nothing it knows leaves a doubt. Its ECE is the calibration any router can reach
// without expecting a change it cannot see yet (README, "Definitions").
class OracleRouter final : public sim::Router {
 public:
  explicit OracleRouter(const Utility* utility, double quality_lag_ms = 0)
      : utility_(utility), quality_lag_ms_(quality_lag_ms) {}
  std::string_view Name() const override {
    return quality_lag_ms_ > 0 ? "oracle_late_quality" : "oracle";
  }
  size_t Pick(const sim::Request& request, std::span<const sim::InstanceView> candidates) override;
  double Confidence() const override { return quality_lag_ms_ > 0 ? 1.0 : -1.0; }

 private:
  const Utility* utility_;
  double quality_lag_ms_;
  std::vector<double> scores_;
};

}  // namespace inferscope::bench::routing
