#include "state/rocksdb_bottleneck_sink.h"

#include "bottlenecks/bottleneck.h"
#include "pipeline/summary.h"
#include "state/bottleneck_store.h"
#include "state/state_store.h"

namespace inferscope {

Result<std::unique_ptr<RocksDbBottleneckSink>> RocksDbBottleneckSink::Create(
    const ConfigNode& options) {
  INFERSCOPE_RETURN_IF_ERROR(options.CheckKnownFields({}));
  return std::make_unique<RocksDbBottleneckSink>();
}

KindSet RocksDbBottleneckSink::Accepts() const { return KindSet::Of<kind::Bottleneck>(); }

Status RocksDbBottleneckSink::Open(const StageContext& ctx) {
  if (ctx.state == nullptr) {
    return Status::InvalidArgument("sink '" + ctx.name +
                                   "' (rocksdb_bottlenecks) needs a state store, but the topology "
                                   "declares no state directory");
  }
  if (ctx.metrics == nullptr) {
    return Status::InvalidArgument("sink '" + ctx.name + "': the stage context lacks metrics");
  }
  state_ = ctx.state;
  Labels labels = {{"stage", ctx.name}};
  written_ = ctx.metrics->GetCounter("inferscope_sink_bottlenecks_written_total",
                                     "Bottleneck changes a sink stored in RocksDB", labels);
  write_errors_ = ctx.metrics->GetCounter("inferscope_sink_write_errors_total",
                                          "Sink writes that failed", labels);
  return Status::Ok();
}

Status RocksDbBottleneckSink::Write(const OutputBatch& batch) {
  if (state_ == nullptr) return Status::Internal("rocksdb_bottlenecks: Write before Open");
  const std::span<const Bottleneck> changes = batch.Get<kind::Bottleneck>();
  if (changes.empty()) return Status::Ok();
  Status st = StoreBottlenecks(*state_, changes);
  if (!st.ok()) {
    write_errors_->Inc();
    return st.WithContext("rocksdb_bottlenecks");
  }
  written_->Inc(changes.size());
  return Status::Ok();
}

}  // namespace inferscope
