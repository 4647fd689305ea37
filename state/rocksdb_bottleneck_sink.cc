#include "state/rocksdb_bottleneck_sink.h"

#include "bottlenecks/bottleneck.h"
#include "pipeline/summary.h"
#include "state/bottleneck_store.h"
#include "state/state_store.h"

namespace inferscope {

Result<std::unique_ptr<RocksDbBottleneckSink>> RocksDbBottleneckSink::Create(
    const ConfigNode& options) {
  INFERSCOPE_RETURN_IF_ERROR(options.CheckKnownFields({"retention"}));
  Result<int64_t> retention = options.GetDurationMs("retention", 86'400'000, 60'000);
  if (!retention.ok()) return retention.status();
  return std::make_unique<RocksDbBottleneckSink>(*retention);
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
  clock_ = ctx.clock != nullptr ? ctx.clock : &SystemClock::Instance();
  Labels labels = {{"stage", ctx.name}};
  written_ = ctx.metrics->GetCounter("inferscope_sink_bottlenecks_written_total",
                                     "Bottleneck changes a sink stored in RocksDB", labels);
  pruned_ = ctx.metrics->GetCounter("inferscope_sink_bottlenecks_pruned_total",
                                    "Bottleneck records deleted after their retention", labels);
  write_errors_ = ctx.metrics->GetCounter("inferscope_sink_write_errors_total",
                                          "Sink writes that failed", labels);
  return Status::Ok();
}

Status RocksDbBottleneckSink::Write(const OutputBatch& batch) {
  if (state_ == nullptr) return Status::Internal("rocksdb_bottlenecks: Write before Open");
  const std::span<const Bottleneck> changes = batch.Get<kind::Bottleneck>();
  if (!changes.empty()) {
    Status st = StoreBottlenecks(*state_, changes);
    if (!st.ok()) {
      write_errors_->Inc();
      return st.WithContext("rocksdb_bottlenecks");
    }
    written_->Inc(changes.size());
  }
  const int64_t now = clock_->NowMs();
  if (now >= next_prune_ms_) {
    next_prune_ms_ = now + 60'000;
    Result<size_t> pruned = PruneBottlenecks(*state_, now - retention_ms_);
    if (!pruned.ok()) {
      write_errors_->Inc();
      return pruned.status().WithContext("rocksdb_bottlenecks: prune");
    }
    pruned_->Inc(*pruned);
  }
  return Status::Ok();
}

}  // namespace inferscope
