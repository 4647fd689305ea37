#include "sinks/rocksdb_state_sink.h"

#include <algorithm>
#include <span>
#include <string>

#include "pipeline/state_store.h"

namespace inferscope {

Status RocksDbStateSink::Options::Validate() const {
  if (max_batch_panes < 1)
    return Status::InvalidArgument("rocksdb_state: max_batch_panes must be >= 1");
  return Status::Ok();
}

Result<std::unique_ptr<RocksDbStateSink>> RocksDbStateSink::Create(const ConfigNode& options) {
  INFERSCOPE_RETURN_IF_ERROR(options.CheckKnownFields({"max_batch_panes"}));
  Options opts;
  Result<int64_t> max_batch =
      options.GetInt("max_batch_panes", opts.max_batch_panes, 1, 10'000'000);
  if (!max_batch.ok()) return max_batch.status();
  opts.max_batch_panes = *max_batch;
  INFERSCOPE_RETURN_IF_ERROR(opts.Validate());
  return std::make_unique<RocksDbStateSink>(opts);
}

Status RocksDbStateSink::Open(const StageContext& ctx) {
  if (ctx.state == nullptr) {
    return Status::InvalidArgument(
        "sink '" + ctx.name +
        "' (rocksdb_state) needs a state store, but the topology declares "
        "no state directory");
  }
  if (ctx.interner == nullptr || ctx.metrics == nullptr) {
    return Status::InvalidArgument("sink '" + ctx.name +
                                   "': the stage context lacks an interner or metrics");
  }
  state_ = ctx.state;
  interner_ = ctx.interner;
  last_watermark_ = state_->Watermark();
  Labels labels = {{"stage", ctx.name}};
  panes_written_ = ctx.metrics->GetCounter("inferscope_sink_panes_written_total",
                                           "Panes a state sink wrote to RocksDB", labels);
  write_errors_ = ctx.metrics->GetCounter("inferscope_sink_write_errors_total",
                                          "Sink writes that failed", labels);
  return Status::Ok();
}

Status RocksDbStateSink::Write(const OutputBatch& batch) {
  if (state_ == nullptr) return Status::Internal("rocksdb_state: Write before Open");
  // Nothing new: skip the write rather than rewrite the same watermark.
  if (batch.summaries.empty() && batch.watermark_ms <= last_watermark_) return Status::Ok();

  std::span<const WindowSummary> all(batch.summaries);
  const size_t chunk = static_cast<size_t>(options_.max_batch_panes);
  size_t offset = 0;
  do {
    size_t n = std::min(chunk, all.size() - offset);
    bool last = offset + n == all.size();
    // Only the last chunk carries the new watermark: the earlier ones must not claim panes that
    // are not yet durable.
    int64_t watermark = last ? batch.watermark_ms : last_watermark_;
    Status s = state_->WritePanes(all.subspan(offset, n), *interner_, watermark);
    if (!s.ok()) {
      write_errors_->Inc();
      return s.WithContext("rocksdb_state");
    }
    panes_written_->Inc(n);
    offset += n;
  } while (offset < all.size());
  last_watermark_ = std::max(last_watermark_, batch.watermark_ms);
  return Status::Ok();
}

}  // namespace inferscope
