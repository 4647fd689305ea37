#include "state/state_result_sink.h"

#include <spdlog/spdlog.h>

#include <string>

#include "state/state_store.h"

namespace inferscope {

Result<HeldWriter::Options> StateResultSink::ParseOptions(const ConfigNode& node,
                                                          std::string_view type) {
  INFERSCOPE_RETURN_IF_ERROR(node.CheckKnownFields({"retry_backoff", "retry_max_backoff"}));
  HeldWriter::Options options;
  INFERSCOPE_RETURN_IF_ERROR(HeldWriter::ParseOptions(node, type, &options));
  return options;
}

Status StateResultSink::Open(const StageContext& ctx) {
  const std::string type(traits_.type);
  if (ctx.state == nullptr) {
    return Status::InvalidArgument("sink '" + ctx.name + "' (" + type +
                                   ") needs a state store, but the topology declares no state "
                                   "directory");
  }
  if (ctx.metrics == nullptr) {
    return Status::InvalidArgument("sink '" + ctx.name + "': the stage context lacks metrics");
  }
  state_ = ctx.state;
  Labels labels = {{"stage", ctx.name}};
  written_ = ctx.metrics->GetCounter(std::string(traits_.written_metric),
                                     std::string(traits_.written_help), labels);
  writer_.Open(state_, "sink '" + ctx.name + "'", traits_.type,
               ctx.metrics->GetCounter("inferscope_sink_write_errors_total",
                                       "Sink writes that failed", labels));
  return Status::Ok();
}

Status StateResultSink::Write(const OutputBatch& batch) {
  if (state_ == nullptr) return Status::Internal(std::string(traits_.type) + ": Write before Open");
  if (writer_.given_up()) {
    // A write before this one was given up: storing later results would skip it.
    return Status::Unavailable(std::string(traits_.type) +
                               ": not written: an earlier write failed and was given up at "
                               "shutdown");
  }
  const size_t n = Count(batch);
  if (n == 0) return Status::Ok();
  Status st = writer_.Write(traits_.what, [&] { return Store(*state_, batch); });
  if (st.code() == Status::Code::kInvalidArgument) {
    // Retrying cannot store it; the next batches may well be stored.
    spdlog::error("{}: {} refused as invalid, skipped: {}", traits_.type, traits_.what,
                  st.ToString());
    return Status::Ok();
  }
  if (!st.ok()) return st.WithContext(traits_.type);
  written_->Inc(n);
  return Status::Ok();
}

}  // namespace inferscope
