#include "bench/routing/utility.h"

#include <algorithm>
#include <limits>

namespace inferscope::bench::routing {

StrategyWeights WeightsOf(Strategy strategy) {
  switch (strategy) {
    case Strategy::kLowestLatency:
      return {0.7, 0.2, 0.1};
    case Strategy::kHighestQuality:
      return {0.1, 0.8, 0.1};
    case Strategy::kCostEffective:
      return {0.2, 0.3, 0.5};
    case Strategy::kBalanced:
      return {0.33, 0.33, 0.34};
  }
  return {};
}

std::string_view StrategyName(Strategy strategy) {
  switch (strategy) {
    case Strategy::kLowestLatency:
      return "lowest_latency";
    case Strategy::kHighestQuality:
      return "highest_quality";
    case Strategy::kCostEffective:
      return "cost_effective";
    case Strategy::kBalanced:
      return "balanced";
  }
  return "unknown";
}

size_t Utility::Score(const sim::Request& r, std::span<const sim::InstanceView> candidates,
                      std::vector<double>* out, double quality_lag_ms) const {
  expect_.clear();
  double e2e_min = std::numeric_limits<double>::infinity();
  double cost_min = std::numeric_limits<double>::infinity();
  for (const sim::InstanceView& v : candidates) {
    const sim::ServingInstance& inst = fleet_->instance(v.index);
    sim::Expectation& e = expect_.emplace_back(inst.Expect(r, r.arrival_ms));
    if (quality_lag_ms > 0) e.quality = inst.QualityAt(r.category, r.arrival_ms - quality_lag_ms);
    if (e.p_ok > 0) {
      e2e_min = std::min(e2e_min, e.e2e_ms);
      cost_min = std::min(cost_min, e.cost_usd);
    }
  }
  out->assign(candidates.size(), 0);
  size_t best = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const sim::Expectation& e = expect_[i];
    if (e.p_ok <= 0) continue;
    const double lat = e.e2e_ms > 0 ? e2e_min / e.e2e_ms : 1;
    const double cost = e.cost_usd > 0 ? cost_min / e.cost_usd : 1;
    (*out)[i] = e.p_ok * (w_.latency * lat + w_.quality * e.quality + w_.cost * cost);
    if ((*out)[i] > (*out)[best]) best = i;
  }
  return best;
}

}  // namespace inferscope::bench::routing
