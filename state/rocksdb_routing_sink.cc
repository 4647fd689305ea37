#include "state/rocksdb_routing_sink.h"

#include "routing/published.h"
#include "state/routing_store.h"

namespace inferscope {

RocksDbRoutingSink::RocksDbRoutingSink(HeldWriter::Options options)
    : StateResultSink({kName, "routing weights", "inferscope_sink_routing_weights_written_total",
                       "Routing weight publications a sink stored in RocksDB"},
                      options) {}

KindSet RocksDbRoutingSink::Accepts() const { return KindSet::Of<kind::RoutingWeights>(); }

size_t RocksDbRoutingSink::Count(const OutputBatch& batch) const {
  return batch.Get<kind::RoutingWeights>().size();
}

Status RocksDbRoutingSink::Store(StateStore& state, const OutputBatch& batch) const {
  return StoreRoutingWeights(state, batch.Get<kind::RoutingWeights>());
}

}  // namespace inferscope
