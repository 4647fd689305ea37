#include "state/rocksdb_alert_sink.h"

#include "state/alert_store.h"
#include "state/state_store.h"

namespace inferscope {

Result<std::unique_ptr<RocksDbAlertSink>> RocksDbAlertSink::Create(const ConfigNode& options) {
  INFERSCOPE_RETURN_IF_ERROR(options.CheckKnownFields({}));
  return std::make_unique<RocksDbAlertSink>();
}

Status RocksDbAlertSink::Open(const StageContext& ctx) {
  if (ctx.state == nullptr) {
    return Status::InvalidArgument("sink '" + ctx.name +
                                   "' (rocksdb_alerts) needs a state store, but the topology "
                                   "declares no state directory");
  }
  if (ctx.metrics == nullptr) {
    return Status::InvalidArgument("sink '" + ctx.name + "': the stage context lacks metrics");
  }
  state_ = ctx.state;
  Labels labels = {{"stage", ctx.name}};
  written_ = ctx.metrics->GetCounter("inferscope_sink_alerts_written_total",
                                     "Alert state changes a sink stored in RocksDB", labels);
  write_errors_ = ctx.metrics->GetCounter("inferscope_sink_write_errors_total",
                                          "Sink writes that failed", labels);
  return Status::Ok();
}

Status RocksDbAlertSink::Write(const OutputBatch& batch) {
  if (state_ == nullptr) return Status::Internal("rocksdb_alerts: Write before Open");
  const std::span<const Alert> alerts = batch.Get<kind::Alert>();
  if (alerts.empty()) return Status::Ok();
  Status st = StoreAlerts(*state_, alerts);
  if (!st.ok()) {
    write_errors_->Inc();
    return st.WithContext("rocksdb_alerts");
  }
  written_->Inc(alerts.size());
  return Status::Ok();
}

}  // namespace inferscope
