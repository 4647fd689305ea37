#include "sinks/register.h"

#include "sinks/jetstream_results_register.h"
#include "sinks/zmq_alert_sink.h"
#include "sinks/zmq_bottleneck_sink.h"
#include "sinks/zmq_pub_sink.h"
#include "sinks/zmq_routing_sink.h"
#include "sinks/zmq_workflow_sink.h"

namespace inferscope {

void RegisterSinks(Registry& registry) {
  registry.AddSink<ZmqAlertSink>();
  registry.AddSink<ZmqBottleneckSink>();
  registry.AddSink<ZmqWorkflowSink>();
  registry.AddSink<ZmqPubSink>();
  registry.AddSink<ZmqRoutingSink>();
  RegisterJetStreamResultsSink(registry);
}

}  // namespace inferscope
