#include "state/rocksdb_state_sink.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <span>
#include <string>

#include "pipeline/checkpoint.h"
#include "pipeline/interner.h"
#include "pipeline/json_text.h"
#include "state/checkpoint_store.h"
#include "state/state_store.h"

namespace inferscope {

const RecordTable kDeadLetterTable("dead_letter", RecordExpiry{kDefaultDeadLetterRetentionMs});

Status RocksDbStateSink::Options::Validate() const {
  if (max_batch_panes < 1)
    return Status::InvalidArgument("rocksdb_state: max_batch_panes must be >= 1");
  return retry.Validate(kName);
}

Result<std::unique_ptr<RocksDbStateSink>> RocksDbStateSink::Create(const ConfigNode& options) {
  INFERSCOPE_RETURN_IF_ERROR(
      options.CheckKnownFields({"max_batch_panes", "retry_backoff", "retry_max_backoff"}));
  Options opts;
  Result<int64_t> max_batch =
      options.GetInt("max_batch_panes", opts.max_batch_panes, 1, 10'000'000);
  if (!max_batch.ok()) return max_batch.status();
  opts.max_batch_panes = *max_batch;
  INFERSCOPE_RETURN_IF_ERROR(HeldWriter::ParseOptions(options, kName, &opts.retry));
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
  clock_ = ctx.clock != nullptr ? ctx.clock : &SystemClock::Instance();
  last_watermark_ = state_->Watermark();
  Labels labels = {{"stage", ctx.name}};
  panes_written_ = ctx.metrics->GetCounter("inferscope_sink_panes_written_total",
                                           "Panes a state sink wrote to RocksDB", labels);
  dead_letters_written_ = ctx.metrics->GetCounter("inferscope_sink_dead_letters_written_total",
                                                  "Dead letters a state sink wrote", labels);
  writer_.Open(state_, "sink '" + ctx.name + "'", kName,
               ctx.metrics->GetCounter("inferscope_sink_write_errors_total",
                                       "Sink writes that failed", labels));
  return Status::Ok();
}

Status RocksDbStateSink::Write(const OutputBatch& batch) {
  if (state_ == nullptr) return Status::Internal("rocksdb_state: Write before Open");
  if (writer_.given_up()) {
    // A write before this one was given up: a checkpoint now would claim what was not written.
    if (batch.checkpoint != nullptr && batch.checkpoint->on_failed)
      batch.checkpoint->on_failed(*batch.checkpoint);
    return Status::Unavailable(
        "rocksdb_state: not written: an earlier write failed and was given up at shutdown");
  }
  if (!batch.Get<kind::DeadLetter>().empty()) INFERSCOPE_RETURN_IF_ERROR(WriteDeadLetters(batch));
  if (batch.checkpoint != nullptr) {
    // Pane writes before this one are in the WAL already; the synced write makes them durable too.
    const std::string what = "checkpoint " + std::to_string(batch.checkpoint->id);
    Status s = writer_.Write(what, [&] {
      return WriteCheckpointRecords(*state_, batch.checkpoint->records, /*sync=*/true);
    });
    if (!s.ok()) {
      if (batch.checkpoint->on_failed) batch.checkpoint->on_failed(*batch.checkpoint);
      return s.WithContext("rocksdb_state: " + what);
    }
    if (batch.checkpoint->on_durable) batch.checkpoint->on_durable(*batch.checkpoint);
  }
  // Nothing new: skip the write rather than rewrite the same watermark.
  const std::span<const WindowSummary> all = batch.Get<kind::PaneSummary>();
  if (all.empty() && batch.watermark_ms <= last_watermark_) return Status::Ok();

  const size_t chunk = static_cast<size_t>(options_.max_batch_panes);
  size_t offset = 0;
  do {
    size_t n = std::min(chunk, all.size() - offset);
    bool last = offset + n == all.size();
    // Only the last chunk carries the new watermark: the earlier ones must not claim panes that
    // are not yet durable.
    int64_t watermark = last ? batch.watermark_ms : last_watermark_;
    Status s = writer_.Write(
        "panes", [&] { return state_->WritePanes(all.subspan(offset, n), *interner_, watermark); });
    if (!s.ok()) return s.WithContext("rocksdb_state");
    panes_written_->Inc(n);
    offset += n;
  } while (offset < all.size());
  last_watermark_ = std::max(last_watermark_, batch.watermark_ms);
  return Status::Ok();
}

void RocksDbStateSink::Interrupt() { writer_.Interrupt(); }

Status RocksDbStateSink::WriteDeadLetters(const OutputBatch& batch) {
  std::vector<RecordWrite> writes;
  const std::span<const DeadLetter> dead_letters = batch.Get<kind::DeadLetter>();
  writes.reserve(dead_letters.size());
  const int64_t now = clock_->NowMs();
  for (const DeadLetter& d : dead_letters) {
    std::string key;
    AppendBigEndian64(&key, static_cast<uint64_t>(now));
    AppendBigEndian64(&key, dead_letter_seq_++);
    writes.push_back(
        {&kDeadLetterTable, std::move(key), ToJsonText(DeadLetterJson(d, *interner_))});
  }
  Status s = writer_.Write("dead letters", [&] { return state_->WriteRecords(writes); });
  if (!s.ok()) return s.WithContext("rocksdb_state: dead letters");
  dead_letters_written_->Inc(writes.size());
  return Status::Ok();
}

}  // namespace inferscope
