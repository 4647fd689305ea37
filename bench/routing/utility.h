#pragma once

// The routing evaluation's utility: what a routing decision is worth, from the fleet's true
// state. The oracle picks the candidate with the highest utility; regret is measured against it
// (bench/routing/README.md, "Definitions").

#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

#include "sim/fleet.h"

namespace inferscope::bench::routing {

// The strategies: weights of latency, quality and cost in the utility.
enum class Strategy { kLowestLatency, kHighestQuality, kCostEffective, kBalanced };
struct StrategyWeights {
  double latency = 0.7, quality = 0.2, cost = 0.1;
};
StrategyWeights WeightsOf(Strategy strategy);
std::string_view StrategyName(Strategy strategy);

// Utility scores the candidates of one request from each instance's Expectation (true
// parameters, faults in effect, current load):
//
//   U(b) = p_ok(b) x ( w_latency x e2e_min / e2e(b) + w_quality x quality(b)
//                      + w_cost x cost_min / cost(b) )
//
// with e2e_min and cost_min the smallest expected e2e and cost among the candidates that can
// succeed (p_ok > 0). Each term is in [0, 1]; a backend that is down, cannot serve the request
// (capability) or would time out has p_ok = 0 and utility 0.
//
// Lifecycle: construct, Bind the fleet once it exists, then Score. Not thread-safe (scratch).
class Utility {
 public:
  explicit Utility(Strategy strategy) : strategy_(strategy), w_(WeightsOf(strategy)) {}
  void Bind(const sim::Fleet* fleet) { fleet_ = fleet; }
  Strategy strategy() const { return strategy_; }

  // Fills `out` with the utility of each candidate for `r` at r.arrival_ms; returns the index of
  // the best (the lowest index among equals). With quality_lag_ms > 0 the quality term is each
  // backend's quality as it was that long before (what quality feedback that late can show).
  size_t Score(const sim::Request& r, std::span<const sim::InstanceView> candidates,
               std::vector<double>* out, double quality_lag_ms = 0) const;

 private:
  Strategy strategy_;
  StrategyWeights w_;
  const sim::Fleet* fleet_ = nullptr;
  mutable std::vector<sim::Expectation> expect_;
};

}  // namespace inferscope::bench::routing
