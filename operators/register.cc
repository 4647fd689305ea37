#include "operators/register.h"

#include "operators/window_aggregate.h"

namespace inferscope {

void RegisterOperators(Registry& registry) { registry.AddOperator<WindowAggregateOperator>(); }

}  // namespace inferscope
