#include "state/register.h"

#include "state/rocksdb_alert_sink.h"
#include "state/rocksdb_bottleneck_sink.h"
#include "state/rocksdb_routing_sink.h"
#include "state/rocksdb_state_sink.h"

namespace inferscope {

void RegisterStateSinks(Registry& registry) {
  registry.AddSink<RocksDbAlertSink>();
  registry.AddSink<RocksDbBottleneckSink>();
  registry.AddSink<RocksDbRoutingSink>();
  registry.AddSink<RocksDbStateSink>();
}

}  // namespace inferscope
