#include "sinks/register.h"

#include "sinks/rocksdb_alert_sink.h"
#include "sinks/rocksdb_state_sink.h"
#include "sinks/zmq_alert_sink.h"
#include "sinks/zmq_pub_sink.h"

namespace inferscope {

void RegisterSinks(Registry& registry) {
  registry.AddSink<RocksDbAlertSink>();
  registry.AddSink<RocksDbStateSink>();
  registry.AddSink<ZmqAlertSink>();
  registry.AddSink<ZmqPubSink>();
}

}  // namespace inferscope
