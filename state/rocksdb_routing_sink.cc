#include "state/rocksdb_routing_sink.h"

#include "routing/published.h"
#include "state/routing_store.h"
#include "state/state_store.h"

namespace inferscope {

Result<std::unique_ptr<RocksDbRoutingSink>> RocksDbRoutingSink::Create(const ConfigNode& options) {
  INFERSCOPE_RETURN_IF_ERROR(options.CheckKnownFields({}));
  return std::make_unique<RocksDbRoutingSink>();
}

KindSet RocksDbRoutingSink::Accepts() const { return KindSet::Of<kind::RoutingWeights>(); }

Status RocksDbRoutingSink::Open(const StageContext& ctx) {
  if (ctx.state == nullptr) {
    return Status::InvalidArgument("sink '" + ctx.name +
                                   "' (rocksdb_routing) needs a state store, but the topology "
                                   "declares no state directory");
  }
  if (ctx.metrics == nullptr) {
    return Status::InvalidArgument("sink '" + ctx.name + "': the stage context lacks metrics");
  }
  state_ = ctx.state;
  Labels labels = {{"stage", ctx.name}};
  written_ =
      ctx.metrics->GetCounter("inferscope_sink_routing_weights_written_total",
                              "Routing weight publications a sink stored in RocksDB", labels);
  write_errors_ = ctx.metrics->GetCounter("inferscope_sink_write_errors_total",
                                          "Sink writes that failed", labels);
  return Status::Ok();
}

Status RocksDbRoutingSink::Write(const OutputBatch& batch) {
  if (state_ == nullptr) return Status::Internal("rocksdb_routing: Write before Open");
  const auto weights = batch.Get<kind::RoutingWeights>();
  if (weights.empty()) return Status::Ok();
  Status st = StoreRoutingWeights(*state_, weights);
  if (!st.ok()) {
    write_errors_->Inc();
    return st.WithContext("rocksdb_routing");
  }
  written_->Inc(weights.size());
  return Status::Ok();
}

}  // namespace inferscope
