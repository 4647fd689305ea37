#include "state/rocksdb_bottleneck_sink.h"

#include "bottlenecks/bottleneck.h"
#include "pipeline/summary.h"
#include "state/bottleneck_store.h"

namespace inferscope {

RocksDbBottleneckSink::RocksDbBottleneckSink(HeldWriter::Options options)
    : StateResultSink({kName, "bottleneck changes", "inferscope_sink_bottlenecks_written_total",
                       "Bottleneck changes a sink stored in RocksDB"},
                      options) {}

KindSet RocksDbBottleneckSink::Accepts() const { return KindSet::Of<kind::Bottleneck>(); }

size_t RocksDbBottleneckSink::Count(const OutputBatch& batch) const {
  return batch.Get<kind::Bottleneck>().size();
}

Status RocksDbBottleneckSink::Store(StateStore& state, const OutputBatch& batch) const {
  return StoreBottlenecks(state, batch.Get<kind::Bottleneck>());
}

}  // namespace inferscope
