#include "operators/register.h"

#include "operators/sliding_window.h"
#include "operators/window_aggregate.h"

namespace inferscope {

void RegisterOperators(Registry& registry) {
  registry.AddOperator<WindowAggregateOperator>();
  registry.AddOperator<SlidingWindowOperator>();
}

}  // namespace inferscope
