#include "operators/register.h"

#include "operators/threshold_rules.h"
#include "operators/window_aggregate.h"

namespace inferscope {

void RegisterOperators(Registry& registry) {
  registry.AddOperator<ThresholdRulesOperator>();
  registry.AddOperator<WindowAggregateOperator>();
}

}  // namespace inferscope
