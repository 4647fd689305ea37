#include "sinks/register.h"

#include "sinks/rocksdb_state_sink.h"
#include "sinks/zmq_pub_sink.h"

namespace inferscope {

void RegisterSinks(Registry& registry) {
  registry.AddSink<RocksDbStateSink>();
  registry.AddSink<ZmqPubSink>();
}

}  // namespace inferscope
