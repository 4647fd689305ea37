#include "operators/register.h"

#include "operators/anomaly_detect.h"
#include "operators/bottleneck_classify.h"
#include "operators/routing_learn.h"
#include "operators/sliding_window.h"
#include "operators/threshold_rules.h"
#include "operators/window_aggregate.h"
#include "operators/workflow_canary.h"

namespace inferscope {

void RegisterOperators(Registry& registry) {
  registry.AddOperator<AnomalyDetectOperator>();
  registry.AddOperator<BottleneckClassifyOperator>();
  registry.AddOperator<RoutingLearnOperator>();
  registry.AddOperator<ThresholdRulesOperator>();
  registry.AddOperator<SlidingWindowOperator>();
  registry.AddOperator<WindowAggregateOperator>();
  registry.AddOperator<WorkflowCanaryOperator>();
}

}  // namespace inferscope
