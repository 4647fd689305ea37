#include "state/rocksdb_alert_sink.h"

#include "state/alert_store.h"

namespace inferscope {

RocksDbAlertSink::RocksDbAlertSink(HeldWriter::Options options)
    : StateResultSink({kName, "alert state changes", "inferscope_sink_alerts_written_total",
                       "Alert state changes a sink stored in RocksDB"},
                      options) {}

KindSet RocksDbAlertSink::Accepts() const { return KindSet::Of<kind::Alert>(); }

size_t RocksDbAlertSink::Count(const OutputBatch& batch) const {
  return batch.Get<kind::Alert>().size();
}

Status RocksDbAlertSink::Store(StateStore& state, const OutputBatch& batch) const {
  return StoreAlerts(state, batch.Get<kind::Alert>());
}

}  // namespace inferscope
